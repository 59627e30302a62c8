"""The package's ``py.typed`` claim: ``mypy --strict`` accepts it, and what it exports is typed.

Runs mypy as a separate process (``sys.executable -m mypy``) with a throwaway cache, so a stale
cache cannot hide an error. Skipped only when mypy is not installed (``scripts/setup`` installs it).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "tcpgw"
SRC_DIR = PACKAGE_DIR.parent
MYPY_TIMEOUT = 300.0  # seconds; a cold run takes a few

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed in this interpreter (scripts/setup installs it)",
)


def run_mypy(tmp_path: Path, *targets: str) -> "subprocess.CompletedProcess[str]":
    """``python -m mypy --strict`` on ``targets``, finding ``tcpgw`` in this checkout's src dir."""
    command: List[str] = [
        sys.executable, "-m", "mypy", "--strict", "--no-color-output", "--no-error-summary",
        "--cache-dir", str(tmp_path / "mypy-cache"), *targets,
    ]
    env = dict(os.environ, MYPYPATH=str(SRC_DIR))
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT, check=False
    )


def test_package_passes_mypy_strict(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, str(PACKAGE_DIR))
    assert result.returncode == 0, f"mypy --strict failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == ""


# Uses the public API as a downstream project would; every line must type-check, and the
# assert_type lines pin what the decorated/generated methods return (a decorator that erased
# signatures, or a generated method returning Any, would fail them).
GOOD_USER = textwrap.dedent(
    """
    from typing import Any, Dict, List, Optional, Tuple

    from typing_extensions import assert_type

    import tcpgw
    import tcpgw.aio

    def sync_use(gw: tcpgw.Gateway) -> bytes:
        srv = gw.createServer(("127.0.0.1", 0))
        port: int = srv.sockName()["port"]
        conn = gw.createClient(tcpgw.sockaddr(tcpgw.INADDR_LOOPBACK, port), 1000)
        peer = srv.accept()
        assert_type(peer, tcpgw.Tcp)
        assert_type(conn.send(b"x", 0, 1), int)
        assert_type(peer.recvfrom(), Tuple[bytes, Optional[tcpgw.SockAddr]])
        assert_type(conn.isEOF(), bool)
        assert_type(gw.list(), List[Dict[str, Any]])
        assert_type(srv.accept(None, lambda tcp, remote: None), None)
        return peer.recv(1, 1000)

    async def async_use(gw: tcpgw.aio.Gateway) -> bytes:
        srv = await gw.createServer(("::1", 0, 0, 0))
        conn = await gw.createClient(await srv.sockName())
        peer = await srv.accept()
        assert_type(peer, tcpgw.aio.Tcp)
        assert_type(await conn.getSendBufferSize(), int)
        assert_type(await conn.sockFd(), int)
        return await peer.recv()
    """
)


def test_public_api_types_for_users(tmp_path: Path) -> None:
    user = tmp_path / "user_code.py"
    user.write_text(GOOD_USER, encoding="utf-8")
    result = run_mypy(tmp_path, str(user))
    assert result.returncode == 0, f"mypy --strict rejected correct use:\n{result.stdout}{result.stderr}"


def test_misuse_is_reported(tmp_path: Path) -> None:
    """The same run fails on wrong use, so the tests above can fail."""
    user = tmp_path / "bad_code.py"
    user.write_text(
        textwrap.dedent(
            """
            import tcpgw

            def bad(gw: tcpgw.Gateway) -> str:
                conn = gw.createClient(("127.0.0.1", "80"))
                return conn.recv()
            """
        ),
        encoding="utf-8",
    )
    result = run_mypy(tmp_path, str(user))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert any("bad_code.py:5:" in line and "createClient" in line for line in errors), result.stdout
    assert any("bad_code.py:6:" in line and "Incompatible return value" in line for line in errors), result.stdout
