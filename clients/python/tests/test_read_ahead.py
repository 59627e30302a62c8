"""The pipelined read-ahead of ``recv``: once bytes came, one ``tcp.recv`` stays in flight ahead
of the caller. Against the real gateway: every byte exactly once and in order under concurrent
callers (threads and tasks), timeouts while it is in flight lose nothing, and ``close``,
``flyAway``, ``resume``, ``pending`` and end of stream stay right with it in flight.
"""
from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

import pytest

import tcpgw
import tcpgw.aio
from conftest import wait_until


def pair(gw: tcpgw.Gateway, py_server: socket.socket) -> Tuple[tcpgw.Tcp, socket.socket]:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    peer.settimeout(5)
    return conn, peer


def in_flight(gw: Any, handle: int) -> List[Any]:
    """This client's tcp.recv requests for ``handle`` not answered yet."""
    return [p for p in list(gw._session.pending.values()) if p.method == "tcp.recv" and p.handle == handle]


def log_takes(conn: Any) -> List[bytes]:
    """Record every chunk taken from the handle's kept bytes, in the order taken (under the
    client's lock), so the test sees the order bytes left the stream, whoever took them."""
    state = conn._state
    taken: List[bytes] = []
    original: Callable[[int], Optional[bytes]] = state.take_ahead

    def take(length: int) -> Optional[bytes]:
        chunk = original(length)
        if chunk is not None:
            taken.append(chunk)
        return chunk

    state.take_ahead = take
    return taken


def taken_in_order(chunks: List[bytes], taken: List[bytes]) -> bool:
    """Whether one reader's chunks are, object for object, a subsequence of everything taken:
    what it returned it took, in its order. (Matched by identity and greedily: CPython shares
    the objects of 1-byte strings, so an id can stand at several places of `taken`.)"""
    rest = iter(taken)
    return all(any(chunk is t for t in rest) for chunk in chunks)


def payload_of(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return rng.getrandbits(8 * size).to_bytes(size, "little")


def test_a_recv_that_got_bytes_leaves_one_read_ahead_in_flight(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    assert in_flight(gw, conn.handle) == []  # nothing asked yet: nothing read ahead
    peer.sendall(b"first")
    assert conn.recv(100, 5000) == b"first"
    flying = in_flight(gw, conn.handle)
    assert len(flying) == 1 and flying[0].prefetch
    peer.sendall(b"second")
    assert wait_until(lambda: not in_flight(gw, conn.handle) or conn._state.ahead_count() > 0)
    assert conn.recv(100, 5000) == b"second"
    assert len(in_flight(gw, conn.handle)) == 1  # one: the answer left nothing kept
    peer.close()


def test_a_bulk_recv_loop_keeps_at_most_two_read_aheads_in_flight(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    """The threaded client keeps a second tcp.recv on its way while bytes are kept (so the
    gateway fills the next answer while this process decodes), never more, and the bytes of
    answers in flight together are filed in order."""
    conn, peer = pair(gw, py_server)
    data = payload_of(8 << 20, 11)
    sender = threading.Thread(target=peer.sendall, args=(data,), daemon=True)
    sender.start()
    got = bytearray()
    most = 0
    for _ in range(10_000):
        if len(got) == len(data):
            break
        got += conn.recv(65536, 5000)
        flying = len(in_flight(gw, conn.handle))
        assert flying <= 2
        most = max(most, flying)
    sender.join(5)
    assert bytes(got) == data
    assert most == 2  # the second one did go out
    peer.close()


def test_pending_counts_bytes_the_read_ahead_brought(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"x")
    assert conn.recv(1, 5000) == b"x"
    peer.sendall(b"0123456789")
    # Here or still at the gateway: counted either way, never twice.
    assert wait_until(lambda: conn.pending() == 10)
    assert conn.recv(4, 5000) == b"0123"
    assert conn.pending() == 6
    assert conn.recv(100, 5000) == b"456789"
    peer.close()


def test_concurrent_threads_get_every_byte_once_in_order(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    payload = payload_of(3 << 20, 7)
    conn, peer = pair(gw, py_server)
    taken = log_takes(conn)
    got: List[List[bytes]] = [[] for _ in range(4)]
    failures: List[BaseException] = []

    def reader(index: int) -> None:
        rng = random.Random(100 + index)
        try:
            for _ in range(20000):
                chunk = conn.recv(rng.choice([1, 7, 100, 4096, 65536, 300000]), 10000)
                if not chunk:
                    return
                got[index].append(chunk)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    peer.sendall(payload)
    peer.shutdown(socket.SHUT_WR)
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert b"".join(taken) == payload  # in the stream's order, each byte once
    assert sum(len(chunk) for chunks in got for chunk in chunks) == len(payload)
    # What each thread returned is what it took, in its order.
    for chunks in got:
        assert taken_in_order(chunks, taken)
    peer.close()


def test_a_timeout_with_the_read_ahead_in_flight_loses_nothing(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"a")
    assert conn.recv(10, 5000) == b"a"
    assert len(in_flight(gw, conn.handle)) == 1
    t0 = time.monotonic()
    with pytest.raises(tcpgw.RPCTimeoutError) as info:
        conn.recv(10, 200)
    assert time.monotonic() - t0 >= 0.15  # it did wait (a wide margin: only "not at once")
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(tcpgw.RPCTimeoutError):
        conn.recv(10, 0)
    assert len(in_flight(gw, conn.handle)) == 1  # still one: the timeouts sent nothing
    peer.sendall(b"late bytes")
    got = b""
    while len(got) < 10:
        got += conn.recv(3, 5000)
    assert got == b"late bytes"
    peer.close()


def test_close_with_the_read_ahead_in_flight(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"hello")
    assert conn.recv(10, 5000) == b"hello"
    assert len(in_flight(gw, conn.handle)) == 1
    conn.close()
    assert conn.closed
    assert wait_until(lambda: in_flight(gw, conn.handle) == [])  # answered (an error) and collected
    with pytest.raises(tcpgw.UnknownHandleError):
        conn.recv(10, 1000)
    # The connection and other handles are fine.
    other, other_peer = pair(gw, py_server)
    other_peer.sendall(b"still fine")
    assert other.recv(100, 5000) == b"still fine"
    assert peer.recv(10) == b""  # the gateway closed the socket
    other.close()
    other_peer.close()
    peer.close()


def test_flyaway_with_the_read_ahead_in_flight_keeps_every_byte(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"head")
    assert conn.recv(10, 5000) == b"head"
    peer.sendall(b"-body")  # the read-ahead may take these, or the gateway may still hold them
    time.sleep(0.05)
    flown = conn.flyAway()
    with flown:
        peer.sendall(b"-tail")
        flown.settimeout(5)
        rest = flown.buffered
        while len(rest) < 10:
            chunk = flown.recv(100)
            if not chunk:
                break
            rest += chunk
        assert rest == b"-body-tail"
    assert wait_until(lambda: in_flight(gw, conn.handle) == [])
    peer.close()


def test_resume_with_the_read_ahead_in_flight(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    for delay in (0.0, 0.05):  # the read-ahead still waiting, or answered before the resume
        conn, peer = pair(gw, py_server)
        peer.sendall(b"ab")
        assert conn.recv(1, 5000) == b"a"
        peer.sendall(b"cd")
        time.sleep(delay)
        assert conn.resume() is True
        peer.sendall(b"ef")
        got = b""
        for event in conn.events(timeout=5):
            assert event.name == "data"
            got += event.data or b""
            if len(got) >= 5:
                break
        assert got == b"bcdef"
        assert in_flight(gw, conn.handle) == []
        conn.close()
        peer.close()


def test_end_of_stream_through_the_read_ahead(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"last")
    assert conn.recv(100, 5000) == b"last"
    peer.shutdown(socket.SHUT_WR)
    assert conn.recv(100, 5000) == b""
    assert conn.isEOF() is True
    assert in_flight(gw, conn.handle) == []  # no read-ahead after the end
    assert conn.recv(100, 5000) == b""  # and again, from the gateway
    peer.close()


def test_a_reset_while_the_read_ahead_waits_reaches_the_next_recv(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"x")
    assert conn.recv(10, 5000) == b"x"
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    with pytest.raises(tcpgw.RPCError) as info:
        for _ in range(3):
            conn.recv(10, 5000)
    assert not isinstance(info.value, tcpgw.RPCTimeoutError)


def test_invalid_lengths_are_still_the_gateways_to_refuse(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"abc")
    assert conn.recv(1, 5000) == b"a"
    for bad in (0, -1):
        with pytest.raises(tcpgw.InvalidParamsError) as info:
            conn.recv(bad, 1000)
        assert "length" in str(info.value)
    assert conn.recv(10, 5000) == b"bc"  # nothing lost
    peer.close()


def test_aio_tasks_get_every_byte_once_in_order(gateway: Any, py_server: socket.socket) -> None:
    payload = payload_of(2 << 20, 11)

    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as client:
            conn = await client.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            taken = log_takes(conn)
            got: List[List[bytes]] = [[] for _ in range(3)]

            async def reader(index: int) -> None:
                rng = random.Random(200 + index)
                for _ in range(20000):
                    chunk = await conn.recv(rng.choice([1, 100, 65536, 300000]), 10000)
                    if not chunk:
                        return
                    got[index].append(chunk)

            loop = asyncio.get_running_loop()
            sender = loop.run_in_executor(None, lambda: (peer.sendall(payload), peer.shutdown(socket.SHUT_WR)))
            await asyncio.wait_for(asyncio.gather(*(reader(i) for i in range(3))), 60)
            await sender
            assert b"".join(taken) == payload
            for chunks in got:
                assert taken_in_order(chunks, taken)
            peer.close()

    asyncio.run(main())


def test_aio_timeout_cancel_and_close_with_the_read_ahead_in_flight(gateway: Any, py_server: socket.socket) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as client:
            conn = await client.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            peer.sendall(b"a")
            assert await conn.recv(10, 5000) == b"a"
            assert len(in_flight(client, conn.handle)) == 1
            with pytest.raises(tcpgw.RPCTimeoutError):
                await conn.recv(10, 100)
            task = asyncio.ensure_future(conn.recv(10))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(in_flight(client, conn.handle)) == 1
            peer.sendall(b"kept")
            assert await conn.recv(10, 5000) == b"kept"  # nothing lost to the timeout or the cancel
            assert await conn.pending() == 0
            await conn.close()
            for _ in range(100):
                if not in_flight(client, conn.handle):
                    break
                await asyncio.sleep(0.02)
            assert in_flight(client, conn.handle) == []
            assert await client.info() is not None  # the connection goes on
            peer.close()

    asyncio.run(main())


def test_aio_bulk_recv_loop_reads_ahead_from_the_reader(gateway: Any, py_server: socket.socket) -> None:
    """A bulk asyncio recv loop keeps at most two read-aheads in flight, and the reader sends
    the next one itself when an answer comes for a waiting recv; every byte once, in order."""
    data = payload_of(8 << 20, 13)

    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as client:
            conn = await client.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            from_reader: List[int] = []
            original = client._write_from_reader

            def counted(request_id: int, line: bytes) -> bool:
                from_reader.append(request_id)
                return original(request_id, line)

            client._write_from_reader = counted  # type: ignore[method-assign]
            loop = asyncio.get_running_loop()
            sender = loop.run_in_executor(None, lambda: (peer.sendall(data), peer.shutdown(socket.SHUT_WR)))
            got = bytearray()
            most = 0
            for _ in range(10_000):
                chunk = await conn.recv(65536, 5000)
                if not chunk:
                    break
                got += chunk
                flying = len(in_flight(client, conn.handle))
                assert flying <= 2
                most = max(most, flying)
            await sender
            assert bytes(got) == data
            assert most == 2
            assert from_reader  # some read-aheads went out from the reader
            assert client._recv_waiters == {}  # no waiter left registered
            peer.close()

    asyncio.run(main())


def test_aio_a_read_ahead_the_socket_only_partly_took_is_finished_first(gateway: Any, py_server: socket.socket) -> None:
    """A read-ahead the reader writes while the socket takes only part of it: its rest goes
    out before any other line, so concurrent calls and every byte stay right."""
    data = payload_of(4 << 20, 17)

    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as client:
            conn = await client.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            transport = client._transport
            real_write = transport.write
            cut = {"on": False, "cuts": 0}

            def write(line: Any, fds: Any = ()) -> int:
                if cut["on"] and len(line) > 9:
                    cut["on"] = False
                    cut["cuts"] += 1
                    return real_write(line[:9], fds)  # the socket "took" 9 bytes
                return int(real_write(line, fds))

            transport.write = write  # type: ignore[method-assign]
            original = client._wake_recv_waiters

            def wake(touched: Any) -> None:
                cut["on"] = True  # the reader's own write is cut short
                try:
                    original(touched)
                finally:
                    cut["on"] = False

            client._wake_recv_waiters = wake  # type: ignore[method-assign]
            flush = client._flush_tail

            async def late_flush() -> None:
                await asyncio.sleep(0.005)  # other lines come first: each must finish the cut one
                await flush()

            client._flush_tail = late_flush  # type: ignore[method-assign]

            async def caller() -> int:
                calls = 0
                while not done.is_set():
                    assert await conn.pending() >= 0  # a line that must not split the cut one
                    calls += 1
                    await asyncio.sleep(0)
                return calls

            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            sender = loop.run_in_executor(None, lambda: (peer.sendall(data), peer.shutdown(socket.SHUT_WR)))
            other = asyncio.ensure_future(caller())
            got = bytearray()
            for _ in range(10_000):
                chunk = await conn.recv(65536, 5000)
                if not chunk:
                    break
                got += chunk
            done.set()
            calls = await asyncio.wait_for(other, 10)
            await sender
            assert bytes(got) == data
            assert cut["cuts"] > 0 and calls > 0
            for _ in range(200):  # the last cut line's (late) flush
                if client._tail is None:
                    break
                await asyncio.sleep(0.01)
            assert client._tail is None
            assert await client.info() is not None  # the connection is still sound
            peer.close()

    asyncio.run(main())
