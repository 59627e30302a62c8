#!/usr/bin/env bats
# tcpgw_open ssh://...: the session runs through `tcpgw bridge ssh://...` and a real sshd on
# loopback (tests/support/sshd.py: generated keys, its own configs, never ~/.ssh or /etc/ssh).

# shellcheck disable=SC2154,SC2119  # $stderr is set by bats (run --separate-stderr); tcp_list takes no params here
load helpers

SSHD_DIR=""
SSHD_PORT=""

setup() {
	start_gateway
	SSHD_DIR=$T_DIR/sshd
	local out rc=0
	# The remote default socket ($TCPGW_SOCKET there) is the test's gateway.
	out=$(python3 "$REPO_ROOT/tests/support/sshd.py" start "$SSHD_DIR" \
		--path "$(dirname "$TCPGW_BIN")" --env "TCPGW_SOCKET=$GW_SOCK" 3>&-) || rc=$?
	if (( rc == 77 )); then
		skip "no sshd or ssh client installed"
	fi
	(( rc == 0 )) || { echo "sshd did not start" >&2; return 1; }
	SSHD_PORT=${out%%$'\n'*}
	TCPGW_SSH=${out#*$'\n'}
	export TCPGW_SSH
	# shellcheck source=clients/shell/tcpgw.bash
	source "$SHELL_CLIENT_DIR/tcpgw.bash"
}

teardown() {
	if declare -F tcpgw_close >/dev/null; then
		tcpgw_close || true
	fi
	if [[ -n $SSHD_DIR && -e $SSHD_DIR/sshd.pid.ours ]]; then
		python3 "$REPO_ROOT/tests/support/sshd.py" stop "$SSHD_DIR" || true
	fi
	common_teardown
}

# gateway_connections: how many clients the gateway has now (through its own socket).
gateway_connections() {
	"$TCPGW_BIN" call gateway.info --socket "$GW_SOCK" | jq .connections
}

@test "ssh:// session: calls, bytes both ways and events through ssh; tcpgw_close ends it" {
	tcpgw_open "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" 3>&-
	[ "$(tcpgw_session_socket)" = "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" ]
	[ "$(tcpgw_call gateway.info | jq -r .socket)" = "$GW_SOCK" ]

	start_peer echo "$ECHO_PEER"
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 5000)
	[[ $h =~ ^[0-9]+$ ]]
	[ "$(tcp_send_hex "$h" 00ff0a0d41)" = 5 ]
	[ "$(recv_hex_exact "$h" 5)" = 00ff0a0d41 ]

	srv=$(tcp_createServer 127.0.0.1 0)
	port=$(tcp_sockName "$srv" | jq -r .port)
	[ "$(tcp_accept "$srv" "" true)" = true ]
	c=$(tcp_createClient 127.0.0.1 "$port" 5000)
	ev=$(tcpgw_wait_event tcp.onAccept 10000 "$srv")
	[ "$(tcpgw_event_field "$ev" handle)" = "$srv" ]
	accepted=$(tcpgw_event_field "$ev" client)
	tcp_send "$c" "through ssh" >/dev/null
	ev=$(tcpgw_wait_event tcp.onData 10000 "$accepted")
	[ "$(tcpgw_event_bytes "$ev")" = "through ssh" ]

	[ "$(gateway_connections)" = 2 ]   # the remote bridge, and this check itself
	tcpgw_close
	# The remote bridge ended its session: only this check is left (bounded wait).
	for (( i = 0; i < 200; i++ )); do
		[ "$(gateway_connections)" = 1 ] && break
		sleep 0.05
	done
	[ "$(gateway_connections)" = 1 ]
}

@test "ssh:// without a socket: the remote gateway's default socket" {
	tcpgw_open "ssh://127.0.0.1:$SSHD_PORT" 3>&-
	[ "$(tcpgw_call gateway.info | jq -r .socket)" = "$GW_SOCK" ]
}

@test "descriptor passing: the shell refuses locally, the bridge answers -32006 to tcpgw_call" {
	tcpgw_open "ssh://[::1]:$SSHD_PORT$GW_SOCK" 3>&- || tcpgw_open "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" 3>&-
	srv=$(tcp_createServer 127.0.0.1 0)
	run --separate-stderr tcp_flyAway "$srv"
	[ "$status" -eq 2 ]
	run --separate-stderr tcpgw_call tcp.flyAway "[$srv]"
	[ "$status" -eq 1 ]
	[ -z "$output" ]
	[[ $stderr == "tcpgw: tcp.flyAway: "*"SCM_RIGHTS"*"tcpgw bridge"*"(code -32006)" ]]
	# The listener never left the gateway.
	[ "$(tcp_getState "$srv" | jq -r .name)" = LISTEN ]
}

@test "ssh refuses the key: tcpgw_open fails with status 4 and ssh's message" {
	TCPGW_SSH="ssh -F $SSHD_DIR/ssh_config_unauthorized" run --separate-stderr tcpgw_open "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" 3>&-
	[ "$status" -eq 4 ]
	[[ $stderr == *"Permission denied"* ]]
	[[ $stderr == *"ssh failed (status 255"* ]]
	[[ $stderr == *"tcpgw: open: cannot talk to the gateway at ssh://"* ]]
	run --separate-stderr tcp_list
	[ "$status" -eq 4 ]
}

@test "a malformed ssh:// address: status 4 and the bridge says what is wrong" {
	run --separate-stderr tcpgw_open "ssh://127.0.0.1:0$GW_SOCK" 3>&-
	[ "$status" -eq 4 ]
	[[ $stderr == *"the port '0' is not a number from 1 to 65535"* ]]
	run --separate-stderr tcpgw_open "ssh://-oProxyCommand=x" 3>&-
	[ "$status" -eq 4 ]
	[[ $stderr == *"may not start with '-'"* ]]
}

@test "ssh killed mid-session: the next call fails with status 4, no hang" {
	tcpgw_open "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" 3>&-
	tcpgw_call gateway.info >/dev/null
	ssh_pid=$(ps -o pid= --ppid "$_TCPGW_PID" | tr -d ' ')
	[[ $ssh_pid =~ ^[0-9]+$ ]]
	[ "$(ps -o comm= -p "$ssh_pid")" = ssh ]
	kill -KILL "$ssh_pid"
	run --separate-stderr tcp_list
	[ "$status" -eq 4 ]
	[[ $stderr == *"connection to the gateway"* ]]
}

@test "tcpgw_open --keep over ssh://: the ssh child is killed, ssh runs again, calls go on" {
	tcpgw_open --keep 20000 "ssh://127.0.0.1:$SSHD_PORT$GW_SOCK" 3>&-
	start_peer echo "$ECHO_PEER"
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 5000)
	[[ $h =~ ^[0-9]+$ ]]
	local round ssh_pid i old=""
	for round in 1 2 3; do
		# The bridge's ssh child (a new one after each kill: wait until it differs).
		for (( i = 0; i < 200; i++ )); do
			ssh_pid=$(ps -o pid= --ppid "$_TCPGW_PID" -o comm= | awk '$2 == "ssh" {print $1}' | head -n1)
			[[ $ssh_pid =~ ^[0-9]+$ && $ssh_pid != "$old" ]] && break
			sleep 0.05
		done
		[[ $ssh_pid =~ ^[0-9]+$ && $ssh_pid != "$old" ]]
		kill -KILL "$ssh_pid"
		old=$ssh_pid
		echoed "$h" "round $round"
	done
	# The same session: one handle, the remote bridge the gateway's only client, no zombies.
	[ "$(tcp_list | jq -c '[.[].handle]')" = "[$h]" ]
	[ "$(tcpgw_call gateway.info | jq .connections)" = 1 ]
	[ -z "$(ps -o stat= --ppid "$_TCPGW_PID" | awk '/^Z/')" ]  # no zombie child
}
