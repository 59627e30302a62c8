"""Fixtures: a real tcpgw gateway process per test, and loopback helpers.

The gateway binary is ``$TCPGW_BIN`` (default ``<repository>/.build/debug/tcpgw``). When it is
missing, every test that needs it FAILS (it does not skip): the client is only tested
against the real thing.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import tcpgw
from tcpgw import _wire

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = str(REPO_ROOT / ".build" / "debug" / "tcpgw")
START_TIMEOUT = 15.0  # seconds for the gateway to accept connections


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def poll_until(gw: tcpgw.Gateway, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run ``gw.poll`` until ``condition`` holds or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        gw.poll(min(remaining, 0.1))
    return True


class GatewayProcess:
    """A running ``tcpgw serve --socket PATH``."""

    def __init__(self, binary: str, path: str, log: Path) -> None:
        self.path = path
        self.log = log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--socket", path],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        if not wait_until(self._ready, START_TIMEOUT, 0.02):
            self.stop()
            raise RuntimeError(f"gateway did not start; log:\n{log.read_text(errors='replace')}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}; log:\n{self.log.read_text(errors='replace')}")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture(scope="session")
def gateway_bin() -> str:
    binary = os.environ.get("TCPGW_BIN", DEFAULT_BIN)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"gateway binary {binary} is missing (build it or set $TCPGW_BIN)", pytrace=False)
    return binary


@pytest.fixture
def gateway(gateway_bin: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be long.
    short_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    sock_path = str(short_dir / f"tcpgw-test-{os.getpid()}-{time.monotonic_ns()}.sock")
    process = GatewayProcess(gateway_bin, sock_path, tmp_path / "gateway.log")
    try:
        yield process
    finally:
        process.stop()
        if os.path.exists(sock_path):
            os.unlink(sock_path)


@pytest.fixture
def gw(gateway: GatewayProcess) -> Iterator[tcpgw.Gateway]:
    with tcpgw.connect(gateway.path) as connection:
        yield connection


@pytest.fixture(params=_wire.BASE64_DECODERS)
def b64_decoder(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each fast-path base64 decoder in turn (skipped where it is not usable), so that the
    fallbacks stay tested; the decoder in use before is restored afterwards."""
    name = str(request.param)
    if name not in _wire.available_base64_decoders():
        pytest.skip(f"base64 decoder {name} is not usable here")
    before = _wire.base64_decoder()
    assert _wire.use_base64_decoder(name) == name
    try:
        yield name
    finally:
        _wire.use_base64_decoder(before)


@pytest.fixture
def py_server() -> Iterator[socket.socket]:
    """A plain Python listening socket on 127.0.0.1 (ephemeral port)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(5)
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def recv_exactly(sock: socket.socket, count: int, timeout: float = 5.0) -> bytes:
    """Read exactly ``count`` bytes from a Python socket (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def gw_recv_exactly(conn: tcpgw.Tcp, count: int, timeout_ms: int = 5000) -> bytes:
    """Read exactly ``count`` bytes through the gateway (each recv bounded by ``timeout_ms``)."""
    data = bytearray()
    for _ in range(10_000):
        if len(data) >= count:
            break
        chunk = conn.recv(count - len(data), timeout_ms)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


FAKE_SSH = """#!/bin/sh
# A stand-in for ssh: logs its arguments, ignores the host and options, and runs the remote
# command here through a shell, as sshd would run it on the remote host.
printf '%s\\n' "$*" >> "$FAKE_SSH_LOG"
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; break; fi
  shift
done
exec sh -c "exec $*"
"""


class FakeSsh:
    """``$TCPGW_SSH`` pointing at a local stand-in; ``runs()`` lists the argument lines it got."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "fake-ssh"
        self.script.write_text(FAKE_SSH)
        self.script.chmod(0o755)
        self.log = directory / "fake-ssh.log"
        self.log.write_text("")

    def runs(self) -> list:
        return [line for line in self.log.read_text().splitlines() if line]


@pytest.fixture
def fake_ssh(tmp_path: Path, gateway_bin: str, monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    fake = FakeSsh(tmp_path)
    monkeypatch.setenv("TCPGW_SSH", str(fake.script))
    monkeypatch.setenv("TCPGW_REMOTE_BIN", gateway_bin)
    monkeypatch.setenv("FAKE_SSH_LOG", str(fake.log))
    return fake
