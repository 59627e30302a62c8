"""Tests of schema/tcpgw.openrpc.json, the generator, and (when built) the gateway's use of the schema.

Run: python3 -m pytest tests/schema -q
The gateway tests use $TCPGW_BIN, else .build/debug/tcpgw, and skip only when that binary is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "schema" / "tcpgw.openrpc.json"
# The shared folder beside the repository holds the OpenRPC meta-schema.
META_PATH_CANDIDATES = [REPO / "schema" / "openrpc-meta-schema.json", REPO.parent / "shared" / "openrpc-meta-schema.json"]
SWIFT_DOC = REPO / "Sources" / "TCPGateway" / "Generated" / "OpenRPCDocument.swift"

# The method table of methods.md, in its order (by-position order of the methods array).
EXPECTED_METHODS = [
    "tcp.createServer", "tcp.createClient", "tcp.createByFd", "tcp.sockFd", "tcp.accept", "tcp.send",
    "tcp.sendto", "tcp.recv", "tcp.recvfrom", "tcp.pending", "tcp.shutdown", "tcp.mports", "tcp.error",
    "tcp.close", "tcp.flyAway", "tcp.isEOF", "tcp.sockName", "tcp.peerName", "tcp.bindToDevice",
    "tcp.setKeepAlive", "tcp.setNoDelay", "tcp.setLinger", "tcp.setTTL", "tcp.setReuseAddr",
    "tcp.setIPv6Only", "tcp.getState", "tcp.getRecvBufferSize", "tcp.getSendBufferSize",
    "tcp.setRecvBufferSize", "tcp.setSendBufferSize", "tcp.constants", "tcp.pause", "tcp.resume",
    "tcp.list", "gateway.info", "rpc.discover",
    # Part two (contract §7).
    "dns.lookup",
    # Faults (contract §10).
    "fault.add", "fault.remove", "fault.list",
    # Raw byte streams (contract §11).
    "tcp.pipe", "tcp.stream", "tcp.attach",
    # Resumable sessions (contract §12).
    "session.keep", "session.ack", "session.resume",
]
EXPECTED_EVENTS = ["tcp.onConnect", "tcp.onAccept", "tcp.onData", "tcp.onEnd", "tcp.onClose"]
EXPECTED_CODES = {-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32003, -32004, -32005, -32006, -32007, -32008}
# Methods whose descriptor travels with SCM_RIGHTS, and which line of the call carries it.
DESCRIPTOR_FLAGS = {"tcp.createByFd": "request", "tcp.flyAway": "answer"}
SWIFT_PARAMS = REPO / "Sources" / "TCPGateway" / "Generated" / "MethodParams.swift"
BY_NAME_ONLY = {("tcp.accept", "remoteAddr"), ("tcp.sendto", "remoteAddr"), ("tcp.recvfrom", "remoteAddr"),
                ("tcp.createByFd", "sockFd")}
# Keywords the gateway's own validator understands (methods.md, "Server-side validation").
ALLOWED_KEYWORDS = {"type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "properties",
                    "required", "additionalProperties", "items", "minItems", "maxItems", "oneOf", "anyOf",
                    "$ref", "description", "title", "default", "examples"}
REF_RE = re.compile(r"^#/components/(schemas|contentDescriptors)/[A-Za-z0-9_]+$")
CONSTANTS = {
    "AF_INET": 2, "AF_INET6": 10, "INADDR_NONE": "255.255.255.255", "INADDR_LOOPBACK": "127.0.0.1",
    "INADDR_ANY": "0.0.0.0", "INADDR_BROADCAST": "255.255.255.255", "IN6ADDR_ANY": "::", "IN6ADDR_LOOPBACK": "::1",
    "IN6ADDR_NODELOCAL_ALLNODES": "ff01::1", "IN6ADDR_LINKLOCAL_ALLNODES": "ff02::1",
    "IN6ADDR_LINKLOCAL_ALLROUTERS": "ff02::2", "TCP_CLOSED": 0, "TCP_LISTEN": 1, "TCP_SYN_SENT": 2,
    "TCP_SYN_RCVD": 3, "TCP_ESTABLISHED": 4, "TCP_FIN_WAIT_1": 5, "TCP_FIN_WAIT_2": 6, "TCP_CLOSE_WAIT": 7,
    "TCP_CLOSING": 8, "TCP_LAST_ACK": 9, "TCP_TIME_WAIT": 10,
}


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow local $ref pointers (bounded: a cycle fails the test)."""
    for _ in range(16):
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        target: Any = doc
        for part in pointer[2:].split("/"):
            assert part in target, f"dangling $ref {pointer}"
            target = target[part]
        node = target
    raise AssertionError(f"$ref chain too long at {node}")


def is_event(method: dict[str, Any]) -> bool:
    return any(t.get("name") == "event" for t in method.get("tags", []))


def calls(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in doc["methods"] if not is_event(m)]


def events(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in doc["methods"] if is_event(m)]


def params_of(doc: dict[str, Any], method: dict[str, Any]) -> list[dict[str, Any]]:
    return [resolve(doc, p) for p in method["params"]]


def validator_for(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    # Embedding the components makes "#/components/..." resolve against this root; draft-07 ignores the
    # unknown "components" keyword itself.
    root = dict(schema)
    root["components"] = doc["components"]
    return jsonschema.Draft7Validator(root)


def accepts(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    return validator_for(doc, schema).is_valid(value)


def walk_schema(doc: dict[str, Any], schema: Any, where: str, seen: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, subschema) for the schema and everything it contains or references."""
    assert isinstance(schema, dict), f"{where}: schema must be an object"
    yield where, schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref not in seen:
            seen.add(ref)
            yield from walk_schema(doc, resolve(doc, schema), ref, seen)
    for key, sub in schema.get("properties", {}).items():
        yield from walk_schema(doc, sub, f"{where}.properties.{key}", seen)
    if isinstance(schema.get("items"), dict):
        yield from walk_schema(doc, schema["items"], f"{where}.items", seen)
    for key in ("oneOf", "anyOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from walk_schema(doc, sub, f"{where}.{key}[{i}]", seen)


# ------------------------------------------------------------------------------------------ the schema

def test_schema_is_strict_json_with_lf_and_final_newline() -> None:
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "\r" not in text

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
        return dict(pairs)

    json.loads(text, object_pairs_hook=no_dupes)


def test_validates_against_openrpc_meta_schema(doc: dict[str, Any]) -> None:
    meta_path = next((p for p in META_PATH_CANDIDATES if p.exists()), None)
    if meta_path is None:
        pytest.skip("OpenRPC meta-schema not available")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft7Validator(meta).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


def test_info_and_server(doc: dict[str, Any]) -> None:
    assert doc["openrpc"] == "1.3.2"
    assert doc["info"]["title"] == "tcpgw" and doc["info"]["version"] == "0.1.0" and doc["info"]["description"]
    assert doc["servers"] and doc["servers"][0]["url"].startswith("unix://")


def test_methods_exactly_as_table_in_order(doc: dict[str, Any]) -> None:
    assert [m["name"] for m in calls(doc)] == EXPECTED_METHODS
    assert [m["name"] for m in events(doc)] == EXPECTED_EVENTS
    # Events come after the methods, so method positions never interleave with them.
    assert [m["name"] for m in doc["methods"]] == EXPECTED_METHODS + EXPECTED_EVENTS


def test_every_method_is_documented(doc: dict[str, Any]) -> None:
    for m in doc["methods"]:
        assert m.get("summary") and len(m.get("description", "")) > 40, m["name"]
        assert m.get("tags"), m["name"]


def test_param_structure_and_unique_names(doc: dict[str, Any]) -> None:
    for m in calls(doc):
        assert m["paramStructure"] == "either", m["name"]
        names = [p["name"] for p in params_of(doc, m)]
        assert len(names) == len(set(names)), m["name"]
    for m in events(doc):
        assert m["paramStructure"] == "by-name", m["name"]


def test_every_param_has_schema_with_type_and_description(doc: dict[str, Any]) -> None:
    for m in doc["methods"]:
        for p in params_of(doc, m):
            schema = resolve(doc, p["schema"])
            assert "type" in schema, f"{m['name']}.{p['name']} has no type"
            assert p.get("description"), f"{m['name']}.{p['name']} has no description"
            assert isinstance(p.get("required"), bool), f"{m['name']}.{p['name']} must say required true/false"


def test_by_name_only_params_are_exactly_the_placeholders_and_last(doc: dict[str, Any]) -> None:
    found = set()
    for m in calls(doc):
        params = params_of(doc, m)
        flags = [bool(p.get("x-by-name-only")) for p in params]
        # Once a by-name-only param appears, all following ones must be by-name-only too.
        assert flags == sorted(flags), f"{m['name']}: by-name-only params must be last"
        found |= {(m["name"], p["name"]) for p in params if p.get("x-by-name-only")}
        assert all(not p.get("required") for p in params if p.get("x-by-name-only")), m["name"]
    assert found == BY_NAME_ONLY


def test_required_positions_come_first(doc: dict[str, Any]) -> None:
    for m in calls(doc):
        positional = [p for p in params_of(doc, m) if not p.get("x-by-name-only")]
        req = [bool(p.get("required")) for p in positional]
        assert req == sorted(req, reverse=True), f"{m['name']}: a required position follows an optional one"


def test_optional_params_accept_null_except_booleans(doc: dict[str, Any]) -> None:
    for m in calls(doc):
        for p in params_of(doc, m):
            schema = resolve(doc, p["schema"])
            where = f"{m['name']}.{p['name']}"
            if schema.get("type") == "boolean":
                assert not accepts(doc, p["schema"], None), where
                assert not accepts(doc, p["schema"], 1) and not accepts(doc, p["schema"], "true"), where
            elif p.get("required"):
                assert not accepts(doc, p["schema"], None), f"{where}: required params must not accept null"
            else:
                assert accepts(doc, p["schema"], None), f"{where}: optional params must accept null"


def test_param_schemas_use_only_server_keywords(doc: dict[str, Any]) -> None:
    roots: list[tuple[str, Any]] = []
    for m in doc["methods"]:
        for raw in m["params"]:
            if "$ref" in raw:
                assert REF_RE.match(raw["$ref"]), raw["$ref"]
            p = resolve(doc, raw)
            roots.append((f"{m['name']}.{p['name']}", p["schema"]))
    roots += [(f"components.schemas.{k}", v) for k, v in doc["components"]["schemas"].items()]
    for where, root in roots:
        for loc, sub in walk_schema(doc, root, where, set()):
            extra = set(sub) - ALLOWED_KEYWORDS
            assert not extra, f"{loc}: keywords {extra} not understood by the gateway"
            if "$ref" in sub:
                assert REF_RE.match(sub["$ref"]), f"{loc}: $ref {sub['$ref']}"
            if "additionalProperties" in sub:
                assert isinstance(sub["additionalProperties"], bool), loc


def test_object_params_are_closed(doc: dict[str, Any]) -> None:
    for m in calls(doc):
        for p in params_of(doc, m):
            for loc, sub in walk_schema(doc, p["schema"], f"{m['name']}.{p['name']}", set()):
                if sub.get("type") == "object":
                    assert sub.get("additionalProperties") is False, loc
                    assert sub.get("required"), loc


@pytest.mark.parametrize("method,param,good,bad", [
    ("tcp.setTTL", "timeToLive", [1, 64, 255], [0, 256, -1, "64", 64.5, None, True]),
    ("tcp.createServer", "sockaddr",
     [{"addr": "127.0.0.1", "port": 0}, {"domain": 10, "addr": "::1", "port": 65535}],
     [{"addr": "127.0.0.1"}, {"addr": "127.0.0.1", "port": 65536}, {"addr": "127.0.0.1", "port": -1},
      {"addr": "127.0.0.1", "port": 1, "extra": 1}, {"domain": 3, "addr": "127.0.0.1", "port": 1},
      {"addr": "", "port": 1}, "127.0.0.1:80", None]),
    ("tcp.setRecvBufferSize", "size", [1024, 16777216], [1023, 16777217, None, "4096"]),
    ("tcp.setSendBufferSize", "size", [1024, 65536], [0, 16777217]),
    ("tcp.send", "data", ["", "abc", ["a"], ["a"] * 1024], [[], ["a"] * 1025, [1], 5, None, {"a": 1}]),
    ("tcp.send", "encoding", ["utf8", "base64", "hex", None], ["latin1", "UTF8", 1]),
    ("tcp.recv", "length", [1, 16777216, None], [0, 16777217, -5]),
    ("tcp.recv", "timeout", [0, 2147483647, None], [-1, 2147483648, "10", 1.5]),
    ("tcp.createClient", "async", [True, False], [None, 0, "false"]),
    ("tcp.mports", "mports", [0, 255], [-1, 256, None]),
    ("tcp.setLinger", "linger", [{"onoff": True, "time": 0}, {"onoff": False, "time": 65535}],
     [{"onoff": 1, "time": 0}, {"onoff": True}, {"onoff": True, "time": 65536}, {"onoff": True, "time": 1, "x": 0}]),
    ("tcp.shutdown", "how", ["r", "w", "rw", None], ["wr", "", "RW"]),
    ("tcp.setKeepAlive", "count", [1, 127, None], [0, 128]),
    ("tcp.bindToDevice", "ifname", ["", "lo", "a" * 15, None], ["a" * 16, 3]),
    ("tcp.createServer", "dev", ["lo", None], ["", "a" * 16]),
    ("tcp.createServer", "backlog", [0, 1, 65535, None], [-1, 65536]),
    ("tcp.close", "handle", [1, 9007199254740991], [0, -1, None, "1", 1.5]),
])
def test_param_ranges(doc: dict[str, Any], method: str, param: str, good: list[Any], bad: list[Any]) -> None:
    m = next(x for x in doc["methods"] if x["name"] == method)
    p = next(x for x in params_of(doc, m) if x["name"] == param)
    for value in good:
        assert accepts(doc, p["schema"], value), f"{method}.{param} should accept {value!r}"
    for value in bad:
        assert not accepts(doc, p["schema"], value), f"{method}.{param} should refuse {value!r}"


def test_results(doc: dict[str, Any]) -> None:
    for m in calls(doc):
        result = resolve(doc, m.get("result"))
        assert result and result.get("name") and "schema" in result, m["name"]
        for _, sub in walk_schema(doc, result["schema"], m["name"], set()):
            if "$ref" in sub:
                assert REF_RE.match(sub["$ref"]), sub["$ref"]


def test_errors_exist_and_codes_unique(doc: dict[str, Any]) -> None:
    errors = doc["components"]["errors"]
    codes = [e["code"] for e in errors.values()]
    assert len(codes) == len(set(codes)), "duplicate error codes"
    assert set(codes) == EXPECTED_CODES
    for e in errors.values():
        assert e["message"]
    for m in calls(doc):
        assert m["errors"], m["name"]
        refs = [e["$ref"] for e in m["errors"]]
        assert len(refs) == len(set(refs)), m["name"]
        for ref in refs:
            assert ref.startswith("#/components/errors/") and ref.rsplit("/", 1)[1] in errors, ref
        # Every method checks its params, so every method can answer invalid params.
        assert "#/components/errors/InvalidParams" in refs, m["name"]
        if any(p["name"] == "handle" for p in params_of(doc, m)):
            assert "#/components/errors/UnknownHandle" in refs, m["name"]
    os_error = next(e for e in errors.values() if e["code"] == -32005)
    data = resolve(doc, os_error["data"])
    assert set(data["required"]) == {"errno", "errnoNumber", "syscall"}
    assert accepts(doc, os_error["data"], {"errno": "ECONNREFUSED", "errnoNumber": 111, "syscall": "connect"})
    assert not accepts(doc, os_error["data"], {"errno": "ECONNREFUSED", "errnoNumber": 111})


def test_events_are_tagged_directed_and_resultless(doc: dict[str, Any]) -> None:
    for m in events(doc):
        assert m["tags"] == [{"name": "event"}], m["name"]
        assert m["x-direction"] == "server-to-client", m["name"]
        assert "result" not in m and "errors" not in m, m["name"]
        assert params_of(doc, m)[0]["name"] == "handle" and params_of(doc, m)[0]["required"], m["name"]
    for m in calls(doc):
        assert "x-direction" not in m and not is_event(m), m["name"]


def test_descriptor_flags_mark_exactly_the_descriptor_methods(doc: dict[str, Any]) -> None:
    found = {m["name"]: m["x-descriptor"] for m in doc["methods"] if "x-descriptor" in m}
    assert found == DESCRIPTOR_FLAGS
    for m in doc["methods"]:
        # The method-level extensions in use: x-direction on events, x-descriptor on calls.
        allowed = {"x-direction"} if is_event(m) else {"x-descriptor"}
        assert {k for k in m if k.startswith("x-")} <= allowed, m["name"]
        if "SCM_RIGHTS" in m.get("description", "") + m.get("summary", ""):
            assert m["name"] in DESCRIPTOR_FLAGS, f"{m['name']} speaks of SCM_RIGHTS but has no x-descriptor"


def test_every_method_has_valid_examples(doc: dict[str, Any]) -> None:
    for m in doc["methods"]:
        assert m.get("examples"), f"{m['name']} has no example"
        params = {p["name"]: p for p in params_of(doc, m)}
        for ex in m["examples"]:
            given = {e["name"]: e["value"] for e in ex["params"]}
            where = f"{m['name']} example {ex['name']!r}"
            assert set(given) <= set(params), f"{where}: unknown params {set(given) - set(params)}"
            for name, p in params.items():
                if p.get("required"):
                    assert name in given, f"{where}: lacks required {name}"
                if name in given:
                    errs = list(validator_for(doc, p["schema"]).iter_errors(given[name]))
                    assert not errs, f"{where}: {name}: {errs[0].message}"
            if is_event(m):
                assert "result" not in ex, where
            else:
                assert "result" in ex, f"{where}: no result"
                schema = resolve(doc, m["result"])["schema"]
                errs = list(validator_for(doc, schema).iter_errors(ex["result"]["value"]))
                assert not errs, f"{where}: result: {errs[0].message}"


def test_constants_shape(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["Constants"]
    assert {k: v["const"] for k, v in schema["properties"].items()} == CONSTANTS
    example = next(m for m in doc["methods"] if m["name"] == "tcp.constants")["examples"][0]["result"]["value"]
    assert example == CONSTANTS


def test_tcp_state_names_in_seed_order(doc: dict[str, Any]) -> None:
    names = doc["components"]["schemas"]["TcpStateName"]["enum"]
    states = {k[4:]: v for k, v in CONSTANTS.items() if k.startswith("TCP_")}
    assert names == list(states) and list(states.values()) == list(range(11))


# ---------------------------------------------------------------------------------------- the generator

def run_generate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / "tools" / "generate.py"), *args], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_generated_files_are_current() -> None:
    proc = run_generate(REPO, "--check")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr


def test_swift_embeds_schema_verbatim() -> None:
    source = SWIFT_DOC.read_text(encoding="utf-8")
    assert source.startswith("// generated by tools/generate.py from schema/tcpgw.openrpc.json — do not edit\n")
    match = re.search(r'static let json: String = (#+)"""\n(.*)\n"""\1\n\}\n\Z', source, re.S)
    assert match, "unexpected OpenRPCDocument.swift layout"
    hashes, body = match.group(1), match.group(2)
    assert body + "\n" == SCHEMA_PATH.read_text(encoding="utf-8")
    assert '"""' + hashes not in body and "\\" + hashes not in body


def test_swift_params_cover_every_call_in_order(doc: dict[str, Any]) -> None:
    source = SWIFT_PARAMS.read_text(encoding="utf-8")
    assert source.startswith("// generated by tools/generate.py from schema/tcpgw.openrpc.json — do not edit\n")
    structs = re.findall(r'^struct (\w+): \w+, Equatable \{\n    static let method = "([^"]+)"\n'
                         r'    static let descriptor: DescriptorPassing\? = (nil|\.request|\.answer)$', source, re.M)
    assert [method for _, method, _ in structs] == [m["name"] for m in calls(doc)]
    flags = {method: flag.lstrip(".") for _, method, flag in structs if flag != "nil"}
    assert flags == DESCRIPTOR_FLAGS
    assert ("TCPSendParams", "tcp.send", "nil") in structs
    # By-name-only placeholders get no property; every other param does.
    for m in calls(doc):
        name = next(s for s, method, _ in structs if method == m["name"])
        body = source.split(f"struct {name}: ", 1)[1].split("\n}\n", 1)[0]
        props = re.findall(r"^    let (\w+): ", body, re.M)
        assert props == [p["name"] for p in params_of(doc, m) if not p.get("x-by-name-only")], m["name"]


def _swift_params_emitter() -> Any:
    import importlib.util
    emitters = REPO / "tools" / "emitters"
    if str(emitters) not in sys.path:
        sys.path.insert(0, str(emitters))
    spec = importlib.util.spec_from_file_location("swift_params_under_test", emitters / "swift_params.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_method_doc(params: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"openrpc": "1.3.2", "info": {"title": "t", "version": "1"},
            "methods": [{"name": "ns.doIt", "params": params, "result": {"name": "r", "schema": {}}, **extra}],
            "components": {"schemas": {}}}


def test_swift_params_emitter_shapes() -> None:
    emitter = _swift_params_emitter()
    assert emitter.struct_name("tcp.setIPv6Only") == "TCPSetIPv6OnlyParams"
    assert emitter.struct_name("gateway.info") == "GatewayInfoParams"
    assert emitter.swift_string('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    source = emitter.swift_source(_one_method_doc([
        {"name": "big", "required": True, "schema": {"type": "integer", "minimum": 0}},
        {"name": "small", "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 10, "default": 4}},
        {"name": "default", "schema": {"type": "string", "default": "x\"y"}},
        {"name": "mode", "schema": {"type": ["string", "null"], "enum": ["on", "off", None], "default": "off"}},
        {"name": "list", "schema": {"type": "array", "items": {"type": "boolean"}}},
        {"name": "ignored", "x-by-name-only": True, "schema": {"type": ["null", "string", "object"]}},
    ], **{"x-descriptor": "answer"}))
    assert "struct NSDoItParams: MethodParams, Equatable {" in source
    assert "static let descriptor: DescriptorPassing? = .answer" in source
    assert "    let big: Int64\n" in source and "    let small: Int\n" in source
    assert '`default` = try reader.optional("default", default: "x\\"y")' in source
    assert 'mode = try reader.optional("mode", default: .off)' in source
    assert "enum ModeParam: String, ParamValue, CaseIterable {\n    case on, off\n}" in source
    assert "    let list: [Bool]?\n" in source and "ignored" not in source
    assert emitter.swift_source(_one_method_doc([])) == emitter.swift_source(_one_method_doc([])), "deterministic"


@pytest.mark.parametrize("params, extra, message", [
    ([{"name": "any", "schema": {"type": ["string", "integer"]}}], {}, "cannot type"),
    ([{"name": "a", "required": True, "schema": {"type": ["integer", "null"]}}], {}, "must not accept null"),
    ([{"name": "o", "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}], {}, "closed"),
    ([{"name": "e", "schema": {"type": "string", "enum": ["a"], "default": "b"}}], {}, "not one of"),
    ([{"name": "n", "schema": {"type": "integer", "default": "5"}}], {}, "not an integer"),
    ([{"name": "m", "schema": {"type": "string", "enum": ["a"]}},
      {"name": "m2", "schema": {"title": "M", "type": "string", "enum": ["b"]}}], {}, "two different shapes"),
    ([], {"x-descriptor": "both"}, "x-descriptor"),
])
def test_swift_params_emitter_refuses_what_it_cannot_type(params: list[dict[str, Any]], extra: dict[str, Any],
                                                          message: str) -> None:
    emitter = _swift_params_emitter()
    with pytest.raises(ValueError, match=message):
        emitter.swift_source(_one_method_doc(params, **extra))


def test_generator_refuses_unknown_descriptor_flag(repo_copy: Path) -> None:
    schema = repo_copy / "schema" / "tcpgw.openrpc.json"
    text = schema.read_text(encoding="utf-8")
    assert '"x-descriptor": "answer",' in text
    schema.write_text(text.replace('"x-descriptor": "answer",', '"x-descriptor": "both",', 1), encoding="utf-8")
    proc = run_generate(repo_copy, "--check")
    assert proc.returncode == 2 and "swift_params" in proc.stderr and "x-descriptor" in proc.stderr, proc.stderr


def test_raw_delimiter_avoids_collisions() -> None:
    sys.path.insert(0, str(REPO / "tools" / "emitters"))
    try:
        import swift_document  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    assert swift_document.raw_delimiter('{"a": "#"}') == "#"
    assert swift_document.raw_delimiter('x """# y') == "##"
    assert swift_document.raw_delimiter('""""## and \\### ') == "####"
    src = swift_document.swift_source('a\\#(b) """# c\n')
    assert '##"""\n' in src and '\n"""##\n' in src


def test_docs_cover_everything(doc: dict[str, Any]) -> None:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    assert text.startswith("<!-- generated by tools/generate.py from schema/tcpgw.openrpc.json — do not edit -->")
    for m in doc["methods"]:
        assert f"### `{m['name']}`" in text, m["name"]
    for e in doc["components"]["errors"].values():
        assert f"{e['code']} |" in text
    for name in CONSTANTS:
        assert f"| `{name}` |" in text


@pytest.fixture()
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of what the generator reads and writes, so tests may break it."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "tools", root / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "schema", root / "schema")
    return root


def test_generator_detects_and_repairs_stale_files(repo_copy: Path) -> None:
    first = run_generate(repo_copy)
    assert first.returncode == 0, first.stderr
    assert (repo_copy / "Sources/TCPGateway/Generated/OpenRPCDocument.swift").exists()
    assert run_generate(repo_copy, "--check").returncode == 0
    schema = repo_copy / "schema" / "tcpgw.openrpc.json"
    doc = json.loads(schema.read_text(encoding="utf-8"))
    doc["info"]["version"] = "9.9.9"
    schema.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    stale = run_generate(repo_copy, "--check")
    assert stale.returncode == 1
    assert "+++ b/Sources/TCPGateway/Generated/OpenRPCDocument.swift" in stale.stdout
    assert "+++ b/docs/api.md" in stale.stdout and "9.9.9" in stale.stdout
    # --check wrote nothing
    assert "9.9.9" not in (repo_copy / "docs" / "api.md").read_text(encoding="utf-8")
    assert run_generate(repo_copy).returncode == 0
    assert run_generate(repo_copy, "--check").returncode == 0
    (repo_copy / "docs" / "api.md").unlink()
    missing = run_generate(repo_copy, "--check")
    assert missing.returncode == 1 and "--- /dev/null" in missing.stdout


def test_generator_refuses_bad_schema(repo_copy: Path) -> None:
    schema = repo_copy / "schema" / "tcpgw.openrpc.json"
    text = schema.read_text(encoding="utf-8")
    schema.write_text(text.replace('"openrpc": "1.3.2",', '"openrpc": "1.3.2", "openrpc": "1.3.2",', 1), encoding="utf-8")
    proc = run_generate(repo_copy, "--check")
    assert proc.returncode == 2 and "duplicate key" in proc.stderr
    schema.write_text(text[:-3], encoding="utf-8")
    proc = run_generate(repo_copy)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_generator_refuses_unmarked_or_escaping_output(repo_copy: Path) -> None:
    emitter = repo_copy / "tools" / "emitters" / "zz_bad.py"
    emitter.write_text("def emit(doc):\n    return {'docs/x.txt': 'no marker\\n'}\n", encoding="utf-8")
    proc = run_generate(repo_copy)
    assert proc.returncode == 2 and "zz_bad" in proc.stderr and not (repo_copy / "docs/x.txt").exists()
    emitter.write_text("def emit(doc):\n    return {'../outside.txt': "
                       "'# generated by tools/generate.py from schema/tcpgw.openrpc.json\\n'}\n", encoding="utf-8")
    proc = run_generate(repo_copy)
    assert proc.returncode == 2 and "leaves the repository" in proc.stderr
    assert not (repo_copy.parent / "outside.txt").exists()


# ------------------------------------------------------------------------------------------ the gateway

def gateway_binary() -> Path:
    return Path(os.environ.get("TCPGW_BIN", str(REPO / ".build" / "debug" / "tcpgw")))


needs_binary = pytest.mark.skipif(not gateway_binary().exists(), reason=f"gateway binary {gateway_binary()} not built")


class Client:
    """Minimal newline-delimited JSON-RPC client over the gateway's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buf = b""
        self.next_id = 0

    def call(self, method: str, params: Any = "absent") -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params != "absent":
            msg["params"] = params
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded: skip notifications until our answer
            while b"\n" not in self.buf:
                chunk = self.sock.recv(1 << 20)
                assert chunk, "gateway closed the connection"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            reply = json.loads(line)
            if isinstance(reply, dict) and reply.get("id") == self.next_id:
                return reply
        raise AssertionError(f"no answer to {method}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("gw") / "gw.sock"
    proc = subprocess.Popen([str(gateway_binary()), "serve", "--socket", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"gateway exited: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}"
            try:
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                probe.connect(str(path))
                probe.close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("gateway socket never became ready")
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture()
def client(gateway: Path) -> Iterator[Client]:
    c = Client(gateway)
    yield c
    c.close()


@needs_binary
@pytest.mark.parametrize("params", ["absent", [], {}])
def test_rpc_discover_returns_schema(client: Client, doc: dict[str, Any], params: Any) -> None:
    reply = client.call("rpc.discover", params)
    assert "error" not in reply, reply
    assert reply["result"] == doc


@needs_binary
def test_rpc_discover_refuses_params(client: Client) -> None:
    assert client.call("rpc.discover", [1])["error"]["code"] == -32602
    reply = client.call("rpc.discover", {"bogus": 1})
    assert reply["error"]["code"] == -32602 and "bogus" in reply["error"]["message"]


@needs_binary
def test_schema_command_prints_schema(doc: dict[str, Any]) -> None:
    proc = subprocess.run([str(gateway_binary()), "schema"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == doc


@needs_binary
def test_schema_command_prints_file_verbatim() -> None:
    proc = subprocess.run([str(gateway_binary()), "schema"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SCHEMA_PATH.read_text(encoding="utf-8")


@needs_binary
def test_events_are_not_callable(client: Client) -> None:
    for name in EXPECTED_EVENTS:
        reply = client.call(name, {"handle": 1})
        assert reply.get("error", {}).get("code") == -32601, (name, reply)


def _wrong_type_value(schema: dict[str, Any]) -> Any:
    types = schema.get("type")
    types = set(types if isinstance(types, list) else [types])
    for candidate in ({"x": 1}, "x", 1.5, [], True):
        kind = {dict: "object", str: "string", float: "number", list: "array", bool: "boolean"}[type(candidate)]
        if kind not in types and not (kind == "number" and "number" in types):
            return candidate
    return None


def _violations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, param, params object) where exactly that one param is invalid per the schema."""
    cases = []
    for m in calls(doc):
        base = {e["name"]: e["value"] for e in m["examples"][0]["params"]}
        for p in params_of(doc, m):
            if p.get("x-by-name-only"):
                continue
            schema = resolve(doc, p["schema"])
            wrong = _wrong_type_value(schema)
            values = [wrong] if wrong is not None else []
            if isinstance(schema.get("minimum"), int) and "integer" in str(schema.get("type")):
                values.append(schema["minimum"] - 1)
            if isinstance(schema.get("maximum"), int) and schema["maximum"] < 2 ** 53 - 1:
                values.append(schema["maximum"] + 1)
            if schema.get("type") == "boolean" or (p.get("required")):
                values.append(None)
            for value in values:
                assert not accepts(doc, p["schema"], value), (m["name"], p["name"], value)
                cases.append((m["name"], p["name"], {**base, p["name"]: value}))
            if p.get("required"):
                cases.append((m["name"], p["name"], {k: v for k, v in base.items() if k != p["name"]}))
    return cases


@needs_binary
def test_gateway_enforces_param_schemas(client: Client, doc: dict[str, Any]) -> None:
    failures = []
    for method, param, params in _violations(doc):
        reply = client.call(method, params)
        err = reply.get("error") or {}
        if err.get("code") != -32602 or param not in err.get("message", ""):
            failures.append(f"{method} {json.dumps(params)} -> {json.dumps(reply)}")
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20])


@needs_binary
def test_gateway_refuses_unknown_and_surplus_params(client: Client, doc: dict[str, Any]) -> None:
    failures = []
    for m in calls(doc):
        base = {e["name"]: e["value"] for e in m["examples"][0]["params"]}
        reply = client.call(m["name"], {**base, "bogusParam": 1})
        err = reply.get("error") or {}
        if err.get("code") != -32602 or "bogusParam" not in err.get("message", ""):
            failures.append(f"{m['name']} unknown param -> {json.dumps(reply)}")
        positions = [p for p in params_of(doc, m) if not p.get("x-by-name-only")]
        reply = client.call(m["name"], [None] * (len(positions) + 1))
        if (reply.get("error") or {}).get("code") != -32602:
            failures.append(f"{m['name']} surplus positions -> {json.dumps(reply)}")
    assert not failures, "\n".join(failures[:20])


@needs_binary
def test_gateway_validates_before_touching_handles(client: Client) -> None:
    """TTL 0 is refused by the schema (contract §3) even before the handle is looked up."""
    reply = client.call("tcp.setTTL", {"handle": 424242, "timeToLive": 0})
    assert reply["error"]["code"] == -32602 and "timeToLive" in reply["error"]["message"]
    # The same call with a valid TTL reaches the handle lookup: unknown handle.
    assert client.call("tcp.setTTL", {"handle": 424242, "timeToLive": 64})["error"]["code"] == -32000
    assert client.call("tcp.setTTL", [424242, 64])["error"]["code"] == -32000


@needs_binary
def test_gateway_answers_exactly_the_schema_methods(client: Client, doc: dict[str, Any]) -> None:
    """Every request method of the schema is served (never -32601), and nothing else is."""
    for m in calls(doc):
        reply = client.call(m["name"], {"bogusParam": 1})
        assert reply.get("error", {}).get("code") == -32602, (m["name"], reply)
    names = {m["name"] for m in doc["methods"]}
    near_misses = {"tcp.listen", "tcp.sockname", "TCP.close", "tcp.close ", "gateway.stop", "rpc.discover2",
                   "tcp", "", "tcp.", "gateway.Info"}
    for name in sorted(near_misses - names):
        reply = client.call(name, {})
        assert reply.get("error", {}).get("code") == -32601, (name, reply)
