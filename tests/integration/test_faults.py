"""Contract §10: faults on live sockets, with real Python peers on loopback.

Timing is asserted only where timing is the feature, and then with wide margins (a 300 ms
latency must delay by at least 250 ms; "not slowed" means well under the fault's latency).
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
import time
from typing import Any, Optional

import pytest

from conftest import GatewayFactory, port_of, py_connect, py_listener, recv_exact_py, recv_until_eof_py
from wire import INVALID_PARAMS, UNKNOWN_HANDLE, RPCError, Wire, b64, decode

ADDR = "127.0.0.1"


# ---------------------------------------------------------------------------------- helpers
def paused_client(w: Wire, faults: Optional[list[dict[str, Any]]] = None) -> tuple[int, socket.socket]:
    """A synchronous (paused) client handle connected to a Python peer, with `faults`."""
    lst = py_listener(ADDR)
    try:
        params: dict[str, Any] = {"sockaddr": {"addr": ADDR, "port": port_of(lst)}, "timeout": 5000}
        if faults is not None:
            params["faults"] = faults
        r = w.call("tcp.createClient", params)
        peer, _ = lst.accept()
    finally:
        lst.close()
    peer.settimeout(5.0)
    return r["handle"], peer


def flowing_client(w: Wire, faults: Optional[list[dict[str, Any]]] = None) -> tuple[int, socket.socket]:
    """An async (flowing) client handle connected to a Python peer, with `faults`."""
    lst = py_listener(ADDR)
    try:
        params: dict[str, Any] = {"sockaddr": {"addr": ADDR, "port": port_of(lst)}, "async": True}
        if faults is not None:
            params["faults"] = faults
        h = w.call("tcp.createClient", params)["handle"]
        peer, _ = lst.accept()
        w.wait_event("tcp.onConnect", h)
    finally:
        lst.close()
    peer.settimeout(5.0)
    return h, peer


def add(w: Wire, handle: int, type_: str, **kw: Any) -> str:
    params: dict[str, Any] = {"handle": handle, "type": type_}
    params.update(kw)
    return w.call("fault.add", params)["name"]


def expect_reset(peer: socket.socket, timeout: float = 5.0) -> None:
    """The peer's next reads end in ECONNRESET (after any bytes that were already delivered)."""
    peer.settimeout(timeout)
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionResetError):
        while time.monotonic() < deadline:
            if not peer.recv(65536):
                raise AssertionError("peer saw a FIN, not a reset")
        raise AssertionError("no reset within the timeout")


def events_data(w: Wire, h: int) -> list[bytes]:
    out = []
    for m in w.events_for(h, "tcp.onData"):
        out.append(decode(m.params))
        w.events.remove(m)
    return out


# ---------------------------------------------------------------------------------- latency
def test_latency_in_delays_each_chunk_and_keeps_order(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 300}}])
    t0 = time.monotonic()
    peer.sendall(b"hello")
    m = wire.wait_event("tcp.onData", h, timeout=5)
    assert time.monotonic() - t0 >= 0.25
    assert decode(m.params) == b"hello"
    assert wire.call("fault.list", {"handle": h}) == [
        {"name": "latency_in", "type": "latency", "stream": "in", "toxicity": 1,
         "attributes": {"latency": 300, "jitter": 0}, "active": True}]
    peer.close()


def test_latency_jitter_never_reorders(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 40, "jitter": 40}}])
    chunks = [f"<{i:03d}>".encode() for i in range(60)]
    for c in chunks:
        peer.sendall(c)
        time.sleep(0.003)
    got = wire.collect_data(h, sum(map(len, chunks)), timeout=10)
    assert got == b"".join(chunks)
    peer.close()


def test_latency_out_delays_writes(wire: Wire) -> None:
    h, peer = paused_client(wire)
    assert add(wire, h, "latency", stream="out", attributes={"latency": 300}) == "latency_out"
    t0 = time.monotonic()
    assert wire.call("tcp.send", {"handle": h, "data": "ping"}) == 4
    assert recv_exact_py(peer, 4) == b"ping"
    assert time.monotonic() - t0 >= 0.25
    peer.close()


def test_latency_holds_the_fin_behind_the_bytes(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 200}}])
    peer.sendall(b"last words")
    peer.shutdown(socket.SHUT_WR)
    end = wire.wait_event("tcp.onEnd", h, timeout=5)
    datas = wire.events_for(h, "tcp.onData")
    assert b"".join(decode(m.params) for m in datas) == b"last words"
    assert all(m.seq < end.seq for m in datas)
    peer.close()


def test_latency_on_paused_handle_delays_recv(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "latency", "attributes": {"latency": 300}}])
    peer.sendall(b"abc")
    t0 = time.monotonic()
    assert wire.recv_exact(h, 3) == b"abc"
    assert time.monotonic() - t0 >= 0.2
    peer.close()


def test_removing_latency_delivers_what_it_held(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 60000}}])
    peer.sendall(b"held back")
    wire.drain(0.3)
    assert wire.events_for(h, "tcp.onData") == []
    assert wire.call("fault.remove", {"handle": h, "name": "latency_in"}) is True
    assert wire.collect_data(h, 9) == b"held back"
    assert wire.call("fault.list", {"handle": h}) == []
    peer.sendall(b"!")
    assert wire.collect_data(h, 1) == b"!"
    peer.close()


def test_latency_on_one_handle_does_not_slow_another(gw: Any, wire: Wire) -> None:
    slow, slow_peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 1000}},
                                            {"type": "latency", "stream": "out", "attributes": {"latency": 1000}}])
    fast, fast_peer = flowing_client(wire)
    other = gw.connect()
    third, third_peer = flowing_client(other)
    # Keep the slow handle busy in both directions while the others make round trips.
    payload = os.urandom(32 * 1024)
    for i in range(5):
        slow_peer.sendall(payload)
        wire.call("tcp.send", {"handle": slow, "data": b64(payload), "encoding": "base64"})
        for w, h, p in ((wire, fast, fast_peer), (other, third, third_peer)):
            t0 = time.monotonic()
            w.call("tcp.send", {"handle": h, "data": f"ping{i}"})
            assert recv_exact_py(p, 5) == f"ping{i}".encode()
            p.sendall(b"pong")
            assert w.collect_data(h, 4) == b"pong"
            # Had it waited for the fault, a round trip would take 2 s (1 s each way).
            assert time.monotonic() - t0 < 0.4, "a round trip on an unfaulted handle waited for the fault"
    started = time.monotonic()
    assert len(wire.collect_data(slow, 5 * len(payload), timeout=10)) == 5 * len(payload)
    assert time.monotonic() - started > 0.2, "the slow handle's fault did not hold its bytes"
    assert len(recv_exact_py(slow_peer, 5 * len(payload), timeout=10)) == 5 * len(payload)
    for p in (slow_peer, fast_peer, third_peer):
        p.close()


def test_latency_bounds_what_it_holds(wire: Wire) -> None:
    """A fast peer into a long latency: the gateway stops reading rather than grow without bound."""
    h, peer = flowing_client(wire, [{"type": "latency", "attributes": {"latency": 60000}}])
    peer.setblocking(False)
    sent = 0
    block = b"x" * 65536
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
        try:
            sent += peer.send(block)
        except BlockingIOError:
            time.sleep(0.01)
    print(f"peer got {sent} bytes in before the gateway stopped reading")
    assert sent < 64 * 1024 * 1024, f"the gateway kept reading: {sent} bytes taken"
    assert wire.call("fault.remove", {"handle": h, "name": "latency_in"}) is True
    peer.setblocking(True)
    assert len(wire.collect_data(h, sent, timeout=20)) == sent
    peer.close()


# ---------------------------------------------------------------------------------- bandwidth
@pytest.mark.parametrize("stream", ["in", "out"])
def test_bandwidth_limits_rate(wire: Wire, stream: str) -> None:
    h, peer = flowing_client(wire, [{"type": "bandwidth", "stream": stream, "attributes": {"rate": 64}}])
    payload = os.urandom(96 * 1024)  # 1.5 s at 64 KiB/s
    t0 = time.monotonic()
    if stream == "in":
        peer.sendall(payload)
        got = wire.collect_data(h, len(payload), timeout=10)
    else:
        wire.call("tcp.send", {"handle": h, "data": b64(payload), "encoding": "base64"})
        got = recv_exact_py(peer, len(payload), timeout=10)
    elapsed = time.monotonic() - t0
    assert got == payload
    assert elapsed >= 1.0, f"{len(payload)} bytes at 64 KiB/s took only {elapsed:.2f}s"
    peer.close()


# ---------------------------------------------------------------------------------- slicer
def test_slicer_in_delivers_each_slice_as_its_own_event(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "slicer", "attributes": {"averageSize": 10}}])
    payload = bytes(range(256)) * 2
    peer.sendall(payload)
    assert wire.collect_data(h, len(payload)) == payload
    peer.sendall(b"y" * 95)
    wire.drain(0.3)
    parts = events_data(wire, h)
    assert b"".join(parts) == b"y" * 95
    assert [len(p) for p in parts] == [10] * 9 + [5]
    peer.close()


def test_slicer_in_size_variation_and_paused_recv(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "slicer", "attributes": {"averageSize": 10, "sizeVariation": 4}}])
    payload = os.urandom(400)
    peer.sendall(payload)
    time.sleep(0.1)
    got = b""
    sizes = []
    while len(got) < len(payload):
        r = wire.call("tcp.recv", {"handle": h, "length": 1000, "timeout": 2000})
        part = decode(r)
        sizes.append(len(part))
        got += part
    assert got == payload
    # Every answer is at most one slice (a read's tail may be shorter than its slice).
    assert max(sizes) <= 14 and len(sizes) >= len(payload) // 14
    assert len(set(sizes)) > 1, "sizeVariation made no difference"
    peer.close()


def test_slicer_out_writes_separate_segments(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "slicer", "stream": "out",
                                    "attributes": {"averageSize": 10, "delayUs": 50000}}])
    wire.call("tcp.send", {"handle": h, "data": "z" * 100})
    reads = []
    total = 0
    while total < 100:
        part = peer.recv(65536)
        assert part
        reads.append(len(part))
        total += len(part)
    assert total == 100
    # 50 ms apart: the peer sees the slices one by one (allow a couple to coalesce on a slow box).
    assert len(reads) >= 8 and max(reads) <= 30, reads
    peer.close()


def slice_sizes(gateway: Any) -> list[int]:
    w = gateway.connect()
    h, peer = flowing_client(w, [{"type": "slicer", "attributes": {"averageSize": 20, "sizeVariation": 15}}])
    peer.sendall(b"s" * 2000)
    got = b""
    sizes = []
    while len(got) < 2000:
        m = w.wait_event("tcp.onData", h)
        part = decode(m.params)
        sizes.append(len(part))
        got += part
    peer.close()
    w.close()
    return sizes


def test_seed_makes_slice_sizes_repeat(start_gateway: GatewayFactory) -> None:
    first = slice_sizes(start_gateway("--seed", "42"))
    second = slice_sizes(start_gateway("--seed", "42"))
    other = slice_sizes(start_gateway("--seed", "43"))
    assert first == second
    assert first != other
    assert len(set(first)) > 5


# ---------------------------------------------------------------------------------- limitData
def test_limit_data_in_resets_after_the_limit(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "limitData", "attributes": {"bytes": 100}}])
    peer.sendall(b"a" * 300)
    close = wire.wait_event("tcp.onClose", h)
    assert close.params["fault"] == "limitData_in"
    assert close.params["error"]["errno"] == "ECONNRESET"
    assert b"".join(events_data(wire, h)) == b"a" * 100
    expect_reset(peer)
    with pytest.raises(RPCError) as e:
        wire.call("tcp.send", {"handle": h, "data": "x"})
    assert e.value.code == UNKNOWN_HANDLE and e.value.data["fault"] == "limitData_in"


def test_limit_data_out_resets_after_the_limit(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "limitData", "stream": "out", "attributes": {"bytes": 50}}])
    wire.call("tcp.send", {"handle": h, "data": "b" * 30})
    assert recv_exact_py(peer, 30) == b"b" * 30
    wire.call("tcp.send", {"handle": h, "data": "c" * 30})
    got = b""
    with pytest.raises(ConnectionResetError):
        for _ in range(100):
            part = peer.recv(65536)
            assert part, "FIN instead of a reset"
            got += part
    assert got == b"c" * 20
    with pytest.raises(RPCError) as e:
        wire.call("tcp.recv", {"handle": h, "timeout": 0})
    assert e.value.code == UNKNOWN_HANDLE and e.value.data["fault"] == "limitData_out"


# ---------------------------------------------------------------------------------- timeout
def test_timeout_drops_then_resets(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "timeout", "attributes": {"timeout": 400}}])
    t0 = time.monotonic()
    peer.sendall(b"into the void")
    close = wire.wait_event("tcp.onClose", h, timeout=5)
    assert time.monotonic() - t0 >= 0.3
    assert close.params["fault"] == "timeout_in"
    assert wire.events_for(h, "tcp.onData") == []
    expect_reset(peer)


def test_timeout_zero_never_resets_and_passes_nothing(wire: Wire) -> None:
    h, peer = paused_client(wire)
    add(wire, h, "timeout", stream="out", attributes={"timeout": 0})
    assert wire.call("tcp.send", {"handle": h, "data": "lost"}) == 4
    peer.settimeout(0.5)
    with pytest.raises(socket.timeout):
        peer.recv(10)
    assert wire.call("tcp.getState", {"handle": h})["name"] == "ESTABLISHED"
    # Removed: the stream passes again (what was dropped stays dropped).
    wire.call("fault.remove", {"handle": h, "name": "timeout_out"})
    wire.call("tcp.send", {"handle": h, "data": "back"})
    peer.settimeout(5)
    assert recv_exact_py(peer, 4) == b"back"
    peer.close()


# ---------------------------------------------------------------------------------- resetPeer
def test_reset_peer_after_timeout(wire: Wire) -> None:
    h, peer = flowing_client(wire)
    t0 = time.monotonic()
    add(wire, h, "resetPeer", attributes={"timeout": 300})
    close = wire.wait_event("tcp.onClose", h, timeout=5)
    assert time.monotonic() - t0 >= 0.25
    assert close.params == {"handle": h, "fault": "resetPeer_in", "error": close.params["error"]}
    expect_reset(peer)


def test_reset_peer_at_once_on_paused_handle(wire: Wire) -> None:
    h, peer = paused_client(wire)
    assert add(wire, h, "resetPeer", stream="out", name="boom") == "boom"
    expect_reset(peer)
    with pytest.raises(RPCError) as e:
        wire.call("tcp.recv", {"handle": h, "timeout": 0})
    assert e.value.code == UNKNOWN_HANDLE
    assert e.value.data["fault"] == "boom" and e.value.data["errno"] == "ECONNRESET"
    assert "boom" in e.value.message


def test_reset_fails_a_waiting_recv_naming_the_fault(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "resetPeer", "attributes": {"timeout": 300}}])
    with pytest.raises(RPCError) as e:
        wire.call("tcp.recv", {"handle": h, "timeout": 5000})
    assert e.value.code == UNKNOWN_HANDLE and e.value.data["fault"] == "resetPeer_in"
    peer.close()


# ---------------------------------------------------------------------------------- slowClose
def test_slow_close_delays_shutdown_and_close(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "slowClose", "attributes": {"delay": 400}}])
    wire.call("tcp.send", {"handle": h, "data": "bye"})
    t0 = time.monotonic()
    assert wire.call("tcp.shutdown", {"handle": h, "how": "w"}) is True
    assert recv_until_eof_py(peer) == b"bye"
    assert time.monotonic() - t0 >= 0.3
    peer.close()

    h2, peer2 = paused_client(wire, [{"type": "slowClose", "stream": "out", "attributes": {"delay": 400}}])
    t0 = time.monotonic()
    assert wire.call("tcp.close", {"handle": h2}) is True
    assert recv_until_eof_py(peer2) == b""
    assert time.monotonic() - t0 >= 0.3
    peer2.close()


# ---------------------------------------------------------------------------------- stall
def test_stall_in_is_a_true_zero_window_and_loses_nothing(wire: Wire) -> None:
    h, peer = flowing_client(wire, [{"type": "stall"}])
    peer.setblocking(False)
    rng = random.Random(7)
    sent = bytearray()
    deadline = time.monotonic() + 1.0
    blocked = False
    while time.monotonic() < deadline:
        block = rng.randbytes(65536)
        try:
            n = peer.send(block)
            sent += block[:n]
        except BlockingIOError:
            blocked = True
            break
    assert blocked, f"the peer's sends never blocked ({len(sent)} bytes taken)"
    wire.drain(0.2)
    assert wire.events_for(h, "tcp.onData") == []
    assert wire.call("fault.remove", {"handle": h, "name": "stall_in"}) is True
    peer.setblocking(True)
    got = wire.collect_data(h, len(sent), timeout=20)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(bytes(sent)).hexdigest()
    peer.close()


def test_stall_in_on_a_paused_handle_reads_nothing_even_for_recv(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "stall"}])
    peer.setblocking(False)
    sent = bytearray()
    rng = random.Random(11)
    for _ in range(2000):
        block = rng.randbytes(65536)
        try:
            sent += block[:peer.send(block)]
        except BlockingIOError:
            break
    else:
        raise AssertionError("the peer's sends never blocked")
    taken = len(sent)
    for _ in range(5):  # each recv would read from the socket if the stall let it
        with pytest.raises(RPCError) as e:
            wire.call("tcp.recv", {"handle": h, "length": 65536, "timeout": 50})
        assert e.value.code == -32002
    entry = next(e for e in wire.call("tcp.list") if e["handle"] == h)
    assert entry["bytesIn"] == 0, "the gateway read from a stalled socket"
    assert len(sent) == taken
    wire.call("fault.remove", {"handle": h, "name": "stall_in"})
    peer.setblocking(True)
    got = wire.recv_exact(h, len(sent), timeout_ms=10000)
    assert hashlib.sha256(got).digest() == hashlib.sha256(bytes(sent)).digest()
    peer.close()


def test_stall_out_holds_writes_until_removed(wire: Wire) -> None:
    h, peer = paused_client(wire)
    add(wire, h, "stall", stream="out")
    payload = os.urandom(200_000)
    wire.call("tcp.send", {"handle": h, "data": b64(payload), "encoding": "base64"})
    peer.settimeout(0.4)
    with pytest.raises(socket.timeout):
        peer.recv(10)
    wire.call("fault.remove", {"handle": h, "name": "stall_out"})
    got = recv_exact_py(peer, len(payload), timeout=10)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    peer.close()


def test_shutdown_waits_for_what_a_stall_holds(wire: Wire) -> None:
    h, peer = paused_client(wire, [{"type": "stall", "stream": "out"}])
    wire.call("tcp.send", {"handle": h, "data": "first"})
    rid = wire.request("tcp.shutdown", {"handle": h, "how": "w"})
    wire.drain(0.3)
    assert wire.call("fault.remove", {"handle": h, "name": "stall_out"}) is True
    assert wire.reply(rid).obj["result"] is True
    assert recv_until_eof_py(peer) == b"first"
    peer.close()


# ---------------------------------------------------------------------------------- toxicity
def test_toxicity_zero_and_one(wire: Wire) -> None:
    h, peer = flowing_client(wire, [
        {"type": "latency", "toxicity": 0, "attributes": {"latency": 2000}, "name": "never"},
        {"type": "slicer", "toxicity": 1, "attributes": {"averageSize": 1000}, "name": "always"}])
    listed = {f["name"]: f for f in wire.call("fault.list", {"handle": h})}
    assert listed["never"]["active"] is False and listed["never"]["toxicity"] == 0
    assert listed["always"]["active"] is True and listed["always"]["toxicity"] == 1
    t0 = time.monotonic()
    peer.sendall(b"quick")
    assert wire.collect_data(h, 5) == b"quick"
    assert time.monotonic() - t0 < 1.0, "an inactive latency fault delayed the stream"
    entry = next(e for e in wire.call("tcp.list") if e["handle"] == h)
    assert entry["faults"] == ["never", "always"]
    peer.close()


def test_toxicity_draws_per_connection(start_gateway: GatewayFactory) -> None:
    gw = start_gateway("--seed", "5")
    w = gw.connect()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": ADDR, "port": 0}})
    add(w, srv["handle"], "latency", toxicity=0.5, attributes={"latency": 1})
    assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    actives = []
    peers = []
    for _ in range(40):
        peers.append(py_connect(ADDR, srv["local"]["port"]))
        client = w.wait_event("tcp.onAccept", srv["handle"]).params["client"]
        actives.append(w.call("fault.list", {"handle": client})[0]["active"])
    assert 5 < sum(actives) < 35, actives
    for p in peers:
        p.close()


# ---------------------------------------------------------------------------------- servers
def test_server_faults_apply_to_new_connections_only(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": ADDR, "port": 0}})
    s = srv["handle"]
    assert wire.call("tcp.accept", {"handle": s, "async": True}) is True
    before = py_connect(ADDR, srv["local"]["port"])
    old = wire.wait_event("tcp.onAccept", s).params["client"]
    assert add(wire, s, "latency", attributes={"latency": 1000}) == "latency_in"
    assert wire.call("fault.list", {"handle": s}) == [
        {"name": "latency_in", "type": "latency", "stream": "in", "toxicity": 1,
         "attributes": {"latency": 1000, "jitter": 0}}]
    assert next(e for e in wire.call("tcp.list") if e["handle"] == s)["faults"] == ["latency_in"]
    after = py_connect(ADDR, srv["local"]["port"])
    new = wire.wait_event("tcp.onAccept", s).params["client"]
    assert wire.call("fault.list", {"handle": old}) == []
    assert [f["name"] for f in wire.call("fault.list", {"handle": new})] == ["latency_in"]
    t0 = time.monotonic()
    before.sendall(b"old")
    assert wire.collect_data(old, 3) == b"old"
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    after.sendall(b"new")
    assert wire.collect_data(new, 3) == b"new"
    assert time.monotonic() - t0 >= 0.9
    # Removing the template leaves the accepted connection's instance in place.
    assert wire.call("fault.remove", {"handle": s, "name": "latency_in"}) is True
    assert wire.call("fault.list", {"handle": s}) == []
    assert [f["name"] for f in wire.call("fault.list", {"handle": new})] == ["latency_in"]
    before.close()
    after.close()


def test_sync_accept_inherits_server_faults(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": ADDR, "port": 0}})
    add(wire, srv["handle"], "limitData", stream="out", attributes={"bytes": 3})
    peer = py_connect(ADDR, srv["local"]["port"])
    h = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 5000})["handle"]
    wire.call("tcp.send", {"handle": h, "data": "abcdef"})
    got = b""
    with pytest.raises(ConnectionResetError):
        for _ in range(100):
            part = peer.recv(100)
            assert part
            got += part
    assert got == b"abc"


# ---------------------------------------------------------------------------------- bad input
BAD_FAULTS = [
    ({"type": "earthquake"}, "type"),
    ({"type": "latency"}, "attributes.latency"),
    ({"type": "latency", "attributes": {"latency": 10, "foo": 1}}, "attributes.foo"),
    ({"type": "latency", "attributes": {"latency": 10, "rate": 1}}, "attributes.rate"),
    ({"type": "latency", "attributes": {"latency": 10, "jitter": -1}}, "attributes.jitter"),
    ({"type": "latency", "attributes": {"latency": 1.5}}, "attributes.latency"),
    ({"type": "latency", "attributes": {"latency": "10"}}, "attributes.latency"),
    ({"type": "latency", "attributes": {"latency": 86400001}}, "attributes.latency"),
    ({"type": "bandwidth"}, "attributes.rate"),
    ({"type": "bandwidth", "attributes": {"rate": -5}}, "attributes.rate"),
    ({"type": "slicer", "attributes": {"sizeVariation": 1}}, "attributes.averageSize"),
    ({"type": "slicer", "attributes": {"averageSize": 1, "sizeVariation": -1}}, "attributes.sizeVariation"),
    ({"type": "slicer", "attributes": {"averageSize": 1, "delayUs": 0.5}}, "attributes.delayUs"),
    ({"type": "limitData", "attributes": {"bytes": -1}}, "attributes.bytes"),
    ({"type": "limitData", "attributes": {}}, "attributes.bytes"),
    ({"type": "timeout", "attributes": {"timeout": -1}}, "attributes.timeout"),
    ({"type": "timeout"}, "attributes.timeout"),
    ({"type": "resetPeer", "attributes": {"timeout": True}}, "attributes.timeout"),
    ({"type": "resetPeer", "attributes": {"delay": 1}}, "attributes.delay"),
    ({"type": "slowClose", "attributes": {"delay": -3}}, "attributes.delay"),
    ({"type": "slowClose"}, "attributes.delay"),
    ({"type": "stall", "attributes": {"timeout": 1}}, "attributes.timeout"),
    ({"type": "stall", "stream": "sideways"}, "stream"),
    ({"type": "stall", "toxicity": 1.5}, "toxicity"),
    ({"type": "stall", "toxicity": -0.1}, "toxicity"),
    ({"type": "stall", "toxicity": "1"}, "toxicity"),
    ({"type": "stall", "name": ""}, "name"),
    ({"type": "stall", "attributes": [1]}, "attributes"),
]


@pytest.mark.parametrize("fault,field", BAD_FAULTS, ids=[f"{f['type']}-{n}" for f, n in BAD_FAULTS])
def test_bad_fault_add_names_the_field(wire: Wire, fault: dict[str, Any], field: str) -> None:
    h, peer = paused_client(wire)
    with pytest.raises(RPCError) as e:
        wire.call("fault.add", {"handle": h, **fault})
    assert e.value.code == INVALID_PARAMS
    assert field in e.value.message, e.value.message
    assert wire.call("fault.list", {"handle": h}) == []
    # The handle is unharmed.
    wire.call("tcp.send", {"handle": h, "data": "ok"})
    assert recv_exact_py(peer, 2) == b"ok"
    peer.close()


@pytest.mark.parametrize("fault,field", BAD_FAULTS[:6], ids=[n for _, n in BAD_FAULTS[:6]])
def test_bad_create_client_fault_makes_no_socket(wire: Wire, fault: dict[str, Any], field: str) -> None:
    lst = py_listener(ADDR)
    with pytest.raises(RPCError) as e:
        wire.call("tcp.createClient", {"sockaddr": {"addr": ADDR, "port": port_of(lst)},
                                       "faults": [{"type": "stall"}, fault]})
    assert e.value.code == INVALID_PARAMS
    assert f"faults[1].{field}" in e.value.message or "faults[1]" in e.value.message, e.value.message
    assert wire.call("tcp.list") == []
    lst.settimeout(0.3)
    with pytest.raises(socket.timeout):
        lst.accept()
    lst.close()


def test_duplicate_and_unknown_names(wire: Wire) -> None:
    h, peer = paused_client(wire)
    add(wire, h, "stall", stream="out")
    with pytest.raises(RPCError) as e:
        add(wire, h, "latency", attributes={"latency": 1}, name="stall_out")
    assert e.value.code == INVALID_PARAMS and "name" in e.value.message
    with pytest.raises(RPCError) as e:
        wire.call("fault.remove", {"handle": h, "name": "nope"})
    assert e.value.code == INVALID_PARAMS and "nope" in e.value.message
    with pytest.raises(RPCError) as e:
        wire.call("tcp.createClient", {"sockaddr": {"addr": ADDR, "port": 1},
                                       "faults": [{"type": "stall"}, {"type": "stall"}]})
    assert e.value.code == INVALID_PARAMS and "faults[1].name" in e.value.message
    with pytest.raises(RPCError) as e:
        wire.call("fault.add", {"handle": 999999, "type": "stall"})
    assert e.value.code == UNKNOWN_HANDLE
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": ADDR, "port": 0}})["handle"]
    add(wire, srv, "stall")
    with pytest.raises(RPCError) as e:
        add(wire, srv, "stall")
    assert e.value.code == INVALID_PARAMS
    peer.close()


def test_by_position_params(wire: Wire) -> None:
    h, peer = paused_client(wire)
    assert wire.call("fault.add", [h, "latency", "out", 1, {"latency": 5}, "lat"]) == {"name": "lat"}
    assert wire.call("fault.list", [h])[0]["name"] == "lat"
    assert wire.call("fault.remove", [h, "lat"]) is True
    peer.close()
