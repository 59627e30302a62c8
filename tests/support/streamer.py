"""A loopback peer for the tests that cut links: it writes a payload in seeded chunks while
reading whatever comes back, so both directions flow at once (used by the ssh:// tests of the
gateway and of the Python client)."""
from __future__ import annotations

import random
import socket
import threading
from typing import Optional


class Streamer(threading.Thread):
    """Writes `payload` to `sock` in seeded chunks of 1..`max_chunk` bytes while collecting what
    comes back in `got`, until the peer's end of stream or `stop`; an exception is kept in
    `error` for the test to report."""

    def __init__(self, sock: socket.socket, payload: bytes, seed: int, *, max_chunk: int = 30_000,
                 poll: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.sock, self.payload, self.rng = sock, payload, random.Random(seed)
        self.max_chunk, self.poll = max_chunk, poll
        self.got = bytearray()
        self.stop = False
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            offset = 0
            self.sock.settimeout(self.poll)
            while not self.stop:
                if offset < len(self.payload):
                    n = self.rng.randint(1, self.max_chunk)
                    self.sock.sendall(self.payload[offset:offset + n])
                    offset += n
                try:
                    chunk = self.sock.recv(1 << 16)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                self.got += chunk
        except BaseException as e:  # the test reports it
            self.error = e
