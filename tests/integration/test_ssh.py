"""`tcpgw bridge ssh://...` against a real sshd (tests/support/sshd.py) on loopback: calls and
events through ssh, descriptor passing refused by the bridge, bad addresses, ssh failures,
and ssh dying in the middle of a session.

The client side is the raw Wire harness over a socketpair that is the bridge's stdin and
stdout, so every byte the bridge writes is checked as the gateway's own would be.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator, Optional

import pytest

from conftest import (REPO_ROOT, TCPGW_BIN, Gateway, GatewayFactory, closed_port, port_of, py_connect,
                      py_listener, recv_exact_py, short_tmpdir)
from wire import FD_PASSING, RPCError, Wire, b64, decode

sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "support"))
import sshd  # noqa: E402
from streamer import Streamer  # noqa: E402

BRIDGE_EXIT_TIMEOUT = 20.0  # seconds; ssh itself gives up on a dead peer well before this


class BridgeWire(Wire):
    """A Wire whose far end is `tcpgw bridge ARGS` (its stdin and stdout are one socket)."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: str) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stderr_path = os.path.join(workdir, f"bridge-{time.monotonic_ns()}.err")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([TCPGW_BIN, "bridge", *args], stdin=child, stdout=child, stderr=err, env=env)
        child.close()
        # Wire's state, without its connect().
        self.path = "bridge"
        self.sock = parent
        self.sock.settimeout(10.0)
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._buf = bytearray()
        self._buf_offset = 0
        self._prev_byte_newline = True
        self._fds_at = {}
        self.inbox = []
        self.events = []
        self.eof = False
        self.closed = False

    def end_input(self) -> None:
        """The client is done writing: the bridge's stdin ends."""
        self.sock.shutdown(socket.SHUT_WR)

    def wait_exit(self, timeout: float = BRIDGE_EXIT_TIMEOUT) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"the bridge did not exit within {timeout}s: {self.stderr()}")
        return rc, self.stderr()

    def stderr(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def ssh_pid(self) -> int:
        """The ssh child of the bridge."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and comm == "ssh":
                return int(entry)
        raise AssertionError("the bridge has no ssh child")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Optional[sshd.SSHD]]:
    sshd.skip_unless_available()
    if not os.path.isfile(TCPGW_BIN):
        yield None  # each test fails on the missing binary (conftest)
        return
    s = sshd.SSHD(remote_path=[os.path.dirname(os.path.abspath(TCPGW_BIN))]).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def bridges() -> Iterator[list[BridgeWire]]:
    made: list[BridgeWire] = []
    yield made
    for b in made:
        b.stop()


def ssh_env(server: sshd.SSHD, variant: str = "ok", **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TCPGW_REMOTE_BIN", None)
    env["TCPGW_SSH"] = server.ssh_command(variant)
    env.update(extra)
    return env


def bridge(bridges: list[BridgeWire], gw: Gateway, args: list[str], env: dict[str, str]) -> BridgeWire:
    b = BridgeWire(args, env, gw.workdir)
    bridges.append(b)
    return b


def run_bridge(args: list[str], env: dict[str, str], stdin: bytes = b"", timeout: float = BRIDGE_EXIT_TIMEOUT,
               ) -> subprocess.CompletedProcess:
    return subprocess.run([TCPGW_BIN, "bridge", *args], input=stdin, capture_output=True, env=env, timeout=timeout)


# ---------------------------------------------------------------------- calls through ssh
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_calls_and_events_through_ssh(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire], addr: str,
                                      host: str) -> None:
    if host == "[::1]" and not server.ipv6:
        pytest.skip("no IPv6 loopback")
    b = bridge(bridges, gw, [server.url(gw.path, host=host)], ssh_env(server))
    info = b.call("gateway.info", timeout=20)
    assert info["socket"] == gw.path
    assert info["connections"] == 1, "the remote bridge is the gateway's one client"

    # A server in the gateway, a Python client, async accept: the event crosses ssh.
    srv = b.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert b.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    peer = py_connect(addr, srv["local"]["port"])
    ev = b.wait_event("tcp.onAccept", srv["handle"], timeout=10)
    conn = ev.params["client"]
    assert ev.params["remote"]["port"] == peer.getsockname()[1]

    # Both directions, binary-safe, through two JSON hops and ssh.
    payload = bytes(range(256)) * 64
    assert b.call("tcp.send", {"handle": conn, "data": b64(payload), "encoding": "base64"}) == len(payload)
    assert recv_exact_py(peer, len(payload)) == payload
    peer.sendall(payload[::-1])
    assert b.collect_data(conn, len(payload), timeout=10) == payload[::-1]

    # A synchronous client to a Python listener, tcp.recv with a timeout.
    lst = py_listener(addr)
    c = b.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "timeout": 5000})
    other, _ = lst.accept()
    lst.close()
    other.sendall(b"hello over ssh")
    got = b.call("tcp.recv", {"handle": c["handle"], "length": 100, "timeout": 5000})
    assert decode(got) == b"hello over ssh"
    with pytest.raises(RPCError) as timed_out:
        b.call("tcp.recv", {"handle": c["handle"], "length": 1, "timeout": 50})
    assert timed_out.value.code == -32002

    # stdin ends: the session ends, the gateway closes its handles, the bridge exits 0.
    b.end_input()
    for s in (peer, other):
        s.settimeout(10)
        assert s.recv(10) == b"", "the gateway closed the session's sockets"
    rc, err = b.wait_exit()
    assert rc == 0, err
    assert err == ""
    peer.close()
    other.close()


def test_remote_default_socket(gw: Gateway, bridges: list[BridgeWire]) -> None:
    """No path in the address: the remote tcpgw uses its own default ($TCPGW_SOCKET there)."""
    sshd.skip_unless_available()
    bin_dir = os.path.dirname(os.path.abspath(TCPGW_BIN))
    with sshd.SSHD(remote_path=[bin_dir], remote_env={"TCPGW_SOCKET": gw.path}) as own:
        b = bridge(bridges, gw, [own.url(user=False)], ssh_env(own))
        assert b.call("gateway.info", timeout=20)["socket"] == gw.path
        b.end_input()
        assert b.wait_exit()[0] == 0


def test_socket_option_and_odd_paths(server: sshd.SSHD, start_gateway: GatewayFactory,
                                     bridges: list[BridgeWire]) -> None:
    """--socket takes an ssh:// address too; a socket path and a remote program path holding
    spaces, quotes and `$` reach the remote side intact (quoted for the remote shell)."""
    d = short_tmpdir()
    try:
        odd = os.path.join(d, "it's a $dir")
        os.mkdir(odd)
        gw = start_gateway(socket_path=os.path.join(odd, "g w.sock"))
        bin_dir = os.path.join(d, "bin 'x'")
        os.mkdir(bin_dir)
        os.symlink(os.path.abspath(TCPGW_BIN), os.path.join(bin_dir, "tcp gw"))
        env = ssh_env(server, TCPGW_REMOTE_BIN=os.path.join(bin_dir, "tcp gw"))
        b = bridge(bridges, gw, ["--socket", server.url(gw.path)], env)
        assert b.call("gateway.info", timeout=20)["socket"] == gw.path
        b.end_input()
        assert b.wait_exit()[0] == 0
    finally:
        shutil.rmtree(d)  # removes the symlink, not what it points to


def test_address_from_tcpgw_socket(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire]) -> None:
    """No ADDRESS and no --socket: $TCPGW_SOCKET may hold an ssh:// address too."""
    b = bridge(bridges, gw, [], ssh_env(server, TCPGW_SOCKET=server.url(gw.path)))
    assert b.call("gateway.info", timeout=20)["socket"] == gw.path
    b.end_input()
    assert b.wait_exit()[0] == 0


# ---------------------------------------------------------------------- descriptor passing
def test_descriptor_passing_refused_over_ssh(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire],
                                             addr: str) -> None:
    b = bridge(bridges, gw, [server.url(gw.path)], ssh_env(server))
    lst = py_listener(addr)
    c = b.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "timeout": 5000}, timeout=20)
    peer, _ = lst.accept()
    lst.close()

    start = time.monotonic()
    with pytest.raises(RPCError) as refused:
        b.call("tcp.flyAway", {"handle": c["handle"]})
    assert time.monotonic() - start < 5, "answered at once, never a hang"
    assert refused.value.code == FD_PASSING
    assert "SCM_RIGHTS" in refused.value.message and "tcpgw bridge" in refused.value.message
    assert refused.value.data == {"method": "tcp.flyAway", "refusedBy": "bridge"}
    # The socket never left: the handle works and the peer is still connected.
    assert [h["handle"] for h in b.call("tcp.list")] == [c["handle"]]
    assert b.call("tcp.send", {"handle": c["handle"], "data": "still here"}) == 10
    assert recv_exact_py(peer, 10) == b"still here"

    with pytest.raises(RPCError) as by_fd:
        b.call("tcp.createByFd", {})
    assert by_fd.value.code == FD_PASSING and "tcp.createByFd" in by_fd.value.message

    # By position, with an escaped name, in a batch: refused the same way, nothing runs.
    b.send_raw('{"jsonrpc":"2.0","id":"e","method":"tcp.fly\\u0041way","params":[%d]}\n' % c["handle"])
    assert b.reply("e").obj["error"]["code"] == FD_PASSING
    b.send_obj([{"jsonrpc": "2.0", "id": 91, "method": "tcp.close", "params": [c["handle"]]},
                {"jsonrpc": "2.0", "id": 92, "method": "tcp.flyAway", "params": [c["handle"]]}])
    batch = b.next_reply().obj
    assert isinstance(batch, list) and sorted(e["id"] for e in batch) == [91, 92]
    assert all(e["error"]["code"] == FD_PASSING for e in batch)
    assert [h["handle"] for h in b.call("tcp.list")] == [c["handle"]], "the batch's tcp.close did not run"
    peer.close()


@pytest.mark.parametrize("via", ["ssh", "socket"])
def test_refusals_amid_a_flood_of_events(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire], via: str) -> None:
    """The bridge's own answers land between the gateway's lines, never inside one, while
    megabytes of tcp.onData flow; big request lines go the other way intact."""
    target = server.url(gw.path) if via == "ssh" else gw.path
    b = bridge(bridges, gw, [target], ssh_env(server))
    srv = b.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}}, timeout=20)
    assert b.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    peer = py_connect("127.0.0.1", srv["local"]["port"])
    conn = b.wait_event("tcp.onAccept", srv["handle"], timeout=10).params["client"]

    rng = random.Random(20261201)
    down = rng.randbytes(6 << 20)
    up = rng.randbytes(3 << 20)
    sender = threading.Thread(target=peer.sendall, args=(down,), daemon=True)
    sender.start()
    refused = [b.request("tcp.flyAway", {"handle": conn}) for _ in range(300)]
    big = b.request("tcp.send", {"handle": conn, "data": b64(up), "encoding": "base64"})
    # Every line the harness reads must parse as JSON (Wire asserts it): a refusal written
    # into the middle of an event's line would not.
    got = b.collect_data(conn, len(down), timeout=60)
    assert hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
    for rid in refused:
        assert b.reply(rid, timeout=30).obj["error"]["code"] == FD_PASSING
    assert b.reply(big, timeout=30).obj["result"] == len(up)
    assert hashlib.sha256(recv_exact_py(peer, len(up), timeout=30)).digest() == hashlib.sha256(up).digest()
    sender.join(10)
    peer.close()


def test_local_bridge_refuses_descriptor_passing(gw: Gateway, bridges: list[BridgeWire], addr: str) -> None:
    """The same refusal without ssh: the plain bridge drops descriptors too (before, a flyAway
    through it lost the socket)."""
    b = bridge(bridges, gw, [gw.path], dict(os.environ))
    srv = b.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    with pytest.raises(RPCError) as refused:
        b.call("tcp.flyAway", [srv["handle"]])
    assert refused.value.code == FD_PASSING
    assert b.call("tcp.getState", [srv["handle"]])["name"] == "LISTEN"
    peer = py_connect(addr, srv["local"]["port"])  # the listener is still there
    assert b.call("tcp.accept", {"handle": srv["handle"], "timeout": 5000})["handle"] > 0
    peer.close()


# ---------------------------------------------------------------------- bad addresses
@pytest.mark.parametrize("address,message", [
    ("ssh://", "the host is empty"),
    ("ssh://host:0/x.sock", "not a number from 1 to 65535"),
    ("ssh://host:65536", "not a number from 1 to 65535"),
    ("ssh://host:2x", "not a number from 1 to 65535"),
    ("ssh://::1/x.sock", "must be in brackets"),
    ("ssh://[::1/x.sock", "without its ']'"),
    ("ssh://[zz::1]", "is not an IPv6 address"),
    ("ssh://h%6fst", "percent-escapes are not supported"),
    ("ssh://host/a%20b.sock", "percent-escapes are not supported"),
    ("ssh://-oProxyCommand=touch_x", "may not start with '-'"),
    ("ssh://a@b@c", "more than one '@'"),
    ("ssh://host/x.sock?mode=1", "query or fragment"),
    ("ssh://host/x\nsock", "control character"),
    ("ssh://host/", "leave the '/' out"),
    ("ftp://host/x", "unsupported address 'ftp://...'"),
])
def test_bad_addresses(address: str, message: str) -> None:
    d = short_tmpdir()
    try:
        marker = os.path.join(d, "ran")
        # If anything reached "ssh", this stand-in would leave a mark.
        env = dict(os.environ, TCPGW_SSH=f"/bin/sh -c {shlex.quote('touch ' + shlex.quote(marker))} sh")
        r = run_bridge([address], env, timeout=10)
        assert r.returncode == 2, r
        err = r.stderr.decode()
        assert message in err, err
        assert err.startswith("tcpgw: ") and err.count("\n") == 1, err
        assert r.stdout == b""
        assert not os.path.exists(marker), "no ssh ran for a bad address"
    finally:
        if os.path.exists(os.path.join(d, "ran")):
            os.unlink(os.path.join(d, "ran"))
        os.rmdir(d)


def test_address_and_socket_option_together() -> None:
    # The gateway is named once: both ADDRESS and --socket is a usage error.
    r = run_bridge(["ssh://h/x.sock", "--socket", "/tmp/y.sock"], dict(os.environ), timeout=10)
    assert r.returncode == 2
    assert b"either as ADDRESS or with --socket, not both" in r.stderr


# ---------------------------------------------------------------------- ssh failures
def test_nothing_listening(server: sshd.SSHD, gw: Gateway) -> None:
    port = closed_port("127.0.0.1")
    r = run_bridge([f"ssh://127.0.0.1:{port}{gw.path}"], ssh_env(server),
                   stdin=b'{"jsonrpc":"2.0","id":1,"method":"gateway.info"}\n')
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Connection refused" in err, "ssh's own message is passed on"
    assert "ssh failed (status 255" in err
    assert r.stdout == b""


def test_unauthorized_key(server: sshd.SSHD, gw: Gateway) -> None:
    r = run_bridge([server.url(gw.path)], ssh_env(server, "unauthorized"),
                   stdin=b'{"jsonrpc":"2.0","id":1,"method":"gateway.info"}\n')
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Permission denied" in err
    assert "authentication was refused" in err
    assert r.stdout == b""
    assert gw.connect().call("gateway.info")["connections"] == 1, "nothing reached the gateway"


def test_host_key_mismatch(server: sshd.SSHD, gw: Gateway) -> None:
    r = run_bridge([server.url(gw.path)], ssh_env(server, "wrong-host-key"), stdin=b"")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Host key verification failed" in err
    assert "ssh failed (status 255" in err


def test_remote_socket_missing(server: sshd.SSHD, gw: Gateway) -> None:
    missing = gw.path + ".nope"
    r = run_bridge([server.url(missing)], ssh_env(server), stdin=b'{"jsonrpc":"2.0","id":1,"method":"tcp.list"}\n')
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"cannot connect to {missing}" in err, "the remote bridge's own message comes through"
    assert "the remote tcpgw bridge exited with status 2" in err


def test_remote_program_missing(server: sshd.SSHD, gw: Gateway) -> None:
    r = run_bridge([server.url(gw.path)], ssh_env(server, TCPGW_REMOTE_BIN="/nonexistent/tcpgw"), stdin=b"")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "status 127" in err and "TCPGW_REMOTE_BIN" in err


def test_ssh_program_missing(gw: Gateway) -> None:
    r = run_bridge(["ssh://127.0.0.1/x.sock"], dict(os.environ, TCPGW_SSH="/nonexistent/ssh -v"), timeout=10)
    assert r.returncode == 2
    assert b"cannot run '/nonexistent/ssh'" in r.stderr


def test_tcpgw_call_over_ssh(server: sshd.SSHD, gw: Gateway) -> None:
    r = subprocess.run([TCPGW_BIN, "call", "tcp.constants", "--socket", server.url(gw.path)], capture_output=True,
                       env=ssh_env(server), timeout=BRIDGE_EXIT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert b'"AF_INET":2' in r.stdout and r.stderr == b""
    r = subprocess.run([TCPGW_BIN, "call", "tcp.close", "[12345]", "--socket", server.url(gw.path)], capture_output=True,
                       env=ssh_env(server), timeout=BRIDGE_EXIT_TIMEOUT)
    assert r.returncode == 1 and b"-32000" in r.stdout, r
    r = subprocess.run([TCPGW_BIN, "call", "gateway.info", "--socket", server.url(gw.path)], capture_output=True,
                       env=ssh_env(server, "unauthorized"), timeout=BRIDGE_EXIT_TIMEOUT)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "Permission denied" in err and "ssh failed (status 255" in err
    assert r.stdout == b""


# ---------------------------------------------------------------------- ssh dies mid-session
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_ssh_killed_mid_session(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire], addr: str,
                                sig: int) -> None:
    b = bridge(bridges, gw, [server.url(gw.path)], ssh_env(server))
    lst = py_listener(addr)
    c = b.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "timeout": 5000}, timeout=20)
    peer, _ = lst.accept()
    lst.close()
    # A call in flight when ssh dies: it can get no answer, and the bridge must not hang on it.
    b.request("tcp.recv", {"handle": c["handle"], "length": 10, "timeout": 60000})
    time.sleep(0.2)
    os.kill(b.ssh_pid(), sig)
    rc, err = b.wait_exit()
    assert rc == 1, err
    assert "ssh ended by signal" in err or "ssh connection broke" in err, err
    assert "the session with the gateway is lost" in err
    # The bridge's stdout ended: the client sees end of stream, not a hang.
    deadline = time.monotonic() + 10
    while not b.eof and time.monotonic() < deadline:
        b._pump(0.2)
    assert b.eof
    # Far side: sshd ends the remote bridge, the gateway closes the session's socket.
    peer.settimeout(15)
    assert peer.recv(10) == b""
    peer.close()
    assert gw.connect().call("gateway.info")["handles"] == 0


# ---------------------------------------------------------------------- tcpgw bridge --keep over ssh
def children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, comm, state) of each child of `pid`, zombies included."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        if int(fields[1]) == pid:
            out.append((int(entry), head.split("(", 1)[1], fields[0]))
    return out


def live_ssh_child(b: BridgeWire, timeout: float = 20.0) -> int:
    """The bridge's ssh child once it has one (it may be between two runs of ssh)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p, comm, state in children_of(b.proc.pid) if comm == "ssh" and state != "Z"]
        if kids:
            return kids[0]
        b._pump(0.02)
    raise AssertionError(f"the bridge has no ssh child: {b.stderr()}")


def assert_no_zombies(b: BridgeWire) -> None:
    kids = children_of(b.proc.pid)
    assert all(state != "Z" for _, _, state in kids), kids
    assert len(kids) <= 1, kids


def logins(server: sshd.SSHD) -> int:
    return server.log().count("Accepted publickey")




@pytest.mark.parametrize("seed", [3, 17])
def test_kept_bridge_over_ssh_resumes_after_ssh_is_killed(server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire],
                                                          seed: int) -> None:
    rng = random.Random(seed)
    before = logins(server)
    b = bridge(bridges, gw, ["--keep", "30000", server.url(gw.path)], ssh_env(server))
    lst = py_listener("127.0.0.1")
    handle = b.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}, "async": True},
                    timeout=20)["handle"]
    peer, _ = lst.accept()
    # A second, synchronous handle with a call that waits across every drop.
    waiting = b.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}, "timeout": 5000})
    other, _ = lst.accept()
    lst.close()
    blocked = b.request("tcp.recv", {"handle": waiting["handle"], "length": 5, "timeout": 120000})

    down = random.Random(seed + 100).randbytes(1_500_000)
    streamer = Streamer(peer, down, seed)
    streamer.start()
    up = bytearray()
    sends: dict[int, int] = {}
    kill_at = sorted(rng.sample(range(10, 150), 3))
    for i in range(160):
        chunk = rng.randbytes(rng.randint(1, 6000))
        sends[b.request("tcp.send", {"handle": handle, "data": b64(chunk), "encoding": "base64"})] = len(chunk)
        up += chunk
        b._pump(rng.random() * 0.01)
        if i in kill_at:
            os.kill(live_ssh_child(b), signal.SIGKILL)
    got = bytearray()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for m in b.events_for(handle, "tcp.onData"):
            got += decode(m.params)
        b.events = [m for m in b.events if m.method != "tcp.onData"]
        answered = {m.obj.get("id") for m in b.inbox if isinstance(m.obj, dict)}
        if set(sends) <= answered and len(got) >= len(down) and len(streamer.got) >= len(up):
            break
        b._pump(0.05)
        assert b.proc.poll() is None, b.stderr()
    # Every request answered exactly once, with its own count; none of the bridge's own lines leak.
    replies = [m.obj for m in b.inbox]
    assert sorted(r["id"] for r in replies) == sorted(sends), [r for r in replies if r.get("id") not in sends][:3]
    for r in replies:
        assert r.get("result") == sends[r["id"]], r
    b.inbox.clear()
    assert hashlib.sha256(bytes(got)).hexdigest() == hashlib.sha256(down).hexdigest(), (len(got), len(down))
    streamer.stop = True
    streamer.join(10)
    assert streamer.error is None, streamer.error
    assert hashlib.sha256(bytes(streamer.got)).hexdigest() == hashlib.sha256(bytes(up)).hexdigest()
    # The call that waited through every drop is answered once.
    other.sendall(b"later")
    assert decode(result_of_reply(b, blocked)) == b"later"
    # A kill may land before that ssh logged in: at least one more login than the first.
    assert logins(server) - before >= 2, "ssh ran again after a kill"
    assert b.stderr().count("resuming") >= 1, b.stderr()  # a kill before a resume is the same outage
    assert_no_zombies(b)
    # Still one session, one gateway client: its handles as they were.
    assert sorted(h["handle"] for h in b.call("tcp.list")) == sorted([handle, waiting["handle"]])
    b.end_input()
    rc, err = b.wait_exit()
    assert rc == 0, err
    for s in (peer, other):
        s.settimeout(10)
        assert recv_until_eof(s) is True, "the session's sockets are closed at the end"
        s.close()
    assert gw.connect().call("gateway.info")["handles"] == 0


def result_of_reply(b: BridgeWire, rid: int) -> dict:
    m = b.reply(rid, timeout=20).obj
    assert "result" in m, m
    return m["result"]


def recv_until_eof(s: socket.socket) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if s.recv(1 << 16) == b"":
                return True
        except socket.timeout:
            continue
    return False


def test_kept_bridge_over_ssh_gives_up_after_the_grace(gw: Gateway, bridges: list[BridgeWire]) -> None:
    sshd.skip_unless_available()
    d = short_tmpdir()
    own = sshd.SSHD(workdir=d, remote_path=[os.path.dirname(os.path.abspath(TCPGW_BIN))]).start()
    try:
        b = bridge(bridges, gw, ["--keep", "1500", own.url(gw.path)], ssh_env(own))
        srv = b.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}}, timeout=20)
        assert gw.connect().call("gateway.info")["handles"] == 1
        own._kill()  # sshd stops (its files stay): no new ssh can log in
        os.kill(live_ssh_child(b), signal.SIGKILL)
        started = time.monotonic()
        rc, err = b.wait_exit()
        assert rc == 1, err
        assert "could not resume the session within its grace of 1500 ms" in err, err
        assert "ssh failed (status 255" in err, err  # the last attempt's reason
        assert time.monotonic() - started < 15
        assert children_of(b.proc.pid) == []
        # The gateway ended the session after its grace: the server's handle is gone.
        deadline = time.monotonic() + 10
        while gw.connect().call("gateway.info")["handles"] != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gw.connect().call("gateway.info")["handles"] == 0
        with pytest.raises(OSError):
            py_connect("127.0.0.1", srv["local"]["port"], timeout=2).close()
    finally:
        own.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("via", ["ssh", "socket"])
def test_kept_bridge_refuses_descriptor_passing_and_counts_only_what_it_sends(
        server: sshd.SSHD, gw: Gateway, bridges: list[BridgeWire], addr: str, via: str) -> None:
    target = server.url(gw.path) if via == "ssh" else gw.path
    b = bridge(bridges, gw, ["--keep", "20000", target], ssh_env(server))
    lst = py_listener(addr)
    c = b.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "timeout": 5000}, timeout=20)
    peer, _ = lst.accept()
    lst.close()
    for round_ in range(3):
        with pytest.raises(RPCError) as refused:
            b.call("tcp.flyAway", {"handle": c["handle"]})
        assert refused.value.code == FD_PASSING
        assert refused.value.data == {"method": "tcp.flyAway", "refusedBy": "bridge"}
        with pytest.raises(RPCError) as by_fd:
            b.call("tcp.createByFd", {})
        assert by_fd.value.code == FD_PASSING and "tcp.createByFd" in by_fd.value.message
        b.send_obj([{"jsonrpc": "2.0", "id": f"b{round_}", "method": "tcp.close", "params": [c["handle"]]},
                    {"jsonrpc": "2.0", "id": f"f{round_}", "method": "tcp.flyAway", "params": [c["handle"]]}])
        batch = b.next_reply().obj
        assert isinstance(batch, list) and all(e["error"]["code"] == FD_PASSING for e in batch), batch
        b.notify("tcp.flyAway", {"handle": c["handle"]})
        # Interleaved with ordinary calls, then the link drops: had a refused line been
        # counted, the resume would disagree about the count, or a call would run twice.
        assert b.call("tcp.send", {"handle": c["handle"], "data": f"r{round_}"}) == 2
        assert recv_exact_py(peer, 2) == f"r{round_}".encode()
        if via == "ssh":  # the socket variant checks the refusals without a drop
            os.kill(live_ssh_child(b), signal.SIGKILL)
        assert [h["handle"] for h in b.call("tcp.list", timeout=20)] == [c["handle"]]
    assert "dropped a tcp.flyAway notification" in b.stderr()
    peer.sendall(b"still here")
    assert decode(b.call("tcp.recv", {"handle": c["handle"], "length": 10, "timeout": 5000})) == b"still here"
    b.end_input()
    rc, err = b.wait_exit()
    assert rc == 0, err
    assert_no_zombies(b)
    peer.close()


def test_kept_bridge_ssh_failures_match_the_plain_bridge(server: sshd.SSHD, gw: Gateway) -> None:
    for variant in ("unauthorized", "wrong-host-key"):
        plain = run_bridge([server.url(gw.path)], ssh_env(server, variant), stdin=b'{"jsonrpc":"2.0","id":1,"method":"gateway.info"}\n')
        kept = run_bridge(["--keep", "5000", server.url(gw.path)], ssh_env(server, variant),
                          stdin=b'{"jsonrpc":"2.0","id":1,"method":"gateway.info"}\n')
        assert plain.returncode == kept.returncode == 2, (plain, kept)
        ours = [line for line in kept.stderr.decode().splitlines() if line.startswith("tcpgw:")]
        assert ours == [line for line in plain.stderr.decode().splitlines() if line.startswith("tcpgw:")], (plain, kept)
        assert "ssh failed (status 255" in ours[0]
        assert kept.stdout == b""
    missing = run_bridge(["--keep", "5000", server.url(gw.path)], ssh_env(server, TCPGW_SSH="/nonexistent/ssh"))
    assert missing.returncode == 2 and b"cannot run '/nonexistent/ssh'" in missing.stderr, missing
    bad = run_bridge(["--keep", "5000", server.url(gw.path)], ssh_env(server, TCPGW_SSH="ssh 'unterminated"))
    assert bad.returncode == 2 and b"unterminated single quote" in bad.stderr, bad
    assert gw.connect().call("gateway.info")["connections"] == 1  # only this check's own
