"""tcp.pipe (contract §11): two connection handles joined inside the gateway, with real
Python peers on loopback, in both relay modes (splice, and the copy mode faults use)."""
from __future__ import annotations

import base64
import socket
import time

import pytest

from conftest import GatewayFactory
from relay_peers import listener, wire  # noqa: F401 (fixtures, in both relay modes)
from relay_peers import MiB, Pump, connected_handle, payload, read_to_end, reset, sha
from wire import INVALID_PARAMS, UNKNOWN_HANDLE, WRONG_KIND, RPCError, Wire


def piped(wire: Wire, listener: socket.socket, flowing: bool = False):
    a, pa = connected_handle(wire, listener, flowing)
    b, pb = connected_handle(wire, listener, flowing)
    assert wire.call("tcp.pipe", {"handle": a, "peer": b}) is True
    return a, pa, b, pb


def entry(wire: Wire, handle: int) -> dict:
    return next(e for e in wire.call("tcp.list") if e["handle"] == handle)


def test_32_mib_each_way_at_once_with_checksums(wire: Wire, listener: socket.socket) -> None:
    a, pa, b, pb = piped(wire, listener)
    up, down = payload(32 * MiB, 1), payload(32 * MiB, 2)
    left, right = Pump(pa, up), Pump(pb, down)
    got_left, n_left, err_left = left.join()
    got_right, n_right, err_right = right.join()
    assert not err_left and not err_right
    assert (n_right, got_right) == (len(up), sha(up))
    assert (n_left, got_left) == (len(down), sha(down))
    # Both directions ended (each peer's FIN passed on): each handle is gone, without error.
    for h in (a, b):
        closed = wire.wait_event("tcp.onClose", h, timeout=10)
        assert "error" not in closed.params
    assert wire.call("tcp.list") == []
    pa.close()
    pb.close()


def test_counters_and_list_while_piped(wire: Wire, listener: socket.socket) -> None:
    a, pa, b, pb = piped(wire, listener)
    assert entry(wire, a)["pipedTo"] == b and entry(wire, b)["pipedTo"] == a
    assert "attached" not in entry(wire, a)
    pa.sendall(b"x" * 5000)
    assert len(read_to_end_n(pb, 5000)) == 5000
    pb.sendall(b"y" * 300)
    assert read_to_end_n(pa, 300) == b"y" * 300
    ea, eb = entry(wire, a), entry(wire, b)
    assert (ea["bytesIn"], ea["bytesOut"]) == (5000, 300)
    assert (eb["bytesIn"], eb["bytesOut"]) == (300, 5000)
    # Options still work on a piped handle.
    assert wire.call("tcp.setNoDelay", {"handle": a, "enable": True}) is True
    assert wire.call("tcp.getState", {"handle": b})["name"] == "ESTABLISHED"
    pa.close()
    pb.close()


def read_to_end_n(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(10)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return out


@pytest.mark.parametrize("first", ["a", "b"])
def test_half_close_each_way(wire: Wire, listener: socket.socket, first: str) -> None:
    a, pa, b, pb = piped(wire, listener)
    one, other = (pa, pb) if first == "a" else (pb, pa)
    one.sendall(b"last words")
    one.shutdown(socket.SHUT_WR)
    # The end of stream arrives after the bytes before it, and the other way stays open.
    data, error = read_to_end(other)
    assert (data, error) == (b"last words", None)
    other.sendall(b"still talking" * 1000)
    assert read_to_end_n(one, 13000) == b"still talking" * 1000
    assert not wire.events_for(a, "tcp.onClose") and entry(wire, a)["pipedTo"] == b
    other.shutdown(socket.SHUT_WR)
    assert read_to_end(one) == (b"", None)
    for h in (a, b):
        assert "error" not in wire.wait_event("tcp.onClose", h).params
    pa.close()
    pb.close()


@pytest.mark.parametrize("first", ["a", "b"])
def test_close_from_either_peer(wire: Wire, listener: socket.socket, first: str) -> None:
    a, pa, b, pb = piped(wire, listener)
    one, other = (pa, pb) if first == "a" else (pb, pa)
    one.close()
    assert read_to_end(other) == (b"", None)
    other.close()
    for h in (a, b):
        assert "error" not in wire.wait_event("tcp.onClose", h).params
    assert wire.call("tcp.list") == []


@pytest.mark.parametrize("first", ["a", "b"])
def test_peer_reset_resets_the_other_and_reports_errors(wire: Wire, listener: socket.socket, first: str) -> None:
    a, pa, b, pb = piped(wire, listener)
    one, other = (pa, pb) if first == "a" else (pb, pa)
    other.sendall(b"before")
    reset(one)
    data, error = read_to_end(other)
    assert isinstance(error, ConnectionResetError), (data, error)
    for h in (a, b):
        closed = wire.wait_event("tcp.onClose", h).params
        assert closed["error"]["errno"] in ("ECONNRESET", "EPIPE"), closed
    other.close()


@pytest.mark.parametrize("which", ["a", "b"])
def test_tcp_close_of_either_closes_both_quietly(wire: Wire, listener: socket.socket, which: str) -> None:
    a, pa, b, pb = piped(wire, listener)
    assert wire.call("tcp.close", {"handle": a if which == "a" else b}) is True
    assert read_to_end(pa) == (b"", None)
    assert read_to_end(pb) == (b"", None)
    assert wire.call("tcp.list") == []
    for h in (a, b):
        with pytest.raises(RPCError) as e:
            wire.call("tcp.getState", {"handle": h})
        assert e.value.code == UNKNOWN_HANDLE
    wire.drain(0.2)
    assert not wire.events_for(a) and not wire.events_for(b)
    pa.close()
    pb.close()


def test_owner_disconnecting_closes_both(start_gateway: GatewayFactory, listener: socket.socket) -> None:
    gw = start_gateway()
    w = gw.connect()
    a, pa, b, pb = piped(w, listener)
    before = gw.fd_count()
    w.close()
    assert read_to_end(pa) == (b"", None)
    assert read_to_end(pb) == (b"", None)
    # The handles' sockets, both kernel pipes and the client's socket are all released.
    deadline = time.monotonic() + 5
    while gw.fd_count() > before - 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.fd_count() <= before - 7
    pa.close()
    pb.close()


def test_no_data_events_send_recv_or_shutdown_while_piped(wire: Wire, listener: socket.socket) -> None:
    a, pa, b, pb = piped(wire, listener, flowing=True)
    pa.sendall(b"hello")
    assert read_to_end_n(pb, 5) == b"hello"
    for method, params in [("tcp.send", {"handle": a, "data": "x"}), ("tcp.recv", {"handle": b}),
                           ("tcp.shutdown", {"handle": a}), ("tcp.flyAway", {"handle": b}),
                           ("tcp.pipe", {"handle": a, "peer": b}), ("tcp.stream", {"handle": a})]:
        with pytest.raises(RPCError) as e:
            wire.call(method, params)
        assert e.value.code == WRONG_KIND, (method, e.value)
        assert "piped" in e.value.message
    wire.drain(0.2)
    assert not wire.events_for(a, "tcp.onData") and not wire.events_for(b, "tcp.onData")
    pa.close()
    pb.close()


def test_bad_pipes_change_nothing(wire: Wire, listener: socket.socket) -> None:
    a, pa = connected_handle(wire, listener)
    server = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})["handle"]
    cases = [({"handle": a, "peer": a}, INVALID_PARAMS), ({"handle": a, "peer": server}, WRONG_KIND),
             ({"handle": a, "peer": 999999}, UNKNOWN_HANDLE), ({"handle": a}, INVALID_PARAMS),
             ({"handle": a, "peer": "2"}, INVALID_PARAMS)]
    for params, code in cases:
        with pytest.raises(RPCError) as e:
            wire.call("tcp.pipe", params)
        assert e.value.code == code, (params, e.value)
    # Another connection's handle is unknown here.
    other = Wire(wire.path)
    try:
        c, pc = connected_handle(other, listener)
        with pytest.raises(RPCError) as e:
            wire.call("tcp.pipe", {"handle": a, "peer": c})
        assert e.value.code == UNKNOWN_HANDLE
        pc.close()
    finally:
        other.close()
    # A handle shut down for writing cannot be piped.
    b, pb = connected_handle(wire, listener)
    wire.call("tcp.shutdown", {"handle": b, "how": "w"})
    with pytest.raises(RPCError) as e:
        wire.call("tcp.pipe", {"handle": a, "peer": b})
    assert e.value.code == WRONG_KIND
    # Nothing changed: a still works as a normal handle.
    assert wire.call("tcp.send", {"handle": a, "data": "ok"}) == 2
    assert read_to_end_n(pa, 2) == b"ok"
    pa.close()
    pb.close()


def test_a_waiting_recv_fails_when_its_handle_is_piped(wire: Wire, listener: socket.socket) -> None:
    a, pa = connected_handle(wire, listener)
    b, pb = connected_handle(wire, listener)
    waiting = wire.request("tcp.recv", {"handle": a, "timeout": 10000})
    wire.drain(0.1)
    assert wire.call("tcp.pipe", {"handle": a, "peer": b}) is True
    answer = wire.reply(waiting).obj
    assert answer["error"]["code"] == WRONG_KIND
    pa.sendall(b"goes to b")
    assert read_to_end_n(pb, 9) == b"goes to b"
    pa.close()
    pb.close()


def test_a_handle_whose_peer_had_already_finished(wire: Wire, listener: socket.socket) -> None:
    a, pa = connected_handle(wire, listener)
    b, pb = connected_handle(wire, listener)
    pa.shutdown(socket.SHUT_WR)
    # The FIN is read before the pipe: the other side's writing is shut at once.
    assert wire.call("tcp.recv", {"handle": a, "timeout": 5000}) == {"data": "", "encoding": "base64", "eof": True}
    assert wire.call("tcp.pipe", {"handle": a, "peer": b}) is True
    assert read_to_end(pb) == (b"", None)
    pb.sendall(b"the other way still works")
    pb.shutdown(socket.SHUT_WR)
    assert read_to_end(pa) == (b"the other way still works", None)
    for h in (a, b):
        assert "error" not in wire.wait_event("tcp.onClose", h).params
    pa.close()
    pb.close()


def test_a_receiver_that_does_not_read_stops_the_sender(start_gateway: GatewayFactory, listener: socket.socket) -> None:
    gw = start_gateway()
    w = gw.connect()
    a, pa, b, pb = piped(w, listener)
    pb.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    rss_before = gw.rss_kb()
    data = memoryview(payload(80 * MiB, 9))
    sent = 0
    pa.setblocking(False)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and sent < len(data):
        try:
            sent += pa.send(data[sent:sent + (1 << 16)])
        except BlockingIOError:
            time.sleep(0.01)
    # Kernel buffers and one pipe hold what was accepted; the gateway buffers nothing more.
    assert sent < 64 * MiB, sent
    assert gw.rss_kb() - rss_before < 16 * 1024
    pa.setblocking(True)
    pa.shutdown(socket.SHUT_WR)
    got, error = read_to_end(pb, timeout=30)
    assert error is None and len(got) == sent
    assert got == data[:sent]
    pb.close()
    pa.close()


def test_many_pipes_at_once(wire: Wire, listener: socket.socket) -> None:
    pairs = [piped(wire, listener) for _ in range(8)]
    pumps = []
    for index, (_, pa, _, pb) in enumerate(pairs):
        pumps.append((Pump(pa, payload(MiB, 100 + index)), Pump(pb, payload(MiB, 200 + index)), index))
    for left, right, index in pumps:
        got_left, _, errors_left = left.join()
        got_right, _, errors_right = right.join()
        assert not errors_left and not errors_right
        assert got_right == sha(payload(MiB, 100 + index)) and got_left == sha(payload(MiB, 200 + index))
    for a, pa, b, pb in pairs:
        for h in (a, b):
            assert "error" not in wire.wait_event("tcp.onClose", h).params
        pa.close()
        pb.close()


def test_queued_sends_must_drain_before_a_pipe(wire: Wire, listener: socket.socket) -> None:
    a, pa = connected_handle(wire, listener)
    b, pb = connected_handle(wire, listener)
    big = payload(8 * MiB, 11)
    pa.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    wire.call("tcp.setSendBufferSize", {"handle": a, "size": 64 * 1024})
    # The peer does not read: most of the send stays queued in the gateway when it times out.
    with pytest.raises(RPCError) as e:
        wire.call("tcp.send", {"handle": a, "data": base64.b64encode(big).decode(), "encoding": "base64",
                               "timeout": 200}, timeout=30)
    assert e.value.code == -32002
    with pytest.raises(RPCError) as e:
        wire.call("tcp.pipe", {"handle": a, "peer": b})
    assert e.value.code == WRONG_KIND and "waiting to be sent" in e.value.message
    with pytest.raises(RPCError) as e:
        wire.call("tcp.stream", {"handle": a})
    assert e.value.code == WRONG_KIND
    # Once the peer has read everything, the pipe works, and nothing was lost or reordered.
    assert read_to_end_n(pa, len(big)) == big
    assert wire.call("tcp.pipe", {"handle": a, "peer": b}) is True
    pb.sendall(b"after")
    assert read_to_end_n(pa, 5) == b"after"
    pa.close()
    pb.close()
