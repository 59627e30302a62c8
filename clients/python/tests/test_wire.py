"""The sans-I/O core without a gateway: line framing, the fast paths, line counting and replay
of kept sessions (contract §12), read-ahead bookkeeping and ssh:// addresses.

Everything here drives ``tcpgw._wire`` / ``tcpgw._transport`` directly with bytes a gateway
would send (a fake transport made of byte strings); the integration files test the same
against the real gateway.
"""
from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from typing import Any, List, Optional, Tuple

import pytest

import tcpgw
from tcpgw import _wire
from tcpgw._transport import SshAddress
from tcpgw._wire import Answer, HandleState, KeepState, Session


class FakeTcp:
    """The handle object a Session needs (what tcpgw.Tcp carries)."""

    def __init__(self, handle: int, kind: str) -> None:
        self.handle = handle
        self.kind = kind
        self.local: Any = None
        self.remote: Any = None
        self.host: Optional[str] = None
        self.connect_error: Any = None
        self._state = HandleState()


def new_session() -> "Session[FakeTcp, str]":
    return Session(FakeTcp)


def on_data(handle: int, payload: bytes) -> bytes:
    text = base64.b64encode(payload).decode()
    return b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":%d,"data":"%s","encoding":"base64"}}\n' % (
        handle, text.encode())


def recv_answer_line(request_id: int, payload: bytes, eof: bool = False) -> bytes:
    text = base64.b64encode(payload).decode()
    return b'{"jsonrpc":"2.0","result":{"data":"%s","encoding":"base64","eof":%s},"id":%d}\n' % (
        text.encode(), b"true" if eof else b"false", request_id)


def feed_in_pieces(session: "Session[FakeTcp, str]", data: bytes, rng: random.Random) -> Tuple[list, list]:
    """Feed ``data`` cut at random places (as reads would cut it); collect answers and touched."""
    answers: list = []
    touched: list = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 200_000)
        got = session.feed(data[pos:pos + step], ())
        answers += got[0]
        touched += got[1]
        pos += step
    return answers, touched


# -- framing and fast paths ------------------------------------------------------------------
# Tests taking ``b64_decoder`` run once per usable base64 decoder (conftest.py).


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 100, 65536, 65537, 3 * 1024 * 1024 + 1])
def test_on_data_fast_path_decodes_exactly(size: int, b64_decoder: str) -> None:
    rng = random.Random(size)
    payload = bytes(rng.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)
    payload = payload[:size]
    session = new_session()
    answers, touched = feed_in_pieces(session, on_data(7, payload) + on_data(7, b"tail"), rng)
    assert answers == []
    obj = session.handles[7]
    events = [session.take_event(obj) for _ in range(2)]
    assert [e.name for e in events if e] == ["data", "data"]
    assert events[0] is not None and events[0].data == payload
    assert events[1] is not None and events[1].data == b"tail"
    assert session.take_event(obj) is None


def test_on_data_other_shapes_take_the_json_path(b64_decoder: str) -> None:
    session = new_session()
    payload = b"\x00\xffabc"
    text = base64.b64encode(payload).decode()
    lines = [
        # other key order, spaces, hex encoding, an escaped slash: all valid JSON-RPC
        json.dumps({"jsonrpc": "2.0", "method": "tcp.onData", "params": {"data": text, "handle": 3, "encoding": "base64"}}),
        '{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s", "encoding":"base64"}}' % text,
        '{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s","encoding":"hex"}}' % payload.hex(),
        '{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s","encoding":"base64"}}' % text.replace("/", "\\/"),
    ]
    session.feed("\n".join(lines).encode() + b"\n", ())
    obj = session.handles[3]
    got = []
    while True:
        event = session.take_event(obj)
        if event is None:
            break
        got.append(event.data)
    assert got == [payload] * 4


def test_bad_base64_in_the_fast_shape_is_a_protocol_error(b64_decoder: str) -> None:
    session = new_session()
    line = b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s","encoding":"base64"}}\n'
    for bad in (b"AAA", b"AA*A" * 20, b"AA=A" * 20, b"A" * 63 + b"!"):
        with pytest.raises(tcpgw.ProtocolError):
            session.feed(line % bad, ())
        session.drop_input()


# Texts around the decoders' size thresholds and padding rules: canonical base64, then what
# binascii's strict mode and pybase64's validate disagree on (a lone "=" after a whole quantum,
# which strict mode accepts and pybase64 refuses) and what every decoder must refuse.
_ODD_TEXTS = [
    base64.b64encode(os.urandom(n)) for n in (1, 2, 3, 47, 48, 49, 190, 191, 192, 193, 194, 1000, 70_000)
] + [
    b"AAAA=", b"QUJD" * 80 + b"=", b"QUJD" * 80 + b"==", b"QQ==" + b"QUJD" * 80, b"QUJD" * 80 + b"QQ=",
    b"QUJD" * 80 + b"QQ", b"QUJD" * 80 + b"Q", b"QUJD" * 40 + b"=" + b"QUJD" * 40, b"QUJD" * 80 + b"Q===",
    b"QUJD" * 80 + b"*AAA", b"QUJD" * 80 + b"\x80AAA", b"QUJD" * 80 + b"QUJ-", b"QUJD" * 80 + b"QUJ_",
    b"QUJD" * 79 + b"QU\x00D", b"=" * 320, b"QUJD" * 80 + b"QR==", b"QUJD" * 80 + b"QUI=",
    # JSON escapes and quotes inside the text (the fast paths do not scan for them: the decoders
    # refuse them and the JSON path decides), and whitespace at either end
    b"QUJD" * 40 + b"\\/" + b"QUJ" + b"QUJD" * 40, b"QUJD" * 80 + b"\\u0041AAA", b"QUJD" * 80 + b"QUJ\\n",
    b"QUJD" * 40 + b'"' + b"QUJD" * 40, b"QUJD" * 40 + b'","x":"' + b"QUJD" * 40, b"\\\\" * 160,
    b"  " + b"QUJD" * 80 + b"QQ", b"QUJD" * 80 + b"QQ  ", b"\t\tQUJD" + b"QUJD" * 80 + b"QQ", b" QUJD",
    # "=" then a digit at the end: not padding (EVP_DecodeBlock alone would decode it)
    b"QUJD" * 80 + b"QQ=4", b"QUJD" * 80 + b"QU=/", b"QUJD" * 20 + b"Q=A=",
]


def _expected(text: bytes) -> Optional[bytes]:
    """What the JSON path makes of ``text`` as a JSON string's contents (``json.loads``, then
    strict ``base64.b64decode``); None: refused (a ProtocolError)."""
    try:
        return base64.b64decode(json.loads(b'{"data":"%s"}' % text)["data"], validate=True)
    except ValueError:
        return None


@pytest.mark.parametrize("text", _ODD_TEXTS, ids=range(len(_ODD_TEXTS)))
def test_every_decoder_gives_what_the_json_path_gives(text: bytes, b64_decoder: str) -> None:
    expected = _expected(text)
    session = new_session()
    line = b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s","encoding":"base64"}}\n' % text
    if expected is None:
        with pytest.raises(tcpgw.ProtocolError):
            session.feed(line, ())
    else:
        session.feed(line, ())
        event = session.take_event(session.handles[3])
        assert event is not None and event.data == expected
    session = new_session()
    request_id, _ = session.request("tcp.recv", {"handle": 1, "length": 10}, "caller")
    answer_line = b'{"jsonrpc":"2.0","result":{"data":"%s","encoding":"base64","eof":false},"id":%d}\n' % (
        text, request_id)
    if expected is None:  # a ProtocolError, from the line (not JSON) or from its data
        with pytest.raises(tcpgw.ProtocolError):
            answers, _ = session.feed(answer_line, ())
            _wire.recv_answer(answers[0][1])
    else:
        answers, _ = session.feed(answer_line, ())
        assert _wire.recv_answer(answers[0][1]) == (expected, False)


def test_every_decoder_agrees_with_the_json_path_on_mutated_texts(b64_decoder: str) -> None:
    rng = random.Random(5)
    for _ in range(1500):
        text = bytearray(base64.b64encode(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))))
        for _ in range(rng.randint(0, 2)):
            if text:
                text[rng.randrange(len(text))] = rng.choice(b'=\\"/ +A\x00')
        expected = _expected(bytes(text))
        session = new_session()
        line = b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":3,"data":"%s","encoding":"base64"}}\n'
        try:
            session.feed(line % text, ())
        except tcpgw.ProtocolError:
            assert expected is None, bytes(text)
            continue
        event = session.take_event(session.handles[3])
        assert event is not None and event.data == expected, bytes(text)


def test_send_encoding_is_the_same_under_every_decoder(b64_decoder: str) -> None:
    for data in (b"", b"a", bytearray(b"xyz1"), memoryview(b"hello world")[2:7], os.urandom(100_000)):
        assert _wire.encode_send_data(data) == (base64.b64encode(data).decode("ascii"), "base64")
    assert _wire.encode_send_data([b"ab", "cd"]) == (["YWI=", "Y2Q="], "base64")


@pytest.mark.parametrize("forced", ["", *_wire.BASE64_DECODERS, "no-such-decoder"])
def test_the_environment_forces_a_decoder(forced: str) -> None:
    available = _wire.available_base64_decoders()
    env = dict(os.environ, TCPGW_PY_BASE64=forced, PYTHONWARNINGS="default")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(tcpgw.__file__)),
                                                      env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", "from tcpgw import _wire; print(_wire.base64_decoder())"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if forced in _wire.BASE64_DECODERS:
        # the one named, or the next usable one after it
        order = _wire.BASE64_DECODERS[_wire.BASE64_DECODERS.index(forced):]
        assert result.stdout.strip() == next(name for name in order if name in available)
    else:
        assert result.stdout.strip() == available[0]
    assert ("TCPGW_PY_BASE64" in result.stderr) == (forced == "no-such-decoder")


def test_choosing_a_decoder() -> None:
    before = _wire.base64_decoder()
    try:
        assert _wire.use_base64_decoder("binascii") == "binascii" == _wire.base64_decoder()
        assert _wire.use_base64_decoder(None) == _wire.available_base64_decoders()[0]
        with pytest.raises(ValueError):
            _wire.use_base64_decoder("base64ish")
    finally:
        _wire.use_base64_decoder(before)


@pytest.mark.parametrize("params", [
    {"handle": 7}, {"handle": 7, "length": 1048576, "encoding": "base64"}, {"handle": 7, "encoding": "base64", "length": 5},
    {"length": 5, "handle": 7, "encoding": "base64"}, {"handle": 7, "length": True, "encoding": "base64"},
    {"handle": True, "length": 5, "encoding": "base64"}, {"handle": 7, "length": 5, "encoding": "hex"},
    {"handle": 7, "length": 5, "timeout": 9}, {"handle": 7, "length": 5, "encoding": "base64", "timeout": 9},
    {"handle": "7"}, {}, {"data": "caf\u00e9\n\"", "handle": 2},
])
def test_request_lines_are_what_the_encoder_writes(params: dict) -> None:
    """The request line's shortcuts (a handle alone, a recv's three members) write what the
    JSON encoder writes for the whole message; any other shape goes through the encoder."""
    line = _wire.request_line(41, "tcp.recv", params)
    assert line == _wire.encode_line({"jsonrpc": "2.0", "id": 41, "method": "tcp.recv", "params": params})
    assert json.loads(line) == {"jsonrpc": "2.0", "id": 41, "method": "tcp.recv", "params": params}


def test_recv_answer_fast_path_needs_its_pending_request(b64_decoder: str) -> None:
    session = new_session()
    request_id, line = session.request("tcp.recv", {"handle": 1, "length": 10}, "caller")
    assert json.loads(line)["method"] == "tcp.recv"
    payload = os.urandom(70_000)
    answers, _ = session.feed(recv_answer_line(request_id, payload, eof=False), ())
    assert len(answers) == 1
    token, answer = answers[0]
    assert token == "caller" and answer.payload == payload
    assert _wire.recv_answer(answer) == (payload, False)
    assert request_id not in session.pending
    # the same shape answering a request that is not a recv goes through json (and is no payload)
    other_id, _ = session.request("tcp.sockName", {"handle": 1}, "other")
    answers, _ = session.feed(recv_answer_line(other_id, b"xy", eof=True), ())
    assert answers[0][1].payload is None
    assert answers[0][1].value == {"data": base64.b64encode(b"xy").decode(), "encoding": "base64", "eof": True}
    # an answer for nobody's request is dropped, not mistaken for one
    assert session.feed(recv_answer_line(999, b"zz"), ()) == ([], [])



def test_recv_answer_other_shapes_take_the_json_path(b64_decoder: str) -> None:
    """The fast path finds the text's end from the line's tail; any other shape (or a text
    that is not plain base64, even one holding the tail's own words) is JSON's to decide."""
    payload = os.urandom(3000)
    text = base64.b64encode(payload).decode()
    shapes = [
        '{"jsonrpc":"2.0","result":{"eof":false,"data":"%s","encoding":"base64"},"id":%d}' % (text, 0),
        '{"jsonrpc":"2.0", "result":{"data":"%s","encoding":"base64","eof":false},"id":%d}' % (text, 0),
        '{"jsonrpc":"2.0","result":{"data":"%s","encoding":"hex","eof":false},"id":%d}' % (payload.hex(), 0),
        '{"jsonrpc":"2.0","result":{"data":"%s","encoding":"base64","eof":false},"id":%d}' % (text.replace("/", "\\/"), 0),
    ]
    for shape in shapes:
        session = new_session()
        request_id, _ = session.request("tcp.recv", {"handle": 1, "length": 5000}, "caller")
        line = shape.replace('"id":0}', '"id":%d}' % request_id).encode() + b"\n"
        answers, _ = session.feed(line, ())
        assert len(answers) == 1, shape
        assert _wire.recv_answer(answers[0][1]) == (payload, False), shape
    # A text that ends in an escaped copy of the tail: the last tail is the real one, the text
    # before it is not base64, and JSON's reading of it (not base64 either) is refused.
    session = new_session()
    request_id, _ = session.request("tcp.recv", {"handle": 1, "length": 5000}, "caller")
    sneaky = text[:40] + '\\",\\"encoding\\":\\"base64\\",\\"eof\\":true},\\"id\\":%d}' % request_id
    line = b'{"jsonrpc":"2.0","result":{"data":"%s","encoding":"base64","eof":false},"id":%d}\n' % (
        sneaky.encode(), request_id)
    answers, _ = session.feed(line, ())
    assert len(answers) == 1
    with pytest.raises(tcpgw.ProtocolError):
        _wire.recv_answer(answers[0][1])

def test_line_longer_than_the_buffer_grows_it_and_then_reads_go_on(b64_decoder: str) -> None:
    session = new_session()
    big = os.urandom(_wire.READ_SIZE * 2)
    first = on_data(5, big)
    session.feed(first[:-10], ())
    assert session.take_event(session.handle_obj(5, "connection")) is None  # incomplete: nothing yet
    session.feed(first[-10:] + on_data(5, b"after"), ())
    obj = session.handles[5]
    a, b = session.take_event(obj), session.take_event(obj)
    assert a is not None and a.data == big
    assert b is not None and b.data == b"after"


def test_empty_lines_are_skipped() -> None:
    session = new_session()
    session.keep = KeepState("t", 1000)
    request_id, _ = session.request("gateway.info", {}, "w")
    answers, _ = session.feed(b"\n\n" + b'{"jsonrpc":"2.0","result":{},"id":%d}\n' % request_id + b"\n", ())
    assert len(answers) == 1
    assert session.keep.received == 1


# -- counting and replay (contract §12) ------------------------------------------------------


def test_keep_counts_gateway_lines_only_when_complete() -> None:
    session = new_session()
    session.keep = KeepState("tok", 5000)
    data = on_data(2, b"a" * 1000) + b'{"jsonrpc":"2.0","method":"tcp.onEnd","params":{"handle":2}}\n'
    session.feed(data[:500], ())
    assert session.keep.received == 0
    session.feed(data[500:-1], ())
    assert session.keep.received == 1
    session.feed(data[-1:], ())
    assert session.keep.received == 2
    # a partial line when the connection drops is forgotten (the gateway sends it again)
    session.feed(on_data(2, b"lost")[:20], ())
    session.drop_input()
    session.feed(on_data(2, b"again"), ())
    assert session.keep.received == 3
    obj = session.handles[2]
    names = []
    while True:
        event = session.take_event(obj)
        if event is None:
            break
        names.append((event.name, event.data))
    assert names == [("data", b"a" * 1000), ("end", None), ("data", b"again")]


def test_keep_numbers_client_lines_and_prunes_what_answers_prove_read() -> None:
    keep = KeepState("tok", 5000)
    session = new_session()
    session.keep = keep
    lines: List[Tuple[int, bytes]] = []
    pendings = []
    for i in range(5):
        request_id, line = session.request("tcp.pending", {"handle": i + 1}, f"w{i}")
        number = keep.outgoing(line)
        session.pending[request_id].line = number
        pendings.append(request_id)
        lines.append((number, line))
    assert [n for n, _ in lines] == [1, 2, 3, 4, 5]
    assert keep.outgoing(b"\n") == 0  # empty lines are not counted
    assert keep.kept_lines() == 5
    # the answer to line 3 proves lines 1..3 were read; answers may come out of order
    session.feed(b'{"jsonrpc":"2.0","result":0,"id":%d}\n' % pendings[2], ())
    assert keep.read_by_gateway == 3
    ack = keep.ack_line()
    assert json.loads(ack) == {"jsonrpc": "2.0", "method": "session.ack", "params": {"received": 1}}
    assert keep.outgoing(ack) == 6
    assert keep.kept_lines() == 3  # lines 4, 5 and the ack
    # resume: the gateway had read up to line 4; lines 5 and 6 go out again, in order
    assert keep.resumed(4) == [lines[4][1], ack]
    with pytest.raises(tcpgw.ProtocolError):
        keep.resumed(7)  # more read than written: a broken gateway


def test_resume_line_reports_what_was_read() -> None:
    keep = KeepState("tok-1", 30000)
    keep.incoming(41, 1000)
    message = json.loads(keep.resume_line())
    assert message["method"] == "session.resume"
    assert message["params"] == {"token": "tok-1", "received": 41}


def test_ack_pace_by_lines_and_by_bytes() -> None:
    keep = KeepState("t", 1000)
    assert not keep.ack_due()
    keep.incoming(_wire.ACK_LINES - 1, 100)
    assert not keep.ack_due()
    keep.incoming(1, 1)
    assert keep.ack_due()
    keep.ack_line()
    assert not keep.ack_due()
    keep.incoming(1, _wire.ACK_BYTES)
    assert keep.ack_due()


def test_replay_through_a_fake_gateway_loses_and_duplicates_nothing() -> None:
    """A scripted gateway reads the client's lines, drops the connection at random points and
    resumes: what it has read in the end is every line once, in order."""
    rng = random.Random(1234)
    keep = KeepState("tok", 5000)
    written: List[bytes] = []
    gateway_read: List[bytes] = []
    for round_ in range(50):
        for i in range(rng.randint(1, 20)):
            line = b'{"n":%d}\n' % len(written)
            written.append(line)
            keep.outgoing(line)
            # the transport delivers a random prefix of what was written before a drop
        delivered = rng.randint(0, len(written) - len(gateway_read))
        gateway_read += written[len(gateway_read):len(gateway_read) + delivered]
        if rng.random() < 0.5:
            keep.gateway_read(rng.randint(0, len(gateway_read)))  # an answer proved some read
        resent = keep.resumed(len(gateway_read))
        assert resent == written[len(gateway_read):]
        gateway_read += resent
    assert gateway_read == written


# -- read-ahead ------------------------------------------------------------------------------


def test_read_ahead_bookkeeping() -> None:
    state = HandleState()
    assert state.take_ahead(10) is None
    assert state.keep_ahead(b"0123456789", 4) == b"0123"
    assert state.ahead_count() == 6
    assert state.take_ahead(0) is None  # an invalid length is the gateway's to refuse
    assert state.take_ahead(3) == b"456"
    assert state.drain_ahead() == b"789"
    assert state.ahead_count() == 0 and state.take_ahead(5) is None
    assert state.keep_ahead(b"ab", 10) == b"ab" and state.ahead_count() == 0
    # two recvs that both kept bytes (threads, tasks): both are kept, nothing is lost
    assert state.keep_ahead(b"abcdef", 2) == b"ab"
    assert state.keep_ahead(b"uvwxyz", 3) == b"uvw"
    assert state.drain_ahead() == b"cdefxyz"
    assert _wire.recv_length(16) == _wire.RECV_AHEAD
    assert _wire.recv_length(_wire.RECV_AHEAD * 2) == _wire.RECV_AHEAD * 2
    assert _wire.recv_length(0) == 0 and _wire.recv_length(-5) == -5 and _wire.recv_length(True) is True


def test_requeue_ahead_puts_kept_bytes_first() -> None:
    session = new_session()
    obj = session.handle_obj(4, "connection")
    obj._state.keep_ahead(b"kept-bytes", 4)
    session.feed(on_data(4, b"later"), ())
    session.requeue_ahead(obj)
    first, second = session.take_event(obj), session.take_event(obj)
    assert first is not None and first.data == b"-bytes"
    assert second is not None and second.data == b"later"


# -- ssh:// addresses ------------------------------------------------------------------------


def test_ssh_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCPGW_SSH", raising=False)
    monkeypatch.delenv("TCPGW_REMOTE_BIN", raising=False)
    a = SshAddress("ssh://alice@gw.example:2222/run/tcpgw.sock")
    assert (a.user, a.host, a.port, a.socket) == ("alice", "gw.example", 2222, "/run/tcpgw.sock")
    assert a.argv("bridge") == ["ssh", "-T", "-o", "BatchMode=yes", "-p", "2222", "-l", "alice", "gw.example",
                                "--", "tcpgw", "bridge", "--socket", "/run/tcpgw.sock"]
    b = SshAddress("ssh://[::1]")
    assert (b.user, b.host, b.port, b.socket) == (None, "::1", None, None)
    assert b.argv("attach", operands=["TOK"]) == ["ssh", "-T", "-o", "BatchMode=yes", "::1", "--", "tcpgw", "attach",
                                                  "--", "TOK"]
    # A token may start with '-' (base64url): after the socket option and '--', never an option.
    assert a.argv("attach", operands=["-x3Tok"])[-5:] == ["attach", "--socket", "/run/tcpgw.sock", "--", "-x3Tok"]
    assert b.argv("attach", operands=["-x3Tok"])[-3:] == ["attach", "--", "-x3Tok"]
    monkeypatch.setenv("TCPGW_SSH", "/opt/ssh -F '/my config'")
    monkeypatch.setenv("TCPGW_REMOTE_BIN", "/usr/local/bin/tcpgw")
    assert SshAddress("ssh://h/x.sock").argv("bridge") == [
        "/opt/ssh", "-F", "/my config", "-T", "-o", "BatchMode=yes", "h", "--", "/usr/local/bin/tcpgw", "bridge",
        "--socket", "/x.sock"]
    for bad in ("ssh://", "ssh://host:99999", "ssh://-oProxyCommand=x", "ssh://a b", "ssh://user@", "ssh://h:port"):
        with pytest.raises(ValueError):
            SshAddress(bad)


def test_answer_slots() -> None:
    answer: "Answer[FakeTcp]" = Answer(value=True)
    answer.payload = b"x"
    assert _wire.recv_answer(answer) == (b"x", True)


def test_scalar_answers_without_json_and_creations_with_it() -> None:
    session = new_session()
    ids = {name: session.request(method, {"handle": 1}, name)[0]
           for name, method in (("n", "tcp.pending"), ("t", "tcp.setNoDelay"), ("f", "tcp.isEOF"),
                                ("z", "tcp.bindToDevice"), ("neg", "tcp.getSendBufferSize"))}
    lines = b"".join(b'{"jsonrpc":"2.0","result":%s,"id":%d}\n' % (text, ids[name])
                     for name, text in (("n", b"42"), ("t", b"true"), ("f", b"false"), ("z", b"null"), ("neg", b"-7")))
    answers, _ = session.feed(lines, ())
    assert {token: answer.value for token, answer in answers} == {"n": 42, "t": True, "f": False, "z": None, "neg": -7}
    assert all(type(answer.value) in (int, bool, type(None)) for _, answer in answers)
    assert session.pending == {}
    # a creation answer is never scalar-shaped, but if one were it must still go through json
    create_id, _ = session.request("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}}, "c")
    answers, _ = session.feed(b'{"jsonrpc":"2.0","result":{"handle":9},"id":%d}\n' % create_id, ())
    assert answers[0][1].handle_obj is session.handles[9]
    # an error answer keeps its class
    err_id, _ = session.request("tcp.pending", {"handle": 5}, "e")
    answers, _ = session.feed(b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"unknown handle"},"id":%d}\n' % err_id, ())
    assert isinstance(answers[0][1].error, tcpgw.UnknownHandleError)


def test_lines_cut_into_tiny_reads(b64_decoder: str) -> None:
    rng = random.Random(7)
    session = new_session()
    payloads = [os.urandom(rng.randint(0, 3000)) for _ in range(30)]
    data = b"".join(on_data(1, p) for p in payloads)
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 7) if rng.random() < 0.9 else rng.randint(1000, 9000)
        session.feed(data[pos:pos + step], ())
        pos += step
    obj = session.handles[1]
    got = []
    while True:
        event = session.take_event(obj)
        if event is None:
            break
        got.append(event.data)
    assert got == payloads
