"""Hardening: the socket file's owner, a start that never hangs, policy escapes through
mapped, unspecified and dual-stack addresses and adopted sockets, and small input holes
(contract §1, §8, §9, §13)."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from typing import Optional

import pytest

from conftest import (Gateway, GatewayFactory, can_connect_unix, closed_port, port_of, py_connect, py_listener,
                      require_binary, short_tmpdir)
from wire import DENIED, INVALID_PARAMS, LIMIT, RPCError, Wire, close_fds


def rpc_error(w: Wire, method: str, params: object, fds: Optional[list[int]] = None) -> RPCError:
    try:
        result = w.call(method, params, fds=fds)
    except RPCError as e:
        return e
    raise AssertionError(f"{method} {params!r} succeeded ({result!r}); an error was expected")


def write_policy(gwf: GatewayFactory, policy: object) -> str:
    path = os.path.join(gwf.tmpdir(), "policy.json")
    with open(path, "w") as f:
        f.write(policy if isinstance(policy, str) else json.dumps(policy))
    return path


def with_policy(gwf: GatewayFactory, policy: dict, *args: str) -> Gateway:
    return gwf("--policy", write_policy(gwf, policy), *args)


def serve_expecting_failure(args: list[str], timeout: float = 10.0,
                            pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """`tcpgw serve ARGS` must exit on its own (non-zero) within `timeout` seconds."""
    try:
        r = subprocess.run([require_binary(), "serve", *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tcpgw serve {args} still running after {timeout}s")
    assert r.returncode != 0, f"tcpgw serve {args} started: {r.stderr}"
    return r


def free_port_run(addr: str, count: int) -> int:
    """A port P such that P..P+count-1 can all be listened on right now on `addr` (bounded
    search). Below the ephemeral range, and checked with SO_REUSEADDR as the gateway binds:
    other tests' connections use ephemeral ports as their local ports."""
    import random
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(50):
        base = random.randrange(20000, 30000)
        held = []
        try:
            for p in range(base, base + count):
                s = socket.socket(fam, socket.SOCK_STREAM)
                held.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, p))
                s.listen(1)
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no run of free ports found")


# ------------------------------------------------------------------ the socket file (§1, §9, §13)
def test_stopping_gateway_leaves_its_successors_socket_file(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "gw.sock")
    first = start_gateway(socket_path=path)
    os.unlink(path)  # replaced by hand, as a second deployment would
    second = start_gateway(socket_path=path)
    inode = os.lstat(path).st_ino
    assert first.signal_and_wait(signal.SIGTERM) == 0, first.log()
    assert os.path.exists(path), "the first gateway deleted its successor's socket file"
    assert os.lstat(path).st_ino == inode
    assert second.connect().call("gateway.info")["pid"] == second.pid
    # The successor still removes its own file when it stops.
    assert second.signal_and_wait(signal.SIGTERM) == 0, second.log()
    assert not os.path.exists(path)


def test_start_on_a_busy_live_listener_is_refused_at_once() -> None:
    d = short_tmpdir()
    path = os.path.join(d, "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        listener.bind(path)
        listener.listen(0)
        # Fill the backlog: non-blocking connects until the kernel says "try again".
        for _ in range(64):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            clients.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        else:
            pytest.fail("the backlog never filled")
        inode = os.lstat(path).st_ino
        started = time.monotonic()
        r = serve_expecting_failure(["--socket", path], timeout=10)
        took = time.monotonic() - started
        assert took < 5, f"start took {took:.1f}s"
        assert path in r.stderr and "listening" in r.stderr, r.stderr
        assert os.lstat(path).st_ino == inode, "the live listener's file was replaced"
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        for c in clients:
            c.close()
        listener.close()
        import shutil
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("path, fragment", [
    ("", "the socket path is empty"),
    ("/tmp/" + "x" * 103, "at most 107 bytes"),
], ids=["empty", "too-long"])
def test_unusable_socket_path_is_a_clear_start_error(path: str, fragment: str) -> None:
    r = serve_expecting_failure(["--socket", path])
    assert fragment in r.stderr, r.stderr
    if path:
        assert not os.path.exists(path)


def test_socket_path_of_107_bytes_works(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    path = os.path.join(d, "s" * (107 - len(d) - 1))
    assert len(path.encode()) == 107
    gw = start_gateway(socket_path=path)
    assert gw.connect().call("gateway.info")["socket"] == path


