"""Real peers: curl against a gateway-served HTTP endpoint, redis-server through a gateway client."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from conftest import py_connect, short_tmpdir, stop_process
import ports  # tests/support (conftest puts it on the path)
from wire import Wire, decode


def _serve_one_http(wire: Wire, srv: int, body: bytes) -> bytes:
    """Handle one HTTP request on the gateway: onAccept → onData until headers end → send → close."""
    ev = wire.wait_event("tcp.onAccept", srv, timeout=10)
    h = ev.params["client"]
    req = b""
    while b"\r\n\r\n" not in req:
        req += decode(wire.wait_event("tcp.onData", h, timeout=10).params)
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body))
    # Head and body as one gathered send (array form).
    n = wire.call("tcp.send", {"handle": h, "data": [head.decode(), body.decode()]})
    assert n == len(head) + len(body)
    assert wire.call("tcp.close", {"handle": h}) is True
    return req


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"], ids=["v4", "v6"])
def test_curl_fetches_page_served_by_gateway(wire: Wire, host: str) -> None:
    if not shutil.which("curl"):
        pytest.fail("curl is required")
    addr = host.strip("[]")
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    port = srv["local"]["port"]
    assert wire.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    body = b"hello from tcpgw over " + addr.encode() + b"\n"
    for i in range(2):  # the server keeps accepting
        curl = subprocess.Popen(["curl", "-sS", "--max-time", "8", "-g", f"http://{host}:{port}/page{i}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            req = _serve_one_http(wire, srv["handle"], body)
            out, err = curl.communicate(timeout=10)
        finally:
            if curl.poll() is None:
                curl.kill()
                curl.wait(5)
        assert req.startswith(b"GET /page%d HTTP/1.1\r\n" % i), req
        assert curl.returncode == 0, err
        assert out == body


REDIS_START_ATTEMPTS = 5  # a port free at the probe can be taken before redis binds it


def _start_redis(exe: str, d: str) -> tuple[subprocess.Popen, int]:
    """redis-server on a free loopback port, answering; a start that loses its port to someone
    else (redis exits) is retried on another."""
    for _ in range(REDIS_START_ATTEMPTS):
        port = ports.free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", d, "--daemonize", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while proc.poll() is None:
            try:
                py_connect("127.0.0.1", port, timeout=1).close()
                return proc, port
            except OSError:
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait(5)
                    raise AssertionError("redis-server not ready within 10s")
                time.sleep(0.05)
        proc.wait(5)
    raise AssertionError(f"redis-server did not start in {REDIS_START_ATTEMPTS} attempts")


@pytest.fixture
def redis_port():
    exe = shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server is required")
    d = short_tmpdir()
    proc = None
    try:
        proc, port = _start_redis(exe, d)
        yield port
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(d, ignore_errors=True)


def _resp(*args: str) -> str:
    return "".join([f"*{len(args)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in args])


def _read_reply(wire: Wire, h: int, want_end: bytes) -> bytes:
    out = b""
    deadline = time.monotonic() + 5
    while not out.endswith(want_end):
        assert time.monotonic() < deadline, out
        r = wire.call("tcp.recv", {"handle": h, "timeout": 3000})
        assert not r["eof"], out
        out += decode(r)
    return out


def test_redis_ping_set_get_through_gateway_client(wire: Wire, redis_port: int) -> None:
    c = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": redis_port}, "timeout": 3000})
    h = c["handle"]
    wire.call("tcp.setNoDelay", {"handle": h, "enable": True})
    wire.call("tcp.send", {"handle": h, "data": _resp("PING")})
    assert _read_reply(wire, h, b"\r\n") == b"+PONG\r\n"
    value = "tcpgw-\u00e9t\u00e9-" + "v" * 3000
    wire.call("tcp.send", {"handle": h, "data": _resp("SET", "tcpgw:key", value)})
    assert _read_reply(wire, h, b"\r\n") == b"+OK\r\n"
    wire.call("tcp.send", {"handle": h, "data": _resp("GET", "tcpgw:key")})
    vb = value.encode()
    want = b"$%d\r\n%s\r\n" % (len(vb), vb)
    got = b""
    while len(got) < len(want):
        got += _read_reply(wire, h, b"\r\n")
    assert got == want
    # Pipelined commands in one gathered send.
    wire.call("tcp.send", {"handle": h, "data": [_resp("INCR", "tcpgw:n"), _resp("INCR", "tcpgw:n")]})
    got = b""
    while got.count(b"\r\n") < 2:
        got += _read_reply(wire, h, b"\r\n")
    assert got == b":1\r\n:2\r\n"
    wire.call("tcp.send", {"handle": h, "data": _resp("QUIT")})
    assert _read_reply(wire, h, b"\r\n") == b"+OK\r\n"
    r = wire.call("tcp.recv", {"handle": h, "timeout": 3000})
    assert r["eof"] is True


def test_redis_async_client_flowing(wire: Wire, redis_port: int) -> None:
    c = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": redis_port}, "async": True})
    h = c["handle"]
    ev = wire.wait_event("tcp.onConnect", h)
    assert ev.params["remote"]["port"] == redis_port
    wire.call("tcp.send", {"handle": h, "data": _resp("ECHO", "flowing")})
    assert wire.collect_data(h, len(b"$7\r\nflowing\r\n")) == b"$7\r\nflowing\r\n"
    wire.call("tcp.send", {"handle": h, "data": _resp("QUIT")})
    assert wire.collect_data(h, 5) == b"+OK\r\n"
    wire.wait_event("tcp.onEnd", h)
