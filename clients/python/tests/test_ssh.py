"""ssh:// gateway addresses, through a local stand-in for ssh (``$TCPGW_SSH``) that runs the
remote command here: ``tcpgw bridge --socket PATH`` against the test's gateway. The stand-in
logs the arguments it was given, so the ssh command line is checked too.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

import tcpgw
import tcpgw.aio
from conftest import FakeSsh, GatewayProcess, recv_exactly, wait_until


def ssh_url(gateway: GatewayProcess, user_host: str = "rig@gw.invalid:2222") -> str:
    return f"ssh://{user_host}{gateway.path}"


def test_ssh_round_trip_and_command_line(gateway: GatewayProcess, fake_ssh: FakeSsh, gateway_bin: str,
                                         py_server: socket.socket) -> None:
    with tcpgw.connect(ssh_url(gateway)) as gw:
        assert gw.path == ssh_url(gateway)
        conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
        peer, _ = py_server.accept()
        with peer:
            assert conn.send(b"over ssh") == 8
            assert recv_exactly(peer, 8) == b"over ssh"
            peer.sendall(b"and back")
            assert conn.recv(8, 5000) == b"and back"
        assert [h["handle"] for h in gw.list()] == [conn.handle]
    runs = fake_ssh.runs()
    assert runs == [f"-T -o BatchMode=yes -p 2222 -l rig gw.invalid -- {gateway_bin} bridge --socket {gateway.path}"]


def test_ssh_refuses_descriptor_passing_before_sending(gateway: GatewayProcess, fake_ssh: FakeSsh,
                                                       py_server: socket.socket) -> None:
    with tcpgw.connect(ssh_url(gateway)) as gw:
        conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
        peer, _ = py_server.accept()
        with pytest.raises(tcpgw.DescriptorError, match="ssh://"):
            conn.flyAway()
        with socket.socket() as mine, pytest.raises(tcpgw.DescriptorError, match="tcp.createByFd"):
            gw.createByFd(mine)
        # nothing was sent: the handle is still the gateway's and works
        assert not conn.closed
        peer.sendall(b"still here")
        assert conn.recv(10, 5000) == b"still here"
        assert len(gw.list()) == 1
        peer.close()


def test_ssh_that_fails_is_a_clear_closed_connection(gateway: GatewayProcess, fake_ssh: FakeSsh, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    failing = tmp_path / "failing-ssh"
    failing.write_text("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n")
    failing.chmod(0o755)
    monkeypatch.setenv("TCPGW_SSH", str(failing))
    gw = tcpgw.connect(ssh_url(gateway))
    with pytest.raises(tcpgw.ConnectionClosedError, match="status 255"):
        gw.info()
    assert wait_until(lambda: gw.closed)  # the reader sees the end too
    gw.close()


@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_ssh_that_fails_with_keep_says_why(gateway: GatewayProcess, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    """keep= reads the session.keep answer while connecting: an ssh that fails then is a
    ConnectionClosedError naming its exit status, in both flavours (not a bare EOFError)."""
    failing = tmp_path / "failing-ssh"
    failing.write_text("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n")
    failing.chmod(0o755)
    monkeypatch.setenv("TCPGW_SSH", str(failing))
    with pytest.raises(tcpgw.ConnectionClosedError, match="status 255"):
        if flavour == "sync":
            tcpgw.connect(ssh_url(gateway), keep=5000).close()
        else:
            async def attempt() -> None:
                gw = await tcpgw.aio.connect(ssh_url(gateway), keep=5000)
                await gw.close()
            asyncio.run(attempt())


def test_ssh_remote_socket_that_does_not_exist(gateway: GatewayProcess, fake_ssh: FakeSsh) -> None:
    gw = tcpgw.connect(f"ssh://gw.invalid{gateway.path}.missing")
    with pytest.raises(tcpgw.ConnectionClosedError):
        gw.info()
    gw.close()


def test_ssh_close_ends_the_child(gateway: GatewayProcess, fake_ssh: FakeSsh) -> None:
    threads_before = threading.active_count()
    gw = tcpgw.connect(ssh_url(gateway))
    gw.createServer(("127.0.0.1", 0))
    proc = gw._transport.proc  # type: ignore[union-attr]
    gw.close()
    assert proc.poll() is not None
    assert threading.active_count() == threads_before


def test_aio_over_ssh(gateway: GatewayProcess, fake_ssh: FakeSsh, py_server: socket.socket) -> None:
    async def main() -> None:
        async with await tcpgw.aio.connect(ssh_url(gateway, "gw.invalid")) as gw:
            conn = await gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
            peer, _ = py_server.accept()
            with peer:
                await conn.send(b"x" * 100_000)
                assert recv_exactly(peer, 100_000) == b"x" * 100_000
                peer.sendall(b"aio back")
                assert await conn.recv(8, 5000) == b"aio back"
                with pytest.raises(tcpgw.DescriptorError):
                    await conn.flyAway()
                assert await conn.pending() == 0

    asyncio.run(asyncio.wait_for(main(), 20))
    assert fake_ssh.runs()[0].startswith("-T -o BatchMode=yes gw.invalid -- ")


def test_bad_ssh_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="ssh://"):
        tcpgw.connect("ssh://bad host/x")
