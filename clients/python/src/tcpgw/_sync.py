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
import select
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
from ._errors import ConnectionClosedError, ProtocolError, RPCError
from ._transport import StreamSocket, Transport, open_stream, open_transport, read_handshake_line
from ._types import ErrorObject, SockAddr
from ._wire import (
    AddressLike,
    Answer,
    Event,
    HandleState,
    KeepState,
    Listener,
    Pending,
    SendData,
    Session,
    decode_data,
    descriptor_of,
    drop_none,
    errno_from_result,
    handshake_result,
    keep_request_line,
    normalize_sockaddr,
    recv_answer,
    recv_length,
    recv_window,
    recvfrom_result,
    schema_doc,
    send_params,
    state_from_result,
    valid_recv_length,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ConnectCallback = Callable[["Tcp", Optional[SockAddr]], object]
AcceptCallback = Callable[["Tcp", Optional[SockAddr]], object]

# Read-ahead tcp.recv requests one handle may have in flight here: with two, the gateway fills
# the next answer while this process decodes the one before, whichever core each runs on
# (threaded recv loop: 402-718 -> 637-827 MiB/s). The asyncio client keeps two as well.
_RECV_IN_FLIGHT = 2
_IDLE_S = 0.01  # the background reader leaves input to callers who wanted it this recently
_HANDSHAKE_S = 10.0  # bound on a handshake answer (session.keep, session.resume, tcp.attach)
_BACKOFF_FIRST_S = 0.05  # reconnect backoff of a kept session: doubling up to the max
_BACKOFF_MAX_S = 1.0


class FlyAwaySocket(socket.socket):
    """The socket :meth:`Tcp.flyAway` hands over: a real :class:`socket.socket`, in blocking mode.

    Attributes:
        buffered: bytes the gateway had already read from the socket but not delivered;
            they come before anything ``recv`` on this socket returns, so nothing is lost.
        eof: whether the gateway had already seen the peer's end of stream.
    """

    buffered: bytes = b""
    eof: bool = False


def _fly_away_socket(fd: int, result: Any, kept: bytes = b"") -> FlyAwaySocket:
    """The flown socket; ``kept``: bytes a read-ahead had already brought (they come first)."""
    sock = FlyAwaySocket(fileno=fd)
    # The gateway works with O_NONBLOCK, which lives on the shared open file description;
    # the socket object must agree with the flag, so make both blocking.
    sock.setblocking(True)
    if isinstance(result, Mapping):
        sock.buffered = kept + decode_data(result.get("buffered", ""), result.get("encoding", "base64"))
        sock.eof = bool(result.get("eof"))
    return sock


class _Waiter:
    """A blocking caller's slot for its answer (filled under the gateway's lock)."""

    __slots__ = ("answer",)

    def __init__(self) -> None:
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
            self._gw._changed()
        return self

    def once(self, name: str, fn: Listener) -> "Tcp":
        """Like :meth:`on`, but the listener is removed after its first call."""
        with self._gw._cv:
            self._state.add_listener(name, fn, once=True)
            self._gw._changed()
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

        Reads ahead: each ``tcp.recv`` asks for up to :data:`RECV_AHEAD` bytes, and once bytes
        came up to two more requests stay in flight, so the next answer is on its way while the
        caller works; what the caller did not take yet is kept here (counted by
        :meth:`pending`, handed over first by :meth:`flyAway`/:meth:`stream`/:meth:`resume`).
        """
        return self._gw._recv(self, length, timeout)

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
        with self._gw._lock:
            through_ahead = self._state.ahead_bytes > 0 or self._state.recv_busy
        if through_ahead and valid_recv_length(length):
            return self._gw._recv(self, length, timeout), self.remote  # kept bytes come first
        params = drop_none(length=length, timeout=timeout, encoding="base64")
        return recvfrom_result(self._invoke("tcp.recvfrom", params))

    @schema_doc("tcp.pending")
    def pending(self) -> int:
        """Bytes readable without waiting: the gateway's count plus bytes a read-ahead already brought here."""
        return int(self._invoke("tcp.pending", {})) + self._state.ahead_count()

    @schema_doc("tcp.resume")
    def resume(self) -> bool:
        """Switch to flowing mode; bytes a read-ahead already brought here are the first ``"data"`` event."""
        self._gw._requeue_ahead(self)
        try:
            return bool(self._invoke("tcp.resume", {}))
        finally:
            with self._gw._lock:
                # Answered: a read-ahead in flight was answered before (bytes: now events) or failed.
                self._state.resuming = False

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
        with self._gw._lock:
            kept = self._state.drain_ahead()
        return _fly_away_socket(answer.fd, answer.value, kept)


    def stream(self) -> StreamSocket:
        """This connection's raw byte stream, both ways, as a real blocking socket (contract §11).

        Calls ``tcp.stream``, opens a second connection to the same gateway address and
        presents the token with ``tcp.attach``; the returned :class:`~tcpgw.StreamSocket`
        then carries the TCP connection's bytes with no JSON: first those the gateway (or a
        read-ahead ``recv`` here) had already read. ``shutdown(SHUT_WR)`` sends FIN to the
        peer. The handle stays on this connection (``send``/``recv`` are -32001 there;
        options and ``close`` work) and gets a ``"close"`` event when the stream has
        finished. Over ``ssh://`` the stream runs through ``ssh ... tcpgw attach TOKEN``,
        relayed through a socket pair.
        """
        result = self._invoke("tcp.stream", {})
        with self._gw._lock:
            kept = self._state.drain_ahead()  # after the answer: a refused stream keeps them
        token = result.get("token") if isinstance(result, Mapping) else None
        if not isinstance(token, str):
            raise ProtocolError(f"tcp.stream answered {result!r}")
        sock, attached = open_stream(self._gw.path, token, time.monotonic() + _HANDSHAKE_S)
        sock.handle = self.handle
        sock._kept = kept
        if isinstance(attached, Mapping) and isinstance(attached.get("buffered"), int):
            sock.buffered = attached["buffered"]
        return sock


class Gateway(gen._SyncGatewayMethods):
    """A connection to a tcpgw gateway; the seed's ``Tcp`` module functions are its methods.

    Use :func:`connect` to make one. A ``with`` block closes it (and so every handle it owns).
    ``keep`` (ms) makes the session survive a dropped connection (see :func:`connect`).
    """

    def __init__(self, path: Optional[str] = None, *, keep: Optional[int] = None) -> None:
        transport, self.path = open_transport(path)
        self._transport: Transport = transport
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)  # answers, events, leadership changes
        self._bg_cv = threading.Condition(self._lock)  # the background reader's own (rarely notified)
        self._write_lock = threading.Lock()
        self._session: Session[Tcp, _Waiter] = Session(lambda handle, kind: Tcp(self, handle, kind))
        self._closed = False  # close() was called
        self._dead = False  # no answer or event will come any more
        self._stop = False
        self._failure: Optional[BaseException] = None
        # Leader/follower: whichever thread needs input reads the transport itself while the
        # others wait on _cv; the background reader only reads when no caller has wanted input
        # for _IDLE seconds, and yields (woken through the pipe) when one does.
        self._leader = False
        self._leader_bg = False
        self._waiting = 0
        self._sleepers = 0  # threads in _cv.wait (notify only when there are some)
        self._last_fg = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._poller = self._make_poller()
        self._close_event = threading.Event()
        try:
            if keep is not None:
                self._start_keep(keep)
        except BaseException:
            self._transport.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._reader = threading.Thread(target=self._background, name="tcpgw-reader", daemon=True)
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

    @property
    def session_token(self) -> Optional[str]:
        """The kept session's token (``keep=``), else ``None``."""
        keep = self._session.keep
        return keep.token if keep is not None else None

    # -- kept sessions (contract §12) -----------------------------------------------------
    def _start_keep(self, keep: int) -> None:
        try:
            self._transport.sendall(keep_request_line(keep))
            line, rest = read_handshake_line(self._transport, time.monotonic() + _HANDSHAKE_S)
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            # Over ssh the child's exit status says why (authentication, host key, no tcpgw).
            reason = self._transport.end_reason(1.0)
            raise ConnectionClosedError(f"{exc}" + (f"; {reason}" if reason is not None else "")) from exc
        result = handshake_result(line, "session.keep")
        if not isinstance(result, Mapping) or not isinstance(result.get("token"), str):
            raise ProtocolError(f"session.keep answered {result!r}")
        self._session.keep = KeepState(result["token"], int(result.get("grace", keep)))
        if rest:
            self._session.feed(rest, ())

    def _reconnect(self, failure: Optional[BaseException]) -> Optional[BaseException]:
        """The connection dropped: open a new one, resume, resend. Lock held, leadership ours.

        Returns ``None`` when resumed, else why the session is lost.
        """
        keep = self._session.keep
        assert keep is not None
        deadline = time.monotonic() + keep.grace / 1000.0
        delay = _BACKOFF_FIRST_S
        self._session.drop_input()
        self._lock.release()
        rest = b""
        lost: Optional[BaseException] = None
        try:
            with self._write_lock:
                self._transport.close()
                while True:
                    if self._closed:
                        lost = ConnectionClosedError("connection to the gateway closed")
                        break
                    try:
                        transport, _target = open_transport(self.path)
                    except OSError as exc:
                        failure = exc
                    else:
                        try:
                            transport.sendall(keep.resume_line())
                            line, rest = read_handshake_line(transport, min(deadline, time.monotonic() + _HANDSHAKE_S))
                            result = handshake_result(line, "session.resume")
                            received = result.get("received") if isinstance(result, Mapping) else None
                            if not isinstance(received, int):
                                raise ProtocolError(f"session.resume answered {result!r}")
                            for kept in keep.resumed(received):
                                transport.sendall(kept)
                            self._transport = transport
                            break
                        except RPCError as exc:
                            transport.close()
                            lost = ConnectionClosedError(f"the gateway refused to resume the session: {exc}")
                            break
                        except (OSError, ProtocolError, EOFError) as exc:
                            transport.close()
                            failure = exc
                    if time.monotonic() + delay >= deadline:
                        lost = ConnectionClosedError(
                            f"connection to the gateway lost and not resumed within the grace of {keep.grace} ms"
                            + (f": {failure}" if failure is not None else ""))
                        break
                    self._close_event.wait(delay)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
        finally:
            self._lock.acquire()
        if lost is not None:
            return lost
        self._poller = self._make_poller()
        if rest:
            self._dispatch(*self._session.feed(rest, ()))
        return None

    # -- plumbing -------------------------------------------------------------------------
    def _make_poller(self) -> "select.poll":
        poller = select.poll()
        poller.register(self._transport.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        return poller

    def _poke(self) -> None:
        """Wake a leader waiting in poll (the background reader, a poll(), an event iterator)."""
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except (BlockingIOError, OSError):
                pass  # the pipe is full: a wake-up is pending anyway

    def _dispatch(self, answers: List[Tuple[_Waiter, Answer[Tcp]]], touched: List[Tcp]) -> None:
        for waiter, answer in answers:
            waiter.answer = answer
        if (answers or touched) and self._sleepers:
            self._cv.notify_all()

    def _lead(self, deadline: Optional[float], interruptible: bool, background: bool = False) -> None:
        """Read the transport once as the leader. Called and returns with the lock held."""
        self._leader = True
        self._leader_bg = background
        view = self._session.read_space()
        transport = self._transport
        poller = self._poller
        # Always read with room for descriptors (recvmsg, about 1 µs more than recv): a leader
        # may already be blocked in its read when another thread sends tcp.flyAway, and a plain
        # read of the answer would make the kernel close the descriptor it carries.
        descriptors = transport.passes_fds
        self._lock.release()
        nbytes = -1
        fds: List[int] = []
        failure: Optional[BaseException] = None
        try:
            try:
                if interruptible or deadline is not None:
                    timeout = None if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000.0)
                    ready = False
                    for fd, _mask in poller.poll(timeout):
                        if fd == self._wake_r:
                            os.read(self._wake_r, 4096)
                        else:
                            ready = True
                    if ready:
                        nbytes, fds = transport.read_into(view, descriptors)
                else:
                    nbytes, fds = transport.read_into(view, descriptors)
            except OSError as exc:
                if not self._closed:
                    failure = exc
                nbytes = 0
        finally:
            self._lock.acquire()
            self._leader = False
            self._leader_bg = False
        if self._dead:
            for fd in fds:
                os.close(fd)
            return
        if nbytes < 0:
            if self._sleepers:
                self._cv.notify_all()  # someone wants to lead
            return
        if nbytes == 0:
            for fd in fds:
                os.close(fd)
            if failure is None and not self._closed:
                failure = transport.end_reason()
            self._input_ended(failure)
            return
        try:
            answers, touched = self._session.process(nbytes, fds)
        except ProtocolError as exc:
            self._input_ended(exc, resumable=False)
            return
        self._dispatch(answers, touched)
        keep = self._session.keep
        if keep is not None and keep.ack_due():
            self._leader = True  # nobody reads while the ack goes out
            self._lock.release()
            try:
                self._write_line(None)
            except OSError:
                pass  # the reader will see the drop and resume
            finally:
                self._lock.acquire()
                self._leader = False
        if self._sleepers:
            self._cv.notify_all()  # a waiting thread may lead now

    def _input_ended(self, failure: Optional[BaseException], resumable: bool = True) -> None:
        """End of input (lock held): resume a kept session, else shut down."""
        if resumable and not self._closed and self._session.keep is not None:
            self._leader = True
            try:
                lost = self._reconnect(failure)
            finally:
                self._leader = False
            if lost is None:
                self._cv.notify_all()
                return
            failure = lost
        self._shutdown_session(failure)

    def _await(self, done: Callable[[], bool], deadline: Optional[float], interruptible: bool) -> None:
        """Wait (lock held) until ``done()``, the connection ends or ``deadline``, reading
        the transport ourselves whenever no other thread does."""
        self._waiting += 1
        try:
            while not done() and not self._dead:
                if not self._leader:
                    self._lead(deadline, interruptible)
                else:
                    if self._leader_bg:
                        self._poke()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._sleepers += 1
                    try:
                        self._cv.wait(remaining)
                    finally:
                        self._sleepers -= 1
                if deadline is not None and time.monotonic() >= deadline:
                    return
        finally:
            self._waiting -= 1
            self._last_fg = time.monotonic()

    def _background(self) -> None:
        """The background reader: keeps input flowing while no caller reads (events, EOF)."""
        with self._lock:
            while not self._dead:
                if self._leader or self._waiting or time.monotonic() - self._last_fg < _IDLE_S:
                    self._bg_cv.wait(_IDLE_S)
                    continue
                self._lead(None, interruptible=True, background=True)

    def _shutdown_session(self, failure: Optional[BaseException]) -> None:
        """No more input (lock held): fail waiting calls, end iterators and polls, release descriptors."""
        if self._dead:
            return
        self._dead = True
        self._failure = failure
        if isinstance(failure, ConnectionClosedError):
            reason = str(failure)
        else:
            reason = "connection to the gateway closed" if failure is None else f"connection to the gateway lost: {failure}"
        for waiter in self._session.end():
            waiter.answer = Answer(error=ConnectionClosedError(reason))
        self._cv.notify_all()
        self._bg_cv.notify_all()
        self._poke()

    def _write_line(self, line: Optional[bytes], fds: Sequence[int] = (), pending: Optional[Pending[_Waiter]] = None) -> None:
        """Write one line (``None``: a session.ack), counted and kept on a kept session."""
        with self._write_lock:
            keep = self._session.keep
            if line is None:
                if keep is None:
                    return
                line = keep.ack_line()
            if keep is not None:
                number = keep.outgoing(line)
                if pending is not None:
                    pending.line = number
                try:
                    self._transport.sendall(line, fds)
                except OSError:
                    if self._closed:
                        raise
                    # Dropped: the line is kept and goes out again after the resume.
                return
            self._transport.sendall(line, fds)

    def _recv(self, obj: Tcp, length: int, timeout: Optional[int]) -> bytes:
        """``Tcp.recv``: bytes from ``ahead`` (filed in the gateway's order as answers are read),
        asking the gateway when none are kept or coming; then a read-ahead goes out."""
        if not valid_recv_length(length):
            # An invalid length: the gateway's to refuse (-32602), as given.
            params = drop_none(handle=obj.handle, length=length, timeout=timeout, encoding="base64")
            return recv_answer(self._call_answer("tcp.recv", params))[0]
        state = obj._state
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0) / 1000.0

        def arrived() -> bool:
            return bool(state.ahead_bytes) or state.recv_eof or state.recv_error is not None or not state.recv_busy

        while True:
            with self._lock:
                while True:
                    chunk = state.take_ahead(length)
                    if chunk is not None:
                        prefetch = None if self._dead else self._session.recv_prefetch(obj, _RECV_IN_FLIGHT)
                        break
                    if state.recv_eof:
                        state.recv_eof = False
                        return b""
                    if state.recv_error is not None:
                        error, state.recv_error = state.recv_error, None
                        raise error
                    if not state.recv_busy or state.gone:
                        chunk = None
                        break
                    if self._dead:
                        raise self._closed_error()
                    if deadline is not None and time.monotonic() >= deadline:
                        raise gen.RPCTimeoutError(-32002, f"recv on handle {obj.handle} timed out (nothing lost)")
                    # Our read-ahead (or another caller's recv) is in flight: wait for its answer.
                    self._last_fg = time.monotonic()
                    if self._leader_bg:
                        self._poke()
                    self._await(arrived, deadline, interruptible=False)
            if chunk is not None:
                if prefetch is not None:
                    self._send_prefetch(*prefetch)
                return chunk
            ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000.0))
            params = drop_none(handle=obj.handle, length=recv_length(length), timeout=ms, encoding="base64")
            self._call_answer("tcp.recv", params, sink=obj)  # its bytes are filed in ``ahead``

    def _send_prefetch(self, request_id: int, line: bytes) -> None:
        try:
            self._write_line(line, (), self._session.pending.get(request_id))
        except OSError:
            with self._lock:
                self._session.forget(request_id)  # the reader sees the connection end

    def _call_answer(self, method: str, params: Mapping[str, Any], fds: Sequence[int] = (),
                     sink: Optional[Tcp] = None) -> Answer[Tcp]:
        if method in gen.DESCRIPTOR_METHODS and not self._transport.passes_fds:
            raise gen.DescriptorError(
                -32006, f"{method} passes a socket descriptor, which cannot travel over {self.path} (only a local Unix socket)")
        waiter = _Waiter()
        with self._lock:
            if self._dead:
                raise self._closed_error()
            request_id, line = self._session.request(method, params, waiter, sink)
            pending = self._session.pending[request_id]
            self._last_fg = time.monotonic()  # keeps the background reader from taking over again
            if self._leader_bg:
                self._poke()  # the background reader yields: this thread reads its own answer
        try:
            self._write_line(line, fds, pending)
        except OSError as exc:
            with self._lock:
                self._session.forget(request_id)
            reason = self._transport.end_reason(1.0)
            raise ConnectionClosedError(
                f"cannot write to the gateway: {exc}" + (f"; {reason}" if reason is not None else "")) from exc
        with self._lock:
            try:
                self._await(lambda: waiter.answer is not None, None, interruptible=False)
            except BaseException:
                self._session.forget(request_id)
                raise
            answer = waiter.answer
        if answer is None:
            raise ConnectionClosedError("connection to the gateway closed")
        if answer.error is not None:
            raise answer.error
        return answer

    def _closed_error(self) -> ConnectionClosedError:
        failure = self._failure
        if isinstance(failure, ConnectionClosedError):
            return ConnectionClosedError(str(failure))
        if failure is not None and not self._closed:
            return ConnectionClosedError(f"connection to the gateway is closed: {failure}")
        return ConnectionClosedError("connection to the gateway is closed")

    def _call(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._call_answer(method, params).value

    def _invoke(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._call(method, params)

    def _drop(self, obj: Tcp) -> None:
        with self._cv:
            self._session.drop_handle(obj)
            self._cv.notify_all()
            self._poke()

    def _requeue_ahead(self, obj: Tcp) -> None:
        with self._cv:
            obj._state.resuming = True
            self._session.requeue_ahead(obj)
            self._changed()

    def _changed(self) -> None:
        """Listeners changed: a poll() waiting may now have something to deliver."""
        self._cv.notify_all()
        self._poke()

    def _next_event(self, obj: Tcp, timeout: Optional[float]) -> Optional[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        state = obj._state
        with self._cv:
            self._await(lambda: bool(state.queue) or state.gone, deadline, interruptible=True)
            return self._session.take_event(obj)

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
        found: List[Optional[Tuple[Event, List[Listener]]]] = [None]

        def ready() -> bool:
            found[0] = self._session.next_deliverable()
            return found[0] is not None or self._stop

        while True:
            with self._cv:
                if delivered:
                    found[0] = self._session.next_deliverable()
                else:
                    self._await(ready, deadline, interruptible=True)
                    if found[0] is None and not self._dead:
                        found[0] = self._session.next_deliverable()
                item = found[0]
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
            self._poke()

    def close(self) -> None:
        """Close the connection: the gateway closes every handle it owns. Idempotent.

        A kept session ends too (its grace is set to 0 first). Joins the reader thread and
        closes every descriptor this client holds (descriptors already handed out by
        :meth:`Tcp.flyAway` are yours).
        """
        with self._cv:
            already = self._closed
            self._closed = True
            dead = self._dead
            keep = self._session.keep
        if not already:
            self._close_event.set()
            if keep is not None and not dead:
                try:
                    self._write_line(keep_request_line(0))
                except OSError:
                    pass
            with self._cv:
                self._transport.wake()
                self._poke()
                self._cv.notify_all()
                self._bg_cv.notify_all()
        if self._reader is not threading.current_thread():
            self._reader.join()
        with self._cv:
            # A kept session's reader could be between connections: make sure it is over.
            self._shutdown_session(None)
        with self._write_lock:
            self._transport.close()
        with self._cv:
            if self._wake_w >= 0 and not self._leader:
                os.close(self._wake_w)
                os.close(self._wake_r)
                self._wake_w = self._wake_r = -1

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


def connect(path: Optional[str] = None, *, keep: Optional[int] = None) -> Gateway:
    """Connect to the gateway at ``path`` (default: as the server chooses it:
    ``$TCPGW_SOCKET``, else ``$XDG_RUNTIME_DIR/tcpgw.sock``, else ``/tmp/tcpgw-<uid>.sock``).

    ``path`` may also be ``ssh://[user@]host[:port][/socket]``: the client runs
    ``ssh -T -o BatchMode=yes [-p P] [-l U] HOST -- tcpgw bridge [--socket PATH]`` and talks
    through its stdin/stdout (``$TCPGW_SSH`` replaces ``ssh``, ``$TCPGW_REMOTE_BIN`` the
    remote ``tcpgw``); methods that pass descriptors raise :class:`~tcpgw.DescriptorError`
    there before sending.

    ``keep`` (ms) sends ``session.keep {grace: keep}`` first: when the connection drops, the
    client reconnects (re-running ssh for ``ssh://``) with backoff within the grace, resumes
    the session and resends what the gateway had not read, so blocked calls and event
    iterators simply continue. When that fails, calls raise :class:`~tcpgw.ConnectionClosedError`.
    A gateway without sessions answers :class:`~tcpgw.MethodNotFoundError`.
    """
    return Gateway(path, keep=keep)
