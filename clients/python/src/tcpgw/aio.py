"""asyncio flavour of the tcpgw client: the same API as :mod:`tcpgw`, as coroutines.

>>> gw = await tcpgw.aio.connect()
>>> srv = await gw.createServer(tcpgw.sockaddr("127.0.0.1", 0))
>>> conn = await gw.createClient(("127.0.0.1", (await srv.sockName())["port"]))
>>> async for ev in (await srv.accept()).events(): ...

No threads: the connection is read with ``loop.add_reader``. Listener callbacks (``on``,
and the callbacks of ``createClient(addr, cb)`` / ``accept(None, cb)``) run in the event
loop as soon as their event arrives (or, for events queued before the listener was
attached, right after attaching); a callback may be a coroutine function, whose coroutine
is run as a task. Differences from the threaded client: ``sockFd`` is a coroutine method
(``await conn.sockFd()``), and there is no ``poll``: the loop delivers events.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    List,
    Mapping,
    MutableMapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
    overload,
)

from . import _generated as gen
from ._errors import ConnectionClosedError, ProtocolError, RPCError
from ._sync import _BACKOFF_FIRST_S, _BACKOFF_MAX_S, _HANDSHAKE_S, FlyAwaySocket, _fly_away_socket
from ._transport import PipeTransport, SshAddress, Transport, UnixTransport, is_ssh, open_stream
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
    default_socket_path,
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

__all__ = ["connect", "Gateway", "Tcp", "FlyAwaySocket"]

#: ``callback(tcp, remoteAddr)`` of ``createClient`` / ``callback(newTcp, remoteAddr)`` of
#: ``accept``; may be a coroutine function (its coroutine runs as a task).
# Read-ahead tcp.recv requests one handle may have in flight, as in the threaded client. Two
# pay here since the reader sends the next one itself (``_wake_recv_waiters``): asyncio recv
# loop 644 -> 836 MiB/s median, and 369 -> 566 when the socket's receive window stays small.
_AIO_IN_FLIGHT = 2

ConnectCallback = Callable[["Tcp", Optional[SockAddr]], object]
AcceptCallback = Callable[["Tcp", Optional[SockAddr]], object]


class Tcp(gen._AsyncTcpMethods):
    """A gateway handle (asyncio): the seed's methods as coroutines.

    Same attributes as :class:`tcpgw.Tcp` (``handle``, ``kind``, ``local``, ``remote``,
    ``host``, ``connect_error``, ``closed``). ``async with`` closes the handle.
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
        return f"<tcpgw.aio.Tcp handle={self.handle} kind={self.kind} {state} local={self.local} remote={self.remote}>"

    async def __aenter__(self) -> "Tcp":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether the handle is gone: closed, flown away, reported closed, or the connection ended."""
        return self._state.gone

    @property
    def gateway(self) -> "Gateway":
        """The :class:`Gateway` connection this handle belongs to."""
        return self._gw

    async def _invoke(self, method: str, params: Mapping[str, Any]) -> Any:
        return (await self._gw._call_answer(method, {"handle": self.handle, **params})).value

    # -- events ---------------------------------------------------------------------------
    def on(self, name: str, fn: Listener) -> "Tcp":
        """Attach a listener (same names and arguments as :meth:`tcpgw.Tcp.on`); returns ``self``.

        Runs in the event loop; a coroutine function's coroutine runs as a task. Events
        queued before attaching are delivered right after.
        """
        self._state.add_listener(name, fn, once=False)
        self._gw._schedule_pump()
        return self

    def once(self, name: str, fn: Listener) -> "Tcp":
        """Like :meth:`on`, but the listener is removed after its first call."""
        self._state.add_listener(name, fn, once=True)
        self._gw._schedule_pump()
        return self

    def off(self, name: str, fn: Listener) -> bool:
        """Remove a listener; returns whether it was attached."""
        return self._state.remove_listener(name, fn)

    def queued(self) -> Tuple[Event, ...]:
        """A snapshot of this handle's events not yet delivered or taken, oldest first."""
        return tuple(self._state.queue)

    async def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """Take this handle's oldest queued event, waiting up to ``timeout`` seconds.

        ``None`` on timeout or when no event can come any more.
        """
        return await self._gw._next_event(self, timeout)

    async def events(self, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        """``async for ev in conn.events(): ...`` — this handle's events in arrival order.

        Stops after the ``"close"`` event, when the handle or connection is closed, or after
        ``timeout`` seconds without an event (if given). Listeners are bypassed.
        """
        while True:
            event = await self.next_event(timeout)
            if event is None:
                return
            yield event
            if event.name == "close":
                return

    # -- seed methods with Python-specific shapes -----------------------------------------
    @schema_doc("tcp.sockFd")
    async def sockFd(self) -> int:
        """The descriptor number inside the gateway (a coroutine here; a property in the threaded client)."""
        return int(await self._invoke("tcp.sockFd", {}))

    @overload
    async def accept(
        self, remoteAddr: Optional[MutableMapping[str, Any]] = None, timeout: Optional[int] = None
    ) -> "Tcp": ...

    @overload
    async def accept(self, remoteAddr: None, timeout: AcceptCallback) -> None: ...

    @schema_doc("tcp.accept")
    async def accept(
        self,
        remoteAddr: Optional[MutableMapping[str, Any]] = None,
        timeout: Union[int, None, AcceptCallback] = None,
    ) -> Optional["Tcp"]:
        """As :meth:`tcpgw.Tcp.accept`: ``await srv.accept(remoteAddr=None, timeout=None)`` or
        ``await srv.accept(None, callback)`` (callback(newTcp, remoteAddr) per connection)."""
        if callable(timeout):
            self.on("accept", timeout)
            try:
                await self._invoke("tcp.accept", {"async": True})
            except BaseException:
                self.off("accept", timeout)
                raise
            return None
        answer = await self._gw._call_answer("tcp.accept", drop_none(handle=self.handle, timeout=timeout))
        new = answer.new_handle("tcp.accept")
        if remoteAddr is not None and new.remote is not None:
            remoteAddr.clear()
            remoteAddr.update(new.remote)
        return new

    @schema_doc("tcp.send")
    async def send(
        self,
        data: SendData,
        *args: Optional[int],
        offset: Optional[int] = None,
        length: Optional[int] = None,
        timeout: Optional[int] = None,
    ) -> int:
        """As :meth:`tcpgw.Tcp.send` (same data types and seed argument forms)."""
        return int(await self._invoke("tcp.send", send_params(data, args, offset, length, timeout)))

    @schema_doc("tcp.sendto")
    async def sendto(
        self,
        remoteAddr: object,
        data: SendData,
        *args: Optional[int],
        offset: Optional[int] = None,
        length: Optional[int] = None,
        timeout: Optional[int] = None,
    ) -> int:
        """As :meth:`send`; ``remoteAddr`` is ignored, as in the seed."""
        return int(await self._invoke("tcp.sendto", send_params(data, args, offset, length, timeout)))

    @schema_doc("tcp.recv")
    async def recv(self, length: int = 65536, timeout: Optional[int] = None) -> bytes:
        """As :meth:`tcpgw.Tcp.recv`: up to ``length`` bytes, ``b""`` at end of stream (reads ahead the same way)."""
        return await self._gw._recv(self, length, timeout)

    @schema_doc("tcp.recv")
    async def recv_into(
        self, buffer: WriteableBuffer, offset: int = 0, length: Optional[int] = None, timeout: Optional[int] = None
    ) -> int:
        """As :meth:`tcpgw.Tcp.recv_into`: fills ``buffer[offset:]``, returns the count (0 at EOF)."""
        view, want = recv_window(buffer, offset, length)
        if want == 0:
            return 0
        data = await self.recv(want, timeout)
        view[offset:offset + len(data)] = data
        return len(data)

    @schema_doc("tcp.recvfrom")
    async def recvfrom(self, length: int = 65536, timeout: Optional[int] = None) -> Tuple[bytes, Optional[SockAddr]]:
        """As :meth:`tcpgw.Tcp.recvfrom`: ``(data, remoteAddr)``."""
        if (self._state.ahead_bytes or self._state.recv_busy) and valid_recv_length(length):
            return await self._gw._recv(self, length, timeout), self.remote  # kept bytes come first
        params = drop_none(length=length, timeout=timeout, encoding="base64")
        return recvfrom_result(await self._invoke("tcp.recvfrom", params))

    @schema_doc("tcp.pending")
    async def pending(self) -> int:
        """Bytes readable without waiting: the gateway's count plus bytes a read-ahead already brought here."""
        return int(await self._invoke("tcp.pending", {})) + self._state.ahead_count()

    @schema_doc("tcp.resume")
    async def resume(self) -> bool:
        """Switch to flowing mode; bytes a read-ahead already brought here are the first ``"data"`` event."""
        self._gw._requeue_ahead(self)
        try:
            return bool(await self._invoke("tcp.resume", {}))
        finally:
            # Answered: a read-ahead in flight was answered before (bytes: now events) or failed.
            self._state.resuming = False

    @schema_doc("tcp.getState")
    async def getState(self) -> int:
        """The TCP state as a :class:`tcpgw.TcpState` (an ``int``)."""
        return state_from_result(await self._invoke("tcp.getState", {}))

    @schema_doc("tcp.error")
    async def error(self) -> int:
        """The pending socket error number (0 if none), cleared."""
        return errno_from_result(await self._invoke("tcp.error", {}))

    @schema_doc("tcp.close")
    async def close(self) -> None:
        """Close the handle. Idempotent."""
        if self._state.gone:
            return
        try:
            await self._invoke("tcp.close", {})
        except (gen.UnknownHandleError, ConnectionClosedError):
            pass  # gone either way
        finally:
            self._gw._drop(self)

    @schema_doc("tcp.flyAway")
    async def flyAway(self) -> FlyAwaySocket:
        """As :meth:`tcpgw.Tcp.flyAway`: a real blocking socket with ``buffered`` and ``eof``."""
        answer = await self._gw._call_answer("tcp.flyAway", {"handle": self.handle})
        self._gw._drop(self)
        if answer.fd is None:
            raise gen.DescriptorError(-32006, "the gateway's flyAway answer carried no descriptor")
        return _fly_away_socket(answer.fd, answer.value, self._state.drain_ahead())


    async def stream(self) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """As :meth:`tcpgw.Tcp.stream`: the raw byte stream as asyncio ``(reader, writer)``.

        The reader's first bytes are those already read (by the gateway, or by a read-ahead
        ``recv`` here); ``writer.write_eof()`` sends FIN to the peer.
        """
        result = await self._invoke("tcp.stream", {})
        kept = self._state.drain_ahead()  # after the answer: a refused stream keeps them
        token = result.get("token") if isinstance(result, Mapping) else None
        if not isinstance(token, str):
            raise ProtocolError(f"tcp.stream answered {result!r}")
        loop = asyncio.get_running_loop()
        # The attach handshake is a short blocking exchange (bounded): off the loop.
        sock, _attached = await loop.run_in_executor(
            None, open_stream, self._gw.path, token, time.monotonic() + _HANDSHAKE_S)
        sock.setblocking(False)
        reader = asyncio.StreamReader(limit=1 << 20)
        if kept:
            reader.feed_data(kept)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=sock)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Gateway(gen._AsyncGatewayMethods):
    """An asyncio connection to the gateway. Make one with :func:`connect`; ``async with`` closes it."""

    def __init__(self, transport: Transport, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self._transport: Transport = transport
        self._loop = loop
        self._session: Session[Tcp, "asyncio.Future[Answer[Tcp]]"] = Session(
            lambda handle, kind: Tcp(self, handle, kind)
        )
        self._write_lock = asyncio.Lock()
        self._dead = False
        self._failure: Optional[BaseException] = None
        self._closing = False
        self._reconnecting = False
        self._changed: "asyncio.Future[None]" = loop.create_future()
        self._pump_scheduled = False
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._closed_future: "asyncio.Future[None]" = loop.create_future()
        # Tasks waiting in ``recv`` for a read-ahead's bytes, by handle: the reader wakes them
        # itself (one loop turn sooner than through ``_changed``) and sends their next read-ahead.
        self._recv_waiters: Dict[Tcp, List["asyncio.Future[bool]"]] = {}
        # What a write from the reader left unwritten (the socket was full): written first,
        # under the write lock, before any other line.
        self._tail: Optional[bytes] = None

    def _start_reading(self) -> None:
        self._loop.add_reader(self._transport.fileno(), self._on_readable)

    def __repr__(self) -> str:
        return f"<tcpgw.aio.Gateway path={self.path!r} {'closed' if self._dead else 'open'}>"

    async def __aenter__(self) -> "Gateway":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._dead

    @property
    def session_token(self) -> Optional[str]:
        """The kept session's token (``keep=``), else ``None``."""
        keep = self._session.keep
        return keep.token if keep is not None else None

    # -- input ----------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            # A plain read is safe when no descriptor is due: on one thread, a tcp.flyAway is
            # counted before it is sent, so before any read that could see its answer.
            nbytes, fds = self._transport.read_into(self._session.read_space(), self._session.descriptors_due > 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._input_ended(exc)
            return
        if not nbytes:
            for fd in fds:
                os.close(fd)
            self._input_ended(None if self._closing else self._transport.end_reason(0.05))
            return
        try:
            answers, touched = self._session.process(nbytes, fds)
        except ProtocolError as exc:
            self._lost(exc)
            return
        self._deliver(answers, touched)
        keep = self._session.keep
        if keep is not None and keep.ack_due():
            self._spawn(self._write_line(None))

    def _deliver(self, answers: "List[Tuple[asyncio.Future[Answer[Tcp]], Answer[Tcp]]]", touched: List[Tcp]) -> None:
        if touched and self._recv_waiters:
            self._wake_recv_waiters(touched)
        for future, answer in answers:
            if future.done():
                if answer.fd is not None:
                    os.close(answer.fd)  # its caller was cancelled
                continue
            if answer.error is not None:
                future.set_exception(answer.error)
            else:
                future.set_result(answer)
        if touched:
            self._notify(recv_waiters=False)  # theirs were woken above, per handle
            if self._session.ready:  # events queued: some may have listeners
                self._schedule_pump()

    def _wake_recv_waiters(self, touched: List[Tcp]) -> None:
        """Bytes (or an end) came for handles whose ``recv`` callers wait: send each one's next
        read-ahead now, then wake the callers directly.

        The caller would send that read-ahead itself when it takes the bytes, a loop turn later;
        sent from here, the gateway reads the socket while this client delivers.
        """
        session = self._session
        direct = session.keep is None and not self._dead and self._tail is None and not self._write_lock.locked()
        for obj in touched:
            waiters = self._recv_waiters.pop(obj, None)
            if waiters is None:
                continue
            if direct:
                prefetch = session.recv_prefetch(obj, _AIO_IN_FLIGHT)
                if prefetch is not None:
                    direct = self._write_from_reader(*prefetch)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(True)

    def _write_from_reader(self, request_id: int, line: bytes) -> bool:
        """Write a line outside any task (nobody holds the write lock); what the socket does not
        take now becomes ``_tail``. False: no more writes from here this time."""
        try:
            sent = self._transport.write(line)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._session.forget(request_id)  # the reader sees the connection end
            return False
        if sent == len(line):
            return True
        self._tail = line[sent:]
        self._spawn(self._flush_tail())
        return False

    async def _flush_tail(self) -> None:
        async with self._write_lock:
            try:
                await self._write_tail()
            except OSError:
                pass  # the reader sees the connection end

    async def _write_tail(self) -> None:
        """Under the write lock: the rest of a line the reader began."""
        tail, self._tail = self._tail, None
        if tail:
            await _write_all(self._loop, self._transport, tail)

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self, recv_waiters: bool = True) -> None:
        """Something changed: wake whoever waits on ``_changed`` (and every ``recv`` waiter,
        unless the caller woke those of the handles concerned)."""
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = self._loop.create_future()
        if recv_waiters and self._recv_waiters:
            waiting, self._recv_waiters = self._recv_waiters, {}
            for waiters in waiting.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(True)

    def _input_ended(self, failure: Optional[BaseException]) -> None:
        """End of input: resume a kept session in the background, else shut down."""
        if self._session.keep is not None and not self._closing and not self._reconnecting:
            self._loop.remove_reader(self._transport.fileno())
            self._reconnecting = True
            self._spawn(self._reconnect(failure))
            return
        self._lost(failure)

    async def _reconnect(self, failure: Optional[BaseException]) -> None:
        keep = self._session.keep
        assert keep is not None
        deadline = self._loop.time() + keep.grace / 1000.0
        delay = _BACKOFF_FIRST_S
        self._session.drop_input()
        lost: Optional[BaseException] = None
        rest = b""
        async with self._write_lock:
            self._transport.close()
            while True:
                if self._closing:
                    lost = ConnectionClosedError("connection to the gateway closed")
                    break
                transport: Optional[Transport] = None
                try:
                    transport = await _open(self.path, self._loop)
                    await _write_all(self._loop, transport, keep.resume_line())
                    line, rest = await _read_handshake(self._loop, transport, min(deadline, self._loop.time() + _HANDSHAKE_S))
                    result = handshake_result(line, "session.resume")
                    received = result.get("received") if isinstance(result, Mapping) else None
                    if not isinstance(received, int):
                        raise ProtocolError(f"session.resume answered {result!r}")
                    for kept in keep.resumed(received):
                        await _write_all(self._loop, transport, kept)
                    self._transport = transport
                    break
                except RPCError as exc:
                    if transport is not None:
                        transport.close()
                    lost = ConnectionClosedError(f"the gateway refused to resume the session: {exc}")
                    break
                except (OSError, ProtocolError, EOFError) as exc:
                    if transport is not None:
                        transport.close()
                    failure = exc
                if self._loop.time() + delay >= deadline:
                    lost = ConnectionClosedError(
                        f"connection to the gateway lost and not resumed within the grace of {keep.grace} ms"
                        + (f": {failure}" if failure is not None else ""))
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
        self._reconnecting = False
        if lost is not None:
            self._lost(lost)
            return
        if self._dead:  # closed while the resume was under way
            self._transport.close()
            return
        self._start_reading()
        if rest:
            self._deliver(*self._session.feed(rest, ()))

    def _lost(self, failure: Optional[BaseException]) -> None:
        """No more input: fail waiting calls, end iterators, release descriptors."""
        if self._dead:
            return
        self._dead = True
        self._failure = failure
        if not self._reconnecting:
            try:
                self._loop.remove_reader(self._transport.fileno())
            except (ValueError, OSError):
                pass  # a transport already closed (a failed resume) is not registered
        if isinstance(failure, ConnectionClosedError):
            reason = str(failure)
        else:
            reason = "connection to the gateway closed" if failure is None else f"connection to the gateway lost: {failure}"
        for future in self._session.end():
            if not future.done():
                future.set_exception(ConnectionClosedError(reason))
        self._transport.close()
        self._tail = None
        self._notify()
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    # -- listeners ------------------------------------------------------------------------
    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        while True:
            item = self._session.next_deliverable()
            if item is None:
                return
            event, listeners = item
            for fn in listeners:
                try:
                    result = fn(*event.listener_args())
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                except Exception as exc:  # a listener's bug must not stop delivery to the others
                    self._loop.call_exception_handler(
                        {"message": f"tcpgw listener for {event.name!r} raised", "exception": exc, "event": event}
                    )

    async def _wait_changed(self, deadline: Optional[float], recv_of: Optional[Tcp] = None) -> bool:
        """Wait for the next delivery (``_changed``) or the loop time ``deadline``; False: the
        deadline came first. ``_changed`` is shared, so it is never cancelled by this wait.
        ``recv_of``: a ``recv`` waiting for that handle's bytes (see ``_recv_waiters``).

        Cheaper than ``wait_for(shield(...))``: one future and one timer, and the waiting task
        wakes two loop turns after the delivery instead of three. A ``recv`` waits on its own
        future alone, which ``_deliver`` (or ``_notify``) resolves: it wakes one loop turn after.
        """
        changed = self._changed
        if deadline is None and recv_of is None:
            await asyncio.shield(changed)
            return True
        mine: "asyncio.Future[bool]" = self._loop.create_future()

        def wake(_changed: object = None) -> None:
            if not mine.done():
                mine.set_result(_changed is not None)

        if recv_of is None:
            changed.add_done_callback(wake)
        else:
            self._recv_waiters.setdefault(recv_of, []).append(mine)
        timer = None if deadline is None else self._loop.call_at(deadline, wake)
        try:
            return await mine
        finally:
            if timer is not None:
                timer.cancel()
            if recv_of is None:
                changed.remove_done_callback(wake)
            else:
                waiters = self._recv_waiters.get(recv_of)
                if waiters is not None and mine in waiters:
                    waiters.remove(mine)
                    if not waiters:
                        del self._recv_waiters[recv_of]

    async def _next_event(self, obj: Tcp, timeout: Optional[float]) -> Optional[Event]:
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            event = self._session.take_event(obj)
            if event is not None:
                return event
            if obj._state.gone or self._dead:
                return None
            remaining = None if deadline is None else deadline - self._loop.time()
            if remaining is not None and remaining <= 0:
                return None
            if not await self._wait_changed(deadline):
                return None

    # -- output ---------------------------------------------------------------------------
    async def _write_line(self, line: Optional[bytes], fds: Sequence[int] = (),
                          pending: "Optional[Pending[asyncio.Future[Answer[Tcp]]]]" = None) -> None:
        """Write one line (``None``: a session.ack), counted and kept on a kept session."""
        if line is not None and self._session.keep is None and self._tail is None and not self._write_lock.locked():
            # Nobody is writing: write what the socket takes now (usually all), no coroutine hop.
            try:
                sent = self._transport.write(line, fds)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent == len(line):
                return
            async with self._write_lock:
                await _write_all(self._loop, self._transport, line[sent:], fds if sent == 0 else ())
            return
        async with self._write_lock:
            if self._tail is not None:
                await self._write_tail()
            keep = self._session.keep
            if line is None:
                if keep is None or self._dead:
                    return
                line = keep.ack_line()
            if keep is None:
                await _write_all(self._loop, self._transport, line, fds)
                return
            number = keep.outgoing(line)
            if pending is not None:
                pending.line = number
            if self._reconnecting:
                return  # kept: resent after the resume
            try:
                await _write_all(self._loop, self._transport, line, fds)
            except OSError:
                if self._closing or self._dead:
                    raise
                # Dropped: the line is kept and goes out again after the resume.

    async def _recv(self, obj: Tcp, length: int, timeout: Optional[int]) -> bytes:
        """``Tcp.recv``: as the threaded client's (bytes filed in ``ahead``, read-aheads in flight)."""
        if not valid_recv_length(length):
            params = drop_none(handle=obj.handle, length=length, timeout=timeout, encoding="base64")
            return recv_answer(await self._call_answer("tcp.recv", params))[0]
        state = obj._state
        loop = self._loop
        deadline = None if timeout is None else loop.time() + max(timeout, 0) / 1000.0
        while True:
            chunk = state.take_ahead(length)
            if chunk is not None:
                prefetch = None if self._dead else self._session.recv_prefetch(obj, _AIO_IN_FLIGHT)
                if prefetch is not None:
                    request_id, line = prefetch
                    try:
                        await self._write_line(line, (), self._session.pending.get(request_id))
                    except OSError:
                        self._session.forget(request_id)  # the reader sees the connection end
                return chunk
            if state.recv_eof:
                state.recv_eof = False
                return b""
            if state.recv_error is not None:
                error, state.recv_error = state.recv_error, None
                raise error
            if not state.recv_busy or state.gone:
                ms = None if deadline is None else max(0, int((deadline - loop.time()) * 1000.0))
                params = drop_none(handle=obj.handle, length=recv_length(length), timeout=ms, encoding="base64")
                await self._call_answer("tcp.recv", params, sink=obj)  # its bytes are filed in ``ahead``
                continue
            if self._dead:
                raise ConnectionClosedError("connection to the gateway is closed")
            # Our read-ahead (or another task's recv) is in flight: wait for its answer.
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise gen.RPCTimeoutError(-32002, f"recv on handle {obj.handle} timed out (nothing lost)")
            await self._wait_changed(deadline, obj)

    async def _call_answer(self, method: str, params: Mapping[str, Any], fds: Sequence[int] = (),
                           sink: Optional[Tcp] = None) -> Answer[Tcp]:
        if method in gen.DESCRIPTOR_METHODS and not self._transport.passes_fds:
            raise gen.DescriptorError(
                -32006, f"{method} passes a socket descriptor, which cannot travel over {self.path} (only a local Unix socket)")
        if self._dead:
            failure = self._failure
            if isinstance(failure, ConnectionClosedError):
                raise ConnectionClosedError(str(failure))
            if failure is not None and not self._closing:
                raise ConnectionClosedError(f"connection to the gateway is closed: {failure}")
            raise ConnectionClosedError("connection to the gateway is closed")
        future: "asyncio.Future[Answer[Tcp]]" = self._loop.create_future()
        request_id, line = self._session.request(method, params, future, sink)
        try:
            await self._write_line(line, fds, self._session.pending.get(request_id))
        except OSError as exc:
            self._session.forget(request_id)
            reason = self._transport.end_reason(0.05)
            raise ConnectionClosedError(
                f"cannot write to the gateway: {exc}" + (f"; {reason}" if reason is not None else "")) from exc
        except BaseException:
            self._session.forget(request_id)
            raise
        try:
            return await future
        except asyncio.CancelledError:
            self._session.forget(request_id)
            raise

    async def _invoke(self, method: str, params: Mapping[str, Any]) -> Any:
        return (await self._call_answer(method, params)).value

    def _drop(self, obj: Tcp) -> None:
        self._session.drop_handle(obj)
        self._notify()

    def _requeue_ahead(self, obj: Tcp) -> None:
        obj._state.resuming = True
        self._session.requeue_ahead(obj)
        self._notify()
        self._schedule_pump()

    # -- lifecycle ------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the connection (the gateway closes every handle it owns; a kept session ends). Idempotent."""
        if not self._closing and not self._dead and self._session.keep is not None and not self._reconnecting:
            self._closing = True
            try:
                await self._write_line(keep_request_line(0))
            except OSError:
                pass
        self._closing = True
        self._lost(None)
        if self._tasks:
            # Listener tasks may be waiting on calls that just failed; let them finish.
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait_closed(self) -> None:
        """Wait until the connection ends (closed here or by the gateway)."""
        await asyncio.shield(self._closed_future)

    # -- module functions of the seed ------------------------------------------------------
    @schema_doc("tcp.createServer")
    async def createServer(
        self,
        sockaddr: AddressLike,
        backlog: int = 5,
        dev: Optional[str] = None,
        *,
        ipv6Only: Optional[bool] = None,
    ) -> Tcp:
        """As :meth:`tcpgw.Gateway.createServer`."""
        params = drop_none(sockaddr=dict(normalize_sockaddr(sockaddr)), backlog=backlog, dev=dev, ipv6Only=ipv6Only)
        return (await self._call_answer("tcp.createServer", params)).new_handle("tcp.createServer")

    @schema_doc("tcp.createClient")
    async def createClient(
        self,
        sockaddr: AddressLike,
        timeout: Union[int, None, ConnectCallback] = None,
        *,
        faults: Optional[List[Dict[str, Any]]] = None,
    ) -> Tcp:
        """As :meth:`tcpgw.Gateway.createClient`: ``await gw.createClient(addr, timeout=None)``
        or ``await gw.createClient(addr, callback)`` (callback(tcp, remoteAddr), remoteAddr None on failure)."""
        addr = dict(normalize_sockaddr(sockaddr))
        if callable(timeout):
            answer = await self._call_answer("tcp.createClient", drop_none(sockaddr=addr, faults=faults, **{"async": True}))
            obj = answer.new_handle("tcp.createClient")
            obj.once("connect", timeout)
            return obj
        answer = await self._call_answer("tcp.createClient", drop_none(sockaddr=addr, timeout=timeout, faults=faults))
        return answer.new_handle("tcp.createClient")

    @schema_doc("tcp.createByFd")
    async def createByFd(self, sockFd: Union[int, socket.socket]) -> Tcp:
        """As :meth:`tcpgw.Gateway.createByFd`: the descriptor travels with SCM_RIGHTS."""
        fd = descriptor_of(sockFd)
        return (await self._call_answer("tcp.createByFd", {"sockFd": fd}, fds=[fd])).new_handle("tcp.createByFd")


async def _wait_fd(loop: asyncio.AbstractEventLoop, fd: int, write: bool, timeout: Optional[float] = None) -> None:
    future: "asyncio.Future[None]" = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        if timeout is None:
            await future
        else:
            await asyncio.wait_for(future, timeout)
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _write_all(loop: asyncio.AbstractEventLoop, transport: Transport, data: bytes, fds: Sequence[int] = ()) -> None:
    """Write all of ``data`` to a non-blocking transport (descriptors on its first bytes)."""
    view = memoryview(data)
    while view:
        try:
            sent = transport.write(view, fds)
        except (BlockingIOError, InterruptedError):
            await _wait_fd(loop, transport.write_fileno(), True)
            continue
        fds = ()
        view = view[sent:]


async def _read_handshake(loop: asyncio.AbstractEventLoop, transport: Transport, deadline: float) -> Tuple[bytes, bytes]:
    """The first answer line of a new connection and the bytes after it (non-blocking transport)."""
    got = bytearray()
    buf = memoryview(bytearray(65536))
    while True:
        try:
            nbytes, fds = transport.read_into(buf)
        except (BlockingIOError, InterruptedError):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("the gateway did not answer the handshake in time")
            try:
                await _wait_fd(loop, transport.fileno(), False, remaining)
            except asyncio.TimeoutError:
                raise TimeoutError("the gateway did not answer the handshake in time") from None
            continue
        for fd in fds:
            os.close(fd)
        if not nbytes:
            raise EOFError("the gateway closed the connection during the handshake")
        got += buf[:nbytes]
        newline = got.find(b"\n")
        if newline >= 0:
            return bytes(got[:newline]), bytes(got[newline + 1:])
        if len(got) > (1 << 20):
            raise ProtocolError("the gateway's handshake answer has no end of line")


async def _open(target: str, loop: asyncio.AbstractEventLoop) -> Transport:
    """A non-blocking transport to ``target`` (a socket path or ``ssh://``)."""
    if is_ssh(target):
        pipe = PipeTransport(SshAddress(target).argv("bridge"), target)
        pipe.set_blocking(False)
        return pipe
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return UnixTransport(sock, target)


async def connect(path: Optional[str] = None, *, keep: Optional[int] = None) -> Gateway:
    """Connect to the gateway (default path as the server's: ``$TCPGW_SOCKET``, else
    ``$XDG_RUNTIME_DIR/tcpgw.sock``, else ``/tmp/tcpgw-<uid>.sock``).

    ``path`` may be ``ssh://[user@]host[:port][/socket]`` and ``keep`` (ms) makes the session
    survive a dropped connection, as for :func:`tcpgw.connect`.
    """
    loop = asyncio.get_running_loop()
    target = path if path is not None else default_socket_path()
    transport = await _open(target, loop)
    gateway = Gateway(transport, target, loop)
    try:
        if keep is not None:
            try:
                await _write_all(loop, transport, keep_request_line(keep))
                line, rest = await _read_handshake(loop, transport, loop.time() + _HANDSHAKE_S)
            except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                # As in the threaded client: over ssh the child's exit status says why.
                reason = await loop.run_in_executor(None, transport.end_reason, 1.0)
                raise ConnectionClosedError(f"{exc}" + (f"; {reason}" if reason is not None else "")) from exc
            result = handshake_result(line, "session.keep")
            if not isinstance(result, Mapping) or not isinstance(result.get("token"), str):
                raise ProtocolError(f"session.keep answered {result!r}")
            gateway._session.keep = KeepState(result["token"], int(result.get("grace", keep)))
            if rest:
                gateway._deliver(*gateway._session.feed(rest, ()))
    except BaseException:
        transport.close()
        raise
    gateway._start_reading()
    return gateway
