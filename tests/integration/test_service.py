"""Running as a service (contract §9): --socket-mode, socket activation (LISTEN_PID /
LISTEN_FDS, descriptor 3), sd_notify readiness / reload / stopping / watchdog datagrams, and
the shipped systemd units.

The service manager is played by the test: it makes the listening socket and hands it over
as descriptor 3, and it binds the datagram socket NOTIFY_SOCKET names. `sh -c 'X=$$ exec …'`
gives the gateway an environment naming its own pid (exec keeps the shell's pid).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from typing import Callable, Iterator, Optional

import pytest

from conftest import REPO_ROOT, can_connect_unix, require_binary, short_tmpdir
from wire import Wire

START_TIMEOUT = 10.0
UNITS_DIR = os.path.join(REPO_ROOT, "contrib", "systemd")


# ---------------------------------------------------------------------- helpers
class Proc:
    """One `tcpgw serve` started the way a service manager starts it."""

    def __init__(self, workdir: str, args: list[str], env: dict[str, str],
                 fd3: Optional[int] = None, own_pid_vars: tuple[str, ...] = (),
                 umask: int = -1, prefix: tuple[str, ...] = (),
                 preexec: Optional[Callable[[], None]] = None) -> None:
        self.log_path = os.path.join(workdir, f"gw-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")
        cmd = [*prefix, require_binary(), "serve", *args]
        if own_pid_vars:
            assigns = " ".join(f"{name}=$$" for name in own_pid_vars)
            cmd = ["/bin/sh", "-c", f'{assigns} exec "$0" "$@"', *cmd]
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}

        def hand_over() -> None:
            # In the child, before exec: the socket becomes descriptor 3, inheritable.
            if fd3 is not None:
                os.dup2(fd3, 3)
            else:
                try:
                    os.close(3)
                except OSError:
                    pass
            if preexec is not None:
                preexec()

        # close_fds=False: Popen would otherwise close descriptor 3 after hand_over ran. The
        # test's other descriptors are close-on-exec (Python's default), so none leak.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=full_env, close_fds=False,
                                     preexec_fn=hand_over, umask=umask)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"tcpgw did not exit within {timeout}s\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit()

    def wait_connectable(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tcpgw exited {self.proc.returncode} before serving\n{self.log()}")
            if os.path.exists(path) and can_connect_unix(path):
                return
            time.sleep(0.02)
        pytest.fail(f"tcpgw did not serve {path} within {START_TIMEOUT}s\n{self.log()}")

    def wait_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"no log line matching {pattern!r}\n{self.log()}")


class Launcher:
    """Starts Procs for one test; whatever is still running at teardown is killed."""

    def __init__(self) -> None:
        self.dir = short_tmpdir()
        self.procs: list[Proc] = []

    def __call__(self, *args: str, env: Optional[dict[str, str]] = None, fd3: Optional[int] = None,
                 own_pid_vars: tuple[str, ...] = (), umask: int = -1, prefix: tuple[str, ...] = (),
                 preexec: Optional[Callable[[], None]] = None) -> Proc:
        p = Proc(self.dir, list(args), env or {}, fd3, own_pid_vars, umask, prefix, preexec)
        self.procs.append(p)
        return p

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def teardown(self) -> None:
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def launch() -> Iterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.teardown()


def unix_listener(path: str, mode: int = 0o600) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, mode)
    s.listen(16)
    return s


class Notifications:
    """The service manager's end of NOTIFY_SOCKET: a bound datagram socket."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address  # what NOTIFY_SOCKET says
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.seen: list[tuple[float, dict[str, str]]] = []

    def next(self, timeout: float = START_TIMEOUT) -> Optional[dict[str, str]]:
        """The next datagram as KEY=VALUE pairs, or None when none comes in time."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float = START_TIMEOUT,
                 skip: Callable[[dict[str, str]], bool] = lambda f: "WATCHDOG" in f) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self.next(left)
            if fields is None:
                break
            if key in fields:
                return fields
            assert skip(fields), f"unexpected notification {fields} while waiting for {key}"
        pytest.fail(f"no {key} notification within {timeout}s; seen: {self.seen}")

    def collect(self, duration: float) -> list[dict[str, str]]:
        out = []
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            fields = self.next(left)
            if fields is None:
                break
            out.append(fields)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest) -> Iterator[Notifications]:
    if request.param == "path":
        d = tempfile.mkdtemp(prefix="tgw-n-", dir="/tmp")
        path = os.path.join(d, "notify")
        n = Notifications(path, path)
    else:
        name = f"tcpgw-test-notify-{uuid.uuid4().hex}"
        d = ""
        n = Notifications("@" + name, "\0" + name)
    yield n
    n.close()
    if d:
        shutil.rmtree(d, ignore_errors=True)


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


# ---------------------------------------------------------------------- --socket-mode
@pytest.mark.parametrize("mode,umask", [("0660", 0o022), ("0660", 0o077), ("600", 0o022), ("0666", 0o002)])
def test_socket_mode_sets_the_file_mode_whatever_the_umask(launch: Launcher, mode: str, umask: int) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, "--socket-mode", mode, umask=umask)
    gw.wait_connectable(path)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == int(mode, 8), oct(stat.S_IMODE(st.st_mode))
    assert gw.stop() == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("bad", ["0800", "abc", "1777", "4755", "", "-1", "0o660", "66 0", "07777777777777"])
def test_bad_socket_mode_is_a_clear_error_and_creates_nothing(launch: Launcher, bad: str) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, "--socket-mode", bad)
    rc = gw.wait_exit()
    assert rc != 0
    log = gw.log()
    assert "--socket-mode" in log, log
    assert ("octal" in log or "0777" in log or "empty" in log), log
    assert not os.path.exists(path)


# ---------------------------------------------------------------------- socket activation
def test_socket_activation_serves_descriptor_3_and_leaves_its_file(launch: Launcher) -> None:
    path = launch.path("activated.sock")
    listener = unix_listener(path)
    inode = os.lstat(path).st_ino
    gw = launch(env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "tcpgw.socket"}, fd3=listener.fileno(),
                own_pid_vars=("LISTEN_PID",))
    m = gw.wait_log(r"listening on (\S+)")
    assert m.group(1) == path
    listener.close()  # from now on only the gateway holds the socket
    w = Wire(path)
    try:
        info = w.call("gateway.info")
        assert info["socket"] == path
        # A real client session on the inherited socket: a TCP server handle works.
        srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
        assert isinstance(srv, dict) or isinstance(srv, int)
    finally:
        w.close()
    # The descriptor is close-on-exec and non-blocking now, and it is still number 3.
    fdinfo = open(f"/proc/{gw.pid}/fdinfo/3").read()
    found = re.search(r"flags:\s+(\d+)", fdinfo)
    assert found, fdinfo
    flags = int(found.group(1), 8)
    assert flags & os.O_NONBLOCK, fdinfo
    assert flags & 0o2000000, fdinfo  # O_CLOEXEC
    assert gw.stop() == 0
    # Never unlinked, not even at exit: the file is the manager's.
    assert os.path.exists(path)
    assert os.lstat(path).st_ino == inode


def test_socket_activation_with_its_own_path_never_touches_the_socket_option_path(launch: Launcher) -> None:
    path = launch.path("activated.sock")
    other = launch.path("other.sock")
    listener = unix_listener(path)
    gw = launch("--socket", other, env={"LISTEN_FDS": "1"}, fd3=listener.fileno(), own_pid_vars=("LISTEN_PID",))
    gw.wait_log(r"listening on ")
    listener.close()
    w = Wire(path)
    try:
        assert w.call("gateway.info")["socket"] == path
    finally:
        w.close()
    assert not os.path.exists(other)
    assert "socket activation" in gw.log()
    assert gw.stop() == 0
    assert os.path.exists(path)


def test_socket_activation_for_another_pid_is_ignored(launch: Launcher) -> None:
    inherited = launch.path("inherited.sock")
    own = launch.path("own.sock")
    listener = unix_listener(inherited)
    # LISTEN_PID names another process (init): the variables were not meant for the gateway.
    gw = launch("--socket", own, env={"LISTEN_PID": "1", "LISTEN_FDS": "1"}, fd3=listener.fileno())
    gw.wait_connectable(own)
    w = Wire(own)
    try:
        assert w.call("gateway.info")["socket"] == own
    finally:
        w.close()
    # Not meant for it, so not unset either.
    assert environ_of(gw.pid).get("LISTEN_PID") == "1"
    assert gw.stop() == 0
    assert not os.path.exists(own)  # its own socket is removed as always
    assert os.path.exists(inherited)
    listener.close()


def test_systemds_own_socket_activate_tool_starts_the_gateway(launch: Launcher, notify: Notifications) -> None:
    """systemd-socket-activate (Debian's systemd package) plays systemd: it listens, and on
    the first client execs the gateway in its own process with LISTEN_* set. That first
    client is answered; the file stays after the gateway exits."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.fail("systemd-socket-activate is missing (Debian package systemd; scripts/setup installs it)")
    path = launch.path("activated.sock")
    gw = launch(env={"NOTIFY_SOCKET": notify.address},
                prefix=(tool, "-l", path, "-E", f"NOTIFY_SOCKET={notify.address}"))
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path), gw.log()
    w = Wire(path)  # this connection makes the tool exec the gateway
    try:
        info = w.call("gateway.info")
        assert info["socket"] == path
        assert info["pid"] == gw.pid  # exec'd in place: LISTEN_PID is its pid
    finally:
        w.close()
    assert "READY" in notify.wait_for("READY")
    assert gw.stop() == 0
    assert os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


def _descriptor(kind: str, launch: Launcher) -> tuple[Optional[int], Callable[[], None]]:
    """A descriptor of the given kind to hand over as 3, and how to close it afterwards."""
    if kind == "file":
        fd = os.open(launch.path("plain-file"), os.O_RDWR | os.O_CREAT, 0o600)
        return fd, lambda: os.close(fd)
    if kind == "closed":
        return None, lambda: None
    if kind == "tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(4)
    elif kind == "dgram":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(launch.path("dgram.sock"))
    else:  # a Unix stream socket, bound but not listening
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(launch.path("quiet.sock"))
    return s.fileno(), s.close


@pytest.mark.parametrize("kind,message", [
    ("tcp", "is not a Unix socket"),
    ("file", "is not a socket"),
    ("dgram", "not a stream socket"),
    ("unlistening", "not listening"),
    ("closed", "is not open"),
])
def test_descriptor_3_that_is_not_a_listening_unix_stream_socket_is_a_start_error(
        launch: Launcher, kind: str, message: str) -> None:
    fd3, close = _descriptor(kind, launch)
    try:
        own = launch.path("own.sock")
        gw = launch("--socket", own, env={"LISTEN_FDS": "1"}, fd3=fd3, own_pid_vars=("LISTEN_PID",))
        rc = gw.wait_exit()
        log = gw.log()
        assert rc == 1, log
        assert "descriptor 3" in log and message in log, log
        assert not os.path.exists(own)  # no fallback to a socket of its own
        if kind == "file":
            assert os.path.isfile(launch.path("plain-file"))  # left alone
    finally:
        close()


def test_a_missing_descriptor_3_is_reported_as_missing_with_notify_socket_set(
        launch: Launcher, notify: Notifications) -> None:
    """Nothing the gateway opens itself (the notification socket) may stand in for descriptor 3."""
    gw = launch("--socket", launch.path("own.sock"), env={"LISTEN_FDS": "1", "NOTIFY_SOCKET": notify.address},
                own_pid_vars=("LISTEN_PID",))
    assert gw.wait_exit() == 1
    assert "descriptor 3 from socket activation is not open" in gw.log(), gw.log()
    assert notify.collect(0.2) == []  # never said READY


@pytest.mark.parametrize("count,message", [("2", "exactly one"), ("many", "not a number")])
def test_listen_fds_other_than_one_is_a_start_error(launch: Launcher, count: str, message: str) -> None:
    path = launch.path("activated.sock")
    listener = unix_listener(path)
    gw = launch(env={"LISTEN_FDS": count}, fd3=listener.fileno(), own_pid_vars=("LISTEN_PID",))
    rc = gw.wait_exit()
    assert rc == 1
    assert message in gw.log(), gw.log()
    listener.close()


# ---------------------------------------------------------------------- sd_notify
def test_ready_once_clients_can_connect_then_stopping(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify.address})
    fields = notify.wait_for("READY")
    assert fields["READY"] == "1"
    # Ready means ready: a client connects and is answered right away.
    assert can_connect_unix(path)
    w = Wire(path)
    try:
        assert w.call("gateway.info")["socket"] == path
    finally:
        w.close()
    assert path in fields.get("STATUS", ""), fields
    # Nothing else comes unasked (no watchdog configured).
    assert notify.collect(0.3) == []
    gw.proc.send_signal(signal.SIGTERM)
    assert notify.wait_for("STOPPING")["STOPPING"] == "1"
    assert gw.wait_exit() == 0
    assert not os.path.exists(path)


def test_sigint_also_says_stopping(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    assert gw.stop(signal.SIGINT) == 0
    assert notify.wait_for("STOPPING", timeout=2)["STOPPING"] == "1"


def test_sighup_says_reloading_with_monotonic_time_then_ready(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    for _ in range(2):  # twice: each reload is announced, and the gateway keeps serving
        before = time.monotonic()
        gw.proc.send_signal(signal.SIGHUP)
        fields = notify.wait_for("RELOADING")
        after = time.monotonic()
        assert fields["RELOADING"] == "1"
        usec = int(fields["MONOTONIC_USEC"])
        # CLOCK_MONOTONIC, the clock Python's time.monotonic reads on Linux.
        assert before * 1e6 - 1000 <= usec <= after * 1e6 + 1000, (before, usec, after)
        assert notify.wait_for("READY")["READY"] == "1"
        assert gw.proc.poll() is None
        assert can_connect_unix(path)
    assert gw.stop() == 0


def test_ready_under_socket_activation_names_the_inherited_socket(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("activated.sock")
    listener = unix_listener(path)
    gw = launch(env={"LISTEN_FDS": "1", "NOTIFY_SOCKET": notify.address}, fd3=listener.fileno(),
                own_pid_vars=("LISTEN_PID",))
    fields = notify.wait_for("READY")
    listener.close()
    assert path in fields.get("STATUS", ""), fields
    assert can_connect_unix(path)
    assert gw.stop() == 0
    assert os.path.exists(path)


def test_watchdog_pings_at_half_the_interval(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"})
    notify.wait_for("READY")
    start = len(notify.seen)
    notify.collect(1.5)
    pings = [(t, f) for t, f in notify.seen[start:] if "WATCHDOG" in f]
    # Every 200 ms: about 7 in 1.5 s. At least 2, and not a flood (not every loop turn).
    assert 2 <= len(pings) <= 12, pings
    assert all(f["WATCHDOG"] == "1" for _, f in pings)
    # About half of WATCHDOG_USEC apart (the median forgives a late one on a busy machine);
    # the whole interval (400 ms) would already be too late.
    gaps = sorted(b[0] - a[0] for a, b in zip(pings, pings[1:]))
    assert 0.12 <= gaps[len(gaps) // 2] <= 0.32, gaps
    assert gw.stop() == 0


def test_watchdog_pings_when_watchdog_pid_is_the_gateway(launch: Launcher, notify: Notifications) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"},
                own_pid_vars=("WATCHDOG_PID",))
    notify.wait_for("READY")
    pings = [f for f in notify.collect(1.5) if "WATCHDOG" in f]
    assert len(pings) >= 2, pings
    assert gw.stop() == 0


@pytest.mark.parametrize("extra", [{"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "0"}])
def test_no_watchdog_pings_for_another_pid_or_a_bad_interval(
        launch: Launcher, notify: Notifications, extra: dict[str, str]) -> None:
    path = launch.path("gw.sock")
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000", **extra}
    gw = launch("--socket", path, env=env)
    notify.wait_for("READY", skip=lambda f: False)
    assert notify.collect(1.5) == []
    assert can_connect_unix(path)
    assert gw.stop() == 0


@pytest.mark.parametrize("address", ["relative/notify", "@", "/nonexistent-dir/notify"])
def test_an_unusable_notify_socket_does_not_stop_the_gateway(launch: Launcher, address: str) -> None:
    path = launch.path("gw.sock")
    gw = launch("--socket", path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    gw.wait_connectable(path)
    time.sleep(0.5)  # pings that cannot be delivered: logged once, never fatal
    w = Wire(path)
    try:
        assert w.call("gateway.info")["socket"] == path
    finally:
        w.close()
    log = gw.log()
    assert "NOTIFY_SOCKET" in log or "cannot notify" in log, log
    assert log.count("cannot notify") <= 1, log
    assert gw.stop() == 0


def test_a_manager_that_never_reads_does_not_stall_the_loop(launch: Launcher) -> None:
    """The manager's queue fills up (nobody reads): pings are dropped, the loop goes on."""
    d = launch.path("n")
    os.mkdir(d)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(os.path.join(d, "notify"))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    try:
        path = launch.path("gw.sock")
        gw = launch("--socket", path, env={"NOTIFY_SOCKET": os.path.join(d, "notify"), "WATCHDOG_USEC": "2000"})
        gw.wait_connectable(path)
        time.sleep(0.5)  # a ping every millisecond, none read
        w = Wire(path)
        try:
            t0 = time.monotonic()
            for _ in range(20):
                w.call("gateway.info")
            assert time.monotonic() - t0 < 2.0
        finally:
            w.close()
        assert gw.stop() == 0
    finally:
        sink.close()


# ---------------------------------------------------------------------- systemd units
def _verify(units: list[str], user: bool = False,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd; scripts/setup installs it)")
    scope = ["--user"] if user else []
    return subprocess.run([analyze, *scope, "verify", "--man=no", *units], capture_output=True, text=True,
                          timeout=60, env=env)


def _units_in(tmp: str, edit: Callable[[str, str], str] = lambda name, text: text) -> list[str]:
    """Copies of the shipped units whose ExecStart names the built binary (verify wants it to exist)."""
    out = []
    for name in ("tcpgw.socket", "tcpgw.service"):
        with open(os.path.join(UNITS_DIR, name)) as f:
            text = f.read()
        text = text.replace("/usr/local/bin/tcpgw", require_binary())
        dst = os.path.join(tmp, name)
        with open(dst, "w") as f:
            f.write(edit(name, text))
        out.append(dst)
    return out


def test_units_with_the_user_drop_in_pass_systemd_analyze_verify_for_a_user_manager() -> None:
    tmp = short_tmpdir()
    try:
        units = _units_in(tmp)
        os.mkdir(os.path.join(tmp, "tcpgw.service.d"))
        shutil.copy(os.path.join(UNITS_DIR, "user", "tcpgw.service.d-user.conf"),
                    os.path.join(tmp, "tcpgw.service.d", "user.conf"))
        runtime = os.path.join(tmp, "run")  # a user manager's runtime directory (%t)
        os.mkdir(runtime, 0o700)
        result = _verify(units, user=True, env={**os.environ, "XDG_RUNTIME_DIR": runtime})
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
        # The drop-in is read: a bad line in it is reported.
        with open(os.path.join(tmp, "tcpgw.service.d", "user.conf"), "a") as f:
            f.write("NoSuchSetting=1\n")
        result = _verify(units, user=True, env={**os.environ, "XDG_RUNTIME_DIR": runtime})
        assert "user.conf" in result.stderr, result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_shipped_units_pass_systemd_analyze_verify() -> None:
    tmp = short_tmpdir()
    try:
        result = _verify(_units_in(tmp))
        assert result.returncode == 0, result.stdout + result.stderr
        # verify reports unknown settings and bad values on stderr and still exits 0 (systemd
        # ignores such lines when loading): not one line is allowed.
        assert result.stderr.strip() == "", result.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("breakage", [
    ("tcpgw.service", "Type=notify", "Type=notifyy"),
    ("tcpgw.service", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictAddressFamilies=AF_UNIX AF_BOGUS"),
    ("tcpgw.service", "[Service]", "[Service]\nNoSuchSetting=1"),
    ("tcpgw.socket", "ListenStream=%t/tcpgw.sock", "ListenStream="),
])
def test_the_verify_check_fails_on_a_broken_unit(breakage: tuple[str, str, str]) -> None:
    unit, old, new = breakage

    def edit(name: str, text: str) -> str:
        if name != unit:
            return text
        assert old in text, f"{unit} no longer has {old!r}; update this test"
        return text.replace(old, new)

    tmp = short_tmpdir()
    try:
        result = _verify(_units_in(tmp, edit))
        complaints = [line for line in result.stderr.splitlines() if "tcpgw" in line]
        assert result.returncode != 0 or complaints, f"verify accepted a broken {unit}: {result}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_units_say_what_the_contract_asks() -> None:
    with open(os.path.join(UNITS_DIR, "tcpgw.socket")) as f:
        sock = f.read()
    with open(os.path.join(UNITS_DIR, "tcpgw.service")) as f:
        svc = f.read()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in svc.splitlines()
                if "=" in line and not line.startswith("#")}
    assert "ListenStream=%t/tcpgw.sock" in sock and "SocketMode=0600" in sock
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["ExecStart"].startswith("/usr/local/bin/tcpgw serve")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "WatchdogSec" in settings
    assert settings["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert settings["CapabilityBoundingSet"] == ""
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
                "LockPersonality", "MemoryDenyWriteExecute"):
        assert settings.get(key) == "yes", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["SystemCallArchitectures"] == "native"
    assert "@system-service" in svc


# ---------------------------------------------------------------------- the sandbox, in practice
def _session(path: str) -> None:
    """What a client typically makes the gateway do: a server, a connection to it, bytes both ways."""
    w = Wire(path)
    try:
        w.call("gateway.info")
        srv = w.call("tcp.createServer", {"sockaddr": {"addr": "127.0.0.1", "port": 0}})
        cli = w.call("tcp.createClient", {"sockaddr": {"addr": "127.0.0.1", "port": srv["local"]["port"]}})
        acc = w.call("tcp.accept", {"handle": srv["handle"], "timeout": 3000})
        w.call("tcp.send", {"handle": cli["handle"], "data": "aGVsbG8=", "encoding": "base64"})
        assert w.recv_exact(acc["handle"], 5) == b"hello"
        for h in (cli, acc, srv):
            w.call("tcp.close", {"handle": h["handle"]})
    finally:
        w.close()


def test_the_gateway_runs_under_the_kernels_write_xor_execute_rule(launch: Launcher) -> None:
    """MemoryDenyWriteExecute=yes in tcpgw.service is safe: under prctl(PR_SET_MDWE) (the
    kernel's own W^X rule, inherited across exec) the gateway serves a whole session. The
    same rule makes a writable+executable mapping fail, so the check is in force."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_mdwe, refuse_exec_gain = 65, 1

    def mdwe() -> None:
        if libc.prctl(pr_set_mdwe, refuse_exec_gain, 0, 0, 0) != 0:
            os._exit(97)

    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    control = subprocess.run([shutil.which("python3") or "python3", "-c", probe], preexec_fn=mdwe,
                             capture_output=True, timeout=30)
    if control.returncode == 97:
        pytest.fail("this kernel has no PR_SET_MDWE (Linux 6.3+); cannot check MemoryDenyWriteExecute=")
    assert control.returncode != 0, "a W+X mapping succeeded under PR_SET_MDWE: the rule is not in force"

    path = launch.path("gw.sock")
    gw = launch("--socket", path, preexec=mdwe)
    gw.wait_connectable(path)
    _session(path)
    assert gw.stop() == 0


def _expand(group: str, seen: Optional[set[str]] = None) -> set[str]:
    """The system calls a systemd syscall group (@name) allows, nested groups included."""
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= _expand(item, seen) if item.startswith("@") else {item}
    return names


def test_every_system_call_the_gateway_makes_is_in_the_units_filter(launch: Launcher) -> None:
    """SystemCallFilter=@system-service ~@privileged in tcpgw.service leaves the gateway every
    call it makes: a traced run (start, a session, SIGHUP, SIGTERM) uses none outside it, and
    none that MemoryDenyWriteExecute= forbids (W+X mappings, making memory executable)."""
    if os.environ.get("TCPGW_SANITIZER"):
        pytest.skip("a sanitizer's runtime makes system calls of its own; the unit filter is for the real binary")
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is missing (scripts/setup installs it)")
    allowed = _expand("@system-service") - _expand("@privileged")
    assert "epoll_wait" in allowed and "reboot" not in allowed  # the expansion itself works
    trace = launch.path("trace")
    path = launch.path("gw.sock")
    notify_path = launch.path("notify")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(notify_path)
    try:
        gw = launch("--socket", path, env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "100000"},
                    prefix=(strace, "-f", "-qq", "-o", trace))
        gw.wait_connectable(path)
        # Signals go to the traced gateway, strace's child, not to strace.
        with open(f"/proc/{gw.pid}/task/{gw.pid}/children") as f:
            tracee = int(f.read().split()[0])
        _session(path)
        time.sleep(0.3)  # a few watchdog pings
        os.kill(tracee, signal.SIGHUP)
        time.sleep(0.3)
        os.kill(tracee, signal.SIGTERM)
        assert gw.wait_exit() == 0
    finally:
        sink.close()
    with open(trace) as f:
        lines = f.read().splitlines()
    used = set()
    wx = []
    for line in lines:
        m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
        if m:
            used.add(m.group(1))
        if re.search(r"\bmprotect\(.*PROT_EXEC", line) or (
                re.search(r"\bmmap\(.*PROT_WRITE", line) and "PROT_EXEC" in line):
            wx.append(line)
    assert "epoll_wait" in used and "accept4" in used, sorted(used)  # the trace is real
    outside = sorted(used - allowed - {"resumed"})
    assert outside == [], f"system calls outside SystemCallFilter=: {outside}"
    assert wx == [], "memory made writable and executable:\n" + "\n".join(wx[:5])
