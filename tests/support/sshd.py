"""A private, throwaway OpenSSH server on loopback for the ssh:// tests.

Everything lives in one directory: a generated host key, a generated client key (authorized),
a second client key (not authorized), the sshd_config, the client's ssh_config, known_hosts and
sshd's log. The machine's own ssh configuration is never read or written: sshd runs with
`-f OUR_CONFIG`, the client with `-F OUR_CONFIG` (which also keeps ssh from reading or creating
~/.ssh), and the host key is pinned in our own known_hosts.

From Python (tests/integration, clients/python/tests)::

    sys.path.insert(0, REPO_ROOT / "tests" / "support")
    import sshd
    server = sshd.SSHD(remote_path=[bin_dir]).start()   # sshd.skip_unless_available() first
    env = {**os.environ, "TCPGW_SSH": server.ssh_command()}
    url = server.url("/tmp/gw.sock")                     # ssh://USER@127.0.0.1:PORT/tmp/gw.sock
    ...
    server.stop()

From a shell (bats)::

    python3 tests/support/sshd.py start DIR [--path BINDIR] [--env NAME=VALUE]...
        prints two lines: the port, then the ssh command (the value for TCPGW_SSH)
    python3 tests/support/sshd.py stop DIR
    exit status 77 from `start`: sshd or ssh is not installed (skip)
"""
from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ports  # noqa: E402  (beside this file)

SSHD_BIN = os.environ.get("TCPGW_TEST_SSHD", "/usr/sbin/sshd")
READY_TIMEOUT = 10.0   # seconds for sshd to greet on its port
START_ATTEMPTS = 5     # a free port can be taken by someone else between the probe and sshd's bind
SKIP_STATUS = 77       # the CLI's "not available" status (automake's convention for "skipped")


def missing() -> Optional[str]:
    """Why the fixture cannot run here, or None."""
    if not (os.path.isfile(SSHD_BIN) and os.access(SSHD_BIN, os.X_OK)):
        return f"no sshd at {SSHD_BIN} (Debian: apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no {tool} in PATH (Debian: apt-get install openssh-client)"
    return None


def skip_unless_available() -> None:
    """pytest.skip when sshd or the ssh tools are absent."""
    why = missing()
    if why is not None:
        import pytest
        pytest.skip(why)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port(ipv6: bool) -> int:
    """A port free on 127.0.0.1 (and on ::1 when ipv6) right now, below the ephemeral range."""
    return ports.free_port(["127.0.0.1", *(["::1"] if ipv6 else [])])


def _keygen(path: str, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)


def _config_value(value: str) -> str:
    # ssh_config/sshd_config take double-quoted values; our values never hold a quote.
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot put {value!r} in an ssh config file")
    return f'"{value}"'


class SSHD:
    """One sshd on 127.0.0.1 (and ::1 when the machine has it) on a free port.

    remote_path: directories put in front of PATH for commands run over ssh (so `tcpgw` is
    found); remote_env: more variables for those commands (sshd's SetEnv); socket_forwarding:
    allow `ssh -L LOCAL:REMOTE_SOCKET` (Unix socket forwarding), off otherwise.
    """

    def __init__(self, workdir: Optional[str] = None, remote_path: Sequence[str] = (),
                 remote_env: Optional[dict[str, str]] = None, socket_forwarding: bool = False) -> None:
        self._own_dir = workdir is None
        # Short: sun_path is 108 bytes and tests put gateway sockets next to it.
        self.dir = workdir or tempfile.mkdtemp(prefix="tgw-sshd-", dir="/tmp")
        os.makedirs(self.dir, exist_ok=True)
        # The account sshd will log us in as: ours (not $USER, which sudo and su may leave).
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.host = "127.0.0.1"
        self.ipv6 = _ipv6_loopback()
        self.port = 0
        self.remote_path = list(remote_path)
        self.remote_env = dict(remote_env or {})
        self.socket_forwarding = socket_forwarding
        self.proc: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None
        self.host_key = os.path.join(self.dir, "host_ed25519")
        self.client_key = os.path.join(self.dir, "client_ed25519")
        self.other_key = os.path.join(self.dir, "other_ed25519")      # never authorized
        self.wrong_host_key = os.path.join(self.dir, "wrong_host_ed25519")  # for a pinning failure
        self.config = os.path.join(self.dir, "sshd_config")
        self.log_path = os.path.join(self.dir, "sshd.log")
        self.pid_path = os.path.join(self.dir, "sshd.pid")

    # ------------------------------------------------------------------ life
    def start(self) -> "SSHD":
        why = missing()
        if why is not None:
            raise RuntimeError(why)
        for path, comment in ((self.host_key, "tcpgw-test-host"), (self.client_key, "tcpgw-test-client"),
                              (self.other_key, "tcpgw-test-other"), (self.wrong_host_key, "tcpgw-test-wrong")):
            if not os.path.exists(path):
                _keygen(path, comment)
        shutil.copyfile(self.client_key + ".pub", os.path.join(self.dir, "authorized_keys"))
        # Privilege separation wants its empty directory (Debian creates it at boot, containers
        # often lack it). Only root's sshd uses it.
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_log = ""
        for _ in range(START_ATTEMPTS):
            self.port = _free_port(self.ipv6)
            self._write_configs()
            log = open(self.log_path, "ab")
            # -D: stay in the foreground (our child); -e: log to stderr (the log file).
            self.proc = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", self.config], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
            log.close()
            self.pid = self.proc.pid
            if self._wait_ready():
                with open(self.pid_path + ".ours", "w") as f:
                    f.write(f"{self.pid}\n")
                return self
            last_log = self.log()[-2000:]
            self._kill()
        raise RuntimeError(f"sshd did not start in {START_ATTEMPTS} attempts:\n{last_log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        # Our sshd's own word that it holds the port on every address: a banner alone could
        # come from someone else's server that took the port first.
        wanted = [f"Server listening on {h} port {self.port}." for h in ("127.0.0.1", *(["::1"] if self.ipv6 else []))]
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False  # it exited: port taken, bad config (the log says)
            log = self.log()
            if f"Bind to port {self.port} on" in log:
                return False  # one address was taken: sshd runs on the others; start again
            if not all(w in log for w in wanted):
                time.sleep(0.05)
                continue
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    s.settimeout(2.0)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        elif self.pid is not None:
            _stop_pid(self.pid)
        self.pid = None

    def stop(self) -> None:
        """Stops sshd (and the sessions it still runs); removes the directory if it made it."""
        self._kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "SSHD":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ configs
    def _write_configs(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            *(["ListenAddress ::1"] if self.ipv6 else []),
            f"HostKey {_config_value(self.host_key)}",
            f"PidFile {_config_value(self.pid_path)}",
            f"AuthorizedKeysFile {_config_value(os.path.join(self.dir, 'authorized_keys'))}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            # sshd also refuses socket forwarding while TCP forwarding is "no".
            f"AllowTcpForwarding {'local' if self.socket_forwarding else 'no'}",
            f"AllowStreamLocalForwarding {'local' if self.socket_forwarding else 'no'}",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 64:30:128",
            "LogLevel VERBOSE",
        ]
        env = dict(self.remote_env)
        if self.remote_path:
            env["PATH"] = ":".join([*self.remote_path, "/usr/local/bin:/usr/bin:/bin"])
        if env:
            lines.append("SetEnv " + " ".join(_config_value(f"{k}={v}") for k, v in env.items()))
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.host_key + ".pub") as f:
            host_pub = " ".join(f.read().split()[:2])
        with open(self.wrong_host_key + ".pub") as f:
            wrong_pub = " ".join(f.read().split()[:2])
        names = ",".join(f"[{h}]:{self.port}" for h in ("127.0.0.1", "localhost", *(["::1"] if self.ipv6 else [])))
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            f.write(f"{names} {host_pub}\n")
        with open(os.path.join(self.dir, "known_hosts_wrong"), "w") as f:
            f.write(f"{names} {wrong_pub}\n")
        self._client_config("ssh_config", self.client_key, "known_hosts")
        self._client_config("ssh_config_unauthorized", self.other_key, "known_hosts")
        self._client_config("ssh_config_wrong_host_key", self.client_key, "known_hosts_wrong")

    def _client_config(self, name: str, identity: str, known_hosts: str) -> None:
        lines = [
            "Host *",
            f"  User {self.user}",
            f"  IdentityFile {_config_value(identity)}",
            "  IdentitiesOnly yes",
            "  IdentityAgent none",
            f"  UserKnownHostsFile {_config_value(os.path.join(self.dir, known_hosts))}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  UpdateHostKeys no",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  BatchMode yes",
            "  ControlMaster no",
            "  ControlPath none",
            "  ConnectTimeout 10",
            "  LogLevel ERROR",
        ]
        with open(os.path.join(self.dir, name), "w") as f:
            f.write("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ what clients use
    def ssh_argv(self, variant: str = "ok") -> list[str]:
        """The ssh program with our client config: variant "ok", "unauthorized" (a key sshd does
        not accept) or "wrong-host-key" (known_hosts pins another host key)."""
        name = {"ok": "ssh_config", "unauthorized": "ssh_config_unauthorized",
                "wrong-host-key": "ssh_config_wrong_host_key"}[variant]
        return ["ssh", "-F", os.path.join(self.dir, name)]

    def ssh_command(self, variant: str = "ok") -> str:
        """ssh_argv as one shell-quoted string: the value for TCPGW_SSH."""
        return shlex.join(self.ssh_argv(variant))

    def url(self, socket_path: str = "", host: Optional[str] = None, user: bool = True) -> str:
        """ssh://USER@HOST:PORT[/socket]; host "[::1]" reaches the IPv6 listener."""
        who = f"{self.user}@" if user else ""
        return f"ssh://{who}{host or self.host}:{self.port}{socket_path}"


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------- CLI for bats
def _cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sshd.py", description="A private sshd on loopback for tests.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start sshd in DIR; print the port and the ssh command")
    start.add_argument("dir")
    start.add_argument("--path", action="append", default=[], help="a directory put in front of the remote PATH")
    start.add_argument("--env", action="append", default=[], help="NAME=VALUE for remote commands")
    stop = sub.add_parser("stop", help="stop the sshd started in DIR")
    stop.add_argument("dir")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.dir)
    if args.command == "start":
        why = missing()
        if why is not None:
            print(f"sshd.py: {why}", file=sys.stderr)
            return SKIP_STATUS
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                parser.error(f"--env wants NAME=VALUE, got {item!r}")
            env[name] = value
        server = SSHD(workdir=directory, remote_path=[os.path.abspath(p) for p in args.path], remote_env=env)
        try:
            server.start()
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            print(f"sshd.py: {e}", file=sys.stderr)
            return 1
        # sshd outlives this process (its own session); `stop` finds it by the pid file.
        print(server.port)
        print(server.ssh_command())
        return 0
    try:
        with open(os.path.join(directory, "sshd.pid.ours")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        print(f"sshd.py: no sshd started in {directory}", file=sys.stderr)
        return 1
    _stop_pid(pid)
    os.unlink(os.path.join(directory, "sshd.pid.ours"))
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
