"""The threaded (blocking) client: :func:`connect`, :class:`Gateway`, :class:`Tcp`.

Threading model
---------------
Each :class:`Gateway` owns one background *reader thread* (named ``tcpgw-reader``). It
only reads: it matches answers to the calls waiting for them and files notifications
as :class:`~tcpgw.Event` objects in per-handle queues. It never runs your code.

Listener callbacks (``on(...)``, the callbacks of ``createClient(addr, cb)`` and
``accept(None, cb)``) run in *your* thread, inside :meth:`Gateway.poll` or
:meth:`Gateway.run_forever` — the counterpart of the seed's ``iosched.poll()``. So a
callback may make blocking calls (``send``, ``close``, ...) and needs no locking against
other callbacks. To have callbacks run in the background anyway, start
``threading.Thread(target=gw.run_forever)`` yourself; :meth:`Gateway.close` ends it.

Events that arrive while no listener for their name is attached wait in the handle's
queue; they are delivered once a listener is attached (at the next ``poll``), or can be
taken with :meth:`Tcp.events` / :meth:`Tcp.next_event`.

Every method is safe to call from several threads.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    MutableMapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from . import _generated as gen
from ._errors import ConnectionClosedError, ProtocolError
from ._types import ErrorObject, SockAddr
from ._wire import (
    MAX_FDS_PER_READ,
    READ_SIZE,
    AddressLike,
    Answer,
    Event,
    HandleState,
    Listener,
    SendData,
    Session,
    decode_data,
    default_socket_path,
    descriptor_of,
    drop_none,
    errno_from_result,
    normalize_sockaddr,
    recv_result,
    recv_window,
    recvfrom_result,
    schema_doc,
    send_params,
    state_from_result,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ConnectCallback = Callable[["Tcp", Optional[SockAddr]], object]
AcceptCallback = Callable[["Tcp", Optional[SockAddr]], object]


class FlyAwaySocket(socket.socket):
    """The socket :meth:`Tcp.flyAway` hands over: a real :class:`socket.socket`, in blocking mode.

    Attributes:
        buffered: bytes the gateway had already read from the socket but not delivered;
            they come before anything ``recv`` on this socket returns, so nothing is lost.
        eof: whether the gateway had already seen the peer's end of stream.
    """

    buffered: bytes = b""
    eof: bool = False


def _fly_away_socket(fd: int, result: Any) -> FlyAwaySocket:
    sock = FlyAwaySocket(fileno=fd)
    # The gateway works with O_NONBLOCK, which lives on the shared open file description;
    # the socket object must agree with the flag, so make both blocking.
    sock.setblocking(True)
    if isinstance(result, Mapping):
        sock.buffered = decode_data(result.get("buffered", ""), result.get("encoding", "base64"))
        sock.eof = bool(result.get("eof"))
    return sock


class _Waiter:
    """A blocking caller's slot for its answer."""

    __slots__ = ("event", "answer")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.answer: Optional[Answer[Tcp]] = None


class Tcp(gen._SyncTcpMethods):
    """A gateway handle: a TCP server or connection, like the seed's Tcp object.

    Methods keep the seed's names and argument order; times are milliseconds. Calls
    block until the gateway answers and raise :class:`~tcpgw.RPCError` subclasses on
    error answers. A ``with`` block closes the handle.

    Attributes:
        handle: the gateway's handle number.
        kind: ``"server"`` or ``"connection"``.
        local: the local address from the creating answer (or ``None``).
        remote: the peer's address, once known (or ``None``).
        host: the host name the handle was created with (``createClient``/``createServer``
            by name), else ``None``.
        connect_error: the error object of a failed asynchronous connect (or ``None``).

    ``sockFd`` is a property, as in the seed (it asks the gateway each time).
    """

    def __init__(self, gateway: "Gateway", handle: int, kind: str) -> None:
        self._gw = gateway
        self.handle = handle
        self.kind = kind
        self.local: Optional[SockAddr] = None
        self.remote: Optional[SockAddr] = None
        self.host: Optional[str] = None
        self.connect_error: Optional[ErrorObject] = None
        self._state = HandleState()

    def __repr__(self) -> str:
        state = "closed" if self._state.gone else "open"
        return f"<tcpgw.Tcp handle={self.handle} kind={self.kind} {state} local={self.local} remote={self.remote}>"

    def __enter__(self) -> "Tcp":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the handle is gone: closed, flown away, reported closed, or the connection ended."""
        return self._state.gone

    @property
    def gateway(self) -> "Gateway":
        """The :class:`Gateway` connection this handle belongs to."""
        return self._gw

    def _invoke(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._gw._call(method, {"handle": self.handle, **params})

    # -- events ---------------------------------------------------------------------------
    def on(self, name: str, fn: Listener) -> "Tcp":
        """Attach a listener for events named ``name``; returns ``self`` for chaining.

        ``"data"``: ``fn(data: bytes)`` · ``"end"``: ``fn()`` · ``"close"``: ``fn(error)``
        (``error`` is ``None`` or ``{"errno", "errnoNumber", "message"}``) · ``"accept"``
        (servers): ``fn(newTcp, remoteAddr)`` · ``"connect"``: ``fn(tcp, remoteAddr)``
        (``remoteAddr`` ``None`` on failure). Events queued before the listener was attached
        are delivered too. Listeners run inside :meth:`Gateway.poll`.
        Connections created synchronously start paused: call :meth:`resume` to receive
        ``"data"``/``"end"`` events.
        """
        with self._gw._cv:
            self._state.add_listener(name, fn, once=False)
            self._gw._cv.notify_all()
        return self

    def once(self, name: str, fn: Listener) -> "Tcp":
        """Like :meth:`on`, but the listener is removed after its first call."""
        with self._gw._cv:
            self._state.add_listener(name, fn, once=True)
            self._gw._cv.notify_all()
        return self

    def off(self, name: str, fn: Listener) -> bool:
        """Remove a listener; returns whether it was attached."""
        with self._gw._cv:
            return self._state.remove_listener(name, fn)

    def queued(self) -> Tuple[Event, ...]:
        """A snapshot of this handle's events not yet delivered or taken, oldest first."""
        with self._gw._cv:
            return tuple(self._state.queue)

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """Take this handle's oldest queued event (any name), waiting up to ``timeout`` seconds.

        Returns ``None`` on timeout, or when no event can come any more (the handle or the
        connection is closed and the queue is empty).
        """
        return self._gw._next_event(self, timeout)

    def events(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Iterate over this handle's events in arrival order (any name, listeners bypassed).

        Stops after the ``"close"`` event, when the handle or connection is closed, or when
        no event arrives for ``timeout`` seconds (if given).
        """
        while True:
            event = self.next_event(timeout)
            if event is None:
                return
            yield event
            if event.name == "close":
                return

    # -- seed methods with Python-specific shapes -----------------------------------------
    @property
    def sockFd(self) -> int:
        """The socket's descriptor number *inside the gateway* (a property, as in the seed).

        It means nothing in this process; use :meth:`flyAway` to get the socket itself.
        """
        return int(self._invoke("tcp.sockFd", {}))

    @overload
    def accept(self, remoteAddr: Optional[MutableMapping[str, Any]] = None, timeout: Optional[int] = None) -> "Tcp": ...

    @overload
    def accept(self, remoteAddr: None, timeout: AcceptCallback) -> None: ...

    @schema_doc("tcp.accept")
    def accept(self, remoteAddr: Optional[MutableMapping[str, Any]] = None, timeout: Union[int, None, AcceptCallback] = None) -> Optional["Tcp"]:
        """Accept a connection on a server.

        ``accept(remoteAddr=None, timeout=None) -> Tcp`` waits (``timeout`` in ms, ``None``
        = forever) and returns the new connection (paused); if ``remoteAddr`` is a dict it is
        filled with the peer's address, as in the seed. Raises :class:`~tcpgw.RPCTimeoutError`
        (a ``TimeoutError``) when the time runs out.

        ``accept(None, callback)`` keeps accepting in the background: each connection
        becomes ``callback(newTcp, remoteAddr)`` (an ``"accept"`` listener, run in
        :meth:`Gateway.poll`); new connections start flowing. Returns ``None``.
        """
        if callable(timeout):
            self.on("accept", timeout)
            try:
                self._invoke("tcp.accept", {"async": True})
            except BaseException:
                self.off("accept", timeout)
                raise
            return None
        answer = self._gw._call_answer("tcp.accept", drop_none(handle=self.handle, timeout=timeout))
        new = answer.new_handle("tcp.accept")
        if remoteAddr is not None and new.remote is not None:
            remoteAddr.clear()
            remoteAddr.update(new.remote)
        return new

    @schema_doc("tcp.send")
    def send(
        self,
        data: SendData,
        *args: Optional[int],
        offset: Optional[int] = None,
        length: Optional[int] = None,
        timeout: Optional[int] = None,
    ) -> int:
        """Send ``data``; returns the number of bytes sent.

        ``data`` is ``str`` (sent as UTF-8), ``bytes``/``bytearray``/``memoryview``, or a list
        of them (gathered). Positional forms follow the seed: ``send(string[, timeout])``,
        ``send(array[, timeout])``, ``send(buffer[, offset[, length[, timeout]]])``; keywords
        work for all. ``offset``/``length`` count bytes; ``timeout`` is in ms.
        """
        return int(self._invoke("tcp.send", send_params(data, args, offset, length, timeout)))

    @schema_doc("tcp.sendto")
    def sendto(
        self,
        remoteAddr: object,
        data: SendData,
        *args: Optional[int],
        offset: Optional[int] = None,
        length: Optional[int] = None,
        timeout: Optional[int] = None,
    ) -> int:
        """Same as :meth:`send`; ``remoteAddr`` is ignored, as in the seed."""
        return int(self._invoke("tcp.sendto", send_params(data, args, offset, length, timeout)))

    @schema_doc("tcp.recv")
    def recv(self, length: int = 65536, timeout: Optional[int] = None) -> bytes:
        """Receive up to ``length`` bytes; ``b""`` at end of stream (then :meth:`isEOF` is true).

        ``timeout`` in ms (``None`` = wait forever, ``0`` = do not wait); on timeout raises
        :class:`~tcpgw.RPCTimeoutError` (a ``TimeoutError``) and nothing is lost.
        """
        data, _eof = recv_result(self._invoke("tcp.recv", drop_none(length=length, timeout=timeout, encoding="base64")))
        return data

    @schema_doc("tcp.recv")
    def recv_into(
        self, buffer: WriteableBuffer, offset: int = 0, length: Optional[int] = None, timeout: Optional[int] = None
    ) -> int:
        """Receive into a writable buffer, like the seed's ``recv(buffer[, offset[, length[, timeout]]])``.

        Writes at ``buffer[offset:]`` at most ``length`` bytes (default: the rest of the
        buffer); returns the count, ``0`` at end of stream.
        """
        view, want = recv_window(buffer, offset, length)
        if want == 0:
            return 0
        data = self.recv(want, timeout)
        view[offset:offset + len(data)] = data
        return len(data)

    @schema_doc("tcp.recvfrom")
    def recvfrom(self, length: int = 65536, timeout: Optional[int] = None) -> Tuple[bytes, Optional[SockAddr]]:
        """Like :meth:`recv`, also returning the peer's address: ``(data, remoteAddr)``, as ``socket.recvfrom``."""
        params = drop_none(length=length, timeout=timeout, encoding="base64")
        return recvfrom_result(self._invoke("tcp.recvfrom", params))

    @schema_doc("tcp.getState")
    def getState(self) -> int:
        """The TCP state as a :class:`~tcpgw.TcpState` (an ``int``: compare with ``tcpgw.TCP_ESTABLISHED``)."""
        return state_from_result(self._invoke("tcp.getState", {}))

    @schema_doc("tcp.error")
    def error(self) -> int:
        """The socket's pending error number (``0`` if none), cleared, as in the seed.

        ``errno.errorcode[n]`` gives its name.
        """
        return errno_from_result(self._invoke("tcp.error", {}))

    @schema_doc("tcp.close")
    def close(self) -> None:
        """Close the handle. Idempotent: closing a handle that is already gone does nothing."""
        if self._state.gone:
            return
        try:
            self._invoke("tcp.close", {})
        except gen.UnknownHandleError:
            pass  # the gateway already forgot it (e.g. the peer reset it): closed either way
        except ConnectionClosedError:
            pass  # the gateway closes every handle of a connection that ends
        finally:
            self._gw._drop(self)

    @schema_doc("tcp.flyAway")
    def flyAway(self) -> FlyAwaySocket:
        """Take the socket out of the gateway: returns a real, blocking :class:`socket.socket`.

        The returned :class:`FlyAwaySocket` has ``buffered`` (bytes the gateway had read but
        not delivered: read them first) and ``eof``. The handle is gone afterwards. Works for
        servers too (the listening socket).
        """
        answer = self._gw._call_answer("tcp.flyAway", {"handle": self.handle})
        self._gw._drop(self)
        if answer.fd is None:
            raise gen.DescriptorError(-32006, "the gateway's flyAway answer carried no descriptor")
        return _fly_away_socket(answer.fd, answer.value)


class Gateway(gen._SyncGatewayMethods):
    """A connection to a tcpgw gateway; the seed's ``Tcp`` module functions are its methods.

    Use :func:`connect` to make one. A ``with`` block closes it (and so every handle it owns).
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path if path is not None else default_socket_path()
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._session: Session[Tcp, _Waiter] = Session(lambda handle, kind: Tcp(self, handle, kind))
        self._closed = False  # close() was called
        self._dead = False  # the reader has stopped: no answer or event will come any more
        self._stop = False
        self._failure: Optional[BaseException] = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.path)
        except OSError:
            self._sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="tcpgw-reader", daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"<tcpgw.Gateway path={self.path!r} {'closed' if self._dead else 'open'}>"

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (closed here or by the gateway)."""
        return self._dead

    # -- plumbing -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        failure: Optional[BaseException] = None
        try:
            while True:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(
                        self._sock, READ_SIZE, MAX_FDS_PER_READ, socket.MSG_CMSG_CLOEXEC
                    )
                except OSError as exc:
                    if not self._closed:
                        failure = exc
                    break
                if not data:
                    for fd in fds:
                        os.close(fd)
                    break
                with self._cv:
                    answers, touched = self._session.feed(data, fds)
                    for waiter, answer in answers:
                        waiter.answer = answer
                        waiter.event.set()
                    if touched:
                        self._cv.notify_all()
        except ProtocolError as exc:
            failure = exc
        finally:
            self._shutdown_session(failure)

    def _shutdown_session(self, failure: Optional[BaseException]) -> None:
        """No more input: fail waiting calls, end iterators and polls, release descriptors."""
        with self._cv:
            self._dead = True
            self._failure = failure
            reason = "connection to the gateway closed" if failure is None else f"connection to the gateway lost: {failure}"
            for waiter in self._session.end():
                waiter.answer = Answer(error=ConnectionClosedError(reason))
                waiter.event.set()
            self._cv.notify_all()

    def _send_line(self, line: bytes, fds: Sequence[int] = ()) -> None:
        with self._write_lock:
            if fds:
                # The descriptor rides on the first bytes of the request's line.
                sent = socket.send_fds(self._sock, [line], list(fds))
                if sent < len(line):
                    self._sock.sendall(line[sent:])
            else:
                self._sock.sendall(line)

    def _call_answer(self, method: str, params: Mapping[str, Any], fds: Sequence[int] = ()) -> Answer[Tcp]:
        waiter = _Waiter()
        with self._cv:
            if self._dead:
                raise ConnectionClosedError("connection to the gateway is closed")
            request_id, line = self._session.request(method, params, waiter)
        try:
            self._send_line(line, fds)
        except OSError as exc:
            with self._cv:
                self._session.forget(request_id)
            raise ConnectionClosedError(f"cannot write to the gateway: {exc}") from exc
        try:
            waiter.event.wait()
        except BaseException:
            with self._cv:
                self._session.forget(request_id)
            raise
        answer = waiter.answer
        assert answer is not None
        if answer.error is not None:
            raise answer.error
        return answer

    def _call(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._call_answer(method, params).value

    def _invoke(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._call(method, params)

    def _drop(self, obj: Tcp) -> None:
        with self._cv:
            self._session.drop_handle(obj)
            self._cv.notify_all()

    def _next_event(self, obj: Tcp, timeout: Optional[float]) -> Optional[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                event = self._session.take_event(obj)
                if event is not None:
                    return event
                if obj._state.gone or self._dead:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cv.wait(remaining)

    # -- event loop -----------------------------------------------------------------------
    def poll(self, timeout: Optional[float] = None) -> int:
        """Run the listeners of queued events, like the seed's ``iosched.poll()``.

        Waits up to ``timeout`` seconds (``None`` = until something is delivered, the
        connection ends or :meth:`stop` is called) for at least one event with a listener,
        then delivers every deliverable event in arrival order. Returns how many events
        were delivered. An exception from a listener propagates; undelivered events stay queued.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered = 0
        while True:
            with self._cv:
                while True:
                    item = self._session.next_deliverable()
                    if item is not None or delivered or self._dead or self._stop:
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cv.wait(remaining)
            if item is None:
                return delivered
            event, listeners = item
            delivered += 1
            for fn in listeners:
                fn(*event.listener_args())

    def run_forever(self) -> None:
        """Call :meth:`poll` until :meth:`stop` is called or the connection ends."""
        with self._cv:
            self._stop = False
        while True:
            with self._cv:
                if self._stop or self._dead:
                    self._stop = False
                    return
            self.poll()

    def stop(self) -> None:
        """Make :meth:`run_forever` return (from a listener or another thread)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def close(self) -> None:
        """Close the connection: the gateway closes every handle it owns. Idempotent.

        Joins the reader thread and closes every descriptor this client holds
        (descriptors already handed out by :meth:`Tcp.flyAway` are yours).
        """
        with self._cv:
            already = self._closed
            self._closed = True
        if not already:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected
        if self._reader is not threading.current_thread():
            self._reader.join()
        with self._write_lock:
            self._sock.close()

    # -- module functions of the seed ------------------------------------------------------
    @schema_doc("tcp.createServer")
    def createServer(
        self,
        sockaddr: AddressLike,
        backlog: int = 5,
        dev: Optional[str] = None,
        *,
        ipv6Only: Optional[bool] = None,
    ) -> Tcp:
        """Create a listening server bound to ``sockaddr`` (port 0: the system picks one; see ``local``/``sockName()``)."""
        params = drop_none(sockaddr=dict(normalize_sockaddr(sockaddr)), backlog=backlog, dev=dev, ipv6Only=ipv6Only)
        return self._call_answer("tcp.createServer", params).new_handle("tcp.createServer")

    @overload
    def createClient(self, sockaddr: AddressLike, timeout: Optional[int] = None, *, faults: Optional[List[Dict[str, Any]]] = None) -> Tcp: ...

    @overload
    def createClient(self, sockaddr: AddressLike, timeout: ConnectCallback, *, faults: Optional[List[Dict[str, Any]]] = None) -> Tcp: ...

    @schema_doc("tcp.createClient")
    def createClient(
        self, sockaddr: AddressLike, timeout: Union[int, None, ConnectCallback] = None, *, faults: Optional[List[Dict[str, Any]]] = None
    ) -> Tcp:
        """Connect to ``sockaddr``.

        ``createClient(sockaddr, timeout=None)`` waits for the connection (``timeout`` in ms;
        ``None`` = the kernel's connect timeout) and returns it, paused.
        ``createClient(sockaddr, callback)`` returns the Tcp at once; when the connect ends,
        ``callback(tcp, remoteAddr)`` runs in :meth:`poll`, ``remoteAddr`` ``None`` on failure
        (then ``tcp.connect_error`` says why). The connection starts flowing.
        ``faults`` (as :meth:`Tcp.addFault` takes them, as dicts) are in force before the first byte.
        """
        addr = dict(normalize_sockaddr(sockaddr))
        if callable(timeout):
            callback = timeout
            answer = self._call_answer("tcp.createClient", drop_none(sockaddr=addr, faults=faults, **{"async": True}))
            obj = answer.new_handle("tcp.createClient")
            obj.once("connect", callback)
            return obj
        answer = self._call_answer("tcp.createClient", drop_none(sockaddr=addr, timeout=timeout, faults=faults))
        return answer.new_handle("tcp.createClient")

    @schema_doc("tcp.createByFd")
    def createByFd(self, sockFd: Union[int, socket.socket]) -> Tcp:
        """Hand a TCP socket (a ``socket.socket`` or a descriptor number) to the gateway.

        The descriptor travels with SCM_RIGHTS; the gateway gets its own copy. Yours stays
        open (close it when done) and shares the file status flags: the gateway makes it
        non-blocking, so do not keep using your copy.
        """
        fd = descriptor_of(sockFd)
        return self._call_answer("tcp.createByFd", {"sockFd": fd}, fds=[fd]).new_handle("tcp.createByFd")


def connect(path: Optional[str] = None) -> Gateway:
    """Connect to the gateway at ``path`` (default: as the server chooses it:
    ``$TCPGW_SOCKET``, else ``$XDG_RUNTIME_DIR/tcpgw.sock``, else ``/tmp/tcpgw-<uid>.sock``).
    """
    return Gateway(path)
