"""Hostile params for every method: each must get -32602 naming the offending param, and the
gateway must keep serving (this connection, other connections, other handles).

One gateway serves the whole module (starting ~120 gateways would dominate the run time); every
case checks afterwards that the gateway and the shared handles are still fine.
"""
from __future__ import annotations

import signal
import socket
from typing import Any, Iterator, Optional

import pytest

from conftest import Gateway, GatewayFactory, binary_present, client_pair
from wire import INVALID_PARAMS, RPCError, Wire

C, S = "$CONN", "$SRV"  # placeholders for a live connection / server handle
SA = {"addr": "127.0.0.1", "port": 0}

HANDLE_ONLY = ["tcp.sockFd", "tcp.pending", "tcp.error", "tcp.close", "tcp.flyAway", "tcp.isEOF",
               "tcp.sockName", "tcp.peerName", "tcp.getState", "tcp.getRecvBufferSize",
               "tcp.getSendBufferSize", "tcp.pause", "tcp.resume"]
BAD_HANDLES: list[tuple[str, Any]] = [("zero", 0), ("negative", -3), ("string", "1"), ("float", 1.5),
                                      ("huge", 2**64), ("hugefloat", 1e300), ("null", None),
                                      ("bool", True), ("object", {"h": 1}), ("array", [1])]

CASES: list[tuple[str, str, Any, Optional[str]]] = []


def case(id_: str, method: str, params: Any, name: Optional[str]) -> None:
    CASES.append((id_, method, params, name))


# Every handle method, with every kind of bad handle, and with the handle missing.
for m in HANDLE_ONLY + ["tcp.accept", "tcp.shutdown", "tcp.bindToDevice"]:
    for label, bad in BAD_HANDLES:
        case(f"{m}-handle-{label}", m, {"handle": bad}, "handle")
    case(f"{m}-handle-missing", m, {}, "handle")
    case(f"{m}-extra-param", m, {"handle": C, "bogusExtra": 1}, "bogusExtra")
    case(f"{m}-params-array-too-long", m, [C, None, None, None, None, None, None, None], None)

# createServer
case("createServer-missing", "tcp.createServer", {}, "sockaddr")
case("createServer-sockaddr-string", "tcp.createServer", {"sockaddr": "127.0.0.1:0"}, "sockaddr")
case("createServer-sockaddr-array", "tcp.createServer", {"sockaddr": ["127.0.0.1", 0]}, "sockaddr")
case("createServer-port-big", "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 65536}}, "port")
case("createServer-port-neg", "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": -1}}, "port")
case("createServer-port-string", "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": "80"}}, "port")
case("createServer-port-float", "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 80.5}}, "port")
case("createServer-port-missing", "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1"}}, "port")
case("createServer-addr-number", "tcp.createServer", {"sockaddr": {"addr": 2130706433, "port": 0}}, "addr")
case("createServer-addr-missing", "tcp.createServer", {"sockaddr": {"port": 0}}, "addr")
case("createServer-addr-not-literal", "tcp.createServer", {"sockaddr": {"addr": "not_an_ip", "port": 0}}, "addr")
case("createServer-addr-not-a-name", "tcp.createServer", {"sockaddr": {"addr": "127.1", "port": 0}}, "addr")
case("createClient-addr-not-a-name", "tcp.createClient", {"sockaddr": {"addr": "a..b", "port": 1}}, "addr")
case("dns.lookup-not-a-name", "dns.lookup", {"host": "-a"}, "host")
case("createServer-domain-3", "tcp.createServer", {"sockaddr": {"domain": 3, **SA}}, "domain")
case("createServer-sockaddr-extra", "tcp.createServer", {"sockaddr": {**SA, "flow": 1}}, "flow")
case("createServer-backlog-negative", "tcp.createServer", {"sockaddr": SA, "backlog": -1}, "backlog")
case("createServer-backlog-big", "tcp.createServer", {"sockaddr": SA, "backlog": 65536}, "backlog")
case("createServer-backlog-string", "tcp.createServer", {"sockaddr": SA, "backlog": "5"}, "backlog")
case("createServer-dev-empty", "tcp.createServer", {"sockaddr": SA, "dev": ""}, "dev")
case("createServer-dev-long", "tcp.createServer", {"sockaddr": SA, "dev": "x" * 16}, "dev")
case("createServer-dev-number", "tcp.createServer", {"sockaddr": SA, "dev": 1}, "dev")
case("createServer-ipv6Only-string", "tcp.createServer", {"sockaddr": SA, "ipv6Only": "yes"}, "ipv6Only")
case("createServer-extra", "tcp.createServer", {"sockaddr": SA, "reuse": True}, "reuse")
case("createServer-positional-too-many", "tcp.createServer", [SA, 5, "lo", False, 1], None)
case("createServer-positional-sockaddr-number", "tcp.createServer", [5], "sockaddr")
# createClient
case("createClient-missing", "tcp.createClient", {}, "sockaddr")
case("createClient-sockaddr-null", "tcp.createClient", {"sockaddr": None}, "sockaddr")
case("createClient-timeout-neg", "tcp.createClient", {"sockaddr": SA, "timeout": -1}, "timeout")
case("createClient-timeout-huge", "tcp.createClient", {"sockaddr": SA, "timeout": 2147483648}, "timeout")
case("createClient-timeout-string", "tcp.createClient", {"sockaddr": SA, "timeout": "100"}, "timeout")
case("createClient-timeout-float", "tcp.createClient", {"sockaddr": SA, "timeout": 1.5}, "timeout")
case("createClient-async-string", "tcp.createClient", {"sockaddr": SA, "async": "true"}, "async")
case("createClient-async-number", "tcp.createClient", {"sockaddr": SA, "async": 1}, "async")
case("createClient-extra", "tcp.createClient", {"sockaddr": SA, "callback": "f"}, "callback")
# createByFd
case("createByFd-sockFd-neg", "tcp.createByFd", {"sockFd": -1}, "sockFd")
case("createByFd-sockFd-string", "tcp.createByFd", {"sockFd": "3"}, "sockFd")
case("createByFd-extra", "tcp.createByFd", {"fd": 3}, "fd")
# accept
case("accept-timeout-neg", "tcp.accept", {"handle": S, "timeout": -5}, "timeout")
case("accept-timeout-string", "tcp.accept", {"handle": S, "timeout": "1s"}, "timeout")
case("accept-async-string", "tcp.accept", {"handle": S, "async": "x"}, "async")
# send / sendto
for m in ("tcp.send", "tcp.sendto"):
    case(f"{m}-data-missing", m, {"handle": C}, "data")
    case(f"{m}-data-number", m, {"handle": C, "data": 5}, "data")
    case(f"{m}-data-object", m, {"handle": C, "data": {"a": 1}}, "data")
    case(f"{m}-data-empty-array", m, {"handle": C, "data": []}, "data")
    case(f"{m}-data-array-of-numbers", m, {"handle": C, "data": [1, 2]}, "data")
    case(f"{m}-data-array-too-long", m, {"handle": C, "data": ["a"] * 1025}, "data")
    case(f"{m}-encoding-bad", m, {"handle": C, "data": "x", "encoding": "latin1"}, "encoding")
    case(f"{m}-encoding-number", m, {"handle": C, "data": "x", "encoding": 1}, "encoding")
    case(f"{m}-base64-invalid", m, {"handle": C, "data": "!!not base64!!", "encoding": "base64"}, "data")
    case(f"{m}-hex-odd", m, {"handle": C, "data": "abc", "encoding": "hex"}, "data")
    case(f"{m}-hex-nonhex", m, {"handle": C, "data": "zz", "encoding": "hex"}, "data")
    case(f"{m}-offset-neg", m, {"handle": C, "data": "abc", "offset": -1}, "offset")
    case(f"{m}-offset-past-end", m, {"handle": C, "data": "abc", "offset": 4}, "offset")
    case(f"{m}-offset-string", m, {"handle": C, "data": "abc", "offset": "1"}, "offset")
    case(f"{m}-length-neg", m, {"handle": C, "data": "abc", "length": -1}, "length")
    case(f"{m}-length-past-end", m, {"handle": C, "data": "abc", "offset": 1, "length": 3}, "length")
    case(f"{m}-timeout-neg", m, {"handle": C, "data": "abc", "timeout": -1}, "timeout")
    case(f"{m}-extra", m, {"handle": C, "data": "abc", "flags": 0}, "flags")
# recv / recvfrom
for m in ("tcp.recv", "tcp.recvfrom"):
    case(f"{m}-length-0", m, {"handle": C, "length": 0}, "length")
    case(f"{m}-length-big", m, {"handle": C, "length": 16777217}, "length")
    case(f"{m}-length-string", m, {"handle": C, "length": "10"}, "length")
    case(f"{m}-encoding-bad", m, {"handle": C, "encoding": "utf16"}, "encoding")
    case(f"{m}-timeout-string", m, {"handle": C, "timeout": "x"}, "timeout")
    case(f"{m}-timeout-huge", m, {"handle": C, "timeout": 10**12}, "timeout")
    case(f"{m}-extra", m, {"handle": C, "buffer": []}, "buffer")
# shutdown / mports
case("shutdown-how-bad", "tcp.shutdown", {"handle": C, "how": "x"}, "how")
case("shutdown-how-number", "tcp.shutdown", {"handle": C, "how": 1}, "how")
case("mports-missing", "tcp.mports", {"handle": S}, "mports")
case("mports-256", "tcp.mports", {"handle": S, "mports": 256}, "mports")
case("mports-neg", "tcp.mports", {"handle": S, "mports": -1}, "mports")
case("mports-string", "tcp.mports", {"handle": S, "mports": "2"}, "mports")
case("mports-handle-neg", "tcp.mports", {"handle": -1, "mports": 1}, "handle")
# bindToDevice
case("bindToDevice-ifname-number", "tcp.bindToDevice", {"handle": C, "ifname": 5}, "ifname")
case("bindToDevice-ifname-long", "tcp.bindToDevice", {"handle": C, "ifname": "x" * 16}, "ifname")
# setKeepAlive
case("setKeepAlive-enable-missing", "tcp.setKeepAlive", {"handle": C}, "enable")
case("setKeepAlive-enable-string", "tcp.setKeepAlive", {"handle": C, "enable": "true", "idle": 1000}, "enable")
case("setKeepAlive-idle-missing", "tcp.setKeepAlive", {"handle": C, "enable": True}, "idle")
case("setKeepAlive-idle-0", "tcp.setKeepAlive", {"handle": C, "enable": True, "idle": 0}, "idle")
case("setKeepAlive-interval-0", "tcp.setKeepAlive", {"handle": C, "enable": True, "idle": 1000, "interval": 0}, "interval")
case("setKeepAlive-count-0", "tcp.setKeepAlive", {"handle": C, "enable": True, "idle": 1000, "count": 0}, "count")
case("setKeepAlive-count-128", "tcp.setKeepAlive", {"handle": C, "enable": True, "idle": 1000, "count": 128}, "count")
case("setKeepAlive-handle-neg", "tcp.setKeepAlive", {"handle": -1, "enable": False}, "handle")
# boolean setters
for m in ("tcp.setNoDelay", "tcp.setReuseAddr", "tcp.setIPv6Only"):
    case(f"{m}-enable-missing", m, {"handle": C}, "enable")
    case(f"{m}-enable-number", m, {"handle": C, "enable": 1}, "enable")
    case(f"{m}-enable-string", m, {"handle": C, "enable": "yes"}, "enable")
    case(f"{m}-handle-string", m, {"handle": "x", "enable": True}, "handle")
    case(f"{m}-extra", m, {"handle": C, "enable": True, "level": 1}, "level")
# setLinger
case("setLinger-missing", "tcp.setLinger", {"handle": C}, "linger")
case("setLinger-string", "tcp.setLinger", {"handle": C, "linger": "on"}, "linger")
case("setLinger-onoff-number", "tcp.setLinger", {"handle": C, "linger": {"onoff": 1, "time": 0}}, "onoff")
case("setLinger-time-neg", "tcp.setLinger", {"handle": C, "linger": {"onoff": True, "time": -1}}, "time")
case("setLinger-time-big", "tcp.setLinger", {"handle": C, "linger": {"onoff": True, "time": 65536}}, "time")
case("setLinger-time-missing", "tcp.setLinger", {"handle": C, "linger": {"onoff": True}}, "time")
case("setLinger-extra", "tcp.setLinger", {"handle": C, "linger": {"onoff": True, "time": 1, "x": 1}}, "x")
# setTTL
case("setTTL-0", "tcp.setTTL", {"handle": C, "timeToLive": 0}, "timeToLive")
case("setTTL-256", "tcp.setTTL", {"handle": C, "timeToLive": 256}, "timeToLive")
case("setTTL-string", "tcp.setTTL", {"handle": C, "timeToLive": "64"}, "timeToLive")
case("setTTL-missing", "tcp.setTTL", {"handle": C}, "timeToLive")
# buffer sizes
for m in ("tcp.setRecvBufferSize", "tcp.setSendBufferSize"):
    case(f"{m}-small", m, {"handle": C, "size": 1023}, "size")
    case(f"{m}-big", m, {"handle": C, "size": 16777217}, "size")
    case(f"{m}-string", m, {"handle": C, "size": "4096"}, "size")
    case(f"{m}-missing", m, {"handle": C}, "size")
# parameterless methods
for m in ("tcp.constants", "tcp.list", "gateway.info", "rpc.discover"):
    case(f"{m}-extra", m, {"unexpectedParam": 1}, "unexpectedParam")
    case(f"{m}-positional", m, [1], None)


def _subst(v: Any, conn: int, srv: int) -> Any:
    if v == C:
        return conn
    if v == S:
        return srv
    if isinstance(v, dict):
        return {k: _subst(x, conn, srv) for k, x in v.items()}
    if isinstance(v, list):
        return [_subst(x, conn, srv) for x in v]
    return v


class Session:
    """The module-wide gateway, one wire, and a live connection + server handle on it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.wire = gw.connect()
        self.conn_info, self.peer = client_pair(self.wire, "127.0.0.1")
        self.conn = self.conn_info["handle"]
        self.srv = self.wire.call("tcp.createServer", {"sockaddr": SA})["handle"]


@pytest.fixture(scope="module")
def session() -> Iterator[Optional[Session]]:
    if not binary_present():
        yield None  # each test then fails in pytest_runtest_call
        return
    factory = GatewayFactory()
    try:
        s = Session(factory())
        yield s
        s.peer.close()
    finally:
        factory.teardown()


@pytest.mark.parametrize("method, params, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_params(session: Session, method: str, params: Any, name: Optional[str]) -> None:
    w = session.wire
    p = _subst(params, session.conn, session.srv)
    with pytest.raises(RPCError) as e:
        w.call(method, p)
    assert e.value.code == INVALID_PARAMS, f"{method} {p!r}: {e.value}"
    if name is not None:
        assert name in e.value.message, f"message does not name {name!r}: {e.value.message!r}"
    # The shared handles are untouched (a bad close/flyAway/pause must not have acted).
    assert w.call("tcp.getState", {"handle": session.conn})["state"] == 4
    assert w.call("tcp.getState", {"handle": session.srv})["state"] == 1


def test_gateway_survives_all_hostile_params(session: Session) -> None:
    """After every case (this runs last in the module): other connections are served and the
    shared connection still carries data both ways."""
    w = session.wire
    other = session.gw.connect()
    assert other.call("gateway.info")["name"] == "tcpgw"
    assert w.call("tcp.send", {"handle": session.conn, "data": "alive"}) == 5
    session.peer.settimeout(3)
    assert session.peer.recv(5) == b"alive"
    session.peer.sendall(b"yes")
    assert w.recv_exact(session.conn, 3) == b"yes"
    assert session.gw.proc.poll() is None
