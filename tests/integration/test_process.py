"""Contract §1: the process — socket file, readiness, signals, the `call` and `schema` commands."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import (Gateway, GatewayFactory, can_connect_unix, py_connect, py_listener, port_of, recv_until_eof_py,
                      require_binary, run_cli, short_tmpdir)


def test_socket_mode_is_0600(gw: Gateway) -> None:
    st = os.stat(gw.path)
    assert stat.S_ISSOCK(st.st_mode), f"{gw.path} is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(stat.S_IMODE(st.st_mode))


def test_ready_logs_one_line_naming_the_path(gw: Gateway) -> None:
    # The line follows readiness (the socket accepts first), so it may come a moment later.
    deadline = time.monotonic() + 3
    while gw.path not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.path in gw.log(), f"stderr does not name the socket path: {gw.log()!r}"


def test_stale_socket_file_is_replaced(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: stale
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    gw = start_gateway(socket_path=path)
    w = gw.connect()
    assert w.call("gateway.info")["socket"] == path


def test_live_socket_is_refused(start_gateway: GatewayFactory) -> None:
    first = start_gateway()
    second = subprocess.run([require_binary(), "serve", "--socket", first.path],
                            capture_output=True, text=True, timeout=10)
    assert second.returncode != 0
    assert first.path in second.stderr + second.stdout, second.stderr
    # The first gateway is untouched and still serves on its file.
    assert os.path.exists(first.path)
    assert first.connect().call("gateway.info")["pid"] == first.pid


def test_regular_file_at_path_is_refused_and_left_alone() -> None:
    d = short_tmpdir()
    try:
        path = os.path.join(d, "not-a-socket")
        with open(path, "w") as f:
            f.write("precious\n")
        r = subprocess.run([require_binary(), "serve", "--socket", path],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0
        assert path in r.stderr + r.stdout, r.stderr
        assert stat.S_ISREG(os.stat(path).st_mode)
        with open(path) as f:
            assert f.read() == "precious\n"
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_zero_removes_socket_and_closes_handles(start_gateway: GatewayFactory, sig: int) -> None:
    gw = start_gateway()
    w = gw.connect()
    lst = py_listener("127.0.0.1")
    h = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})["handle"]
    peer, _ = lst.accept()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert h >= 1
    rc = gw.signal_and_wait(sig)
    assert rc == 0, gw.log()
    assert not os.path.exists(gw.path)
    # "close every handle": the peer of the connection sees EOF, the server port is gone.
    assert recv_until_eof_py(peer) == b""
    with pytest.raises(ConnectionRefusedError):
        py_connect("127.0.0.1", srv["local"]["port"], timeout=2)
    peer.close()
    lst.close()


def _cli_env(path: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TCPGW_SOCKET"] = path
    return env


def test_cli_call_prints_result_exit_0(gw: Gateway) -> None:
    r = run_cli(["call", "tcp.constants"], env=_cli_env(gw.path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["TCP_ESTABLISHED"] == 4
    r = run_cli(["call", "gateway.info", "{}"], env=_cli_env(gw.path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == gw.pid
    # Params given as JSON are really used.
    r = run_cli(["call", "tcp.createServer", '{"sockaddr": {"addr": "127.0.0.1", "port": 0}}'],
                env=_cli_env(gw.path))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["handle"] >= 1 and out["local"]["port"] > 0


@pytest.mark.parametrize("argv, code", [
    (["call", "no.such.method"], -32601),
    (["call", "tcp.close", '{"handle": 987654}'], -32000),
    (["call", "tcp.setTTL", '{"handle": 1, "timeToLive": 0}'], -32602),
], ids=["unknown-method", "unknown-handle", "bad-params"])
def test_cli_call_prints_error_exit_1(gw: Gateway, argv: list[str], code: int) -> None:
    r = run_cli(argv, env=_cli_env(gw.path))
    assert r.returncode == 1, (r.stdout, r.stderr)
    text = r.stdout.strip() or r.stderr.strip()
    err = json.loads(text)
    err = err.get("error", err)  # the error object itself, or a response wrapping it
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]


def test_cli_schema_prints_openrpc() -> None:
    r = run_cli(["schema"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "openrpc" in doc
    names = {m["name"] for m in doc["methods"]}
    assert {"tcp.createServer", "tcp.flyAway", "gateway.info", "tcp.list"} <= names


def _env_without_socket_vars(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TCPGW_SOCKET", "XDG_RUNTIME_DIR")}
    env.update(extra)
    return env


def test_default_socket_path_from_tcpgw_socket(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "from-env.sock")
    gw = start_gateway(env=_env_without_socket_vars(TCPGW_SOCKET=path, XDG_RUNTIME_DIR=d),
                       socket_path=path, pass_socket=False)
    assert gw.connect().call("gateway.info")["socket"] == path
    assert not os.path.exists(os.path.join(d, "tcpgw.sock"))  # TCPGW_SOCKET wins over XDG
    # `call` finds the gateway through the same variable.
    r = run_cli(["call", "gateway.info"], env=_env_without_socket_vars(TCPGW_SOCKET=path))
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == gw.pid, r.stderr


def test_default_socket_path_from_xdg_runtime_dir(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "tcpgw.sock")
    gw = start_gateway(env=_env_without_socket_vars(XDG_RUNTIME_DIR=d), socket_path=path,
                       pass_socket=False)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert gw.connect().call("gateway.info")["socket"] == path
    r = run_cli(["call", "tcp.constants"], env=_env_without_socket_vars(XDG_RUNTIME_DIR=d))
    assert r.returncode == 0 and json.loads(r.stdout)["AF_INET6"] == 10, r.stderr


def test_signal_right_after_ready_is_handled(start_gateway: GatewayFactory) -> None:
    """Ready = the socket accepts (contract §1), so a signal sent at that moment must already
    get the orderly shutdown: exit 0, socket file removed. Repeated to catch a startup race."""
    for i in range(30):
        gw = start_gateway(ready=False)
        deadline = time.monotonic() + 10
        while not can_connect_unix(gw.path):  # tight poll: signal at the first moment it accepts
            assert gw.proc.poll() is None and time.monotonic() < deadline, gw.log()
            time.sleep(0.002)
        sig = signal.SIGTERM if i % 2 else signal.SIGINT
        rc = gw.signal_and_wait(sig, timeout=5)
        assert rc == 0, f"round {i}: exit {rc} after {signal.Signals(sig).name} right after ready\n{gw.log()}"
        assert not os.path.exists(gw.path), f"round {i}: socket file left behind"
