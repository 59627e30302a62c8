"""Byte transports to a gateway: its Unix socket, or ``ssh ... tcpgw bridge`` for ``ssh://``.

Both offer the same small surface, blocking or not (``blocking`` at creation): read into a
buffer (with any descriptors that came along), write all of a line (with descriptors),
``fileno`` for waiting, ``wake`` (make a blocked reader return end of input) and ``close``.
Only the Unix socket passes descriptors (SCM_RIGHTS); over ssh the client refuses those
methods before sending.
"""
from __future__ import annotations

import array
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import time
from typing import Any, List, Optional, Sequence, Tuple, Union

from ._errors import ProtocolError
from ._wire import MAX_FDS_PER_READ, default_socket_path, encode_line, handshake_result

_ANC_SIZE = socket.CMSG_SPACE(MAX_FDS_PER_READ * array.array("i").itemsize)
# ssh://[user@]host[:port][/socket]; an IPv6 host goes in brackets.
_SSH_URL = re.compile(r"ssh://(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/@\s\[\]]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/\S*)?")


class SshAddress:
    """A parsed ``ssh://[user@]host[:port][/socket]`` gateway address."""

    def __init__(self, url: str) -> None:
        match = _SSH_URL.fullmatch(url)
        if match is None:
            raise ValueError(f"not a gateway address of the form ssh://[user@]host[:port][/socket]: {url!r}")
        self.url = url
        self.user: Optional[str] = match.group("user")
        host = match.group("host")
        self.host = host[1:-1] if host.startswith("[") else host
        port = match.group("port")
        self.port: Optional[int] = int(port) if port is not None else None
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"ssh port out of range in {url!r}")
        path = match.group("path")
        self.socket: Optional[str] = path if path not in (None, "/") else None
        if self.host.startswith("-") or (self.user or "").startswith("-"):
            raise ValueError(f"host or user may not start with '-': {url!r}")

    def argv(self, *remote: str, operands: Sequence[str] = ()) -> List[str]:
        """``ssh -T -o BatchMode=yes [-p P] [-l U] HOST -- tcpgw REMOTE... [--socket PATH] [-- OPERANDS...]``.

        ``$TCPGW_SSH`` replaces ``ssh`` (a command with options, split like a shell would);
        ``$TCPGW_REMOTE_BIN`` replaces the remote ``tcpgw``. ``operands`` go after ``--``, so
        one that starts with ``-`` (a base64url token can) is never read as an option.
        """
        ssh = shlex.split(os.environ.get("TCPGW_SSH") or "ssh")
        argv = [*ssh, "-T", "-o", "BatchMode=yes"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        if self.user is not None:
            argv += ["-l", self.user]
        command = [os.environ.get("TCPGW_REMOTE_BIN") or "tcpgw", *remote]
        if self.socket is not None:
            command += ["--socket", self.socket]
        if operands:
            command += ["--", *operands]
        # ssh joins the remote words with spaces for the remote shell: quote each (a no-op
        # for plain words and paths).
        return [*argv, self.host, "--", *(shlex.quote(word) for word in command)]


def is_ssh(address: str) -> bool:
    return address.startswith("ssh://")


def _fds_of(ancdata: List[Tuple[int, int, bytes]]) -> List[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return list(fds)


class UnixTransport:
    """The gateway's Unix socket."""

    passes_fds = True

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path

    @classmethod
    def connect(cls, path: str) -> "UnixTransport":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock, path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def write_fileno(self) -> int:
        return self.sock.fileno()

    def read_into(self, view: memoryview, descriptors: bool = True) -> Tuple[int, List[int]]:
        """Read what is there (blocking or not, as the socket is); ``(0, [])`` at end of input.

        ``descriptors``: whether an answer carrying one may come (else a plain read, cheaper).
        """
        if not descriptors:
            return self.sock.recv_into(view), []
        nbytes, ancdata, _flags, _addr = self.sock.recvmsg_into([view], _ANC_SIZE, socket.MSG_CMSG_CLOEXEC)
        return nbytes, (_fds_of(ancdata) if ancdata else [])

    def write(self, data: Union[bytes, memoryview], fds: Sequence[int] = ()) -> int:
        """Write some of ``data`` (descriptors ride on its first byte); returns the count."""
        if fds:
            return socket.send_fds(self.sock, [data], list(fds))
        return self.sock.send(data)

    def sendall(self, data: bytes, fds: Sequence[int] = ()) -> None:
        if fds:
            sent = socket.send_fds(self.sock, [data], list(fds))
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def set_blocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def wake(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected

    def close(self) -> None:
        self.sock.close()

    def describe(self) -> str:
        return self.path

    def end_reason(self, wait: float = 1.0) -> Optional[BaseException]:
        return None


class PipeTransport:
    """A child process speaking the gateway's lines on its stdin/stdout (``ssh ... tcpgw bridge``)."""

    passes_fds = False

    def __init__(self, argv: List[str], label: str) -> None:
        self.label = label
        self.argv = argv
        # stderr is inherited: ssh's own messages (host keys, auth failures) reach the user.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                     start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdout.fileno()
        self._out = self.proc.stdin.fileno()

    def fileno(self) -> int:
        return self._in

    def write_fileno(self) -> int:
        return self._out

    def read_into(self, view: memoryview, descriptors: bool = True) -> Tuple[int, List[int]]:
        return os.readv(self._in, [view]), []

    def write(self, data: Union[bytes, memoryview], fds: Sequence[int] = ()) -> int:
        if fds:
            raise OSError("descriptors cannot pass through ssh")
        return os.write(self._out, data)

    def sendall(self, data: bytes, fds: Sequence[int] = ()) -> None:
        view = memoryview(data)
        while view:
            view = view[self.write(view, fds):]

    def set_blocking(self, flag: bool) -> None:
        os.set_blocking(self._in, flag)
        os.set_blocking(self._out, flag)

    def wake(self) -> None:
        """End the child: its stdout then reads as end of input."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass

    def close(self) -> None:
        self.wake()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def describe(self) -> str:
        return self.label

    def end_reason(self, wait: float = 1.0) -> Optional[BaseException]:
        """Why the child's output ended: its exit status (waited for up to ``wait`` s)."""
        try:
            status = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None
        if status == 0:
            return None
        return ConnectionError(f"{self.argv[0]} exited with status {status} (for {self.label})")


Transport = Union[UnixTransport, PipeTransport]


def open_transport(address: Optional[str]) -> Tuple[Transport, str]:
    """Open a blocking transport to ``address`` (a socket path, ``ssh://...``, or the default path)."""
    target = address if address is not None else default_socket_path()
    if is_ssh(target):
        return PipeTransport(SshAddress(target).argv("bridge"), target), target
    return UnixTransport.connect(target), target


_HANDSHAKE_MAX = 1 << 20  # a handshake answer is small; more without a newline is an error


def _wait_readable(fd: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(remaining * 1000.0):
        raise TimeoutError("the gateway did not answer the handshake in time")


def read_handshake_line(transport: Transport, deadline: float) -> Tuple[bytes, bytes]:
    """The first answer line of a new connection, and whatever bytes came after it.

    On a Unix socket exactly the line is taken (peeked first), so what follows stays in the
    socket: after ``tcp.attach`` those are the stream's bytes. Raises ``EOFError`` when the
    connection ends first. The transport is blocking.
    """
    if isinstance(transport, UnixTransport):
        while True:
            _wait_readable(transport.fileno(), deadline)
            peeked = transport.sock.recv(_HANDSHAKE_MAX, socket.MSG_PEEK)
            if not peeked:
                raise EOFError("the gateway closed the connection during the handshake")
            newline = peeked.find(b"\n")
            if newline >= 0:
                line = transport.sock.recv(newline + 1)
                return line[:-1], b""
            if len(peeked) >= _HANDSHAKE_MAX:
                raise ProtocolError("the gateway's handshake answer has no end of line")
            time.sleep(0.001)  # a partial line: wait for the rest (peek returns at once)
    got = bytearray()
    view = memoryview(bytearray(65536))
    while True:
        _wait_readable(transport.fileno(), deadline)
        nbytes, _fds = transport.read_into(view)
        if not nbytes:
            raise EOFError("the gateway closed the connection during the handshake")
        got += view[:nbytes]
        newline = got.find(b"\n")
        if newline >= 0:
            return bytes(got[:newline]), bytes(got[newline + 1:])
        if len(got) >= _HANDSHAKE_MAX:
            raise ProtocolError("the gateway's handshake answer has no end of line")


def attach_line(token: str) -> bytes:
    """The ``tcp.attach`` first line of a stream connection (contract §11)."""
    return encode_line({"jsonrpc": "2.0", "id": 1, "method": "tcp.attach", "params": {"token": token}})


class StreamSocket(socket.socket):
    """The byte stream :meth:`Tcp.stream` returns: a real :class:`socket.socket`, blocking.

    Its first bytes are those the gateway had already read (the attach answer's ``buffered``
    count of them, plus any a read-ahead ``recv`` had brought to this client: those are
    returned first by ``recv``/``recv_into``, and ``select``/``poll`` cannot see them, so read
    once before waiting when ``pending_kept()`` is non-zero). ``shutdown(SHUT_WR)`` ends the TCP
    connection's writing side; end of input is the peer's end of stream.

    Attributes:
        handle: the gateway handle the stream belongs to (it stays on the owning connection).
        buffered: the attach answer's count of bytes the gateway had already read.
    """

    handle: int = 0
    buffered: int = 0
    _kept: bytes = b""

    def pending_kept(self) -> int:
        """Bytes held here (from a read-ahead) that ``recv`` returns before reading the socket."""
        return len(self._kept)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._kept and not flags:
            chunk, self._kept = self._kept[:bufsize], self._kept[bufsize:]
            return chunk
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._kept and not flags:
            view = memoryview(buffer).cast("B")
            count = min(len(view) if nbytes <= 0 else nbytes, len(self._kept))
            view[:count] = self._kept[:count]
            self._kept = self._kept[count:]
            return count
        return super().recv_into(buffer, nbytes, flags)


def _relay(source: int, sink: socket.socket) -> None:
    try:
        while True:
            data = os.read(source, 256 * 1024)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay_back(source: socket.socket, sink: Any, proc: "subprocess.Popen[bytes]", inbound: Any) -> None:
    try:
        while True:
            data = source.recv(256 * 1024)
            if not data:
                break
            sink.write(data)
    except OSError:
        pass
    finally:
        try:
            sink.close()  # the child's stdin ends: `tcpgw attach` shuts the TCP writing side
        except OSError:
            pass
        inbound.join()  # everything the child wrote has reached the socket
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        source.close()


def open_stream(address: str, token: str, deadline: float) -> Tuple[StreamSocket, Optional[Any]]:
    """Open the stream connection for ``token``: returns the socket and the attach answer
    (``None`` over ssh, where ``tcpgw attach`` takes the answer itself)."""
    if is_ssh(address):
        import threading

        argv = SshAddress(address).argv("attach", operands=[token])
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None
        ours, theirs = socket.socketpair()
        inbound = threading.Thread(target=_relay, args=(proc.stdout.fileno(), ours), name="tcpgw-stream-in", daemon=True)
        inbound.start()
        threading.Thread(target=_relay_back, args=(ours, proc.stdin, proc, inbound), name="tcpgw-stream-out",
                         daemon=True).start()
        sock = StreamSocket(fileno=theirs.detach())
        return sock, None
    transport = UnixTransport.connect(address)
    try:
        transport.sendall(attach_line(token))
        line, _rest = read_handshake_line(transport, deadline)
        result = handshake_result(line, "tcp.attach")
    except BaseException:
        transport.close()
        raise
    sock = StreamSocket(fileno=transport.sock.detach())
    sock.setblocking(True)
    return sock, result
