"""Rows R1-R2 of bench/run.py: the raw byte paths of contract §11 beside socat relaying the
same bytes in the same run.

R1  tcp.pipe relay: a sender -> [relay] -> a receiver on loopback, the relay being the
    gateway (two handles joined with tcp.pipe) or `socat TCP-LISTEN TCP`. MiB/s each, their
    ratio, and the CPU seconds per GiB relayed of the gateway and of socat (utime + stime from
    /proc/PID/stat, before and after the measured phase).
R2  tcp.attach stream: a Python client reading (down) or writing (up) an attached Unix
    socket, the TCP end being a Python peer; baseline `socat UNIX-LISTEN TCP` in between.

Peers are the forked `_source` / `_sink` processes of run.py. Byte counts are checked end
to end: a relay that loses or adds a byte is an error, not a figure.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from types import ModuleType
from typing import Any, Callable

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 1 << 20
# socat's own buffer (default 8 KiB) set to 1 MiB: its fastest setting here, so the
# baseline is socat at its best.
SOCAT_BUFFER = str(1 << 20)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise RuntimeError(f"{what} not ready within {timeout} s")


def listening(port: int) -> bool:
    """Whether something listens on the port, without connecting (socat accepts only once):
    a bind to a port in LISTEN fails."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def unix_connect(path: str, timeout: float) -> socket.socket:
    """Connects, retrying briefly: socat's file appears just before it listens."""
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Socat:
    """One socat relay process, stopped at the end of its measurement."""

    def __init__(self, listen: str, target: str, tmpdir: str) -> None:
        self.log = open(os.path.join(tmpdir, "socat.log"), "ab")
        self.proc = subprocess.Popen(["socat", "-b", SOCAT_BUFFER, listen, target],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self, base: ModuleType) -> None:
        base.stop_process(self.proc)
        self.log.close()


def cpu_note(gw_cpu: float, gw_bytes: int, socat_cpu: float, socat_bytes: int) -> str:
    return (f"CPU per GiB relayed: gateway {gw_cpu / (gw_bytes / GiB):.2f} s, "
            f"socat {socat_cpu / (socat_bytes / GiB):.2f} s")


def through(base: ModuleType, total: int, cap: float, connect_relay: Callable[[int], Any]) -> tuple[int, float]:
    """Bytes from a forked source through a relay to a forked sink. `connect_relay(sink_port)`
    starts the relay and returns the address the source connects to. Returns the bytes
    the sink counted (checked against the source's) and the seconds from the source's start
    to the sink's last byte."""
    sink_listener = base.loopback_listener()
    sink = base.peer(base._sink, sink_listener, total, cap=cap)
    target = connect_relay(sink_listener.getsockname()[1])
    source = base.peer(base._source, target, total, CHUNK, cap=cap)
    try:
        sent, start, _ = source.result(cap + 3 * base.IO_TIMEOUT)
        counted, _, last = sink.result(cap + 3 * base.IO_TIMEOUT)
    finally:
        source.join()
        sink.join()
        sink_listener.close()
    if counted != sent or sent != total:
        raise base.RPCFailure(f"relay moved {counted} of {sent} bytes sent ({total} wanted)")
    return counted, last - start


def bench_pipe(base: ModuleType, gw: Any, sz: Any, tmpdir: str) -> None:
    total = 16 * sz.bulk_mib * MiB  # relays are fast: enough bytes for a phase of a second or more
    cap = sz.phase_cap

    # Baseline: socat between the source and the sink.
    relay_port = free_port()
    holder: dict[str, Socat] = {}

    def via_socat(sink_port: int) -> Any:
        holder["socat"] = Socat(f"TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr",
                                f"TCP:127.0.0.1:{sink_port}", tmpdir)
        wait_for(lambda: listening(relay_port), 5, "socat")
        holder["cpu0"] = holder["socat"].cpu()  # type: ignore[assignment]
        return ("127.0.0.1", relay_port)

    try:
        base_bytes, base_s = through(base, total, cap, via_socat)
        socat_cpu = holder["socat"].cpu() - holder["cpu0"]  # type: ignore[operator]
    finally:
        if "socat" in holder:
            holder["socat"].stop(base)

    # The gateway: the source listens, the gateway connects to both ends and pipes them.
    rpc = base.Rpc(gw.path)
    try:
        sink_listener = base.loopback_listener()
        sink = base.peer(base._sink, sink_listener, total, cap=cap)
        source_listener = base.loopback_listener()
        source = base.peer(base._source, source_listener, total, CHUNK, cap=cap)
        cpu0 = gw.cpu_s()
        b = rpc.call("tcp.createClient", {"sockaddr": base.sockaddr(sink_listener)})["handle"]
        a = rpc.call("tcp.createClient", {"sockaddr": base.sockaddr(source_listener)})["handle"]
        rpc.call("tcp.pipe", {"handle": a, "peer": b})
        try:
            sent, start, _ = source.result(cap + 3 * base.IO_TIMEOUT)
            counted, _, last = sink.result(cap + 3 * base.IO_TIMEOUT)
        finally:
            source.join()
            sink.join()
            sink_listener.close()
            source_listener.close()
        gw_cpu = gw.cpu_s() - cpu0
        if counted != sent or sent != total:
            raise base.RPCFailure(f"tcp.pipe moved {counted} of {sent} bytes sent ({total} wanted)")
        # Both ends finished: both handles gone with tcp.onClose.
        for _ in range(2):
            rpc.wait_event("tcp.onClose")
    finally:
        rpc.close()
    base.rate_row("R1 tcp.pipe relay TCP->TCP", counted, last - start, base_bytes, base_s,
                  cpu_note(gw_cpu, counted, socat_cpu, base_bytes) + f"; {total // MiB} MiB, baseline socat -b 1M")


def attach(path: str, token: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tcp.attach", "params": {"token": token}}).encode() + b"\n")
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)  # byte by byte: nothing of the stream is read with the answer
        if not c:
            raise RuntimeError("gateway closed the attach connection")
        line += c
    answer = json.loads(line)
    if "result" not in answer:
        raise RuntimeError(f"tcp.attach: {answer}")
    return s


def read_all(s: socket.socket, total: int, cap: float) -> tuple[int, float]:
    buf = bytearray(CHUNK)
    n = 0
    stop = time.perf_counter() + cap
    while n < total and time.perf_counter() < stop:
        k = s.recv_into(buf)
        if not k:
            break
        n += k
    return n, time.perf_counter()


def write_all(s: socket.socket, total: int, cap: float) -> tuple[int, float]:
    block = memoryview(os.urandom(CHUNK))
    sent = 0
    start = time.perf_counter()
    stop = start + cap
    while sent < total and time.perf_counter() < stop:
        n = min(CHUNK, total - sent)
        s.sendall(block[:n])
        sent += n
    s.shutdown(socket.SHUT_WR)
    return sent, start


def stream_down(base: ModuleType, total: int, cap: float, open_stream: Callable[[socket.socket], socket.socket]) -> tuple[int, float]:
    """A forked TCP source -> [relay] -> this process reading a Unix socket."""
    listener = base.loopback_listener()
    source = base.peer(base._source, listener, total, CHUNK, cap=cap)
    try:
        s = open_stream(listener)
        counted, last = read_all(s, total, cap + base.IO_TIMEOUT)
        sent, start, _ = source.result(cap + 3 * base.IO_TIMEOUT)
        s.close()
    finally:
        source.join()
        listener.close()
    if counted != sent or sent != total:
        raise base.RPCFailure(f"stream delivered {counted} of {sent} bytes sent ({total} wanted)")
    return counted, last - start


def stream_up(base: ModuleType, total: int, cap: float, open_stream: Callable[[socket.socket], socket.socket]) -> tuple[int, float]:
    """This process writing a Unix socket -> [relay] -> a forked TCP sink."""
    listener = base.loopback_listener()
    sink = base.peer(base._sink, listener, total, cap=cap)
    try:
        s = open_stream(listener)
        sent, start = write_all(s, total, cap)
        counted, _, last = sink.result(cap + 3 * base.IO_TIMEOUT)
        s.close()
    finally:
        sink.join()
        listener.close()
    if counted != sent or sent != total:
        raise base.RPCFailure(f"stream delivered {counted} of {sent} bytes sent ({total} wanted)")
    return counted, last - start


def bench_stream(base: ModuleType, gw: Any, sz: Any, tmpdir: str) -> None:
    total = 16 * sz.bulk_mib * MiB  # relays are fast: enough bytes for a phase of a second or more
    cap = sz.phase_cap
    rpc = base.Rpc(gw.path)
    try:
        for way, run in (("down TCP->Unix", stream_down), ("up Unix->TCP", stream_up)):
            socat_path = os.path.join(tmpdir, "socat-stream.sock")
            holder: dict[str, Any] = {}

            def via_socat(listener: socket.socket) -> socket.socket:
                if os.path.exists(socat_path):
                    os.unlink(socat_path)
                holder["socat"] = Socat(f"UNIX-LISTEN:{socat_path}",
                                        f"TCP:127.0.0.1:{listener.getsockname()[1]}", tmpdir)
                wait_for(lambda: os.path.exists(socat_path), 5, "socat")
                holder["cpu0"] = holder["socat"].cpu()
                return unix_connect(socat_path, cap + base.IO_TIMEOUT)

            try:
                base_bytes, base_s = run(base, total, cap, via_socat)
                socat_cpu = holder["socat"].cpu() - holder["cpu0"]
            finally:
                if "socat" in holder:
                    holder["socat"].stop(base)

            def via_gateway(listener: socket.socket) -> socket.socket:
                h = rpc.call("tcp.createClient", {"sockaddr": base.sockaddr(listener)})["handle"]
                token = rpc.call("tcp.stream", {"handle": h})["token"]
                holder["cpu0"] = gw.cpu_s()
                return attach(gw.path, token, cap + base.IO_TIMEOUT)

            gw_bytes, gw_s = run(base, total, cap, via_gateway)
            gw_cpu = gw.cpu_s() - holder["cpu0"]
            rpc.wait_event("tcp.onClose")
            base.rate_row(f"R2 tcp.attach stream {way}", gw_bytes, gw_s, base_bytes, base_s,
                          cpu_note(gw_cpu, gw_bytes, socat_cpu, base_bytes)
                          + f"; {total // MiB} MiB, baseline socat UNIX-LISTEN TCP")
    finally:
        rpc.close()


def run_rows(base: ModuleType, gw: Any, sz: Any, tmpdir: str) -> None:
    """The relay rows, each under run.py's `attempt` (a failure is a row, not a crash)."""
    if shutil.which("socat") is None:
        base.ROWS.append(base.Row("R1-R2 relay rows", "SKIPPED", "-", "-", "socat not installed (scripts/setup installs it)"))
        return
    base.attempt("R1 tcp.pipe relay", lambda: bench_pipe(base, gw, sz, tmpdir))
    base.attempt("R2 tcp.attach stream", lambda: bench_stream(base, gw, sz, tmpdir))
