#!/usr/bin/env bats
# Serving a page to curl with async accept: tcp.onAccept / tcp.onData events.

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	common_setup
}

teardown() {
	common_teardown
}

@test "serve a page to curl through tcp.onAccept and tcp.onData" {
	srv=$(tcp_createServer 127.0.0.1 0)
	port=$(tcp_sockName "$srv" | jq -r .port)
	[[ $port =~ ^[0-9]+$ ]]
	(( port > 0 ))
	[ "$(tcp_accept "$srv" "" true)" = true ]

	timeout 20 curl -sS --max-time 10 -o "$T_DIR/page" -w '%{http_code}' \
		"http://127.0.0.1:$port/hello?x=1" >"$T_DIR/code" 2>"$T_DIR/curl.err" 3>&- &
	curl_pid=$!
	PEER_PIDS+=("$curl_pid")

	ev=$(tcpgw_wait_event tcp.onAccept 5000)
	[ "$(tcpgw_event_field "$ev" handle)" = "$srv" ]
	client=$(tcpgw_event_field "$ev" client)
	[[ $client =~ ^[0-9]+$ ]]
	[ "$(tcpgw_event_field "$ev" remote | jq -r .addr)" = 127.0.0.1 ]

	# Gather the request until the blank line (bounded: 50 events).
	request=""
	for (( i = 0; i < 50; i++ )); do
		ev=$(tcpgw_wait_event tcp.onData 5000 "$client")
		# the x keeps trailing newlines from being stripped by $( )
		chunk=$(tcpgw_event_bytes "$ev"; printf x)
		request+=${chunk%x}
		[[ $request == *$'\r\n\r\n'* ]] && break
	done
	[[ $request == "GET /hello?x=1 HTTP/1.1"$'\r\n'* ]]
	[[ $request == *$'\r\n'"Host: 127.0.0.1:$port"$'\r\n'* ]]

	body=$'hello from bash\n'
	tcp_send "$client" "HTTP/1.1 200 OK"$'\r\n'"Content-Type: text/plain"$'\r\n'"Content-Length: ${#body}"$'\r\n'"Connection: close"$'\r\n\r\n'"$body" >/dev/null
	[ "$(tcp_close "$client")" = true ]

	wait "$curl_pid"
	[ "$(cat "$T_DIR/code")" = 200 ]
	[ "$(cat "$T_DIR/page")" = "hello from bash" ]
}

@test "events: async connect, flowing data, onEnd, onClose after our shutdown; queue keeps order" {
	start_peer say "$SAY_AND_CLOSE_PEER" "hi there"
	h=$(tcp_createClient 127.0.0.1 "$PEER_PORT" "" true)
	[[ $h =~ ^[0-9]+$ ]]
	ev=$(tcpgw_wait_event tcp.onConnect 5000 "$h")
	[ "$(tcpgw_event_field "$ev" remote | jq -r .port)" = "$PEER_PORT" ]
	# wait for the end first: the data event before it stays queued, in order
	ev=$(tcpgw_wait_event tcp.onEnd 5000 "$h")
	[ "$(jq -r .method <<<"$ev")" = tcp.onEnd ]
	(( $(tcpgw_pending_events) >= 1 ))
	data=""
	for (( i = 0; i < 20; i++ )); do
		ev=$(tcpgw_next_event 0) || break
		[ "$(jq -r .method <<<"$ev")" = tcp.onData ]
		data+=$(tcpgw_event_bytes "$ev")
	done
	[ "$data" = "hi there" ]
	[ "$(tcpgw_pending_events)" = 0 ]
	# our side finishes too: both directions done -> tcp.onClose, handle gone
	tcp_shutdown "$h" w >/dev/null
	ev=$(tcpgw_wait_event tcp.onClose 5000 "$h")
	[ "$(tcpgw_event_field "$ev" handle)" = "$h" ]
	run --separate-stderr tcp_getState "$h"
	[ "$status" -eq 1 ]
	[[ $stderr == *"(code -32000)"* ]]
}

@test "events: failed async connect reports tcp.onConnect with an error" {
	port=$(free_port)
	h=$(tcp_createClient 127.0.0.1 "$port" 2000 true)
	ev=$(tcpgw_wait_event tcp.onConnect 5000 "$h")
	[ "$(tcpgw_event_field "$ev" error | jq -r .errno)" = ECONNREFUSED ]
}
