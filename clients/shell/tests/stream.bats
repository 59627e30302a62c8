#!/usr/bin/env bats
# tcp_stream + tcpgw_attach: a handle's raw byte stream on stdin/stdout, against a real
# Python peer that echoes what it gets upper-cased, then reports what it saw.

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

# Python peer: for one connection, reads to EOF, sends it back upper-cased, closes.
UPPER_PEER='
import socket, sys, os
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept()
got = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    got += d
c.sendall(got.upper())
c.close()
'

setup() {
	common_setup
	start_peer upper "$UPPER_PEER"
}

teardown() {
	common_teardown
}

@test "tcpgw_attach moves stdin to the peer and the peer's bytes to stdout" {
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 2000)
	token=$(tcp_stream "$h" | jq -r .token)
	[[ $token =~ ^[A-Za-z0-9_-]{22}$ ]]
	python3 -c 'import sys; sys.stdout.buffer.write(b"binary \x00\xff and text\n" * 50000)' >"$T_DIR/in"
	LC_ALL=C tr '[:lower:]' '[:upper:]' <"$T_DIR/in" >"$T_DIR/expected"
	tcpgw_attach "$token" <"$T_DIR/in" >"$T_DIR/out" 2>"$T_DIR/err"
	[ ! -s "$T_DIR/err" ]
	cmp "$T_DIR/expected" "$T_DIR/out"
	# The owner's handle is gone once the stream has finished.
	run tcpgw_wait_event tcp.onClose 5000 "$h"
	[ "$status" -eq 0 ]
	[ "$(tcp_list | jq length)" = 0 ]
}

@test "tcpgw_attach: a used token is refused with -32008 and exit status 1" {
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" 2000)
	token=$(tcp_stream "$h" | jq -r .token)
	printf 'x' | tcpgw_attach "$token" >"$T_DIR/out"
	[ "$(cat "$T_DIR/out")" = X ]
	run --separate-stderr tcpgw_attach "$token" </dev/null
	[ "$status" -eq 1 ]
	[ -z "$output" ]
	[ "$(jq .code <<<"$stderr")" = -32008 ]
	run tcpgw_attach
	[ "$status" -eq 2 ]
}
