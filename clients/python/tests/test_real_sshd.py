"""ssh:// against a real OpenSSH server on loopback (tests/support/sshd.py): a generated host
key, an authorized test key, the machine's own ssh configuration never read. The remote
command is the real ``tcpgw bridge --socket PATH`` found in the remote PATH.

Skipped cleanly when sshd or the ssh tools are not installed.
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
import time
from typing import Iterator

import pytest

import tcpgw
from conftest import REPO_ROOT, GatewayProcess, recv_exactly, wait_until

sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
import sshd  # noqa: E402
from streamer import Streamer  # noqa: E402


@pytest.fixture(scope="module")
def server(gateway_bin: str) -> Iterator[sshd.SSHD]:
    sshd.skip_unless_available()
    s = sshd.SSHD(remote_path=[os.path.dirname(os.path.abspath(gateway_bin))]).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def ssh_env(server: sshd.SSHD, monkeypatch: pytest.MonkeyPatch) -> sshd.SSHD:
    """The real ssh with the fixture's client config; the remote tcpgw from the remote PATH."""
    monkeypatch.setenv("TCPGW_SSH", server.ssh_command())
    monkeypatch.delenv("TCPGW_REMOTE_BIN", raising=False)
    return server


def pair(gw: tcpgw.Gateway, py_server: socket.socket) -> "tuple[tcpgw.Tcp, socket.socket]":
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    peer.settimeout(10)
    return conn, peer


def test_calls_and_events_over_real_ssh(gateway: GatewayProcess, ssh_env: sshd.SSHD,
                                        py_server: socket.socket) -> None:
    url = ssh_env.url(gateway.path)
    with tcpgw.connect(url) as gw:
        info = gw.info()
        assert info["socket"] == gateway.path
        assert info["connections"] == 1  # the remote bridge is the gateway's only client
        conn, peer = pair(gw, py_server)
        payload = bytes(range(256)) * 40
        assert conn.send(payload) == len(payload)
        assert recv_exactly(peer, len(payload), 10) == payload
        # Events: a flowing handle's data arrives as tcp.onData through ssh, in order.
        conn.resume()
        peer.sendall(payload[::-1])
        got = bytearray()
        deadline = time.monotonic() + 15
        while len(got) < len(payload) and time.monotonic() < deadline:
            event = conn.next_event(5)
            assert event is not None, f"no event after {len(got)} bytes"
            assert event.name == "data"
            got += event.data or b""
        assert bytes(got) == payload[::-1]
        assert [h["handle"] for h in gw.list()] == [conn.handle]
        peer.close()
    # The client closed: the session ends and the gateway closes its handles.
    with tcpgw.connect(gateway.path) as local:
        assert wait_until(lambda: local.info()["handles"] == 0, 10, 0.05)


def test_descriptor_methods_refused_before_sending(gateway: GatewayProcess, ssh_env: sshd.SSHD,
                                                   py_server: socket.socket) -> None:
    with tcpgw.connect(ssh_env.url(gateway.path)) as gw:
        conn, peer = pair(gw, py_server)
        with pytest.raises(tcpgw.DescriptorError, match="ssh://"):
            conn.flyAway()
        with socket.socket() as mine, pytest.raises(tcpgw.DescriptorError, match="tcp.createByFd"):
            gw.createByFd(mine)
        # Nothing went out: the handle is still the gateway's, the session's only one, and works.
        assert not conn.closed
        peer.sendall(b"still here")
        assert conn.recv(10, 5000) == b"still here"
        assert [h["handle"] for h in gw.list()] == [conn.handle]
        peer.close()


def test_unauthorized_key_is_a_clear_error(gateway: GatewayProcess, server: sshd.SSHD,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPGW_SSH", server.ssh_command("unauthorized"))
    monkeypatch.delenv("TCPGW_REMOTE_BIN", raising=False)
    gw = tcpgw.connect(server.url(gateway.path))
    try:
        with pytest.raises(tcpgw.ConnectionClosedError, match="status 255"):
            gw.info()
        assert wait_until(lambda: gw.closed)
    finally:
        gw.close()
    # Nothing reached the gateway.
    with tcpgw.connect(gateway.path) as local:
        assert local.info()["connections"] == 1


def test_unauthorized_key_with_keep_is_a_clear_error(gateway: GatewayProcess, server: sshd.SSHD,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPGW_SSH", server.ssh_command("unauthorized"))
    monkeypatch.delenv("TCPGW_REMOTE_BIN", raising=False)
    started = time.monotonic()
    with pytest.raises((tcpgw.ConnectionClosedError, ConnectionError, OSError)) as failed:
        tcpgw.connect(server.url(gateway.path), keep=10_000).close()
    assert "255" in str(failed.value), failed.value
    assert time.monotonic() - started < 20




@pytest.mark.parametrize("seed", [5, 29])
def test_keep_over_real_ssh_survives_killed_ssh(gateway: GatewayProcess, ssh_env: sshd.SSHD,
                                                py_server: socket.socket, seed: int) -> None:
    rng = random.Random(seed)
    gw = tcpgw.connect(ssh_env.url(gateway.path), keep=30_000)
    try:
        conn, peer = pair(gw, py_server)
        down = random.Random(seed + 1).randbytes(1_200_000)
        up = bytearray()
        streamer = Streamer(peer, down, seed, max_chunk=40_000, poll=0.05)
        conn.resume()
        streamer.start()
        got = bytearray()
        kills = 0
        for i in range(60):
            chunk = rng.randbytes(rng.randint(1, 20_000))
            assert conn.send(chunk) == len(chunk)  # answered exactly once, with its own count
            up += chunk
            while True:
                event = conn.next_event(0)
                if event is None:
                    break
                assert event.name == "data"
                got += event.data or b""
            if i in (7, 23, 41):
                gw._transport.proc.kill()  # type: ignore[union-attr]
                kills += 1
        deadline = time.monotonic() + 60
        while len(got) < len(down) and time.monotonic() < deadline:
            event = conn.next_event(5)
            assert event is not None, f"no event after {len(got)} of {len(down)} bytes"
            assert event.name == "data"
            got += event.data or b""
        assert kills == 3
        assert hashlib.sha256(bytes(got)).hexdigest() == hashlib.sha256(down).hexdigest(), len(got)
        assert wait_until(lambda: len(streamer.got) >= len(up), 30, 0.05), (len(streamer.got), len(up))
        streamer.stop = True
        streamer.join(10)
        assert streamer.error is None, streamer.error
        assert hashlib.sha256(bytes(streamer.got)).hexdigest() == hashlib.sha256(bytes(up)).hexdigest()
        # Still the one session on the gateway, with its one handle.
        assert [h["handle"] for h in gw.list()] == [conn.handle]
        peer.close()
    finally:
        gw.close()
