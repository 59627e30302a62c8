"""Issue 6: the codec's long-string splice must not be forgeable by data.

Long plain strings (base64, hex, long ids) travel around jansson; a string that looks like the
splice's placeholder, whether a peer's bytes or a client's method name, must come back as
itself, and every long string must land in its own place."""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import client_pair
from wire import METHOD_NOT_FOUND, Wire, b64, decode, result_of

FORGERIES = {
    "escaped-text": b"see \\u0000tcpgw:0 here",  # the marker's escaped spelling, as plain ASCII
    "real-nul": b"see \x00tcpgw:0 here",
    "whole-placeholder": b"\x00tcpgw:0",
    "next-index": b"\\u0000tcpgw:1 and \x00tcpgw:1",
}


def wait_pending(w: Wire, handle: int, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while w.call("tcp.pending", {"handle": handle}) < n:
        assert time.monotonic() < deadline, f"handle {handle}: {n} bytes never arrived"
        time.sleep(0.02)


@pytest.mark.parametrize("text", FORGERIES.values(), ids=FORGERIES.keys())
def test_peer_text_cannot_take_another_handles_bytes(wire: Wire, text: bytes) -> None:
    c1, peer1 = client_pair(wire, "127.0.0.1")
    c2, peer2 = client_pair(wire, "127.0.0.1")
    h1, h2 = c1["handle"], c2["handle"]
    payload = os.urandom(600)  # 800 base64 characters: spliced
    peer1.sendall(text)
    peer2.sendall(payload)
    wait_pending(wire, h1, len(text))
    wait_pending(wire, h2, len(payload))
    wire.send_obj([
        {"jsonrpc": "2.0", "id": "one", "method": "tcp.recv",
         "params": {"handle": h1, "encoding": "utf8", "length": 64, "timeout": 2000}},
        {"jsonrpc": "2.0", "id": "two", "method": "tcp.recv",
         "params": {"handle": h2, "encoding": "base64", "length": 600, "timeout": 2000}},
    ])
    answers = wire.next_reply().obj  # a line that is not JSON fails here
    assert isinstance(answers, list) and len(answers) == 2, answers
    by_id = {a["id"]: a for a in answers}
    one = by_id["one"]["result"]
    assert one["data"] == text.decode(), one
    two = by_id["two"]["result"]
    assert decode(two) == payload
    peer1.close()
    peer2.close()


def test_bytes_sent_back_through_the_peer_are_unchanged(wire: Wire) -> None:
    """The same strings the other way: a long base64 send beside a short forged one."""
    c, peer = client_pair(wire, "127.0.0.1")
    forged = "see \\u0000tcpgw:0 here \x00tcpgw:0"
    payload = os.urandom(900)
    line = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "tcp.send", "params": [c["handle"], forged, "utf8"]},
        {"jsonrpc": "2.0", "id": 2, "method": "tcp.send", "params": [c["handle"], b64(payload), "base64"]},
    ], separators=(",", ":"))
    wire.send_raw(line.encode() + b"\n")
    answers = {a["id"]: a for a in wire.next_reply().obj}
    assert answers[1]["result"] == len(forged.encode())
    assert answers[2]["result"] == len(payload)
    got = b""
    peer.settimeout(5.0)
    while len(got) < len(forged.encode()) + len(payload):
        chunk = peer.recv(65536)
        assert chunk, "peer saw EOF early"
        got += chunk
    assert got == forged.encode() + payload
    peer.close()


# The client-side case: a long id (spliced on parse and on print) and a method name holding
# the marker, which the -32601 message quotes.
METHOD_NAMES = {
    "escaped-nul": r"a\u0000tcpgw:0",  # JSON escape: the method name holds a real NUL
    "escaped-backslash": r"a\\u0000tcpgw:0",  # the marker's escaped spelling as text
}


@pytest.mark.parametrize("method", METHOD_NAMES.values(), ids=METHOD_NAMES.keys())
def test_a_long_id_is_echoed_whatever_the_method_name(wire: Wire, method: str) -> None:
    xs = "X" * 600
    wire.send_raw(f'{{"jsonrpc":"2.0","id":"{xs}","method":"{method}"}}\n')
    msg = wire.next_reply()
    assert msg.obj["id"] == xs, msg.obj
    err = msg.obj["error"]
    assert err["code"] == METHOD_NOT_FOUND
    assert json.loads(f'"{method}"') in err["message"], err
    assert "XXXX" not in err["message"], err
    # The connection is still in step: the next answer is the next request's.
    assert result_of(wire.call_msg("gateway.info"))["name"] == "tcpgw"
