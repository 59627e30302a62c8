#!/usr/bin/env bats
# Unhappy paths: statuses and the stderr message format "tcpgw: METHOD: message (code N[, errno NAME])".

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	common_setup
}

teardown() {
	common_teardown
}

@test "refused connect: status 1, message with code -32005 and errno ECONNREFUSED, no stdout" {
	port=$(free_port)
	run --separate-stderr tcp_createClient 127.0.0.1 "$port" 2000
	[ "$status" -eq 1 ]
	[ -z "$output" ]
	[[ $stderr =~ ^tcpgw:\ tcp\.createClient:\ .+\ \(code\ -32005,\ errno\ ECONNREFUSED\)$ ]]
}

@test "timeouts: status 3 for accept and recv (code -32002); nothing is lost after a recv timeout" {
	srv=$(tcp_createServer 127.0.0.1 0)
	run --separate-stderr tcp_accept "$srv" 200
	[ "$status" -eq 3 ]
	[ -z "$output" ]
	[[ $stderr == "tcpgw: tcp.accept: "*"(code -32002)" ]]

	start_peer echo "$ECHO_PEER"
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 2000)
	run --separate-stderr tcp_recv "$h" 10 150
	[ "$status" -eq 3 ]
	[[ $stderr == "tcpgw: tcp.recv: "*"(code -32002)" ]]
	# timeout 0 = poll
	run tcp_recv "$h" 10 0
	[ "$status" -eq 3 ]
	tcp_send "$h" abc >/dev/null
	run recv_hex_exact "$h" 3
	[ "$output" = "$(hex_of abc)" ]
}

@test "client-side reply timeout: status 3; the late answer is dropped, the session goes on" {
	srv=$(tcp_createServer 127.0.0.1 0)
	port=$(tcp_sockName "$srv" | jq -r .port)
	# no gateway timeout: only TCPGW_REPLY_TIMEOUT_MS bounds the wait
	TCPGW_REPLY_TIMEOUT_MS=300 run --separate-stderr tcp_accept "$srv"
	[ "$status" -eq 3 ]
	[[ $stderr == "tcpgw: tcp.accept: no answer within 300 ms"* ]]
	# A connection now completes the abandoned accept; its answer arrives late.
	c=$(tcp_createClient 127.0.0.1 "$port" 2000)
	[[ $c =~ ^[0-9]+$ ]]
	run tcp_getState "$c"
	[ "$status" -eq 0 ]
	[ "$(jq -r .name <<<"$output")" = ESTABLISHED ]
	# the late accept's handle exists (the gateway made it) and is distinct
	[ "$(tcp_list | jq '[.[] | select(.kind == "connection")] | length')" = 2 ]
}

@test "unknown handle, wrong kind, invalid params: status 1 with the gateway's code" {
	run --separate-stderr tcp_send 999999 x
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.send: "*"(code -32000)" ]]
	srv=$(tcp_createServer 127.0.0.1 0)
	run --separate-stderr tcp_recv "$srv" 10 100
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.recv: "*"(code -32001)" ]]
	run --separate-stderr tcp_setTTL "$srv" 0
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.setTTL: "*"timeToLive"*"(code -32602)" ]]
	run --separate-stderr tcpgw_call tcp.noSuchMethod '{}'
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.noSuchMethod: "*"(code -32601)" ]]
	run --separate-stderr tcp_close "$srv"
	[ "$output" = true ]
	run --separate-stderr tcp_close "$srv"
	[ "$status" -eq 1 ]
	[[ $stderr == *"(code -32000)" ]]
}

@test "usage errors: status 2, checked before anything is sent" {
	run --separate-stderr tcp_createClient 127.0.0.1
	[ "$status" -eq 2 ]
	[[ $stderr == "tcpgw: tcp.createClient: missing argument 'sockaddr.port'; usage: tcp_createClient ADDR PORT [TIMEOUT] [ASYNC] [FAULTS]" ]]
	run --separate-stderr tcp_createClient 127.0.0.1 80x
	[ "$status" -eq 2 ]
	run --separate-stderr tcp_createClient 127.0.0.1 80 1000 maybe
	[ "$status" -eq 2 ]
	[[ $stderr == *"'async' must be true or false"* ]]
	run --separate-stderr tcp_close 1 2
	[ "$status" -eq 2 ]
	[[ $stderr == *"too many arguments"* ]]
	run --separate-stderr tcpgw_call tcp.list '{not json'
	[ "$status" -eq 2 ]
	run --separate-stderr tcpgw_wait_event tcp.onNothing 10
	[ "$status" -eq 2 ]
	run --separate-stderr tcp_createByFd
	[ "$status" -eq 2 ]
	[[ $stderr == *"SCM_RIGHTS"* ]]
	# nothing above reached the gateway as a request that made a handle
	[ "$(tcp_list)" = '[]' ]
}

@test "text that is not UTF-8 is refused by the gateway (status 1); binary goes through _hex/_base64" {
	start_peer echo "$ECHO_PEER"
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 2000)
	run --separate-stderr tcp_send "$h" $'bad \xff\xfe bytes'
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.send: "*"(code -32"* ]]
	# the session is still in step
	[ "$(tcp_send_hex "$h" ff)" = 1 ]
	run recv_hex_exact "$h" 1
	[ "$output" = ff ]
}

@test "events: tcpgw_next_event times out with status 3 and no output" {
	start=${EPOCHREALTIME/./}
	run --separate-stderr tcpgw_next_event 200
	end=${EPOCHREALTIME/./}
	[ "$status" -eq 3 ]
	[ -z "$output" ]
	[ -z "$stderr" ]
	(( end - start >= 190000 ))
	(( end - start < 5000000 ))
}

@test "session: status 4 without a session, after the gateway dies, and for a missing socket" {
	tcpgw_close
	run --separate-stderr tcp_list
	[ "$status" -eq 4 ]
	[[ $stderr == "tcpgw: tcp.list: no session (call tcpgw_open first)" ]]
	run --separate-stderr tcpgw_open "$T_DIR/nothing-here.sock"
	[ "$status" -eq 4 ]
	[[ $stderr == *"no gateway socket at $T_DIR/nothing-here.sock"* ]]

	# a stale socket file: nobody listens behind it
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$T_DIR/stale.sock"
	[ -S "$T_DIR/stale.sock" ]
	run --separate-stderr tcpgw_open "$T_DIR/stale.sock"
	[ "$status" -eq 4 ]
	[[ $stderr == *"cannot talk to the gateway at $T_DIR/stale.sock"* ]]
	run tcp_list
	[ "$status" -eq 4 ]

	tcpgw_open "$GW_SOCK" 3>&-
	run --separate-stderr tcpgw_open "$GW_SOCK"
	[ "$status" -eq 2 ]
	TCPGW_REPLY_TIMEOUT_MS=soon run --separate-stderr tcp_list
	[ "$status" -eq 2 ]
	[[ $stderr == *"TCPGW_REPLY_TIMEOUT_MS must be a number of milliseconds"* ]]
	stop_pid "$GW_PID"
	run --separate-stderr tcp_list
	[ "$status" -eq 4 ]
	[[ $stderr == "tcpgw: tcp.list: connection to the gateway "* ]]
	tcpgw_close
}

@test "session: handles live as long as the session; a new session cannot use them" {
	srv=$(tcp_createServer 127.0.0.1 0)
	port=$(tcp_sockName "$srv" | jq -r .port)
	tcpgw_close
	tcpgw_open "$GW_SOCK" 3>&-
	run --separate-stderr tcp_sockName "$srv"
	[ "$status" -eq 1 ]
	[[ $stderr == *"(code -32000)" ]]
	# the listener was closed with the old session
	run --separate-stderr tcp_createClient 127.0.0.1 "$port" 2000
	[ "$status" -eq 1 ]
	[[ $stderr == *"errno ECONNREFUSED)" ]]
}
