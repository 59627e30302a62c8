#!/usr/bin/env python3
"""tcpgw benchmarks: figures, each beside a baseline measured in the same run.

    python3 bench/run.py [--bin PATH] [--quick] [--native-only | --no-native]

Loopback only. Every loop is bounded in count and in time; nothing here asserts on a time.
A bench that hits its time cap reports what it managed (marked "capped"). Correctness of the
bytes moved (counts, answers) is checked, because a fast wrong answer is not a figure.

Processes: the gateway (started here, on a Unix socket in a temp dir), this client, and one
forked peer process per phase (so the peer never competes with the client for the GIL).
Times are taken with time.perf_counter (CLOCK_MONOTONIC, comparable across processes).
See bench/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import rows_relay  # rows R1-R2: tcp.pipe and tcp.attach beside socat

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 64 * 1024          # tcp.send payload / raw send size, bytes (before base64)
SEND_WINDOW = 8            # tcp.send requests in flight (bench 1)
CALL_WINDOW = 64           # requests in flight (bench 3)
READ_SIZE = 1 << 18        # client recv size on the Unix socket
IO_TIMEOUT = 5.0           # any single socket wait, seconds (a stall fails the bench, not the run)
CTX = mp.get_context("fork")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How much work each bench does; every phase also has a wall-clock cap."""
    bulk_mib: int          # benches 1 and 2
    recv_mib: int          # bench 2, paused tcp.recv path (one request per 64 KiB: slower)
    calls: int             # bench 3, per method
    latency_iters: int     # bench 4
    phase_cap: float       # seconds, per measured phase
    stall: float           # bench 5, seconds the client stops reading
    native_calls: int      # bench 6, pipelined tcp.getState calls (all connections together)
    native_latency: int    # bench 6, one-call latency samples
    bursts: tuple[int, ...]  # bench 7, connections per accept burst


FULL = Sizes(bulk_mib=128, recv_mib=64, calls=20000, latency_iters=2000, phase_cap=12.0, stall=2.0,
             native_calls=200_000, native_latency=5000, bursts=(1000, 4000, 8000))
QUICK = Sizes(bulk_mib=16, recv_mib=8, calls=2000, latency_iters=200, phase_cap=3.0, stall=2.0,
              native_calls=20_000, native_latency=1000, bursts=(1000, 4000, 8000))


# ----------------------------------------------------------------------------------------
# Results table


@dataclass
class Row:
    bench: str
    gateway: str
    baseline: str
    ratio: str
    note: str = ""


ROWS: list[Row] = []


def rate_row(bench: str, gw_bytes: int, gw_s: float, base_bytes: int, base_s: float, note: str = "") -> None:
    """A throughput row in MiB/s; ratio = gateway / baseline."""
    gw = gw_bytes / MiB / gw_s if gw_s > 0 else 0.0
    base = base_bytes / MiB / base_s if base_s > 0 else 0.0
    ROWS.append(Row(bench, f"{gw:,.1f} MiB/s", f"{base:,.1f} MiB/s", f"{gw / base:.3f}" if base else "-", note))
    progress(f"  {bench}: {gw:,.1f} MiB/s vs {base:,.1f} MiB/s  {note}")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def attempt(bench: str, run: Callable[[], None]) -> None:
    """Runs one bench; a failure (e.g. the gateway stops answering) becomes a row, not a crash."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - any failure is reported in the table
        reason = f"{type(exc).__name__}: {exc}"
        ROWS.append(Row(bench, "FAILED", "-", "-", reason[:160]))
        progress(f"  {bench}: FAILED: {reason}")


def print_table(header: list[str]) -> None:
    for line in header:
        print(line)
    cols = ["bench", "gateway", "baseline", "gw/base", "notes"]
    data = [[r.bench, r.gateway, r.baseline, r.ratio, r.note] for r in ROWS]
    widths = [max(len(c), *(len(d[i]) for d in data)) if data else len(c) for i, c in enumerate(cols)]
    fmt = "  ".join("{:<%d}" % w if i in (0, 4) else "{:>%d}" % w for i, w in enumerate(widths))
    print(fmt.format(*cols))
    print("  ".join("-" * w for w in widths))
    for d in data:
        print(fmt.format(*d))


# ----------------------------------------------------------------------------------------
# The gateway process


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s: a bench never leaves a server behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class GatewayProcess:
    """`tcpgw serve` on a socket in a private temp dir; stopped with SIGTERM."""

    def __init__(self, binary: str, tmpdir: str, name: str = "gw", extra: tuple[str, ...] = ()) -> None:
        self.path = os.path.join(tmpdir, name + ".sock")
        self.log = open(os.path.join(tmpdir, name + ".log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--socket", self.path, "--log-level", "warning", *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15.0
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited early with {self.proc.returncode}; log: {self.log.name}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("gateway did not become ready within 15 s")
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return _status_field(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return _status_field(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return -1


class CpuMeter:
    """Gateway CPU share over a measured phase (100% = one core busy)."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.cpu0 = gw.cpu_s()
        self.t0 = time.perf_counter()
        self.client0 = time.process_time()

    def note(self) -> str:
        wall = time.perf_counter() - self.t0
        if wall <= 0:
            return ""
        gw = (self.gw.cpu_s() - self.cpu0) / wall * 100
        client = (time.process_time() - self.client0) / wall * 100
        return f"gw CPU {gw:.0f}%, client CPU {client:.0f}%"


# ----------------------------------------------------------------------------------------
# JSON-RPC over the Unix socket (just enough: lines, ids, events)


class RPCFailure(Exception):
    pass


ON_DATA_PREFIX = b'{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":'
ON_DATA_SUFFIX = b'","encoding":"base64"}}'


def on_data_payload(line: bytes) -> Optional[bytes]:
    """The base64 text of a tcp.onData line, or None for any other line.

    A client-side fast path so that bench 2a measures the gateway, not Python's json module:
    base64 text never needs JSON unescaping, so when the line has exactly the gateway's onData
    shape the payload is sliced out. Any other shape returns None (parsed with json.loads)."""
    if not line.startswith(ON_DATA_PREFIX) or not line.endswith(ON_DATA_SUFFIX):
        return None
    start = line.find(b',"data":"', len(ON_DATA_PREFIX))
    if start < 0:
        return None
    data = line[start + 9 : len(line) - len(ON_DATA_SUFFIX)]
    return None if b'"' in data or b"\\" in data else data


class Rpc:
    """One client connection. Synchronous: bytes are read only while a call waits."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(path)
        self.buf = bytearray()
        self.next_id = 1
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def request_line(self, method: str, params: Any) -> tuple[int, bytes]:
        rid = self.next_id
        self.next_id += 1
        line = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, separators=(",", ":"))
        return rid, line.encode() + b"\n"

    def read_lines(self) -> list[bytes]:
        """At least one complete line (blocks up to IO_TIMEOUT)."""
        while True:
            nl = self.buf.rfind(b"\n")
            if nl >= 0:
                chunk = bytes(self.buf[: nl + 1])
                del self.buf[: nl + 1]
                return chunk.split(b"\n")[:-1]
            data = self.sock.recv(READ_SIZE)
            if not data:
                raise RPCFailure("gateway closed the connection")
            self.buf += data

    def call(self, method: str, params: Any = None) -> Any:
        rid, line = self.request_line(method, params if params is not None else {})
        self.sock.sendall(line)
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            for raw in self.read_lines():
                msg = json.loads(raw)
                if msg.get("id") == rid:
                    if "error" in msg:
                        raise RPCFailure(f"{method}: {msg['error']}")
                    return msg["result"]
                self.events.append(msg)
        raise RPCFailure(f"{method}: no answer within {IO_TIMEOUT} s")

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)["params"]
            for raw in self.read_lines():
                self.events.append(json.loads(raw))
        raise RPCFailure(f"no {method} within {IO_TIMEOUT} s")

    def pipeline(self, make_line: Callable[[int], bytes], total: int, window: int,
                 on_answer: Callable[[dict[str, Any]], None], deadline: float) -> int:
        """Keeps `window` requests in flight until `total` are answered or the deadline passes.

        Requests freed by one read are written together; events are set aside.
        Returns how many were answered (fewer than `total` only when capped)."""
        sent = min(window, total)
        self.sock.sendall(b"".join(make_line(i) for i in range(sent)))
        answered = 0
        while answered < sent:
            for raw in self.read_lines():
                msg = json.loads(raw)
                if "id" not in msg:
                    self.events.append(msg)
                    continue
                if "error" in msg:
                    raise RPCFailure(f"request {msg['id']}: {msg['error']}")
                on_answer(msg)
                answered += 1
            if time.perf_counter() < deadline:
                more = min(total - sent, window - (sent - answered))
                if more > 0:
                    self.sock.sendall(b"".join(make_line(sent + j) for j in range(more)))
                    sent += more
        return answered


# ----------------------------------------------------------------------------------------
# Peer processes (forked; each reports through a Pipe)


def loopback_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def _sink(listener: socket.socket, expect: int, out: mpc.Connection, cap: float) -> None:
    """Accepts one connection and counts bytes until `expect`, EOF or the cap."""
    listener.settimeout(IO_TIMEOUT)
    conn, _ = listener.accept()
    conn.settimeout(IO_TIMEOUT)
    buf = bytearray(1 << 20)
    n = 0
    first = 0.0
    stop = time.perf_counter() + cap + IO_TIMEOUT
    try:
        while n < expect and time.perf_counter() < stop:
            k = conn.recv_into(buf)
            if not k:
                break
            if not first:
                first = time.perf_counter()
            n += k
    except OSError:
        pass
    out.send((n, first, time.perf_counter()))
    conn.close()


def _source(target: Any, total: int, chunk: int, out: mpc.Connection, cap: float) -> None:
    """Sends `total` bytes then FIN. `target` is a listener to accept from, or an address."""
    if isinstance(target, socket.socket):
        target.settimeout(IO_TIMEOUT)
        conn, _ = target.accept()
    else:
        conn = socket.create_connection(target, timeout=IO_TIMEOUT)
    conn.settimeout(IO_TIMEOUT)
    block = os.urandom(chunk)
    view = memoryview(block)
    sent = 0
    start = time.perf_counter()
    stop = start + cap
    try:
        while sent < total and time.perf_counter() < stop:
            n = min(chunk, total - sent)
            conn.sendall(view[:n])
            sent += n
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    out.send((sent, start, time.perf_counter()))
    # Wait for the reader to finish (its close), so no unread bytes turn the close into a reset.
    try:
        conn.settimeout(cap + IO_TIMEOUT)
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()


def _echo(listener: socket.socket, cap: float) -> None:
    """Echoes one connection's bytes back until EOF (bounded by the cap)."""
    listener.settimeout(IO_TIMEOUT)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(IO_TIMEOUT)
    stop = time.perf_counter() + cap + IO_TIMEOUT
    try:
        while time.perf_counter() < stop:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    conn.close()


def _line_answerer(listener: socket.socket, reply: bytes, cap: float) -> None:
    """Unix-socket baseline server: one fixed reply line per request line (no JSON work)."""
    listener.settimeout(IO_TIMEOUT)
    conn, _ = listener.accept()
    conn.settimeout(IO_TIMEOUT)
    stop = time.perf_counter() + cap + IO_TIMEOUT
    try:
        while time.perf_counter() < stop:
            data = conn.recv(READ_SIZE)
            if not data:
                break
            n = data.count(b"\n")  # requests are small; a line never straddles in practice
            if n:
                conn.sendall(reply * n)
    except OSError:
        pass
    conn.close()


def _blaster(addr: tuple[str, int], stop_evt: Any, out: mpc.Connection, cap: float) -> None:
    """Sends as fast as the receiver lets it until told to stop; reports the byte count."""
    conn = socket.create_connection(addr, timeout=IO_TIMEOUT)
    conn.settimeout(0.05)
    block = memoryview(os.urandom(CHUNK))
    sent = 0
    stop = time.perf_counter() + cap
    try:
        while not stop_evt.is_set() and time.perf_counter() < stop:
            try:
                sent += conn.send(block)
            except socket.timeout:
                pass
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    out.send(sent)
    try:
        conn.settimeout(IO_TIMEOUT)
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()


class Peer:
    """A forked peer process and the pipe it reports on (made by `peer` / `peer_nopipe`)."""

    rx: Optional[mpc.Connection]
    proc: Any

    def result(self, timeout: float) -> Any:
        if self.rx is None or not self.rx.poll(timeout):
            raise RPCFailure("peer did not report in time")
        return self.rx.recv()

    def join(self) -> None:
        self.proc.join(IO_TIMEOUT)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)


def peer(target: Callable[..., None], *args: Any, cap: float) -> Peer:
    """Starts `target(*args, pipe, cap)`."""
    p = Peer()
    p.rx, tx = CTX.Pipe(duplex=False)
    p.proc = CTX.Process(target=target, args=(*args, tx, cap), daemon=True)
    p.proc.start()
    tx.close()
    return p


def peer_nopipe(target: Callable[..., None], *args: Any) -> Peer:
    p = Peer()
    p.rx = None
    p.proc = CTX.Process(target=target, args=args, daemon=True)
    p.proc.start()
    return p


def sockaddr(s: socket.socket) -> dict[str, Any]:
    host, port = s.getsockname()[:2]
    return {"addr": host, "port": port}


# ----------------------------------------------------------------------------------------
# Bench 1: gateway -> peer


def bench_send(gw: GatewayProcess, sz: Sizes) -> None:
    progress("bench 1: bulk gateway -> peer (tcp.send, 64 KiB base64 chunks, window 8)")
    total = sz.bulk_mib * MiB
    count = total // CHUNK
    payload = base64.b64encode(os.urandom(CHUNK)).decode()

    # Gateway.
    lst = loopback_listener()
    sink = peer(_sink, lst, total, cap=sz.phase_cap)
    rpc = Rpc(gw.path)
    handle = rpc.call("tcp.createClient", {"sockaddr": sockaddr(lst)})["handle"]
    lst.close()
    head = '{"jsonrpc":"2.0","id":%d,"method":"tcp.send","params":{"handle":%d,"encoding":"base64","data":"'
    tail = ('"}}\n').encode()
    body = payload.encode()

    def line(i: int) -> bytes:
        return (head % (i + 1000, handle)).encode() + body + tail

    sent_ok = 0

    def answer(msg: dict[str, Any]) -> None:
        nonlocal sent_ok
        if msg["result"] != CHUNK:
            raise RPCFailure(f"tcp.send answered {msg['result']}, expected {CHUNK}")
        sent_ok += msg["result"]

    meter = CpuMeter(gw)
    t0 = time.perf_counter()
    done = rpc.pipeline(line, count, SEND_WINDOW, answer, t0 + sz.phase_cap)
    rpc.call("tcp.shutdown", {"handle": handle, "how": "w"})
    got, _, t_last = sink.result(sz.phase_cap + IO_TIMEOUT)
    note = meter.note()
    sink.join()
    rpc.close()  # the handle ended itself (our FIN + the peer's): closing the session is enough
    if got != sent_ok:
        raise RPCFailure(f"peer counted {got} bytes, gateway answered {sent_ok} sent")
    capped = " capped" if done < count else ""

    # Baseline: raw socket -> socket, same bytes, same chunk size.
    lst = loopback_listener()
    sink = peer(_sink, lst, got, cap=sz.phase_cap)
    raw = socket.create_connection(lst.getsockname(), timeout=IO_TIMEOUT)
    lst.close()
    block = memoryview(os.urandom(CHUNK))
    b0 = time.perf_counter()
    for _ in range(got // CHUNK):
        raw.sendall(block)
    raw.shutdown(socket.SHUT_WR)
    bgot, _, b_last = sink.result(sz.phase_cap + IO_TIMEOUT)
    sink.join()
    raw.close()
    rate_row(f"1 send gw->peer {got // MiB} MiB", got, t_last - t0, bgot, b_last - b0, note + capped)


# ----------------------------------------------------------------------------------------
# Bench 2: peer -> gateway client


def bench_receive(gw: GatewayProcess, sz: Sizes, memory: dict[str, int]) -> None:
    progress("bench 2: bulk peer -> gateway client (flowing tcp.onData; paused tcp.recv)")
    memory["before bench 2"] = gw.rss_kib()
    total = sz.bulk_mib * MiB

    # 2a flowing: async accept, data as tcp.onData.
    rpc = Rpc(gw.path)
    server = rpc.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    rpc.call("tcp.accept", {"handle": server["handle"], "async": True})
    addr = (server["local"]["addr"], server["local"]["port"])
    meter = CpuMeter(gw)
    src = peer(_source, addr, total, CHUNK, cap=sz.phase_cap)
    got = 0
    ended = False
    t_last = 0.0
    deadline = time.perf_counter() + sz.phase_cap + IO_TIMEOUT
    while not ended and time.perf_counter() < deadline:
        for raw in rpc.read_lines():
            data = on_data_payload(raw)
            if data is not None:
                got += len(base64.b64decode(data))
                t_last = time.perf_counter()
                continue
            if json.loads(raw).get("method") == "tcp.onEnd":
                ended = True
    sent, t_start, _ = src.result(IO_TIMEOUT)
    note = meter.note()
    rpc.close()  # closes the handle, so the peer sees our FIN and exits
    src.join()
    if got != sent:
        raise RPCFailure(f"flowing: peer sent {sent} bytes, client decoded {got}")
    memory["after bench 2"] = gw.rss_kib()

    # Baseline for 2a/2b: raw peer -> raw Python reader.
    def raw_receive(nbytes: int) -> tuple[int, float]:
        lst = loopback_listener()
        lst.settimeout(IO_TIMEOUT)
        src = peer(_source, lst.getsockname(), nbytes, CHUNK, cap=sz.phase_cap)
        conn, _ = lst.accept()
        lst.close()
        conn.settimeout(IO_TIMEOUT)
        buf = bytearray(READ_SIZE)
        n = 0
        t_end = 0.0
        while True:
            k = conn.recv_into(buf)
            if not k:
                break
            n += k
            t_end = time.perf_counter()
        sent, start, _ = src.result(IO_TIMEOUT)
        conn.close()
        src.join()
        if n != sent:
            raise RPCFailure(f"baseline: sent {sent}, received {n}")
        return n, t_end - start

    bn, bs = raw_receive(got)
    rate_row(f"2a recv peer->gw flowing onData {got // MiB} MiB", got, t_last - t_start, bn, bs, note)

    # 2b paused: sync-created handle, tcp.recv length 65536 "in a loop until EOF", window 1 then 8.
    for window in (1, 8):
        attempt(f"2b recv peer->gw tcp.recv 64K window {window}",
                lambda: paused_recv(gw, sz, window, raw_receive))


def flowing_cpu(gw: GatewayProcess, sz: Sizes, faults: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Bytes a peer pushed to a flowing handle with `faults`, and the gateway's CPU seconds and
    the wall seconds it took to deliver them as tcp.onData."""
    rpc = Rpc(gw.path)
    server = rpc.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    for fault in faults:
        rpc.call("fault.add", {"handle": server["handle"], **fault})  # a template: the accepted handle gets it
    rpc.call("tcp.accept", {"handle": server["handle"], "async": True})
    addr = (server["local"]["addr"], server["local"]["port"])
    # Larger than bench 2: the CPU clock ticks in 10 ms.
    total = max(sz.bulk_mib, 64) * 2 * MiB
    cpu0 = gw.cpu_s()
    t0 = time.perf_counter()
    src = peer(_source, addr, total, CHUNK, cap=sz.phase_cap)
    got = 0
    ended = False
    deadline = time.perf_counter() + sz.phase_cap + IO_TIMEOUT
    while not ended and time.perf_counter() < deadline:
        for raw in rpc.read_lines():
            data = on_data_payload(raw)
            if data is not None:
                got += len(base64.b64decode(data))
                continue
            if json.loads(raw).get("method") == "tcp.onEnd":
                ended = True
    cpu = gw.cpu_s() - cpu0
    wall = time.perf_counter() - t0
    sent, _, _ = src.result(IO_TIMEOUT)
    rpc.close()
    src.join()
    if got != sent:
        raise RPCFailure(f"peer sent {sent} bytes, client decoded {got}")
    return got, cpu, wall


def bench_fault_cost(gw: GatewayProcess, sz: Sizes) -> None:
    """What faults cost: a flowing handle whose bytes pass through a pass-through fault chain
    (slowClose lets every byte through at once) against the same handle without faults, which
    takes the plain path (one nil check)."""
    progress("bench 2c: flowing onData through a pass-through fault chain vs no faults")
    # Alternated, twice each; the lower CPU of each counts (the other helpers' load only adds).
    runs: dict[bool, list[tuple[int, float, float]]] = {False: [], True: []}
    for _ in range(2):
        for with_fault in (False, True):
            faults = [{"type": "slowClose", "attributes": {"delay": 1}}] if with_fault else []
            runs[with_fault].append(flowing_cpu(gw, sz, faults))
    plain = min(runs[False], key=lambda r: r[1] / max(r[0], 1))
    chained = min(runs[True], key=lambda r: r[1] / max(r[0], 1))
    per_gib = [cpu / n * GiB if n else 0.0 for n, cpu, _ in (chained, plain)]
    ROWS.append(Row(f"2c flowing onData {plain[0] // MiB} MiB via a fault chain: gw CPU/GiB",
                    f"{per_gib[0]:.2f} s", f"{per_gib[1]:.2f} s", f"{per_gib[0] / per_gib[1]:.3f}" if per_gib[1] else "-",
                    f"baseline: no faults; wall {chained[2]:.2f} s vs {plain[2]:.2f} s"))


def flowing_receive(gw: GatewayProcess, sz: Sizes, kept: bool) -> tuple[int, float, str]:
    """A peer's bulk into a flowing handle; with `kept`, under session.keep, acknowledging every
    64 lines as `tcpgw bridge --keep` does. Returns bytes, seconds and the CPU note."""
    total = sz.bulk_mib * MiB
    rpc = Rpc(gw.path)
    try:
        if kept:
            rpc.call("session.keep", {"grace": 30000})
        server = rpc.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
        rpc.call("tcp.accept", {"handle": server["handle"], "async": True})
        counted = 2 if kept else 0  # the two answers after the keep answer
        acked = 0
        addr = (server["local"]["addr"], server["local"]["port"])
        meter = CpuMeter(gw)
        src = peer(_source, addr, total, CHUNK, cap=sz.phase_cap)
        got = 0
        ended = False
        t_last = 0.0
        deadline = time.perf_counter() + sz.phase_cap + IO_TIMEOUT
        while not ended and time.perf_counter() < deadline:
            lines = rpc.read_lines()
            counted += len(lines)
            for raw in lines:
                data = on_data_payload(raw)
                if data is not None:
                    got += len(base64.b64decode(data))
                    t_last = time.perf_counter()
                elif json.loads(raw).get("method") == "tcp.onEnd":
                    ended = True
            if kept and counted - acked >= 64:
                rpc.sock.sendall(b'{"jsonrpc":"2.0","method":"session.ack","params":{"received":%d}}\n' % counted)
                acked = counted
        sent, t_start, _ = src.result(IO_TIMEOUT)
        note = meter.note()
    finally:
        rpc.close()
    src.join()
    if got != sent:
        raise RPCFailure(f"flowing{' kept' if kept else ''}: peer sent {sent} bytes, client decoded {got}")
    return got, t_last - t_start, note


def bench_receive_kept(gw: GatewayProcess, sz: Sizes) -> None:
    """Bench 2d: what session.keep costs the flowing path (line log, acks): kept against the
    same transfer without it, in the same run."""
    progress("bench 2d: flowing tcp.onData under session.keep vs without")
    plain_bytes, plain_s, _ = flowing_receive(gw, sz, kept=False)
    kept_bytes, kept_s, note = flowing_receive(gw, sz, kept=True)
    rate_row(f"2d recv flowing onData, session.keep (ack/64 lines) {kept_bytes // MiB} MiB", kept_bytes, kept_s,
             plain_bytes, plain_s, note + "; baseline: the same without session.keep")


def paused_recv(gw: GatewayProcess, sz: Sizes, window: int,
                raw_receive: Callable[[int], tuple[int, float]]) -> None:
    """Bench 2b: a Python peer sends into a paused handle; the client loops tcp.recv."""
    rtotal = sz.recv_mib * MiB
    lst = loopback_listener()
    src = peer(_source, lst, rtotal, CHUNK, cap=sz.phase_cap)
    rpc = Rpc(gw.path)
    try:
        handle = rpc.call("tcp.createClient", {"sockaddr": sockaddr(lst)})["handle"]
        lst.close()
        got = 0
        eof = False
        t_last = 0.0
        req = '{"jsonrpc":"2.0","id":%%d,"method":"tcp.recv","params":{"handle":%d,"length":65536}}\n' % handle
        meter = CpuMeter(gw)
        # At most one recv per KiB is ever issued (a bound: every non-EOF answer carries at
        # least one byte), and none once the EOF answer is in.
        limit = rtotal // 1024 + 64
        cap_at = time.perf_counter() + sz.phase_cap
        answered = sent_n = 0

        def send_more() -> None:
            nonlocal sent_n
            more = min(limit - sent_n, window - (sent_n - answered))
            if more > 0:
                rpc.sock.sendall(b"".join((req % (sent_n + j + 1000)).encode() for j in range(more)))
                sent_n += more

        send_more()
        while answered < sent_n:
            for raw in rpc.read_lines():
                msg = json.loads(raw)
                if "id" not in msg:
                    continue
                if "error" in msg:
                    raise RPCFailure(f"tcp.recv: {msg['error']}")
                r = msg["result"]
                got += len(base64.b64decode(r["data"]))
                if r["eof"]:
                    eof = True
                else:
                    t_last = time.perf_counter()
                answered += 1
            if not eof and time.perf_counter() < cap_at:
                send_more()
        sent, t_start, _ = src.result(IO_TIMEOUT)
        note = meter.note() + ("" if eof else " capped")
        rpc.call("tcp.close", {"handle": handle})
    finally:
        rpc.close()
        lst.close()
        src.join()
    if got != sent:
        raise RPCFailure(f"paused recv: peer sent {sent}, client decoded {got}")
    bn, bs = raw_receive(got)
    rate_row(f"2b recv peer->gw tcp.recv 64K window {window} {got // MiB} MiB", got, t_last - t_start, bn, bs, note)


# ----------------------------------------------------------------------------------------
# Bench 3: pipelined calls/s


def bench_calls(gw: GatewayProcess, sz: Sizes, tmpdir: str) -> None:
    progress(f"bench 3: pipelined calls, window {CALL_WINDOW}")
    rpc = Rpc(gw.path)
    lst = loopback_listener()
    echo = peer_nopipe(_echo, lst, sz.phase_cap * 3)
    handle = rpc.call("tcp.createClient", {"sockaddr": sockaddr(lst)})["handle"]
    lst.close()
    cases = [
        ("gateway.info", '{"jsonrpc":"2.0","id":%d,"method":"gateway.info"}\n'),
        ("tcp.pending", '{"jsonrpc":"2.0","id":%d,"method":"tcp.pending","params":{"handle":' + str(handle) + "}}\n"),
    ]
    for name, template in cases:
        # One sample answer, to give the baseline server an answer line of the same size.
        rid, _ = rpc.request_line(name, {})
        rpc.sock.sendall((template % rid).encode())
        sample = next(r for r in rpc.read_lines() if json.loads(r).get("id") == rid)
        reply = sample + b"\n"

        def line(i: int) -> bytes:
            return (template % (i + 1_000_000)).encode()

        def check(msg: dict[str, Any]) -> None:
            if "result" not in msg:
                raise RPCFailure(f"{name}: {msg}")

        meter = CpuMeter(gw)
        t0 = time.perf_counter()
        n = rpc.pipeline(line, sz.calls, CALL_WINDOW, check, t0 + sz.phase_cap)
        gw_s = time.perf_counter() - t0
        note = meter.note() + (" capped" if n < sz.calls else "")

        # Baseline: a Python server on a Unix socket answering each line with a line of the same
        # size as the gateway's answer; the client does the same JSON parsing of each answer.
        path = os.path.join(tmpdir, "echo.sock")
        if os.path.exists(path):
            os.unlink(path)
        ul = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ul.bind(path)
        ul.listen(1)
        answerer = peer_nopipe(_line_answerer, ul, reply, sz.phase_cap)
        ul.close()
        base = Rpc(path)
        b0 = time.perf_counter()
        bn = base.pipeline(line, n, CALL_WINDOW, check, b0 + sz.phase_cap)
        base_s = time.perf_counter() - b0
        base.close()
        answerer.join()
        gw_rate, base_rate = n / gw_s, bn / base_s
        ROWS.append(Row(f"3 calls/s {name} x{n}", f"{gw_rate:,.0f} /s", f"{base_rate:,.0f} /s",
                        f"{gw_rate / base_rate:.3f}", note + f", answer {len(reply)} B"))
        progress(f"  {name}: {gw_rate:,.0f}/s vs {base_rate:,.0f}/s  {note}")
    rpc.call("tcp.close", {"handle": handle})
    rpc.close()
    echo.join()


# ----------------------------------------------------------------------------------------
# Bench 4: latency


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench_latency(gw: GatewayProcess, sz: Sizes, tmpdir: str) -> None:
    progress("bench 4: latency of one sync round trip (send 16 B, peer echo, recv)")
    msg16 = "0123456789abcdef"
    cap = sz.phase_cap

    # Gateway: tcp.send (answered) then tcp.recv until 16 bytes are back.
    lst = loopback_listener()
    echo = peer_nopipe(_echo, lst, cap * 2)
    rpc = Rpc(gw.path)
    handle = rpc.call("tcp.createClient", {"sockaddr": sockaddr(lst)})["handle"]
    lst.close()
    rpc.call("tcp.setNoDelay", {"handle": handle, "enable": True})
    gw_samples: list[float] = []
    stop = time.perf_counter() + cap
    for _ in range(sz.latency_iters):
        if time.perf_counter() > stop:
            break
        t = time.perf_counter()
        if rpc.call("tcp.send", {"handle": handle, "data": msg16}) != 16:
            raise RPCFailure("tcp.send did not send 16 bytes")
        back = b""
        while len(back) < 16:
            r = rpc.call("tcp.recv", {"handle": handle, "length": 16 - len(back), "timeout": 5000})
            if r["eof"]:
                raise RPCFailure("echo peer closed early")
            back += base64.b64decode(r["data"])
        gw_samples.append(time.perf_counter() - t)
        if back != msg16.encode():
            raise RPCFailure(f"echo mismatch: {back!r}")
    # Gateway dispatch alone: one sync tcp.pending round trip on the same connection.
    pend: list[float] = []
    for _ in range(len(gw_samples)):
        t = time.perf_counter()
        rpc.call("tcp.pending", {"handle": handle})
        pend.append(time.perf_counter() - t)
    rpc.call("tcp.close", {"handle": handle})
    rpc.close()
    echo.join()

    # Baseline: raw socket, same 16 bytes, same echo peer.
    lst = loopback_listener()
    echo = peer_nopipe(_echo, lst, cap * 2)
    raw = socket.create_connection(lst.getsockname(), timeout=IO_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lst.close()
    base_samples: list[float] = []
    data = msg16.encode()
    for _ in range(len(gw_samples)):
        t = time.perf_counter()
        raw.sendall(data)
        back = b""
        while len(back) < 16:
            chunk = raw.recv(16 - len(back))
            if not chunk:
                raise RPCFailure("echo peer closed early")
            back += chunk
        base_samples.append(time.perf_counter() - t)
    raw.close()
    echo.join()

    # Baseline for the dispatch row: one line round trip to a Python Unix-socket line server.
    path = os.path.join(tmpdir, "rtt.sock")
    if os.path.exists(path):
        os.unlink(path)
    ul = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ul.bind(path)
    ul.listen(1)
    answerer = peer_nopipe(_line_answerer, ul, b'{"jsonrpc":"2.0","id":1,"result":0}\n', cap * 2)
    ul.close()
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.settimeout(IO_TIMEOUT)
    us.connect(path)
    ureq = ('{"jsonrpc":"2.0","id":1,"method":"tcp.pending","params":{"handle":%d}}\n' % handle).encode()
    urtt: list[float] = []
    for _ in range(len(gw_samples)):
        t = time.perf_counter()
        us.sendall(ureq)
        got = b""
        while not got.endswith(b"\n"):
            c = us.recv(4096)
            if not c:
                raise RPCFailure("line server closed early")
            got += c
        json.loads(got)
        urtt.append(time.perf_counter() - t)
    us.close()
    answerer.join()

    def lat_row(bench: str, gws: list[float], bs: list[float]) -> None:
        g50, g99 = percentile(gws, 50) * 1e6, percentile(gws, 99) * 1e6
        b50, b99 = percentile(bs, 50) * 1e6, percentile(bs, 99) * 1e6
        ROWS.append(Row(bench, f"{g50:,.0f}/{g99:,.0f} us", f"{b50:,.0f}/{b99:,.0f} us", f"{g50 / b50:.2f}",
                        "median/p99; ratio of medians"))
        progress(f"  {bench}: p50 {g50:.0f} us p99 {g99:.0f} us vs p50 {b50:.0f} us p99 {b99:.0f} us")

    lat_row(f"4 latency send16+echo+recv x{len(gw_samples)}", gw_samples, base_samples)
    lat_row(f"4 latency one tcp.pending call x{len(pend)}", pend, urtt)


# ----------------------------------------------------------------------------------------
# Bench 5: memory under a slow reader


def bench_slow_reader(gw: GatewayProcess, sz: Sizes, memory: dict[str, int], watermark: int) -> None:
    progress(f"bench 5: slow reader ({sz.stall:.0f} s not reading while a peer blasts into a flowing handle)")
    rpc = Rpc(gw.path)
    server = rpc.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    rpc.call("tcp.accept", {"handle": server["handle"], "async": True})
    addr = (server["local"]["addr"], server["local"]["port"])
    stop_evt = CTX.Event()
    rss0 = gw.rss_kib()
    memory["before slow reader"] = rss0
    blaster = peer(_blaster, addr, stop_evt, cap=sz.stall + IO_TIMEOUT)
    accepted = rpc.wait_event("tcp.onAccept")
    client = accepted["client"]
    # Whatever onData already arrived with the accept is counted; then the client stops reading.
    got = sum(len(base64.b64decode(e["params"]["data"])) for e in rpc.events if e.get("method") == "tcp.onData")
    rpc.events.clear()
    peak = rss0
    t_end = time.perf_counter() + sz.stall
    samples = 0
    while time.perf_counter() < t_end:
        peak = max(peak, gw.rss_kib())
        samples += 1
        time.sleep(0.02)
    stop_evt.set()
    blasted = blaster.result(IO_TIMEOUT)
    # Resume reading: drain every onData until onEnd, checking nothing was lost.
    deadline = time.perf_counter() + IO_TIMEOUT
    ended = False
    while not ended and time.perf_counter() < deadline:
        for raw in rpc.read_lines():
            msg = json.loads(raw)
            if msg.get("method") == "tcp.onData" and msg["params"]["handle"] == client:
                got += len(base64.b64decode(msg["params"]["data"]))
            elif msg.get("method") == "tcp.onEnd":
                ended = True
        peak = max(peak, gw.rss_kib())
    rpc.close()  # closes the handle, so the peer sees our FIN and exits
    blaster.join()
    if got != blasted:
        raise RPCFailure(f"slow reader: peer sent {blasted} bytes, client decoded {got}")
    memory["peak during slow reader"] = peak
    memory["after slow reader"] = gw.rss_kib()
    progress(f"  peer got {blasted / MiB:.1f} MiB out before stop; RSS {rss0} -> peak {peak} KiB ({samples} samples)")
    growth = peak - rss0
    ROWS.append(Row(f"5 slow reader {sz.stall:.0f} s: RSS peak growth", f"{growth / 1024:,.1f} MiB",
                    f"{watermark / MiB:,.1f} MiB", f"{growth * 1024 / watermark:.2f}",
                    f"baseline = outboundHighWatermark; peer pushed {blasted / MiB:.1f} MiB total, all delivered"))
    if "after bench 2" not in memory:
        return
    b2 = memory["after bench 2"] - memory["before bench 2"]
    ROWS.append(Row("5 RSS growth across bench 2", f"{b2 / 1024:,.1f} MiB", "-", "-",
                    f"{memory['before bench 2'] / 1024:.1f} -> {memory['after bench 2'] / 1024:.1f} MiB"))


# ----------------------------------------------------------------------------------------
# Benches 6-8: the native load client against the gateway, a bare jansson server and a plain
# accept loop (bench/native/*.c, compiled here with cc and jansson into the run's temp dir)

NATIVE_DIR = Path(__file__).resolve().parent / "native"
NATIVE_WINDOW = 128        # bench 6: requests in flight per connection
BURST_BACKLOG = 4096       # bench 7: listen backlog, gateway and plain loop alike
RSS_CLIENTS = 5000         # bench 8: tcp.createClient count (each adds its accepted end too)
POLICY = {"maxHandlesPerConnection": 20000}


def build_native(tmpdir: str) -> dict[str, str]:
    """Compiles bench/native/*.c with cc and jansson (pkg-config); name -> executable."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson"], capture_output=True, text=True,
                           timeout=30, check=True).stdout.split()
    out = os.path.join(tmpdir, "native")
    os.makedirs(out, exist_ok=True)
    exes = {}
    for src in sorted(NATIVE_DIR.glob("*.c")):
        exe = os.path.join(out, src.stem)
        subprocess.run(["cc", "-O2", "-Wall", "-o", exe, str(src), *flags], capture_output=True, text=True,
                       timeout=120, check=True)
        exes[src.stem] = exe
    return exes


class BareServer:
    """bench/native/bare_server on a Unix socket in the run's temp dir."""

    def __init__(self, exe: str, tmpdir: str, lifetime: float) -> None:
        self.path = os.path.join(tmpdir, "bare.sock")
        self.proc = subprocess.Popen([exe, "--socket", self.path, "--seconds", str(int(lifetime))],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # "ready" once listening (EOF if it failed)
        if ready.strip() != b"ready":
            self.stop()
            raise RPCFailure("bare_server did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)


def load_client(exe: str, *args: str, server_pid: Optional[int] = None, seconds: float) -> dict[str, Any]:
    """Runs the native load client; its JSON figures. With `server_pid` the client also reports
    the CPU seconds that process used over the measured phase (`server_cpu_s`). A failed run
    raises with the client's reason."""
    extra = ("--server-pid", str(server_pid)) if server_pid else ()
    done = subprocess.run([exe, *args, *extra, "--seconds", f"{seconds:g}"], capture_output=True, text=True,
                          timeout=seconds + 4 * IO_TIMEOUT)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RPCFailure(f"load_client {args[0]} printed nothing (exit {done.returncode}): {done.stderr.strip()[:120]}")
    res: dict[str, Any] = json.loads(lines[-1])
    if "error" in res or done.returncode != 0:
        raise RPCFailure(f"load_client {args[0]}: {res.get('error', done.stderr.strip()[:120])}")
    return res


def share(cpu_s: float, wall_s: float) -> str:
    """A CPU share of one core, as text."""
    return f"{100 * cpu_s / wall_s:.0f}%" if wall_s > 0 else "-"


def per_op_us(cpu_s: float, n: int) -> str:
    """CPU microseconds per operation, as text: steadier than a rate on a loaded machine."""
    return f"{cpu_s / n * 1e6:.1f}" if n else "-"


def bench_pipelined(exes: dict[str, str], gw: GatewayProcess, bare: BareServer, sz: Sizes) -> None:
    lc = exes["load_client"]
    for conns in (1, 4):
        progress(f"bench 6: pipelined tcp.getState, {conns} conn(s), window {NATIVE_WINDOW}")
        common = ("--conns", str(conns), "--window", str(NATIVE_WINDOW), "--count", str(sz.native_calls))
        g = load_client(lc, "pipeline", "--socket", gw.path, "--gateway", *common, server_pid=gw.pid,
                        seconds=sz.phase_cap)
        b = load_client(lc, "pipeline", "--socket", bare.path, *common, server_pid=bare.pid, seconds=sz.phase_cap)
        capped = " capped" if g["capped"] or b["capped"] else ""
        note = (f"window {NATIVE_WINDOW}/conn, x{g['answered']}/{b['answered']}; "
                f"server CPU/call {per_op_us(g['server_cpu_s'], g['answered'])}/"
                f"{per_op_us(b['server_cpu_s'], b['answered'])} us; "
                f"server CPU {share(g['server_cpu_s'], g['seconds'])}/{share(b['server_cpu_s'], b['seconds'])}, "
                f"client CPU {share(g['client_cpu_s'], g['seconds'])}/{share(b['client_cpu_s'], b['seconds'])} "
                "(gw/bare)" + capped)
        label = f"6 pipelined tcp.getState {conns} conn{'s' if conns > 1 else ''}"
        ROWS.append(Row(label, f"{g['rate']:,.0f} /s", f"{b['rate']:,.0f} /s", f"{g['rate'] / b['rate']:.3f}", note))
        progress(f"  {label}: {g['rate']:,.0f}/s vs bare {b['rate']:,.0f}/s  {note}")


def bench_native_latency(exes: dict[str, str], gw: GatewayProcess, bare: BareServer, sz: Sizes) -> None:
    progress("bench 6: latency of one tcp.getState call (native client)")
    lc = exes["load_client"]
    count = ("--count", str(sz.native_latency))
    g = load_client(lc, "latency", "--socket", gw.path, "--gateway", *count, server_pid=gw.pid, seconds=sz.phase_cap)
    b = load_client(lc, "latency", "--socket", bare.path, *count, server_pid=bare.pid, seconds=sz.phase_cap)
    label = f"6 latency one tcp.getState x{g['n']}"
    ROWS.append(Row(label, f"{g['p50_us']:,.1f}/{g['p99_us']:,.1f} us", f"{b['p50_us']:,.1f}/{b['p99_us']:,.1f} us",
                    f"{g['p50_us'] / b['p50_us']:.2f}",
                    "median/p99; ratio of medians; baseline = bare jansson server; server CPU/call "
                    f"{per_op_us(g['server_cpu_s'], g['n'])}/{per_op_us(b['server_cpu_s'], b['n'])} us (gw/bare)"
                    + (" capped" if g["capped"] or b["capped"] else "")))
    progress(f"  {label}: p50 {g['p50_us']:.1f} us p99 {g['p99_us']:.1f} us vs bare p50 {b['p50_us']:.1f} us "
             f"p99 {b['p99_us']:.1f} us")


def bench_accept_burst(exes: dict[str, str], gw: GatewayProcess, sz: Sizes) -> None:
    lc = exes["load_client"]
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except OSError:
        somaxconn = -1
    for count in sz.bursts:
        progress(f"bench 7: accept burst of {count} (backlog {BURST_BACKLOG}, somaxconn {somaxconn})")
        common = ("--count", str(count), "--backlog", str(BURST_BACKLOG))
        p = load_client(lc, "burst", "--plain", *common, seconds=sz.phase_cap)
        g = load_client(lc, "burst", "--socket", gw.path, *common, server_pid=gw.pid, seconds=sz.phase_cap)
        # The control connection is closed: the gateway closes the accepted handles. One call
        # answered means it is done before the next burst starts.
        sync = Rpc(gw.path)
        sync.call("gateway.info")
        sync.close()
        bad = [f"{r['target']}: {r['accepted']}/{count} accepted, {r['connect_errors']} connect errors "
               f"{r['first_errno']}".rstrip() for r in (g, p) if r["accepted"] < count or r["connect_errors"]]
        note = (f"SYN drops (ListenOverflows/ListenDrops) gw {g['listen_overflows']}/{g['listen_drops']}, "
                f"plain {p['listen_overflows']}/{p['listen_drops']}; "
                f"{g['seconds'] * 1000:.0f}/{p['seconds'] * 1000:.0f} ms; acceptor CPU/conn "
                f"{per_op_us(g['server_cpu_s'], g['accepted'])}/{per_op_us(p['server_cpu_s'], p['accepted'])} us, "
                f"acceptor CPU {share(g['server_cpu_s'], g['seconds'])}/{share(p['server_cpu_s'], p['seconds'])} "
                f"(gw/plain); backlog {BURST_BACKLOG}" + ("; " + "; ".join(bad) if bad else ""))
        label = f"7 accept burst {count}"
        ROWS.append(Row(label, f"{g['rate']:,.0f} /s", f"{p['rate']:,.0f} /s",
                        f"{g['rate'] / p['rate']:.3f}" if p["rate"] else "-", note))
        progress(f"  {label}: gateway {g['rate']:,.0f}/s vs plain {p['rate']:,.0f}/s  {note}")


def bench_rss_per_handle(binary: str, tmpdir: str, policy_file: str, memory: dict[str, int]) -> float:
    """A fresh gateway: idle RSS, then RSS with one server + RSS_CLIENTS clients connected to it
    and their accepted ends (2 * RSS_CLIENTS + 1 handles on one connection)."""
    progress(f"bench 8: RSS per handle ({2 * RSS_CLIENTS + 1} handles)")
    gw = GatewayProcess(binary, tmpdir, name="gw-rss", extra=("--policy", policy_file))
    try:
        rpc = Rpc(gw.path)
        rpc.call("gateway.info")
        time.sleep(0.2)
        idle = gw.rss_kib()
        server = rpc.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}, "backlog": 1024})
        rpc.call("tcp.accept", {"handle": server["handle"], "async": True})
        port = server["local"]["port"]
        template = ('{"jsonrpc":"2.0","id":%d,"method":"tcp.createClient","params":'
                    '{"sockaddr":{"addr":"127.0.0.1","port":' + str(port) + '}}}\n')
        t0 = time.perf_counter()

        def check(msg: dict[str, Any]) -> None:
            if not isinstance(msg.get("result"), dict) or "handle" not in msg["result"]:
                raise RPCFailure(f"tcp.createClient: {msg}")

        made = rpc.pipeline(lambda i: (template % (i + 1_000_000)).encode(), RSS_CLIENTS, 64, check,
                            t0 + 4 * IO_TIMEOUT)
        accepted = sum(1 for e in rpc.events if e.get("method") == "tcp.onAccept")
        deadline = time.monotonic() + IO_TIMEOUT
        while accepted < made and time.monotonic() < deadline:
            for raw in rpc.read_lines():
                if json.loads(raw).get("method") == "tcp.onAccept":
                    accepted += 1
        rpc.events.clear()
        listed = len(rpc.call("tcp.list"))
        handles = int(rpc.call("gateway.info")["handles"])
        build_s = time.perf_counter() - t0
        time.sleep(0.5)  # let the loop settle (nothing in flight)
        loaded = gw.rss_kib()
        rpc.close()  # every handle goes with the connection
        time.sleep(0.5)
        check_rpc = Rpc(gw.path)
        left = int(check_rpc.call("gateway.info")["handles"])
        check_rpc.close()
        after = gw.rss_kib()
        memory["rss-bench idle"], memory["rss-bench loaded"], memory["rss-bench closed"] = idle, loaded, after
    finally:
        gw.stop()
    if listed != handles or accepted != made:
        raise RPCFailure(f"tcp.list {listed} vs gateway.info {handles} handles; {accepted} accepted of {made}")
    per = (loaded - idle) / handles
    ROWS.append(Row(f"8 RSS per handle, {handles:,} handles", f"{per:.2f} KiB", "-", "-",
                    f"target <= 2 KiB; 1 server + {made} sync clients (paused) + {accepted} accepted ends "
                    f"(flowing); VmRSS idle {idle / 1024:.1f} MiB -> {loaded / 1024:.1f} MiB "
                    f"(-> {after / 1024:.1f} MiB, {left} handles, after closing); built in {build_s:.1f} s"
                    + ("" if made == RSS_CLIENTS else " capped")))
    progress(f"  {handles} handles: RSS {idle} -> {loaded} KiB = {per:.2f} KiB per handle; after close {after} KiB")
    return per


def _holder(listener: socket.socket, count: int, stop_evt: Any, out: mpc.Connection, cap: float) -> None:
    """Accepts up to `count` connections and holds them until told to stop; reports how many."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = time.perf_counter() + cap
    while len(held) < count and time.perf_counter() < stop and not stop_evt.is_set():
        try:
            held.append(listener.accept()[0])
        except OSError:
            pass
    out.send(len(held))
    stop_evt.wait(cap)
    for conn in held:
        conn.close()


def bench_rss_paused(binary: str, tmpdir: str, policy_file: str, mixed_per: Optional[float]) -> None:
    """A fresh gateway: idle RSS, then RSS with 2 * RSS_CLIENTS sync (paused) clients whose
    accepted ends a forked Python peer holds (so every gateway handle is a paused connection)."""
    count = 2 * RSS_CLIENTS
    progress(f"bench 8: RSS per handle ({count} paused handles; the peer holds the accepted ends)")
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    stop_evt = CTX.Event()
    holder = peer(_holder, lst, count, stop_evt, cap=4 * IO_TIMEOUT)
    lst.close()
    gw = GatewayProcess(binary, tmpdir, name="gw-rss-paused", extra=("--policy", policy_file))
    try:
        rpc = Rpc(gw.path)
        rpc.call("gateway.info")
        time.sleep(0.2)
        idle = gw.rss_kib()
        template = ('{"jsonrpc":"2.0","id":%d,"method":"tcp.createClient","params":'
                    '{"sockaddr":{"addr":"127.0.0.1","port":' + str(port) + '}}}\n')

        def check(msg: dict[str, Any]) -> None:
            if not isinstance(msg.get("result"), dict) or "handle" not in msg["result"]:
                raise RPCFailure(f"tcp.createClient: {msg}")

        t0 = time.perf_counter()
        made = rpc.pipeline(lambda i: (template % (i + 1_000_000)).encode(), count, 64, check, t0 + 4 * IO_TIMEOUT)
        handles = int(rpc.call("gateway.info")["handles"])
        build_s = time.perf_counter() - t0
        time.sleep(0.5)
        loaded = gw.rss_kib()
        rpc.close()
    finally:
        gw.stop()
        stop_evt.set()
        held = holder.result(IO_TIMEOUT)
        holder.join()
    if handles != made or held != made:
        raise RPCFailure(f"gateway.info {handles} handles, {made} created, peer holds {held}")
    per = (loaded - idle) / handles
    flowing = (f"; so one flowing accepted handle costs about {2 * mixed_per - per:.1f} KiB"
               if mixed_per is not None else "")
    ROWS.append(Row(f"8 RSS per handle, {handles:,} paused handles", f"{per:.2f} KiB", "-", "-",
                    f"target <= 2 KiB; {handles} sync clients, accepted ends held by a peer; VmRSS idle "
                    f"{idle / 1024:.1f} MiB -> {loaded / 1024:.1f} MiB; built in {build_s:.1f} s" + flowing
                    + ("" if made == count else " capped")))
    progress(f"  {handles} paused handles: RSS {idle} -> {loaded} KiB = {per:.2f} KiB per handle")


def run_native(args: argparse.Namespace, sz: Sizes, tmpdir: str, memory: dict[str, int]) -> Optional[dict[str, Any]]:
    """Rows 6-8; the native gateway's gateway.info (None when the natives could not be built)."""
    progress("native: building bench/native with cc + jansson")
    try:
        exes = build_native(tmpdir)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        ROWS.append(Row("6-8 native benches", "FAILED", "-", "-", f"build: {exc} {detail}"[:160]))
        progress(f"  native build FAILED: {exc} {detail}")
        return None
    policy_file = os.path.join(tmpdir, "bench-policy.json")
    with open(policy_file, "w") as f:
        json.dump(POLICY, f)
    gw = GatewayProcess(args.bin, tmpdir, name="gw-native", extra=("--policy", policy_file))
    bare: Optional[BareServer] = None
    try:
        info = Rpc(gw.path)
        gi: dict[str, Any] = info.call("gateway.info")
        info.close()
        bare = BareServer(exes["bare_server"], tmpdir, lifetime=600)
        attempt("6 pipelined tcp.getState", lambda: bench_pipelined(exes, gw, bare, sz))
        attempt("6 latency one tcp.getState", lambda: bench_native_latency(exes, gw, bare, sz))
        attempt("7 accept burst", lambda: bench_accept_burst(exes, gw, sz))
    finally:
        if bare is not None:
            bare.stop()
        gw.stop()
    mixed: list[float] = []
    attempt("8 RSS per handle", lambda: mixed.append(bench_rss_per_handle(args.bin, tmpdir, policy_file, memory)))
    attempt("8 RSS per handle, paused", lambda: bench_rss_paused(args.bin, tmpdir, policy_file,
                                                                 mixed[0] if mixed else None))
    return gi


# ----------------------------------------------------------------------------------------


def default_binary() -> str:
    for kind in ("release", "debug"):
        p = REPO / ".build" / kind / "tcpgw"
        if p.exists():
            return str(p)
    return str(REPO / ".build" / "release" / "tcpgw")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=default_binary(), help="tcpgw binary (default: .build/release, else debug)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes: whole run under ~20 s")
    ap.add_argument("--native-only", action="store_true",
                    help="only the native-client rows (6 pipelined/latency, 7 accept bursts, 8 RSS per handle)")
    ap.add_argument("--no-native", action="store_true", help="skip the native-client rows (6-8)")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        progress(f"no executable gateway at {args.bin}; build it or pass --bin")
        return 2
    sz = QUICK if args.quick else FULL
    global IO_TIMEOUT
    IO_TIMEOUT = 3.0 if args.quick else 5.0
    started = time.perf_counter()
    load0 = os.getloadavg()
    tmpdir = tempfile.mkdtemp(prefix="tcpgw-bench-")
    memory: dict[str, int] = {}
    gi: Optional[dict[str, Any]] = None
    hwm = -1
    try:
        if not args.native_only:
            gw = GatewayProcess(args.bin, tmpdir)
            try:
                memory["start"] = gw.rss_kib()
                info = Rpc(gw.path)
                gi = info.call("gateway.info")
                info.close()
                watermark = int(gi["limits"]["outboundHighWatermark"])
                attempt("1 send gw->peer", lambda: bench_send(gw, sz))
                attempt("2a recv peer->gw flowing", lambda: bench_receive(gw, sz, memory))
                attempt("2c fault chain", lambda: bench_fault_cost(gw, sz))
                attempt("2d recv flowing kept", lambda: bench_receive_kept(gw, sz))
                attempt("3 calls/s", lambda: bench_calls(gw, sz, tmpdir))
                attempt("4 latency", lambda: bench_latency(gw, sz, tmpdir))
                attempt("5 slow reader", lambda: bench_slow_reader(gw, sz, memory, watermark))
                client_rows(gw, sz, tmpdir)
                rows_relay.run_rows(sys.modules[__name__], gw, sz, tmpdir)
                memory["end"] = gw.rss_kib()
                hwm = gw.hwm_kib()
            finally:
                gw.stop()
        if not args.no_native:
            native_gi = run_native(args, sz, tmpdir, memory)
            gi = gi or native_gi
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load1 = os.getloadavg()
    kind = ("quick" if args.quick else "full") + (", native rows only" if args.native_only else "")
    header = [f"tcpgw bench ({kind}) — {args.bin}"]
    if gi:
        header.append(f"gateway {gi['version']} pid {gi['pid']}; limits {json.dumps(gi['limits'], separators=(',', ':'))}")
    header += [
        f"host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; loopback; elapsed {elapsed:.1f} s; "
        f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end (1 min)",
        "gateway RSS (MiB): " + ", ".join(f"{k} {v / 1024:.1f}" for k, v in memory.items())
        + (f"; VmHWM {hwm / 1024:.1f}" if hwm >= 0 else ""),
        "",
    ]
    print_table(header)
    if not args.native_only:
        codec_bench(args)
    return 0


def client_rows(gw: GatewayProcess, sz: Sizes, tmpdir: str) -> None:
    """Rows 9 (bench/rows_client.py): the Python client through its public API."""
    try:
        import rows_client
    except ImportError as exc:
        progress(f"no rows 9: the Python client is not importable ({exc}); pip install -e clients/python")
        return
    rows_client.bench_client(sys.modules[__name__], gw, sz, tmpdir)


def codec_bench(args: argparse.Namespace) -> None:
    """The JSON codec alone (bench/CodecBench): a 64 KiB tcp.send request parsed and a tcp.recv
    answer printed, long strings spliced around jansson against all-jansson, same run."""
    exe = os.path.join(os.path.dirname(os.path.abspath(args.bin)), "CodecBench")
    if not os.access(exe, os.X_OK):
        progress(f"no {exe}; `swift build -c release --product CodecBench` adds the codec figures")
        return
    cmd = [exe] + (["--quick"] if args.quick else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"\ncodec bench FAILED: {exc}")
        return
    print()
    print(out.rstrip())


if __name__ == "__main__":
    sys.exit(main())
