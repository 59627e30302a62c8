"""Seeded random abuse of one connection: garbage lines, random JSON, random methods with
random params, random batches. Every line that is not a notification must get exactly one
answer in a well-formed JSON-RPC shape, the gateway must stay healthy (other connections and
handles unharmed), and it must not leak descriptors. Bounded: a fixed number of messages."""
from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import pytest

from conftest import Gateway, GatewayFactory, client_pair
from wire import Wire

SEED = 20261126
MESSAGES = 1500

METHODS = ["tcp.createServer", "tcp.createClient", "tcp.accept", "tcp.send", "tcp.recv", "tcp.close",
           "tcp.setTTL", "tcp.setLinger", "tcp.setKeepAlive", "tcp.mports", "tcp.shutdown", "tcp.getState",
           "tcp.pending", "tcp.list", "tcp.pause", "tcp.resume", "tcp.flyAway", "tcp.createByFd",
           "gateway.info", "rpc.discover", "tcp.nope", "tcp.onData", ""]


@pytest.fixture
def gw(start_gateway: GatewayFactory) -> Gateway:
    """A gateway whose policy allows every address ("*") but names no host, so no host name
    the fuzzer makes up ("x", "rw") is ever sent to a resolver (contract §8)."""
    path = os.path.join(start_gateway.tmpdir(), "policy.json")
    with open(path, "w") as f:
        json.dump({"connect": ["*"], "listen": ["*"]}, f)
    return start_gateway("--policy", path)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2, 65535, 65536, 2 ** 31, 2 ** 53, -(2 ** 63), 2 ** 64, 10 ** 30])
    if kind == 3:
        return rng.choice([0.5, -1.5, 1e300, 3.0])
    if kind == 4:
        return rng.choice(["", "x", "127.0.0.1", "::1", "rw", "base64", "\u0000", "é☃", "a" * 600, "\n"])
    if kind == 5:
        return rng.randrange(1, 6)  # plausible handle numbers
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["handle", "sockaddr", "addr", "port", "data", "timeout", "length", "how", "enable", "linger",
            "timeToLive", "mports", "async", "encoding", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_message(rng: random.Random, next_id: int) -> tuple[bytes, int]:
    """One line and how many answers it must get (0 or 1; a batch counts as 1)."""
    roll = rng.random()
    if roll < 0.1:
        junk = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b" ")
        return junk.strip() + b"\n" if junk.strip() else b"x\n", 1
    if roll < 0.2:
        return json.dumps(random_json(rng)).encode() + b"\n", 1
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": rng.choice(METHODS)}
    if rng.random() < 0.8:
        request["params"] = rng.choice([random_json(rng), {"handle": rng.randrange(1, 6)}, []])
    notification = rng.random() < 0.1
    if not notification:
        request["id"] = next_id
    if rng.random() < 0.1:
        batch = [request, {"jsonrpc": "2.0", "id": f"b{next_id}", "method": "gateway.info"}]
        return json.dumps(batch).encode() + b"\n", 1
    # Timeouts stay short so a random sync accept/recv cannot stall the run.
    if isinstance(request.get("params"), dict) and "timeout" in request["params"]:
        request["params"]["timeout"] = 50
    if request["method"] in ("tcp.accept", "tcp.recv", "tcp.createClient") and isinstance(request.get("params"), dict):
        request["params"]["timeout"] = 50
    return json.dumps(request).encode() + b"\n", 0 if notification else 1


def test_random_abuse_is_answered_and_harmless(gw: Gateway, wire: Wire) -> None:
    rng = random.Random(SEED)
    bystander = gw.connect()
    c, peer = client_pair(bystander, "127.0.0.1")
    time.sleep(0.1)
    fds_before = gw.fd_count()
    expected = 0
    got = 0

    def take_answer(timeout: float) -> None:
        nonlocal got
        obj = wire.next_reply(timeout=timeout).obj
        # Each answer is an object (or a batch array) with the JSON-RPC 2.0 shape.
        for item in obj if isinstance(obj, list) else [obj]:
            assert item.get("jsonrpc") == "2.0", item
            assert ("result" in item) != ("error" in item), item
            if "error" in item:
                assert isinstance(item["error"].get("code"), int), item
                assert isinstance(item["error"].get("message"), str), item
        got += 1

    for i in range(MESSAGES):
        line, answers = random_message(rng, 1000 + i)
        wire.send_raw(line)
        expected += answers
        # Keep a window of requests in flight; answers can be large (rpc.discover).
        while expected - got > 16:
            take_answer(10.0)
    while got < expected:
        take_answer(10.0)
    assert got == expected, f"{got} answers for {expected} answerable lines"
    # The connection, the bystander and its handle are all still fine.
    assert wire.call("gateway.info")["name"] == "tcpgw"
    assert bystander.call("tcp.send", {"handle": c["handle"], "data": "still here"}) == 10
    assert peer.recv(64) == b"still here"
    # Whatever the abuse created dies with its connection; no descriptor stays behind.
    wire.close()
    deadline = time.monotonic() + 5
    while (after := gw.fd_count()) > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after <= fds_before, f"{fds_before} descriptors before, {after} after"
    peer.close()
