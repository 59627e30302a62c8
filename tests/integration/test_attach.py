"""tcp.stream / tcp.attach (contract §11): a second Unix connection becomes a handle's raw
byte stream. Real Python peers on loopback, a raw Unix socket as the attaching client, and
the `tcpgw attach` CLI."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import GatewayFactory, recv_exact_py, require_binary, stop_process
from relay_peers import listener, wire  # noqa: F401 (fixtures, in both relay modes)
from relay_peers import MiB, Pump, connected_handle, payload, read_to_end, reset, sha
from wire import INVALID_REQUEST, LIMIT, UNKNOWN_HANDLE, WRONG_KIND, RPCError, Wire
import sshd  # tests/support (conftest puts it on the path)

STREAM_TOKEN = -32008


def attach_line(token: str, id: object = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": "tcp.attach", "params": {"token": token}}).encode() + b"\n"


def read_line(sock: socket.socket, timeout: float = 5.0) -> tuple[dict, bytes]:
    """One answer line, and whatever came after it (already stream bytes)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before an answer line: {buf!r}"
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    return json.loads(line), rest


def attach(path: str, token: str, early: bytes = b"") -> tuple[socket.socket, dict, bytes]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(attach_line(token) + early)
    answer, rest = read_line(s)
    return s, answer, rest


def streamed(wire: Wire, listener: socket.socket, early: bytes = b"", flowing: bool = False):
    h, peer = connected_handle(wire, listener, flowing)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    s, answer, rest = attach(wire.path, token, early)
    assert answer == {"jsonrpc": "2.0", "result": {"handle": h, "buffered": 0}, "id": 1}
    return h, peer, s, rest


def test_tokens_never_begin_with_a_dash(wire: Wire, listener: socket.socket) -> None:
    """So `tcpgw attach TOKEN` never reads one as options (as it did 1 time in 64). 1,500
    tokens: without the rule, all of them missing a leading "-" has a chance of 1e-10."""
    h, peer = connected_handle(wire, listener)
    ids = [wire.request("tcp.stream", {"handle": h}) for _ in range(1500)]  # pipelined
    tokens = [wire.reply(i).obj["result"]["token"] for i in ids]
    assert len(set(tokens)) == 1500
    assert not [t for t in tokens if t.startswith("-")]
    assert sum(t.startswith("_") for t in tokens) > 0  # the rest of the alphabet still starts them
    peer.close()


def test_token_shape_and_exact_answer_line(wire: Wire, listener: socket.socket) -> None:
    h, peer = connected_handle(wire, listener)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    assert len(token) == 22 and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert wire.call("tcp.stream", {"handle": h})["token"] != token
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(wire.path)
    s.sendall(b'{"jsonrpc":"2.0","id":"x7","method":"tcp.attach","params":{"token":"' + token.encode() + b'"}}\n')
    s.settimeout(5)
    first = s.recv(4096)
    assert first == b'{"jsonrpc":"2.0","result":{"handle":%d,"buffered":0},"id":"x7"}\n' % h
    s.close()
    peer.close()


def test_32_mib_each_way_with_checksums(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, rest = streamed(wire, listener)
    assert rest == b""
    entry = next(e for e in wire.call("tcp.list") if e["handle"] == h)
    assert entry["attached"] is True and "pipedTo" not in entry
    up, down = payload(32 * MiB, 3), payload(32 * MiB, 4)
    client, tcp_peer = Pump(s, up), Pump(peer, down)
    got_client, n_client, err_client = client.join()
    got_peer, n_peer, err_peer = tcp_peer.join()
    assert not err_client and not err_peer
    assert (n_peer, got_peer) == (len(up), sha(up))
    assert (n_client, got_client) == (len(down), sha(down))
    closed = wire.wait_event("tcp.onClose", h, timeout=10)
    assert "error" not in closed.params
    assert wire.call("tcp.list") == []
    s.close()
    peer.close()


def test_bytes_sent_after_the_attach_line_go_first(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener, early=b"EARLY{\"not\":\"json-rpc\"}\n")
    s.sendall(b"LATER")
    peer.settimeout(5)
    got = b""
    while len(got) < 28:
        got += peer.recv(100)
    assert got == b"EARLY{\"not\":\"json-rpc\"}\nLATER"
    s.close()
    peer.close()


def test_half_close_each_way(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener)
    s.sendall(b"request")
    s.shutdown(socket.SHUT_WR)
    assert read_to_end(peer) == (b"request", None)
    peer.sendall(b"response" * 1000)
    wire.drain(0.1)
    assert not wire.events_for(h, "tcp.onClose")
    peer.shutdown(socket.SHUT_WR)
    assert read_to_end(s) == (b"response" * 1000, None)
    assert "error" not in wire.wait_event("tcp.onClose", h).params
    s.close()
    peer.close()


def test_peer_end_first_then_client(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener)
    peer.sendall(b"banner")
    peer.shutdown(socket.SHUT_WR)
    assert read_to_end(s) == (b"banner", None)
    s.sendall(b"reply after EOF")
    s.shutdown(socket.SHUT_WR)
    assert read_to_end(peer) == (b"reply after EOF", None)
    assert "error" not in wire.wait_event("tcp.onClose", h).params
    s.close()
    peer.close()


def test_peer_reset_ends_the_stream_with_an_error(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener)
    reset(peer)
    closed = wire.wait_event("tcp.onClose", h).params
    assert closed["error"]["errno"] == "ECONNRESET"
    data, _ = read_to_end(s)
    assert data == b""
    s.close()


def test_client_closing_the_stream(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener)
    s.close()
    assert read_to_end(peer) == (b"", None)
    peer.close()
    assert "tcp.onClose" == wire.wait_event("tcp.onClose", h).method


@pytest.mark.parametrize("how", ["tcp.close", "disconnect"])
def test_owner_closing_ends_the_stream(start_gateway: GatewayFactory, listener: socket.socket, how: str) -> None:
    gw = start_gateway()
    w = gw.connect()
    h, peer, s, _ = streamed(w, listener)
    if how == "tcp.close":
        assert w.call("tcp.close", {"handle": h}) is True
    else:
        w.close()
    assert read_to_end(s) == (b"", None)
    assert read_to_end(peer) == (b"", None)
    if how == "tcp.close":
        w.drain(0.2)
        assert not w.events_for(h)
        assert w.call("tcp.list") == []
    s.close()
    peer.close()


def test_owner_keeps_the_handle_but_not_its_bytes(wire: Wire, listener: socket.socket) -> None:
    h, peer, s, _ = streamed(wire, listener, flowing=True)
    peer.sendall(b"to the stream")
    s.settimeout(5)
    assert s.recv(100) == b"to the stream"
    for method, params in [("tcp.send", {"handle": h, "data": "x"}), ("tcp.recv", {"handle": h}),
                           ("tcp.stream", {"handle": h})]:
        with pytest.raises(RPCError) as e:
            wire.call(method, params)
        assert e.value.code == WRONG_KIND and "attached" in e.value.message, method
    assert wire.call("tcp.setNoDelay", {"handle": h, "enable": True}) is True
    wire.drain(0.2)
    assert not wire.events_for(h, "tcp.onData")
    s.close()
    peer.close()


def test_wrong_used_and_misplaced_tokens(wire: Wire, listener: socket.socket) -> None:
    h, peer = connected_handle(wire, listener)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(wire.path)
    s.sendall(attach_line("A" * 22))
    answer, _ = read_line(s)
    assert answer["error"]["code"] == STREAM_TOKEN and answer["id"] == 1
    # Still a JSON-RPC connection; a retry with the right token works.
    s.sendall(attach_line(token, id=2))
    answer, _ = read_line(s)
    assert answer["result"] == {"handle": h, "buffered": 0}
    s.sendall(b"ping")
    assert peer.recv(10) == b"ping"
    # Used: refused on another connection.
    other = Wire(wire.path)
    other.send_raw(attach_line(token))
    assert other.next_reply().obj["error"]["code"] == STREAM_TOKEN
    assert other.call("gateway.info")["name"] == "tcpgw"
    # Not the first line: -32600, and it stays unused.
    h2, peer2 = connected_handle(wire, listener)
    token2 = wire.call("tcp.stream", {"handle": h2})["token"]
    with pytest.raises(RPCError) as e:
        other.call("tcp.attach", {"token": token2})
    assert e.value.code == INVALID_REQUEST
    # In a batch on a fresh connection: -32600 too.
    batch = Wire(wire.path)
    batch.send_obj([{"jsonrpc": "2.0", "id": 5, "method": "tcp.attach", "params": {"token": token2}}])
    assert batch.next_reply().obj[0]["error"]["code"] == INVALID_REQUEST
    s2, answer, _ = attach(wire.path, token2)
    assert answer["result"]["handle"] == h2
    for w in (other, batch):
        w.close()
    for x in (s, s2, peer, peer2):
        x.close()


def test_bad_params_and_closed_handles(wire: Wire, listener: socket.socket) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(wire.path)
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"tcp.attach","params":{"token":5}}\n')
    answer, _ = read_line(s)
    assert answer["error"]["code"] == -32602 and "token" in answer["error"]["message"]
    h, peer = connected_handle(wire, listener)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    wire.call("tcp.close", {"handle": h})
    s.sendall(attach_line(token, id=2))
    answer, _ = read_line(s)
    assert answer["error"]["code"] == UNKNOWN_HANDLE
    s.close()
    peer.close()
    server = wire.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})["handle"]
    with pytest.raises(RPCError) as e:
        wire.call("tcp.stream", {"handle": server})
    assert e.value.code == WRONG_KIND


def test_expired_token(start_gateway: GatewayFactory, listener: socket.socket) -> None:
    w = start_gateway("--stream-token-ms", "200").connect()
    h, peer = connected_handle(w, listener)
    token = w.call("tcp.stream", {"handle": h})["token"]
    time.sleep(0.6)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(w.path)
    s.sendall(attach_line(token))
    answer, _ = read_line(s)
    assert answer["error"]["code"] == STREAM_TOKEN
    fresh = w.call("tcp.stream", {"handle": h})["token"]
    s.sendall(attach_line(fresh, id=2))
    assert read_line(s)[0]["result"]["handle"] == h
    s.close()
    peer.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")
def test_token_presented_by_another_uid(start_gateway: GatewayFactory, listener: socket.socket) -> None:
    gw = start_gateway("--socket-mode", "0666")
    os.chmod(os.path.dirname(gw.path), 0o755)
    w = gw.connect()
    h, peer = connected_handle(w, listener)
    token = w.call("tcp.stream", {"handle": h})["token"]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: uid 65534, presents the owner's token
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(gw.path)
            s.sendall(attach_line(token))
            answer, _ = read_line(s)
            os.write(write_end, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = json.loads(f.read() or b"{}")
    os.waitpid(pid, 0)
    assert answer.get("error", {}).get("code") == STREAM_TOKEN, answer
    # Someone else's attempt does not spend the owner's token.
    s, answer, _ = attach(gw.path, token)
    assert answer["result"]["handle"] == h
    s.close()
    peer.close()


def test_cli_attach_moves_real_bytes_both_ways(wire: Wire, listener: socket.socket, tmp_path) -> None:
    h, peer = connected_handle(wire, listener)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    up, down = payload(4 * MiB, 5), payload(4 * MiB, 6)
    (tmp_path / "in").write_bytes(up)
    tcp_peer = Pump(peer, down)
    with open(tmp_path / "in", "rb") as stdin, open(tmp_path / "out", "wb") as stdout:
        proc = subprocess.run([require_binary(), "attach", token, "--socket", wire.path], stdin=stdin,
                              stdout=stdout, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got, n, errors = tcp_peer.join()
    assert not errors and (n, got) == (len(up), sha(up))
    assert sha((tmp_path / "out").read_bytes()) == sha(down)
    assert "error" not in wire.wait_event("tcp.onClose", h).params
    peer.close()


def test_cli_attach_refused_token(wire: Wire) -> None:
    proc = subprocess.run([require_binary(), "attach", "A" * 22, "--socket", wire.path], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=10)
    assert proc.returncode == 1 and proc.stdout == b""
    assert json.loads(proc.stderr)["code"] == STREAM_TOKEN


def test_attaching_a_handle_whose_peer_had_finished(wire: Wire, listener: socket.socket) -> None:
    h, peer = connected_handle(wire, listener)
    peer.sendall(b"x")
    peer.shutdown(socket.SHUT_WR)
    assert wire.call("tcp.recv", {"handle": h, "length": 1, "timeout": 5000})["data"] == "eA=="
    assert wire.call("tcp.isEOF", {"handle": h}) in (True, False)
    token = wire.call("tcp.stream", {"handle": h})["token"]
    s, answer, rest = attach(wire.path, token)
    assert answer["result"] == {"handle": h, "buffered": 0}
    data, error = read_to_end(s)
    assert rest + data == b"" and error is None
    s.sendall(b"answer")
    s.shutdown(socket.SHUT_WR)
    assert read_to_end(peer) == (b"answer", None)
    assert "error" not in wire.wait_event("tcp.onClose", h).params
    s.close()
    peer.close()


@pytest.fixture
def ssh_forwarded(start_gateway: GatewayFactory):
    """A private sshd on 127.0.0.1 (tests/support/sshd.py) and `ssh -L` forwarding a local Unix
    socket to the gateway's: the path a remote rig uses, where descriptors cannot travel.
    Yields (gateway, forwarded path)."""
    sshd.skip_unless_available()
    gw = start_gateway()
    forwarded = os.path.join(start_gateway.tmpdir(), "fwd.sock")
    with sshd.SSHD(socket_forwarding=True) as server:
        ssh = subprocess.Popen(
            [*server.ssh_argv(), "-n", "-N", "-o", "ExitOnForwardFailure=yes", "-p", str(server.port),
             "-L", f"{forwarded}:{gw.path}", server.host], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(forwarded) and time.monotonic() < deadline and ssh.poll() is None:
                time.sleep(0.02)
            if not os.path.exists(forwarded):
                error = ssh.stderr.read() if ssh.poll() is not None and ssh.stderr else b""
                pytest.fail(f"ssh did not forward the socket: {error!r}\n{server.log()}")
            yield gw, forwarded
        finally:
            stop_process(ssh)


def test_attach_through_an_ssh_forwarded_socket(ssh_forwarded, listener: socket.socket) -> None:
    gw, forwarded = ssh_forwarded
    owner = Wire(forwarded)  # the owner drives the gateway over SSH too
    try:
        h, peer = connected_handle(owner, listener)
        token = owner.call("tcp.stream", {"handle": h})["token"]
        s, answer, rest = attach(forwarded, token)
        assert answer["result"] == {"handle": h, "buffered": 0} and rest == b""
        up, down = payload(8 * MiB, 21), payload(8 * MiB, 22)
        client, tcp_peer = Pump(s, up), Pump(peer, down)
        got_client, n_client, err_client = client.join()
        got_peer, n_peer, err_peer = tcp_peer.join()
        assert not err_client and not err_peer
        assert (n_peer, got_peer) == (len(up), sha(up))
        assert (n_client, got_client) == (len(down), sha(down))
        assert "error" not in owner.wait_event("tcp.onClose", h, timeout=10).params
        s.close()
        peer.close()
    finally:
        owner.close()


RELAY_SHARE = 512 * 1024  # what a relay counts against --max-buffer-bytes (Relay.budgetShare)


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_relays_count_against_the_buffer_budget(start_gateway: GatewayFactory, listener: socket.socket, mode: str) -> None:
    """Each running pipe or attached stream holds 512 KiB of --max-buffer-bytes (contract §13);
    one more than fits is -32004 and changes nothing (the handles stay plain, the token stays
    good), and a relay that ends gives its share back."""
    gw = start_gateway("--relay-mode", mode, "--max-message-bytes", "4096",
                       "--max-buffer-bytes", str(3 * RELAY_SHARE + 64 * 1024))
    wire = gw.connect()
    pairs = []
    for _ in range(3):
        a, pa = connected_handle(wire, listener)
        b, pb = connected_handle(wire, listener)
        assert wire.call("tcp.pipe", {"handle": a, "peer": b}) is True
        pairs.append((a, pa, b, pb))
    # A fourth pipe does not fit.
    c, pc = connected_handle(wire, listener)
    d, pd = connected_handle(wire, listener)
    with pytest.raises(RPCError) as e:
        wire.call("tcp.pipe", {"handle": c, "peer": d})
    assert e.value.code == LIMIT and "--max-buffer-bytes" in e.value.message
    # Nor does an attach; its token is not used up by the refusal.
    token = wire.call("tcp.stream", {"handle": c})["token"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(gw.path)
    s.sendall(attach_line(token))
    answer, _ = read_line(s)
    assert answer["error"]["code"] == LIMIT, answer
    s.close()
    # Nothing changed for the refused handles: plain handles still.
    assert wire.call("tcp.send", {"handle": d, "data": "still plain"}) == 11
    assert recv_exact_py(pd, 11) == b"still plain"
    # The pipes that run still carry bytes both ways.
    a, pa, b, pb = pairs[0]
    pa.sendall(b"ping")
    assert recv_exact_py(pb, 4) == b"ping"
    # One relay ends (its owner closes a handle): its share comes back, and the refused attach
    # now succeeds with the same token, then the refused pipe on another pair.
    wire.call("tcp.close", {"handle": pairs[1][0]})
    stream, answer, _ = attach(gw.path, token)
    assert answer["result"]["handle"] == c, answer
    pc.sendall(b"to the stream")
    stream.settimeout(10)
    assert recv_exact_py(stream, 13) == b"to the stream"
    f, pf = connected_handle(wire, listener)
    with pytest.raises(RPCError) as e:
        wire.call("tcp.pipe", {"handle": d, "peer": f})
    assert e.value.code == LIMIT  # the attach took the share the closed pipe gave back
    # The stream finishes (both ways: the client's end, then the peer's): its share comes back.
    stream.shutdown(socket.SHUT_WR)
    pc.settimeout(10)
    assert pc.recv(1) == b""  # the client's end reached the peer
    pc.close()
    wire.wait_event("tcp.onClose", c, timeout=10)
    stream.close()
    assert wire.call("tcp.pipe", {"handle": d, "peer": f}) is True
    pd.sendall(b"last")
    assert recv_exact_py(pf, 4) == b"last"
    for sock in (pd, pf):
        sock.close()
    for _, pa, _, pb in pairs:
        pa.close()
        pb.close()
    wire.close()

