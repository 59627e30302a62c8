#!/usr/bin/env bats
# The library in a strict shell (set -euo pipefail, nounset, errexit in subshells).

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	start_gateway
	start_peer echo "$ECHO_PEER"
}

teardown() {
	common_teardown
}

@test "a strict script runs a whole sequence and ends cleanly" {
	cat >"$T_DIR/strict.sh" <<'SCRIPT'
		set -euo pipefail
		shopt -s inherit_errexit
		source "$1/tcpgw.bash"
		unset TCPGW_REPLY_TIMEOUT_MS TCPGW_EOF_STATUS TCPGW_DEBUG TCPGW_BRIDGE
		export TCPGW_BIN=$3
		tcpgw_open "$2"
		h=$(tcp_createClient 127.0.0.1 "$4")
		tcp_setNoDelay "$h" true >/dev/null
		tcp_send "$h" $'PING\r\n' >/dev/null
		got=""
		for (( i = 0; i < 20 && ${#got} < 12; i++ )); do got+=$(tcp_recv_hex "$h" 64 2000); done
		printf "echo:%s\n" "$got"
		tcp_recv "$h" 16 0 || echo "poll status $?"
		if ! tcp_send 424242 x 2>/dev/null; then echo "unknown handle handled"; fi
		srv=$(tcp_createServer 127.0.0.1 0 16)
		tcp_accept "$srv" "" true >/dev/null
		port=$(tcp_sockName "$srv" | jq -r .port)
		c=$(tcp_createClient 127.0.0.1 "$port" 2000)
		ev=$(tcpgw_wait_event tcp.onAccept 5000 "$srv")
		echo "accepted:$(tcpgw_event_field "$ev" client)"
		tcp_close "$c" >/dev/null
		tcpgw_wait_event tcp.onEnd 5000 >/dev/null
		tcpgw_next_event 0 || echo "no more events: $?"
		tcp_recv "$h" 4 0 | xxd -p || echo "pipeline status ${PIPESTATUS[0]}"
		tcpgw_close
		tcpgw_close
		echo finished
SCRIPT
	run --separate-stderr timeout 60 bash "$T_DIR/strict.sh" "$SHELL_CLIENT_DIR" "$GW_SOCK" "$TCPGW_BIN" "$PEER_PORT"
	[ "$status" -eq 0 ]
	[ "${lines[0]}" = "echo:50494e470d0a" ]
	[ "${lines[1]}" = "poll status 3" ]
	[ "${lines[2]}" = "unknown handle handled" ]
	[[ ${lines[3]} =~ ^accepted:[0-9]+$ ]]
	[ "${lines[4]}" = "no more events: 3" ]
	[ "${lines[5]}" = "pipeline status 3" ]
	[ "${lines[6]}" = finished ]
	[ "${#lines[@]}" -eq 7 ]
	[[ $stderr == *"tcp.recv: "*"(code -32002)"* ]]
}

@test "a strict script stops at the first failing call with its status" {
	cat >"$T_DIR/stop.sh" <<'SCRIPT'
		set -euo pipefail
		source "$1/tcpgw.bash"
		export TCPGW_BIN=$3
		tcpgw_open "$2"
		trap tcpgw_close EXIT
		echo before
		tcp_createClient 127.0.0.1 "$4" 1000 >/dev/null
		echo after
SCRIPT
	run --separate-stderr timeout 60 bash "$T_DIR/stop.sh" "$SHELL_CLIENT_DIR" "$GW_SOCK" "$TCPGW_BIN" "$(free_port)"
	[ "$status" -eq 1 ]
	[ "$output" = before ]
	[[ $stderr == "tcpgw: tcp.createClient: "*"errno ECONNREFUSED)" ]]
}

@test "sourcing is silent and defines the API" {
	run --separate-stderr bash -c "set -euo pipefail; source \"\$1/tcpgw.bash\"; declare -F tcp_createClient tcp_send tcp_recv tcp_accept tcpgw_call tcpgw_open tcpgw_close tcpgw_next_event tcpgw_wait_event | wc -l" _ "$SHELL_CLIENT_DIR"
	[ "$status" -eq 0 ]
	[ "$output" = 9 ]
	[ -z "$stderr" ]
}
