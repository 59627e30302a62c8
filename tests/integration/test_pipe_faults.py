"""Faults (contract §10) inside relays (contract §11): a piped direction pa → A → B → pb passes
its bytes through A's `in` chain and then B's `out` chain while either is active, and splices
otherwise. Real Python peers on loopback, checksums on every transfer; timing only where it is
the feature, with wide margins."""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import pytest

from conftest import GatewayFactory, py_connect, py_listener
from relay_peers import MiB, Pump, connected_handle, payload, read_to_end, sha
from test_attach import attach
from test_faults import add, expect_reset
from wire import Wire

# A fault on the direction pa → pb sits on A's `in` or on B's `out`.
SIDES = [("a", "in"), ("b", "out")]


@pytest.fixture
def wire(start_gateway: GatewayFactory) -> Wire:
    return start_gateway("--seed", "9").connect()


@pytest.fixture
def listener() -> socket.socket:
    s = py_listener("127.0.0.1")
    yield s
    s.close()


class Pipe:
    def __init__(self, wire: Wire, listener: socket.socket) -> None:
        self.a, self.pa = connected_handle(wire, listener)
        self.b, self.pb = connected_handle(wire, listener)
        assert wire.call("tcp.pipe", {"handle": self.a, "peer": self.b}) is True

    def handle(self, side: str) -> int:
        return self.a if side == "a" else self.b

    def close(self) -> None:
        self.pa.close()
        self.pb.close()


def entry(wire: Wire, handle: int) -> dict[str, Any]:
    return next(e for e in wire.call("tcp.list") if e["handle"] == handle)


def relay_mode(wire: Wire, handle: int) -> str:
    return entry(wire, handle)["relayMode"]


def wait_mode(wire: Wire, handle: int, mode: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay_mode(wire, handle) == mode:
            return
        time.sleep(0.02)
    raise AssertionError(f"handle {handle} never reached relayMode {mode}")


def recv_exact(sock: socket.socket, n: int, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def round_trip(p: Pipe, message: bytes = b"ping") -> float:
    """pa → pb one way: the time until pb has the message."""
    t0 = time.monotonic()
    p.pa.sendall(message)
    assert recv_exact(p.pb, len(message)) == message
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------- modes
def test_a_fault_switches_the_direction_to_copy_and_removing_it_back_to_splice(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    name = add(wire, p.a, "latency", attributes={"latency": 10})
    assert relay_mode(wire, p.a) == "copy", "A's in-chain needs A's bytes"
    assert relay_mode(wire, p.b) == "splice", "the other direction keeps splicing"
    assert round_trip(p) >= 0.005
    wire.call("fault.remove", {"handle": p.a, "name": name})
    wait_mode(wire, p.a, "splice")
    add(wire, p.a, "stall", stream="out")
    assert relay_mode(wire, p.b) == "copy", "A's out-chain needs what B reads"
    p.close()


# ---------------------------------------------------------------------------------- latency
@pytest.mark.parametrize("side,stream", SIDES)
def test_latency_delays_one_pipe_only_and_keeps_order_and_the_end_behind(
        wire: Wire, listener: socket.socket, side: str, stream: str) -> None:
    slow, fast = Pipe(wire, listener), Pipe(wire, listener)
    add(wire, slow.handle(side), "latency", stream=stream, attributes={"latency": 400})
    assert round_trip(slow) >= 0.35
    assert round_trip(fast) < 0.3, "another pipe of the same client is not slowed"
    # Jitter never reorders, and the FIN stays behind the bytes the chain holds.
    add(wire, slow.handle(side), "latency", stream=stream, name="jitter", attributes={"latency": 5, "jitter": 5})
    data = payload(2 * MiB, 3)
    sender = threading.Thread(target=lambda: (slow.pa.sendall(data), slow.pa.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    got, error = read_to_end(slow.pb, timeout=30)
    sender.join(10)
    assert error is None and len(got) == len(data) and sha(got) == sha(data)
    slow.close()
    fast.close()


# ---------------------------------------------------------------------------------- bandwidth
@pytest.mark.parametrize("side,stream", SIDES)
def test_bandwidth_limits_the_rate(wire: Wire, listener: socket.socket, side: str, stream: str) -> None:
    p = Pipe(wire, listener)
    add(wire, p.handle(side), "bandwidth", stream=stream, attributes={"rate": 256})
    data = payload(512 * 1024, 4)
    t0 = time.monotonic()
    threading.Thread(target=p.pa.sendall, args=(data,), daemon=True).start()
    got = recv_exact(p.pb, len(data), timeout=30)
    elapsed = time.monotonic() - t0
    assert sha(got) == sha(data)
    assert 1.4 <= elapsed <= 15, f"512 KiB at 256 KiB/s took {elapsed:.2f}s"
    p.close()


# ---------------------------------------------------------------------------------- slicer
def test_slicer_out_reaches_the_destination_peer_in_small_segments(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.b, "slicer", stream="out", attributes={"averageSize": 64, "delayUs": 3000})
    data = payload(16 * 1024, 5)
    p.pa.sendall(data)
    p.pb.settimeout(20)
    got, recvs = bytearray(), 0
    while len(got) < len(data):
        chunk = p.pb.recv(65536)
        assert chunk
        got += chunk
        recvs += 1
    assert bytes(got) == data
    assert recvs >= 40, f"only {recvs} recv() calls for 256 slices"
    p.close()


def test_slicer_in_hands_on_every_byte_in_order(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.a, "slicer", attributes={"averageSize": 100, "sizeVariation": 50})
    data = payload(MiB, 6)
    threading.Thread(target=lambda: (p.pa.sendall(data), p.pa.shutdown(socket.SHUT_WR)), daemon=True).start()
    got, error = read_to_end(p.pb, timeout=30)
    assert error is None and sha(got) == sha(data)
    p.close()


# ---------------------------------------------------------------------------------- resets
def expect_fault_close(wire: Wire, faulted: int, other: int, fault: str) -> None:
    closed = wire.wait_event("tcp.onClose", faulted, timeout=10)
    assert closed.params.get("fault") == fault and closed.params["error"]["errno"] == "ECONNRESET"
    closed_other = wire.wait_event("tcp.onClose", other, timeout=10)
    assert "fault" not in closed_other.params and closed_other.params["error"]["errno"] == "ECONNRESET"
    assert [e for e in wire.call("tcp.list") if e["handle"] in (faulted, other)] == []


@pytest.mark.parametrize("side,stream", SIDES)
def test_limit_data_resets_both_after_about_n_bytes(wire: Wire, listener: socket.socket, side: str, stream: str) -> None:
    p = Pipe(wire, listener)
    add(wire, p.handle(side), "limitData", stream=stream, attributes={"bytes": 10000})
    data = payload(200_000, 7)
    threading.Thread(target=lambda: p.pa.sendall(data), daemon=True).start()
    got, error = read_to_end(p.pb, timeout=10)
    assert isinstance(error, ConnectionResetError), f"pb saw {error!r} after {len(got)} bytes"
    assert len(got) <= 10000 and got == data[:len(got)]
    expect_fault_close(wire, p.handle(side), p.b if side == "a" else p.a, f"limitData_{stream}")
    expect_reset(p.pa)
    p.close()


@pytest.mark.parametrize("side,stream", SIDES)
def test_reset_peer_resets_both_after_its_timeout(wire: Wire, listener: socket.socket, side: str, stream: str) -> None:
    p = Pipe(wire, listener)
    t0 = time.monotonic()
    add(wire, p.handle(side), "resetPeer", stream=stream, attributes={"timeout": 300})
    expect_reset(p.pb)
    assert time.monotonic() - t0 >= 0.25
    expect_reset(p.pa)
    expect_fault_close(wire, p.handle(side), p.b if side == "a" else p.a, f"resetPeer_{stream}")
    p.close()


def test_timeout_drops_the_bytes_then_resets(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.a, "timeout", attributes={"timeout": 500})
    p.pa.sendall(b"dropped on the floor")
    got, error = read_to_end(p.pb, timeout=10)
    assert got == b"" and isinstance(error, ConnectionResetError)
    expect_fault_close(wire, p.a, p.b, "timeout_in")
    p.close()


# ---------------------------------------------------------------------------------- slowClose
@pytest.mark.parametrize("stream", ["in", "out"])
def test_slow_close_delays_the_fin_passed_on(wire: Wire, listener: socket.socket, stream: str) -> None:
    p = Pipe(wire, listener)
    add(wire, p.b, "slowClose", stream=stream, attributes={"delay": 500})
    p.pa.sendall(b"bye")
    assert recv_exact(p.pb, 3) == b"bye"
    t0 = time.monotonic()
    p.pa.shutdown(socket.SHUT_WR)
    got, error = read_to_end(p.pb, timeout=10)
    assert got == b"" and error is None
    assert time.monotonic() - t0 >= 0.4, "B's peer saw the FIN before slowClose's delay"
    # The other way is not delayed: pb's FIN reaches pa at once, and both handles end cleanly.
    t1 = time.monotonic()
    p.pb.shutdown(socket.SHUT_WR)
    assert read_to_end(p.pa, timeout=10) == (b"", None)
    assert time.monotonic() - t1 < 0.4
    for h in (p.a, p.b):
        assert "error" not in wire.wait_event("tcp.onClose", h, timeout=10).params
    p.close()


# ---------------------------------------------------------------------------------- stall
def fill_until_blocked(sock: socket.socket, seed: int) -> bytes:
    """Sends until the kernel takes no more (bounded); what it took."""
    sock.setblocking(False)
    rng = __import__("random").Random(seed)
    sent = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        block = rng.randbytes(65536)
        try:
            sent += block[:sock.send(block)]
        except BlockingIOError:
            time.sleep(0.05)
            try:
                sent += block[:sock.send(block)]
            except BlockingIOError:
                sock.setblocking(True)
                return bytes(sent)
    raise AssertionError(f"the sender never blocked ({len(sent)} bytes taken)")


def test_stall_in_stops_reading_the_source_and_loses_nothing(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.a, "stall")
    sent = fill_until_blocked(p.pa, 8)
    p.pb.settimeout(0.3)
    with pytest.raises(socket.timeout):
        p.pb.recv(10)
    assert entry(wire, p.a)["bytesIn"] == 0, "the gateway read a stalled source: not a zero window"
    assert wire.call("fault.remove", {"handle": p.a, "name": "stall_in"}) is True
    got = recv_exact(p.pb, len(sent))
    assert sha(got) == sha(sent)
    wait_mode(wire, p.a, "splice")
    p.close()


def test_stall_out_stops_writing_to_the_destination_and_loses_nothing(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.b, "stall", stream="out")
    sent = fill_until_blocked(p.pa, 9)
    assert len(sent) > 1 << 20, "the chain holds up to the high-water mark before the source stops"
    p.pb.settimeout(0.3)
    with pytest.raises(socket.timeout):
        p.pb.recv(10)
    assert entry(wire, p.b)["bytesOut"] == 0
    assert wire.call("fault.remove", {"handle": p.b, "name": "stall_out"}) is True
    got = recv_exact(p.pb, len(sent))
    assert sha(got) == sha(sent)
    p.close()


# ---------------------------------------------------------------------------------- live switches
class PacedPump(Pump):
    """A Pump whose sender pauses 5 ms every 256 KiB: a 64 MiB transfer lasts over a second,
    long enough to switch modes several times while bytes flow."""

    def _send(self) -> None:
        try:
            view = memoryview(self.data)
            for offset in range(0, len(view), 1 << 18):
                self.sock.sendall(view[offset:offset + (1 << 18)])
                time.sleep(0.005)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(e)


def test_faults_added_and_removed_mid_stream_keep_every_byte(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    up, down = payload(64 * MiB, 10), payload(64 * MiB, 11)
    left, right = PacedPump(p.pa, up), PacedPump(p.pb, down)
    for round_ in range(3):  # bounded: splice → copy (bytes in the pipe) → splice, three times
        while right.count < (round_ * 2 + 1) * MiB and right.threads[1].is_alive():
            time.sleep(0.01)
        add(wire, p.a, "latency", name="l", attributes={"latency": 5, "jitter": 3})
        add(wire, p.a, "slicer", stream="out", name="s", attributes={"averageSize": 8192})
        # Each direction copies once what its pipe held (read before the faults) is out.
        wait_mode(wire, p.a, "copy")
        wait_mode(wire, p.b, "copy")
        time.sleep(0.1)
        wire.call("fault.remove", {"handle": p.a, "name": "l"})
        wire.call("fault.remove", {"handle": p.a, "name": "s"})
        # Back to splice once the chains hold nothing (the transfer is far from done).
        wait_mode(wire, p.a, "splice")
        wait_mode(wire, p.b, "splice")
        assert right.count < len(up) and left.count < len(down), "the transfer ended too soon to test a switch"
    got_left, n_left, err_left = left.join()
    got_right, n_right, err_right = right.join()
    assert not err_left and not err_right
    assert (n_right, got_right) == (len(up), sha(up))
    assert (n_left, got_left) == (len(down), sha(down))
    for h in (p.a, p.b):
        assert "error" not in wire.wait_event("tcp.onClose", h, timeout=10).params
    p.close()


def test_back_to_splice_once_the_chains_are_empty(wire: Wire, listener: socket.socket) -> None:
    p = Pipe(wire, listener)
    add(wire, p.a, "latency", attributes={"latency": 600})
    p.pa.sendall(b"held")
    time.sleep(0.1)
    wire.call("fault.remove", {"handle": p.a, "name": "latency_in"})
    # Removing passes on what the stage held; the direction splices again behind it.
    assert recv_exact(p.pb, 4, timeout=2) == b"held"
    wait_mode(wire, p.a, "splice")
    assert round_trip(p, b"more") < 0.5
    p.close()


# ---------------------------------------------------------------------------------- a proxy
def test_a_proxy_whose_server_has_faults_delays_the_accepted_side(wire: Wire, listener: socket.socket) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    add(wire, srv["handle"], "latency", stream="out", attributes={"latency": 300})
    client = py_connect("127.0.0.1", srv["local"]["port"])
    client.settimeout(10)
    accepted = wire.call("tcp.accept", {"handle": srv["handle"], "timeout": 5000})["handle"]
    upstream, upstream_peer = connected_handle(wire, listener)
    assert wire.call("tcp.pipe", {"handle": accepted, "peer": upstream}) is True
    assert entry(wire, accepted)["faults"] == ["latency_out"]
    assert relay_mode(wire, upstream) == "copy" and relay_mode(wire, accepted) == "splice"
    t0 = time.monotonic()
    client.sendall(b"PING")
    assert recv_exact(upstream_peer, 4) == b"PING"
    assert time.monotonic() - t0 < 0.25, "the client → upstream way has no fault"
    t1 = time.monotonic()
    upstream_peer.sendall(b"PONG")
    assert recv_exact(client, 4) == b"PONG"
    assert time.monotonic() - t1 >= 0.25
    client.close()
    upstream_peer.close()


# ---------------------------------------------------------------------------------- attach
def test_an_attached_stream_with_latency_on_both_ways(wire: Wire, listener: socket.socket) -> None:
    h, peer = connected_handle(wire, listener)
    add(wire, h, "latency", attributes={"latency": 300})
    add(wire, h, "latency", stream="out", attributes={"latency": 300})
    token = wire.call("tcp.stream", {"handle": h})["token"]
    s, answer, rest = attach(wire.path, token)
    assert answer["result"]["handle"] == h and rest == b""
    assert relay_mode(wire, h) == "copy"
    t0 = time.monotonic()
    s.sendall(b"to peer")
    assert recv_exact(peer, 7) == b"to peer"
    assert time.monotonic() - t0 >= 0.25
    t1 = time.monotonic()
    peer.sendall(b"to stream")
    assert recv_exact(s, 9) == b"to stream"
    assert time.monotonic() - t1 >= 0.25
    data = payload(4 * MiB, 12)
    threading.Thread(target=lambda: (peer.sendall(data), peer.shutdown(socket.SHUT_WR)), daemon=True).start()
    got, error = read_to_end(s, timeout=30)
    assert error is None and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    s.close()
    peer.close()
