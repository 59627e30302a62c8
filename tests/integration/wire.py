"""A tiny raw JSON-RPC 2.0 harness for driving the real tcpgw binary over its unix socket.

Deliberately independent of clients/python: the point of these tests is to check the
wire contract byte by byte, so this module only frames lines, tracks ids, separates
responses from notifications, and passes descriptors with SCM_RIGHTS.

The reader is synchronous (no thread): bytes are read only while a test waits for
something. That makes "the client stops reading its socket" trivially expressible
(the flow-control test simply does not call into the Wire for a while).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

Json = Any

# Error codes, as listed in schema/tcpgw.openrpc.json.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNKNOWN_HANDLE = -32000
WRONG_KIND = -32001
TIMED_OUT = -32002
DENIED = -32003
LIMIT = -32004
OS_FAILURE = -32005
FD_PASSING = -32006

READ_CHUNK = 1 << 18


class RPCError(Exception):
    """A JSON-RPC error answer, as received."""

    def __init__(self, code: int, message: str, data: Json = None, id: Json = None) -> None:
        super().__init__(f"RPC error {code}: {message!r} data={data!r} id={id!r}")
        self.code = code
        self.message = message
        self.data = data
        self.id = id


class WireClosed(AssertionError):
    """The gateway closed the unix connection while the test was waiting for something."""


@dataclass
class Message:
    """One line received from the gateway (a response, a batch answer or a notification)."""

    seq: int  # arrival order over the whole connection, shared by responses and events
    obj: Json
    fds: list[int] = field(default_factory=list)

    @property
    def method(self) -> Optional[str]:
        return self.obj.get("method") if isinstance(self.obj, dict) else None

    @property
    def params(self) -> Json:
        return self.obj.get("params") if isinstance(self.obj, dict) else None


def _is_notification(obj: Json) -> bool:
    return isinstance(obj, dict) and "method" in obj and "id" not in obj


class Wire:
    """One client connection to the gateway, speaking newline-delimited JSON-RPC 2.0."""

    def __init__(self, path: str, connect_timeout: float = 5.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(connect_timeout)
        self.sock.connect(path)
        self.sock.settimeout(10.0)  # bounds sendall when the gateway stops reading
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._buf = bytearray()
        self._buf_offset = 0  # stream offset of self._buf[0]
        self._prev_byte_newline = True  # the stream "so far" ends at a line boundary
        self._fds_at: dict[int, list[int]] = {}  # line start offset -> descriptors
        self.inbox: list[Message] = []  # responses and batch answers not yet claimed
        self.events: list[Message] = []  # notifications not yet claimed
        self.eof = False
        self.closed = False

    # ------------------------------------------------------------------ sending
    def send_raw(self, data: bytes | str) -> None:
        """Send bytes exactly as given (no newline added)."""
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_obj(self, obj: Json) -> None:
        """Send one JSON value as one line."""
        self.send_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def send_with_fds(self, data: bytes, fds: Sequence[int]) -> None:
        """Send one line with descriptors attached to its bytes (SCM_RIGHTS)."""
        sent = socket.send_fds(self.sock, [data], list(fds))
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def new_id(self) -> int:
        return next(self._ids)

    def request(self, method: str, params: Json = None, *, id: Json = None,
                fds: Optional[Sequence[int]] = None) -> Json:
        """Send a request; returns its id (allocated when not given)."""
        if id is None:
            id = self.new_id()
        msg: dict[str, Json] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:  # None = no "params" member at all
            msg["params"] = params
        line = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        if fds:
            self.send_with_fds(line, fds)
        else:
            self.send_raw(line)
        return id

    def notify(self, method: str, params: Json = None) -> None:
        msg: dict[str, Json] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send_obj(msg)

    # ------------------------------------------------------------------ receiving
    def _pump(self, timeout: float) -> bool:
        """Read at most one chunk, waiting up to `timeout` s. True if bytes arrived."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        data, fds, _flags, _addr = socket.recv_fds(self.sock, READ_CHUNK, 16)
        if not data:
            for fd in fds:
                os.close(fd)
            self.eof = True
            return False
        chunk_start = self._buf_offset + len(self._buf)
        if fds:
            # Linux delivers the descriptors with the recvmsg that ends at the skb they
            # were sent with; the gateway sends them with the first bytes of the answer's
            # line, so they belong to the last line that starts inside this chunk.
            starts = [chunk_start] if self._prev_byte_newline else []
            starts += [chunk_start + i + 1 for i, b in enumerate(data[:-1]) if b == 0x0A]
            if not starts:
                raise AssertionError(f"descriptors {fds} arrived in the middle of a line")
            self._fds_at.setdefault(starts[-1], []).extend(fds)
        self._buf += data
        self._prev_byte_newline = data.endswith(b"\n")
        self._split_lines()
        return True

    def _split_lines(self) -> None:
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return
            line = bytes(self._buf[:nl])
            start = self._buf_offset
            del self._buf[: nl + 1]
            self._buf_offset += nl + 1
            fds = self._fds_at.pop(start, [])
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AssertionError(f"gateway sent a line that is not JSON: {line[:200]!r}: {exc}")
            msg = Message(next(self._seq), obj, fds)
            (self.events if _is_notification(obj) else self.inbox).append(msg)

    def _wait(self, find: Callable[[], Optional[Message]], timeout: float, what: str) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            found = find()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"inbox={_short([m.obj for m in self.inbox][:5])} "
                                     f"events={_short([m.obj for m in self.events][-5:])}")
            if self.eof:
                raise WireClosed(f"gateway closed the connection while waiting for {what}")
            self._pump(min(left, 0.25))

    def reply(self, id: Json, timeout: float = 10.0) -> Message:
        """Wait for (and claim) the response with this id."""
        def find() -> Optional[Message]:
            for i, m in enumerate(self.inbox):
                if isinstance(m.obj, dict) and "id" in m.obj and m.obj["id"] == id \
                        and type(m.obj["id"]) is type(id):
                    return self.inbox.pop(i)
            return None
        return self._wait(find, timeout, f"response id={id!r}")

    def next_reply(self, timeout: float = 10.0) -> Message:
        """Wait for (and claim) the next non-notification line, whatever its id."""
        return self._wait(lambda: self.inbox.pop(0) if self.inbox else None, timeout, "any reply")

    def call_msg(self, method: str, params: Json = None, timeout: float = 10.0,
                 fds: Optional[Sequence[int]] = None) -> Message:
        return self.reply(self.request(method, params, fds=fds), timeout)

    def call(self, method: str, params: Json = None, timeout: float = 10.0,
             fds: Optional[Sequence[int]] = None) -> Json:
        """Request and wait; the result, or RPCError."""
        return result_of(self.call_msg(method, params, timeout, fds))

    def call_fds(self, method: str, params: Json = None, timeout: float = 10.0) -> tuple[Json, list[int]]:
        """Request and wait; (result, descriptors attached to the answer line)."""
        msg = self.call_msg(method, params, timeout)
        return result_of(msg), msg.fds

    def wait_event(self, method: str, handle: Optional[int] = None, timeout: float = 5.0,
                   pred: Optional[Callable[[Json], bool]] = None) -> Message:
        """Wait for (and claim) the first notification matching method / handle / pred."""
        def find() -> Optional[Message]:
            for i, m in enumerate(self.events):
                p = m.params if isinstance(m.params, dict) else {}
                if m.method == method and (handle is None or p.get("handle") == handle) \
                        and (pred is None or pred(p)):
                    return self.events.pop(i)
            return None
        return self._wait(find, timeout, f"event {method} handle={handle}")

    def events_for(self, handle: Optional[int] = None, method: Optional[str] = None) -> list[Message]:
        """Unclaimed notifications (not removed) about a handle and/or of a method."""
        out = []
        for m in self.events:
            p = m.params if isinstance(m.params, dict) else {}
            if (method is None or m.method == method) and (handle is None or p.get("handle") == handle):
                out.append(m)
        return out

    def drain(self, duration: float) -> None:
        """Read everything that arrives during `duration` seconds."""
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0 and not self.eof:
            self._pump(min(left, 0.1))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for m in self.inbox + self.events:
                for fd in m.fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.sock.close()

    # ------------------------------------------------------------------ helpers
    def recv_exact(self, handle: int, n: int, timeout_ms: int = 5000) -> bytes:
        """tcp.recv in a loop until exactly n bytes arrived (fails on EOF first)."""
        out = b""
        deadline = time.monotonic() + timeout_ms / 1000 + 5
        while len(out) < n:
            assert time.monotonic() < deadline, f"recv_exact: only {len(out)}/{n} bytes"
            r = self.call("tcp.recv", {"handle": handle, "length": n - len(out), "timeout": timeout_ms},
                          timeout=timeout_ms / 1000 + 5)
            assert not r["eof"], f"unexpected eof after {out!r}"
            out += decode(r)
        return out

    def collect_data(self, handle: int, n: int, timeout: float = 5.0) -> bytes:
        """Claim tcp.onData events for a handle until n bytes arrived."""
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < n:
            m = self.wait_event("tcp.onData", handle, timeout=max(0.01, deadline - time.monotonic()))
            out += decode(m.params)
        return out


def _short(v: Json, limit: int = 600) -> str:
    """Failure messages must stay readable even when events carry megabytes of data."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"...<{len(text) - limit} more chars>"


def result_of(msg: Message) -> Json:
    obj = msg.obj
    assert isinstance(obj, dict), f"expected a single response, got {obj!r}"
    assert obj.get("jsonrpc") == "2.0", f"response without jsonrpc 2.0: {obj!r}"
    if "error" in obj:
        assert "result" not in obj, f"response with both result and error: {obj!r}"
        err = obj["error"]
        assert isinstance(err, dict) and isinstance(err.get("code"), int) \
            and isinstance(err.get("message"), str), f"malformed error object: {obj!r}"
        raise RPCError(err["code"], err["message"], err.get("data"), obj.get("id"))
    assert "result" in obj, f"response with neither result nor error: {obj!r}"
    return obj["result"]


def decode(r: Json) -> bytes:
    """Bytes of a {data, encoding} object (recv answers, onData params, flyAway buffered)."""
    enc = r.get("encoding", "base64")
    data = r["data"] if "data" in r else r["buffered"]
    if enc == "base64":
        return base64.b64decode(data, validate=True)
    if enc == "hex":
        return bytes.fromhex(data)
    if enc == "utf8":
        return data.encode("utf-8")
    raise AssertionError(f"unknown encoding {enc!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def domain_of(addr: str) -> int:
    return 10 if ":" in addr else 2


def sockaddr(addr: str, port: int) -> dict[str, Json]:
    return {"addr": addr, "port": port}


def close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
