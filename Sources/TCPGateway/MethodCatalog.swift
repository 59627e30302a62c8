import Foundation
import JSONRPC

/// The methods, their params and the params' schemas, read from the embedded OpenRPC document.
///
/// The schema is the single source of truth: by-position order, required params, types and
/// ranges all come from it, so the gateway cannot accept what the schema forbids.
final class MethodCatalog {
    struct Param {
        let name: String
        let required: Bool
        let schema: JSONValue
        /// Accepted by name and ignored; not a position (the seed's unused placeholders).
        let byNameOnly: Bool
    }

    struct Method {
        let name: String
        let params: [Param]
        let positional: [Param]
        let isEvent: Bool
        /// The schema's `x-descriptor`: which line of the call carries a descriptor, if any.
        let descriptor: DescriptorPassing?
    }

    let document: JSONValue
    let methods: [String: Method]
    let orderedNames: [String]

    init(json: String) throws {
        let document = try JanssonCodec.parse(json)
        self.document = document
        var methods: [String: Method] = [:]
        var names: [String] = []
        guard case .array(let list)? = document["methods"] else {
            throw RPCError.internalError("schema has no methods")
        }
        for entry in list {
            let entry = MethodCatalog.resolve(entry, in: document)
            guard case .string(let name)? = entry["name"] else { continue }
            var isEvent = false
            if case .array(let tags)? = entry["tags"] {
                isEvent = tags.contains { MethodCatalog.resolve($0, in: document)["name"] == .string("event") }
            }
            var params: [Param] = []
            if case .array(let rawParams)? = entry["params"] {
                for raw in rawParams {
                    let descriptor = MethodCatalog.resolve(raw, in: document)
                    guard case .string(let paramName)? = descriptor["name"] else { continue }
                    params.append(
                        Param(
                            name: paramName,
                            required: descriptor["required"] == .bool(true),
                            schema: MethodCatalog.inline(descriptor["schema"] ?? [:], in: document),
                            byNameOnly: descriptor["x-by-name-only"] == .bool(true)))
                }
            }
            var descriptor: DescriptorPassing?
            if let flag = entry["x-descriptor"] {
                guard case .string(let text) = flag, let passing = DescriptorPassing(rawValue: text) else {
                    throw RPCError.internalError("schema: \(name) has an unknown x-descriptor \(JanssonCodec.serializeToString(flag))")
                }
                descriptor = passing
            }
            methods[name] = Method(
                name: name, params: params, positional: params.filter { !$0.byNameOnly }, isEvent: isEvent,
                descriptor: descriptor)
            names.append(name)
        }
        self.methods = methods
        self.orderedNames = names
    }

    /// The schema with every local `$ref` replaced by what it names (done once, at start, so
    /// validating a request follows no references).
    static func inline(_ schema: JSONValue, in document: JSONValue, depth: Int = 0) -> JSONValue {
        guard depth < 32 else { return schema }
        switch resolve(schema, in: document) {
        case .object(let object):
            var out = JSONObject()
            for (key, value) in object.members where key != "$ref" {
                out[key] = inline(value, in: document, depth: depth + 1)
            }
            return .object(out)
        case .array(let items):
            return .array(items.map { inline($0, in: document, depth: depth + 1) })
        case let other:
            return other
        }
    }

    /// Follows a local `$ref` ("#/components/...") to what it names.
    static func resolve(_ value: JSONValue, in document: JSONValue) -> JSONValue {
        var current = value
        var hops = 0
        while case .string(let ref)? = current["$ref"], hops < 16 {
            hops += 1
            guard ref.hasPrefix("#/") else { return current }
            var node: JSONValue? = document
            for part in ref.dropFirst(2).split(separator: "/") {
                let key = part.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                node = node?[key]
            }
            guard let found = node else { return current }
            current = found
        }
        return current
    }

    /// Maps by-position params to names, rejects unknown or missing ones, and validates each
    /// against its schema. A null for an optional param means "absent".
    func bind(_ method: Method, _ raw: JSONValue?) throws -> Params {
        var named = JSONObject()
        switch raw {
        case nil:
            break
        case .array(let items)?:
            if items.count > method.positional.count {
                throw RPCError.invalidParams(
                    "\(method.name) takes at most \(method.positional.count) positional params, got \(items.count)")
            }
            for (param, value) in zip(method.positional, items) { named[param.name] = value }
        case .object(let object)?:
            for (key, value) in object.members {
                guard method.params.contains(where: { $0.name == key }) else {
                    let known = method.params.map { "'\($0.name)'" }.joined(separator: ", ")
                    throw RPCError.invalidParams(
                        "unknown param '\(key)' for \(method.name)" + (known.isEmpty ? " (it takes none)" : " (known: \(known))"))
                }
                named[key] = value
            }
        default:
            throw RPCError.invalidParams("params must be an array or an object")
        }
        var result = JSONObject()
        for param in method.params {
            guard let value = named[param.name] else {
                if param.required { throw RPCError.invalidParams("'\(param.name)' is required") }
                continue
            }
            try SchemaValidator(document: document).validate(value, param.schema, path: param.name)
            // A null the schema allows means "absent", so defaults apply.
            if !param.byNameOnly && value != .null { result[param.name] = value }
        }
        return Params(values: result)
    }
}

/// Checks a value against the JSON Schema subset our schema uses, with messages that name the
/// offending param ("'sockaddr.port' must be an integer in 0..65535").
struct SchemaValidator {
    let document: JSONValue

    func validate(_ value: JSONValue, _ rawSchema: JSONValue, path: String) throws {
        let schema = MethodCatalog.resolve(rawSchema, in: document)
        guard case .object = schema else { return }
        if !accepts(value, schema) {
            throw RPCError.invalidParams("'\(firstFailingPath(value, schema, path: path))' must be \(describeFailure(value, schema, path: path))")
        }
    }

    /// Whether `value` satisfies `schema`.
    func accepts(_ value: JSONValue, _ rawSchema: JSONValue) -> Bool {
        failure(value, rawSchema, path: "") == nil
    }

    private func firstFailingPath(_ value: JSONValue, _ schema: JSONValue, path: String) -> String {
        failure(value, schema, path: path)?.path ?? path
    }

    private func describeFailure(_ value: JSONValue, _ schema: JSONValue, path: String) -> String {
        guard let f = failure(value, schema, path: path) else { return "valid" }
        return "\(f.expected), got \(summary(f.value))"
    }

    private struct Failure {
        let path: String
        let expected: String
        let value: JSONValue
    }

    private func failure(_ value: JSONValue, _ rawSchema: JSONValue, path: String) -> Failure? {
        let schema = MethodCatalog.resolve(rawSchema, in: document)
        guard case .object = schema else { return nil }
        let fail = { Failure(path: path, expected: self.describe(schema), value: value) }

        if case .array(let options)? = schema["oneOf"] ?? schema["anyOf"] {
            let matching = options.filter { failure(value, $0, path: path) == nil }
            if schema["oneOf"] != nil ? matching.count != 1 : matching.isEmpty {
                // Point into the option whose type matches, for a precise message.
                for option in options where typeMatches(value, MethodCatalog.resolve(option, in: document)) {
                    if let inner = failure(value, option, path: path) { return inner }
                }
                return fail()
            }
        }
        if let types = typeList(schema), !types.isEmpty, !types.contains(where: { typeMatches(value, $0) }) {
            return fail()
        }
        if case .array(let choices)? = schema["enum"], !choices.contains(where: { equalJSON($0, value) }) {
            return fail()
        }
        if let constant = schema["const"], !equalJSON(constant, value) { return fail() }
        if let number = numeric(value) {
            if let min = schema["minimum"].flatMap(numeric), number < min { return fail() }
            if let max = schema["maximum"].flatMap(numeric), number > max { return fail() }
        }
        if case .string(let text) = value {
            // JSON Schema counts code points; counting is skipped when no bound asks for it
            // (a 64 KiB base64 payload has none).
            if case .int(let min)? = schema["minLength"], text.unicodeScalars.count < min { return fail() }
            if case .int(let max)? = schema["maxLength"], text.unicodeScalars.count > max { return fail() }
        }
        if case .array(let items) = value {
            if case .int(let min)? = schema["minItems"], items.count < min { return fail() }
            if case .int(let max)? = schema["maxItems"], items.count > max { return fail() }
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() {
                    if let inner = failure(item, itemSchema, path: "\(path)[\(index)]") { return inner }
                }
            }
        }
        if case .object(let object) = value {
            let properties: JSONObject
            if case .object(let props)? = schema["properties"] { properties = props } else { properties = JSONObject() }
            if case .array(let required)? = schema["required"] {
                for case .string(let key) in required where object[key] == nil {
                    return Failure(path: join(path, key), expected: "present", value: .null)
                }
            }
            for (key, member) in object.members {
                if let memberSchema = properties[key] {
                    if let inner = failure(member, memberSchema, path: join(path, key)) { return inner }
                } else if schema["additionalProperties"] == .bool(false) {
                    return Failure(path: join(path, key), expected: "absent (unknown member)", value: member)
                }
            }
        }
        return nil
    }

    private func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func typeList(_ schema: JSONValue) -> [String]? {
        switch schema["type"] {
        case .string(let one)?: return [one]
        case .array(let many)?: return many.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
        default: return nil
        }
    }

    private func typeMatches(_ value: JSONValue, _ schemaOrType: JSONValue) -> Bool {
        if case .object = schemaOrType {
            guard let types = typeList(schemaOrType) else { return true }
            return types.contains { typeMatches(value, $0) }
        }
        return false
    }

    private func typeMatches(_ value: JSONValue, _ type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object):
            return true
        case ("integer", .int), ("number", .int), ("number", .double):
            return true
        case ("integer", .double(let d)):
            return d.rounded() == d && abs(d) < 9.0e15
        default:
            return false
        }
    }

    private func numeric(_ value: JSONValue) -> Double? {
        switch value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    private func equalJSON(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if let x = numeric(a), let y = numeric(b) { return x == y }
        return a == b
    }

    /// "an integer in 0..65535", "one of \"r\", \"w\", \"rw\"", "a string or an array of strings", ...
    func describe(_ rawSchema: JSONValue) -> String {
        let schema = MethodCatalog.resolve(rawSchema, in: document)
        if case .array(let choices)? = schema["enum"] {
            return "one of " + choices.filter { !$0.isNull }.map { JanssonCodec.serializeToString($0) }.joined(separator: ", ")
        }
        if case .array(let options)? = schema["oneOf"] ?? schema["anyOf"] {
            return options.map(describe).joined(separator: " or ")
        }
        let types = (typeList(schema) ?? []).filter { $0 != "null" }
        var text: String
        switch types.first {
        case "integer"?, "number"?:
            text = types.first == "integer" ? "an integer" : "a number"
            let min = schema["minimum"].flatMap(numeric)
            let max = schema["maximum"].flatMap(numeric)
            if let min, let max {
                text += " in \(format(min))..\(format(max))"
            } else if let min {
                text += " >= \(format(min))"
            } else if let max {
                text += " <= \(format(max))"
            }
        case "string"?:
            text = "a string"
            if case .int(let max)? = schema["maxLength"] {
                if case .int(let min)? = schema["minLength"], min > 0 {
                    text += " of \(min) to \(max) characters"
                } else {
                    text += " of at most \(max) characters"
                }
            } else if case .int(let min)? = schema["minLength"], min > 0 {
                text += " of at least \(min) characters"
            }
        case "boolean"?: text = "a boolean"
        case "array"?:
            text = "an array"
            if let items = schema["items"] { text += " of (\(describe(items)))" }
            if case .int(let max)? = schema["maxItems"] {
                let min: Int64
                if case .int(let m)? = schema["minItems"] { min = m } else { min = 0 }
                text += " with \(min) to \(max) items"
            }
        case "object"?:
            text = "an object"
            if case .object(let props)? = schema["properties"] {
                text += " with members " + props.keys.joined(separator: ", ")
            }
        case nil: text = "valid"
        default: text = "of type \(types.joined(separator: " or "))"
        }
        if types.count > 1 { text += " (or \(types.dropFirst().joined(separator: ", ")))" }
        return text
    }

    private func format(_ d: Double) -> String {
        d.rounded() == d && abs(d) < 1e18 ? String(Int64(d)) : String(d)
    }

    private func summary(_ value: JSONValue) -> String {
        let text = JanssonCodec.serializeToString(value)
        return text.count > 40 ? String(text.prefix(37)) + "..." : text
    }
}

/// A request's params after binding and validation: every value has the schema's type. Operations
/// read them through the typed structs generated from the schema (Generated/MethodParams.swift).
struct Params {
    var values: JSONObject

    subscript(name: String) -> JSONValue? { values[name] }
}
