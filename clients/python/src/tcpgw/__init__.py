"""tcpgw: Python client for the tcpgw gateway, shaped like the EdgerOS ``tcp`` module.

>>> import tcpgw
>>> with tcpgw.connect() as gw:                      # default socket path, as the server's
...     srv = gw.createServer(tcpgw.sockaddr(tcpgw.INADDR_LOOPBACK, 0))
...     port = srv.sockName()["port"]
...     conn = gw.createClient(tcpgw.sockaddr("127.0.0.1", port), 1000)
...     peer = srv.accept()
...     conn.send("hello")
...     peer.recv()
b'hello'

- :func:`connect` gives a threaded :class:`Gateway` (blocking calls, callbacks run in
  :meth:`Gateway.poll` / :meth:`Gateway.run_forever`); :mod:`tcpgw.aio` has the same API
  as coroutines.
- :class:`Tcp` objects carry the seed's methods, names and argument order.
- Error answers raise :class:`RPCError` subclasses; the timeout error is also a
  ``TimeoutError``, the OS failure also an ``OSError``.
- The seed's constants are module attributes (``AF_INET``, ``INADDR_ANY``,
  ``TCP_ESTABLISHED``, ...), generated from the schema.
"""
from __future__ import annotations

from ._errors import ConnectionClosedError, ProtocolError, RPCError
from ._generated import *  # noqa: F401,F403 - constants, error classes, TcpState (see its __all__)
from ._generated import __all__ as _generated_all
from ._generated import SCHEMA_VERSION
from ._sync import FlyAwaySocket, Gateway, Tcp, connect
from ._transport import StreamSocket
from ._types import ErrorObject, SockAddr
from ._wire import Event, default_socket_path, sockaddr

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Gateway",
    "Tcp",
    "FlyAwaySocket",
    "StreamSocket",
    "Event",
    "SockAddr",
    "ErrorObject",
    "sockaddr",
    "default_socket_path",
    "RPCError",
    "ConnectionClosedError",
    "ProtocolError",
    "SCHEMA_VERSION",
    *_generated_all,
]
