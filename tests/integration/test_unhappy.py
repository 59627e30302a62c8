"""Unhappy paths: network failures, timeouts that lose nothing, foreign/unknown handles, wrong
kinds, session cleanup, descriptor passing failures and policy denials."""
from __future__ import annotations

import errno
import json
import os
import socket
import time

import pytest

from conftest import (Gateway, GatewayFactory, accepted_pair, client_pair, closed_port, py_connect,
                      py_listener, port_of, recv_exact_py, recv_until_eof_py, reset_close)
from wire import (DENIED, FD_PASSING, OS_FAILURE, TIMED_OUT, UNKNOWN_HANDLE, WRONG_KIND, RPCError,
                  Wire, decode, result_of)


def rpc_error(w: Wire, method: str, params=None, **kw) -> RPCError:
    with pytest.raises(RPCError) as e:
        w.call(method, params, **kw)
    return e.value


# ------------------------------------------------------------------------ connect failures
def test_connect_refused_sync(wire: Wire, addr: str) -> None:
    port = closed_port(addr)
    e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"addr": addr, "port": port}, "timeout": 3000})
    assert e.code == OS_FAILURE, e
    assert e.data["errno"] == "ECONNREFUSED" and e.data["errnoNumber"] == 111, e.data
    assert e.data["syscall"] == "connect", e.data
    assert wire.call("tcp.list") == []  # no half-made handle left behind


def test_connect_refused_async(wire: Wire, addr: str) -> None:
    port = closed_port(addr)
    r = wire.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port}, "async": True})
    ev = wire.wait_event("tcp.onConnect", r["handle"])
    assert ev.params["error"]["errno"] == "ECONNREFUSED"
    assert ev.params["error"]["errnoNumber"] == 111


def _saturated_listener() -> tuple[socket.socket, list[socket.socket]] | None:
    """A listener whose accept queue is full, so new SYNs are dropped and connects hang."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(lst.getsockname())
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(lst.getsockname())
    except (socket.timeout, TimeoutError):
        return lst, fillers + [probe]
    except OSError:
        pass
    probe.close()
    for s in fillers:
        s.close()
    lst.close()
    return None


def test_connect_timeout(wire: Wire) -> None:
    sat = _saturated_listener()
    if sat is None:
        pytest.skip("loopback did not produce a hanging connect (accept queue overflow not dropping SYNs)")
    lst, hold = sat
    try:
        t0 = time.monotonic()
        e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)},
                                                 "timeout": 300})
        took = time.monotonic() - t0
        assert e.code == TIMED_OUT, e
        assert 0.25 <= took < 3, took
        # Async with timeout: onConnect reports the failure.
        r = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)},
                                           "timeout": 300, "async": True})
        ev = wire.wait_event("tcp.onConnect", r["handle"], timeout=5)
        assert ev.params["error"]["errno"] == "ETIMEDOUT", ev.params
    finally:
        for s in hold:
            s.close()
        lst.close()


# ------------------------------------------------------------------------ timeouts lose nothing
def test_recv_timeout_loses_nothing(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    t0 = time.monotonic()
    e = rpc_error(wire, "tcp.recv", {"handle": c["handle"], "timeout": 200})
    assert e.code == TIMED_OUT
    assert 0.15 <= time.monotonic() - t0 < 3
    e = rpc_error(wire, "tcp.recv", {"handle": c["handle"], "timeout": 0})
    assert e.code == TIMED_OUT
    peer.sendall(b"late data")
    assert wire.recv_exact(c["handle"], 9) == b"late data"
    peer.close()


def test_many_recv_timeouts_in_a_row_lose_nothing(wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    ids = [wire.request("tcp.recv", {"handle": c["handle"], "timeout": 50 + 10 * i}) for i in range(5)]
    for i in ids:
        with pytest.raises(RPCError) as e:
            result_of(wire.reply(i))
        assert e.value.code == TIMED_OUT
    peer.sendall(b"0123456789")
    assert wire.recv_exact(c["handle"], 10) == b"0123456789"
    peer.close()


def test_accept_timeout_loses_nothing(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert rpc_error(wire, "tcp.accept", {"handle": srv["handle"], "timeout": 150}).code == TIMED_OUT
    peer = py_connect(addr, srv["local"]["port"])
    time.sleep(0.1)
    acc = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 0})  # already queued
    assert acc["remote"]["port"] == peer.getsockname()[1]
    peer.close()


def test_peer_reset_during_recv(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    rid = wire.request("tcp.recv", {"handle": c["handle"], "timeout": 5000})
    time.sleep(0.2)
    reset_close(peer)
    with pytest.raises(RPCError) as e:
        result_of(wire.reply(rid, timeout=5))
    assert e.value.code == OS_FAILURE, e.value
    assert e.value.data["errno"] == "ECONNRESET" and e.value.data["errnoNumber"] == 104
    # The gateway is fine and knows the handle is broken or gone.
    assert wire.call("gateway.info")["name"] == "tcpgw"


def test_half_close_recv_rest_then_eof_and_still_send(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    peer.sendall(b"remaining")
    peer.shutdown(socket.SHUT_WR)
    assert wire.recv_exact(h, 9) == b"remaining"
    r = wire.call("tcp.recv", {"handle": h, "timeout": 3000})
    assert r["eof"] is True and r["data"] == ""
    assert wire.call("tcp.isEOF", {"handle": h}) is True
    assert wire.call("tcp.getState", {"handle": h})["state"] == 7
    assert wire.call("tcp.send", {"handle": h, "data": "answer"}) == 6
    assert recv_exact_py(peer, 6) == b"answer"
    assert wire.call("tcp.close", {"handle": h}) is True
    assert recv_until_eof_py(peer) == b""
    peer.close()


def test_send_to_reset_peer_fails_with_os_error(wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    reset_close(peer)
    time.sleep(0.1)
    with pytest.raises(RPCError) as e:
        for _ in range(20):  # the first write may still be accepted by the kernel
            wire.call("tcp.send", {"handle": c["handle"], "data": "x" * 1000})
            time.sleep(0.02)
    assert e.value.code in (OS_FAILURE, UNKNOWN_HANDLE), e.value
    if e.value.code == OS_FAILURE:
        assert e.value.data["errno"] in ("ECONNRESET", "EPIPE"), e.value.data


# ------------------------------------------------------------------------ handles
def test_unknown_and_closed_handles(wire: Wire) -> None:
    for h in (999_999, 1, 2**31 - 1):
        assert rpc_error(wire, "tcp.getState", {"handle": h}).code == UNKNOWN_HANDLE
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    wire.call("tcp.close", {"handle": srv["handle"]})
    for m, extra in (("tcp.getState", {}), ("tcp.accept", {"timeout": 10}), ("tcp.close", {}),
                     ("tcp.send", {"data": "x"}), ("tcp.flyAway", {}), ("tcp.mports", {"mports": 1})):
        e = rpc_error(wire, m, {"handle": srv["handle"], **extra})
        assert e.code == UNKNOWN_HANDLE, (m, e)


def test_foreign_handle_is_unknown(gw: Gateway) -> None:
    a, b = gw.connect(), gw.connect()
    c, peer = client_pair(a, "127.0.0.1")
    srv = a.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    for m, params in (("tcp.send", {"handle": c["handle"], "data": "steal"}),
                      ("tcp.recv", {"handle": c["handle"], "timeout": 10}),
                      ("tcp.close", {"handle": c["handle"]}),
                      ("tcp.flyAway", {"handle": c["handle"]}),
                      ("tcp.getState", {"handle": srv["handle"]}),
                      ("tcp.accept", {"handle": srv["handle"], "async": True})):
        e = rpc_error(b, m, params)
        assert e.code == UNKNOWN_HANDLE, (m, e)
    assert b.call("tcp.list") == []
    # Still owned and intact on A.
    assert a.call("tcp.send", {"handle": c["handle"], "data": "ok"}) == 2
    assert recv_exact_py(peer, 2) == b"ok"
    peer.close()


def test_wrong_kind(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    c, peer = client_pair(wire, "127.0.0.1")
    for m, params in (("tcp.recv", {"handle": srv["handle"], "timeout": 10}),
                      ("tcp.recvfrom", {"handle": srv["handle"], "timeout": 10}),
                      ("tcp.send", {"handle": srv["handle"], "data": "x"}),
                      ("tcp.accept", {"handle": c["handle"], "timeout": 10}),
                      ("tcp.accept", {"handle": c["handle"], "async": True}),
                      ("tcp.mports", {"handle": c["handle"], "mports": 2})):
        e = rpc_error(wire, m, params)
        assert e.code == WRONG_KIND, (m, e)
    wire.call("tcp.shutdown", {"handle": c["handle"], "how": "w"})
    assert rpc_error(wire, "tcp.send", {"handle": c["handle"], "data": "x"}).code == WRONG_KIND
    # Nothing broke.
    assert wire.call("tcp.getState", {"handle": srv["handle"]})["state"] == 1
    peer.close()


def test_closing_the_client_connection_closes_its_handles(gw: Gateway) -> None:
    w = gw.connect()
    c, peer = client_pair(w, "127.0.0.1")
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "::1", "port": 0}})
    _s, h, peer2 = accepted_pair(w, "127.0.0.1")
    w.close()
    assert recv_until_eof_py(peer) == b""
    assert recv_until_eof_py(peer2) == b""
    deadline = time.monotonic() + 3
    while True:
        try:
            py_connect("::1", srv["local"]["port"], timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "server handle still listening after its owner left"
        time.sleep(0.05)
    other = gw.connect()
    info = other.call("gateway.info")
    assert info["handles"] == 0 and info["connections"] == 1, info
    peer.close()
    peer2.close()


def test_no_fd_leak_over_50_cycles(gw: Gateway) -> None:
    def settle() -> int:
        time.sleep(0.2)
        return gw.fd_count()

    before = settle()
    for i in range(50):
        w = gw.connect()
        srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
        c = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": srv["local"]["port"]}})
        acc = w.call("tcp.accept", {"handle": srv["handle"], "timeout": 2000})
        w.call("tcp.send", {"handle": c["handle"], "data": "x"})
        # Read it: closing a socket with unread bytes sends RST, which would end the peer handle.
        assert w.recv_exact(acc["handle"], 1) == b"x"
        if i % 2:
            for h in (acc["handle"], c["handle"], srv["handle"]):
                assert w.call("tcp.close", {"handle": h}) is True
        w.close()  # even cycles: the gateway must clean up on disconnect
    deadline = time.monotonic() + 5
    while (after := gw.fd_count()) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after <= before + 2, f"fds before {before}, after {after}: {sorted(os.listdir(f'/proc/{gw.pid}/fd'))}"


# ------------------------------------------------------------------------ descriptor passing
def test_create_by_fd_without_fd(wire: Wire) -> None:
    assert rpc_error(wire, "tcp.createByFd", {}).code == FD_PASSING
    assert rpc_error(wire, "tcp.createByFd", {"sockFd": 3}).code == FD_PASSING
    assert wire.call("tcp.list") == []


def test_create_by_fd_with_two_fds(wire: Wire) -> None:
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        e = rpc_error(wire, "tcp.createByFd", {}, fds=[a.fileno(), b.fileno()])
        assert e.code == FD_PASSING
    finally:
        a.close()
        b.close()
    assert wire.call("tcp.list") == []


@pytest.mark.parametrize("kind", ["pipe", "udp", "unix"])
def test_create_by_fd_not_a_tcp_socket(wire: Wire, kind: str) -> None:
    if kind == "pipe":
        r, w = os.pipe()
        fds, closers = [r], [lambda: os.close(r), lambda: os.close(w)]
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fds, closers = [s.fileno()], [s.close]
    else:
        s1, s2 = socket.socketpair()
        fds, closers = [s1.fileno()], [s1.close, s2.close]
    try:
        e = rpc_error(wire, "tcp.createByFd", {}, fds=fds)
        assert e.code == FD_PASSING, e
    finally:
        for c in closers:
            c()
    assert wire.call("gateway.info")["name"] == "tcpgw"


def test_fd_attached_to_other_request_is_not_leaked_or_used(gw: Gateway, wire: Wire) -> None:
    """A descriptor sent with a line that is not createByFd must not be adopted later."""
    wire.call("gateway.info")  # warm up: the readiness probe is gone, lazy fds are open
    time.sleep(0.2)
    before = gw.fd_count()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    wire.call("gateway.info", fds=[s.fileno()])
    s.close()
    assert rpc_error(wire, "tcp.createByFd", {}).code == FD_PASSING
    deadline = time.monotonic() + 2
    while (after := gw.fd_count()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after <= before, f"stray descriptor kept: {before} fds before, {after} after"


def test_fd_goes_to_its_own_line_when_glued_after_a_long_line(wire: Wire) -> None:
    """The kernel may deliver the tail of an earlier line and a line carrying a descriptor in one
    read; the descriptor belongs to the line it was attached to, not the earlier one."""
    lst = py_listener("127.0.0.1")
    mine = py_connect("127.0.0.1", port_of(lst))
    far, _ = lst.accept()
    try:
        for round_ in range(5):
            big_id = "x" * (20_000 + round_)  # small enough that both lines sit in the socket together
            wire.send_obj({"jsonrpc": "2.0", "id": big_id, "method": "tcp.list"})
            fd_id = wire.request("tcp.createByFd", {}, fds=[mine.fileno()])
            assert wire.reply(big_id).obj["result"] is not None
            created = wire.reply(fd_id).obj
            assert "result" in created, created
            h = created["result"]["handle"]
            assert created["result"]["kind"] == "connection"
            far.sendall(b"ping")
            assert wire.recv_exact(h, 4) == b"ping"
            assert wire.call("tcp.close", {"handle": h}) is True
    finally:
        for x in (mine, far, lst):
            x.close()


# ------------------------------------------------------------------------ policy
def _policy(gwf: GatewayFactory, policy: dict) -> Gateway:
    d = gwf.tmpdir()
    path = os.path.join(d, "policy.json")
    with open(path, "w") as f:
        json.dump(policy, f)
    return gwf("--policy", path)


def test_policy_denies_connect(start_gateway: GatewayFactory) -> None:
    gw = _policy(start_gateway, {"connect": ["10.0.0.0/8", "::1"], "listen": ["127.0.0.1"]})
    w = gw.connect()
    lst = py_listener("127.0.0.1")
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})
    assert e.code == DENIED, e
    assert "connect" in e.message, e.message
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)},
                                          "async": True})
    assert e.code == DENIED, e
    lst.settimeout(0.3)
    with pytest.raises((socket.timeout, TimeoutError)):
        lst.accept()  # nothing was attempted
    # ::1 is allowed by the same policy.
    lst6 = py_listener("::1")
    c = w.call("tcp.createClient", {"sockaddr": {"addr": "::1", "port": port_of(lst6)}})
    assert c["remote"]["port"] == port_of(lst6)
    # listen rule: ::1 not listed.
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "::1", "port": 0}})
    assert e.code == DENIED and "listen" in e.message, e
    assert w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})["handle"] >= 1
    lst.close()
    lst6.close()


def test_policy_ports_and_switches(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    port = port_of(lst)
    gw = _policy(start_gateway, {"connect": [f"127.0.0.0/8:{port}"], "allowFlyAway": False,
                                 "allowCreateByFd": False, "allowBindToDevice": False,
                                 "maxHandlesPerConnection": 3})
    w = gw.connect()
    other = closed_port("127.0.0.1")
    assert rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": other}}).code == DENIED
    c = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}})
    peer, _ = lst.accept()
    assert rpc_error(w, "tcp.flyAway", {"handle": c["handle"]}).code == DENIED
    assert w.call("tcp.send", {"handle": c["handle"], "data": "still mine"}) == 10  # not flown away
    assert rpc_error(w, "tcp.bindToDevice", {"handle": c["handle"], "ifname": "lo"}).code == DENIED
    s = socket.socket()
    assert rpc_error(w, "tcp.createByFd", {}, fds=[s.fileno()]).code == DENIED
    s.close()
    # Handle limit: 3 per connection → the 4th creation is refused with "limit reached".
    w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert e.code == -32004, e
    assert len(w.call("tcp.list")) == 3
    peer.close()
    lst.close()


def test_bad_policy_file_is_refused(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "policy.json")
    with open(path, "w") as f:
        f.write("{not json")
    gw = start_gateway("--policy", path, ready=False)
    try:
        rc = gw.proc.wait(10)
    except Exception:
        gw.kill()
        pytest.fail("tcpgw started with an unparsable policy file")
    gw.returncode = rc
    assert rc != 0
    assert path in gw.log() or "policy" in gw.log().lower(), gw.log()


def test_connection_limit_refuses_with_an_answer_and_frees_up(start_gateway: GatewayFactory) -> None:
    # Every client here has the same uid: let it have all the places (by default it gets half).
    d = start_gateway.tmpdir()
    policy = os.path.join(d, "policy.json")
    with open(policy, "w") as f:
        json.dump({"maxConnectionsPerUid": 2}, f)
    gw = start_gateway("--max-connections", "2", "--policy", policy)
    first = gw.connect()
    # The harness's readiness probe holds a place until the gateway has seen it hang up.
    deadline = time.monotonic() + 5
    while first.call("gateway.info")["connections"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    second = gw.connect()
    second.call("gateway.info")  # both are admitted once each has been answered
    assert first.call("gateway.info")["connections"] == 2
    third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    third.settimeout(5)
    third.connect(gw.path)
    refusal = b""
    while not refusal.endswith(b"\n"):
        chunk = third.recv(4096)
        assert chunk, f"closed without a word: {refusal!r}"
        refusal += chunk
    answer = json.loads(refusal)
    assert answer["id"] is None and answer["error"]["code"] == -32004, answer
    assert third.recv(4096) == b"", "the refused connection is closed"
    third.close()
    # The two admitted clients are unaffected, and a freed place can be taken again.
    assert second.call("gateway.info")["name"] == "tcpgw"
    first.close()
    deadline = time.monotonic() + 5
    while second.call("gateway.info")["connections"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = gw.connect()
    assert again.call("gateway.info")["connections"] == 2
    again.close()
    second.close()


def test_hoarded_descriptors_are_closed_not_kept(gw: Gateway, wire: Wire) -> None:
    """A client that sends many descriptors without ever finishing a line cannot fill the
    gateway's descriptor table."""
    wire.call("gateway.info")
    time.sleep(0.1)
    before = gw.fd_count()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for _ in range(100):
        socket.send_fds(wire.sock, [b" "], [s.fileno()] * 4)  # spaces: no line ends
    s.close()
    deadline = time.monotonic() + 2
    while (held := gw.fd_count()) > before + 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held <= before + 16, f"{held - before} descriptors held for an unfinished line"
    # The next complete line takes the held ones along and closes them (it is not createByFd).
    wire.send_raw(b"\n")
    assert wire.call("gateway.info")["name"] == "tcpgw"
    deadline = time.monotonic() + 2
    while (after := gw.fd_count()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after <= before, f"{after - before} descriptors still held"


def test_running_out_of_descriptors_is_an_error_not_a_spin(start_gateway: GatewayFactory) -> None:
    """Under a low RLIMIT_NOFILE the gateway answers EMFILE, keeps serving, does not busy-loop
    on a listener it cannot accept from, and recovers once handles are closed."""
    import resource
    import subprocess

    d = start_gateway.tmpdir()
    path = os.path.join(d, "gw.sock")
    from conftest import TCPGW_BIN

    proc = subprocess.Popen([TCPGW_BIN, "serve", "--socket", path], stderr=subprocess.PIPE,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48)))
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        w = Wire(path)
        srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
        port = srv["local"]["port"]
        # Fill the table with servers until the kernel says no.
        made = []
        for _ in range(60):
            try:
                made.append(w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})["handle"])
            except RPCError as e:
                assert e.code == OS_FAILURE and e.data["errno"] == "EMFILE", e
                break
        else:
            pytest.fail("the descriptor limit was never reached")
        # A connection queues on the server while async accepting cannot take it: no spin.
        assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
        peer = socket.create_connection(("127.0.0.1", port), timeout=5)
        cpu0 = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert _cpu_seconds(proc.pid) - cpu0 < 0.5, "the gateway spins while out of descriptors"
        assert w.call("gateway.info")["name"] == "tcpgw"
        # Freeing descriptors lets the queued connection through.
        for h in made[:5]:
            assert w.call("tcp.close", {"handle": h}) is True
        ev = w.wait_event("tcp.onAccept", srv["handle"], timeout=5)
        assert ev.params["remote"]["port"] == peer.getsockname()[1]
        peer.close()
        w.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
