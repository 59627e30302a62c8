"""The threaded client against the real gateway, with real loopback peers."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import tcpgw
from conftest import GatewayProcess, closed_port, fd_count, gw_recv_exactly, poll_until, recv_exactly, wait_until

LOOPBACK = tcpgw.sockaddr(tcpgw.INADDR_LOOPBACK, 0)


def make_pair(gw: tcpgw.Gateway) -> "tuple[tcpgw.Tcp, socket.socket]":
    """A gateway server, and a connection accepted through it from a Python client socket."""
    srv = gw.createServer(LOOPBACK)
    peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
    conn = srv.accept(None, 5000)
    srv.close()
    return conn, peer


# -- basics ------------------------------------------------------------------------------


def test_default_socket_path_follows_the_server_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPGW_SOCKET", "/x/explicit.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert tcpgw.default_socket_path() == "/x/explicit.sock"
    monkeypatch.delenv("TCPGW_SOCKET")
    assert tcpgw.default_socket_path() == "/run/user/7/tcpgw.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert tcpgw.default_socket_path() == f"/tmp/tcpgw-{os.getuid()}.sock"


def test_connect_uses_tcpgw_socket_env(gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCPGW_SOCKET", gateway.path)
    with tcpgw.connect() as gw:
        assert gw.path == gateway.path
        assert gw.info()["name"] == "tcpgw"


def test_connect_to_missing_socket_raises_oserror(tmp_path: Any) -> None:
    with pytest.raises(OSError):
        tcpgw.connect(str(tmp_path / "nothing.sock"))


def test_constants_info_discover_list(gw: tcpgw.Gateway) -> None:
    assert gw.constants() == dict(tcpgw.CONSTANTS)
    assert tcpgw.AF_INET == 2 and tcpgw.AF_INET6 == 10 and tcpgw.INADDR_ANY == "0.0.0.0"
    assert tcpgw.TCP_ESTABLISHED == tcpgw.TcpState.ESTABLISHED == 4
    info = gw.info()
    assert info["name"] == "tcpgw" and info["pid"] > 0 and "limits" in info
    doc = gw.discover()
    names = {m["name"] for m in doc["methods"]}
    assert set(tcpgw._generated.METHOD_PARAMS) <= names
    assert gw.list() == []
    srv = gw.createServer(LOOPBACK)
    listed = gw.list()
    assert [e["handle"] for e in listed] == [srv.handle]
    assert listed[0]["kind"] == "server"


# -- echo server through the gateway -----------------------------------------------------


def test_echo_server_through_gateway_with_python_peer(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(tcpgw.sockaddr("127.0.0.1", 0), 5)
    port = srv.sockName()["port"]
    assert port == srv.local["port"] and port > 0
    assert srv.getState() == tcpgw.TCP_LISTEN
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    remote: Dict[str, Any] = {}
    conn = srv.accept(remote, 5000)
    assert remote["port"] == peer.getsockname()[1] and remote["addr"] == "127.0.0.1"
    assert conn.remote == remote and conn.kind == "connection"
    assert conn.getState() == tcpgw.TCP_ESTABLISHED
    assert conn.peerName()["port"] == peer.getsockname()[1]

    payloads = [b"hello", bytes(range(256)), b"\xff\xfe\x00\n" * 1000]
    for payload in payloads:
        peer.sendall(payload)
        echoed = gw_recv_exactly(conn, len(payload))
        assert echoed == payload
        assert conn.send(echoed) == len(payload)
        assert recv_exactly(peer, len(payload)) == payload

    peer.shutdown(socket.SHUT_WR)
    assert conn.recv(1024, 5000) == b""
    assert conn.isEOF() is True
    conn.send("after EOF the writing side still works")
    assert recv_exactly(peer, 38) == b"after EOF the writing side still works"
    peer.close()
    conn.close()
    srv.close()
    assert conn.closed and srv.closed


def test_http_fetch_with_curl(gw: tcpgw.Gateway) -> None:
    """A page served through the gateway (async accept, flowing data) fetched by curl."""
    body = b"<html><body>hello from tcpgw</body></html>\n"
    srv = gw.createServer(LOOPBACK)
    port = srv.local["port"]
    served: List[Optional[tcpgw.SockAddr]] = []

    def on_accept(client: tcpgw.Tcp, remote: Optional[tcpgw.SockAddr]) -> None:
        served.append(remote)
        request = bytearray()

        def on_data(data: bytes) -> None:
            request.extend(data)
            if b"\r\n\r\n" in request:
                assert request.startswith(b"GET /index.html HTTP/1.1\r\n")
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                )
                client.send([head, body])
                client.close()

        client.on("data", on_data)

    srv.accept(None, on_accept)
    curl = subprocess.Popen(
        ["curl", "-sS", "--max-time", "10", "-D", "-", f"http://127.0.0.1:{port}/index.html"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert poll_until(gw, lambda: curl.poll() is not None, timeout=15)
    out, err = curl.communicate(timeout=5)
    assert curl.returncode == 0, err
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\n" + body)
    assert len(served) == 1 and served[0] is not None and served[0]["addr"] == "127.0.0.1"


# -- sync client to a Python server ------------------------------------------------------


def test_sync_client_to_python_server(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    port = py_server.getsockname()[1]
    conn = gw.createClient(tcpgw.sockaddr("127.0.0.1", port), 5000)
    peer, peer_addr = py_server.accept()
    with peer, conn:
        assert conn.remote["port"] == port and conn.local["port"] == peer_addr[1]
        assert conn.sockName() == conn.local
        assert conn.peerName()["port"] == port
        assert conn.getState() == tcpgw.TCP_ESTABLISHED
        assert isinstance(conn.sockFd, int) and conn.sockFd >= 0

        # every seed form of send
        assert conn.send("text é") == len("text é".encode())
        assert conn.send(b"0123456789", 2, 3) == 3  # buffer, offset, length
        assert conn.send(bytearray(b"ab")) == 2
        assert conn.send(memoryview(b"xyz")[1:]) == 2
        assert conn.send([b"[", "mixed", bytearray(b"]")]) == 7
        assert conn.send(["only", "text"], 1000) == 8  # array[, timeout]
        assert conn.sendto(None, b"to") == 2
        expected = "text é".encode() + b"234" + b"ab" + b"yz" + b"[mixed]" + b"onlytext" + b"to"
        assert recv_exactly(peer, len(expected)) == expected

        peer.sendall(b"0123456789")
        assert wait_until(lambda: conn.pending() >= 10)
        buf = bytearray(16)
        got = conn.recv_into(buf, 2, 4, 5000)
        assert got == 4 and buf[2:6] == b"0123" and buf[:2] == b"\0\0"
        data, remote = conn.recvfrom(3, 5000)
        assert data == b"456" and remote is not None and remote["port"] == port
        # recv may answer fewer bytes than are available (TCP semantics): read until complete
        assert gw_recv_exactly(conn, 3) == b"789"
        with pytest.raises(ValueError):
            conn.recv_into(bytearray(4), 2, 3)

        conn.shutdown("w")
        assert peer.recv(10) == b""  # the peer sees our FIN
        with pytest.raises(tcpgw.HandleStateError):
            conn.send("after shutdown w")
    assert conn.closed


def test_socket_options(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    with peer, conn:
        assert conn.setNoDelay(True) is True
        assert conn.setKeepAlive(True, 1500, 1000, 4) is True
        assert conn.setKeepAlive(False) is True
        assert conn.setLinger({"onoff": True, "time": 1}) is True
        assert conn.setTTL(64) is True
        assert conn.setReuseAddr(True) is True
        assert conn.setRecvBufferSize(65536) is True
        assert conn.getRecvBufferSize() >= 65536
        assert conn.setSendBufferSize(32768) is True
        assert conn.getSendBufferSize() >= 32768
        assert conn.error() == 0
        with pytest.raises(tcpgw.InvalidParamsError):
            conn.setTTL(0)
        with pytest.raises(tcpgw.InvalidParamsError):
            conn.setRecvBufferSize(10)
        with pytest.raises(tcpgw.HandleStateError):
            conn.mports(2)


# -- async callbacks ---------------------------------------------------------------------


def test_async_connect_callback_success(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    port = py_server.getsockname()[1]
    results: List[Any] = []
    conn = gw.createClient(tcpgw.sockaddr("127.0.0.1", port), lambda tcp, remote: results.append((tcp, remote)))
    assert isinstance(conn, tcpgw.Tcp)
    peer, _ = py_server.accept()
    with peer:
        assert poll_until(gw, lambda: bool(results))
        tcp, remote = results[0]
        assert tcp is conn and remote["port"] == port and conn.remote == remote
        # async handles start flowing: data arrives as events
        received = bytearray()
        conn.on("data", received.extend)
        peer.sendall(b"pushed")
        assert poll_until(gw, lambda: bytes(received) == b"pushed")
        conn.close()


def test_async_connect_callback_failure(gw: tcpgw.Gateway) -> None:
    results: List[Any] = []
    conn = gw.createClient(("127.0.0.1", closed_port()), lambda tcp, remote: results.append((tcp, remote)))
    assert poll_until(gw, lambda: bool(results))
    assert results == [(conn, None)]
    assert conn.connect_error is not None and conn.connect_error["errno"] == "ECONNREFUSED"
    assert conn.connect_error["errnoNumber"] == errno.ECONNREFUSED


def test_accept_callback_keeps_accepting(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(LOOPBACK)
    accepted: List[Any] = []
    assert srv.accept(None, lambda tcp, remote: accepted.append((tcp, remote))) is None
    peers = [socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5) for _ in range(3)]
    try:
        assert poll_until(gw, lambda: len(accepted) == 3)
        assert sorted(r["port"] for _, r in accepted) == sorted(p.getsockname()[1] for p in peers)
        assert len({t.handle for t, _ in accepted}) == 3
        # each accepted connection flows; replies go back to the right peer
        for tcp, _ in accepted:
            tcp.on("data", lambda data, tcp=tcp: tcp.send(data.upper()))
        for index, peer in enumerate(peers):
            peer.sendall(f"peer{index}".encode())
        for index, peer in enumerate(peers):
            deadline = time.monotonic() + 5
            got = b""
            peer.setblocking(False)
            while got != f"PEER{index}".encode() and time.monotonic() < deadline:
                gw.poll(0.05)
                try:
                    got += peer.recv(100)
                except BlockingIOError:
                    pass
            assert got == f"PEER{index}".encode()
    finally:
        for peer in peers:
            peer.close()


def test_end_and_close_events(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    port = py_server.getsockname()[1]
    conn = gw.createClient(("127.0.0.1", port), lambda *_: None)
    peer, _ = py_server.accept()
    seen: List[Any] = []
    conn.on("end", lambda: seen.append("end"))
    conn.on("close", lambda error: seen.append(("close", error)))
    peer.close()
    assert poll_until(gw, lambda: "end" in seen)
    conn.shutdown("w")  # both directions finished -> the gateway reports close
    assert poll_until(gw, lambda: len(seen) == 2)
    assert seen[0] == "end" and seen[1][0] == "close"
    assert conn.closed
    conn.close()  # idempotent on a handle the gateway already forgot


# -- events queued before a listener is attached ------------------------------------------


def test_events_before_listener_are_queued_not_dropped(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), lambda *_: None)
    peer, _ = py_server.accept()
    peer.sendall(b"early-1")
    time.sleep(0.05)
    peer.sendall(b"early-2")
    peer.close()
    # Wait (without listeners) until the gateway has pushed everything: connect, data..., end.
    assert wait_until(lambda: any(e.name == "end" for e in conn.queued()))
    assert gw.poll(0.05) == 1  # only the connect callback has a listener so far
    data: List[bytes] = []
    conn.on("data", data.append)
    assert gw.poll(1) >= 1
    assert b"".join(data) == b"early-1early-2"
    # "end" still has no listener: it waits in the queue, in order, for anyone who asks
    event = conn.next_event(1)
    assert event is not None and event.name == "end"
    assert conn.queued() == ()


def test_server_accept_events_queue_until_listener(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(LOOPBACK)
    def first(tcp: tcpgw.Tcp, remote: Any) -> None:
        raise AssertionError("removed listener called")

    srv.accept(None, first)
    assert srv.off("accept", first)  # no listener any more: events must queue
    peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
    with peer:
        assert wait_until(lambda: len(srv.queued()) == 1)
        assert srv.queued()[0].name == "accept"
        assert gw.poll(0.05) == 0
        got: List[Any] = []
        srv.on("accept", lambda tcp, remote: got.append(remote))
        assert poll_until(gw, lambda: bool(got))
        assert got[0]["port"] == peer.getsockname()[1]


def test_event_iterator(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    conn = gw.createClient(("127.0.0.1", py_server.getsockname()[1]), 5000)
    peer, _ = py_server.accept()
    conn.resume()
    peer.sendall(b"abc")
    peer.close()
    names: List[str] = []
    data = bytearray()
    for event in conn.events(timeout=5):
        names.append(event.name)
        if event.name == "data":
            data += event.data
        if event.name == "end":
            break
    assert data == b"abc" and names[-1] == "end" and set(names) == {"data", "end"}
    conn.close()
    assert list(conn.events(timeout=1)) == []  # a closed handle's iterator ends at once


def test_pause_stops_data_events(gw: tcpgw.Gateway) -> None:
    conn, peer = make_pair(gw)
    with peer, conn:
        conn.resume()
        got = bytearray()
        conn.on("data", got.extend)
        peer.sendall(b"flowing")
        assert poll_until(gw, lambda: bytes(got) == b"flowing")
        conn.pause()
        peer.sendall(b"paused")
        assert wait_until(lambda: conn.pending() >= 6)
        gw.poll(0.1)
        assert bytes(got) == b"flowing"
        assert conn.recv(100, 1000) == b"paused"


# -- flyAway / createByFd -----------------------------------------------------------------


def test_flyaway_and_createbyfd_round_trip(gw: tcpgw.Gateway) -> None:
    conn, peer = make_pair(gw)
    with peer:
        peer.sendall(b"before-flight")
        assert wait_until(lambda: conn.pending() >= 13)
        sock = conn.flyAway()
        assert isinstance(sock, socket.socket) and sock.getblocking()
        assert conn.closed
        with pytest.raises(tcpgw.UnknownHandleError):
            conn.isEOF()
        sock.settimeout(5)
        got = sock.buffered
        while len(got) < 13:
            got += sock.recv(13 - len(got))
        assert got == b"before-flight" and sock.eof is False
        sock.sendall(b"direct")
        assert recv_exactly(peer, 6) == b"direct"
        assert sock.getpeername() == peer.getsockname()

        back = gw.createByFd(sock)
        sock.close()  # the gateway holds its own copy
        assert back.kind == "connection" and back.remote["port"] == peer.getsockname()[1]
        peer.sendall(b"again")
        assert gw_recv_exactly(back, 5) == b"again"
        back.send("via gateway")
        assert recv_exactly(peer, 11) == b"via gateway"
        back.close()


def test_flyaway_server_and_adopt_by_fd_number(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(LOOPBACK)
    port = srv.local["port"]
    listener = srv.flyAway()
    assert listener.buffered == b"" and listener.getsockname()[1] == port
    adopted = gw.createByFd(listener.fileno())
    listener.close()
    assert adopted.kind == "server" and adopted.local["port"] == port
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    with peer:
        conn = adopted.accept(None, 5000)
        assert conn.remote["port"] == peer.getsockname()[1]


def test_createbyfd_rejects_non_tcp(gw: tcpgw.Gateway) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, pytest.raises(tcpgw.DescriptorError) as info:
        gw.createByFd(udp)
    assert info.value.code == -32006
    assert gw.list() == []


# -- timeouts and errors ------------------------------------------------------------------


def test_recv_timeout_raises_timeouterror_and_loses_nothing(gw: tcpgw.Gateway) -> None:
    conn, peer = make_pair(gw)
    with peer, conn:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            conn.recv(100, 150)
        assert time.monotonic() - started >= 0.1
        assert isinstance(info.value, tcpgw.RPCTimeoutError) and isinstance(info.value, tcpgw.RPCError)
        assert info.value.code == -32002 and info.value.errno == errno.ETIMEDOUT
        with pytest.raises(tcpgw.RPCTimeoutError):
            conn.recv(100, 0)
        peer.sendall(b"late data")
        assert gw_recv_exactly(conn, 9) == b"late data"


def test_accept_timeout_then_accept(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(LOOPBACK)
    with pytest.raises(TimeoutError):
        srv.accept(None, 50)
    peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
    with peer:
        assert srv.accept(None, 5000).remote["port"] == peer.getsockname()[1]


def test_slow_call_does_not_block_others(gw: tcpgw.Gateway) -> None:
    conn, peer = make_pair(gw)
    with peer, conn:
        failure: List[BaseException] = []

        def slow() -> None:
            try:
                conn.recv(10, 2000)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
                failure.append(exc)

        thread = threading.Thread(target=slow)
        thread.start()
        started = time.monotonic()
        assert gw.info()["name"] == "tcpgw"  # answered while recv waits
        assert time.monotonic() - started < 1.5
        thread.join(5)
        assert not thread.is_alive() and isinstance(failure[0], TimeoutError)


def test_close_fails_a_call_waiting_on_the_handle(gw: tcpgw.Gateway) -> None:
    """The schema (tcp.close): "A call still waiting on the handle fails with -32000"."""
    conn, peer = make_pair(gw)
    failure: List[BaseException] = []

    def wait() -> None:
        try:
            conn.recv(10, 5000)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            failure.append(exc)

    with peer:
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.1)
        conn.close()
        thread.join(6)
        assert not thread.is_alive() and len(failure) == 1
        assert isinstance(failure[0], tcpgw.UnknownHandleError), repr(failure[0])


def test_error_mapping(gw: tcpgw.Gateway, py_server: socket.socket) -> None:
    with pytest.raises(tcpgw.OSErrorReply) as refused:
        gw.createClient(("127.0.0.1", closed_port()), 5000)
    err = refused.value
    assert isinstance(err, OSError) and isinstance(err, tcpgw.RPCError)
    assert err.code == -32005 and err.errno == errno.ECONNREFUSED
    assert err.errno_name == "ECONNREFUSED" and err.syscall == "connect"

    with pytest.raises(tcpgw.InvalidParamsError) as bad:
        gw.createServer(tcpgw.sockaddr("127.0.0.1", 70000))
    assert bad.value.code == -32602 and "port" in bad.value.message

    srv = gw.createServer(LOOPBACK)
    with pytest.raises(tcpgw.HandleStateError) as state:
        srv.recv()
    assert state.value.code == -32001
    srv.close()
    with pytest.raises(tcpgw.UnknownHandleError) as unknown:
        srv.getState()
    assert unknown.value.code == -32000
    srv.close()  # idempotent

    with pytest.raises(tcpgw.MethodNotFoundError):
        gw._call("tcp.noSuchMethod", {})
    with pytest.raises(TypeError):
        tcpgw.Tcp.send(srv, 12345)  # type: ignore[arg-type]


def test_other_connections_handles_are_unknown(gateway: GatewayProcess) -> None:
    with tcpgw.connect(gateway.path) as first, tcpgw.connect(gateway.path) as second:
        srv = first.createServer(LOOPBACK)
        foreign = tcpgw.Tcp(second, srv.handle, "server")
        with pytest.raises(tcpgw.UnknownHandleError):
            foreign.sockName()
        assert srv.sockName()["port"] == srv.local["port"]


# -- lifecycle ----------------------------------------------------------------------------


def test_context_managers_leave_no_thread_or_fd(gateway: GatewayProcess) -> None:
    threads_before = threading.active_count()
    fds_before = fd_count()
    with tcpgw.connect(gateway.path) as gw:
        assert threading.active_count() == threads_before + 1
        with gw.createServer(LOOPBACK) as srv:
            peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
            with srv.accept(None, 5000) as conn:
                conn.send("x")
            assert conn.closed
            flown = gw.createClient(("127.0.0.1", srv.local["port"]), 5000).flyAway()
            flown.close()
            peer.close()
        assert srv.closed
        assert gw.list() == []
    assert gw.closed
    assert wait_until(lambda: threading.active_count() == threads_before, 2)
    assert fd_count() == fds_before
    with pytest.raises(tcpgw.ConnectionClosedError):
        gw.info()
    gw.close()  # idempotent


def test_gateway_going_away_fails_waiting_calls(gateway: GatewayProcess) -> None:
    gw = tcpgw.connect(gateway.path)
    conn, peer = make_pair(gw)
    failure: List[BaseException] = []

    def wait_forever() -> None:
        try:
            conn.recv(10)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            failure.append(exc)

    thread = threading.Thread(target=wait_forever)
    thread.start()
    time.sleep(0.1)
    gateway.proc.send_signal(signal.SIGTERM)
    thread.join(10)
    assert not thread.is_alive()
    # the gateway may answer first (the handle closed under the call) or just go away
    assert len(failure) == 1
    assert isinstance(failure[0], (tcpgw.ConnectionClosedError, tcpgw.UnknownHandleError, tcpgw.HandleStateError))
    assert wait_until(lambda: gw.closed)
    assert conn.closed
    with pytest.raises(tcpgw.ConnectionClosedError):
        gw.createServer(LOOPBACK)
    gw.close()
    peer.close()


def test_run_forever_in_a_thread_stops_on_close(gateway: GatewayProcess) -> None:
    threads_before = threading.active_count()
    gw = tcpgw.connect(gateway.path)
    srv = gw.createServer(LOOPBACK)
    accepted: List[str] = []
    srv.accept(None, lambda tcp, remote: accepted.append(threading.current_thread().name))
    loop = threading.Thread(target=gw.run_forever, name="user-loop")
    loop.start()
    peer = socket.create_connection(("127.0.0.1", srv.local["port"]), timeout=5)
    assert wait_until(lambda: bool(accepted))
    assert accepted == ["user-loop"]  # callbacks run in the thread that polls, never the reader
    gw.close()
    loop.join(5)
    assert not loop.is_alive()
    peer.close()
    assert wait_until(lambda: threading.active_count() == threads_before, 2)


# -- host names (contract §7) ----------------------------------------------------------------


def test_host_names_in_sockaddr_and_lookup(gw: tcpgw.Gateway) -> None:
    srv = gw.createServer(tcpgw.sockaddr("localhost", 0))
    assert srv.host == "localhost" and srv.local is not None and srv.local["addr"] == "127.0.0.1"
    port = srv.local["port"]
    conn = gw.createClient(("localhost", port), 5000)
    assert conn.host == "localhost"
    assert conn.remote == {"domain": 2, "addr": "127.0.0.1", "port": port}
    accepted = srv.accept(None, 5000)
    accepted.close()
    conn.close()
    got: List[Any] = []
    async_conn = gw.createClient(tcpgw.sockaddr("localhost", port), lambda tcp, remote: got.append(remote))
    assert poll_until(gw, lambda: bool(got))
    assert got[0]["addr"] == "127.0.0.1" and async_conn.host == "localhost"
    async_conn.close()
    srv.close()
    assert gw.lookup("localhost", tcpgw.AF_INET) == [{"domain": 2, "addr": "127.0.0.1"}]
    with pytest.raises(tcpgw.RPCError) as bad:
        gw.createClient(tcpgw.sockaddr("bad_name", 1), 1000)
    assert bad.value.code == -32602


# -- faults (contract §10) -----------------------------------------------------------------


def test_faults_through_the_client(gw: tcpgw.Gateway) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    conn = gw.createClient(("127.0.0.1", listener.getsockname()[1]), 5000,
                           faults=[{"type": "slicer", "attributes": {"averageSize": 4}}])
    peer, _ = listener.accept()
    listener.close()
    assert [f["name"] for f in conn.faults()] == ["slicer_in"]
    peer.sendall(b"0123456789")
    time.sleep(0.1)
    assert conn.recv(100, 2000) == b"0123"  # at most one slice per recv
    assert conn.addFault("latency", "out", attributes={"latency": 200}) == {"name": "latency_out"}
    started = time.monotonic()
    conn.send("late")
    assert recv_exactly(peer, 4) == b"late"
    assert time.monotonic() - started >= 0.15
    assert conn.removeFault("latency_out") is True
    with pytest.raises(tcpgw.InvalidParamsError):
        conn.removeFault("latency_out")
    with pytest.raises(tcpgw.InvalidParamsError):
        conn.addFault("latency", attributes={"jitter": 1})
    assert [f["name"] for f in conn.faults()] == ["slicer_in"]
    conn.close()
    peer.close()
