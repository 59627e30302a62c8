"""Host names (contract §7) and the policy's name rules (§8), against the real binary.

Only `localhost` is looked up (it is in /etc/hosts, as 127.0.0.1 only on this machine); every
other name is refused by syntax or by the policy before any query, so no DNS traffic is sent.
"""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from conftest import GatewayFactory, closed_port, port_of, py_listener, run_cli
from wire import DENIED, INVALID_PARAMS, OS_FAILURE, TIMED_OUT, RPCError, Wire


def rpc_error(w: Wire, method: str, params: object) -> RPCError:
    try:
        result = w.call(method, params)
    except RPCError as e:
        return e
    raise AssertionError(f"{method} {params!r} succeeded ({result!r}); an error was expected")


def with_policy(gwf: GatewayFactory, policy: dict):
    path = os.path.join(gwf.tmpdir(), "policy.json")
    with open(path, "w") as f:
        json.dump(policy, f)
    return gwf("--policy", path)


def localhost_v4() -> list[str]:
    return sorted({a[4][0] for a in socket.getaddrinfo("localhost", 0, socket.AF_INET, socket.SOCK_STREAM)})


# -- syntax ---------------------------------------------------------------------------------

LABEL63 = "a" * 63
BAD_NAMES = [
    ("127.1", "last label all digits"),
    ("300.1.1.1", "an invalid IPv4 look-alike"),
    ("1.2.3", "digits only"),
    ("-a.example", "label starts with a hyphen"),
    ("a-.example", "label ends with a hyphen"),
    ("a..example", "empty label"),
    (".example", "leading dot"),
    ("example..", "two trailing dots"),
    ("a_b.example", "underscore"),
    ("a b", "space"),
    ("exa\u00e9mple", "non-ASCII"),
    ("a" * 64 + ".example", "label of 64 bytes"),
    (".".join([LABEL63] * 4), "254 bytes without a trailing dot"),
    ("local\u0000host", "NUL"),
    ("localhost\n", "newline"),
    ("[::1]", "bracketed literal"),
    ("localhost:80", "port in the name"),
    ("*.example", "wildcard"),
]


@pytest.mark.parametrize("name,why", BAD_NAMES, ids=[w for _, w in BAD_NAMES])
def test_bad_names_are_invalid_params(wire: Wire, name: str, why: str) -> None:
    for method, extra in (("tcp.createClient", {"timeout": 1000}), ("tcp.createServer", {})):
        e = rpc_error(wire, method, {"sockaddr": {"addr": name, "port": 1}, **extra})
        assert e.code == INVALID_PARAMS, (method, why, e)
        assert "sockaddr.addr" in e.message, e
    e = rpc_error(wire, "dns.lookup", {"host": name})
    assert e.code == INVALID_PARAMS and "host" in e.message, (why, e)
    assert wire.call("tcp.list") == [], "nothing was created"


def test_name_longer_than_253_bytes_is_invalid(wire: Wire) -> None:
    longest = ".".join([LABEL63] * 3 + ["a" * 61])
    assert len(longest) == 253
    for name in (longest + "x", longest + "x."):
        e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"addr": name, "port": 1}})
        assert e.code == INVALID_PARAMS, e


def test_longest_names_pass_syntax(start_gateway: GatewayFactory) -> None:
    # The policy names only localhost, so a valid name is refused by policy (-32003), not by
    # syntax (-32602), and never looked up.
    gw = with_policy(start_gateway, {"connect": ["localhost"]})
    w = gw.connect()
    longest = ".".join([LABEL63] * 3 + ["a" * 61])
    for name in (longest, longest + ".", LABEL63 + ".example", "a", "A-1.B2", "1a.example", "x.123a"):
        e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": name, "port": 1}})
        assert e.code == DENIED, (name, e)


def test_literal_still_checked_against_domain(wire: Wire) -> None:
    e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"domain": 10, "addr": "127.0.0.1", "port": 1}})
    assert e.code == INVALID_PARAMS and "IPv6" in e.message


# -- createClient / createServer by name -------------------------------------------------------

def test_connect_by_name_sync(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    try:
        r = wire.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "timeout": 3000})
        assert r["host"] == "localhost"
        assert r["remote"] == {"domain": 2, "addr": "127.0.0.1", "port": port_of(lst)}
        assert r["local"]["addr"] == "127.0.0.1"
        peer, _ = lst.accept()
        wire.call("tcp.send", {"handle": r["handle"], "data": "hi"})
        peer.settimeout(3)
        assert peer.recv(2) == b"hi"
        peer.close()
        listed = wire.call("tcp.list")
        assert [h["remote"]["addr"] for h in listed] == ["127.0.0.1"]
    finally:
        lst.close()


def test_connect_by_name_ignores_case(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    try:
        # (A trailing dot is not tried here: /etc/hosts has no "localhost.", so glibc would ask
        # DNS; the matcher's unit tests cover it.)
        r = wire.call("tcp.createClient", {"sockaddr": {"addr": "LocalHost", "port": port_of(lst)}, "timeout": 3000})
        assert r["host"] == "LocalHost", "the name as given"
        assert r["remote"]["addr"] == "127.0.0.1"
    finally:
        lst.close()


def test_connect_by_name_async(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    try:
        r = wire.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "async": True})
        assert set(r) == {"handle"}
        ev = wire.wait_event("tcp.onConnect", r["handle"]).params
        assert ev["host"] == "localhost"
        assert ev["remote"] == {"domain": 2, "addr": "127.0.0.1", "port": port_of(lst)}
        assert "error" not in ev
        peer, _ = lst.accept()
        peer.sendall(b"flow")
        data = wire.wait_event("tcp.onData", r["handle"]).params
        assert data["handle"] == r["handle"]
        peer.close()
    finally:
        lst.close()


def test_connect_by_name_refused_is_the_os_error(wire: Wire) -> None:
    port = closed_port("127.0.0.1")
    e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port}, "timeout": 3000})
    assert e.code == OS_FAILURE
    assert e.data["errno"] == "ECONNREFUSED" and e.data["syscall"] == "connect", e.data
    r = wire.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port}, "async": True})
    ev = wire.wait_event("tcp.onConnect", r["handle"]).params
    assert ev["error"]["errno"] == "ECONNREFUSED" and ev["host"] == "localhost"
    assert wire.call("tcp.list") == []


def test_create_server_by_name_with_domain(wire: Wire) -> None:
    r = wire.call("tcp.createServer", {"sockaddr": {"domain": 2, "addr": "localhost", "port": 0}})
    assert r["local"]["domain"] == 2 and r["local"]["addr"] in localhost_v4()
    assert r["host"] == "localhost"
    wire.call("tcp.close", {"handle": r["handle"]})


def test_create_server_by_name(wire: Wire) -> None:
    r = wire.call("tcp.createServer", {"sockaddr": {"addr": "localhost", "port": 0}})
    assert r["host"] == "localhost"
    assert r["local"]["addr"] == "127.0.0.1" and r["local"]["domain"] == 2 and r["local"]["port"] > 0
    c = socket.create_connection(("127.0.0.1", r["local"]["port"]), timeout=3)
    a = wire.call("tcp.accept", {"handle": r["handle"], "timeout": 3000})
    assert a["remote"]["port"] == c.getsockname()[1]
    c.close()


def test_create_server_by_name_in_use_is_the_os_error(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    try:
        e = rpc_error(wire, "tcp.createServer", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}})
        assert e.code == OS_FAILURE and e.data["errno"] == "EADDRINUSE", e.data
    finally:
        lst.close()


def test_slow_connect_times_out_within_the_one_timeout(wire: Wire) -> None:
    # A listener whose accept queue is full drops further SYNs: the connect hangs.
    lst = py_listener("127.0.0.1", backlog=0)
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port_of(lst)))
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port_of(lst)))
            hangs = False
        except (socket.timeout, TimeoutError):
            hangs = True
        finally:
            probe.close()
        if not hangs:
            pytest.skip("this network stack does not drop SYNs to a full accept queue")
        started = time.monotonic()
        e = rpc_error(wire, "tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "timeout": 400})
        took = time.monotonic() - started
        assert e.code == TIMED_OUT, e
        assert 0.35 <= took < 3.0, took
    finally:
        for s in fillers:
            s.close()
        lst.close()


# -- dns.lookup -----------------------------------------------------------------------------

def test_dns_lookup_localhost(wire: Wire) -> None:
    got = wire.call("dns.lookup", {"host": "localhost"})
    expected = []
    for fam, _, _, _, sa in socket.getaddrinfo("localhost", 0, 0, socket.SOCK_STREAM):
        item = {"domain": 2 if fam == socket.AF_INET else 10, "addr": sa[0]}
        if item not in expected:
            expected.append(item)
    assert got == expected, "the resolver's order, without duplicates"
    assert len(got) == len({(a["domain"], a["addr"]) for a in got})
    assert wire.call("dns.lookup", ["localhost"]) == got, "by position too"


def test_dns_lookup_with_domain(wire: Wire) -> None:
    got = wire.call("dns.lookup", {"host": "localhost", "domain": 2})
    assert got and all(a["domain"] == 2 for a in got)
    assert sorted(a["addr"] for a in got) == localhost_v4()
    e = rpc_error(wire, "dns.lookup", {"host": "localhost", "domain": 3})
    assert e.code == INVALID_PARAMS and "domain" in e.message


def test_dns_lookup_refuses_literals_and_bad_params(wire: Wire) -> None:
    for bad in ({"host": "127.0.0.1"}, {"host": "::1"}, {"host": ""}, {"host": 5}, {}, {"host": "localhost", "x": 1}):
        e = rpc_error(wire, "dns.lookup", bad)
        assert e.code == INVALID_PARAMS, (bad, e)


# -- policy ---------------------------------------------------------------------------------

def test_policy_gate_refuses_unnamed_names_before_lookup(start_gateway: GatewayFactory) -> None:
    gw = with_policy(start_gateway, {"connect": ["localhost"]})
    w = gw.connect()
    e = rpc_error(w, "dns.lookup", {"host": "not-in-hosts.invalid"})
    assert e.code == DENIED and "no allow rule" in e.message and "'connect'" in e.message, e
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "not-in-hosts.invalid", "port": 80}, "timeout": 500})
    assert e.code == DENIED, e
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "not-in-hosts.invalid", "port": 80}, "async": True})
    assert e.code == DENIED, "refused at once, not through the event"
    assert w.call("tcp.list") == []
    # The named host resolves and connects.
    assert w.call("dns.lookup", {"host": "localhost", "domain": 2})[0]["addr"] == "127.0.0.1"
    lst = py_listener("127.0.0.1")
    try:
        r = w.call("tcp.createClient", {"sockaddr": {"addr": "LOCALHOST", "port": port_of(lst)}, "timeout": 3000})
        assert r["host"] == "LOCALHOST"
    finally:
        lst.close()


def test_policy_name_rule_with_port(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    other = py_listener("127.0.0.1")
    try:
        gw = with_policy(start_gateway, {"connect": [f"localhost:{port_of(lst)}"]})
        w = gw.connect()
        r = w.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "timeout": 3000})
        assert r["remote"]["addr"] == "127.0.0.1"
        e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(other)}, "timeout": 3000})
        assert e.code == DENIED and "no allow rule" in e.message, e
        other.settimeout(0.3)
        with pytest.raises((socket.timeout, TimeoutError)):
            other.accept()  # never tried
        # The numeric address is not allowed by the name rule alone.
        e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}, "timeout": 3000})
        assert e.code == DENIED
    finally:
        lst.close()
        other.close()


def test_policy_address_rule_allows_the_resolved_address(start_gateway: GatewayFactory) -> None:
    # An address rule alone does not name localhost: with an allow list, the name is not
    # looked up at all (no DNS side channel), although its address would be allowed.
    lst = py_listener("127.0.0.1")
    try:
        gw = with_policy(start_gateway, {"connect": ["127.0.0.0/8"]})
        w = gw.connect()
        e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "timeout": 3000})
        assert e.code == DENIED and "no allow rule" in e.message
        # A wildcard rule that names it plus the address rule: the address decides the port.
        gw2 = with_policy(start_gateway, {"connect": ["*.localhost:1", f"localhost:1", f"127.0.0.1:{port_of(lst)}"]})
        w2 = gw2.connect()
        r = w2.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "timeout": 3000})
        assert r["remote"]["port"] == port_of(lst)
    finally:
        lst.close()


def test_policy_wildcard_does_not_name_the_parent(start_gateway: GatewayFactory) -> None:
    gw = with_policy(start_gateway, {"connect": ["*.localhost"]})
    w = gw.connect()
    e = rpc_error(w, "dns.lookup", {"host": "localhost"})
    assert e.code == DENIED, e
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "localhost", "port": 1}, "timeout": 500})
    assert e.code == DENIED, e


def test_policy_listen_by_name(start_gateway: GatewayFactory) -> None:
    gw = with_policy(start_gateway, {"listen": ["localhost"]})
    w = gw.connect()
    r = w.call("tcp.createServer", {"sockaddr": {"addr": "localhost", "port": 0}})
    assert r["host"] == "localhost" and r["local"]["addr"] == "127.0.0.1"
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert e.code == DENIED, "the name rule does not allow the bare address"


@pytest.mark.parametrize("rule", ["-bad.example", "*.", "*.*.example", "**.example", "a..b", "local_host:80", "localhost:99999",
                                  "localhost:", "localhost/8"])
def test_bad_name_rules_stop_the_gateway(start_gateway: GatewayFactory, rule: str) -> None:
    path = os.path.join(start_gateway.tmpdir(), "policy.json")
    with open(path, "w") as f:
        json.dump({"connect": [rule]}, f)
    proc = run_cli(["serve", "--socket", os.path.join(start_gateway.tmpdir(), "x.sock"), "--policy", path], timeout=10)
    assert proc.returncode != 0
    assert rule in proc.stderr or "connect" in proc.stderr, proc.stderr


def test_policy_listen_gate_refuses_before_lookup(start_gateway: GatewayFactory) -> None:
    gw = with_policy(start_gateway, {"listen": ["127.0.0.1"]})
    w = gw.connect()
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "localhost", "port": 0}})
    assert e.code == DENIED and "'listen'" in e.message and "no allow rule" in e.message, e
    assert w.call("tcp.list") == []


def test_policy_all_addresses_refused_async(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    try:
        gw = with_policy(start_gateway, {"connect": ["localhost:1"]})
        w = gw.connect()
        r = w.call("tcp.createClient", {"sockaddr": {"addr": "localhost", "port": port_of(lst)}, "async": True})
        ev = w.wait_event("tcp.onConnect", r["handle"]).params
        assert ev["host"] == "localhost" and "remote" not in ev
        assert ev["error"]["code"] == DENIED and ev["error"]["errno"] == "EACCES", ev
        assert "no allow rule" in ev["error"]["message"]
        assert w.call("tcp.list") == []
        lst.settimeout(0.3)
        with pytest.raises((socket.timeout, TimeoutError)):
            lst.accept()  # the refused address was never tried
    finally:
        lst.close()
