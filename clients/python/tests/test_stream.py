"""``conn.stream()`` (contract §11): a handle's raw byte stream as a socket (threaded), as
asyncio streams, and over ssh:// (through ``tcpgw attach``). Skipped cleanly when the gateway
has no ``tcp.stream`` yet (-32601).
"""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Tuple

import pytest

import tcpgw
import tcpgw.aio
from conftest import FakeSsh, GatewayProcess, recv_exactly


def stream_of(conn: tcpgw.Tcp) -> tcpgw.StreamSocket:
    try:
        return conn.stream()
    except tcpgw.MethodNotFoundError:
        pytest.skip("this gateway has no tcp.stream (contract §11 not merged yet)")


def pair(gw: tcpgw.Gateway, py_server: socket.socket) -> Tuple[tcpgw.Tcp, socket.socket]:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    peer.settimeout(5)
    return conn, peer


def read_to_eof(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    sock.settimeout(10)
    got = bytearray()
    while len(got) < limit:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_stream_both_ways_then_close_event(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    stream = stream_of(conn)
    assert isinstance(stream, socket.socket) and stream.handle == conn.handle
    with stream:
        stream.sendall(b"to the peer")
        assert recv_exactly(peer, 11) == b"to the peer"
        peer.sendall(b"to the stream")
        stream.settimeout(5)
        assert recv_exactly(stream, 13) == b"to the stream"
        # while attached, the owner cannot send or recv on the handle
        with pytest.raises(tcpgw.HandleStateError):
            conn.send(b"no")
        stream.shutdown(socket.SHUT_WR)
        assert peer.recv(10) == b""  # our FIN reached the peer
        peer.close()
        assert read_to_eof(stream) == b""
    event = conn.next_event(10)
    assert event is not None and event.name == "close"


def test_stream_starts_with_bytes_already_read(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    peer.sendall(b"hello, stream world")
    assert conn.recv(7, 5000) == b"hello, "  # a read-ahead may have taken all of it
    stream = stream_of(conn)
    with stream:
        stream.settimeout(5)
        peer.sendall(b"!")
        assert recv_exactly(stream, 13) == b"stream world!"
    peer.close()


def test_big_stream_loses_nothing(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    stream = stream_of(conn)
    payload = bytes(range(256)) * 40_000  # ~10 MiB


    sender = threading.Thread(target=lambda: (peer.sendall(payload), peer.shutdown(socket.SHUT_WR)))
    sender.start()
    with stream:
        assert read_to_eof(stream) == payload
    sender.join(10)
    peer.close()


def test_stream_of_a_closed_handle(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(gw, py_server)
    stream_of(conn).close()  # skips when there is no tcp.stream
    conn.close()
    with pytest.raises(tcpgw.UnknownHandleError):
        conn.stream()
    peer.close()


def test_stream_over_ssh(gateway: GatewayProcess, fake_ssh: FakeSsh, py_server: socket.socket) -> None:
    with tcpgw.connect(f"ssh://gw.invalid{gateway.path}") as gw:
        conn, peer = pair(gw, py_server)
        stream = stream_of(conn)
        with stream:
            stream.sendall(b"via attach")
            assert recv_exactly(peer, 10) == b"via attach"
            peer.sendall(b"and back")
            peer.shutdown(socket.SHUT_WR)
            stream.shutdown(socket.SHUT_WR)
            assert read_to_eof(stream) == b"and back"
        peer.close()
    assert any(" attach " in run for run in fake_ssh.runs())


def test_aio_stream(gateway: GatewayProcess, py_server: socket.socket) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(gateway.path) as gw:
            conn = await gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            with peer:
                peer.sendall(b"first bytes")
                assert await conn.recv(6, 5000) == b"first "
                try:
                    reader, writer = await conn.stream()
                except tcpgw.MethodNotFoundError:
                    pytest.skip("this gateway has no tcp.stream (contract §11 not merged yet)")
                assert await reader.readexactly(5) == b"bytes"
                writer.write(b"from asyncio")
                await writer.drain()
                assert recv_exactly(peer, 12) == b"from asyncio"
                writer.write_eof()
                assert peer.recv(1) == b""
                peer.shutdown(socket.SHUT_WR)
                assert await reader.read() == b""
                writer.close()

    asyncio.run(asyncio.wait_for(main(), 30))
