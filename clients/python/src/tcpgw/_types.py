"""Typed shapes shared by every module (no imports from the rest of the package)."""
from __future__ import annotations

from typing import Optional, TypedDict


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
