"""I/O-free core shared by the threaded and the asyncio client.

It frames lines, matches answers to requests, turns notifications into per-handle
:class:`Event` queues, pairs descriptors received with SCM_RIGHTS with the
``tcp.flyAway`` answers they belong to, and encodes/decodes the ``data`` members.
Callers hold their own lock around every method of :class:`Session`.
"""
from __future__ import annotations

import base64
import binascii
import collections
import inspect
import itertools
import json
import os
import socket
from typing import (
    Any,
    TYPE_CHECKING,
    Callable,
    Deque,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _generated as gen
from ._errors import ProtocolError, RPCError
from ._types import ErrorObject, SockAddr, expect_sockaddr

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Reads: big enough for a full default recv answer in few reads; descriptors: one per
# flyAway answer, and a few lines may share a read.
READ_SIZE = 256 * 1024
MAX_FDS_PER_READ = 16

#: What :meth:`Tcp.send` accepts: text (sent as UTF-8), bytes-like, or a list of them (gathered).
Chunk = Union[str, bytes, bytearray, memoryview]
SendData = Union[Chunk, Sequence[Chunk]]
#: What ``createServer``/``createClient`` accept as an address: a sockaddr mapping (what
#: :func:`sockaddr` returns) or a tuple as Python's socket module uses (IPv4 or IPv6 form).
AddressLike = Union[Mapping[str, Any], Tuple[str, int], Tuple[str, int, int, int]]
#: A listener; its arguments depend on the event (see :meth:`Event.listener_args`), and what
#: it returns is only looked at for being awaitable (the asyncio client runs it as a task).
Listener = Callable[..., object]
_F = TypeVar("_F", bound=Callable[..., Any])


def default_socket_path() -> str:
    """The gateway's default socket path, chosen exactly as the server chooses it.

    ``$TCPGW_SOCKET``, else ``$XDG_RUNTIME_DIR/tcpgw.sock``, else ``/tmp/tcpgw-<uid>.sock``.
    """
    explicit = os.environ.get("TCPGW_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "tcpgw.sock")
    return f"/tmp/tcpgw-{os.getuid()}.sock"


def sockaddr(addr: str, port: int, domain: Optional[int] = None) -> SockAddr:
    """Build a sockaddr object, like the seed's ``Tcp.sockaddr(addr, port)``.

    ``addr`` is an address literal or, for ``createClient`` and ``createServer``, a host name
    (the gateway resolves it; the answer's ``host`` repeats it, ``remote``/``local`` are numeric).

    ``domain`` (``AF_INET`` or ``AF_INET6``) may be left out: the gateway infers it from ``addr``.
    """
    result: SockAddr = {"addr": addr, "port": port}
    if domain is not None:
        result["domain"] = domain
    return result


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One JSON-RPC message as a newline-terminated line (ASCII-only, so never a raw newline inside)."""
    return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"


def _as_bytes(chunk: Chunk) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"send data must be str, bytes, bytearray or memoryview, not {type(chunk).__name__}")


def encode_send_data(data: SendData) -> Tuple[Union[str, List[str]], str]:
    """Wire form of ``data`` for ``tcp.send``: (data member, encoding).

    Text stays text (``utf8``, the wire default) so it is readable in traces; anything
    containing bytes travels as base64. A list is sent as a list (the gateway gathers it);
    a list mixing text and bytes is sent all-base64, text encoded as UTF-8.
    """
    if isinstance(data, str):
        return data, "utf8"
    if isinstance(data, (bytes, bytearray, memoryview)):
        return base64.b64encode(data).decode("ascii"), "base64"
    if isinstance(data, (list, tuple)):
        items = list(data)
        if items and all(isinstance(item, str) for item in items):
            return [str(item) for item in items], "utf8"
        return [base64.b64encode(_as_bytes(item)).decode("ascii") for item in items], "base64"
    raise TypeError(
        "send data must be str, bytes, bytearray, memoryview or a list of them, "
        f"not {type(data).__name__}"
    )


def decode_data(text: Any, encoding: Any) -> bytes:
    """Bytes of a ``data`` member received with the given ``encoding``."""
    if not isinstance(text, str):
        raise ProtocolError(f"'data' must be a string, got {type(text).__name__}")
    try:
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
        if encoding == "hex":
            return bytes.fromhex(text)
        if encoding == "utf8":
            return text.encode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"bad {encoding} data from the gateway: {exc}") from exc
    raise ProtocolError(f"unknown encoding {encoding!r} from the gateway")


def schema_doc(method: str) -> Callable[[_F], _F]:
    """Decorator: append the schema's text for ``method`` to a hand-written method's docstring."""

    def apply(fn: _F) -> _F:
        own = inspect.cleandoc(fn.__doc__ or "")
        schema_text = gen.METHOD_DOCS.get(method, "")
        fn.__doc__ = f"{own}\n\nGateway method ``{method}``: {schema_text}".strip()
        return fn

    return apply


def normalize_sockaddr(addr: AddressLike) -> Mapping[str, Any]:
    """Accept a sockaddr mapping, or an ``(addr, port)`` tuple as Python's socket module uses."""
    if isinstance(addr, Mapping):
        return addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        return sockaddr(addr[0], addr[1])
    raise TypeError(f"sockaddr must be a mapping like tcpgw.sockaddr() returns, not {type(addr).__name__}")


def send_params(
    data: SendData,
    args: Tuple[Any, ...],
    offset: Optional[int],
    length: Optional[int],
    timeout: Optional[int],
) -> Dict[str, Any]:
    """Params of ``tcp.send`` from the seed's argument forms.

    As in the seed, ``send(string[, timeout])`` and ``send(array[, timeout])`` take the
    timeout second, while ``send(buffer[, offset[, length[, timeout]]])`` takes offset and
    length first. Keywords work for every form.
    """
    if args:
        if isinstance(data, (str, list, tuple)):
            names: Tuple[str, ...] = ("timeout",)
        else:
            names = ("offset", "length", "timeout")
        if len(args) > len(names):
            raise TypeError(f"send() takes at most {len(names) + 1} positional arguments for this data type")
        given = {"offset": offset, "length": length, "timeout": timeout}
        for name, value in zip(names, args):
            if given[name] is not None:
                raise TypeError(f"send() got multiple values for argument {name!r}")
            given[name] = value
        offset, length, timeout = given["offset"], given["length"], given["timeout"]
    wire_data, encoding = encode_send_data(data)
    params: Dict[str, Any] = {"data": wire_data, "encoding": encoding}
    if offset is not None:
        params["offset"] = offset
    if length is not None:
        params["length"] = length
    if timeout is not None:
        params["timeout"] = timeout
    return params


def recv_result(result: Any) -> Tuple[bytes, bool]:
    """(bytes, eof) of a ``tcp.recv`` answer."""
    if not isinstance(result, Mapping):
        raise ProtocolError(f"recv answered {result!r}")
    return decode_data(result.get("data"), result.get("encoding")), bool(result.get("eof"))


def recv_window(buffer: WriteableBuffer, offset: int, length: Optional[int]) -> Tuple[memoryview, int]:
    """For ``recv_into``: a byte view of ``buffer`` and how many bytes to receive at ``offset``.

    ``length`` defaults to the rest of the buffer; a window outside it is a ``ValueError``.
    """
    view = memoryview(buffer).cast("B")
    if offset < 0 or offset > len(view):
        raise ValueError(f"offset {offset} outside the buffer (size {len(view)})")
    room = len(view) - offset
    want = room if length is None else length
    if want < 0 or want > room:
        raise ValueError(f"length {want} does not fit the buffer after offset {offset} ({room} bytes)")
    return view, want


def recvfrom_result(result: Any) -> Tuple[bytes, Optional[SockAddr]]:
    """(bytes, peer address or ``None``) of a ``tcp.recvfrom`` answer."""
    data, _eof = recv_result(result)
    remote = result.get("remote")
    return data, None if remote is None else expect_sockaddr("tcp.recvfrom", remote)


def state_from_result(result: Any) -> int:
    """The state of a ``tcp.getState`` answer: a :class:`TcpState`, or the bare number if unknown."""
    number = result["state"] if isinstance(result, Mapping) else result
    try:
        return gen.TcpState(number)
    except ValueError:
        return int(number)


def errno_from_result(result: Any) -> int:
    """The error number of a ``tcp.error`` answer (``0`` if none)."""
    return int(result.get("errnoNumber", 0) if isinstance(result, Mapping) else result)


def descriptor_of(sock: Union[int, socket.socket]) -> int:
    """The descriptor number ``createByFd`` sends: of a socket object, or the number given."""
    fd = sock.fileno() if isinstance(sock, socket.socket) else int(sock)
    if fd < 0:
        raise ValueError("createByFd needs an open descriptor")
    return fd


def drop_none(**params: Any) -> Dict[str, Any]:
    """Params without the ones left at ``None`` (absent means the gateway's default)."""
    return {name: value for name, value in params.items() if value is not None}


def error_from_json(error: Any) -> RPCError:
    """The exception for a JSON-RPC error object, of the class its code maps to."""
    if not isinstance(error, Mapping):
        return RPCError(-32603, f"malformed error object: {error!r}")
    code = error.get("code")
    message = error.get("message")
    if not isinstance(code, int):
        code = -32603
    if not isinstance(message, str):
        message = "(no message)"
    cls = gen.ERROR_CLASSES.get(code, RPCError)
    return cls(code, message, error.get("data"))


class Event:
    """One notification from the gateway about a handle.

    Attributes:
        name: ``"data"``, ``"end"``, ``"close"``, ``"accept"``, ``"connect"`` (or the
            notification's own name for notifications this client does not know).
        handle: the Tcp object the event is about (the server, for ``"accept"``).
        data: the received bytes (``"data"``).
        client: the new connection's Tcp object (``"accept"``).
        remote: the peer's address (``"accept"``, successful ``"connect"``).
        error: the error object (``"close"`` after an error, failed ``"connect"``).
        params: the notification's raw params.
    """

    __slots__ = ("name", "handle", "data", "client", "remote", "error", "params", "seq")

    def __init__(
        self,
        name: str,
        handle: Any,
        params: Mapping[str, Any],
        seq: int,
        data: Optional[bytes] = None,
        client: Any = None,
        remote: Optional[SockAddr] = None,
        error: Optional[ErrorObject] = None,
    ) -> None:
        self.name = name
        self.handle = handle
        self.params = params
        self.seq = seq
        self.data = data
        self.client = client
        self.remote = remote
        self.error = error

    def listener_args(self) -> Tuple[Any, ...]:
        """Arguments a listener for this event receives (see :meth:`Tcp.on`)."""
        if self.name == "data":
            return (self.data,)
        if self.name == "end":
            return ()
        if self.name == "close":
            return (self.error,)
        if self.name == "accept":
            return (self.client, self.remote)
        if self.name == "connect":
            return (self.handle, self.remote)
        return (self,)

    def __repr__(self) -> str:
        fields = [f"name={self.name!r}", f"handle={getattr(self.handle, 'handle', None)!r}"]
        if self.data is not None:
            fields.append(f"data={self.data[:32]!r}{'...' if len(self.data) > 32 else ''}")
        if self.client is not None:
            fields.append(f"client={self.client.handle!r}")
        if self.remote is not None:
            fields.append(f"remote={self.remote!r}")
        if self.error is not None:
            fields.append(f"error={self.error!r}")
        return f"Event({', '.join(fields)})"


class HandleState:
    """Client-side state of one handle: its event queue and listeners.

    Events wait in ``queue`` until a listener for their name exists (or an event iterator
    takes them); events of one name are delivered in arrival order.
    """

    def __init__(self) -> None:
        self.queue: Deque[Event] = collections.deque()
        self.listeners: Dict[str, List[Tuple[Listener, bool]]] = {}
        self.gone = False  # closed, flown away, or reported closed by the gateway

    def add_listener(self, name: str, fn: Listener, once: bool) -> None:
        if not callable(fn):
            raise TypeError("listener must be callable")
        self.listeners.setdefault(name, []).append((fn, once))

    def remove_listener(self, name: str, fn: Listener) -> bool:
        entries = self.listeners.get(name, [])
        for index, (candidate, _once) in enumerate(entries):
            if candidate == fn:
                del entries[index]
                return True
        return False

    def first_deliverable(self) -> Optional[Event]:
        for event in self.queue:
            if self.listeners.get(event.name):
                return event
        return None

    def take(self, event: Event) -> List[Listener]:
        """Remove ``event`` from the queue and return the listeners to call (dropping once-listeners)."""
        self.queue.remove(event)
        entries = self.listeners.get(event.name, [])
        fns = [fn for fn, _once in entries]
        self.listeners[event.name] = [(fn, once) for fn, once in entries if not once]
        return fns


# Creation methods whose successful answer carries a new handle, with the kind it has.
_CREATES: Dict[str, Optional[str]] = {
    "tcp.createServer": "server",
    "tcp.createClient": "connection",
    "tcp.accept": "connection",
    "tcp.createByFd": None,  # the answer says which
}


class HandleObject(Protocol):
    """What :class:`Session` needs of a flavour's Tcp object (``tcpgw.Tcp``, ``tcpgw.aio.Tcp``)."""

    handle: int
    kind: str
    local: Optional[SockAddr]
    remote: Optional[SockAddr]
    host: Optional[str]
    connect_error: Optional[ErrorObject]
    _state: HandleState


#: The Tcp class of the flavour in use.
H = TypeVar("H", bound=HandleObject)
#: What a caller waits on for its answer (a thread's slot, an asyncio future).
T = TypeVar("T")


class Pending(Generic[T]):
    """A request waiting for its answer."""

    __slots__ = ("method", "token", "handle")

    def __init__(self, method: str, token: Optional[T], handle: Optional[int]) -> None:
        self.method = method
        self.token = token  # None once the caller stopped waiting
        self.handle = handle  # the handle the request is about, if any


class Answer(Generic[H]):
    """An answer matched to its request: ``ok`` with ``value`` or an ``error`` exception.

    For creation methods ``handle_obj`` is the new handle's object (registered before any
    event about it can be processed); for ``tcp.flyAway`` ``fd`` is the received descriptor.
    """

    __slots__ = ("value", "error", "handle_obj", "fd")

    def __init__(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value = value  # the decoded JSON result, as the schema describes it
        self.error = error
        self.handle_obj: Optional[H] = None
        self.fd: Optional[int] = None

    def new_handle(self, method: str) -> H:
        """The handle object a successful creation answer made (``method`` names it in errors)."""
        if self.handle_obj is None:
            raise ProtocolError(f"{method} answered {self.value!r}, which has no handle")
        return self.handle_obj


class Session(Generic[H, T]):
    """Request ids, pending answers, the handle registry and event routing for one connection.

    ``factory(handle, kind)`` makes the Tcp object (an ``H``) of the flavour in use; each
    request carries a token (a ``T``) that :meth:`feed` hands back with its answer.
    """

    def __init__(self, factory: Callable[[int, str], H]) -> None:
        self._factory = factory
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self.pending: Dict[int, Pending[T]] = {}
        self.handles: Dict[int, H] = {}
        self._buffer = bytearray()
        self._fds: Deque[int] = collections.deque()
        #: Handles with queued events (an ordered set).
        self.ready: Dict[H, None] = {}
        #: Errors answered with a null id (e.g. a line over the gateway's limit); kept for inspection.
        self.orphan_errors: List[RPCError] = []

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, params: Mapping[str, Any], token: T) -> Tuple[int, bytes]:
        """Register a request and return its id and encoded line."""
        request_id = next(self._ids)
        handle = params.get("handle")
        line = encode_line({"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)})
        self.pending[request_id] = Pending(method, token, handle if isinstance(handle, int) else None)
        return request_id, line

    def forget(self, request_id: int) -> None:
        """The caller stopped waiting (interrupted, cancelled, write failed).

        The request stays registered so its answer is still processed in order: a
        descriptor attached to it must be paired (and then closed), not mistaken for the
        next flyAway's.
        """
        pending = self.pending.get(request_id)
        if pending is not None:
            pending.token = None

    # -- handles --------------------------------------------------------------------------
    def handle_obj(self, handle: int, kind: str) -> H:
        """The object of ``handle``, made (and registered) if this client has not seen it yet."""
        obj = self.handles.get(handle)
        if obj is None:
            obj = self._factory(handle, kind)
            self.handles[handle] = obj
        return obj

    def drop_handle(self, obj: H) -> None:
        """The handle is gone on the gateway (closed, flown away, reported closed)."""
        obj._state.gone = True
        if self.handles.get(obj.handle) is obj:
            del self.handles[obj.handle]

    # -- input ----------------------------------------------------------------------------
    def feed(self, data: bytes, fds: Iterable[int]) -> Tuple[List[Tuple[T, Answer[H]]], List[H]]:
        """Process bytes (and descriptors) read from the gateway.

        Returns the answers completed, each with its request's token, and the handle objects
        that got new events.
        Descriptors arrive with (or before) the bytes of the line they are attached to;
        only successful ``tcp.flyAway`` answers carry one, so they are paired in order.
        """
        self._fds.extend(fds)
        self._buffer += data
        answers: List[Tuple[T, Answer[H]]] = []
        touched: List[H] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            if line.strip():
                self._line(line, answers, touched)
        del self._buffer[:start]
        return answers, touched

    def _line(self, line: bytes, answers: List[Tuple[T, Answer[H]]], touched: List[H]) -> None:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ProtocolError(f"gateway sent a line that is not JSON: {line[:200]!r}") from exc
        for item in message if isinstance(message, list) else [message]:
            if not isinstance(item, dict):
                raise ProtocolError(f"gateway sent a non-object message: {item!r}")
            if "method" in item and "id" not in item:
                self._notification(item, touched)
            elif "id" in item:
                self._answer(item, answers)
            else:
                raise ProtocolError(f"gateway sent a message that is neither answer nor notification: {item!r}")

    def _answer(self, message: Mapping[str, Any], answers: List[Tuple[T, Answer[H]]]) -> None:
        request_id = message.get("id")
        pending = self.pending.pop(request_id, None) if isinstance(request_id, int) else None
        if "error" in message:
            error = error_from_json(message["error"])
            if pending is None:
                self.orphan_errors.append(error)
                return
            if pending.token is not None:
                answers.append((pending.token, Answer(error=error)))
            return
        if pending is None:
            return  # not ours (a gateway bug); nothing waits for it
        result = message.get("result")
        answer: Answer[H] = Answer(value=result)
        if pending.method in _CREATES and isinstance(result, Mapping) and isinstance(result.get("handle"), int):
            kind = _CREATES[pending.method] or str(result.get("kind", "connection"))
            obj = self.handle_obj(result["handle"], kind)
            obj.kind = kind
            if "local" in result:
                obj.local = result["local"]
            if "remote" in result:
                obj.remote = result["remote"]
            if isinstance(result.get("host"), str):
                obj.host = result["host"]
            answer.handle_obj = obj
        elif pending.method == "tcp.flyAway":
            answer.fd = self._fds.popleft() if self._fds else None
            flown = self.handles.get(pending.handle) if pending.handle is not None else None
            if flown is not None:
                self.drop_handle(flown)
        if pending.token is None:
            # Abandoned by its caller: release what the answer carried.
            if answer.fd is not None:
                os.close(answer.fd)
            return
        answers.append((pending.token, answer))

    def _notification(self, message: Mapping[str, Any], touched: List[H]) -> None:
        method = str(message.get("method"))
        params = message.get("params")
        if not isinstance(params, Mapping) or not isinstance(params.get("handle"), int):
            return  # not about a handle: nothing routes it
        name = gen.EVENT_NAMES.get(method, method)
        seq = next(self._seq)
        kind = "server" if name == "accept" else "connection"
        obj = self.handle_obj(params["handle"], kind)
        event = Event(name, obj, params, seq)
        if name == "data":
            event.data = decode_data(params.get("data"), params.get("encoding", "base64"))
        elif name == "accept":
            client_handle = params.get("client")
            if not isinstance(client_handle, int):
                raise ProtocolError(f"accept event without a client handle: {params!r}")
            client = self.handle_obj(client_handle, "connection")
            event.client = client
            event.remote = params.get("remote")
            client.remote = event.remote
        elif name == "connect":
            event.remote = params.get("remote")
            event.error = params.get("error")
            if event.remote is not None:
                obj.remote = event.remote
            if isinstance(params.get("host"), str):
                obj.host = params["host"]
            obj.connect_error = event.error
        elif name == "close":
            event.error = params.get("error")
            self.drop_handle(obj)
        obj._state.queue.append(event)
        self.ready[obj] = None
        touched.append(obj)

    # -- dispatch -------------------------------------------------------------------------
    def next_deliverable(self) -> Optional[Tuple[Event, List[Listener]]]:
        """The oldest queued event that has a listener, taken off its queue, with its listeners."""
        best: Optional[Event] = None
        best_state: Optional[HandleState] = None
        for obj in list(self.ready):
            state = obj._state
            if not state.queue:
                del self.ready[obj]
                continue
            event = state.first_deliverable()
            if event is not None and (best is None or event.seq < best.seq):
                best, best_state = event, state
        if best is None or best_state is None:
            return None
        return best, best_state.take(best)

    def take_event(self, obj: H) -> Optional[Event]:
        """The oldest queued event of ``obj`` regardless of listeners (for event iterators)."""
        state = obj._state
        return state.queue.popleft() if state.queue else None

    def end(self) -> List[T]:
        """No more input: forget every request and handle, close unclaimed descriptors.

        Returns the tokens of the requests still waited for; the caller fails them.
        """
        tokens = [pending.token for pending in self.pending.values() if pending.token is not None]
        self.pending.clear()
        for obj in list(self.handles.values()):
            self.drop_handle(obj)
        while self._fds:
            os.close(self._fds.popleft())
        return tokens
