#!/usr/bin/env bats
# Static checks: shellcheck on every file, and the generated file is up to date.

load helpers

@test "shellcheck -x: zero findings on the library, the generated file and the tests" {
	cd "$REPO_ROOT"
	run shellcheck -x clients/shell/tcpgw.bash clients/shell/lib/tcpgw-methods.bash \
		clients/shell/tests/helpers.bash clients/shell/tests/*.bats
	echo "$output"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
}

@test "lib/tcpgw-methods.bash matches what tools/emitters/shell_client.py makes of the schema" {
	cd "$REPO_ROOT"
	run python3 - <<'PY'
import sys
sys.path[:0] = ["tools", "tools/emitters"]
import generate, shell_client
for path, text in shell_client.emit(generate.load_schema()).items():
    with open(path, encoding="utf-8") as f:
        if f.read() != text:
            sys.exit(f"stale: {path} (run python3 tools/generate.py)")
print("fresh")
PY
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = fresh ]
}

@test "every request method of the schema has its function" {
	cd "$REPO_ROOT"
	# shellcheck source=clients/shell/tcpgw.bash
	source clients/shell/tcpgw.bash
	mapfile -t methods < <(jq -r '.methods[] | select((.tags // []) | map(.name) | index("event") | not) | .name' schema/tcpgw.openrpc.json)
	(( ${#methods[@]} > 30 ))
	for m in "${methods[@]}"; do
		declare -F "${m//./_}" >/dev/null || { echo "missing ${m//./_}"; false; }
	done
	mapfile -t events < <(jq -r '.methods[] | select((.tags // []) | map(.name) | index("event")) | .name' schema/tcpgw.openrpc.json)
	[ "${TCPGW_EVENTS[*]}" = "${events[*]}" ]
}
