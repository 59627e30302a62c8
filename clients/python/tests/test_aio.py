"""The asyncio client against the real gateway, with real loopback peers."""
from __future__ import annotations

import asyncio
import errno
import socket
import threading
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import pytest

import tcpgw
import tcpgw.aio
from conftest import GatewayProcess, closed_port, fd_count, recv_exactly

T = TypeVar("T")
LOOPBACK = tcpgw.sockaddr(tcpgw.INADDR_LOOPBACK, 0)


def run(factory: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Run one test coroutine in a fresh loop, bounded by ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(bounded())


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def peer_connect(port: int) -> "tuple[asyncio.StreamReader, asyncio.StreamWriter]":
    return await asyncio.open_connection("127.0.0.1", port)


def test_aio_echo_and_iteration(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            srv = await gw.createServer(LOOPBACK)
            port = (await srv.sockName())["port"]
            reader, writer = await peer_connect(port)
            remote: dict = {}
            conn = await srv.accept(remote, 5000)
            assert remote["port"] == writer.get_extra_info("sockname")[1]
            assert await conn.getState() == tcpgw.TCP_ESTABLISHED
            writer.write(b"ping\xff")
            await writer.drain()
            got = b""
            for _ in range(100):
                got += await conn.recv(100, 5000)
                if len(got) >= 5:
                    break
            assert got == b"ping\xff"
            assert await conn.send(got) == 5
            assert await reader.readexactly(5) == b"ping\xff"

            # flowing mode: iterate events
            await conn.resume()
            writer.write(b"stream")
            await writer.drain()
            writer.close()
            names: List[str] = []
            data = b""
            async for event in conn.events(timeout=5):
                names.append(event.name)
                if event.name == "data":
                    data += event.data
                if event.name == "end":
                    break
            assert data == b"stream" and names[-1] == "end"
            assert await conn.isEOF() is True
            async with conn:
                pass
            assert conn.closed
            assert isinstance(await srv.sockFd(), int)  # a coroutine on aio handles (a property in sync)

    run(main)


def test_aio_connect_callback_and_listener_coroutines(gateway: GatewayProcess) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: w.write(b"greeting") or w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with await tcpgw.aio.connect(gateway.path) as gw:
                results: List[Any] = []
                conn = await gw.createClient(("127.0.0.1", port), lambda tcp, remote: results.append((tcp, remote)))
                assert await eventually(lambda: bool(results))
                assert results[0][0] is conn and results[0][1]["port"] == port
                received = bytearray()
                ended = asyncio.Event()

                async def on_data(data: bytes) -> None:  # coroutine listeners run as tasks
                    received.extend(data)

                conn.on("data", on_data)
                conn.on("end", ended.set)
                await asyncio.wait_for(ended.wait(), 5)
                assert await eventually(lambda: bytes(received) == b"greeting")

                failed: List[Any] = []
                bad = await gw.createClient(("127.0.0.1", closed_port()), lambda tcp, remote: failed.append(remote))
                assert await eventually(lambda: bool(failed))
                assert failed == [None] and bad.connect_error["errnoNumber"] == errno.ECONNREFUSED
        finally:
            server.close()
            await server.wait_closed()

    run(main)


def test_aio_accept_callback_and_queueing(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            srv = await gw.createServer(LOOPBACK)
            port = srv.local["port"]

            def never(tcp: Any, remote: Any) -> None:
                raise AssertionError("removed listener called")

            await srv.accept(None, never)
            assert srv.off("accept", never)
            reader, writer = await peer_connect(port)
            writer.write(b"queued before any listener")
            await writer.drain()
            assert await eventually(lambda: len(srv.queued()) == 1)
            accepted: List[tcpgw.aio.Tcp] = []
            srv.on("accept", lambda tcp, remote: accepted.append(tcp))
            assert await eventually(lambda: len(accepted) == 1)
            client = accepted[0]
            assert await eventually(lambda: any(e.name == "data" for e in client.queued()))
            chunks: List[bytes] = []
            client.on("data", chunks.append)
            assert await eventually(lambda: b"".join(chunks) == b"queued before any listener")
            writer.close()

    run(main)


def test_aio_timeouts_and_errors(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            srv = await gw.createServer(LOOPBACK)
            with pytest.raises(TimeoutError):
                await srv.accept(None, 50)
            reader, writer = await peer_connect(srv.local["port"])
            conn = await srv.accept(None, 5000)
            with pytest.raises(tcpgw.RPCTimeoutError) as info:
                await conn.recv(10, 100)
            assert isinstance(info.value, TimeoutError) and info.value.code == -32002
            writer.write(b"kept")
            await writer.drain()
            assert await conn.recv(10, 5000) == b"kept"
            with pytest.raises(tcpgw.HandleStateError):
                await srv.recv()
            with pytest.raises(tcpgw.OSErrorReply) as refused:
                await gw.createClient(("127.0.0.1", closed_port()), 5000)
            assert refused.value.errno_name == "ECONNREFUSED" and refused.value.syscall == "connect"
            with pytest.raises(tcpgw.InvalidParamsError):
                await conn.setTTL(0)
            await conn.close()
            with pytest.raises(tcpgw.UnknownHandleError):
                await conn.isEOF()
            writer.close()
        with pytest.raises(tcpgw.ConnectionClosedError):
            await gw.info()

    run(main)


def test_aio_flyaway_createbyfd_round_trip(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            srv = await gw.createServer(LOOPBACK)
            peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
            with peer:
                conn = await srv.accept(None, 5000)
                peer.sendall(b"in flight")
                for _ in range(500):
                    if await conn.pending() >= 9:
                        break
                    await asyncio.sleep(0.01)
                sock = await conn.flyAway()
                assert conn.closed
                sock.settimeout(5)
                data = sock.buffered
                while len(data) < 9:
                    data += await asyncio.get_running_loop().run_in_executor(None, sock.recv, 9 - len(data))
                assert data == b"in flight"
                back = await gw.createByFd(sock)
                sock.close()
                assert back.remote["port"] == peer.getsockname()[1]
                await back.send(b"returned")
                assert recv_exactly(peer, 8) == b"returned"
                await back.close()

    run(main)


def test_aio_leaves_no_thread_or_fd(gateway: GatewayProcess) -> None:
    threads_before = threading.active_count()
    fds_before = fd_count()

    async def main() -> None:
        gw = await tcpgw.aio.connect(gateway.path)
        assert threading.active_count() == threads_before  # no threads at all
        async with gw:
            srv = await gw.createServer(LOOPBACK)
            conn = await gw.createClient(("127.0.0.1", srv.local["port"]), 5000)
            flown = await conn.flyAway()
            flown.close()
        assert gw.closed and srv.closed
        await gw.close()  # idempotent

    run(main)
    assert threading.active_count() == threads_before
    assert fd_count() == fds_before


def test_aio_gateway_going_away(gateway: GatewayProcess) -> None:
    async def main() -> None:
        gw = await tcpgw.aio.connect(gateway.path)
        srv = await gw.createServer(LOOPBACK)
        waiting = asyncio.ensure_future(srv.accept())
        await asyncio.sleep(0.1)
        gateway.proc.terminate()
        # the gateway may answer first (the handle closed under the call) or just go away
        with pytest.raises((tcpgw.ConnectionClosedError, tcpgw.UnknownHandleError, tcpgw.HandleStateError)):
            await asyncio.wait_for(waiting, 10)
        await asyncio.wait_for(gw.wait_closed(), 10)
        assert gw.closed and srv.closed
        await gw.close()

    run(main)


def test_aio_host_names(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            srv = await gw.createServer(tcpgw.sockaddr("localhost", 0))
            assert srv.host == "localhost" and srv.local is not None
            conn = await gw.createClient(tcpgw.sockaddr("localhost", srv.local["port"]), 5000)
            assert conn.host == "localhost" and conn.remote is not None and conn.remote["addr"] == "127.0.0.1"
            assert await gw.lookup("localhost", tcpgw.AF_INET) == [{"domain": 2, "addr": "127.0.0.1"}]
            await conn.close()
            await srv.close()

    run(main)
