"""Sessions that resume by themselves (contract §12): ``tcpgw.connect(path, keep=MS)``.

The client's connection is dropped under it (its socket shut down, or the ssh stand-in
killed) while calls wait and data flows; the client must reconnect, resume and go on with
nothing lost or repeated. Skipped cleanly when the gateway has no sessions yet (it answers
``session.keep`` with -32601).
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import threading
import time
from typing import Iterator, List

import pytest

import tcpgw
import tcpgw.aio
from conftest import FakeSsh, GatewayProcess, recv_exactly


def kept(path: str, keep: int = 10_000) -> tcpgw.Gateway:
    try:
        return tcpgw.connect(path, keep=keep)
    except tcpgw.MethodNotFoundError:
        pytest.skip("this gateway has no session.keep (contract §12 not merged yet)")


@pytest.fixture
def kgw(gateway: GatewayProcess) -> Iterator[tcpgw.Gateway]:
    gw = kept(gateway.path)
    try:
        yield gw
    finally:
        gw.close()


def drop(gw: tcpgw.Gateway) -> None:
    """Cut the client's connection under it, as a dropped link would (the gateway sees EOF)."""
    gw._transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]


def pair(gw: tcpgw.Gateway, py_server: socket.socket) -> "tuple[tcpgw.Tcp, socket.socket]":
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    peer.settimeout(5)
    return conn, peer


def test_keep_answers_a_token(kgw: tcpgw.Gateway) -> None:
    assert isinstance(kgw.session_token, str) and len(kgw.session_token) >= 16
    assert kgw.info()["name"]


def test_blocked_call_continues_across_a_drop(kgw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn, peer = pair(kgw, py_server)
    got: List[bytes] = []
    waiting = threading.Thread(target=lambda: got.append(conn.recv(100, 15_000)))
    waiting.start()
    time.sleep(0.2)  # the recv is at the gateway, waiting
    drop(kgw)
    time.sleep(0.2)
    peer.sendall(b"after the drop")
    waiting.join(20)
    assert got == [b"after the drop"]
    # the same handle, the same session, on a new connection
    token = kgw.session_token
    assert conn.send(b"reply") == 5
    assert recv_exactly(peer, 5) == b"reply"
    assert kgw.session_token == token
    peer.close()


def test_flowing_events_survive_drops_in_order(kgw: tcpgw.Gateway, py_server: socket.socket) -> None:
    rng = random.Random(20261201)
    conn, peer = pair(kgw, py_server)
    conn.resume()
    sent = bytearray()
    got = bytearray()
    for round_ in range(12):
        chunk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200_000)))
        peer.sendall(chunk)
        sent += chunk
        if round_ % 3 == 1:
            drop(kgw)
        deadline = time.monotonic() + 15
        while len(got) < len(sent) and time.monotonic() < deadline:
            event = conn.next_event(5)
            assert event is not None, f"no event after {len(got)} of {len(sent)} bytes"
            assert event.name == "data"
            got += event.data or b""
    assert bytes(got) == bytes(sent)
    peer.close()


def test_calls_written_during_an_outage_are_sent_after_the_resume(kgw: tcpgw.Gateway) -> None:
    servers = [kgw.createServer(("127.0.0.1", 0)) for _ in range(3)]
    drop(kgw)
    # these may be written into the dead connection: they are kept and resent
    states = [srv.getState() for srv in servers]
    assert states == [tcpgw.TCP_LISTEN] * 3
    assert sorted(h["handle"] for h in kgw.list()) == sorted(s.handle for s in servers)


def test_many_drops_many_calls(kgw: tcpgw.Gateway) -> None:
    srv = kgw.createServer(("127.0.0.1", 0))
    for i in range(30):
        if i % 5 == 0:
            drop(kgw)
        assert srv.sockName()["port"] == srv.local["port"]  # type: ignore[index]


def test_after_the_grace_calls_fail_clearly(gateway: GatewayProcess) -> None:
    gw = kept(gateway.path, keep=400)
    gw.createServer(("127.0.0.1", 0))
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.proc.wait(10)
    started = time.monotonic()
    with pytest.raises(tcpgw.ConnectionClosedError, match="grace of 400 ms"):
        gw.info()
    assert time.monotonic() - started < 10
    assert gw.closed
    gw.close()


def test_close_ends_the_kept_session(gateway: GatewayProcess) -> None:
    gw = kept(gateway.path)
    token = gw.session_token
    gw.createServer(("127.0.0.1", 0))
    gw.close()
    # the session is over at once: a resume with its token is refused (-32007)
    deadline = time.monotonic() + 5
    while True:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(5)
            raw.connect(gateway.path)
            raw.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.resume",
                                    "params": {"token": token, "received": 0}}).encode() + b"\n")
            answer = json.loads(raw.makefile("rb").readline())
        if "error" in answer or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer["error"]["code"] == -32007


def test_keep_over_ssh_reruns_ssh(gateway: GatewayProcess, fake_ssh: FakeSsh, py_server: socket.socket) -> None:
    gw = kept(f"ssh://gw.invalid{gateway.path}")
    try:
        conn, peer = pair(gw, py_server)
        for round_ in range(3):
            gw._transport.proc.kill()  # type: ignore[union-attr]
            peer.sendall(b"round %d" % round_)
            assert conn.recv(7, 15_000) == b"round %d" % round_
        assert len(fake_ssh.runs()) == 4
        peer.close()
    finally:
        gw.close()


def test_aio_blocked_call_continues_across_a_drop(gateway: GatewayProcess, py_server: socket.socket) -> None:
    async def main() -> None:
        try:
            gw = await tcpgw.aio.connect(gateway.path, keep=10_000)
        except tcpgw.MethodNotFoundError:
            pytest.skip("this gateway has no session.keep (contract §12 not merged yet)")
        async with gw:
            assert gw.session_token
            conn = await gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            with peer:
                waiting = asyncio.ensure_future(conn.recv(100, 15_000))
                await asyncio.sleep(0.2)
                gw._transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                await asyncio.sleep(0.2)
                peer.sendall(b"aio after drop")
                assert await waiting == b"aio after drop"
                await conn.resume()
                peer.sendall(b"events too")
                gw._transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                event = await conn.next_event(10)
                assert event is not None and event.data == b"events too"

    asyncio.run(asyncio.wait_for(main(), 40))


def test_plain_gateway_without_sessions_is_refused_clearly(gateway: GatewayProcess) -> None:
    """Whatever the gateway, keep= either works or raises MethodNotFoundError: never hangs."""
    try:
        gw = tcpgw.connect(gateway.path, keep=1000)
    except tcpgw.MethodNotFoundError as exc:
        assert "session.keep" in str(exc)
        return
    gw.close()
