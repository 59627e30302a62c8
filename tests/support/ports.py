"""Loopback TCP ports for servers the tests start themselves (redis-server, sshd, a port
that must refuse connections).

A port from ``bind(0)`` comes from the kernel's ephemeral range, which every outgoing
connection of every test also draws its local port from: between the probe and the server's
own bind, one of them can take it. These ports come from below that range (20000..32767, or
below ``ip_local_port_range``'s start if that is lower), where only another test's explicit
choice can clash; the servers' callers still retry a start that fails to bind.

From Python: ``ports.free_port()`` / ``ports.free_port_run(addr, count)``.
From a shell: ``python3 tests/support/ports.py`` prints one port.
"""
from __future__ import annotations

import random
import socket
from typing import Sequence

LOW = 20000
HIGH = 32768  # exclusive; Linux's default ephemeral range starts here


def _range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return LOW, HIGH
    # A range that starts low leaves no port outside it: then overlap it (the retries cover that).
    return LOW, max(LOW + 1000, min(HIGH, first))


def _bindable(family: int, addr: str, port: int, reuse: bool) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_port(addrs: Sequence[str] = ("127.0.0.1",), reuse: bool = False) -> int:
    """A port nothing is bound to on any of ``addrs`` right now (bounded search).

    ``reuse``: probe as a server that sets SO_REUSEADDR binds (TIME_WAIT leftovers then do not
    count); without it the probe is the stricter one.
    """
    low, high = _range()
    for _ in range(200):
        port = random.randrange(low, high)
        if all(_bindable(socket.AF_INET6 if ":" in a else socket.AF_INET, a, port, reuse) for a in addrs):
            return port
    raise RuntimeError(f"no free port on {', '.join(addrs)} in {low}..{high - 1} after 200 tries")


def free_port_run(addr: str, count: int) -> int:
    """A port P such that P..P+count-1 can all be listened on right now on ``addr`` (bounded
    search), checked with SO_REUSEADDR as the gateway binds."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    low, high = _range()
    for _ in range(50):
        base = random.randrange(low, high - count)
        held = []
        try:
            for port in range(base, base + count):
                s = socket.socket(family, socket.SOCK_STREAM)
                held.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                s.listen(1)
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no run of {count} free ports on {addr} found")


if __name__ == "__main__":
    print(free_port())
