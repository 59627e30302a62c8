"""contrib/examples/fault_proxy.py, the README's fault-injecting proxy, run as it is against a
real upstream (a Python echo server on loopback): the README's copy must be the file, the
proxy must pass every byte, and its latency fault must show (wide margins)."""
from __future__ import annotations

import hashlib
import os
import pathlib
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import GatewayFactory, py_connect, py_listener

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contrib" / "examples" / "fault_proxy.py"


def echo_server() -> socket.socket:
    """Echoes each connection until its EOF, then closes it (one thread per connection)."""
    listener = py_listener("127.0.0.1")

    def serve(conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(65536):
                conn.sendall(chunk)

    def accept_loop() -> None:
        for _ in range(16):  # bounded
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener


@pytest.fixture
def proxy(start_gateway: GatewayFactory):
    gateway = start_gateway("--seed", "3")
    upstream = echo_server()
    env = dict(os.environ, TCPGW_SOCKET=gateway.path)
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "0", str(upstream.getsockname()[1]), "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = process.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), (line, process.stderr.read() if process.poll() is not None else "")
    yield int(line.rsplit(":", 1)[1]), process
    process.terminate()
    process.wait(10)
    upstream.close()


def test_the_readme_shows_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    assert EXAMPLE.read_text() in readme, "README.md's fault proxy differs from contrib/examples/fault_proxy.py"


def echo_time(sock: socket.socket, message: bytes) -> float:
    t0 = time.monotonic()
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed early"
        got += chunk
    assert got == message
    return time.monotonic() - t0


def proxied(process: subprocess.Popen, port: int) -> socket.socket:
    """A client of the proxy, once the proxy says its pipe has the fault (the line it prints
    after fault.add), so the measurement cannot race the proxy's calls."""
    sock = py_connect("127.0.0.1", port)
    sock.settimeout(20)
    ready, _, _ = select.select([process.stdout], [], [], 20)
    assert ready, "the proxy did not report the new client within 20 s"
    line = process.stdout.readline()
    assert line.startswith("proxying 127.0.0.1:") and line.rstrip().endswith("with 300 ms latency"), line
    return sock


def test_the_proxy_adds_latency_and_passes_every_byte(proxy: tuple[int, subprocess.Popen]) -> None:
    port, process = proxy
    first = proxied(process, port)
    assert echo_time(first, b"PING") >= 0.25, "300 ms latency (jitter 30) on upstream's answers"
    second = proxied(process, port)
    assert echo_time(second, b"PING") >= 0.25, "every accepted client gets its own faulted pipe"
    data = os.urandom(1 << 20)
    threading.Thread(target=lambda: (first.sendall(data), first.shutdown(socket.SHUT_WR)), daemon=True).start()
    digest, count = hashlib.sha256(), 0
    while chunk := first.recv(65536):
        digest.update(chunk)
        count += len(chunk)
    assert count == len(data) and digest.digest() == hashlib.sha256(data).digest()
    first.close()
    second.close()
