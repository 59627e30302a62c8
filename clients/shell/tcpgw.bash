# shellcheck shell=bash
#
# tcpgw.bash — bash client for the tcpgw gateway (the EdgerOS `tcp` module as
# JSON-RPC 2.0 over a Unix socket).  Hand-written core; the per-method functions
# (tcp_createClient, tcp_send, ...) are generated into lib/tcpgw-methods.bash by
# tools/generate.py and sourced at the end of this file.
#
# Usage:   source clients/shell/tcpgw.bash
#          tcpgw_open                       # one persistent session (handles live as long as it)
#          h=$(tcp_createClient 127.0.0.1 6379 2000)
#          tcp_send "$h" $'PING\r\n'
#          tcp_recv "$h" 1024 2000          # raw bytes on stdout
#          tcp_close "$h"
#          tcpgw_close
#
# Safe under `set -euo pipefail`; needs bash >= 5, jq, base64 and the tcpgw binary
# (its `tcpgw bridge` subcommand carries the session).  See README.md for the API.
#
# Exit statuses of every function (see README.md):
#   0 success · 1 error answered by the gateway (or a local failure) · 2 usage error
#   3 timed out (gateway code -32002, client-side reply timeout, no event in time)
#   4 no session / connection to the gateway lost
#   tcp_recv at end of stream: $TCPGW_EOF_STATUS (default 0) with no output.

if [[ -z ${BASH_VERSINFO[0]:-} ]] || (( BASH_VERSINFO[0] < 5 )); then
	printf 'tcpgw: bash >= 5 is required (this is %s)\n' "${BASH_VERSION:-not bash}" >&2
	# shellcheck disable=SC2317  # exit only runs when the file is executed, not sourced
	return 1 2>/dev/null || exit 1
fi

# Statuses, readonly-ish constants users may compare against.
TCPGW_E_ERROR=1
TCPGW_E_USAGE=2
TCPGW_E_TIMEOUT=3
TCPGW_E_SESSION=4

# Session state.  The descriptors are our own duplicates of the coprocess pipes:
# bash closes coproc descriptors in ( ) subshells and pipelines, which would break
# `tcp_recv "$h" | xxd`; plain descriptors survive there.
_TCPGW_DIR=""        # per-session temp dir: id counter and queued events
_TCPGW_WFD=""        # write end: bridge's stdin
_TCPGW_RFD=""        # read end: bridge's stdout
_TCPGW_PID=""        # bridge process id
_TCPGW_SOCKET_PATH=""
_TCPGW_LINE=""       # last line read from the gateway
_TCPGW_ROUTE=()      # its classification (see _tcpgw_route)
_TCPGW_NOW=0         # microseconds since the epoch (set by _tcpgw_now)
_TCPGW_JSON=""       # output of _tcpgw_json_str
_TCPGW_ID=0          # id of the request in flight (set by _tcpgw_next_id)

# ---------------------------------------------------------------------------
# small helpers

# _tcpgw_err CONTEXT MESSAGE: the one error format of this library.
_tcpgw_err() {
	printf 'tcpgw: %s: %s\n' "$1" "$2" >&2
}

# _tcpgw_debug MESSAGE: trace to stderr when TCPGW_DEBUG is non-empty.
_tcpgw_debug() {
	if [[ -n ${TCPGW_DEBUG:-} ]]; then
		printf 'tcpgw[debug]: %s\n' "$1" >&2
	fi
	return 0
}

# _tcpgw_now: microseconds since the epoch into _TCPGW_NOW (no fork).
_tcpgw_now() {
	# EPOCHREALTIME always has six decimals; dropping the separator (locale
	# dependent) gives microseconds.
	_TCPGW_NOW=${EPOCHREALTIME//[!0-9]/}
}

# _tcpgw_deadline MS: deadline in microseconds into _TCPGW_NOW; MS empty -> 0 (none).
_tcpgw_deadline() {
	if [[ -z $1 ]]; then
		_TCPGW_NOW=0
		return 0
	fi
	_tcpgw_now
	_TCPGW_NOW=$(( _TCPGW_NOW + 10#$1 * 1000 ))
}

# _tcpgw_json_str VALUE: VALUE as a JSON string literal into _TCPGW_JSON.
# Pure bash, so large payloads never hit the exec argument limit.
_tcpgw_json_str() {
	local LC_ALL=C s=$1 i c esc hex
	# Fast path: base64, hex and most protocol text need no escaping.
	if [[ $s =~ ^[A-Za-z0-9\ +/=._:,@%\#-]*$ ]]; then
		_TCPGW_JSON="\"$s\""
		return 0
	fi
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}
	s=${s//$'\r'/\\r}
	s=${s//$'\t'/\\t}
	if [[ $s == *[$'\001'-$'\037']* ]]; then
		for (( i = 1; i < 32; i++ )); do
			printf -v hex '%02x' "$i"
			printf -v c '%b' "\\x$hex"
			if [[ $s == *"$c"* ]]; then
				printf -v esc '\\u%04x' "$i"
				s=${s//"$c"/$esc}
			fi
		done
	fi
	_TCPGW_JSON="\"$s\""
}

# _tcpgw_is_open: true when a session is open in this shell.
_tcpgw_is_open() {
	[[ -n $_TCPGW_DIR && -n $_TCPGW_WFD && -n $_TCPGW_RFD ]]
}

# _tcpgw_need_session CONTEXT: fail with status 4 unless a session is open.
_tcpgw_need_session() {
	if ! _tcpgw_is_open; then
		_tcpgw_err "$1" "no session (call tcpgw_open first)"
		return "$TCPGW_E_SESSION"
	fi
}

# _tcpgw_readline DEADLINE_US: next line from the bridge into _TCPGW_LINE.
# DEADLINE_US 0 = wait forever.  Returns 0, 3 (deadline passed) or 4 (closed).
_tcpgw_readline() {
	local deadline=$1 part="" chunk="" rc remaining t
	_TCPGW_LINE=""
	while :; do
		if (( deadline == 0 )); then
			if IFS= read -r -u "$_TCPGW_RFD" chunk; then
				_TCPGW_LINE=$part$chunk
				return 0
			fi
			return "$TCPGW_E_SESSION"
		fi
		_tcpgw_now
		remaining=$(( deadline - _TCPGW_NOW ))
		# Always look at least briefly: timeout 0 means "poll", not "never read".
		(( remaining < 1000 )) && remaining=1000
		printf -v t '%d.%06d' $(( remaining / 1000000 )) $(( remaining % 1000000 ))
		if IFS= read -r -t "$t" -u "$_TCPGW_RFD" chunk; then
			_TCPGW_LINE=$part$chunk
			return 0
		else
			rc=$?
		fi
		if (( rc <= 128 )); then
			return "$TCPGW_E_SESSION"
		fi
		part+=$chunk
		chunk=""
		if [[ -z $part ]]; then
			return "$TCPGW_E_TIMEOUT"
		fi
		# A line is half way through the pipe: finish it (bounded) rather than
		# leave a fragment that would corrupt the next read.
		_tcpgw_now
		deadline=$(( _TCPGW_NOW + 30000000 ))
	done
}

# _tcpgw_route: classify _TCPGW_LINE into the array _TCPGW_ROUTE:
#   (R ID CODE ERRNO MESSAGE)  answer; ID "" for id null; CODE "" on success
#   (E METHOD HANDLE)          notification (event)
#   (X)                        anything else (batch answer, garbage)
_tcpgw_route() {
	local out
	out=$(jq -r '
		def clean: tostring | gsub("[\t\n\r\u001f]"; " ");
		if type != "object" then "X"
		elif has("result") or has("error") then
			["R", (if .id == null then "" else (.id | clean) end),
			 (if has("error") then (.error.code? // 0 | clean) else "" end),
			 ((.error.data.errno?) // "" | clean),
			 ((.error.message?) // "" | clean)] | join("\u001f")
		elif has("method") and (has("id") | not) then
			["E", (.method | clean), ((.params.handle?) // "" | clean)] | join("\u001f")
		else "X" end' <<<"$_TCPGW_LINE" 2>/dev/null) || out=X
	IFS=$'\037' read -r -a _TCPGW_ROUTE <<<"$out" || true
	# read -a drops trailing empty fields; pad so callers can index safely.
	while (( ${#_TCPGW_ROUTE[@]} < 5 )); do
		_TCPGW_ROUTE+=("")
	done
}

# _tcpgw_queue_event: append _TCPGW_LINE to the session's event queue.
_tcpgw_queue_event() {
	printf '%s\n' "$_TCPGW_LINE" >>"$_TCPGW_DIR/events"
}

# _tcpgw_next_id: a session-unique request id into _TCPGW_ID.  Kept in a file
# because most calls run inside $( ) subshells, where variables do not persist.
_tcpgw_next_id() {
	local n=0
	if [[ -s $_TCPGW_DIR/id ]]; then
		read -r n <"$_TCPGW_DIR/id" || n=0
	fi
	_TCPGW_ID=$(( n + 1 ))
	printf '%s\n' "$_TCPGW_ID" >"$_TCPGW_DIR/id"
}

# _tcpgw_write LINE: one line to the bridge; status 4 if it is gone.
_tcpgw_write() {
	# The subshell ignores SIGPIPE so a dead bridge gives an error, not a dead shell.
	( trap '' PIPE; printf '%s\n' "$1" >&"$_TCPGW_WFD" ) 2>/dev/null
}

# _tcpgw_request METHOD PARAMS_JSON: send a request, wait for its answer.
# PARAMS_JSON must be one line ("" = no params).  On success the answer line is
# in _TCPGW_LINE.  Errors are reported on stderr; status 1, 3 or 4.
_tcpgw_request() {
	local method=$1 params=$2 line deadline rc errno
	_tcpgw_need_session "$method" || return
	if [[ -n ${TCPGW_REPLY_TIMEOUT_MS:-} && ! $TCPGW_REPLY_TIMEOUT_MS =~ ^[0-9]{1,10}$ ]]; then
		_tcpgw_err "$method" "TCPGW_REPLY_TIMEOUT_MS must be a number of milliseconds, got '$TCPGW_REPLY_TIMEOUT_MS'"
		return "$TCPGW_E_USAGE"
	fi
	_tcpgw_next_id
	_tcpgw_json_str "$method"
	line="{\"jsonrpc\":\"2.0\",\"id\":$_TCPGW_ID,\"method\":$_TCPGW_JSON"
	if [[ -n $params ]]; then
		line+=",\"params\":$params"
	fi
	line+="}"
	if ! _tcpgw_write "$line"; then
		_tcpgw_err "$method" "connection to the gateway lost"
		return "$TCPGW_E_SESSION"
	fi
	_tcpgw_deadline "${TCPGW_REPLY_TIMEOUT_MS:-}"
	deadline=$_TCPGW_NOW
	while :; do
		if _tcpgw_readline "$deadline"; then rc=0; else rc=$?; fi
		if (( rc == TCPGW_E_TIMEOUT )); then
			_tcpgw_err "$method" "no answer within ${TCPGW_REPLY_TIMEOUT_MS} ms (TCPGW_REPLY_TIMEOUT_MS)"
			return "$TCPGW_E_TIMEOUT"
		elif (( rc != 0 )); then
			_tcpgw_err "$method" "connection to the gateway closed"
			return "$TCPGW_E_SESSION"
		fi
		_tcpgw_route
		case ${_TCPGW_ROUTE[0]} in
		E)
			_tcpgw_queue_event
			continue
			;;
		R)
			# id null can only be a framing error about the line just written
			# (calls are sequential within a session); other ids are answers to
			# requests given up on earlier (client-side timeout).
			if [[ -n ${_TCPGW_ROUTE[1]} && ${_TCPGW_ROUTE[1]} != "$_TCPGW_ID" ]]; then
				_tcpgw_debug "dropping stale answer: $_TCPGW_LINE"
				continue
			fi
			;;
		*)
			_tcpgw_debug "ignoring unexpected line: $_TCPGW_LINE"
			continue
			;;
		esac
		if [[ -z ${_TCPGW_ROUTE[2]} ]]; then
			return 0
		fi
		errno=""
		if [[ -n ${_TCPGW_ROUTE[3]} ]]; then
			errno=", errno ${_TCPGW_ROUTE[3]}"
		fi
		_tcpgw_err "$method" "${_TCPGW_ROUTE[4]} (code ${_TCPGW_ROUTE[2]}$errno)"
		if [[ ${_TCPGW_ROUTE[2]} == -32002 ]]; then
			return "$TCPGW_E_TIMEOUT"
		fi
		return "$TCPGW_E_ERROR"
	done
}

# _tcpgw_print MODE: print the result of _TCPGW_LINE.
#   value   scalars raw (42, true, text), objects/arrays as one line of JSON
#   handle  .handle of an object result, else as value (async accept: true)
#   json    compact JSON
_tcpgw_print() {
	local filter
	case $1 in
	handle) filter='.result | if type == "object" and has("handle") then .handle
	                          elif type == "object" or type == "array" then tojson
	                          else tostring end' ;;
	json) filter='.result | tojson' ;;
	*) filter='.result | if type == "object" or type == "array" then tojson else tostring end' ;;
	esac
	jq -r "$filter" <<<"$_TCPGW_LINE"
}

# _tcpgw_print_bytes DECODE: print the data of a recv answer in _TCPGW_LINE.
# DECODE=1: data is base64, print the raw bytes; else print the text as is.
# Returns $TCPGW_EOF_STATUS (default 0) at end of stream, printing nothing.
_tcpgw_print_bytes() {
	local flag=""
	{
		IFS= read -r flag || true
		if [[ $flag == EOF ]]; then
			cat >/dev/null
		elif [[ $1 == 1 ]]; then
			base64 -d
		else
			cat
		fi
	} < <(jq -j '.result | (if .eof == true and (.data // "") == "" then "EOF" else "DATA" end) + "\n" + (.data // "")' <<<"$_TCPGW_LINE")
	if [[ $flag == EOF ]]; then
		return "${TCPGW_EOF_STATUS:-0}"
	fi
	[[ $flag == DATA ]]
}

# ---------------------------------------------------------------------------
# argument conversion for the generated per-method functions

# _tcpgw_invoke METHOD MODE USAGE SPEC... -- ARG...
# Builds by-name params from positional shell arguments and calls METHOD.
#   SPEC  name:kind    takes the next argument ("" or missing = param absent)
#         name:kind!   required argument
#         name=value   fixed string param, takes no argument
#   name may be dotted (sockaddr.addr) to build one nested object.
#   kind  int | num | bool | str | json
#   MODE  value | handle | json | bytes (recv: raw bytes unless an encoding was given)
_tcpgw_invoke() {
	local method=$1 mode=$2 usage=$3
	shift 3
	local -a specs=()
	while (( $# > 0 )) && [[ $1 != -- ]]; do
		specs+=("$1")
		shift
	done
	(( $# > 0 )) && shift # the "--"
	local -a tops=()       # top-level names in order of first appearance
	local -A vals=()       # top-level name -> JSON text (objects: members so far)
	local -A nested=()     # top-level name -> 1 when it is an object being built
	local spec name kind req v json top sub n_arg=0 positional=0 encoding_given=0
	for spec in "${specs[@]}"; do
		if [[ $spec == *=* && $spec != *:* ]]; then
			name=${spec%%=*}
			_tcpgw_json_str "${spec#*=}"
			json=$_TCPGW_JSON
		else
			positional=$(( positional + 1 ))
			name=${spec%%:*}
			kind=${spec#*:}
			req=0
			if [[ $kind == *! ]]; then
				req=1
				kind=${kind%!}
			fi
			if (( $# > 0 )); then
				v=$1
				shift
				n_arg=$(( n_arg + 1 ))
			else
				v=""
			fi
			if [[ -z $v ]]; then
				if (( req )); then
					_tcpgw_err "$method" "missing argument '$name'; usage: $usage"
					return "$TCPGW_E_USAGE"
				fi
				continue
			fi
			case $kind in
			int)
				if [[ ! $v =~ ^-?[0-9]+$ ]] || (( ${#v} > 18 )); then
					_tcpgw_err "$method" "'$name' must be an integer, got '$v'; usage: $usage"
					return "$TCPGW_E_USAGE"
				fi
				# 10# strips leading zeros, which JSON forbids.
				if [[ $v == -* ]]; then json=$(( -(10#${v#-}) )); else json=$(( 10#$v )); fi
				;;
			num)
				if [[ ! $v =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
					_tcpgw_err "$method" "'$name' must be a number, got '$v'; usage: $usage"
					return "$TCPGW_E_USAGE"
				fi
				json=$v
				;;
			bool)
				case ${v,,} in
				true | 1 | yes | on) json=true ;;
				false | 0 | no | off) json=false ;;
				*)
					_tcpgw_err "$method" "'$name' must be true or false, got '$v'; usage: $usage"
					return "$TCPGW_E_USAGE"
					;;
				esac
				;;
			json)
				if ! json=$(jq -c . <<<"$v" 2>/dev/null) || [[ -z $json || $json == *$'\n'* ]]; then
					_tcpgw_err "$method" "'$name' must be one JSON value, got '$v'; usage: $usage"
					return "$TCPGW_E_USAGE"
				fi
				;;
			*)
				_tcpgw_json_str "$v"
				json=$_TCPGW_JSON
				;;
			esac
		fi
		[[ $name == encoding ]] && encoding_given=1
		top=${name%%.*}
		if [[ -z ${vals[$top]+set} ]]; then
			tops+=("$top")
		fi
		if [[ $name == *.* ]]; then
			sub=${name#*.}
			_tcpgw_json_str "$sub"
			nested[$top]=1
			vals[$top]+="${vals[$top]:+,}$_TCPGW_JSON:$json"
		else
			vals[$top]=$json
		fi
	done
	if (( $# > 0 )); then
		_tcpgw_err "$method" "too many arguments ($(( n_arg + $# )) given, at most $positional); usage: $usage"
		return "$TCPGW_E_USAGE"
	fi
	if [[ $mode == bytes ]] && (( ! encoding_given )); then
		tops+=(encoding)
		vals[encoding]='"base64"'
	fi
	local params="{" sep=""
	for top in "${tops[@]}"; do
		_tcpgw_json_str "$top"
		if [[ -n ${nested[$top]:-} ]]; then
			params+="$sep$_TCPGW_JSON:{${vals[$top]}}"
		else
			params+="$sep$_TCPGW_JSON:${vals[$top]}"
		fi
		sep=","
	done
	params+="}"
	_tcpgw_request "$method" "$params" || return
	case $mode in
	bytes)
		if (( encoding_given )); then
			_tcpgw_print_bytes 0
		else
			_tcpgw_print_bytes 1
		fi
		;;
	*) _tcpgw_print "$mode" ;;
	esac
}

# ---------------------------------------------------------------------------
# public API: session

# tcpgw_default_socket: print the socket path the gateway uses by default.
tcpgw_default_socket() {
	if [[ -n ${TCPGW_SOCKET:-} ]]; then
		printf '%s\n' "$TCPGW_SOCKET"
	elif [[ -n ${XDG_RUNTIME_DIR:-} ]]; then
		printf '%s\n' "$XDG_RUNTIME_DIR/tcpgw.sock"
	else
		printf '/tmp/tcpgw-%s.sock\n' "$UID"
	fi
}

# tcpgw_open [--keep MS] [SOCKET|ssh://[USER@]HOST[:PORT][/SOCKET]]: start the
# session: one persistent connection to the gateway carried by a `tcpgw bridge`
# coprocess (or $TCPGW_BRIDGE, a command run by bash -c with the address as $1, and
# `--keep MS` as $2 $3 when given).  An ssh:// address goes to the bridge as is: it
# runs ssh to the remote `tcpgw bridge`.  With --keep the bridge keeps the session
# through a dropped gateway connection (it resumes within MS milliseconds; contract
# §12).  Must run in the main shell, not in $( ).
tcpgw_open() {
	local sock="" bin remote=0 open_ms keep=()
	if [[ ${1:-} == --keep ]]; then
		if [[ ! ${2:-} =~ ^[0-9]{1,7}$ ]] || (( 10#$2 < 1 || 10#$2 > 3600000 )); then
			_tcpgw_err open "--keep takes milliseconds, 1..3600000"
			return "$TCPGW_E_USAGE"
		fi
		keep=(--keep "$((10#$2))")
		shift 2
	fi
	sock=${1:-}
	if (( $# > 1 )); then
		_tcpgw_err open "usage: tcpgw_open [--keep MS] [SOCKET|ssh://[USER@]HOST[:PORT][/SOCKET]]"
		return "$TCPGW_E_USAGE"
	fi
	if _tcpgw_is_open; then
		_tcpgw_err open "a session is already open (tcpgw_close first)"
		return "$TCPGW_E_USAGE"
	fi
	if [[ -z $sock ]]; then
		sock=$(tcpgw_default_socket)
	fi
	if ! command -v jq >/dev/null; then
		_tcpgw_err open "jq is required but not found in PATH"
		return "$TCPGW_E_ERROR"
	fi
	# Any scheme:// is the bridge's to judge (it refuses all but ssh:// with a clear message).
	if [[ $sock =~ ^[A-Za-z][A-Za-z0-9+.-]*:// ]]; then
		remote=1
	elif [[ ! -S $sock ]]; then
		_tcpgw_err open "no gateway socket at $sock (is 'tcpgw serve' running?)"
		return "$TCPGW_E_SESSION"
	fi
	bin=${TCPGW_BIN:-tcpgw}
	if [[ -z ${TCPGW_BRIDGE:-} ]] && ! command -v "$bin" >/dev/null; then
		_tcpgw_err open "gateway binary '$bin' not found (set TCPGW_BIN or PATH)"
		return "$TCPGW_E_ERROR"
	fi
	_TCPGW_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tcpgw-shell.XXXXXX") || {
		_TCPGW_DIR=""
		_tcpgw_err open "cannot create a temporary directory"
		return "$TCPGW_E_ERROR"
	}
	: >"$_TCPGW_DIR/events"
	if [[ -n ${TCPGW_BRIDGE:-} ]]; then
		coproc _TCPGW_BRIDGE { exec bash -c "$TCPGW_BRIDGE" tcpgw-bridge "$sock" "${keep[@]}"; }
	elif (( remote )); then
		# The bridge's own messages (ssh's too) reach our stderr directly.
		coproc _TCPGW_BRIDGE { exec "$bin" bridge "${keep[@]}" -- "$sock"; }
	else
		coproc _TCPGW_BRIDGE { exec "$bin" bridge --socket "$sock" "${keep[@]}"; }
	fi
	_TCPGW_PID=$_TCPGW_BRIDGE_PID
	# Own duplicates (see the note at the top); then drop bash's coproc copies.
	local cw=${_TCPGW_BRIDGE[1]} cr=${_TCPGW_BRIDGE[0]}
	exec {_TCPGW_WFD}>&"$cw" {_TCPGW_RFD}<&"$cr"
	exec {cw}>&- {cr}<&-
	_TCPGW_SOCKET_PATH=$sock
	# The bridge connects asynchronously: prove the session with one round trip.
	# ssh may take a while to log in: a longer default bound.
	open_ms=${TCPGW_OPEN_TIMEOUT_MS:-}
	if [[ -z $open_ms ]]; then
		if (( remote )); then open_ms=30000; else open_ms=5000; fi
	fi
	if ! TCPGW_REPLY_TIMEOUT_MS=$open_ms _tcpgw_request gateway.info "" 2>"$_TCPGW_DIR/open.err"; then
		_tcpgw_err open "cannot talk to the gateway at $sock: $(tr '\n' ' ' <"$_TCPGW_DIR/open.err")"
		tcpgw_close
		return "$TCPGW_E_SESSION"
	fi
	return 0
}

# tcpgw_close: end the session (the gateway closes every handle of it).
# Idempotent.  Waits up to TCPGW_CLOSE_TIMEOUT_MS (default 2000) for the bridge to
# exit after its stdin closes, then terminates it.
tcpgw_close() {
	if [[ -z $_TCPGW_DIR ]]; then
		return 0
	fi
	local deadline ms=${TCPGW_CLOSE_TIMEOUT_MS:-2000}
	[[ $ms =~ ^[0-9]{1,10}$ ]] || ms=2000
	if [[ -n $_TCPGW_WFD ]]; then
		exec {_TCPGW_WFD}>&-
	fi
	if [[ -n $_TCPGW_RFD ]]; then
		# Drain until the bridge closes its stdout (it has exited), bounded.
		_tcpgw_deadline "$ms"
		deadline=$_TCPGW_NOW
		while _tcpgw_readline "$deadline"; do
			:
		done
		exec {_TCPGW_RFD}<&-
	fi
	if [[ -n $_TCPGW_PID ]]; then
		if kill -0 "$_TCPGW_PID" 2>/dev/null; then
			kill -TERM "$_TCPGW_PID" 2>/dev/null || true
		fi
		wait "$_TCPGW_PID" 2>/dev/null || true
	fi
	rm -rf -- "$_TCPGW_DIR"
	_TCPGW_DIR="" _TCPGW_WFD="" _TCPGW_RFD="" _TCPGW_PID="" _TCPGW_SOCKET_PATH=""
	return 0
}

# tcpgw_session_socket: print the socket path of the open session.
tcpgw_session_socket() {
	_tcpgw_need_session session || return
	printf '%s\n' "$_TCPGW_SOCKET_PATH"
}

# ---------------------------------------------------------------------------
# public API: calls

# tcpgw_call METHOD [PARAMS-JSON]: any method; prints the result as one line of JSON.
tcpgw_call() {
	if (( $# < 1 || $# > 2 )) || [[ -z $1 ]]; then
		_tcpgw_err call "usage: tcpgw_call METHOD [PARAMS-JSON]"
		return "$TCPGW_E_USAGE"
	fi
	local params=""
	if [[ -n ${2:-} ]]; then
		# Compact it: the wire is one message per line.
		if ! params=$(jq -c . <<<"$2" 2>/dev/null) || [[ -z $params || $params == *$'\n'* ]]; then
			_tcpgw_err "$1" "params must be one JSON object or array, got '$2'"
			return "$TCPGW_E_USAGE"
		fi
	fi
	_tcpgw_request "$1" "$params" || return
	_tcpgw_print json
}

# tcp_send_file HANDLE FILE|- [TIMEOUT]: send a file's bytes (binary safe; - = stdin).
# Prints the number of bytes sent.
tcp_send_file() {
	local usage='tcp_send_file HANDLE FILE|- [TIMEOUT]' data
	if (( $# < 2 || $# > 3 )); then
		_tcpgw_err tcp.send "usage: $usage"
		return "$TCPGW_E_USAGE"
	fi
	if [[ $2 == - ]]; then
		data=$(base64 -w0) || return "$TCPGW_E_ERROR"
	elif [[ -r $2 && ! -d $2 ]]; then
		data=$(base64 -w0 <"$2") || return "$TCPGW_E_ERROR"
	else
		_tcpgw_err tcp.send "cannot read file '$2'"
		return "$TCPGW_E_USAGE"
	fi
	if [[ -z $data ]]; then
		_tcpgw_err tcp.send "nothing to send: '$2' is empty"
		return "$TCPGW_E_USAGE"
	fi
	_tcpgw_invoke tcp.send value "$usage" handle:int! data:str! encoding=base64 timeout:int -- "$1" "$data" "${3:-}"
}

# ---------------------------------------------------------------------------
# public API: events

# _tcpgw_take_queued METHOD HANDLE: pop the first queued event matching METHOD
# ("" = any) and HANDLE ("" = any) into _TCPGW_LINE.  Returns 1 if none.
_tcpgw_take_queued() {
	local q=$_TCPGW_DIR/events i=0 hit=-1
	[[ -s $q ]] || return 1
	local -a lines=() keys=()
	mapfile -t lines <"$q"
	if [[ -z $1 && -z $2 ]]; then
		hit=0
	else
		mapfile -t keys < <(jq -r '"\(.method)\u001f\(.params.handle? // "")"' "$q" 2>/dev/null)
		for (( i = 0; i < ${#keys[@]}; i++ )); do
			if [[ ( -z $1 || ${keys[i]%%$'\037'*} == "$1" ) && ( -z $2 || ${keys[i]#*$'\037'} == "$2" ) ]]; then
				hit=$i
				break
			fi
		done
	fi
	(( hit >= 0 && hit < ${#lines[@]} )) || return 1
	_TCPGW_LINE=${lines[hit]}
	unset 'lines[hit]'
	if (( ${#lines[@]} > 0 )); then
		printf '%s\n' "${lines[@]}" >"$q"
	else
		: >"$q"
	fi
}

# tcpgw_wait_event METHOD [TIMEOUT_MS] [HANDLE]: wait for the next event named
# METHOD ("" = any) about HANDLE ("" = any) and print it as one JSON line.  Other
# events stay queued in order.  TIMEOUT_MS absent or "" = wait forever, 0 = poll.
# Status 3 (and no output, no message) when none arrived in time.
tcpgw_wait_event() {
	if (( $# > 3 )) || [[ -n ${2:-} && ! ${2:-} =~ ^[0-9]{1,10}$ ]]; then
		_tcpgw_err event "usage: tcpgw_wait_event METHOD [TIMEOUT_MS] [HANDLE]"
		return "$TCPGW_E_USAGE"
	fi
	local want=${1:-} handle=${3:-} deadline rc known=""
	if [[ -n $want ]]; then
		for known in "${TCPGW_EVENTS[@]}" ""; do
			[[ $known == "$want" ]] && break
		done
		if [[ -z $known ]]; then
			_tcpgw_err event "unknown event '$want' (one of: ${TCPGW_EVENTS[*]})"
			return "$TCPGW_E_USAGE"
		fi
	fi
	_tcpgw_need_session event || return
	if _tcpgw_take_queued "$want" "$handle"; then
		printf '%s\n' "$_TCPGW_LINE"
		return 0
	fi
	_tcpgw_deadline "${2:-}"
	deadline=$_TCPGW_NOW
	if [[ ${2:-} == 0 ]]; then
		_tcpgw_now
		deadline=$_TCPGW_NOW # poll: whatever is already in the pipe
	fi
	while :; do
		if _tcpgw_readline "$deadline"; then rc=0; else rc=$?; fi
		if (( rc == TCPGW_E_TIMEOUT )); then
			return "$TCPGW_E_TIMEOUT"
		elif (( rc != 0 )); then
			_tcpgw_err event "connection to the gateway closed"
			return "$TCPGW_E_SESSION"
		fi
		_tcpgw_route
		if [[ ${_TCPGW_ROUTE[0]} != E ]]; then
			_tcpgw_debug "dropping stale line: $_TCPGW_LINE"
			continue
		fi
		if [[ ( -z $want || ${_TCPGW_ROUTE[1]} == "$want" ) && ( -z $handle || ${_TCPGW_ROUTE[2]} == "$handle" ) ]]; then
			printf '%s\n' "$_TCPGW_LINE"
			return 0
		fi
		_tcpgw_queue_event
	done
}

# tcpgw_next_event [TIMEOUT_MS]: print the next event (queued first) as one JSON line.
tcpgw_next_event() {
	if (( $# > 1 )); then
		_tcpgw_err event "usage: tcpgw_next_event [TIMEOUT_MS]"
		return "$TCPGW_E_USAGE"
	fi
	tcpgw_wait_event "" "${1:-}"
}

# tcpgw_pending_events: print how many events are queued (already received).
tcpgw_pending_events() {
	_tcpgw_need_session event || return
	local -a lines=()
	mapfile -t lines <"$_TCPGW_DIR/events"
	printf '%s\n' "${#lines[@]}"
}

# tcpgw_event_bytes EVENT-JSON: print the raw bytes of a tcp.onData event.
tcpgw_event_bytes() {
	if (( $# != 1 )); then
		_tcpgw_err event "usage: tcpgw_event_bytes EVENT-JSON"
		return "$TCPGW_E_USAGE"
	fi
	local b64
	if ! b64=$(jq -er '.params | select(.encoding == "base64" or .encoding == null) | .data' <<<"$1" 2>/dev/null); then
		_tcpgw_err event "not a tcp.onData event with base64 data: $1"
		return "$TCPGW_E_USAGE"
	fi
	base64 -d <<<"$b64"
}

# tcpgw_event_field EVENT-JSON FIELD: print .params.FIELD of an event (raw scalars,
# JSON for objects); e.g. tcpgw_event_field "$ev" client.
tcpgw_event_field() {
	if (( $# != 2 )); then
		_tcpgw_err event "usage: tcpgw_event_field EVENT-JSON FIELD"
		return "$TCPGW_E_USAGE"
	fi
	jq -r --arg f "$2" '.params[$f] | if type == "object" or type == "array" then tojson else tostring end' <<<"$1"
}

# tcpgw_attach TOKEN: join the raw byte stream of a handle (a token from
# tcp_stream) to stdin/stdout, through `tcpgw attach` on the session's socket (or the
# default one without a session).  stdin's end shuts the connection's writing side;
# returns 0 once the peer's end of stream has been written out and stdin has ended,
# 1 when the token is refused (the error object on stderr) or the stream fails.
tcpgw_attach() {
	if (( $# != 1 )) || [[ -z $1 ]]; then
		_tcpgw_err attach "usage: tcpgw_attach TOKEN"
		return "$TCPGW_E_USAGE"
	fi
	local sock=$_TCPGW_SOCKET_PATH
	[[ -n $sock ]] || sock=$(tcpgw_default_socket)
	# `--`: a token may begin with "-" (base64url), which would parse as an option.
	"${TCPGW_BIN:-tcpgw}" attach --socket "$sock" -- "$1"
}

# tcpgw_help [FUNCTION]: usage of one generated function, or of all of them.
tcpgw_help() {
	local fn
	if (( $# == 0 )); then
		for fn in "${!_TCPGW_USAGE[@]}"; do
			printf '%s\n' "${_TCPGW_USAGE[$fn]}"
		done | sort
		return 0
	fi
	if [[ -z ${_TCPGW_USAGE[$1]+set} ]]; then
		_tcpgw_err help "no generated function '$1'"
		return "$TCPGW_E_USAGE"
	fi
	printf '%s\n' "${_TCPGW_USAGE[$1]}"
}

# The generated per-method functions, next to this file.
if [[ ${BASH_SOURCE[0]} == */* ]]; then
	_TCPGW_HOME=${BASH_SOURCE[0]%/*}
else
	_TCPGW_HOME=.
fi
# shellcheck source=clients/shell/lib/tcpgw-methods.bash
source "$_TCPGW_HOME/lib/tcpgw-methods.bash"
