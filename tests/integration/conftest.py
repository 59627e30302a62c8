"""Fixtures for the tcpgw integration suite: start the real binary, connect raw wires,
and make loopback peers.

The binary is $TCPGW_BIN (default <repository>/.build/debug/tcpgw). A missing binary makes
every test FAIL, never skip: a suite that silently skips proves nothing.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, Optional

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from wire import Wire  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "support"))
import ports  # noqa: E402
TCPGW_BIN = os.environ.get("TCPGW_BIN", os.path.join(REPO_ROOT, ".build", "debug", "tcpgw"))
READY_TIMEOUT = 10.0
LOOPBACKS = ["127.0.0.1", "::1"]


def binary_present() -> bool:
    return os.path.isfile(TCPGW_BIN) and os.access(TCPGW_BIN, os.X_OK)


def require_binary() -> str:
    if not (os.path.isfile(TCPGW_BIN) and os.access(TCPGW_BIN, os.X_OK)):
        pytest.fail(f"tcpgw binary not found or not executable: {TCPGW_BIN} (set TCPGW_BIN)")
    return TCPGW_BIN


def short_tmpdir() -> str:
    """A short directory under /tmp: sun_path is limited to 108 bytes, pytest's tmp_path is long."""
    return tempfile.mkdtemp(prefix="tgw-", dir="/tmp")


def can_connect_unix(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def run_cli(args: list[str], env: Optional[dict[str, str]] = None, timeout: float = 10.0,
            ) -> subprocess.CompletedProcess:
    """Run `tcpgw ARGS` to completion (bounded)."""
    return subprocess.run([require_binary(), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


class Gateway:
    """One running `tcpgw serve` process."""

    def __init__(self, workdir: str, args: list[str], env: Optional[dict[str, str]] = None,
                 socket_path: Optional[str] = None, pass_socket: bool = True) -> None:
        self.workdir = workdir
        self.path = socket_path or os.path.join(workdir, "gw.sock")
        self.log_path = os.path.join(workdir, f"gw-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")
        cmd = [require_binary(), "serve"]
        if pass_socket:
            cmd += ["--socket", self.path]
        cmd += args
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self.wires: list[Wire] = []
        self.returncode: Optional[int] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "Gateway":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"tcpgw exited with {rc} before becoming ready: {self.cmd}\n{self.log()}")
            if os.path.exists(self.path) and can_connect_unix(self.path):
                return self
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"tcpgw not ready within {timeout}s: {self.cmd}\n{self.log()}")

    def connect(self) -> Wire:
        w = Wire(self.path)
        self.wires.append(w)
        return w

    def signal_and_wait(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        # Wires stay open until the process is gone: the signal itself must close everything.
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"tcpgw did not exit within {timeout}s after signal {sig}\n{self.log()}")
        finally:
            for w in self.wires:
                w.close()
        self._log.close()
        return self.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.returncode = self.proc.returncode

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


class GatewayFactory:
    """Starts gateways for a test and stops them (SIGTERM, exit 0, socket removed) at teardown."""

    def __init__(self) -> None:
        self.started: list[Gateway] = []
        self.dirs: list[str] = []

    def tmpdir(self) -> str:
        d = short_tmpdir()
        self.dirs.append(d)
        return d

    def __call__(self, *args: str, env: Optional[dict[str, str]] = None,
                 socket_path: Optional[str] = None, pass_socket: bool = True,
                 ready: bool = True) -> Gateway:
        gw = Gateway(self.tmpdir(), list(args), env, socket_path, pass_socket)
        self.started.append(gw)
        return gw.wait_ready() if ready else gw

    def teardown(self) -> None:
        problems = []
        for gw in self.started:
            if gw.returncode is not None:
                continue  # the test stopped it itself and checked the outcome
            try:
                rc = gw.signal_and_wait(signal.SIGTERM)
            except BaseException as e:  # pytest.fail on a hang: still clean up the rest
                problems.append(str(e))
                continue
            if rc != 0:
                problems.append(f"tcpgw exited {rc} on SIGTERM (expected 0)\n{gw.log()[-3000:]}")
            if os.path.exists(gw.path):
                problems.append(f"socket file {gw.path} left behind after SIGTERM")
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not problems, "\n".join(problems)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    # A missing binary must make each test FAIL (not error in setup, not skip). Fixtures
    # below therefore hand out None when it is missing, and this check fails the test body.
    require_binary()


@pytest.fixture
def start_gateway() -> Iterator[GatewayFactory]:
    factory = GatewayFactory()
    yield factory
    factory.teardown()


@pytest.fixture
def gw(start_gateway: GatewayFactory) -> Optional[Gateway]:
    return start_gateway() if binary_present() else None


@pytest.fixture
def wire(gw: Optional[Gateway]) -> Optional[Wire]:
    return gw.connect() if gw is not None else None


@pytest.fixture(params=LOOPBACKS, ids=["v4", "v6"])
def addr(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------------- Python peers
def family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def py_listener(addr: str, backlog: int = 16) -> socket.socket:
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 0))
    s.listen(backlog)
    s.settimeout(5.0)
    return s


def py_connect(addr: str, port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((addr, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def port_of(s: socket.socket) -> int:
    return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s: a test never leaves a server (or an ssh) behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def closed_port(addr: str) -> int:
    """A port on which nothing listens right now, from below the ephemeral range, where no
    other test's listener on port 0 lands (tests/support/ports.py)."""
    return ports.free_port([addr])


def recv_exact_py(s: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"peer saw EOF after {len(out)}/{n} bytes: {out[:100]!r}")
        out += chunk
    return out


def recv_until_eof_py(s: socket.socket, timeout: float = 5.0, limit: int = 1 << 26) -> bytes:
    s.settimeout(timeout)
    out = b""
    while len(out) < limit:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk
    raise AssertionError("peer read too much")


def reset_close(s: socket.socket) -> None:
    """Close with SO_LINGER {1, 0}: the kernel sends RST instead of FIN."""
    import struct
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ---------------------------------------------------------------------- gateway-side pairs
def client_pair(w: Wire, addr: str) -> tuple[dict, socket.socket]:
    """A synchronous gateway client connected to a Python peer: (createClient result, peer)."""
    lst = py_listener(addr)
    try:
        r = w.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "timeout": 5000})
        peer, _ = lst.accept()
    finally:
        lst.close()
    peer.settimeout(5.0)
    return r, peer


def accepted_pair(w: Wire, addr: str) -> tuple[int, int, socket.socket]:
    """A gateway server accepting asynchronously and one Python client it accepted:
    (server handle, flowing client handle, peer socket)."""
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    peer = py_connect(addr, srv["local"]["port"])
    ev = w.wait_event("tcp.onAccept", srv["handle"])
    assert ev.params["remote"]["port"] == peer.getsockname()[1]
    return srv["handle"], ev.params["client"], peer
