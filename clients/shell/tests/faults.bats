#!/usr/bin/env bats
# Faults (contract §10) through the bash client.

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	common_setup
}

teardown() {
	common_teardown
}

@test "fault_add, fault_list and fault_remove on a server" {
	srv=$(tcp_createServer 127.0.0.1 0)
	run fault_add "$srv" latency in 1 '{"latency": 50}'
	[ "$status" -eq 0 ]
	[ "$(jq -r .name <<<"$output")" = latency_in ]
	run fault_list "$srv"
	[ "$status" -eq 0 ]
	[ "$(jq -c '.[0].attributes' <<<"$output")" = '{"latency":50,"jitter":0}' ]
	run fault_remove "$srv" latency_in
	[ "$status" -eq 0 ]
	[ "$(fault_list "$srv" | jq length)" -eq 0 ]
}

@test "a bad attribute is -32602 naming it" {
	srv=$(tcp_createServer 127.0.0.1 0)
	run --separate-stderr fault_add "$srv" latency in 1 '{"latency": 5, "rate": 1}'
	[ "$status" -eq 1 ]
	[[ $stderr == *"attributes.rate"*"(code -32602)" ]]
}
