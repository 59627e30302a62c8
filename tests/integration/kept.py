"""The client side of resumable sessions (contract §12) over raw Unix sockets, and a relay the
tests can cut, for tests/integration/test_sessions.py.

`KeptClient` counts lines both ways exactly as the contract says: after the `session.keep`
answer every gateway line is numbered; after the `session.keep` request every line the client
writes is numbered and kept, so that after `session.resume` it can resend what the gateway had
not read. Dropping the connection abandons whatever was in flight on it: a partial line the
client had written, lines the gateway had queued.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Optional

Json = Any


class Dropped(Exception):
    """The connection went away while the client was using it."""


def hard_close(s: socket.socket) -> None:
    """Close with SO_LINGER 0 (a reset), as a link that dies does."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


class KeptClient:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: Optional[socket.socket] = None
        self.buf = b""
        self.token: Optional[str] = None
        self.grace: Optional[int] = None
        self.sent: list[bytes] = []  # counted lines written since session.keep; line n is sent[n-1]
        self.received = 0  # counted gateway lines read
        self.messages: list[Json] = []  # every counted gateway line, parsed, in order
        self.next_id = 1
        self.drops = 0

    # -------------------------------------------------------------------------- connection
    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5.0)
        s.connect(self.path)
        return s

    def keep(self, grace: Optional[int] = None) -> Json:
        """Connects (if needed) and sends session.keep; counting starts with its answer."""
        if self.sock is None:
            self.sock = self.connect()
        params = {} if grace is None else {"grace": grace}
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": "keep", "method": "session.keep", "params": params}).encode() + b"\n")
        answer = self._first_line(self.sock)
        assert "result" in answer, answer
        self.token = answer["result"]["token"]
        self.grace = answer["result"]["grace"]
        return answer["result"]

    def drop(self, partial: Optional[bytes] = None) -> None:
        """The link dies, optionally just after the client wrote part of a line."""
        if self.sock is None:
            return
        if partial:
            try:
                self.sock.sendall(partial)
            except OSError:
                pass
        hard_close(self.sock)
        self.sock = None
        self.buf = b""  # a line cut off comes again whole in the replay
        self.drops += 1

    def resume(self, token: Optional[str] = None, received: Optional[int] = None) -> Json:
        """A new connection whose first line is session.resume; resends the lines after M."""
        s = self.connect()
        line = {"jsonrpc": "2.0", "id": "resume", "method": "session.resume",
                "params": {"token": token or self.token, "received": self.received if received is None else received}}
        s.sendall(json.dumps(line).encode() + b"\n")
        kept_buf, self.buf = self.buf, b""
        answer = self._first_line(s)
        if "error" in answer:
            s.close()
            self.buf = kept_buf
            return answer
        old = self.sock
        self.sock = s
        if old is not None:
            old.close()  # taken over: the gateway closed it; what it had unread is replayed
        m = answer["result"]["received"]
        assert 0 <= m <= len(self.sent), (m, len(self.sent))
        for line_bytes in self.sent[m:]:
            self._write(line_bytes)
        return answer

    def _first_line(self, s: socket.socket) -> Json:
        """The one uncounted answer a keep or resume gets; the lines after it are counted."""
        deadline = time.monotonic() + 10
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError("no answer line")
            chunk = s.recv(1 << 16)
            if not chunk:
                raise Dropped("closed before answering")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self._take_lines()
        return json.loads(line)

    def _take_lines(self) -> None:
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.received += 1
            self.messages.append(json.loads(line))

    def _read_some(self) -> bool:
        """One read; False when the connection is gone (then it is dropped)."""
        assert self.sock is not None
        try:
            chunk = self.sock.recv(1 << 18)
        except (BlockingIOError, socket.timeout):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.drop()
            return False
        self.buf += chunk
        self._take_lines()
        return True

    def _write(self, data: bytes) -> None:
        """Writes `data` whole, reading meanwhile (so neither side waits on the other); on a
        connection that is gone the rest is left for the resend after the resume."""
        view = memoryview(data)
        deadline = time.monotonic() + 30
        while view and self.sock is not None:
            assert time.monotonic() < deadline, "the gateway took nothing for 30 s"
            r, w, _ = select.select([self.sock], [self.sock], [], 1.0)
            if w:
                try:
                    view = view[self.sock.send(view):]
                except (BlockingIOError, socket.timeout):
                    pass
                except OSError:
                    self.drop()
                    return
            if r and view and not self._read_some():
                return

    # -------------------------------------------------------------------------- lines
    def send(self, obj: Json) -> None:
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.sent.append(line)
        self._write(line)

    def request(self, method: str, params: Json = None) -> int:
        rid = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params if params is not None else {}})
        return rid

    def notify(self, method: str, params: Json) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def ack(self) -> None:
        self.notify("session.ack", {"received": self.received})

    def pump(self, timeout: float) -> bool:
        """Reads what is there within `timeout`; False when the connection is gone."""
        if self.sock is None:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout)
        return self._read_some() if r else True

    def answer(self, rid: Json) -> Optional[Json]:
        for m in self.messages:
            if isinstance(m, dict) and m.get("id") == rid and "method" not in m:
                return m
        return None

    def wait(self, rid: Json, timeout: float = 10.0) -> Json:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.answer(rid)
            if found is not None:
                return found
            if not self.pump(0.05):
                raise Dropped(f"connection gone while waiting for {rid}")
        raise AssertionError(f"no answer to {rid} within {timeout}s")

    def call(self, method: str, params: Json = None, timeout: float = 10.0) -> Json:
        m = self.wait(self.request(method, params), timeout)
        if "error" in m:
            raise AssertionError(f"{method} failed: {m['error']}")
        return m["result"]


class Relay:
    """A Unix-socket relay between a client and the gateway that the test can cut: every pair
    it carries is closed at once, as a dying SSH link would. A thread per direction, so one
    side that does not read (backpressure) never stalls the other pairs or the cutting."""

    def __init__(self, listen_path: str, target_path: str) -> None:
        self.listen_path = listen_path
        self.target_path = target_path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(listen_path)
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.cuts = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accepting, daemon=True)
        self.thread.start()

    def _accepting(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.append(pair)
            for a, b in [(client, upstream), (upstream, client)]:
                threading.Thread(target=self._pump, args=(pair, a, b), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket], src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        self._close_pair(pair)

    def _close_pair(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self.lock:
            if pair not in self.pairs:
                return
            self.pairs.remove(pair)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the pump threads blocked on it
            except OSError:
                pass
            hard_close(s)

    def cut(self) -> int:
        """Closes every pair now carried; returns how many."""
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._close_pair(pair)
        self.cuts += 1
        return len(pairs)

    def carried(self) -> int:
        with self.lock:
            return len(self.pairs)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.cut()
        self.server.close()
