"""Typed shapes shared by every module, and the checks that turn answers into them.

Imports only :mod:`._errors` from the package, so every other module (the generated one
included) can import it without a cycle.
"""
from __future__ import annotations

from typing import Optional, Type, TypedDict, TypeVar

from ._errors import ProtocolError

_T = TypeVar("_T")


class SockAddr(TypedDict, total=False):
    """A socket address as in the seed: ``{"domain": 2, "addr": "127.0.0.1", "port": 80}``.

    ``domain`` may be omitted in requests; answers always carry it.
    """

    domain: int
    addr: str
    port: int


class ErrorObject(TypedDict, total=False):
    """The ``error`` member of events: ``{"errno", "errnoNumber", "message"}``."""

    errno: Optional[str]
    errnoNumber: int
    message: str


def expect(method: str, value: object, kind: Type[_T]) -> _T:
    """``value`` (``method``'s decoded result) if it is a ``kind``, as the schema promises.

    The gateway validates its answers against the same schema, so a mismatch is a bug on
    one side: :class:`ProtocolError` rather than a wrongly typed value handed on.
    """
    if isinstance(value, kind):
        return value
    raise ProtocolError(f"{method} answered {value!r}, not the {kind.__name__} its schema promises")


def expect_sockaddr(method: str, value: object) -> SockAddr:
    """``value`` as a :class:`SockAddr` if it has the schema's ``SockAddrResult`` shape.

    That schema allows exactly ``domain``, ``addr`` and ``port``, all required, so the
    rebuilt dict equals the one received.
    """
    if isinstance(value, dict):
        domain, addr, port = value.get("domain"), value.get("addr"), value.get("port")
        if isinstance(domain, int) and isinstance(addr, str) and isinstance(port, int) and len(value) == 3:
            return {"domain": domain, "addr": addr, "port": port}
    raise ProtocolError(f"{method} answered {value!r}, not the address its schema promises")
