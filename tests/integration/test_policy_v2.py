"""Contract §8, a policy that confines: allow and deny lists (deny wins, through mapped,
unspecified and dual-stack addresses), accept rules with real peers, profiles by uid and gid,
the audit log, SIGHUP reloads and start errors."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import time
from typing import Any, Callable

import pytest

from conftest import Gateway, GatewayFactory, closed_port, port_of, py_listener
from test_hardening import _admitted, _refusal
from wire import DENIED, TIMED_OUT, RPCError, Wire, result_of


def rpc_error(w: Wire, method: str, params: Any = None, **kw: Any) -> RPCError:
    with pytest.raises(RPCError) as e:
        w.call(method, params, **kw)
    return e.value


def write_policy(path: str, policy: Any) -> None:
    with open(path, "w") as f:
        f.write(policy if isinstance(policy, str) else json.dumps(policy))


def with_policy(gwf: GatewayFactory, policy: Any, *args: str) -> tuple[Gateway, str]:
    path = os.path.join(gwf.tmpdir(), "policy.json")
    write_policy(path, policy)
    return gwf("--policy", path, *args), path


def wait_until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def nothing_connects(lst: socket.socket, wait: float = 0.3) -> None:
    lst.settimeout(wait)
    with pytest.raises((socket.timeout, TimeoutError)):
        lst.accept()


def peer_from(source: str, port: int, dest: str = "127.0.0.1") -> socket.socket:
    """A Python client bound to the loopback address `source` before connecting."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.bind((source, 0))
    s.connect((dest, port))
    return s


def refused_from(source: str, port: int) -> int:
    """Connects from `source` and asserts the gateway resets (or ends) the connection; the
    reset may come so fast that connect itself reports it. Answers the local port used."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.bind((source, 0))
    local_port = s.getsockname()[1]
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionResetError:
        s.close()
        return local_port
    try:
        assert sees_reset(s), "a refused peer must see a reset or EOF"
    finally:
        s.close()
    return local_port


def sees_reset(s: socket.socket) -> bool:
    """True when the gateway reset (or at least ended) this connection."""
    s.settimeout(5.0)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


# ---------------------------------------------------------------------- deny wins
def test_deny_wins_over_allow_for_connect(start_gateway: GatewayFactory) -> None:
    denied_lst = py_listener("127.0.0.1")
    allowed_lst = py_listener("127.0.0.2")
    port = port_of(denied_lst)
    gw, _ = with_policy(start_gateway, {"connect": {"allow": ["127.0.0.0/8", "::/0"], "deny": ["127.0.0.1"]}})
    w = gw.connect()
    try:
        for addr, domain in (("127.0.0.1", 2), ("::ffff:127.0.0.1", 10), ("0.0.0.0", 2), ("::ffff:0.0.0.0", 10)):
            e = rpc_error(w, "tcp.createClient", {"sockaddr": {"domain": domain, "addr": addr, "port": port}})
            assert e.code == DENIED, (addr, e)
            assert "'connect' deny rule '127.0.0.1'" in e.message, e.message
            e = rpc_error(w, "tcp.createClient",
                          {"sockaddr": {"domain": domain, "addr": addr, "port": port}, "async": True})
            assert e.code == DENIED, (addr, e)
        nothing_connects(denied_lst)  # no attempt was made for any spelling
        c = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.2", "port": port_of(allowed_lst)}})
        assert c["remote"]["addr"] == "127.0.0.2"
        allowed_lst.accept()[0].close()
        # A connected socket adopted by createByFd is judged by its peer, with the same lists.
        mine = socket.create_connection(("127.0.0.1", port), timeout=5)
        denied_lst.settimeout(5)
        far, _ = denied_lst.accept()
        e = rpc_error(w, "tcp.createByFd", {}, fds=[mine.fileno()])
        assert e.code == DENIED and "'connect' deny rule" in e.message, e
        assert [h["handle"] for h in w.call("tcp.list")] == [c["handle"]]  # nothing adopted
        mine.close()
        far.close()
    finally:
        denied_lst.close()
        allowed_lst.close()


def test_deny_wins_over_allow_for_listen(start_gateway: GatewayFactory) -> None:
    base = closed_port("127.0.0.1")
    if base >= 65535:
        base = 40000
    gw, _ = with_policy(start_gateway, {"listen": {"allow": ["*"],
                                                   "deny": ["0.0.0.0", f"127.0.0.1:{base + 1}", "127.0.0.5"]}})
    w = gw.connect()
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "0.0.0.0", "port": 0}})
    assert e.code == DENIED and "'listen' deny rule '0.0.0.0'" in e.message, e
    # A dual-stack :: listener also listens on 0.0.0.0: denied, by flag and by the system default.
    for params in ({"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": False},
                   {"sockaddr": {"addr": "::", "port": 0}}):
        e = rpc_error(w, "tcp.createServer", params)
        assert e.code == DENIED and "also listens on IPv4 0.0.0.0" in e.message, (params, e)
    v6 = w.call("tcp.createServer", {"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": True})
    e = rpc_error(w, "tcp.setIPv6Only", {"handle": v6["handle"], "enable": False})
    assert e.code == DENIED and "0.0.0.0" in e.message, e
    assert w.call("tcp.getState", {"handle": v6["handle"]})["name"] == "LISTEN"  # untouched
    # mports: the extra port base+1 is denied, so nothing is added.
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": base}})
    e = rpc_error(w, "tcp.mports", {"handle": srv["handle"], "mports": 2})
    assert e.code == DENIED and f"127.0.0.1:{base + 1}" in e.message, e
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", base + 2), timeout=2).close()
    # A listening socket adopted by createByFd: its local address is judged.
    mine = socket.socket()
    mine.bind(("127.0.0.5", 0))
    mine.listen(1)
    e = rpc_error(w, "tcp.createByFd", {}, fds=[mine.fileno()])
    assert e.code == DENIED and "'listen' deny rule '127.0.0.5'" in e.message, e
    mine.close()
    assert w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.6", "port": 0}})["handle"] > 0


def test_empty_allow_allows_nothing(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    gw, _ = with_policy(start_gateway, {"connect": {"allow": []}, "listen": []})
    w = gw.connect()
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port_of(lst)}})
    assert e.code == DENIED and "no allow rule in the policy's 'connect' list" in e.message, e
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert e.code == DENIED and "no allow rule in the policy's 'listen' list" in e.message, e
    nothing_connects(lst)
    lst.close()


# ---------------------------------------------------------------------- accept rules
ACCEPT_POLICY = {"accept": {"allow": ["127.0.0.0/8"], "deny": ["127.0.0.3"]}}


def test_accept_rules_reset_denied_peers_and_announce_allowed(start_gateway: GatewayFactory) -> None:
    gw, _ = with_policy(start_gateway, ACCEPT_POLICY)
    w = gw.connect()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    port = srv["local"]["port"]
    for _ in range(3):
        refused_from("127.0.0.3", port)
    allowed = peer_from("127.0.0.2", port)
    ev = w.wait_event("tcp.onAccept", srv["handle"])
    assert ev.params["remote"]["addr"] == "127.0.0.2"
    assert ev.params["remote"]["port"] == allowed.getsockname()[1]
    w.drain(0.2)
    assert w.events_for(srv["handle"], "tcp.onAccept") == []  # the denied ones never were announced
    handles = [h for h in w.call("tcp.list") if h["kind"] == "connection"]
    assert [h["remote"]["addr"] for h in handles] == ["127.0.0.2"]
    allowed.close()


def test_sync_accept_skips_denied_peers(start_gateway: GatewayFactory) -> None:
    gw, _ = with_policy(start_gateway, ACCEPT_POLICY)
    w = gw.connect()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    port = srv["local"]["port"]
    # Queued before the accept: skipped at once, and the accept times out with nothing else.
    early = peer_from("127.0.0.3", port)  # the gateway does not accept yet: it waits queued
    e = rpc_error(w, "tcp.accept", {"handle": srv["handle"], "timeout": 300})
    assert e.code == TIMED_OUT, e
    assert sees_reset(early)
    early.close()
    # Arriving while the accept waits: the denied one is reset, the allowed one answers it.
    rid = w.request("tcp.accept", {"handle": srv["handle"], "timeout": 5000})
    refused_from("127.0.0.3", port)
    allowed = peer_from("127.0.0.2", port)
    r = result_of(w.reply(rid))
    assert r["remote"]["addr"] == "127.0.0.2" and r["remote"]["port"] == allowed.getsockname()[1], r
    assert w.call("tcp.send", {"handle": r["handle"], "data": "hi"}) == 2
    allowed.settimeout(5)
    assert allowed.recv(2) == b"hi"
    allowed.close()


# ---------------------------------------------------------------------- profiles
def other_uid_client(path: str, calls: list[tuple[str, Any]], uid: int = 65534, gid: int = 65534) -> list[Any]:
    """Runs `calls` over a fresh connection from a forked child with another uid and gid;
    each answer's result or error object, in order."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            out, buf = [], b""
            for i, (method, params) in enumerate(calls):
                s.sendall(json.dumps({"jsonrpc": "2.0", "id": i + 1, "method": method, "params": params}).encode()
                          + b"\n")
                while True:
                    while b"\n" not in buf:
                        chunk = s.recv(65536)
                        if not chunk:
                            raise RuntimeError("gateway closed the connection")
                        buf += chunk
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("id") == i + 1:
                        out.append(msg.get("result", msg.get("error")))
                        break
            os.write(write_end, json.dumps(out).encode())
            code = 0
        except BaseException as e:  # reported to the parent, which fails the test
            os.write(write_end, json.dumps({"child error": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the other-uid client hung")
        time.sleep(0.02)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    result = json.loads(data)
    assert os.WEXITSTATUS(status) == 0 and isinstance(result, list), result
    return result


def test_profiles_pick_by_uid_and_gid(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    port = port_of(lst)
    assert os.getuid() == 0, "this test runs as root (it makes a client with another uid)"
    policy = {
        "connect": {"deny": ["127.0.0.1"]}, "maxHandlesPerConnection": 9,
        "profiles": [
            {"uid": 0, "connect": ["127.0.0.1"], "maxHandlesPerConnection": 5},
            {"gid": 65534, "maxHandlesPerConnection": 2},
        ],
    }
    gw, _ = with_policy(start_gateway, policy)
    # The other uid must reach the socket: its directory and file are root's, 0700/0600.
    os.chmod(os.path.dirname(gw.path), 0o711)
    os.chmod(gw.path, 0o666)
    w = gw.connect()
    assert w.call("gateway.info")["limits"]["maxHandlesPerConnection"] == 5
    c = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}})  # uid 0's profile
    assert c["handle"] > 0
    lst.accept()[0].close()
    info, denied = other_uid_client(gw.path, [
        ("gateway.info", {}),
        ("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}}),
    ])
    assert info["limits"]["maxHandlesPerConnection"] == 2, info  # the gid profile
    assert denied["code"] == DENIED and "'connect' deny rule '127.0.0.1'" in denied["message"], denied
    # No profile matches uid 4242 / gid 4242: the top level.
    info, denied = other_uid_client(gw.path, [
        ("gateway.info", {}),
        ("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}}),
    ], uid=4242, gid=4242)
    assert info["limits"]["maxHandlesPerConnection"] == 9, info
    assert denied["code"] == DENIED, denied
    nothing_connects(lst)
    lst.close()


# ---------------------------------------------------------------------- audit
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def audit_lines(path: str) -> list[dict]:
    with open(path) as f:
        text = f.read()
    assert text == "" or text.endswith("\n"), text[-200:]
    return [json.loads(line) for line in text.splitlines()]


def check_line(line: dict, action: str, decision: str, rule: Any, addr: Any, port: Any, handle: Any) -> None:
    assert set(line) == {"time", "client", "action", "target", "decision", "rule", "handle"}, line
    assert TIME_RE.match(line["time"]), line
    assert line["client"] == {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}, line
    assert (line["action"], line["decision"], line["rule"], line["handle"]) == (action, decision, rule, handle), line
    assert line["target"]["addr"] == addr and line["target"]["port"] == port, line


def test_audit_lines_are_written_before_the_answer(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    port = port_of(lst)
    d = start_gateway.tmpdir()
    audit = os.path.join(d, "audit.jsonl")
    with open(audit, "w") as f:
        f.write('{"earlier": "line"}\n')  # appended to, never truncated
    policy = {"connect": {"allow": ["127.0.0.0/8"], "deny": [f"127.0.0.1:{port}"]},
              "accept": {"deny": ["127.0.0.3"]}, "allowFlyAway": False}
    gw, _ = with_policy(start_gateway, policy, "--audit", audit)
    w = gw.connect()
    assert audit_lines(audit) == [{"earlier": "line"}]

    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}})
    assert e.code == DENIED
    lines = audit_lines(audit)[1:]  # read as soon as the answer came
    assert len(lines) == 1
    check_line(lines[0], "connect", "deny", f"127.0.0.1:{port}", "127.0.0.1", port, None)

    other = py_listener("127.0.0.2")
    c = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.2", "port": port_of(other)}, "async": True})
    check_line(audit_lines(audit)[-1], "connect", "allow", "127.0.0.0/8", "127.0.0.2", port_of(other), c["handle"])
    w.wait_event("tcp.onConnect", c["handle"])
    other.close()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    check_line(audit_lines(audit)[-1], "listen", "allow", None, "127.0.0.1", 0, srv["handle"])  # the new handle

    e = rpc_error(w, "tcp.flyAway", {"handle": srv["handle"]})
    assert e.code == DENIED and "allowFlyAway" in e.message
    check_line(audit_lines(audit)[-1], "flyAway", "deny", "allowFlyAway", "127.0.0.1",
               srv["local"]["port"], srv["handle"])

    assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    bad_port = refused_from("127.0.0.3", srv["local"]["port"])
    wait_until(lambda: audit_lines(audit)[-1]["action"] == "accept", "the accept line")
    check_line(audit_lines(audit)[-1], "accept", "deny", "127.0.0.3", "127.0.0.3", bad_port, srv["handle"])
    good = peer_from("127.0.0.2", srv["local"]["port"])
    w.wait_event("tcp.onAccept", srv["handle"])
    check_line(audit_lines(audit)[-1], "accept", "allow", None, "127.0.0.2", good.getsockname()[1], srv["handle"])
    good.close()
    lst.close()


def test_audit_to_stderr_and_a_failing_audit_file(start_gateway: GatewayFactory) -> None:
    gw = start_gateway("--audit", "-")
    w = gw.connect()
    w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    wait_until(lambda: '"action":"listen"' in gw.log(), "an audit line on stderr")
    line = next(json.loads(x) for x in gw.log().splitlines() if '"action":"listen"' in x)
    assert line["decision"] == "allow" and line["rule"] is None

    # /dev/full takes the open and refuses every write: logged once, the gateway serves on.
    full = start_gateway("--audit", "/dev/full")
    w = full.connect()
    for _ in range(3):
        w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    assert full.log().count("cannot write to the audit log") == 1, full.log()
    assert w.call("tcp.list") and full.proc.poll() is None


def test_audit_file_that_cannot_be_opened_is_a_start_error(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    gw = start_gateway("--audit", os.path.join(d, "missing", "audit.jsonl"), ready=False)
    rc = gw.proc.wait(10)
    gw.returncode = rc
    assert rc != 0 and "audit" in gw.log(), gw.log()


# ---------------------------------------------------------------------- SIGHUP
def test_sighup_reload_good_then_bad_file(start_gateway: GatewayFactory) -> None:
    lst = py_listener("127.0.0.1")
    port = port_of(lst)
    gw, path = with_policy(start_gateway, {"connect": {"deny": ["10.0.0.0/8"]}})
    w = gw.connect()
    before = w.call("gateway.info")["policy"]
    with open(path, "rb") as f:
        assert before["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert before["source"] == path and TIME_RE.match(before["loadedAt"]), before
    kept = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}})
    peer, _ = lst.accept()

    write_policy(path, {"connect": {"deny": ["127.0.0.1"]}})
    time.sleep(0.01)  # loadedAt has millisecond resolution
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: w.call("gateway.info")["policy"]["sha256"] != before["sha256"], "the reload")
    after = w.call("gateway.info")["policy"]
    with open(path, "rb") as f:
        assert after["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert after["loadedAt"] > before["loadedAt"], (before, after)
    e = rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}})
    assert e.code == DENIED and "deny rule '127.0.0.1'" in e.message
    assert w.call("tcp.send", {"handle": kept["handle"], "data": "still"}) == 5  # existing handles stay
    assert peer.recv(5) == b"still"

    for bad in ('{"connect": {"deny": ["127.0.0.1"]}, "conect": []}', "{not json"):
        write_policy(path, bad)
        count = gw.log().count("policy reload failed")
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gw.log().count("policy reload failed") > count, "the failed reload's log line")
        assert w.call("gateway.info")["policy"] == after  # the old policy is kept
        assert rpc_error(w, "tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": port}}).code == DENIED
    assert "unknown key 'conect'" in gw.log(), gw.log()
    peer.close()
    lst.close()


def test_sighup_without_a_policy_file(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    w = gw.connect()
    info = w.call("gateway.info")["policy"]
    assert info["source"] is None and info["sha256"] is None and TIME_RE.match(info["loadedAt"])
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "nothing to reload" in gw.log(), "the log line")
    assert w.call("gateway.info")["policy"] == info and gw.proc.poll() is None


# ---------------------------------------------------------------------- start errors
@pytest.mark.parametrize("policy,fragment", [
    ({"connect": {"allow": [], "except": []}}, "'connect': unknown key 'except'"),
    ({"listen": {"deny": ["127.0.0.1/33"]}}, "'listen.deny': rule '127.0.0.1/33'"),
    ({"accept": {"deny": "127.0.0.1"}}, "'accept.deny' must be an array of rules"),
    ({"accept": True}, "'accept' must be an array of rules or an object"),
    ({"profiles": [{"connect": []}]}, "'profiles[0]' needs a 'uid' or a 'gid'"),
    ({"profiles": [{"uid": 1, "listen": {"deny": [7]}}]}, "'profiles[0]': 'listen.deny' rules must be strings"),
], ids=["unknown-list-key", "bad-deny-rule", "wrong-type-deny", "wrong-type-list", "profile-no-uid",
        "profile-bad-rule"])
def test_bad_policy_is_a_start_error(start_gateway: GatewayFactory, policy: Any, fragment: str) -> None:
    path = os.path.join(start_gateway.tmpdir(), "policy.json")
    write_policy(path, policy)
    gw = start_gateway("--policy", path, ready=False)
    try:
        rc = gw.proc.wait(10)
    finally:
        gw.kill()
    gw.returncode = rc
    assert rc == 2, gw.log()
    assert fragment in gw.log() and path in gw.log(), gw.log()
    assert not os.path.exists(gw.path)


def test_wildcard_listen_under_a_deny_of_one_address(start_gateway: GatewayFactory) -> None:
    gw, _ = with_policy(start_gateway, {"listen": {"deny": ["127.0.0.1"]}})
    w = gw.connect()
    # 0.0.0.0 would serve 127.0.0.1 too; so would a dual-stack ::.
    for params in ({"sockaddr": {"addr": "0.0.0.0", "port": 0}},
                   {"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": False},
                   {"sockaddr": {"domain": 10, "addr": "::ffff:0.0.0.0", "port": 0}}):
        e = rpc_error(w, "tcp.createServer", params)
        assert e.code == DENIED and "'listen' deny rule '127.0.0.1'" in e.message, (params, e)
    v6 = w.call("tcp.createServer", {"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": True})
    assert v6["handle"] > 0  # serves no IPv4 address
    assert w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.2", "port": 0}})["handle"] > 0
    assert [h["handle"] for h in w.call("tcp.list")] == [v6["handle"], v6["handle"] + 1]


def test_audit_of_create_by_fd_is_one_line_per_call(start_gateway: GatewayFactory) -> None:
    d = start_gateway.tmpdir()
    audit = os.path.join(d, "audit.jsonl")
    gw, path = with_policy(start_gateway, {"listen": {"deny": ["127.0.0.5"]}}, "--audit", audit)
    w = gw.connect()
    for addr, decision, rule in (("127.0.0.5", "deny", "127.0.0.5"), ("127.0.0.6", "allow", None)):
        mine = socket.socket()
        mine.bind((addr, 0))
        mine.listen(1)
        count = len(audit_lines(audit))
        handle = None
        if decision == "deny":
            assert rpc_error(w, "tcp.createByFd", {}, fds=[mine.fileno()]).code == DENIED
        else:
            r = w.call("tcp.createByFd", {}, fds=[mine.fileno()])
            assert r["kind"] == "server"
            handle = r["handle"]
        lines = audit_lines(audit)[count:]
        assert len(lines) == 1, lines
        check_line(lines[0], "createByFd", decision, rule, addr, mine.getsockname()[1], handle)
        mine.close()
    # The switch refusing is the call's one line too.
    write_policy(path, {"allowCreateByFd": False})
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "policy reloaded" in gw.log(), "the reload")
    mine = socket.socket()
    mine.bind(("127.0.0.7", 0))
    mine.listen(1)
    count = len(audit_lines(audit))
    e = rpc_error(w, "tcp.createByFd", {}, fds=[mine.fileno()])
    assert e.code == DENIED and "allowCreateByFd" in e.message, e
    lines = audit_lines(audit)[count:]
    assert len(lines) == 1, lines
    check_line(lines[0], "createByFd", "deny", "allowCreateByFd", "127.0.0.7", mine.getsockname()[1], None)
    mine.close()


def test_accept_deny_sees_through_mapped_peers_of_a_dual_stack_server(start_gateway: GatewayFactory) -> None:
    gw, _ = with_policy(start_gateway, ACCEPT_POLICY)
    w = gw.connect()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "::", "port": 0}, "ipv6Only": False})
    assert w.call("tcp.accept", {"handle": srv["handle"], "async": True}) is True
    port = srv["local"]["port"]
    refused_from("127.0.0.3", port)  # arrives as ::ffff:127.0.0.3, judged as 127.0.0.3
    allowed = peer_from("127.0.0.2", port)
    ev = w.wait_event("tcp.onAccept", srv["handle"])
    assert ev.params["remote"]["addr"] == "::ffff:127.0.0.2", ev.params
    w.drain(0.2)
    assert w.events_for(srv["handle"], "tcp.onAccept") == []
    # ::1 is outside the allow list (IPv4 loopback only): refused too.
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(("::1", port))
        assert sees_reset(s)
    except ConnectionResetError:
        pass
    finally:
        s.close()
    w.drain(0.2)
    assert w.events_for(srv["handle"], "tcp.onAccept") == []
    allowed.close()


def test_profile_sets_the_per_uid_connection_limit(start_gateway: GatewayFactory) -> None:
    gw, _ = with_policy(start_gateway, {"maxConnectionsPerUid": 1,
                                        "profiles": [{"uid": os.getuid(), "maxConnectionsPerUid": 3}]})
    wires = [_admitted(gw, n) for n in (1, 2, 3)]  # the profile's 3, not the top level's 1
    for w in wires:
        assert w.call("gateway.info")["limits"]["maxConnectionsPerUid"] == 3
    assert _refusal(gw.path)["error"]["code"] == -32004


def test_audit_of_bind_to_device(start_gateway: GatewayFactory) -> None:
    audit = os.path.join(start_gateway.tmpdir(), "audit.jsonl")
    gw, _ = with_policy(start_gateway, {"allowBindToDevice": False}, "--audit", audit)
    w = gw.connect()
    srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
    e = rpc_error(w, "tcp.bindToDevice", {"handle": srv["handle"], "ifname": "lo"})
    assert e.code == DENIED and "allowBindToDevice" in e.message, e
    line = audit_lines(audit)[-1]
    check_line(line, "bindToDevice", "deny", "allowBindToDevice", "127.0.0.1", srv["local"]["port"], srv["handle"])
    assert line["target"]["device"] == "lo", line
    count = len(audit_lines(audit))
    assert w.call("tcp.bindToDevice", {"handle": srv["handle"]}) is True  # unbinding needs no permission
    assert len(audit_lines(audit)) == count
    e = rpc_error(w, "tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}, "dev": "lo"})
    assert e.code == DENIED and "allowBindToDevice" in e.message, e
    listen, device = audit_lines(audit)[-2:]
    check_line(listen, "listen", "allow", None, "127.0.0.1", 0, None)  # the creation was refused after it
    check_line(device, "bindToDevice", "deny", "allowBindToDevice", "127.0.0.1", 0, None)
