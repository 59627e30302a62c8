#!/usr/bin/env bats
# Host names (contract §7) through the bash client: only localhost is looked up.

# shellcheck disable=SC2154  # $stderr is set by bats (run --separate-stderr)
load helpers

setup() {
	common_setup
}

teardown() {
	common_teardown
}

@test "createServer and createClient by name; dns_lookup with a domain" {
	srv=$(tcp_createServer localhost 0)
	port=$(tcp_sockName "$srv" | jq -r .port)
	[[ $port =~ ^[0-9]+$ ]]
	h=$(tcp_createClient localhost "$port" 2000)
	[[ $h =~ ^[0-9]+$ ]]
	run dns_lookup localhost 2
	[ "$status" -eq 0 ]
	[ "$(jq -c . <<<"$output")" = '[{"domain":2,"addr":"127.0.0.1"}]' ]
}

@test "a bad name is -32602 and nothing is looked up" {
	run --separate-stderr tcp_createClient 'bad_name' 80 1000
	[ "$status" -eq 1 ]
	[[ $stderr == "tcpgw: tcp.createClient: "*"sockaddr.addr"*"(code -32602)" ]]
	run --separate-stderr dns_lookup '127.1'
	[ "$status" -eq 1 ]
	[[ $stderr == *"(code -32602)" ]]
}
