"""What the speed work must not change, against the real gateway: read-ahead bytes are never
lost or reordered (pending, flyAway, resume, recvfrom), big transfers through the fast paths
arrive intact, and many threads sharing one connection (leader/follower reading) each get
their own answers while events flow. Each test runs under every usable base64 decoder.
"""
from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import List, Tuple

import pytest

import tcpgw
import tcpgw.aio
from conftest import recv_exactly, wait_until

# Every test here runs once per usable base64 decoder (pybase64, libcrypto, binascii).
pytestmark = pytest.mark.usefixtures("b64_decoder")


def pair(gw: tcpgw.Gateway, py_server: socket.socket) -> Tuple[tcpgw.Tcp, socket.socket]:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    peer.settimeout(5)
    return conn, peer


def test_read_ahead_bytes_are_counted_and_come_next(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"0123456789")
    assert wait_until(lambda: conn.pending() == 10)
    assert conn.recv(3, 5000) == b"012"
    assert conn.pending() == 7  # the rest is here or at the gateway: counted either way
    data, remote = conn.recvfrom(2, 5000)
    assert data == b"34" and remote is not None and remote["port"] == peer.getsockname()[1]
    buf = bytearray(4)
    assert conn.recv_into(buf, 1, 3, 5000) == 3 and bytes(buf) == b"\x00567"
    peer.sendall(b"abc")
    got = b""
    for _ in range(10):
        if len(got) >= 5:
            break
        got += conn.recv(10, 5000)
    assert got == b"89abc"
    peer.close()


def test_read_ahead_bytes_go_first_into_flyaway(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"header:body-bytes")
    assert conn.recv(7, 5000) == b"header:"
    flown = conn.flyAway()
    with flown:
        peer.sendall(b"+more")
        flown.settimeout(5)
        rest = flown.buffered
        while len(rest) < len(b"body-bytes+more"):
            chunk = flown.recv(100)
            if not chunk:
                break
            rest += chunk
        assert rest == b"body-bytes+more"
    peer.close()


def test_read_ahead_bytes_are_the_first_event_after_resume(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"abcdef")
    assert wait_until(lambda: conn.pending() == 6)
    assert conn.recv(2, 5000) == b"ab"
    conn.resume()
    peer.sendall(b"ghi")
    got = b""
    for event in conn.events(timeout=5):
        assert event.name == "data"
        got += event.data or b""
        if len(got) >= 7:
            break
    assert got == b"cdefghi"
    peer.close()


def test_big_transfers_through_the_fast_paths(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    rng = random.Random(99)
    payload = bytes(rng.getrandbits(8) for _ in range(1 << 16)) * 48  # 3 MiB
    conn, peer = pair(gw, py_server)
    sender = threading.Thread(target=peer.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = conn.recv(65536, 5000)
        assert chunk
        got += chunk
    sender.join(10)
    assert bytes(got) == payload
    conn.resume()
    sender = threading.Thread(target=lambda: (peer.sendall(payload), peer.shutdown(socket.SHUT_WR)))
    sender.start()
    got = bytearray()
    for event in conn.events(timeout=5):
        if event.name == "end":
            break
        got += event.data or b""
    sender.join(10)
    assert bytes(got) == payload
    peer.close()


def test_many_threads_share_one_connection(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    servers = [gw.createServer(("127.0.0.1", 0)) for _ in range(6)]
    conn, peer = pair(gw, py_server)
    conn.resume()
    failures: List[str] = []

    def caller(index: int) -> None:
        srv = servers[index]
        for _ in range(150):
            port = srv.sockName()["port"]
            if port != srv.local["port"]:  # type: ignore[index]
                failures.append(f"thread {index} got another call's answer: {port}")
                return

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(servers))]
    for thread in threads:
        thread.start()
    sent = b"".join(b"%06d" % i for i in range(20000))
    feeder = threading.Thread(target=peer.sendall, args=(sent,))
    feeder.start()
    got = bytearray()
    while len(got) < len(sent):
        event = conn.next_event(10)
        assert event is not None and event.name == "data"
        got += event.data or b""
    for thread in [*threads, feeder]:
        thread.join(30)
    assert failures == []
    assert bytes(got) == sent
    peer.close()


def test_aio_read_ahead_and_fast_paths(gateway: "object", py_server: socket.socket) -> None:
    path = getattr(gateway, "path")

    async def main() -> None:
        async with await tcpgw.aio.connect(path) as gw:
            conn = await gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            with peer:
                payload = bytes(range(256)) * 8192  # 2 MiB
                sender = threading.Thread(target=peer.sendall, args=(payload,))
                sender.start()
                first = await conn.recv(10, 5000)
                assert first == payload[:10]
                assert await conn.pending() >= 1
                got = bytearray(first)
                while len(got) < len(payload) // 2:
                    got += await conn.recv(65536, 5000)
                await conn.resume()
                while len(got) < len(payload):
                    event = await conn.next_event(5)
                    assert event is not None and event.name == "data"
                    got += event.data or b""
                sender.join(10)
                assert bytes(got) == payload
                assert await conn.send(b"done") == 4
                assert recv_exactly(peer, 4) == b"done"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_concurrent_recvs_on_one_handle_lose_nothing(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    payload = bytes(range(256)) * 4096  # 1 MiB
    peer.sendall(payload)
    peer.shutdown(socket.SHUT_WR)
    counts: List[int] = []
    lock = threading.Lock()

    def reader() -> None:
        for _ in range(100_000):
            chunk = conn.recv(1000, 5000)
            with lock:
                counts.append(len(chunk))
            if not chunk:
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(counts) == len(payload)
    peer.close()
