#!/usr/bin/env bats
# A shell rig talking to a real redis-server through the gateway: PING / SET / GET.

load helpers

setup() {
	common_setup
	local attempt pid i
	R=""
	# A port free at the probe can be taken before redis binds it: then redis exits, and
	# another port is tried (5 attempts).
	for (( attempt = 0; attempt < 5; attempt++ )); do
		REDIS_PORT=$(free_port)
		timeout 60 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
			--dir "$T_DIR" --daemonize no >>"$T_DIR/redis.log" 2>&1 3>&- &
		pid=$!
		PEER_PIDS+=("$pid")
		# Wait for redis through the gateway itself (bounded: 200 x 25 ms).
		for (( i = 0; i < 200; i++ )); do
			if R=$(tcp_createClient 127.0.0.1 "$REDIS_PORT" 1000 2>/dev/null); then
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.025
		done
		R=""
	done
	cat "$T_DIR/redis.log" >&2
	return 1
}

teardown() {
	common_teardown
}

# redis_cmd WORD...: send one RESP command on $R.
redis_cmd() {
	local out="*$#"$'\r\n' w
	for w in "$@"; do
		out+="\$${#w}"$'\r\n'"$w"$'\r\n'
	done
	tcp_send "$R" "$out" >/dev/null
}

@test "redis: PING, SET, GET, DEL through the bash client" {
	redis_cmd PING
	run recv_hex_exact "$R" 7
	[ "$output" = "$(hex_of $'+PONG\r\n')" ]

	redis_cmd SET tcpgw:key 'hello world'
	run recv_hex_exact "$R" 5
	[ "$output" = "$(hex_of $'+OK\r\n')" ]

	redis_cmd GET tcpgw:key
	run recv_hex_exact "$R" 18
	[ "$output" = "$(hex_of $'$11\r\nhello world\r\n')" ]

	redis_cmd GET tcpgw:missing
	run recv_hex_exact "$R" 5
	[ "$output" = "$(hex_of $'$-1\r\n')" ]

	# inline command form, read as text
	tcp_send "$R" $'DEL tcpgw:key\r\n' >/dev/null
	run recv_hex_exact "$R" 4
	[ "$output" = "$(hex_of $':1\r\n')" ]
}

@test "redis: a second connection sees the first one's write; QUIT ends with EOF" {
	redis_cmd SET counter 41
	run recv_hex_exact "$R" 5
	R2=$(tcp_createClient 127.0.0.1 "$REDIS_PORT" 2000)
	[ "$R2" != "$R" ]
	tcp_send "$R2" $'INCR counter\r\n' >/dev/null
	run recv_hex_exact "$R2" 5
	[ "$output" = "$(hex_of $':42\r\n')" ]
	tcp_send "$R2" $'QUIT\r\n' >/dev/null
	run recv_hex_exact "$R2" 5
	[ "$output" = "$(hex_of $'+OK\r\n')" ]
	run tcp_recv "$R2" 100 5000
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	[ "$(tcp_isEOF "$R2")" = true ]
}
