"""Shared pieces of the tcp.pipe / tcp.attach tests: loopback peers under gateway handles,
bulk transfers both ways at once with checksums, and waiting for a peer's end of stream."""
from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
from typing import Iterator, Optional

import pytest

from conftest import GatewayFactory, py_listener
from wire import Wire

MiB = 1 << 20


# Fixtures the relay modules import (pytest finds them by name in the importing module).
@pytest.fixture(params=["splice", "copy"])
def wire(request: pytest.FixtureRequest, start_gateway: GatewayFactory) -> Wire:
    """A client of a gateway in each relay mode: splice, and the copy mode faults use."""
    return start_gateway("--relay-mode", request.param).connect()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = py_listener("127.0.0.1")
    yield s
    s.close()


def connected_handle(wire: Wire, listener: socket.socket, flowing: bool = False) -> tuple[int, socket.socket]:
    """A gateway connection handle to `listener` and the Python socket at its other end."""
    addr, port = listener.getsockname()[:2]
    params = {"sockaddr": {"addr": addr, "port": port}}
    if flowing:
        params["async"] = True
        handle = wire.call("tcp.createClient", params)["handle"]
        wire.wait_event("tcp.onConnect", handle)
    else:
        handle = wire.call("tcp.createClient", params)["handle"]
    peer, _ = listener.accept()
    peer.settimeout(30.0)
    return handle, peer


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Pump:
    """Sends `data` on `sock` (then shuts its writing side when `shut`) while reading
    everything that arrives until end of stream, in two threads; join() gives the digest of
    what was read, its length, and any socket error either thread met."""

    def __init__(self, sock: socket.socket, data: bytes, shut: bool = True) -> None:
        self.sock = sock
        self.data = data
        self.shut = shut
        self.received = hashlib.sha256()
        self.count = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        try:
            view = memoryview(self.data)
            for offset in range(0, len(view), 1 << 18):
                self.sock.sendall(view[offset:offset + (1 << 18)])
            if self.shut:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(e)

    def _recv(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(1 << 18)
                if not chunk:
                    return
                self.received.update(chunk)
                self.count += len(chunk)
        except OSError as e:
            self.errors.append(e)

    def join(self, timeout: float = 120.0) -> tuple[str, int, list[BaseException]]:
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"transfer did not finish within {timeout}s ({self.count} bytes read)"
        return self.received.hexdigest(), self.count, self.errors


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the other end gets a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_to_end(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, Optional[BaseException]]:
    """Everything until EOF, and the error that ended it instead, if any."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out, None
            out += chunk
    except OSError as e:
        return out, e
