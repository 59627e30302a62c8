"""Contract §3 / methods.md: every method's happy path, against Python peers on 127.0.0.1 and ::1."""
from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest

from conftest import (Gateway, accepted_pair, client_pair, py_connect,
                      py_listener, port_of, recv_exact_py, recv_until_eof_py)
from wire import (OS_FAILURE, TIMED_OUT, UNKNOWN_HANDLE, RPCError, Wire, b64, close_fds, decode,
                  domain_of)


def sa(addr: str, port: int) -> dict:
    return {"domain": domain_of(addr), "addr": addr, "port": port}


def wait_until(pred, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def fly(w: Wire, handle: int) -> tuple[dict, socket.socket]:
    """tcp.flyAway and wrap the received descriptor."""
    r, fds = w.call_fds("tcp.flyAway", {"handle": handle})
    assert len(fds) == 1, f"flyAway answer carried {len(fds)} descriptors"
    return r, socket.socket(fileno=fds[0])


# ------------------------------------------------------------------------ creation
def test_create_server_port0_then_sockname(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert isinstance(srv["handle"], int) and srv["handle"] >= 1
    port = srv["local"]["port"]
    assert 0 < port < 65536
    assert srv["local"] == sa(addr, port)
    assert wire.call("tcp.sockName", {"handle": srv["handle"]}) == sa(addr, port)
    peer = py_connect(addr, port)  # really listening
    peer.close()


def test_create_server_with_domain_and_backlog(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"domain": domain_of(addr), "addr": addr, "port": 0},
                                         "backlog": 64})
    assert srv["local"]["domain"] == domain_of(addr)


def test_handles_are_distinct_and_never_reused(wire: Wire) -> None:
    seen = []
    for _ in range(5):
        h = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})["handle"]
        seen.append(h)
        assert wire.call("tcp.close", {"handle": h}) is True
    assert len(set(seen)) == 5, seen


def test_create_client_sync(wire: Wire, addr: str) -> None:
    lst = py_listener(addr)
    r = wire.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}})
    peer, peer_remote = lst.accept()
    assert r["remote"] == sa(addr, port_of(lst))
    assert r["local"] == sa(addr, peer_remote[1])
    assert wire.call("tcp.peerName", {"handle": r["handle"]}) == r["remote"]
    assert wire.call("tcp.sockName", {"handle": r["handle"]}) == r["local"]
    peer.close()
    lst.close()


def test_create_client_async_on_connect(wire: Wire, addr: str) -> None:
    lst = py_listener(addr)
    r = wire.call("tcp.createClient", {"sockaddr": {"addr": addr, "port": port_of(lst)}, "async": True})
    h = r["handle"]
    assert isinstance(h, int) and h >= 1
    ev = wire.wait_event("tcp.onConnect", h)
    assert ev.params["remote"] == sa(addr, port_of(lst)), ev.params
    assert "error" not in ev.params
    peer, _ = lst.accept()
    # Async handles start flowing.
    peer.sendall(b"flow")
    assert wire.collect_data(h, 4) == b"flow"
    peer.close()
    lst.close()


# ------------------------------------------------------------------------ accept
def test_accept_sync(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    peer = py_connect(addr, srv["local"]["port"])
    acc = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 3000})
    assert acc["handle"] not in (srv["handle"],)
    assert acc["remote"] == sa(addr, peer.getsockname()[1])
    assert acc["local"] == sa(addr, srv["local"]["port"])
    # Sync-accepted handles start paused: data waits for recv.
    peer.sendall(b"x")
    time.sleep(0.2)
    wire.drain(0.1)
    assert wire.events_for(acc["handle"], "tcp.onData") == []
    assert wire.recv_exact(acc["handle"], 1) == b"x"
    peer.close()


def test_accept_timeout_then_connection_still_accepted(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    t0 = time.monotonic()
    with pytest.raises(RPCError) as e:
        wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 200})
    assert e.value.code == TIMED_OUT
    assert 0.15 <= time.monotonic() - t0 < 3
    peer = py_connect(addr, srv["local"]["port"])
    acc = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 3000})
    assert acc["remote"]["port"] == peer.getsockname()[1]
    peer.close()


def test_accept_poll_timeout_zero(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    with pytest.raises(RPCError) as e:
        wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 0})
    assert e.value.code == TIMED_OUT


def test_accept_async_keeps_accepting(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    h = srv["handle"]
    assert wire.call("tcp.accept", {"handle": h, "async": True}) is True
    peers = [py_connect(addr, srv["local"]["port"]) for _ in range(3)]
    clients = {}
    for _ in range(3):
        ev = wire.wait_event("tcp.onAccept", h)
        assert set(ev.params) >= {"handle", "client", "remote"}
        clients[ev.params["remote"]["port"]] = ev.params["client"]
        assert ev.params["remote"]["addr"] == addr and ev.params["remote"]["domain"] == domain_of(addr)
    assert set(clients) == {p.getsockname()[1] for p in peers}
    assert len(set(clients.values())) == 3 and h not in clients.values()
    # Accepted handles start flowing.
    for p in peers:
        p.sendall(b"id%d" % p.getsockname()[1])
    for p in peers:
        port = p.getsockname()[1]
        want = b"id%d" % port
        assert wire.collect_data(clients[port], len(want)) == want
        p.close()


# ------------------------------------------------------------------------ send / recv
def test_send_encodings_offset_length_arrays(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    cases = [
        ({"data": "héllo"}, "héllo".encode()),
        ({"data": "héllo", "encoding": "utf8"}, "héllo".encode()),
        ({"data": b64(b"\x00\xff\x10"), "encoding": "base64"}, b"\x00\xff\x10"),
        ({"data": "00ff7f", "encoding": "hex"}, b"\x00\xff\x7f"),
        ({"data": "abcdef", "offset": 2}, b"cdef"),
        ({"data": "abcdef", "offset": 1, "length": 3}, b"bcd"),
        ({"data": "abcdef", "length": 0}, b""),
        ({"data": ["ab", "cd", "ef"]}, b"abcdef"),
        ({"data": ["ab", "cd", "ef"], "offset": 1, "length": 4}, b"bcde"),  # counts after gathering
        ({"data": [b64(b"\x01\x02"), b64(b"\x03")], "encoding": "base64"}, b"\x01\x02\x03"),
        ({"data": ["0a", "0b0c"], "encoding": "hex", "timeout": 2000}, b"\x0a\x0b\x0c"),
        ({"data": "é", "offset": 1}, "é".encode()[1:]),  # bytes, not characters
    ]
    for params, want in cases:
        n = wire.call("tcp.send", {"handle": h, **params})
        assert n == len(want), (params, n)
        if want:
            assert recv_exact_py(peer, len(want)) == want, params
    peer.close()


def test_send_large_payload(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    blob = os.urandom(3 * 1024 * 1024)
    rid = wire.request("tcp.send", {"handle": c["handle"], "data": b64(blob), "encoding": "base64"})
    got = recv_exact_py(peer, len(blob), timeout=20)
    assert got == blob
    from wire import result_of
    assert result_of(wire.reply(rid, timeout=20)) == len(blob)
    peer.close()


def test_sendto_is_send(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    assert wire.call("tcp.sendto", {"handle": h, "data": "to-peer"}) == 7
    assert recv_exact_py(peer, 7) == b"to-peer"
    # remoteAddr (by-name only) is ignored: data goes to the connected peer anyway.
    n = wire.call("tcp.sendto", {"handle": h, "data": "6869", "encoding": "hex", "offset": 1,
                                 "remoteAddr": {"addr": "10.9.9.9", "port": 9}})
    assert n == 1
    assert recv_exact_py(peer, 1) == b"i"
    assert wire.call("tcp.sendto", [h, ["x", "y"]]) == 2
    assert recv_exact_py(peer, 2) == b"xy"
    peer.close()


def test_recv_length_encodings_and_eof(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    peer.sendall(b"\x00\x01ABCDEFGH\xff\xfeok")
    time.sleep(0.1)
    r = wire.call("tcp.recv", {"handle": h, "length": 2, "encoding": "hex", "timeout": 2000})
    assert r == {"data": "0001", "encoding": "hex", "eof": False}
    r = wire.call("tcp.recv", {"handle": h, "length": 3, "timeout": 2000})
    assert r["encoding"] == "base64" and decode(r) == b"ABC" and r["eof"] is False
    r = wire.call("tcp.recv", {"handle": h, "length": 5, "encoding": "utf8", "timeout": 2000})
    assert r == {"data": "DEFGH", "encoding": "utf8", "eof": False}
    r = wire.call("tcp.recv", {"handle": h, "encoding": "utf8", "timeout": 2000})
    assert r["data"] == "\ufffd\ufffdok" or r["data"] == "\ufffdok", r  # lossy utf8
    assert r["data"].endswith("ok") and "\ufffd" in r["data"]
    assert wire.call("tcp.isEOF", {"handle": h}) is False
    peer.shutdown(socket.SHUT_WR)
    r = wire.call("tcp.recv", {"handle": h, "timeout": 3000})
    assert r == {"data": "", "encoding": "base64", "eof": True}
    assert wire.call("tcp.isEOF", {"handle": h}) is True
    # EOF is sticky and not an error.
    r = wire.call("tcp.recv", {"handle": h, "encoding": "hex", "timeout": 1000})
    assert r == {"data": "", "encoding": "hex", "eof": True}
    peer.close()


def test_recv_length_limits_answer(wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    peer.sendall(b"0123456789")
    time.sleep(0.1)
    r = wire.call("tcp.recv", {"handle": c["handle"], "length": 4, "encoding": "utf8", "timeout": 2000})
    assert r["data"] == "0123"
    assert wire.recv_exact(c["handle"], 6) == b"456789"
    peer.close()


def test_recvfrom(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    peer.sendall(b"from-peer")
    r = wire.call("tcp.recvfrom", {"handle": c["handle"], "length": 100, "timeout": 3000, "encoding": "utf8"})
    assert r["data"] == "from-peer" and r["eof"] is False and r["encoding"] == "utf8"
    assert r["remote"] == sa(addr, peer.getsockname()[1])
    # remoteAddr is by-name only and ignored.
    peer.sendall(b"q")
    r = wire.call("tcp.recvfrom", {"handle": c["handle"], "timeout": 2000, "remoteAddr": {}})
    assert decode(r) == b"q"
    peer.shutdown(socket.SHUT_WR)
    r = wire.call("tcp.recvfrom", [c["handle"], 10, 3000, "hex"])
    assert r["eof"] is True and r["data"] == "" and r["remote"]["port"] == peer.getsockname()[1]
    peer.close()


def test_pending_counts_buffered_bytes(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    assert wire.call("tcp.pending", {"handle": h}) == 0
    peer.sendall(b"p" * 1000)
    wait_until(lambda: wire.call("tcp.pending", {"handle": h}) == 1000, what="pending == 1000")
    assert wire.recv_exact(h, 400) == b"p" * 400
    assert wire.call("tcp.pending", {"handle": h}) == 600
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert wire.call("tcp.pending", {"handle": srv["handle"]}) == 0
    peer.close()


def test_pending_includes_gateway_buffer_after_pause(wire: Wire) -> None:
    """Bytes already read by the gateway (flowing, then paused) still count and are still readable."""
    _srv, h, peer = accepted_pair(wire, "127.0.0.1")
    assert wire.call("tcp.pause", {"handle": h}) is True
    peer.sendall(b"q" * 777)
    wait_until(lambda: wire.call("tcp.pending", {"handle": h}) == 777, what="pending == 777")
    assert wire.recv_exact(h, 777) == b"q" * 777
    assert wire.call("tcp.pending", {"handle": h}) == 0
    peer.close()


# ------------------------------------------------------------------------ shutdown
def test_shutdown_w_peer_sees_fin_and_we_still_read(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    wire.call("tcp.send", {"handle": h, "data": "last"})
    assert wire.call("tcp.shutdown", {"handle": h, "how": "w"}) is True
    assert recv_until_eof_py(peer) == b"last"
    peer.sendall(b"still")
    assert wire.recv_exact(h, 5) == b"still"
    with pytest.raises(RPCError) as e:
        wire.call("tcp.send", {"handle": h, "data": "nope"})
    assert e.value.code in (-32001, OS_FAILURE)
    peer.close()


def test_shutdown_r_and_rw(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    assert wire.call("tcp.shutdown", {"handle": h, "how": "r"}) is True
    # Writing still works after "r".
    assert wire.call("tcp.send", {"handle": h, "data": "w-ok"}) == 4
    assert recv_exact_py(peer, 4) == b"w-ok"
    r = wire.call("tcp.recv", {"handle": h, "timeout": 1000})
    assert r["eof"] is True and r["data"] == ""
    c2, peer2 = client_pair(wire, addr)
    assert wire.call("tcp.shutdown", {"handle": c2["handle"]}) is True  # default "rw"
    assert recv_until_eof_py(peer2) == b""
    with pytest.raises(RPCError) as e:
        wire.call("tcp.send", {"handle": c2["handle"], "data": "x"})
    assert e.value.code == -32001
    peer.close()
    peer2.close()


# ------------------------------------------------------------------------ mports
def _server_with_mports(wire: Wire, addr: str, n: int) -> tuple[int, int]:
    """Create a server whose next n ports are free and add them (retry on collisions).

    The base port is taken below the kernel's ephemeral range, from a run of n+1 ports Python
    can bind: ports the kernel hands out for port 0 and for connects are often still held in
    TIME_WAIT by earlier tests' connections."""
    import random
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    rng = random.Random(os.getpid())
    for _ in range(20):
        base = rng.randrange(20000, 32000)
        free = True
        for port in range(base, base + n + 1):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((addr, port))
                except OSError:
                    free = False
                    break
        if not free:
            continue
        srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": base}})
        try:
            assert wire.call("tcp.mports", {"handle": srv["handle"], "mports": n}) is True
            return srv["handle"], srv["local"]["port"]
        except RPCError as e:
            assert e.code == OS_FAILURE and e.data["errno"] == "EADDRINUSE", e
            wire.call("tcp.close", {"handle": srv["handle"]})
    pytest.fail("no run of free ports found for mports")


def test_mports_listens_on_extra_ports(wire: Wire, addr: str) -> None:
    h, port = _server_with_mports(wire, addr, 3)
    assert wire.call("tcp.accept", {"handle": h, "async": True}) is True
    peers = {}
    for p in range(port, port + 4):
        s = py_connect(addr, p)
        peers[s.getsockname()[1]] = (p, s)
    for _ in range(4):
        ev = wire.wait_event("tcp.onAccept", h)  # always the same server handle
        local = wire.call("tcp.sockName", {"handle": ev.params["client"]})
        want_port, s = peers[ev.params["remote"]["port"]]
        assert local["port"] == want_port
    # Sync accept also sees connections on the extra ports.
    for _, s in peers.values():
        s.close()


def test_mports_zero_removes_extra_ports(wire: Wire, addr: str) -> None:
    h, port = _server_with_mports(wire, addr, 2)
    s = py_connect(addr, port + 2)
    acc = wire.call("tcp.accept", {"handle": h, "timeout": 3000})
    assert acc["local"]["port"] == port + 2
    s.close()
    assert wire.call("tcp.mports", {"handle": h, "mports": 0}) is True
    for p in (port + 1, port + 2):
        with pytest.raises(ConnectionRefusedError):
            py_connect(addr, p, timeout=2)
    py_connect(addr, port).close()  # the base port stays


# ------------------------------------------------------------------------ error / close
def test_error_so_error_shape(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.error", {"handle": c["handle"]}) == {"errnoNumber": 0, "errno": None}
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert wire.call("tcp.error", {"handle": srv["handle"]}) == {"errnoNumber": 0, "errno": None}
    # A reset leaves ECONNRESET pending. Per contract §4 the gateway may already have
    # ended the handle (then it must have said so with onClose {error}); otherwise
    # tcp.error reports the pending error once and clears it.
    from conftest import reset_close
    reset_close(peer)
    time.sleep(0.2)
    try:
        first = wire.call("tcp.error", {"handle": c["handle"]})
    except RPCError as e:
        assert e.code == UNKNOWN_HANDLE, e
        ev = wire.wait_event("tcp.onClose", c["handle"], timeout=2)
        assert ev.params["error"]["errno"] == "ECONNRESET", ev.params
        return
    assert first in ({"errnoNumber": 0, "errno": None}, {"errnoNumber": 104, "errno": "ECONNRESET"}), first
    assert wire.call("tcp.error", {"handle": c["handle"]}) == {"errnoNumber": 0, "errno": None}


def test_close(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.close", {"handle": c["handle"]}) is True
    assert recv_until_eof_py(peer) == b""
    for m in ("tcp.getState", "tcp.close", "tcp.sockName"):
        with pytest.raises(RPCError) as e:
            wire.call(m, {"handle": c["handle"]})
        assert e.value.code == UNKNOWN_HANDLE
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert wire.call("tcp.close", [srv["handle"]]) is True
    with pytest.raises(ConnectionRefusedError):
        py_connect(addr, srv["local"]["port"], timeout=2)
    peer.close()


# ------------------------------------------------------------------------ flyAway / createByFd
def test_fly_away_connection(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    peer.sendall(b"before")
    time.sleep(0.1)
    r, s = fly(wire, h)
    assert r["encoding"] == "base64" and r["eof"] is False
    got = decode(r)
    s.settimeout(2)
    while len(got) < 6:
        got += s.recv(6 - len(got))
    assert got == b"before"
    assert s.getpeername()[1] == peer.getsockname()[1]
    s.sendall(b"ping")
    assert recv_exact_py(peer, 4) == b"ping"
    peer.sendall(b"pong")
    assert recv_exact_py(s, 4) == b"pong"
    with pytest.raises(RPCError) as e:
        wire.call("tcp.getState", {"handle": h})
    assert e.value.code == UNKNOWN_HANDLE
    # The handle is forgotten without an event, and the gateway no longer owns the socket:
    # closing our copy is what the peer sees.
    wire.drain(0.2)
    assert wire.events_for(h) == []
    s.close()
    assert recv_until_eof_py(peer) == b""
    peer.close()


def test_fly_away_flowing_connection_loses_nothing(wire: Wire, addr: str) -> None:
    _srv, h, peer = accepted_pair(wire, addr)
    payload = os.urandom(200_000)
    peer.sendall(payload)
    time.sleep(0.2)
    # Whatever already went out as onData plus "buffered" plus the socket's rest == payload.
    r, s = fly(wire, h)
    got = b"".join(decode(m.params) for m in wire.events_for(h, "tcp.onData"))
    got += decode(r)
    s.settimeout(2)
    while len(got) < len(payload):
        chunk = s.recv(65536)
        assert chunk, "EOF too early"
        got += chunk
    assert got == payload
    s.close()
    peer.close()


def test_fly_away_server(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    r, s = fly(wire, srv["handle"])
    assert decode(r) == b""
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert s.getsockname()[1] == srv["local"]["port"]
    peer = py_connect(addr, srv["local"]["port"])
    s.settimeout(3)
    conn, _ = s.accept()
    conn.sendall(b"direct")
    assert recv_exact_py(peer, 6) == b"direct"
    for x in (conn, s, peer):
        x.close()


def test_create_by_fd_connected_socket(wire: Wire, addr: str) -> None:
    lst = py_listener(addr)
    mine = py_connect(addr, port_of(lst))
    far, _ = lst.accept()
    r = wire.call("tcp.createByFd", {"sockFd": mine.fileno()}, fds=[mine.fileno()])
    assert r["kind"] == "connection"
    assert r["local"] == sa(addr, mine.getsockname()[1])
    assert r["remote"] == sa(addr, port_of(lst))
    mine.close()  # the gateway holds its own copy
    assert wire.call("tcp.send", {"handle": r["handle"], "data": "via-fd"}) == 6
    assert recv_exact_py(far, 6) == b"via-fd"
    far.sendall(b"back")
    assert wire.recv_exact(r["handle"], 4) == b"back"
    assert wire.call("tcp.getState", {"handle": r["handle"]})["state"] == 4
    far.close()
    lst.close()


def test_create_by_fd_listening_socket(wire: Wire, addr: str) -> None:
    lst = py_listener(addr)
    port = port_of(lst)
    r = wire.call("tcp.createByFd", {}, fds=[lst.fileno()])
    lst.close()
    assert r["kind"] == "server"
    assert r["local"] == sa(addr, port)
    assert r.get("remote") is None
    peer = py_connect(addr, port)
    acc = wire.call("tcp.accept", {"handle": r["handle"], "timeout": 3000})
    assert acc["remote"]["port"] == peer.getsockname()[1]
    assert wire.call("tcp.getState", {"handle": r["handle"]}) == {"state": 1, "name": "LISTEN"}
    peer.close()


def test_fly_away_then_create_by_fd_round_trip(gw: Gateway) -> None:
    """The seed's multitasking pattern: one client flies a socket away, another adopts it."""
    a, b = gw.connect(), gw.connect()
    c, peer = client_pair(a, "127.0.0.1")
    _r, s = fly(a, c["handle"])
    r = b.call("tcp.createByFd", {"sockFd": s.fileno()}, fds=[s.fileno()])
    s.close()
    assert b.call("tcp.send", {"handle": r["handle"], "data": "adopted"}) == 7
    assert recv_exact_py(peer, 7) == b"adopted"
    peer.close()


def test_sock_fd_is_a_socket_in_the_gateway(gw: Gateway, wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    fd = wire.call("tcp.sockFd", {"handle": c["handle"]})
    assert isinstance(fd, int) and fd >= 0
    assert os.readlink(f"/proc/{gw.pid}/fd/{fd}").startswith("socket:[")
    peer.close()


# ------------------------------------------------------------------------ names / state
def test_is_eof(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.isEOF", {"handle": c["handle"]}) is False
    peer.close()
    r = wire.call("tcp.recv", {"handle": c["handle"], "timeout": 3000})
    assert r["eof"] is True
    assert wire.call("tcp.isEOF", [c["handle"]]) is True


def test_sock_name_peer_name(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.sockName", {"handle": c["handle"]}) == sa(addr, peer.getpeername()[1])
    assert wire.call("tcp.peerName", {"handle": c["handle"]}) == sa(addr, peer.getsockname()[1])
    peer.close()


def test_get_state_listen_established_close_wait(wire: Wire, addr: str) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert wire.call("tcp.getState", {"handle": srv["handle"]}) == {"state": 1, "name": "LISTEN"}
    peer = py_connect(addr, srv["local"]["port"])
    acc = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 3000})
    assert wire.call("tcp.getState", {"handle": acc["handle"]}) == {"state": 4, "name": "ESTABLISHED"}
    peer.shutdown(socket.SHUT_WR)
    wait_until(lambda: wire.call("tcp.getState", {"handle": acc["handle"]})["state"] == 7, what="CLOSE_WAIT")
    assert wire.call("tcp.getState", {"handle": acc["handle"]}) == {"state": 7, "name": "CLOSE_WAIT"}
    # And our side of a finished exchange: after our FIN and the peer's, FIN_WAIT_2 → TIME_WAIT etc.
    c, peer2 = client_pair(wire, addr)
    wire.call("tcp.shutdown", {"handle": c["handle"], "how": "w"})
    wait_until(lambda: wire.call("tcp.getState", {"handle": c["handle"]})["state"] in (5, 6),
               what="FIN_WAIT")
    peer.close()
    peer2.close()


# ------------------------------------------------------------------------ socket options
def test_bind_to_device_lo_then_unbind(wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    h = c["handle"]
    try:
        assert wire.call("tcp.bindToDevice", {"handle": h, "ifname": "lo"}) is True
    except RPCError as e:
        if e.code == OS_FAILURE and (e.data or {}).get("errno") == "EPERM":
            pytest.skip("SO_BINDTODEVICE needs CAP_NET_RAW here (EPERM)")
        raise
    c2, peer2 = client_pair(wire, "127.0.0.1")
    assert wire.call("tcp.bindToDevice", {"handle": c2["handle"], "ifname": "lo"}) is True
    assert wire.call("tcp.bindToDevice", {"handle": c2["handle"], "ifname": ""}) is True
    assert wire.call("tcp.bindToDevice", {"handle": c2["handle"], "ifname": "lo"}) is True
    assert wire.call("tcp.bindToDevice", {"handle": c2["handle"]}) is True  # absent = unbind
    # Data still flows over lo.
    assert wire.call("tcp.send", {"handle": h, "data": "dev"}) == 3
    assert recv_exact_py(peer, 3) == b"dev"
    _r, s = fly(wire, h)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
    _r, s2 = fly(wire, c2["handle"])
    assert s2.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b""
    for x in (s, s2, peer, peer2):
        x.close()


def test_create_server_with_dev(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}, "dev": "lo"})
    _r, s = fly(wire, srv["handle"])
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
    s.close()


def test_set_keep_alive(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    assert wire.call("tcp.setKeepAlive", {"handle": h, "enable": True, "idle": 1500, "interval": 2500,
                                          "count": 4}) is True
    _r, s = fly(wire, h)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2  # rounded up
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    s.close()
    c2, peer2 = client_pair(wire, addr)
    assert wire.call("tcp.setKeepAlive", [c2["handle"], True, 7000]) is True
    c3, peer3 = client_pair(wire, addr)
    assert wire.call("tcp.setKeepAlive", {"handle": c3["handle"], "enable": True, "idle": 9000}) is True
    assert wire.call("tcp.setKeepAlive", {"handle": c3["handle"], "enable": False}) is True
    _r, s2 = fly(wire, c2["handle"])
    assert s2.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert s2.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    assert s2.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7  # default: idle
    assert s2.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3  # default 3
    _r, s3 = fly(wire, c3["handle"])
    assert s3.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    for x in (s2, s3, peer, peer2, peer3):
        x.close()


def test_set_no_delay(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    c2, peer2 = client_pair(wire, addr)
    assert wire.call("tcp.setNoDelay", {"handle": c["handle"], "enable": True}) is True
    assert wire.call("tcp.setNoDelay", [c2["handle"], True]) is True
    assert wire.call("tcp.setNoDelay", [c2["handle"], False]) is True
    _r, s = fly(wire, c["handle"])
    _r, s2 = fly(wire, c2["handle"])
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert s2.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    for x in (s, s2, peer, peer2):
        x.close()


def test_set_linger_zero_then_close_resets_peer(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.setLinger", {"handle": c["handle"], "linger": {"onoff": True, "time": 0}}) is True
    assert wire.call("tcp.close", {"handle": c["handle"]}) is True
    peer.settimeout(3)
    with pytest.raises(ConnectionResetError):
        peer.recv(10)
    peer.close()


def test_set_linger_values(wire: Wire) -> None:
    c, peer = client_pair(wire, "127.0.0.1")
    assert wire.call("tcp.setLinger", {"handle": c["handle"], "linger": {"onoff": True, "time": 7}}) is True
    _r, s = fly(wire, c["handle"])
    assert struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 7)
    s.close()
    peer.close()


def test_set_ttl(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.setTTL", {"handle": c["handle"], "timeToLive": 17}) is True
    _r, s = fly(wire, c["handle"])
    if ":" in addr:
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 17
    else:
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 17
    s.close()
    peer.close()


def test_set_reuse_addr(wire: Wire, addr: str) -> None:
    s1 = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    s2 = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    assert wire.call("tcp.setReuseAddr", {"handle": s2["handle"], "enable": False}) is True
    _r, f1 = fly(wire, s1["handle"])
    _r, f2 = fly(wire, s2["handle"])
    # The seed: createServer enables reuse by default.
    assert f1.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert f2.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.setReuseAddr", [c["handle"], True]) is True
    _r, f3 = fly(wire, c["handle"])
    assert f3.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    for x in (f1, f2, f3, peer):
        x.close()


def _bindv6only() -> int:
    with open("/proc/sys/net/ipv6/bindv6only") as f:
        return int(f.read())


def test_set_ipv6_only_on_dual_stack_server(wire: Wire) -> None:
    if _bindv6only() != 0:
        pytest.skip("net.ipv6.bindv6only=1: [::] is never dual-stack here")
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "::", "port": 0}})
    h, port = srv["handle"], srv["local"]["port"]
    v4 = py_connect("127.0.0.1", port)  # dual stack before
    acc4 = wire.call("tcp.accept", {"handle": h, "timeout": 3000})
    assert acc4["remote"]["port"] == v4.getsockname()[1]
    assert wire.call("tcp.setIPv6Only", {"handle": h, "enable": True}) is True
    with pytest.raises(ConnectionRefusedError):
        py_connect("127.0.0.1", port, timeout=2)
    assert wire.call("tcp.sockName", {"handle": h}) == {"domain": 10, "addr": "::", "port": port}
    assert wire.call("tcp.getState", {"handle": h})["state"] == 1
    v6 = py_connect("::1", port)  # same handle still accepts on the same port
    acc = wire.call("tcp.accept", {"handle": h, "timeout": 3000})
    assert acc["remote"]["port"] == v6.getsockname()[1]
    assert wire.call("tcp.send", {"handle": acc["handle"], "data": "v6"}) == 2
    assert recv_exact_py(v6, 2) == b"v6"
    # The earlier accepted (v4-mapped) connection survived the listener's re-creation.
    assert wire.call("tcp.send", {"handle": acc4["handle"], "data": "v4"}) == 2
    assert recv_exact_py(v4, 2) == b"v4"
    for x in (v4, v6):
        x.close()


def test_create_server_ipv6_only_up_front(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": True})
    with pytest.raises(ConnectionRefusedError):
        py_connect("127.0.0.1", srv["local"]["port"], timeout=2)
    py_connect("::1", srv["local"]["port"]).close()


def test_buffer_sizes(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    h = c["handle"]
    assert wire.call("tcp.getRecvBufferSize", {"handle": h}) > 0
    assert wire.call("tcp.getSendBufferSize", {"handle": h}) > 0
    assert wire.call("tcp.setRecvBufferSize", {"handle": h, "size": 32768}) is True
    assert wire.call("tcp.setSendBufferSize", [h, 24576]) is True
    assert wire.call("tcp.getRecvBufferSize", {"handle": h}) == 65536  # Linux doubles
    assert wire.call("tcp.getSendBufferSize", [h]) == 49152
    assert wire.call("tcp.setRecvBufferSize", {"handle": h, "size": 1024}) is True
    # What the kernel reports for the minimum: ask a socket of our own for comparison.
    ref = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ref.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    assert wire.call("tcp.getRecvBufferSize", {"handle": h}) == ref.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    ref.close()
    peer.close()


# ------------------------------------------------------------------------ constants, pause, list, info
EXPECTED_CONSTANTS = {
    "AF_INET": 2, "AF_INET6": 10,
    "INADDR_NONE": "255.255.255.255", "INADDR_LOOPBACK": "127.0.0.1", "INADDR_ANY": "0.0.0.0",
    "INADDR_BROADCAST": "255.255.255.255", "IN6ADDR_ANY": "::", "IN6ADDR_LOOPBACK": "::1",
    "IN6ADDR_NODELOCAL_ALLNODES": "ff01::1", "IN6ADDR_LINKLOCAL_ALLNODES": "ff02::1",
    "IN6ADDR_LINKLOCAL_ALLROUTERS": "ff02::2",
    "TCP_CLOSED": 0, "TCP_LISTEN": 1, "TCP_SYN_SENT": 2, "TCP_SYN_RCVD": 3, "TCP_ESTABLISHED": 4,
    "TCP_FIN_WAIT_1": 5, "TCP_FIN_WAIT_2": 6, "TCP_CLOSE_WAIT": 7, "TCP_CLOSING": 8,
    "TCP_LAST_ACK": 9, "TCP_TIME_WAIT": 10,
}


def test_constants_exact(wire: Wire) -> None:
    for params in (None, {}, []):
        got = wire.call("tcp.constants", params)
        assert isinstance(got, dict)
        for k, v in EXPECTED_CONSTANTS.items():
            assert k in got, k
            assert got[k] == v and type(got[k]) is type(v), (k, got[k])
        assert all(not isinstance(v, (dict, list)) for v in got.values()), "constants must be flat"


def test_pause_resume(wire: Wire, addr: str) -> None:
    _srv, h, peer = accepted_pair(wire, addr)
    peer.sendall(b"one")
    assert wire.collect_data(h, 3) == b"one"
    pmsg = wire.call_msg("tcp.pause", {"handle": h})
    assert pmsg.obj["result"] is True
    peer.sendall(b"two")
    wire.drain(0.5)
    late = [m for m in wire.events_for(h, "tcp.onData") if m.seq > pmsg.seq]
    assert late == [], f"onData after the pause answer: {[m.obj for m in late]}"
    assert wire.recv_exact(h, 3) == b"two"  # waited, readable by recv
    assert wire.call("tcp.resume", {"handle": h}) is True
    peer.sendall(b"three")
    assert wire.collect_data(h, 5) == b"three"
    peer.close()
    wire.wait_event("tcp.onEnd", h)


def test_resume_sync_handle_delivers_waiting_data(wire: Wire, addr: str) -> None:
    c, peer = client_pair(wire, addr)
    peer.sendall(b"queued")
    time.sleep(0.2)
    wire.drain(0.1)
    assert wire.events_for(c["handle"]) == []  # sync handles start paused
    assert wire.call("tcp.resume", [c["handle"]]) is True
    assert wire.collect_data(c["handle"], 6) == b"queued"
    peer.close()


def test_pause_under_continuous_traffic(wire: Wire) -> None:
    """While the peer keeps sending, no onData for the handle may follow the pause answer."""
    import threading
    _srv, h, peer = accepted_pair(wire, "127.0.0.1")
    stop = threading.Event()

    def pump() -> None:
        peer.settimeout(5)
        try:
            while not stop.is_set():
                peer.sendall(b"z" * 1024)
                time.sleep(0.001)
        except OSError:
            pass

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        wire.wait_event("tcp.onData", h, timeout=5)
        pmsg = wire.call_msg("tcp.pause", {"handle": h})
        assert pmsg.obj["result"] is True
        wire.drain(0.4)
        late = [m for m in wire.events_for(h, "tcp.onData") if m.seq > pmsg.seq]
        assert late == [], f"{len(late)} onData events after the pause answer"
    finally:
        stop.set()
        t.join(5)
        peer.close()


def test_list_shape_and_counts(gw: Gateway, addr: str) -> None:
    wire, other = gw.connect(), gw.connect()
    other.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})  # not ours: not listed
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": addr, "port": 0}})
    c, peer = client_pair(wire, addr)
    assert wire.call("tcp.send", {"handle": c["handle"], "data": "12345"}) == 5
    peer.sendall(b"abc")
    assert wire.recv_exact(c["handle"], 3) == b"abc"
    assert recv_exact_py(peer, 5) == b"12345"
    lst = wire.call("tcp.list")
    assert isinstance(lst, list)
    by_handle = {e["handle"]: e for e in lst}
    assert set(by_handle) == {srv["handle"], c["handle"]}, lst
    keys = {"handle", "kind", "state", "local", "remote", "flowing", "bytesIn", "bytesOut"}
    for e in lst:
        assert keys <= set(e), e
        assert isinstance(e["flowing"], bool)
    s = by_handle[srv["handle"]]
    assert s["kind"] == "server" and s["state"] == {"state": 1, "name": "LISTEN"}
    assert s["local"] == srv["local"] and s["remote"] is None
    e = by_handle[c["handle"]]
    assert e["kind"] == "connection" and e["state"] == {"state": 4, "name": "ESTABLISHED"}
    assert e["local"] == c["local"] and e["remote"] == c["remote"]
    assert e["flowing"] is False
    assert e["bytesIn"] == 3 and e["bytesOut"] == 5
    wire.call("tcp.resume", {"handle": c["handle"]})
    e = {x["handle"]: x for x in wire.call("tcp.list", {})}[c["handle"]]
    assert e["flowing"] is True
    peer.close()


def test_gateway_info(gw: Gateway) -> None:
    w1, w2 = gw.connect(), gw.connect()
    w1.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    w2.call("tcp.createServer", {"sockaddr": {"addr": "::1", "port": 0}})
    info = w1.call("gateway.info")
    assert info["name"] == "tcpgw" and info["version"] == "0.1.0"
    assert info["pid"] == gw.pid
    assert info["socket"] == gw.path
    assert isinstance(info["uptime"], (int, float)) and 0 <= info["uptime"] < 600
    lim = info["limits"]
    for k in ("maxMessageBytes", "maxHandlesPerConnection", "maxConnections", "maxRecvLength",
              "outboundHighWatermark"):
        assert isinstance(lim[k], int) and lim[k] > 0, (k, lim)
    assert lim["maxMessageBytes"] == 16 * 1024 * 1024
    assert lim["maxRecvLength"] >= 16777216
    assert lim["replayBytes"] == 8 * 1024 * 1024  # --replay-bytes' default (contract §12)
    wait_until(lambda: w1.call("gateway.info")["connections"] == 2, what="connections == 2")
    assert w1.call("gateway.info")["handles"] == 2
    time.sleep(0.05)
    assert w1.call("gateway.info")["uptime"] > info["uptime"]


def test_rpc_discover(wire: Wire) -> None:
    doc = wire.call("rpc.discover")
    assert "openrpc" in doc and doc["openrpc"].startswith("1.")
    names = {m["name"] for m in doc["methods"]}
    want = {f"tcp.{n}" for n in (
        "createServer createClient createByFd sockFd accept send sendto recv recvfrom pending shutdown "
        "mports error close flyAway isEOF sockName peerName bindToDevice setKeepAlive setNoDelay "
        "setLinger setTTL setReuseAddr setIPv6Only getState getRecvBufferSize getSendBufferSize "
        "setRecvBufferSize setSendBufferSize constants pause resume list").split()} | {"gateway.info"}
    assert want <= names, sorted(want - names)
    import jsonschema
    from conftest import REPO_ROOT
    with open(os.path.join(os.path.dirname(REPO_ROOT), "shared", "openrpc-meta-schema.json")) as f:
        meta = json.load(f)
    jsonschema.validate(doc, meta)
    # The same document the CLI prints.
    from conftest import run_cli
    cli = json.loads(run_cli(["schema"]).stdout)
    assert {m["name"] for m in cli["methods"]} == names and cli["openrpc"] == doc["openrpc"]


def test_one_fly_away_per_batch(wire: Wire) -> None:
    """An answer line carries one descriptor: a second tcp.flyAway in the same batch is refused
    before it touches its handle, so that socket stays with the gateway."""
    a = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    b = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    wire.send_obj([
        {"jsonrpc": "2.0", "id": "fa", "method": "tcp.flyAway", "params": {"handle": a["handle"]}},
        {"jsonrpc": "2.0", "id": "fb", "method": "tcp.flyAway", "params": {"handle": b["handle"]}},
    ])
    msg = wire.next_reply()
    answers = {item["id"]: item for item in msg.obj}
    assert "result" in answers["fa"], answers
    assert answers["fb"]["error"]["code"] == -32600, answers
    assert len(msg.fds) == 1
    flown = socket.socket(fileno=msg.fds[0])
    assert flown.getsockname()[1] == a["local"]["port"]
    flown.close()
    remaining = [h["handle"] for h in wire.call("tcp.list")]
    assert remaining == [b["handle"]]
