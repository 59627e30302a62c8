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
        /// `schema`, compiled: what every call is checked with.
        let check: SchemaCheck
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
                    let schema = MethodCatalog.inline(descriptor["schema"] ?? [:], in: document)
                    params.append(
                        Param(
                            name: paramName,
                            required: descriptor["required"] == .bool(true),
                            schema: schema,
                            check: SchemaCheck(schema, in: document),
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
        var positional: [JSONValue] = []
        var named: JSONObject?
        // The request's own object serves as the bound params when it holds nothing to drop.
        var reusable = false
        switch raw {
        case nil:
            break
        case .array(let items)?:
            if items.count > method.positional.count {
                throw RPCError.invalidParams(
                    "\(method.name) takes at most \(method.positional.count) positional params, got \(items.count)")
            }
            positional = items
        case .object(let object)?:
            reusable = true
            var lastIndex = -1
            for (key, value) in object.members {
                guard let index = method.params.firstIndex(where: { $0.name == key }) else {
                    let known = method.params.map { "'\($0.name)'" }.joined(separator: ", ")
                    throw RPCError.invalidParams(
                        "unknown param '\(key)' for \(method.name)" + (known.isEmpty ? " (it takes none)" : " (known: \(known))"))
                }
                // Bound params list in schema order, with no nulls and no by-name-only placeholders.
                if index < lastIndex || method.params[index].byNameOnly || value == .null { reusable = false }
                lastIndex = index
            }
            named = object
        default:
            throw RPCError.invalidParams("params must be an array or an object")
        }
        var result = JSONObject()
        if !reusable { result.reserveCapacity(method.params.count) }
        var position = 0
        for param in method.params {
            let value: JSONValue?
            if let named {
                value = named[param.name]
            } else if param.byNameOnly {
                value = nil
            } else {
                // (Not a ternary: there `nil` would read as JSONValue.null.)
                if position < positional.count { value = positional[position] } else { value = Optional.none }
                position += 1
            }
            guard let value else {
                if param.required { throw RPCError.invalidParams("'\(param.name)' is required") }
                continue
            }
            if !param.check.accepts(value) {
                // The interpreting validator words the message (and stays the reference).
                try SchemaValidator(document: document).validate(value, param.schema, path: param.name)
            }
            // A null the schema allows means "absent", so defaults apply.
            if !reusable && !param.byNameOnly && value != .null { result[param.name] = value }
        }
        if reusable, let named { return Params(values: named) }
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

/// A param's schema compiled once, at start: `accepts` answers exactly what
/// `SchemaValidator.accepts` answers for the same schema, without looking keywords up in the
/// schema's JSON on every call. Failures are then worded by `SchemaValidator`.
final class SchemaCheck {
    private struct Types: OptionSet {
        let rawValue: UInt8
        static let null = Types(rawValue: 1), boolean = Types(rawValue: 2), string = Types(rawValue: 4)
        static let array = Types(rawValue: 8), object = Types(rawValue: 16), integer = Types(rawValue: 32)
        static let number = Types(rawValue: 64)

        init(rawValue: UInt8) { self.rawValue = rawValue }

        init(name: String) {
            switch name {
            case "null": self = .null
            case "boolean": self = .boolean
            case "string": self = .string
            case "array": self = .array
            case "object": self = .object
            case "integer": self = .integer
            case "number": self = .number
            default: self = []  // matches nothing, as in SchemaValidator
            }
        }
    }

    private var acceptsAnything = false
    /// Past the depth compiled, the rest is interpreted (a recursive schema; ours has none).
    private var interpreted: (validator: SchemaValidator, schema: JSONValue)?
    private var options: [SchemaCheck]?
    private var exactlyOne = false
    private var types: Types?
    private var choices: [JSONValue]?
    private var constant: JSONValue?
    private var minimum: Double?
    private var maximum: Double?
    private var minLength: Int64?
    private var maxLength: Int64?
    private var minItems: Int64?
    private var maxItems: Int64?
    private var items: SchemaCheck?
    private var required: [String] = []
    private var properties: [(name: String, check: SchemaCheck)] = []
    private var closed = false

    init(_ rawSchema: JSONValue, in document: JSONValue, depth: Int = 0) {
        guard depth < 64 else {
            interpreted = (SchemaValidator(document: document), rawSchema)
            return
        }
        let schema = MethodCatalog.resolve(rawSchema, in: document)
        guard case .object(let object) = schema else {
            acceptsAnything = true
            return
        }
        let compile = { (value: JSONValue) in SchemaCheck(value, in: document, depth: depth + 1) }
        if case .array(let list)? = object["oneOf"] ?? object["anyOf"] {
            options = list.map(compile)
            exactlyOne = object["oneOf"] != nil
        }
        switch object["type"] {
        case .string(let one)?:
            types = Types(name: one)
        case .array(let many)?:
            let names = many.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
            if !names.isEmpty { types = names.reduce(into: Types()) { $0.formUnion(Types(name: $1)) } }
        default:
            break
        }
        if case .array(let list)? = object["enum"] { choices = list }
        constant = object["const"]
        minimum = object["minimum"].flatMap(SchemaCheck.numeric)
        maximum = object["maximum"].flatMap(SchemaCheck.numeric)
        if case .int(let n)? = object["minLength"] { minLength = n }
        if case .int(let n)? = object["maxLength"] { maxLength = n }
        if case .int(let n)? = object["minItems"] { minItems = n }
        if case .int(let n)? = object["maxItems"] { maxItems = n }
        items = object["items"].map(compile)
        if case .array(let list)? = object["required"] {
            required = list.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
        }
        if case .object(let props)? = object["properties"] {
            properties = props.members.map { ($0.key, compile($0.value)) }
        }
        closed = object["additionalProperties"] == .bool(false)
    }

    func accepts(_ value: JSONValue) -> Bool {
        if acceptsAnything { return true }
        if let interpreted { return interpreted.validator.accepts(value, interpreted.schema) }
        if let options {
            var matching = 0
            for option in options where option.accepts(value) { matching += 1 }
            if exactlyOne ? matching != 1 : matching == 0 { return false }
        }
        if let types, !SchemaCheck.matches(value, types) { return false }
        if let choices, !choices.contains(where: { SchemaCheck.equal($0, value) }) { return false }
        if let constant, !SchemaCheck.equal(constant, value) { return false }
        switch value {
        case .int, .double:
            if minimum != nil || maximum != nil, let number = SchemaCheck.numeric(value) {
                if let minimum, number < minimum { return false }
                if let maximum, number > maximum { return false }
            }
        case .string(let text):
            if minLength != nil || maxLength != nil {
                let count = Int64(text.unicodeScalars.count)
                if let minLength, count < minLength { return false }
                if let maxLength, count > maxLength { return false }
            }
        case .array(let list):
            if let minItems, list.count < minItems { return false }
            if let maxItems, list.count > maxItems { return false }
            if let items, !list.allSatisfy(items.accepts) { return false }
        case .object(let object):
            for key in required where object[key] == nil { return false }
            for (key, member) in object.members {
                if let property = properties.first(where: { $0.name == key }) {
                    if !property.check.accepts(member) { return false }
                } else if closed {
                    return false
                }
            }
        case .null, .bool:
            break
        }
        return true
    }

    private static func matches(_ value: JSONValue, _ types: Types) -> Bool {
        switch value {
        case .null: return types.contains(.null)
        case .bool: return types.contains(.boolean)
        case .string: return types.contains(.string)
        case .array: return types.contains(.array)
        case .object: return types.contains(.object)
        case .int: return !types.isDisjoint(with: [.integer, .number])
        case .double(let d): return types.contains(.number) || (types.contains(.integer) && d.rounded() == d && abs(d) < 9.0e15)
        }
    }

    private static func numeric(_ value: JSONValue) -> Double? {
        switch value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    private static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if let x = numeric(a), let y = numeric(b) { return x == y }
        return a == b
    }
}
