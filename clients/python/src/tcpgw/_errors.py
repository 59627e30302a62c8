"""Exception bases of the tcpgw client.

The per-code subclasses (``UnknownHandleError``, ``OSErrorReply``, ...) and the
code → class map are generated from the schema into ``_generated.py``; this module
holds the hand-written behaviour they build on.
"""
from __future__ import annotations

import errno as _errno
from typing import Any, Mapping, Optional


class RPCError(Exception):
    """A JSON-RPC error answer from the gateway.

    Attributes:
        code: the JSON-RPC error code (e.g. ``-32000``).
        message: the gateway's message.
        data: the error's ``data`` member, or ``None``.
    """

    #: The code this class stands for; ``None`` on the base class.
    CODE: Optional[int] = None

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        text = f"{self.message} (code {self.code})"
        if self.data is not None:
            text += f" {self.data!r}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.data!r})"

    def __reduce__(self) -> Any:
        # Exceptions with a custom __init__ signature need this to pickle.
        return (type(self), (self.code, self.message, self.data))


class _RPCTimeoutBase(RPCError, TimeoutError):
    """Base of the timeout error: both an :class:`RPCError` and the builtin ``TimeoutError``.

    ``errno`` is ``errno.ETIMEDOUT`` so code written against sockets keeps working.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.errno = _errno.ETIMEDOUT
        self.strerror = message


class _OSErrorReplyBase(RPCError, OSError):
    """Base of the operating-system failure: both an :class:`RPCError` and the builtin ``OSError``.

    Attributes:
        errno: the errno number from ``data.errnoNumber`` (``None`` if absent).
        errno_name: the errno name from ``data.errno``, e.g. ``"ECONNREFUSED"``.
        syscall: the failing system call from ``data.syscall``, e.g. ``"connect"``.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        info: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        number = info.get("errnoNumber")
        self.errno = number if isinstance(number, int) else None
        name = info.get("errno")
        self.errno_name: Optional[str] = name if isinstance(name, str) else None
        syscall = info.get("syscall")
        self.syscall: Optional[str] = syscall if isinstance(syscall, str) else None
        self.strerror = message


class ConnectionClosedError(ConnectionError):
    """The connection to the gateway is closed (by :meth:`close` or because the gateway went away).

    Raised by calls made on, or pending on, a closed connection.
    """


class ProtocolError(Exception):
    """The gateway sent something this client cannot understand (a bug on one side)."""
