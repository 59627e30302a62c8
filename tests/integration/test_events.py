"""Contract §4: notifications — onData/onEnd/onClose ordering and when onClose is (not) sent."""
from __future__ import annotations

import os
import socket

import pytest

from conftest import accepted_pair, client_pair, recv_until_eof_py, reset_close
from wire import UNKNOWN_HANDLE, RPCError, Wire, decode


def test_on_data_then_on_end_then_on_close(wire: Wire, addr: str) -> None:
    _srv, h, peer = accepted_pair(wire, addr)
    payload = os.urandom(100_000)
    peer.sendall(payload)
    peer.shutdown(socket.SHUT_WR)
    end = wire.wait_event("tcp.onEnd", h)
    assert end.params == {"handle": h}
    datas = wire.events_for(h, "tcp.onData")
    assert all(m.seq < end.seq for m in datas)
    for m in datas:
        assert m.params["encoding"] == "base64" and set(m.params) == {"handle", "data", "encoding"}
    assert b"".join(decode(m.params) for m in datas) == payload
    for m in datas:
        wire.events.remove(m)
    # Writing may go on after onEnd.
    assert wire.call("tcp.send", {"handle": h, "data": "reply"}) == 5
    assert wire.events_for(h, "tcp.onClose") == []  # half-closed only: no onClose yet
    # Our FIN completes the exchange: onClose (without error), after onEnd.
    assert wire.call("tcp.shutdown", {"handle": h, "how": "w"}) is True
    close = wire.wait_event("tcp.onClose", h)
    assert close.seq > end.seq
    assert close.params.get("error") is None, close.params
    assert recv_until_eof_py(peer) == b"reply"
    with pytest.raises(RPCError) as e:
        wire.call("tcp.getState", {"handle": h})
    assert e.value.code == UNKNOWN_HANDLE
    wire.drain(0.2)
    assert wire.events_for(h) == [], "exactly one onClose and nothing after it"
    peer.close()


def test_on_close_with_error_on_peer_reset(wire: Wire, addr: str) -> None:
    _srv, h, peer = accepted_pair(wire, addr)
    reset_close(peer)
    ev = wire.wait_event("tcp.onClose", h)
    err = ev.params.get("error")
    assert isinstance(err, dict), ev.params
    assert err["errno"] == "ECONNRESET" and err["errnoNumber"] == 104, err
    assert isinstance(err["message"], str) and err["message"]
    with pytest.raises(RPCError) as e:
        wire.call("tcp.send", {"handle": h, "data": "x"})
    assert e.value.code == UNKNOWN_HANDLE


def test_on_close_after_our_shutdown_w_then_peer_fin(wire: Wire, addr: str) -> None:
    _srv, h, peer = accepted_pair(wire, addr)
    assert wire.call("tcp.shutdown", {"handle": h, "how": "w"}) is True
    assert recv_until_eof_py(peer) == b""
    wire.drain(0.2)
    assert wire.events_for(h, "tcp.onClose") == [], "peer has not finished yet"
    peer.sendall(b"bye")
    peer.shutdown(socket.SHUT_WR)
    end = wire.wait_event("tcp.onEnd", h)
    close = wire.wait_event("tcp.onClose", h)
    assert end.seq < close.seq
    assert b"".join(decode(m.params) for m in wire.events_for(h, "tcp.onData")) == b"bye"
    assert all(m.seq < end.seq for m in wire.events_for(h, "tcp.onData"))
    peer.close()


def test_on_close_for_sync_handle_after_peer_fin_and_our_shutdown(wire: Wire, addr: str) -> None:
    """A paused handle still ends: both directions finished → it is gone, reported once."""
    _srv, h, peer = accepted_pair(wire, addr)
    assert wire.call("tcp.pause", {"handle": h}) is True
    peer.close()
    r = wire.call("tcp.recv", {"handle": h, "timeout": 3000})
    assert r["eof"] is True
    wire.call("tcp.shutdown", {"handle": h, "how": "w"})
    wire.wait_event("tcp.onClose", h)


def test_no_event_for_handles_closed_by_client(wire: Wire, addr: str) -> None:
    srv, h, peer = accepted_pair(wire, addr)
    c, peer2 = client_pair(wire, addr)
    assert wire.call("tcp.close", {"handle": h}) is True
    assert wire.call("tcp.close", {"handle": c["handle"]}) is True
    assert wire.call("tcp.close", {"handle": srv}) is True
    reset_close(peer)
    peer2.close()
    wire.drain(0.5)
    for x in (h, c["handle"], srv):
        assert wire.events_for(x) == [], [m.obj for m in wire.events_for(x)]


def test_events_go_only_to_the_owner(gw) -> None:
    a, b = gw.connect(), gw.connect()
    _srv, h, peer = accepted_pair(a, "127.0.0.1")
    peer.sendall(b"mine")
    assert a.collect_data(h, 4) == b"mine"
    b.drain(0.3)
    assert b.events == []
    peer.close()


def test_on_connect_error_shape(wire: Wire) -> None:
    from conftest import closed_port
    port = closed_port("127.0.0.1")
    r = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}, "async": True})
    ev = wire.wait_event("tcp.onConnect", r["handle"])
    err = ev.params.get("error")
    assert err == {"errno": "ECONNREFUSED", "errnoNumber": 111, "message": err["message"]}, ev.params
    assert "remote" not in ev.params or ev.params["remote"] is None
