#!/usr/bin/env bats
# tcpgw_open --keep MS: the bridge keeps the session through dropped gateway connections.
# The library reaches the gateway through a socat relay; cutting the relay's connection (its
# per-connection child, killed by pid) drops the link the way a dying SSH forward would.

# shellcheck disable=SC2154,SC2119  # $stderr is set by bats; the methods take no params here
load helpers

RELAY_PID=""

setup() {
	start_gateway
	start_peer echo "$ECHO_PEER"
	PORT=$PEER_PORT
	RELAY_SOCK=$T_DIR/relay.sock
	socat "UNIX-LISTEN:$RELAY_SOCK,fork" "UNIX-CONNECT:$GW_SOCK" 2>"$T_DIR/relay.log" 3>&- &
	RELAY_PID=$!
	local i
	for (( i = 0; i < 200; i++ )); do
		[[ -S $RELAY_SOCK ]] && break
		sleep 0.025
	done
	[[ -S $RELAY_SOCK ]]
	# shellcheck source=clients/shell/tcpgw.bash
	source "$SHELL_CLIENT_DIR/tcpgw.bash"
}

teardown() {
	common_teardown
	stop_pid "$RELAY_PID"
}

# cut_link: kill the relay's per-connection children (by pid): the bridge's link drops.
cut_link() {
	local pid n=0
	for pid in $(ps -o pid= --ppid "$RELAY_PID"); do
		kill -KILL "$pid" 2>/dev/null && n=$((n + 1))
	done
	(( n > 0 ))
}

@test "calls go on across cut links, on the same handles" {
	tcpgw_open --keep 20000 "$RELAY_SOCK" 3>&-
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	[[ $h =~ ^[0-9]+$ ]]
	for round in 1 2 3 4 5; do
		cut_link
		echoed "$h" "round $round"
	done
	# Still the one session: its handle list is unchanged, and the gateway has one client.
	[ "$(tcp_list | jq -c '[.[].handle]')" = "[$h]" ]
	[ "$(gateway_info | jq .connections)" = 1 ]
}

@test "closing a kept session ends it at once, handles included" {
	tcpgw_open --keep 60000 "$RELAY_SOCK" 3>&-
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	[[ $h =~ ^[0-9]+$ ]]
	tcpgw_close
	# Not after the grace: the bridge tells the gateway the session is over.
	tcpgw_open "$GW_SOCK" 3>&-
	for (( i = 0; i < 100; i++ )); do
		[ "$(gateway_info | jq .handles)" = 0 ] && break
		sleep 0.05
	done
	[ "$(gateway_info | jq .handles)" = 0 ]
}

@test "tcpgw_open --keep checks its milliseconds" {
	for bad in 0 -1 abc 3600001 ""; do
		run tcpgw_open --keep "$bad" "$RELAY_SOCK"
		[ "$status" -eq "$TCPGW_E_USAGE" ]
		[[ $output == *"--keep takes milliseconds"* ]]
	done
	run tcpgw_open --keep 100 "$RELAY_SOCK" extra
	[ "$status" -eq "$TCPGW_E_USAGE" ]
}
