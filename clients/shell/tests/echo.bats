#!/usr/bin/env bats
# Synchronous use against a real Python echo peer: text, binary, hex, big payloads, EOF.

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	common_setup
	start_peer echo "$ECHO_PEER"
	PORT=$PEER_PORT
}

teardown() {
	common_teardown
}

@test "sync echo: text round trip, handle and addresses" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	[[ $h =~ ^[0-9]+$ ]]
	run tcp_send "$h" $'PING\r\n'
	[ "$status" -eq 0 ]
	[ "$output" = 6 ]
	run recv_hex_exact "$h" 6
	[ "$status" -eq 0 ]
	[ "$output" = "$(hex_of $'PING\r\n')" ]
	[ "$(tcp_peerName "$h" | jq -c '[.addr, .port]')" = "[\"127.0.0.1\",$PORT]" ]
	[ "$(tcp_getState "$h" | jq -r .name)" = ESTABLISHED ]
	[ "$(tcp_isEOF "$h")" = false ]
	run tcp_close "$h"
	[ "$output" = true ]
}

@test "tcp_recv prints raw bytes to stdout, usable in a pipeline" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	tcp_send_hex "$h" 00ff0a0d41 >/dev/null
	out=""
	for (( i = 0; i < 20 && ${#out} < 10; i++ )); do
		out+=$(tcp_recv "$h" 100 5000 | xxd -p | tr -d '\n')
	done
	[ "$out" = 00ff0a0d41 ]
}

@test "binary round trip of all 256 byte values via tcp_send_file and tcp_recv" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 4)' >"$T_DIR/in.bin"
	[ "$(tcp_send_file "$h" "$T_DIR/in.bin")" = 1024 ]
	: >"$T_DIR/out.bin"
	for (( i = 0; i < 50; i++ )); do
		tcp_recv "$h" 4096 5000 >>"$T_DIR/out.bin"
		(( $(stat -c %s "$T_DIR/out.bin") >= 1024 )) && break
	done
	cmp "$T_DIR/in.bin" "$T_DIR/out.bin"
}

@test "base64 send and recv variants; utf8 text with quotes, tabs, control bytes" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	[ "$(tcp_send_base64 "$h" "$(printf 'a\0b' | base64)")" = 3 ]
	run recv_hex_exact "$h" 3
	[ "$output" = 610062 ]
	text=$'tab\there "q" \\ back \x01\x1f é €'
	n=$(tcp_send "$h" "$text")
	[ "$n" -eq "$(printf '%s' "$text" | wc -c)" ]
	run recv_hex_exact "$h" "$n"
	[ "$output" = "$(hex_of "$text")" ]
	# offset and length count decoded bytes
	[ "$(tcp_send "$h" "0123456789" utf8 2 3)" = 3 ]
	run recv_hex_exact "$h" 3
	[ "$output" = "$(hex_of 234)" ]
	tcp_send "$h" 'xyz' >/dev/null
	# tcp_recv_base64 prints base64 text (each chunk encoded on its own)
	got=""
	for (( i = 0; i < 20 && ${#got} < 3; i++ )); do
		b64=$(tcp_recv_base64 "$h" 10 5000)
		[[ $b64 =~ ^[A-Za-z0-9+/]+=*$ ]]
		got+=$(base64 -d <<<"$b64")
	done
	[ "$got" = xyz ]
}

@test "a 300 KiB payload passes (no argument-length limit, long lines)" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	head -c 307200 /dev/urandom >"$T_DIR/big.bin"
	[ "$(tcp_send_file "$h" "$T_DIR/big.bin" 10000)" = 307200 ]
	: >"$T_DIR/big.out"
	for (( i = 0; i < 200; i++ )); do
		tcp_recv "$h" 65536 5000 >>"$T_DIR/big.out"
		(( $(stat -c %s "$T_DIR/big.out") >= 307200 )) && break
	done
	cmp "$T_DIR/big.bin" "$T_DIR/big.out"
}

@test "EOF: tcp_recv prints nothing with status 0, tcp_isEOF is true; TCPGW_EOF_STATUS" {
	start_peer say "$SAY_AND_CLOSE_PEER" "bye"
	port=$PEER_PORT
	h=$(tcp_createClient 127.0.0.1 "$port" 2000)
	run recv_hex_exact "$h" 3
	[ "$output" = "$(hex_of bye)" ]
	run --separate-stderr tcp_recv "$h" 100 5000
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	[ -z "$stderr" ]
	[ "$(tcp_isEOF "$h")" = true ]
	TCPGW_EOF_STATUS=5 run tcp_recv "$h" 100 5000
	[ "$status" -eq 5 ]
	[ -z "$output" ]
}

@test "options: setters print true, getters print values" {
	h=$(tcp_createClient 127.0.0.1 "$PORT" 2000)
	[ "$(tcp_setNoDelay "$h" true)" = true ]
	[ "$(tcp_setKeepAlive "$h" yes 2000 1000 4)" = true ]
	[ "$(tcp_setLinger "$h" on 0)" = true ]
	[ "$(tcp_setTTL "$h" 64)" = true ]
	[ "$(tcp_setRecvBufferSize "$h" 65536)" = true ]
	run tcp_getRecvBufferSize "$h"
	[ "$status" -eq 0 ]
	[[ $output =~ ^[0-9]+$ ]]
	(( output >= 65536 ))
	[ "$(tcp_error "$h" | jq -c .)" = '{"errnoNumber":0,"errno":null}' ]
	[ "$(tcp_pending "$h")" = 0 ]
	[ "$(tcp_constants | jq -r .TCP_ESTABLISHED)" = 4 ]
	[ "$(tcp_list | jq -r --argjson h "$h" '.[] | select(.handle == $h) | .kind')" = connection ]
	[ "$(tcp_shutdown "$h" w)" = true ]
}
