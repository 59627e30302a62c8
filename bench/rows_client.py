"""Rows 9: the Python client (clients/python, package `tcpgw`) measured through its public API.

Each figure sits beside a raw-Python baseline measured in the same run:
  9a  flowing `"data"` events (`conn.events()` after `resume()`) vs a raw socket reading the
      same bytes from the same kind of peer;
  9b  a `conn.recv(65536)` loop until end of stream, threaded and asyncio, vs the raw socket;
  9c  one synchronous call (`conn.pending()`), median of many, vs a raw Python JSON-line
      round trip (json.dumps, sendall, read the line, json.loads) to a trivial line server in
      another process;
  9d  the same through `tcpgw.aio`, vs the same raw round trip made with asyncio streams
      (the sync raw figure is in the notes too).

Called from bench/run.py (`bench_client`), or alone: `python3 bench/rows_client.py [--quick]
[--bin PATH]`. Which client is measured is whatever `import tcpgw` finds (PYTHONPATH=DIR/src
measures another copy, e.g. an older one). Byte counts are checked end to end.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any, Callable, List, Optional

import tcpgw
import tcpgw.aio

CHUNK = 64 * 1024
RECV = 65536
SMALL_RCVBUF = 96 * 1024  # set as SO_RCVBUF; Linux reports (and uses) double


def _median(samples: List[float]) -> float:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _p99(samples: List[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def _decoder() -> str:
    """The base64 decoder the measured client's fast paths use (older clients: not told)."""
    from tcpgw import _wire
    which = getattr(_wire, "base64_decoder", None)
    return str(which()) if callable(which) else "not told"


def bench_client(run: Any, gw: Any, sz: Any, tmpdir: str) -> None:
    """All rows 9; `run` is bench/run.py's module (its peers, rows and `attempt`)."""
    run.progress(f"bench 9: the Python client ({os.path.dirname(tcpgw.__file__)}, base64 decoder: {_decoder()})")
    total = sz.bulk_mib * run.MiB
    cap = sz.phase_cap
    run.attempt("9a client data events", lambda: _data_events(run, gw, total, cap))
    run.attempt("9b client recv(65536) loop", lambda: _recv_loop(run, gw, total, cap, aio=False))
    run.attempt("9b client aio recv(65536) loop", lambda: _recv_loop(run, gw, total, cap, aio=True))
    # The same with the gateway's socket held to a small receive buffer: the window a paused
    # socket's autotuning sometimes stays at (see bench/README.md), so each answer is ~90 KiB.
    for aio in (False, True):
        run.attempt("9b client recv(65536) loop, small window",
                    lambda aio=aio: _recv_loop(run, gw, total, cap, aio=aio, rcvbuf=SMALL_RCVBUF))
    iters = sz.latency_iters * 2
    run.attempt("9c client one sync call", lambda: _one_call(run, gw, iters, cap, tmpdir, aio=False))
    run.attempt("9d client one aio call", lambda: _one_call(run, gw, iters, cap, tmpdir, aio=True))


# ----------------------------------------------------------------------------------------
# 9a / 9b: bytes in


def _raw_receive(run: Any, total: int, cap: float, rcvbuf: Optional[int] = None) -> tuple:
    """Baseline: a raw socket reading `total` bytes from a forked `_source` peer (with that
    SO_RCVBUF, if given, as the measured row's socket has)."""
    lst = run.loopback_listener()
    src = run.peer(run._source, lst.getsockname(), total, CHUNK, cap=cap)
    conn, _ = lst.accept()
    lst.close()
    if rcvbuf is not None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    conn.settimeout(run.IO_TIMEOUT)
    buf = bytearray(1 << 20)
    got = 0
    t0 = time.perf_counter()
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        got += k
    t1 = time.perf_counter()
    sent, _s, _e = src.result(run.IO_TIMEOUT + cap)
    conn.close()
    src.join()
    if got != sent:
        raise run.RPCFailure(f"raw socket read {got} bytes, the peer sent {sent}")
    return got, t1 - t0


def _gateway_source(run: Any, srv_port: int, total: int, cap: float) -> Any:
    return run.peer(run._source, ("127.0.0.1", srv_port), total, CHUNK, cap=cap)


def _data_events(run: Any, gw: Any, total: int, cap: float) -> None:
    with tcpgw.connect(gw.path) as client:
        srv = client.createServer(("127.0.0.1", 0))
        src = _gateway_source(run, srv.local["port"] if srv.local else srv.sockName()["port"], total, cap)
        conn = srv.accept(None, int(run.IO_TIMEOUT * 1000))
        meter = run.CpuMeter(gw)
        t0 = time.perf_counter()
        conn.resume()
        got = 0
        ended = False
        for event in conn.events(timeout=run.IO_TIMEOUT):
            if event.name == "data":
                got += len(event.data)
            elif event.name == "end":
                ended = True
                break
        t1 = time.perf_counter()
        note = meter.note()
        conn.close()
        srv.close()
    sent, _s, _e = src.result(run.IO_TIMEOUT + cap)
    src.join()
    if not ended or got != sent:
        raise run.RPCFailure(f"client got {got} bytes (end seen: {ended}), the peer sent {sent}")
    base_bytes, base_s = _raw_receive(run, total, cap)
    run.rate_row(f"9a client data events {total // run.MiB} MiB", got, t1 - t0, base_bytes, base_s, note)


async def _aio_recv(path: str, port_box: List[int], started: Callable[[int], Any], io_ms: int,
                    rcvbuf: Optional[int]) -> tuple:
    async with await tcpgw.aio.connect(path) as client:
        srv = await client.createServer(("127.0.0.1", 0))
        port = (await srv.sockName())["port"]
        src = started(port)
        port_box.append(port)
        conn = await srv.accept(None, io_ms)
        if rcvbuf is not None:
            await conn.setRecvBufferSize(rcvbuf)
        got = 0
        t0 = time.perf_counter()
        while True:
            data = await conn.recv(RECV, io_ms)
            if not data:
                break
            got += len(data)
        t1 = time.perf_counter()
        held = await conn.getRecvBufferSize()
        await conn.close()
        await srv.close()
    return src, got, t1 - t0, held


def _recv_loop(run: Any, gw: Any, total: int, cap: float, aio: bool, rcvbuf: Optional[int] = None) -> None:
    io_ms = int(run.IO_TIMEOUT * 1000)
    meter = run.CpuMeter(gw)
    if aio:
        src, got, took, held = asyncio.run(
            _aio_recv(gw.path, [], lambda port: _gateway_source(run, port, total, cap), io_ms, rcvbuf))
    else:
        with tcpgw.connect(gw.path) as client:
            srv = client.createServer(("127.0.0.1", 0))
            src = _gateway_source(run, srv.sockName()["port"], total, cap)
            conn = srv.accept(None, io_ms)
            if rcvbuf is not None:
                conn.setRecvBufferSize(rcvbuf)
            got = 0
            t0 = time.perf_counter()
            while True:
                data = conn.recv(RECV, io_ms)
                if not data:
                    break
                got += len(data)
            took = time.perf_counter() - t0
            held = conn.getRecvBufferSize()
            conn.close()
            srv.close()
    # The receive buffer the socket ended with: autotuning's (or the one set) is what bounds
    # the answers, so it tells which kind of run this was.
    note = f"{meter.note()}, SO_RCVBUF {held // 1024} KiB"
    sent, _s, _e = src.result(run.IO_TIMEOUT + cap)
    src.join()
    if got != sent:
        raise run.RPCFailure(f"client got {got} bytes, the peer sent {sent}")
    base_bytes, base_s = _raw_receive(run, total, cap, rcvbuf)
    name = "aio " if aio else ""
    window = f", SO_RCVBUF set to {rcvbuf // 1024} KiB" if rcvbuf is not None else ""
    run.rate_row(f"9b client {name}recv(65536) loop {total // run.MiB} MiB{window}", got, took, base_bytes, base_s, note)


# ----------------------------------------------------------------------------------------
# 9c / 9d: one call


def _line_server(run: Any, tmpdir: str, name: str, cap: float) -> tuple:
    path = os.path.join(tmpdir, name)
    if os.path.exists(path):
        os.unlink(path)
    ul = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ul.bind(path)
    ul.listen(1)
    answerer = run.peer_nopipe(run._line_answerer, ul, b'{"jsonrpc":"2.0","result":0,"id":1}\n', cap * 2)
    ul.close()
    return path, answerer


def _raw_sync_rtt(run: Any, tmpdir: str, count: int, cap: float, handle: int) -> List[float]:
    path, answerer = _line_server(run, tmpdir, "client-rtt.sock", cap)
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.settimeout(run.IO_TIMEOUT)
    us.connect(path)
    samples: List[float] = []
    for i in range(count):
        t = time.perf_counter()
        req = {"jsonrpc": "2.0", "id": i + 1, "method": "tcp.pending", "params": {"handle": handle}}
        us.sendall(json.dumps(req, separators=(",", ":")).encode() + b"\n")
        got = us.recv(4096)
        while not got.endswith(b"\n"):
            more = us.recv(4096)
            if not more:
                raise run.RPCFailure("line server closed early")
            got += more
        if "result" not in json.loads(got):
            raise run.RPCFailure("line server answered without a result")
        samples.append(time.perf_counter() - t)
    us.close()
    answerer.join()
    return samples


async def _raw_aio_rtt(path: str, count: int, handle: int) -> List[float]:
    reader, writer = await asyncio.open_unix_connection(path)
    samples: List[float] = []
    for i in range(count):
        t = time.perf_counter()
        req = {"jsonrpc": "2.0", "id": i + 1, "method": "tcp.pending", "params": {"handle": handle}}
        writer.write(json.dumps(req, separators=(",", ":")).encode() + b"\n")
        line = await reader.readline()
        if "result" not in json.loads(line):
            raise RuntimeError("line server answered without a result")
        samples.append(time.perf_counter() - t)
    writer.close()
    await writer.wait_closed()
    return samples


async def _aio_calls(path: str, count: int, stop: float) -> List[float]:
    async with await tcpgw.aio.connect(path) as client:
        srv = await client.createServer(("127.0.0.1", 0))
        conn = await client.createClient(("127.0.0.1", (await srv.sockName())["port"]), 5000)
        samples: List[float] = []
        for _ in range(count):
            if time.perf_counter() > stop:
                break
            t = time.perf_counter()
            if await conn.pending() != 0:
                raise RuntimeError("tcp.pending answered non-zero on an idle connection")
            samples.append(time.perf_counter() - t)
        await conn.close()
        await srv.close()
    return samples


def _one_call(run: Any, gw: Any, count: int, cap: float, tmpdir: str, aio: bool) -> None:
    stop = time.perf_counter() + cap
    if aio:
        samples = asyncio.run(_aio_calls(gw.path, count, stop))
    else:
        with tcpgw.connect(gw.path) as client:
            srv = client.createServer(("127.0.0.1", 0))
            conn = client.createClient(("127.0.0.1", srv.sockName()["port"]), 5000)
            samples = []
            for _ in range(count):
                if time.perf_counter() > stop:
                    break
                t = time.perf_counter()
                if conn.pending() != 0:
                    raise run.RPCFailure("tcp.pending answered non-zero on an idle connection")
                samples.append(time.perf_counter() - t)
            conn.close()
            srv.close()
    raw = _raw_sync_rtt(run, tmpdir, len(samples), cap, 1)
    g50, g99 = _median(samples) * 1e6, _p99(samples) * 1e6
    r50, r99 = _median(raw) * 1e6, _p99(raw) * 1e6
    if not aio:
        run.ROWS.append(run.Row(f"9c client one sync call (pending) x{len(samples)}", f"{g50:,.0f}/{g99:,.0f} us",
                                f"{r50:,.0f}/{r99:,.0f} us", f"{g50 / r50:.2f}",
                                "median/p99; baseline: raw json line round trip, sync socket"))
        run.progress(f"  9c: p50 {g50:.0f} us vs raw p50 {r50:.0f} us")
        return
    path, answerer = _line_server(run, tmpdir, "client-artt.sock", cap)
    araw = asyncio.run(_raw_aio_rtt(path, len(samples), 1))
    answerer.join()
    a50, a99 = _median(araw) * 1e6, _p99(araw) * 1e6
    run.ROWS.append(run.Row(f"9d client one aio call (pending) x{len(samples)}", f"{g50:,.0f}/{g99:,.0f} us",
                            f"{a50:,.0f}/{a99:,.0f} us", f"{g50 / a50:.2f}",
                            f"median/p99; baseline: raw json line round trip, asyncio streams "
                            f"(sync raw socket: {r50:.0f} us, {g50 / r50:.2f}x)"))
    run.progress(f"  9d: p50 {g50:.0f} us vs asyncio raw p50 {a50:.0f} us, sync raw {r50:.0f} us")


def main() -> int:
    """Rows 9 alone, against a gateway started here."""
    import argparse
    import shutil
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import run  # bench/run.py: its peers, gateway process and table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=run.default_binary())
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sz = run.QUICK if args.quick else run.FULL
    run.IO_TIMEOUT = 3.0 if args.quick else 5.0
    tmpdir = tempfile.mkdtemp(prefix="tcpgw-bench-client-")
    load0 = os.getloadavg()
    try:
        gw = run.GatewayProcess(args.bin, tmpdir)
        try:
            bench_client(run, gw, sz, tmpdir)
        finally:
            gw.stop()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    load1 = os.getloadavg()
    run.print_table([f"tcpgw client rows — {args.bin} — client {tcpgw.__file__} (base64 decoder: {_decoder()})",
                     f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end", ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
