# shellcheck shell=bash
# Shared setup for the bats tests of the bash client: a real gateway per test on a
# temporary socket, real loopback peers, everything bounded and cleaned up.
#
# Environment: TCPGW_BIN (default <repository>/.build/debug/tcpgw).
# shellcheck disable=SC2034  # REPO_ROOT, PEER_PORT and the *_PEER scripts are used by the .bats files

bats_require_minimum_version 1.5.0

SHELL_CLIENT_DIR=$(cd "${BATS_TEST_DIRNAME}/.." && pwd)
REPO_ROOT=$(cd "${SHELL_CLIENT_DIR}/../.." && pwd)
export TCPGW_BIN=${TCPGW_BIN:-${REPO_ROOT}/.build/debug/tcpgw}
# A client-side bound on every answer, so a hung gateway fails a test instead of
# hanging it.
export TCPGW_REPLY_TIMEOUT_MS=${TCPGW_REPLY_TIMEOUT_MS:-15000}

T_DIR=""        # per-test temp dir (short path: Unix socket names are limited)
GW_SOCK=""
GW_PID=""
PEER_PIDS=()

# start_gateway: run `tcpgw serve` on a fresh socket and wait until it accepts.
start_gateway() {
	T_DIR=$(mktemp -d /tmp/tcpgw-sh.XXXXXX)
	GW_SOCK=$T_DIR/gw.sock
	[[ -x $TCPGW_BIN ]] || { echo "gateway binary $TCPGW_BIN missing" >&2; return 1; }
	# 3>&- : bats waits for fd 3 to close; background processes must not hold it.
	"$TCPGW_BIN" serve --socket "$GW_SOCK" 2>"$T_DIR/gw.log" 3>&- &
	GW_PID=$!
	local i
	for (( i = 0; i < 200; i++ )); do
		[[ -S $GW_SOCK ]] && return 0
		kill -0 "$GW_PID" 2>/dev/null || break
		sleep 0.025
	done
	echo "gateway did not come up; log:" >&2
	cat "$T_DIR/gw.log" >&2
	return 1
}

# stop_pid PID: TERM, wait up to 5 s, then KILL.  Only for processes the test started.
stop_pid() {
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for (( i = 0; i < 200; i++ )); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# open_session: source the library and open a session on the test's gateway.
open_session() {
	# shellcheck source=clients/shell/tcpgw.bash
	source "$SHELL_CLIENT_DIR/tcpgw.bash"
	tcpgw_open "$GW_SOCK" 3>&-
}

common_setup() {
	start_gateway
	open_session
}

common_teardown() {
	if declare -F tcpgw_close >/dev/null; then
		tcpgw_close || true
	fi
	local pid
	for pid in "${PEER_PIDS[@]}"; do
		stop_pid "$pid"
	done
	PEER_PIDS=()
	stop_pid "$GW_PID"
	GW_PID=""
	if [[ -n $T_DIR && -d $T_DIR ]]; then
		rm -rf -- "$T_DIR"
	fi
}

# free_port: a loopback TCP port that was free a moment ago, from below the ephemeral range
# (tests/support/ports.py), where no connection's local port and no port-0 listener lands.
free_port() {
	python3 "$REPO_ROOT/tests/support/ports.py"
}

# start_peer NAME SCRIPT [ARGS...]: run a Python peer (bounded by `timeout`); it must
# write its listening port to $T_DIR/NAME.port.  Sets PEER_PORT.  Call it directly,
# not in $( ): the peer's pid must reach the teardown.
start_peer() {
	local name=$1 i
	shift
	timeout 60 python3 -c "$1" "$T_DIR/$name.port" "${@:2}" >/dev/null 2>"$T_DIR/$name.log" 3>&- &
	PEER_PIDS+=("$!")
	for (( i = 0; i < 200; i++ )); do
		if [[ -s $T_DIR/$name.port ]]; then
			PEER_PORT=$(<"$T_DIR/$name.port")
			return 0
		fi
		sleep 0.025
	done
	echo "peer $name did not start" >&2
	cat "$T_DIR/$name.log" >&2
	return 1
}

# Python echo peer: echoes every connection until EOF, then closes it.
ECHO_PEER='
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'

# Python peer: for one connection, sends argv[2] then closes (FIN).
SAY_AND_CLOSE_PEER='
import socket, sys, os
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept()
c.sendall(sys.argv[2].encode())
c.close()
'

# Python peer: accepts and holds connections silently (for timeouts).
SILENT_PEER='
import socket, sys, os, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held = []
while True:
    c, _ = s.accept(); held.append(c)
'

# recv_hex_exact HANDLE NBYTES: read exactly NBYTES (bounded: 100 reads, 5 s each),
# print them as hex.
recv_hex_exact() {
	local h=$1 want=$(( $2 * 2 )) got="" chunk i
	for (( i = 0; i < 100 && ${#got} < want; i++ )); do
		chunk=$(tcp_recv_hex "$h" $(( (want - ${#got}) / 2 )) 5000) || return
		[[ -n $chunk ]] || { echo "EOF after ${#got} hex digits" >&2; return 1; }
		got+=$chunk
	done
	printf '%s\n' "$got"
}

# echoed HANDLE TEXT: tcp_send TEXT (answered with its length) to an echo peer, and the same
# bytes come back through tcp_recv. Fails the test otherwise.
# shellcheck disable=SC2154  # status and output are what bats' run sets
echoed() {
	local h=$1 text=$2
	run tcp_send "$h" "$text"
	[ "$status" -eq 0 ]
	[ "$output" = "${#text}" ]
	run recv_hex_exact "$h" "${#text}"
	[ "$status" -eq 0 ]
	[ "$output" = "$(hex_of "$text")" ]
}

# hex_of STRING: the bytes of STRING as lowercase hex (one line).
hex_of() {
	printf '%s' "$1" | xxd -p | tr -d '\n'
	printf '\n'
}
