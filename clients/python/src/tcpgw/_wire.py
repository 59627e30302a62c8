"""I/O-free core shared by the threaded and the asyncio client.

It frames lines, matches answers to requests, turns notifications into per-handle
:class:`Event` queues, pairs descriptors received with SCM_RIGHTS with the
``tcp.flyAway`` answers they belong to, and encodes/decodes the ``data`` members.
:class:`KeepState` counts lines both ways and keeps unacknowledged lines for a session
that resumes (contract §12). Callers hold their own lock around every method of
:class:`Session`.

Speed: input is read into one large buffer (:class:`InBuffer`) and split with
``bytearray.find``; ``tcp.onData`` notifications and ``tcp.recv`` answers in the gateway's
own fixed shape have their base64 text decoded straight from that buffer without
``json.loads`` of the line (any other shape takes the JSON path).
"""
from __future__ import annotations

import base64
import binascii
import collections
import importlib
import inspect
import itertools
import json
import os
import re
import socket
import sys
import warnings
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

# Reads: one large buffer, so a read takes many lines (a 64 KiB data line is ~87 KiB);
# descriptors: one per flyAway answer, and a few lines may share a read.
READ_SIZE = 1 << 20
MIN_FREE = 256 * 1024  # room a read gets at least (the buffer is compacted or grown below it)
MAX_FDS_PER_READ = 16

# A session.ack goes out after this many gateway lines or bytes since the last one: often
# enough that the gateway's replay store (default 8 MiB) never holds the client back.
ACK_LINES = 256
ACK_BYTES = 1 << 20


def _make_b64() -> Callable[[Any], bytes]:
    """The strict base64 decoder for the fast paths (rejects any byte outside the alphabet)."""
    if sys.version_info >= (3, 11):
        def strict(data: Any) -> bytes:
            return binascii.a2b_base64(data, strict_mode=True)
        return strict

    def validating(data: Any) -> bytes:
        return base64.b64decode(bytes(data), validate=True)
    return validating


_b64 = _make_b64()


class _CryptoBase64:
    """OpenSSL's ``EVP_DecodeBlock`` through ctypes, when libcrypto is there: about four times
    CPython's ``a2b_base64`` on the same machine.

    Only for the fast paths (text from the input buffer, by address); any doubt (a length
    not a multiple of 4, ``=`` before the end, a decoding error) answers ``None`` and the
    caller decodes with binascii.
    """

    def __init__(self, decode: Any, ctypes_mod: Any) -> None:
        self._decode = decode
        self._ctypes = ctypes_mod
        self._scratch = ctypes_mod.create_string_buffer(READ_SIZE)
        self._scratch_addr = ctypes_mod.addressof(self._scratch)

    def address(self, buf: bytearray) -> int:
        return int(self._ctypes.addressof(self._ctypes.c_char.from_buffer(buf)))

    def decode(self, buf: bytearray, base: int, start: int, end: int) -> Optional[bytes]:
        length = end - start
        if length % 4 or length == 0 or buf.find(b"=", start, end - 2) >= 0:
            return None
        if buf[end - 2] == 0x3D and buf[end - 1] != 0x3D:
            return None  # "x=" then a digit: not padding (EVP_DecodeBlock would take it)
        if length > len(self._scratch):
            self._scratch = self._ctypes.create_string_buffer(length)
            self._scratch_addr = self._ctypes.addressof(self._scratch)
        count = self._decode(self._scratch_addr, base + start, length)
        if count < 0:
            return None
        count -= (buf[end - 1] == 0x3D) + (buf[end - 2] == 0x3D)  # '=' padding decodes to zeros
        return bytes(self._ctypes.string_at(self._scratch_addr, count))


def _load_crypto_base64() -> Optional[_CryptoBase64]:
    try:
        import ctypes
    except ImportError:
        return None
    for name in ("libcrypto.so.3", "libcrypto.so"):
        try:
            lib = ctypes.CDLL(name)
            decode = lib.EVP_DecodeBlock
        except (OSError, AttributeError):
            continue
        decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        decode.restype = ctypes.c_int
        codec = _CryptoBase64(decode, ctypes)
        probe = bytearray(b"aGVsbG8hIQ==")  # b"hello!!": also checks the padding arithmetic
        if codec.decode(probe, codec.address(probe), 0, len(probe)) == b"hello!!":
            return codec
    return None


def _load_pybase64() -> Any:
    """The ``pybase64`` module (SIMD libbase64) if importable and behaving as expected, else None.

    Imported by name so that the package type-checks without it installed.
    """
    try:
        module = importlib.import_module("pybase64")
    except ImportError:
        return None
    if not callable(getattr(module, "b64encode_as_string", None)):
        return None
    try:
        # Positional arguments (s, altchars, validate): keywords cost more than the decoding of
        # a short text. A bad digit must raise binascii.Error, as the fast paths expect.
        if module.b64decode(memoryview(b"aGVsbG8hIQ=="), None, True) != b"hello!!":
            return None
        module.b64decode(b"aGVs*G8h", None, True)
    except binascii.Error:
        return module
    except Exception:  # anything else: not the module this code was written for
        return None
    return None


#: The decoders the fast paths can use, first choice first (``TCPGW_PY_BASE64`` names one).
BASE64_DECODERS = ("pybase64", "libcrypto", "binascii")
# Texts shorter than this go to binascii whatever the choice: below it a call into the faster
# decoders costs more than the decoding.
_PYBASE64_MIN = 256
_CRYPTO_MIN = 64
_pybase64: Any = None
_crypto_b64: Optional[_CryptoBase64] = None
_decoder = "binascii"  # the one in use (see use_base64_decoder)
_tried: Dict[str, bool] = {"binascii": True}  # decoder name: usable (loaded on first ask)


def _usable(name: str) -> bool:
    """Whether decoder ``name`` works here (loading it the first time it is asked about)."""
    global _pybase64, _crypto_b64
    if name not in _tried:
        if name == "pybase64":
            _pybase64 = _load_pybase64()
            _tried[name] = _pybase64 is not None
        else:
            _crypto_b64 = _load_crypto_base64()
            _tried[name] = _crypto_b64 is not None
    return _tried[name]


def available_base64_decoders() -> List[str]:
    """The names of the fast-path base64 decoders usable here, first choice first."""
    return [name for name in BASE64_DECODERS if _usable(name)]


def base64_decoder() -> str:
    """The name of the base64 decoder the fast paths use now."""
    return _decoder


def use_base64_decoder(name: Optional[str] = None) -> str:
    """Choose the fast paths' base64 decoder and return the name of the one now in use.

    ``name`` is one of :data:`BASE64_DECODERS`; when that one is not usable here, the next
    one in that order that is (``binascii`` always is). ``None`` (or ``""``): the first choice.
    Every decoder accepts only strict base64; what one refuses takes the JSON path, whose
    strict ``base64.b64decode`` decides (so the choice changes speed, never the result).
    Sessions already open switch too. Not meant to be called while other threads read.
    """
    global _decoder
    if name and name not in BASE64_DECODERS:
        raise ValueError(f"unknown base64 decoder {name!r} (known: {', '.join(BASE64_DECODERS)})")
    order = BASE64_DECODERS[BASE64_DECODERS.index(name):] if name else BASE64_DECODERS
    _decoder = next(candidate for candidate in order if _usable(candidate))
    return _decoder


def _initial_decoder() -> str:
    forced = os.environ.get("TCPGW_PY_BASE64", "")
    if forced and forced not in BASE64_DECODERS:
        warnings.warn(f"TCPGW_PY_BASE64={forced!r} is not one of {', '.join(BASE64_DECODERS)}; "
                      "using the first choice", RuntimeWarning, stacklevel=2)
        forced = ""
    return use_base64_decoder(forced)


_initial_decoder()


def _encode_b64_text(data: Any) -> str:
    """Base64 text of bytes-like ``data`` (pybase64 when it is loaded: many times binascii)."""
    if _pybase64 is not None and _decoder == "pybase64":
        return str(_pybase64.b64encode_as_string(data))
    return base64.b64encode(data).decode("ascii")


# The gateway's own shapes of the two big lines (contract §3/§4); anything else goes to json.
_ON_DATA_HEAD = b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":'
_DATA_KEY = b',"data":"'
_ON_DATA_TAIL = b'","encoding":"base64"}}'
_RECV_HEAD = b'{"jsonrpc":"2.0","result":{"data":"'
# A small answer with a scalar result (a count, a boolean, null): most calls' answers.
_RESULT_HEAD = b'{"jsonrpc":"2.0","result":'
_SCALAR_ANSWER = re.compile(rb'\{"jsonrpc":"2\.0","result":(true|false|null|-?[0-9]{1,15}),"id":([0-9]{1,18})\}')
_SCALARS: Dict[bytes, Any] = {b"true": True, b"false": False, b"null": None}
_RECV_TAIL = re.compile(rb'","encoding":"base64","eof":(true|false)},"id":([0-9]{1,18})}')

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


# One encoder for every line (json.dumps with separators builds a new one per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One JSON-RPC message as a newline-terminated line (ASCII-only, so never a raw newline inside)."""
    return _encode(message).encode("ascii") + b"\n"


_METHOD_TEXT: Dict[str, bytes] = {}  # a method name's JSON text, encoded once per name
_RECV_KEYS = ("handle", "length", "encoding")


def request_line(request_id: int, method: str, params: Mapping[str, Any]) -> bytes:
    """A request's line; the same bytes as :func:`encode_line` of the whole message."""
    name = _METHOD_TEXT.get(method)
    if name is None:
        name = _METHOD_TEXT[method] = _encode(method).encode("ascii")
    count = len(params)
    handle = params.get("handle") if count <= 3 else None
    if type(handle) is int:
        if count == 1:  # most calls: {"handle": N} alone, without the encoder
            return b'{"jsonrpc":"2.0","id":%d,"method":%s,"params":{"handle":%d}}\n' % (request_id, name, handle)
        if count == 3:  # a read-ahead's (or a plain recv's) {"handle", "length", "encoding"}, in that order
            length = params.get("length")
            if type(length) is int and params.get("encoding") == "base64" and tuple(params) == _RECV_KEYS:
                return b'{"jsonrpc":"2.0","id":%d,"method":%s,"params":{"handle":%d,"length":%d,"encoding":"base64"}}\n' % (
                    request_id, name, handle, length)
    return b'{"jsonrpc":"2.0","id":%d,"method":%s,"params":%s}\n' % (request_id, name, _encode(params).encode("ascii"))


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
        return _encode_b64_text(data), "base64"
    if isinstance(data, (list, tuple)):
        items = list(data)
        if items and all(isinstance(item, str) for item in items):
            return [str(item) for item in items], "utf8"
        return [_encode_b64_text(_as_bytes(item)) for item in items], "base64"
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


#: ``recv(n)`` asks the gateway for up to this many bytes (at least n) and keeps what the caller
#: did not ask for: the next reads take it without a round trip. Nothing is reordered or lost:
#: ``pending()`` counts those bytes, ``flyAway()``/``stream()`` hand them over first, ``resume()``
#: delivers them as the first ``"data"`` event. A bad length is sent as given (the gateway's error).
RECV_AHEAD = 1024 * 1024


def recv_length(length: Any) -> Any:
    """The length a ``tcp.recv`` asks for: ``length`` raised to :data:`RECV_AHEAD`, if valid."""
    if isinstance(length, int) and not isinstance(length, bool) and 1 <= length < RECV_AHEAD:
        return RECV_AHEAD
    return length


def valid_recv_length(length: Any) -> bool:
    """Whether ``recv(length)`` may go through ``ahead`` (else the request goes as given)."""
    return isinstance(length, int) and not isinstance(length, bool) and length >= 1


def ahead_event(obj: Any, data: bytes, seq: int) -> Event:
    """The ``"data"`` event of bytes a read-ahead kept, delivered first after ``resume()``."""
    return Event("data", obj, {"handle": obj.handle, "encoding": "base64"}, seq, data=data)


def recv_answer(answer: "Answer[Any]") -> Tuple[bytes, bool]:
    """(bytes, eof) of a ``tcp.recv`` answer, decoded on the fast path or from its JSON."""
    if answer.payload is not None:
        return answer.payload, bool(answer.value)
    return recv_result(answer.value)


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
        # Bytes recv answers brought that no caller has taken yet, oldest first (the first
        # chunk from ``ahead_pos``), filed in arrival order as the answers are read.
        self.ahead: Deque[bytes] = collections.deque()
        self.ahead_pos = 0
        self.ahead_bytes = 0
        # The pipelined read-ahead (contract §4 lets tcp.recv requests queue on a handle): how
        # many of this client's tcp.recv requests feeding ``ahead`` are in flight (as many as
        # the flavour's ``recv_prefetch`` allows), answered in the order they were sent.
        self.recv_busy = 0
        self.recv_eof = False  # an answer said end of stream (consumed by the recv returning b"")
        self.recv_error: Optional[BaseException] = None  # a read-ahead's failure, for the next recv
        self.resuming = False  # tcp.resume sent: late recv bytes become "data" events

    def take_ahead(self, length: int) -> Optional[bytes]:
        """Up to ``length`` bytes already received by a read-ahead, or ``None`` if there are none."""
        if not self.ahead_bytes or length < 1:
            return None
        first = self.ahead[0]
        pos = self.ahead_pos
        if pos == 0 and len(first) <= length:
            chunk = self.ahead.popleft()  # the whole answer: no copy
        else:
            chunk = first[pos:pos + length]
            pos += len(chunk)
            if pos >= len(first):
                self.ahead.popleft()
                pos = 0
            self.ahead_pos = pos
        self.ahead_bytes -= len(chunk)
        return chunk

    def push_ahead(self, data: bytes) -> None:
        """File received bytes after those already kept."""
        if data:
            self.ahead.append(data)
            self.ahead_bytes += len(data)

    def keep_ahead(self, data: bytes, length: int) -> bytes:
        """Of a read-ahead's ``data``, the first ``length`` bytes; the rest is kept for later reads."""
        if len(data) <= length:
            return data
        self.push_ahead(data[length:])
        return data[:length]

    def drain_ahead(self) -> bytes:
        """Everything kept (for flyAway, stream, resume: those bytes come first)."""
        if not self.ahead_bytes:
            return b""
        if self.ahead_pos:
            self.ahead[0] = self.ahead[0][self.ahead_pos:]
        rest = b"".join(self.ahead)
        self.ahead.clear()
        self.ahead_pos = self.ahead_bytes = 0
        return rest

    def ahead_count(self) -> int:
        return self.ahead_bytes

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


class InBuffer:
    """The bytes read from the gateway and not yet split into lines: ``buf[start:end]``.

    Reads go straight into the free tail (:meth:`space`); a partial line is moved to the
    front only when the tail runs short, and the buffer grows for a line longer than it.
    """

    __slots__ = ("buf", "view", "start", "end", "scan", "address")

    def __init__(self, size: int = READ_SIZE) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.scan = 0  # no newline in buf[start:scan]: a long line's later reads are not rescanned
        # The buffer's address, for the libcrypto decoder (0: not taken yet).
        self.address = 0

    def space(self) -> memoryview:
        """Where the next read goes (at least ``MIN_FREE`` bytes)."""
        if self.start == self.end:
            self.start = self.end = self.scan = 0
        elif len(self.buf) - self.end < MIN_FREE:
            held = self.end - self.start
            if len(self.buf) - held < MIN_FREE:
                # A line longer than the buffer: grow (a new buffer, the old view released).
                grown = bytearray(max(2 * len(self.buf), held + MIN_FREE))
                grown[:held] = self.view[self.start:self.end]
                self.view.release()
                self.buf, self.view = grown, memoryview(grown)
                self.address = 0
            else:
                self.buf[:held] = self.view[self.start:self.end]
            self.scan -= self.start
            self.start, self.end = 0, held
        return self.view[self.end:]

    def clear(self) -> None:
        """Drop what is held (a partial line of a connection that dropped)."""
        self.start = self.end = self.scan = 0


class KeepState:
    """Line counting and replay of a session that survives a dropped connection (contract §12).

    ``sent`` numbers the client's lines after its ``session.keep`` request, ``received`` the
    gateway's lines after its answer (empty lines count on neither side). Written lines are kept
    until the gateway is known to have read them: an answer to a request proves the gateway read
    that line and every line before it. After a resume, :meth:`resumed` gives the lines to send
    again. Not thread-safe: the threaded client calls the output side (``outgoing``,
    ``resumed``, ``ack_line``) under its write lock and the input side under its state lock.
    """

    def __init__(self, token: str, grace: int) -> None:
        self.token = token
        self.grace = grace  # ms
        self.sent = 0
        self.received = 0
        self.acked = 0  # ``received`` as of the last session.ack
        self.bytes_since_ack = 0
        self.read_by_gateway = 0  # the highest client line the gateway is known to have read
        self._unacked: Deque[Tuple[int, bytes]] = collections.deque()

    def outgoing(self, line: bytes) -> int:
        """Count a line about to be written and keep it for replay; returns its number."""
        if not line.strip():
            return 0
        self.sent += 1
        self._prune()
        self._unacked.append((self.sent, line))
        return self.sent

    def gateway_read(self, number: int) -> None:
        """The gateway has read the client's lines up to ``number`` (an answer proved it)."""
        if number > self.read_by_gateway:
            self.read_by_gateway = number

    def _prune(self) -> None:
        while self._unacked and self._unacked[0][0] <= self.read_by_gateway:
            self._unacked.popleft()

    def incoming(self, lines: int, nbytes: int) -> None:
        """Count gateway lines read (and their bytes, for the ack pace)."""
        self.received += lines
        self.bytes_since_ack += nbytes

    def ack_due(self) -> bool:
        return self.received > self.acked and (
            self.received - self.acked >= ACK_LINES or self.bytes_since_ack >= ACK_BYTES)

    def ack_line(self) -> bytes:
        """The ``session.ack`` notification for what has been read (counted by the caller's write)."""
        self.acked = self.received
        self.bytes_since_ack = 0
        return encode_line({"jsonrpc": "2.0", "method": "session.ack", "params": {"received": self.received}})

    def resume_line(self) -> bytes:
        """The first line of a new connection (not a counted line)."""
        return encode_line({"jsonrpc": "2.0", "id": 0, "method": "session.resume",
                            "params": {"token": self.token, "received": self.received}})

    def resumed(self, gateway_read: int) -> List[bytes]:
        """After the resume answer (``received: M``): the lines to write again, in order."""
        if gateway_read > self.sent:
            raise ProtocolError(f"session.resume says {gateway_read} lines were read; {self.sent} were written")
        self.gateway_read(gateway_read)
        self._prune()
        self.acked = self.received
        self.bytes_since_ack = 0
        return [line for _number, line in self._unacked]

    def kept_lines(self) -> int:
        """How many written lines are kept for replay."""
        return len(self._unacked)


def keep_request_line(grace: Optional[int]) -> bytes:
    """The ``session.keep`` request a kept connection starts with."""
    params: Dict[str, Any] = {} if grace is None else {"grace": grace}
    return encode_line({"jsonrpc": "2.0", "id": 0, "method": "session.keep", "params": params})


def handshake_result(line: bytes, method: str) -> Any:
    """The result of the one answer line of a handshake (``session.keep``/``resume``,
    ``tcp.attach``), or the error it carries raised as its :class:`RPCError` subclass."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"{method}: the gateway answered a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"{method}: the gateway answered {message!r}")
    if "error" in message:
        raise error_from_json(message["error"])
    if "result" not in message:
        raise ProtocolError(f"{method}: the gateway answered {message!r}")
    return message["result"]


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

    __slots__ = ("method", "token", "handle", "line", "sink", "prefetch")

    def __init__(self, method: str, token: Optional[T], handle: Optional[int]) -> None:
        self.method = method
        self.token = token  # None once the caller stopped waiting
        self.handle = handle  # the handle the request is about, if any
        self.line = 0  # its number among the client's lines of a kept session (0: not counted)
        # A client recv's tcp.recv: the handle object whose ``ahead`` its bytes go to, filed
        # when the answer is read (so in the gateway's order, whoever waits for them).
        self.sink: Any = None
        self.prefetch = False  # a read-ahead nobody asked for: its failure waits for the next recv


class Answer(Generic[H]):
    """An answer matched to its request: ``ok`` with ``value`` or an ``error`` exception.

    For creation methods ``handle_obj`` is the new handle's object (registered before any
    event about it can be processed); for ``tcp.flyAway`` ``fd`` is the received descriptor.
    """

    __slots__ = ("value", "error", "handle_obj", "fd", "payload")

    def __init__(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value = value  # the decoded JSON result, as the schema describes it
        self.error = error
        self.handle_obj: Optional[H] = None
        self.fd: Optional[int] = None
        # A tcp.recv answer decoded on the fast path: its bytes (``value`` is then its eof flag).
        self.payload: Optional[bytes] = None

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
        self.inbuf = InBuffer()
        self._fds: Deque[int] = collections.deque()
        #: Requests whose answers may carry a descriptor (reads need ancillary data only then).
        self.descriptors_due = 0
        #: Set once a session.keep was answered: lines are counted and kept (contract §12).
        self.keep: Optional[KeepState] = None
        #: Handles with queued events (an ordered set).
        self.ready: Dict[H, None] = {}
        #: Errors answered with a null id (e.g. a line over the gateway's limit); kept for inspection.
        self.orphan_errors: List[RPCError] = []

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, params: Mapping[str, Any], token: Optional[T],
                sink: Optional[H] = None, prefetch: bool = False) -> Tuple[int, bytes]:
        """Register a request and return its id and encoded line.

        ``sink``: a ``tcp.recv`` whose bytes go to that handle's ``ahead`` (then its state is
        ``recv_busy`` until the answer); ``prefetch``: one nobody waits for (``token`` None).
        """
        request_id = next(self._ids)
        handle = params.get("handle")
        line = request_line(request_id, method, params)
        pending: Pending[T] = Pending(method, token, handle if isinstance(handle, int) else None)
        if sink is not None:
            pending.sink = sink
            pending.prefetch = prefetch
            sink._state.recv_busy += 1
        self.pending[request_id] = pending
        if method in gen.DESCRIPTOR_METHODS:
            self.descriptors_due += 1
        return request_id, line

    def recv_prefetch(self, obj: H, in_flight: int = 1) -> Optional[Tuple[int, bytes]]:
        """A read-ahead ``tcp.recv`` for ``obj`` if one is due (fewer than ``in_flight`` of them
        on their way, little kept)."""
        state = obj._state
        if (state.recv_busy >= in_flight or state.gone or state.resuming or state.recv_eof or state.recv_error is not None
                or state.ahead_bytes >= RECV_AHEAD):
            return None
        params = {"handle": obj.handle, "length": RECV_AHEAD, "encoding": "base64"}
        return self.request("tcp.recv", params, None, sink=obj, prefetch=True)

    def _recv_done(self, pending: "Pending[T]", data: bytes, eof: bool, error: Optional[BaseException],
                   touched: List[H]) -> None:
        """A sink recv's answer: its bytes join ``ahead`` (or the event queue while resuming)."""
        obj = pending.sink
        state = obj._state
        state.recv_busy -= 1
        if error is None:
            if state.resuming:
                if data:  # answered before the gateway saw tcp.resume: these come first
                    state.queue.append(ahead_event(obj, data, next(self._seq)))
                    self.ready[obj] = None
            else:
                state.push_ahead(data)
                if eof and not data:
                    state.recv_eof = True
        elif pending.prefetch and not state.gone and not state.resuming:
            state.recv_error = error
        touched.append(obj)

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
        """Process bytes (and descriptors) read from the gateway (copied into :attr:`inbuf`).

        Returns the answers completed, each with its request's token, and the handle objects
        that got new events. Transports that can read in place use :meth:`read_space` and
        :meth:`process` instead (no copy).
        Descriptors arrive with (or before) the bytes of the line they are attached to;
        only successful ``tcp.flyAway`` answers carry one, so they are paired in order.
        """
        view = self.read_space()
        done = 0
        while done < len(data):
            if not len(view):
                view = self.read_space()
            take = min(len(view), len(data) - done)
            view[:take] = data[done:done + take]
            self.inbuf.end += take
            done += take
            view = view[take:]
        return self.process(0, fds)

    def read_space(self) -> memoryview:
        """The buffer the next read of the gateway's bytes goes into."""
        return self.inbuf.space()

    def process(self, nbytes: int, fds: Iterable[int]) -> Tuple[List[Tuple[T, Answer[H]]], List[H]]:
        """``nbytes`` were read into :meth:`read_space`; process every complete line."""
        if fds:
            self._fds.extend(fds)
        inbuf = self.inbuf
        inbuf.end += nbytes
        buf = inbuf.buf
        end = inbuf.end
        pos = inbuf.start
        answers: List[Tuple[T, Answer[H]]] = []
        touched: List[H] = []
        counted = 0
        first = pos
        find = buf.find
        scan = max(pos, inbuf.scan)
        nl = -1
        try:
            while True:
                nl = find(b"\n", scan, end)
                if nl < 0:
                    break
                start, pos = pos, nl + 1
                scan = pos
                if nl == start:
                    continue  # empty: not a message and not counted
                if buf.startswith(_ON_DATA_HEAD, start):
                    if self._fast_data(buf, inbuf.view, start, nl, touched):
                        counted += 1
                        continue
                elif buf.startswith(_RESULT_HEAD, start):
                    if buf.startswith(_RECV_HEAD, start):
                        if self._fast_recv(buf, inbuf.view, start, nl, answers, touched):
                            counted += 1
                            continue
                    else:
                        match = _SCALAR_ANSWER.fullmatch(buf, start, nl)
                        if match is not None and self._fast_scalar(match, answers):
                            counted += 1
                            continue
                line = bytes(inbuf.view[start:nl])
                if line.strip():
                    counted += 1
                    self._line(line, answers, touched)
        finally:
            inbuf.start = pos
            inbuf.scan = end if nl < 0 else pos  # after a break: no newline in [pos, end)
            if self.keep is not None:
                self.keep.incoming(counted, pos - first)
        return answers, touched

    def _decode_at(self, buf: bytearray, view: memoryview, start: int, end: int) -> bytes:
        """Strict base64 decoding of ``buf[start:end]`` with the decoder in use (see
        :func:`use_base64_decoder`); raises ``binascii.Error`` (or ``ValueError``) if refused."""
        decoder = _decoder
        if decoder == "pybase64":
            if end - start >= _PYBASE64_MIN:
                decoded: bytes = _pybase64.b64decode(view[start:end], None, True)
                return decoded
        elif decoder == "libcrypto" and end - start >= _CRYPTO_MIN and _crypto_b64 is not None:
            inbuf = self.inbuf
            if not inbuf.address:
                inbuf.address = _crypto_b64.address(buf)
            data = _crypto_b64.decode(buf, inbuf.address, start, end)
            if data is not None:
                return data
        return _b64(view[start:end])

    def _fast_data(self, buf: bytearray, view: memoryview, start: int, nl: int, touched: List[H]) -> bool:
        """A ``tcp.onData`` line in the gateway's shape, decoded in place; False: use json."""
        head = start + len(_ON_DATA_HEAD)
        key = buf.find(_DATA_KEY, head, min(head + 24, nl))
        data_end = nl - len(_ON_DATA_TAIL)
        if key < 0 or data_end < key or not buf.startswith(_ON_DATA_TAIL, data_end):
            return False
        data_start = key + len(_DATA_KEY)
        # No scan for '"' or '\\' in the text: every decoder refuses any byte outside the
        # base64 alphabet, so a line whose data is not one plain JSON string takes the JSON path.
        try:
            handle = int(buf[head:key])
            data = self._decode_at(buf, view, data_start, data_end)
        except (ValueError, binascii.Error):
            return False
        obj = self.handle_obj(handle, "connection")
        event = Event("data", obj, {"handle": handle, "encoding": "base64"}, next(self._seq), data=data)
        obj._state.queue.append(event)
        self.ready[obj] = None
        touched.append(obj)
        return True

    def _fast_scalar(self, match: "re.Match[bytes]", answers: List[Tuple[T, Answer[H]]]) -> bool:
        """A scalar answer (``result`` a number, boolean or null) without json; False: use json."""
        request_id = int(match.group(2))
        pending = self.pending.get(request_id)
        if pending is None or pending.method in _CREATES or pending.method in gen.DESCRIPTOR_METHODS:
            return False  # those need the full answer handling
        del self.pending[request_id]
        if self.keep is not None and pending.line:
            self.keep.gateway_read(pending.line)
        if pending.token is not None:
            text = match.group(1)
            value = _SCALARS[text] if text in _SCALARS else int(text)
            answers.append((pending.token, Answer(value=value)))
        return True

    def _fast_recv(self, buf: bytearray, view: memoryview, start: int, nl: int,
                   answers: List[Tuple[T, Answer[H]]], touched: List[H]) -> bool:
        """A ``tcp.recv`` answer in the gateway's shape, decoded in place; False: use json."""
        data_start = start + len(_RECV_HEAD)
        # From the end: the tail is short, the text long (one scan of it fewer; a text that
        # is not plain base64 is refused by the decoder, and then JSON decides).
        data_end = buf.rfind(b'","encoding":', data_start, nl)
        if data_end < 0:
            return False
        match = _RECV_TAIL.fullmatch(buf, data_end, nl)
        if match is None:
            return False
        request_id = int(match.group(2))
        pending = self.pending.get(request_id)
        if pending is None or pending.method != "tcp.recv":
            return False  # (a '\\' in the text: the decoder refuses it, then JSON decides)
        try:
            data = self._decode_at(buf, view, data_start, data_end)
        except (ValueError, binascii.Error):
            return False
        del self.pending[request_id]
        if self.keep is not None and pending.line:
            self.keep.gateway_read(pending.line)
        eof = match.group(1) == b"true"
        if pending.sink is not None:
            self._recv_done(pending, data, eof, None, touched)
            data = b""  # filed: the caller takes its share from ``ahead``
        if pending.token is not None:
            answer: Answer[H] = Answer(value=eof)
            answer.payload = data
            answers.append((pending.token, answer))
        return True

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
                self._answer(item, answers, touched)
            else:
                raise ProtocolError(f"gateway sent a message that is neither answer nor notification: {item!r}")

    def _answer(self, message: Mapping[str, Any], answers: List[Tuple[T, Answer[H]]], touched: List[H]) -> None:
        request_id = message.get("id")
        pending = self.pending.pop(request_id, None) if isinstance(request_id, int) else None
        if pending is not None and pending.method in gen.DESCRIPTOR_METHODS:
            self.descriptors_due -= 1
        if pending is not None and pending.line and self.keep is not None:
            self.keep.gateway_read(pending.line)
        if "error" in message:
            error = error_from_json(message["error"])
            if pending is None:
                self.orphan_errors.append(error)
                return
            if pending.sink is not None:
                self._recv_done(pending, b"", False, error, touched)
            if pending.token is not None:
                answers.append((pending.token, Answer(error=error)))
            return
        if pending is None:
            return  # not ours (a gateway bug); nothing waits for it
        result = message.get("result")
        answer: Answer[H] = Answer(value=result)
        if pending.sink is not None:
            try:
                data, eof = recv_result(result)
            except ProtocolError as exc:
                self._recv_done(pending, b"", False, exc, touched)
                if pending.token is not None:
                    answers.append((pending.token, Answer(error=exc)))
                return
            self._recv_done(pending, data, eof, None, touched)
            answer.value = {"data": "", "encoding": "base64", "eof": eof}  # filed in ``ahead``
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

    def drop_input(self) -> None:
        """The connection dropped mid-line: forget the partial line and unpaired descriptors
        (a resumed session has the gateway send the line again)."""
        self.inbuf.clear()
        while self._fds:
            os.close(self._fds.popleft())

    def requeue_ahead(self, obj: H) -> None:
        """Before ``tcp.resume``: bytes a read-ahead kept become the handle's first data event."""
        rest = obj._state.drain_ahead()
        if rest:
            obj._state.queue.appendleft(ahead_event(obj, rest, next(self._seq)))
            self.ready[obj] = None

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
        self.descriptors_due = 0
        self.inbuf.clear()
        for obj in list(self.handles.values()):
            self.drop_handle(obj)
        while self._fds:
            os.close(self._fds.popleft())
        return tokens
