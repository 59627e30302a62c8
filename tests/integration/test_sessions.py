"""Resumable sessions (contract §12): session.keep, session.ack, session.resume, the replay
bound, the grace, takeover, -32007, and `tcpgw bridge --keep`.

The links really drop: the client's socket is closed with SO_LINGER 0 at seeded random points
(sometimes just after half a request line) while a Python peer streams both ways and calls
wait in the gateway. Bounded loops, seeded randomness, loopback and Unix sockets only.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import select
import socket
import subprocess
import threading
import time
from typing import Any, Optional

import pytest

from conftest import (TCPGW_BIN, accepted_pair, port_of, py_listener, recv_exact_py, short_tmpdir)
from kept import Dropped, KeptClient, Relay, hard_close
from wire import INVALID_PARAMS, INVALID_REQUEST, TIMED_OUT, Wire

UNKNOWN_SESSION = -32007


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ondata_bytes(k: KeptClient, handle: int) -> bytes:
    return b"".join(base64.b64decode(m["params"]["data"]) for m in k.messages
                    if isinstance(m, dict) and m.get("method") == "tcp.onData" and m["params"]["handle"] == handle)


def answers_to(k: KeptClient, rid: Any) -> list[Any]:
    return [m for m in k.messages if isinstance(m, dict) and "method" not in m and m.get("id") == rid]


def peer_closed(s: socket.socket, timeout: float) -> bool:
    """Whether the peer socket sees EOF or a reset within `timeout` (reading and dropping data)."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    return False


def flowing_client(k: KeptClient, listener: socket.socket) -> tuple[int, socket.socket]:
    """An async tcp.createClient to `listener`: a flowing handle, and the peer's side of it."""
    handle = k.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(listener)}, "async": True})["handle"]
    peer, _ = listener.accept()
    deadline = time.monotonic() + 10
    while not any(m.get("method") == "tcp.onConnect" for m in k.messages if isinstance(m, dict)):
        assert time.monotonic() < deadline, "no tcp.onConnect"
        k.pump(0.05)
    return handle, peer


def paused_client(k: KeptClient, listener: socket.socket) -> tuple[int, socket.socket]:
    handle = k.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(listener)}})["handle"]
    peer, _ = listener.accept()
    return handle, peer


# ------------------------------------------------------------------------------ the methods
def test_keep_answers_a_token_and_the_grace(gw) -> None:
    k = KeptClient(gw.path)
    first = k.keep()
    assert first["grace"] == 30000
    token = first["token"]
    assert len(token) == 22 and all(c.isalnum() or c in "-_" for c in token), token
    # A second keep only changes the grace; its answer is a counted line.
    assert k.call("session.keep", {"grace": 1234}) == {"token": token, "grace": 1234}
    assert k.call("session.keep", [0]) == {"token": token, "grace": 0}
    for bad in [-1, 3600001, 1.5, "100", True, [1]]:
        m = k.wait(k.request("session.keep", {"grace": bad}))
        assert m["error"]["code"] == INVALID_PARAMS and "grace" in m["error"]["message"], (bad, m)
    assert k.call("session.keep", {"grace": 3600000})["grace"] == 3600000
    # Tokens differ between sessions.
    other = KeptClient(gw.path)
    assert other.keep(5)["token"] != token


def test_keep_inside_a_batch_is_refused_and_changes_nothing(gw) -> None:
    w = gw.connect()
    w.send_raw(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "session.keep", "params": {}},
                           {"jsonrpc": "2.0", "id": 2, "method": "tcp.list"}]) + "\n")
    answer = w.next_reply().obj
    assert isinstance(answer, list) and len(answer) == 2
    keep = next(a for a in answer if a["id"] == 1)
    assert keep["error"]["code"] == INVALID_REQUEST and "batch" in keep["error"]["message"]
    # Not kept: session.ack is -32007 here.
    err = w.call_msg("session.ack", {"received": 0}).obj["error"]
    assert err["code"] == UNKNOWN_SESSION


def test_ack_checks_its_count(gw) -> None:
    k = KeptClient(gw.path)
    k.keep()
    assert k.call("tcp.list") == []
    assert k.call("session.ack", {"received": k.received}) is True
    m = k.wait(k.request("session.ack", {"received": k.received + 5}))
    assert m["error"]["code"] == INVALID_PARAMS and "received" in m["error"]["message"]
    for bad in [-1, "3", None, 1.5]:
        m = k.wait(k.request("session.ack", {"received": bad}))
        assert m["error"]["code"] == INVALID_PARAMS, (bad, m)
    # An older count than one acknowledged changes nothing; the session goes on.
    k.ack()
    k.notify("session.ack", {"received": 0})
    assert k.call("tcp.list") == []


def test_resume_with_a_wrong_token_changes_nothing(gw) -> None:
    k = KeptClient(gw.path)
    k.keep(grace=20000)
    srv = k.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    for token in ["AAAAAAAAAAAAAAAAAAAAAA", k.token[:-1] + ("A" if k.token[-1] != "A" else "B"), "x"]:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(gw.path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "session.resume",
                              "params": {"token": token, "received": 0}}).encode() + b"\n")
        f = s.makefile("rb")
        err = json.loads(f.readline())
        assert err["error"]["code"] == UNKNOWN_SESSION and err["id"] == 7, err
        # That connection stays an ordinary one: its own (empty) handle list, methods work.
        s.sendall(b'{"jsonrpc":"2.0","id":8,"method":"tcp.list"}\n')
        assert json.loads(f.readline())["result"] == []
        s.close()
    # The kept session did not notice.
    assert [h["handle"] for h in k.call("tcp.list")] == [srv["handle"]]
    bad = [{"token": 5, "received": 0}, {"token": k.token}, {"token": k.token, "received": -1},
           {"token": "", "received": 0}, {"received": 0}]
    for params in bad:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(gw.path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.resume", "params": params}).encode() + b"\n")
        err = json.loads(s.makefile("rb").readline())
        assert err["error"]["code"] == INVALID_PARAMS, (params, err)
        s.close()
    # received beyond the lines written, or before the acknowledged ones: -32602, nothing changes.
    k.ack()
    assert k.call("tcp.list")
    k.ack()
    for received in [k.received + 100, 0]:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(gw.path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.resume",
                              "params": {"token": k.token, "received": received}}).encode() + b"\n")
        err = json.loads(s.makefile("rb").readline())
        assert err["error"]["code"] == INVALID_PARAMS and "received" in err["error"]["message"], (received, err)
        s.close()
    assert [h["handle"] for h in k.call("tcp.list")] == [srv["handle"]]


def test_resume_only_as_the_first_line(gw) -> None:
    k = KeptClient(gw.path)
    k.keep()
    w = gw.connect()
    assert w.call("tcp.list") == []
    err = w.call_msg("session.resume", {"token": k.token, "received": 0}).obj["error"]
    assert err["code"] == INVALID_REQUEST and "first line" in err["message"]
    # Inside a batch as the first line: refused too.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(gw.path)
    s.sendall(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "session.resume",
                           "params": {"token": k.token, "received": 0}}]).encode() + b"\n")
    answer = json.loads(s.makefile("rb").readline())
    assert answer[0]["error"]["code"] == INVALID_REQUEST
    s.close()
    # The kept session is still live on its first connection.
    assert k.call("tcp.list") == []


def test_resume_replays_what_the_client_missed_and_it_resends_what_the_gateway_missed(gw) -> None:
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=20000)
    handle, peer = flowing_client(k, listener)
    k.ack()
    k.drop()
    # While detached: events (the peer's data) and answers to lines read before the drop are kept.
    peer.sendall(b"while you were away")
    time.sleep(0.2)
    answer = k.resume()["result"]
    assert [h["handle"] for h in answer["handles"]] == [handle]
    assert answer["handles"][0]["kind"] == "connection" and answer["handles"][0]["flowing"] is True
    deadline = time.monotonic() + 10
    while ondata_bytes(k, handle) != b"while you were away":
        assert time.monotonic() < deadline, ondata_bytes(k, handle)
        k.pump(0.05)
    # Lines the client wrote while it had no connection are resent after the resume.
    rid = k.request("tcp.send", {"handle": handle, "data": "hello"})  # written now, on the new link
    k.drop(partial=b'{"jsonrpc":"2.0","id":999,"method":"tcp.send","params":{"handle":')
    rid2 = k.request("tcp.send", {"handle": handle, "data": " world"})  # no link: kept for resend
    assert k.sock is None
    k.resume()
    assert k.wait(rid)["result"] == 5 and k.wait(rid2)["result"] == 6
    assert recv_exact_py(peer, 11) == b"hello world"
    assert answers_to(k, 999) == []  # the cut-off line was discarded, not run
    peer.settimeout(0.3)
    with pytest.raises(socket.timeout):
        peer.recv(1)  # and nothing ran twice
    listener.close()


def test_descriptor_passing_is_refused_on_a_kept_session(gw) -> None:
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep()
    handle, _peer = paused_client(k, listener)
    m = k.wait(k.request("tcp.flyAway", {"handle": handle}))
    assert m["error"]["code"] == -32006 and "kept session" in m["error"]["message"]
    assert [h["handle"] for h in k.call("tcp.list")] == [handle]  # the handle stays
    listener.close()


def test_takeover_closes_the_old_connection(gw) -> None:
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=20000)
    handle, peer = paused_client(k, listener)
    # Another connection resumes while k's is open: the gateway closes k's first.
    other = socket.socket(socket.AF_UNIX)
    other.settimeout(5)
    other.connect(gw.path)
    other.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.resume",
                              "params": {"token": k.token, "received": k.received}}).encode() + b"\n")
    f = other.makefile("rb")
    answer = json.loads(f.readline())
    assert [h["handle"] for h in answer["result"]["handles"]] == [handle]
    assert answer["result"]["received"] == len(k.sent)
    deadline = time.monotonic() + 10
    while k.pump(0.1):
        assert time.monotonic() < deadline, "the old connection stayed open"
    # The new connection goes on with the session (its lines count on from the old ones).
    other.sendall(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tcp.send",
                              "params": {"handle": handle, "data": "still here"}}).encode() + b"\n")
    assert json.loads(f.readline())["result"] == 10
    assert recv_exact_py(peer, 10) == b"still here"
    # And k takes it back, counting what other wrote (one line) and read (one answer).
    k.sent.append(b"")
    k.received += 1
    answer = k.resume()
    assert answer["result"]["received"] == len(k.sent)
    assert f.readline() == b""  # other was closed
    assert [h["handle"] for h in k.call("tcp.list")] == [handle]
    other.close()
    listener.close()


def listener_refuses(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_grace_expiry_closes_everything(start_gateway) -> None:
    gw = start_gateway()
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=1500)
    handle, peer = paused_client(k, listener)
    srv = k.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    k.drop()
    # Within the grace the handles stay (a wide margin: 1.5 s grace, checked at once).
    assert not peer_closed(peer, 0.2)
    assert peer_closed(peer, 15.0), "the grace ran out but the handle stayed"
    # The listener is gone too, and the token with it. The handles close one after another in
    # the same loop turn, so a connect racing that turn may still reach the listener's backlog:
    # ask again (bounded) until it is refused.
    assert listener_refuses(srv["local"]["port"], 5.0), "the grace ran out but the listener stayed"
    assert k.resume()["error"]["code"] == UNKNOWN_SESSION
    assert gw.connect().call("gateway.info")["handles"] == 0
    listener.close()


def test_grace_zero_ends_the_session_with_its_connection(gw) -> None:
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=0)
    _handle, peer = paused_client(k, listener)
    k.drop()
    assert peer_closed(peer, 10.0)
    assert k.resume()["error"]["code"] == UNKNOWN_SESSION
    listener.close()


def test_another_uid_cannot_resume(start_gateway) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    gw = start_gateway("--socket-mode", "0666")
    os.chmod(os.path.dirname(gw.path), 0o755)
    listener = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=20000)
    handle, peer = paused_client(k, listener)
    k.drop()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, with the right token
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(gw.path)
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "session.resume",
                                  "params": {"token": k.token, "received": k.received}}).encode() + b"\n")
            os.write(w, s.makefile("rb").readline())
        finally:
            os._exit(0)
    os.close(w)
    got = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        got += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert json.loads(got)["error"]["code"] == UNKNOWN_SESSION, got
    # Nothing changed: the owner resumes and the handle works.
    assert [h["handle"] for h in k.resume()["result"]["handles"]] == [handle]
    assert k.call("tcp.send", {"handle": handle, "data": "mine"}) == 4
    assert recv_exact_py(peer, 4) == b"mine"
    listener.close()


# ------------------------------------------------------------------------------ the link really drops
class Streamer(threading.Thread):
    """A peer that sends a seeded stream in random pieces and records what it receives."""

    def __init__(self, sock: socket.socket, payload: bytes, seed: int) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.payload = payload
        self.rng = random.Random(seed)
        self.got = bytearray()
        self.sent = 0
        self.error: Optional[BaseException] = None
        self.stop = False

    def run(self) -> None:
        try:
            self.sock.setblocking(False)
            deadline = time.monotonic() + 120
            while not self.stop and time.monotonic() < deadline:
                want_write = self.sent < len(self.payload)
                r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], 0.05)
                if r:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return
                    self.got += chunk
                if w:
                    n = self.rng.randint(1, 40000)
                    try:
                        self.sent += self.sock.send(self.payload[self.sent:self.sent + n])
                    except BlockingIOError:
                        pass
                    if self.rng.random() < 0.2:
                        time.sleep(self.rng.random() * 0.01)
        except BaseException as e:  # reported by the test
            self.error = e


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drops_at_random_points_lose_nothing_and_run_nothing_twice(gw, seed: int) -> None:
    rng = random.Random(seed)
    listener = py_listener("127.0.0.1")
    quiet = py_listener("127.0.0.1")
    k = KeptClient(gw.path)
    k.keep(grace=30000)
    flowing, peer = flowing_client(k, listener)
    waiting, quiet_peer = paused_client(k, quiet)
    down = random.Random(seed * 7).randbytes(2_000_000)
    streamer = Streamer(peer, down, seed)
    streamer.start()
    up = bytearray()
    sends: dict[int, int] = {}
    recvs: list[int] = []
    for _ in range(240):
        chunk = rng.randbytes(rng.randint(1, 6000))
        sends[k.request("tcp.send", {"handle": flowing, "data": b64(chunk), "encoding": "base64"})] = len(chunk)
        up += chunk
        if rng.random() < 0.15:
            # A call that waits in the gateway (nothing comes on this handle): it times out.
            recvs.append(k.request("tcp.recv", {"handle": waiting, "timeout": rng.choice([50, 300, 800])}))
        if rng.random() < 0.3:
            k.ack()
        if k.sock is not None:
            k.pump(rng.random() * 0.01)
        if rng.random() < 0.06:
            partial = None
            if rng.random() < 0.5:
                partial = b'{"jsonrpc":"2.0","id":"cut","method":"tcp.send","params":{"handle":%d,"data":"x' % flowing
            k.drop(partial)
            time.sleep(rng.random() * 0.3)
            if rng.random() < 0.3:
                # Lines written while there is no connection: resent after the resume.
                sends[k.request("tcp.send", {"handle": flowing, "data": "offline", "encoding": "utf8"})] = 7
                up += b"offline"
            assert "result" in k.resume()
        if k.sock is None:
            assert "result" in k.resume()  # the gateway closed it (it should not): resume anyway
    # A waiting call whose answer comes while the client has no connection (the earlier ones
    # have timed out first, so the data is this one's).
    for rid in recvs:
        k.wait(rid, timeout=20)
    late = k.request("tcp.recv", {"handle": waiting, "timeout": 10000})
    k.pump(0.1)
    k.drop()
    quiet_peer.sendall(b"late news")
    time.sleep(0.3)
    assert "result" in k.resume()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (all(k.answer(r) for r in sends) and all(k.answer(r) for r in recvs) and k.answer(late)
                and len(ondata_bytes(k, flowing)) >= len(down) and len(streamer.got) >= len(up)):
            break
        if rng.random() < 0.3:
            k.ack()
        if not k.pump(0.05):
            assert "result" in k.resume()
    streamer.stop = True
    streamer.join(10)
    assert streamer.error is None, streamer.error
    assert k.drops >= 5, "the seed should drop the link several times"
    # Every request answered exactly once, as if the link had never dropped.
    for rid, length in sends.items():
        got = answers_to(k, rid)
        assert len(got) == 1 and got[0].get("result") == length, (rid, got)
    for rid in recvs:
        got = answers_to(k, rid)
        assert len(got) == 1 and got[0]["error"]["code"] == TIMED_OUT, (rid, got)
    got = answers_to(k, late)
    assert len(got) == 1 and base64.b64decode(got[0]["result"]["data"]) == b"late news", got
    assert answers_to(k, "cut") == []
    # Every byte once and in order, both ways.
    received = ondata_bytes(k, flowing)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(down).hexdigest(), (len(received), len(down))
    assert hashlib.sha256(bytes(streamer.got)).hexdigest() == hashlib.sha256(bytes(up)).hexdigest(), (len(streamer.got), len(up))
    listener.close()
    quiet.close()


# ------------------------------------------------------------------------------ the replay bound
def _stream_until_stalled(peer: socket.socket, payload: bytes, quiet_for: float, limit: float) -> int:
    """Sends `payload` without blocking until nothing more is taken for `quiet_for` seconds."""
    peer.setblocking(False)
    sent = 0
    last = time.monotonic()
    deadline = time.monotonic() + limit
    while sent < len(payload) and time.monotonic() < deadline:
        _, w, _ = select.select([], [peer], [], 0.05)
        if w:
            try:
                sent += peer.send(payload[sent:sent + 65536])
                last = time.monotonic()
            except BlockingIOError:
                pass
        elif time.monotonic() - last > quiet_for:
            break
    return sent


def test_replay_bound_holds_the_peer_back_and_nothing_is_dropped(start_gateway) -> None:
    replay_bytes = 8 * 1024 * 1024
    gw = start_gateway("--replay-bytes", str(replay_bytes))
    listener = py_listener("127.0.0.1")
    w = Wire(gw.path)
    assert w.call("gateway.info")["limits"]["replayBytes"] == replay_bytes  # the bound, as set
    w.close()
    k = KeptClient(gw.path)
    k.keep(grace=30000)
    handle, peer = flowing_client(k, listener)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    assert k.call("tcp.setRecvBufferSize", {"handle": handle, "size": 65536}) is True
    k.ack()
    time.sleep(0.3)
    rss_empty = gw.rss_kb()
    total = 24 * 1024 * 1024
    payload = random.Random(5).randbytes(total)
    # The client reads everything but acknowledges nothing: the gateway holds ~replay_bytes of
    # lines, then stops reading the peer, whose sends stall.
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set() and k.pump(0.05):
            pass
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sent = _stream_until_stalled(peer, payload, quiet_for=1.5, limit=60)
    rss_full = gw.rss_kb()
    stop.set()
    t.join(10)
    print(f"\nreplay bound {replay_bytes} B: RSS empty {rss_empty} KiB, full {rss_full} KiB "
          f"(+{rss_full - rss_empty} KiB); the peer got {sent} of {total} bytes in before it stalled")
    assert sent < total, "the peer was never held back"
    # base64 makes 8 MiB of lines from 6 MiB of data; kernel buffers hold the rest.
    assert sent < replay_bytes + 4 * 1024 * 1024, sent
    assert rss_full - rss_empty < 4 * replay_bytes // 1024 + 32 * 1024, (rss_empty, rss_full)
    # Acknowledging lets everything through, exactly once.
    sender_done = threading.Event()

    def sender() -> None:
        peer.setblocking(True)
        peer.sendall(payload[sent:])
        sender_done.set()
    threading.Thread(target=sender, daemon=True).start()
    received = bytearray()
    seen = 0
    deadline = time.monotonic() + 120
    while len(received) < total and time.monotonic() < deadline:
        assert k.pump(0.05)
        k.ack()
        for m in k.messages[seen:]:
            if m.get("method") == "tcp.onData" and m["params"]["handle"] == handle:
                received += base64.b64decode(m["params"]["data"])
        seen = len(k.messages)
        del k.messages[:]  # the test's own memory: keep only what is new
        seen = 0
    assert sender_done.wait(30)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest(), len(received)
    listener.close()


# ------------------------------------------------------------------------------ tcpgw bridge --keep
class BridgeProcess:
    """`tcpgw bridge --keep MS` with a pipe client: the test writes its stdin, reads its stdout."""

    def __init__(self, socket_path: str, keep: int) -> None:
        self.proc = subprocess.Popen([TCPGW_BIN, "bridge", "--socket", socket_path, "--keep", str(keep)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.messages: list[Any] = []
        self.next_id = 1
        os.set_blocking(self.proc.stdout.fileno(), False)
        # Written with os.write, never through the file object's buffer (so finish()'s close
        # flushes nothing), and without blocking: see send().
        os.set_blocking(self.proc.stdin.fileno(), False)

    def send(self, obj: Any, timeout: float = 20.0) -> None:
        """Write one line to the bridge's stdin, reading its stdout meanwhile. A blocking write
        deadlocks once both pipes are full: the bridge waits for us to read what it wrote
        (tcp.onData lines) before it reads stdin again, while we wait for it to read."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = memoryview(json.dumps(obj).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the bridge read no stdin for {timeout}s")
            readable, writable, _ = select.select([self.proc.stdout], [self.proc.stdin], [], min(left, 0.05))
            if readable and not self.pump(0):
                raise AssertionError(f"the bridge ended: {self.proc.stderr.read().decode()}")
            if not writable:
                continue
            try:
                data = data[os.write(self.proc.stdin.fileno(), data):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise AssertionError(f"the bridge exited {self.proc.wait(5)}: {self.proc.stderr.read().decode()}")

    def request(self, method: str, params: Any = None) -> int:
        rid = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return rid

    def pump(self, timeout: float) -> bool:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return True
        chunk = os.read(self.proc.stdout.fileno(), 1 << 18)
        if not chunk:
            return False
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        self.messages += [json.loads(line) for line in lines]
        return True

    def wait(self, rid: int, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if isinstance(m, dict) and m.get("id") == rid and "method" not in m:
                    return m
            if not self.pump(0.05):
                raise AssertionError(f"the bridge ended: {self.proc.stderr.read().decode()}")
        raise AssertionError(f"no answer to {rid}")

    def call(self, method: str, params: Any = None) -> Any:
        m = self.wait(self.request(method, params))
        assert "result" in m, m
        return m["result"]

    def finish(self, timeout: float = 20.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pump(0.05):
            pass
        return self.proc.wait(timeout)


@pytest.fixture
def relay(gw):
    d = short_tmpdir()
    r = Relay(os.path.join(d, "relay.sock"), gw.path)
    yield r
    r.close()


def test_bridge_keep_survives_cut_links(gw, relay) -> None:
    rng = random.Random(11)
    listener = py_listener("127.0.0.1")
    b = BridgeProcess(relay.listen_path, keep=30000)
    try:
        handle = b.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(listener)}, "async": True})["handle"]
        peer, _ = listener.accept()
        down = random.Random(3).randbytes(1_500_000)
        streamer = Streamer(peer, down, 3)
        streamer.start()
        up = bytearray()
        sends: dict[int, int] = {}
        cuts = 0
        for i in range(300):
            chunk = rng.randbytes(rng.randint(1, 3000))
            sends[b.request("tcp.send", {"handle": handle, "data": b64(chunk), "encoding": "base64"})] = len(chunk)
            up += chunk
            b.pump(rng.random() * 0.01)
            if rng.random() < 0.04 and relay.carried():
                cuts += relay.cut()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answered = {m["id"] for m in b.messages if isinstance(m, dict) and "method" not in m}
            data = b"".join(base64.b64decode(m["params"]["data"]) for m in b.messages
                            if isinstance(m, dict) and m.get("method") == "tcp.onData")
            if set(sends) <= answered and len(data) >= len(down) and len(streamer.got) >= len(up):
                break
            assert b.pump(0.05), b.proc.stderr.read().decode()
        assert cuts >= 3, cuts
        replies = [m for m in b.messages if isinstance(m, dict) and "method" not in m]
        # Exactly the client's answers, once each: none of the bridge's own lines leak out.
        assert sorted(m["id"] for m in replies) == [1] + sorted(sends), [m for m in replies if m["id"] not in sends][:3]
        for m in replies[1:]:
            assert m["result"] == sends[m["id"]], m
        data = b"".join(base64.b64decode(m["params"]["data"]) for m in b.messages
                        if isinstance(m, dict) and m.get("method") == "tcp.onData")
        assert hashlib.sha256(data).digest() == hashlib.sha256(down).digest(), (len(data), len(down))
        streamer.stop = True
        streamer.join(10)
        assert hashlib.sha256(bytes(streamer.got)).digest() == hashlib.sha256(bytes(up)).digest()
        # The client's end of stdin ends the session at once (not after the grace).
        assert b.finish() == 0
        assert peer_closed(peer, 10.0)
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(5)
        listener.close()


def test_bridge_keep_exits_when_the_session_is_lost(start_gateway) -> None:
    gw = start_gateway()
    d = short_tmpdir()
    relay = Relay(os.path.join(d, "relay.sock"), gw.path)
    b = BridgeProcess(relay.listen_path, keep=20000)
    try:
        assert b.call("tcp.list") == []
        # The gateway restarts: the token is unknown there, so the resume is -32007.
        gw.signal_and_wait()
        gw2 = start_gateway(socket_path=gw.path)
        relay.cut()
        assert b.proc.wait(20) == 1
        assert "could not be resumed" in b.proc.stderr.read().decode()
        assert gw2.connect().call("gateway.info")["handles"] == 0
    finally:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(5)
        relay.close()


def test_bridge_keep_refuses_a_bad_grace(gw) -> None:
    for bad in ["0", "-5", "3600001", "x"]:
        p = subprocess.run([TCPGW_BIN, "bridge", "--socket", gw.path, "--keep", bad], input=b"",
                           capture_output=True, timeout=10)
        assert p.returncode != 0 and b"keep" in p.stderr, (bad, p.stderr)
