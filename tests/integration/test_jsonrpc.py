"""Contract §2: framing and JSON-RPC 2.0 over the raw wire."""
from __future__ import annotations

import json
import time

import pytest

from conftest import GatewayFactory, py_listener, port_of, Gateway
from wire import (INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RPCError, Wire,
                  decode, result_of)


def _error(msg_obj: dict) -> dict:
    assert msg_obj.get("jsonrpc") == "2.0", msg_obj
    assert "error" in msg_obj and "result" not in msg_obj, msg_obj
    return msg_obj["error"]


def _assert_alive(w: Wire) -> None:
    assert w.call("gateway.info")["name"] == "tcpgw"


@pytest.mark.parametrize("line", [b"{", b'{"jsonrpc": "2.0", "id": 1, "method": "gateway.info"',
                                  b"not json at all", b'{"jsonrpc":"2.0","id":1,"method":"x"}}',
                                  b"\xff\xfe{}"],
                         ids=["open-brace", "truncated", "words", "trailing-garbage", "bad-utf8"])
def test_parse_error_has_id_null(wire: Wire, line: bytes) -> None:
    wire.send_raw(line + b"\n")
    m = wire.next_reply()
    assert m.obj["id"] is None, m.obj
    assert _error(m.obj)["code"] == PARSE_ERROR
    _assert_alive(wire)


@pytest.mark.parametrize("value", [42, '"a string"', "true", "null"], ids=["number", "string", "bool", "null"])
def test_non_object_is_invalid_request(wire: Wire, value) -> None:
    wire.send_raw(f"{value}\n")
    m = wire.next_reply()
    assert m.obj["id"] is None, m.obj
    assert _error(m.obj)["code"] == INVALID_REQUEST
    _assert_alive(wire)


@pytest.mark.parametrize("req, id_must_be_null", [
    ({"jsonrpc": "1.0", "id": 7, "method": "gateway.info"}, False),
    ({"id": 7, "method": "gateway.info"}, False),
    ({"jsonrpc": 2.0, "id": 7, "method": "gateway.info"}, False),
    ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "gateway.info"}, True),
    ({"jsonrpc": "2.0", "id": [7], "method": "gateway.info"}, True),
    ({"jsonrpc": "2.0", "id": True, "method": "gateway.info"}, True),
    ({"jsonrpc": "2.0", "id": 7}, False),
    ({"jsonrpc": "2.0", "id": 7, "method": 12}, False),
    ({"jsonrpc": "2.0", "id": 7, "method": None}, False),
    ({"jsonrpc": "2.0", "id": 7, "method": "gateway.info", "params": 5}, False),
    ({"jsonrpc": "2.0", "id": 7, "method": "gateway.info", "params": "x"}, False),
    ({"jsonrpc": "2.0", "id": 7, "method": "gateway.info", "params": None}, False),
], ids=["jsonrpc-1.0", "jsonrpc-missing", "jsonrpc-number", "id-object", "id-array", "id-bool",
        "method-missing", "method-number", "method-null", "params-number", "params-string", "params-null"])
def test_invalid_request(wire: Wire, req: dict, id_must_be_null: bool) -> None:
    wire.send_obj(req)
    m = wire.next_reply()
    assert _error(m.obj)["code"] == INVALID_REQUEST, m.obj
    # JSON-RPC: id null when it could not be determined; a valid id may be echoed.
    if id_must_be_null:
        assert m.obj["id"] is None, m.obj
    else:
        assert m.obj["id"] in (None, 7), m.obj
    _assert_alive(wire)


def test_string_and_null_free_ids_are_echoed(wire: Wire) -> None:
    wire.request("gateway.info", id="abc-1")
    wire.request("gateway.info", id=0)
    wire.request("gateway.info", id=-5)
    assert result_of(wire.reply("abc-1"))["name"] == "tcpgw"
    assert result_of(wire.reply(0))["name"] == "tcpgw"
    assert result_of(wire.reply(-5))["name"] == "tcpgw"


def test_unknown_method(wire: Wire) -> None:
    with pytest.raises(RPCError) as e:
        wire.call("tcp.noSuchThing", {})
    assert e.value.code == METHOD_NOT_FOUND
    with pytest.raises(RPCError) as e:
        wire.call("rpc.something")
    assert e.value.code == METHOD_NOT_FOUND


def test_notifications_are_never_answered(wire: Wire) -> None:
    wire.notify("gateway.info")
    wire.notify("tcp.constants", {})
    wire.notify("no.such.method", {"x": 1})
    wire.notify("tcp.setTTL", {"handle": "bad"})  # invalid params: still no answer
    rid = wire.request("tcp.constants")
    m = wire.next_reply()
    assert m.obj.get("id") == rid, f"first reply is not our request's: {m.obj}"
    wire.drain(0.3)
    assert wire.inbox == [], [x.obj for x in wire.inbox]


def test_batch_mixed_with_invalid_members(wire: Wire) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "gateway.info"},
        {"jsonrpc": "2.0", "method": "tcp.constants"},  # notification: left out
        {"jsonrpc": "2.0", "id": 2, "method": "no.such"},
        5,
        {"jsonrpc": "2.0", "id": 3, "method": "tcp.setTTL", "params": {"handle": 1, "timeToLive": 0}},
        {"jsonrpc": "2.0", "id": "four", "method": "tcp.constants", "params": {}},
    ]
    wire.send_obj(batch)
    m = wire.next_reply()
    assert isinstance(m.obj, list), m.obj
    assert len(m.obj) == 5, m.obj
    by_id = {json.dumps(r.get("id")): r for r in m.obj if r.get("id") is not None}
    assert by_id["1"]["result"]["name"] == "tcpgw"
    assert by_id["2"]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id["3"]["error"]["code"] == INVALID_PARAMS
    assert by_id['"four"']["result"]["AF_INET"] == 2
    nulls = [r for r in m.obj if r.get("id") is None]
    assert len(nulls) == 1 and nulls[0]["error"]["code"] == INVALID_REQUEST, m.obj
    wire.drain(0.2)
    assert wire.inbox == []


def test_empty_batch_is_one_invalid_request(wire: Wire) -> None:
    wire.send_raw(b"[]\n")
    m = wire.next_reply()
    assert isinstance(m.obj, dict), f"expected a single error object, got {m.obj!r}"
    assert m.obj["id"] is None
    assert _error(m.obj)["code"] == INVALID_REQUEST
    _assert_alive(wire)


def test_all_notification_batch_gets_no_reply(wire: Wire) -> None:
    wire.send_obj([{"jsonrpc": "2.0", "method": "gateway.info"},
                   {"jsonrpc": "2.0", "method": "tcp.constants", "params": {}}])
    rid = wire.request("gateway.info")
    m = wire.next_reply()
    assert m.obj.get("id") == rid, m.obj
    wire.drain(0.3)
    assert wire.inbox == []


def test_by_name_and_by_position_params(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    srv = wire.call("tcp.createServer", [{"addr": "127.0.0.1", "port": 0}, 5])
    assert srv["local"]["port"] > 0
    c = wire.call("tcp.createClient", [{"addr": "127.0.0.1", "port": port_of(lst)}, 3000])
    peer, _ = lst.accept()
    assert wire.call("tcp.send", [c["handle"], "6869", "hex"]) == 2
    assert peer.recv(10) == b"hi"
    assert wire.call("tcp.send", [c["handle"], "abcdef", "utf8", 2, 3]) == 3
    assert peer.recv(10) == b"cde"
    peer.sendall(b"xyz")
    time.sleep(0.1)
    r = wire.call("tcp.recv", [c["handle"], 100, 3000, "utf8"])
    assert r == {"data": "xyz", "encoding": "utf8", "eof": False}
    assert wire.call("tcp.setLinger", [c["handle"], {"onoff": False, "time": 0}]) is True
    assert wire.call("tcp.getState", [c["handle"]]) == {"state": 4, "name": "ESTABLISHED"}
    # accept's remoteAddr is not a position: the second positional is the timeout.
    with pytest.raises(RPCError) as e:
        wire.call("tcp.accept", [srv["handle"], 100])
    assert e.value.code == -32002
    peer.close()
    lst.close()


def test_too_many_positional_params(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    with pytest.raises(RPCError) as e:
        wire.call("tcp.getState", [srv["handle"], 1])
    assert e.value.code == INVALID_PARAMS


def test_oversized_line_is_rejected_and_connection_stays_usable(start_gateway: GatewayFactory) -> None:
    gw = start_gateway("--max-message-bytes", "1024")
    w = gw.connect()
    assert w.call("gateway.info")["limits"]["maxMessageBytes"] == 1024
    # A valid request well under the limit works...
    pad = "p" * 800
    rid = w.request("tcp.constants", id=pad)
    assert result_of(w.reply(rid))["AF_INET"] == 2
    # ...one of 5000 bytes (a real request, so only its size is wrong) does not.
    big = json.dumps({"jsonrpc": "2.0", "id": "big", "method": "tcp.constants", "params": {},
                      "x": "y" * 5000}).encode() + b"\n"
    w.send_raw(big)
    m = w.next_reply()
    assert m.obj["id"] is None, m.obj
    assert _error(m.obj)["code"] == INVALID_REQUEST
    # The rest of the line was discarded, nothing else answered, the next request works.
    _assert_alive(w)
    w.drain(0.2)
    assert w.inbox == []
    # Also when the oversized line arrives in pieces, with a request right behind it.
    w.send_raw(b"z" * 3000)
    time.sleep(0.05)
    w.send_raw(b"z" * 3000 + b"\n" + b'{"jsonrpc":"2.0","id":"after","method":"tcp.constants"}\n')
    m = w.next_reply()
    assert m.obj["id"] is None and _error(m.obj)["code"] == INVALID_REQUEST, m.obj
    assert result_of(w.reply("after"))["AF_INET6"] == 10


def test_waiting_recv_does_not_delay_later_requests(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    c = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})
    peer, _ = lst.accept()
    slow = wire.request("tcp.recv", {"handle": c["handle"], "timeout": 20000})
    t0 = time.monotonic()
    info = wire.call("gateway.info", timeout=3)
    assert time.monotonic() - t0 < 2.0
    assert info["name"] == "tcpgw"
    assert wire.call("tcp.getState", {"handle": c["handle"]})["state"] == 4
    assert wire.inbox == [], "the waiting recv must not have been answered yet"
    peer.sendall(b"late")
    r = result_of(wire.reply(slow, timeout=5))
    assert decode(r) == b"late"
    peer.close()
    lst.close()


def test_waiting_accept_does_not_delay_later_requests(wire: Wire) -> None:
    srv = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    slow = wire.request("tcp.accept", {"handle": srv["handle"], "timeout": 20000})
    t0 = time.monotonic()
    assert wire.call("tcp.constants", timeout=3)["TCP_LISTEN"] == 1
    assert time.monotonic() - t0 < 2.0
    import socket as s_
    peer = s_.create_connection(("127.0.0.1", srv["local"]["port"]), timeout=5)
    acc = result_of(wire.reply(slow, timeout=5))
    assert acc["remote"]["port"] == peer.getsockname()[1]
    peer.close()


def test_several_messages_in_one_write(wire: Wire) -> None:
    lines = b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "tcp.constants"}).encode() + b"\n"
                     for i in range(100, 105))
    wire.send_raw(lines)
    for i in range(100, 105):
        assert result_of(wire.reply(i))["TCP_CLOSED"] == 0


def test_one_message_split_across_many_writes(wire: Wire) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": "split", "method": "gateway.info", "params": {}}).encode() + b"\n"
    for i in range(len(line)):
        wire.send_raw(line[i:i + 1])
        time.sleep(0.002)
    assert result_of(wire.reply("split"))["name"] == "tcpgw"


def test_multibyte_utf8_split_across_writes(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    c = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})
    peer, _ = lst.accept()
    text = "grüße €𝄞"
    line = json.dumps({"jsonrpc": "2.0", "id": "u", "method": "tcp.send",
                       "params": {"handle": c["handle"], "data": text}}, ensure_ascii=False).encode() + b"\n"
    cut = line.index("€".encode()) + 1  # in the middle of a multibyte sequence
    wire.send_raw(line[:cut])
    time.sleep(0.05)
    wire.send_raw(line[cut:])
    n = result_of(wire.reply("u"))
    assert n == len(text.encode())
    assert peer.recv(100) == text.encode()
    peer.close()
    lst.close()


def test_answers_never_contain_raw_newlines(wire: Wire) -> None:
    lst = py_listener("127.0.0.1")
    c = wire.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})
    peer, _ = lst.accept()
    peer.sendall(b"line1\nline2\r\n")
    time.sleep(0.1)
    r = wire.call("tcp.recv", {"handle": c["handle"], "encoding": "utf8", "timeout": 2000})
    # Wire parses line by line: had the gateway emitted a raw newline, parsing would have failed.
    assert r["data"] == "line1\nline2\r\n"
    peer.close()
    lst.close()


def test_other_connections_unaffected_by_garbage(gw: Gateway) -> None:
    a, b = gw.connect(), gw.connect()
    a.send_raw(b"\x00\x01garbage{{{\n[1,2,3]\n{}\n")
    assert b.call("gateway.info")["connections"] >= 2
    a.drain(0.3)
    assert len(a.inbox) == 3
    _assert_alive(a)
