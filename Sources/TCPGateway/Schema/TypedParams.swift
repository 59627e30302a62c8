import JSONRPC

/// Which line of a call carries a descriptor (SCM_RIGHTS), from the schema's `x-descriptor`.
enum DescriptorPassing: String, Sendable {
    /// The request's line brings one (tcp.createByFd): the descriptors passed with it go to the call.
    case request
    /// The answer's line takes one (tcp.flyAway): a batch may hold one such call.
    case answer
}

/// A method's params as typed values. The conforming structs are generated from the schema
/// (Generated/MethodParams.swift, by tools/emitters/swift_params.py).
protocol MethodParams: Sendable {
    /// The method these params belong to.
    static var method: String { get }
    /// The method's `x-descriptor` flag; nil when no descriptor travels with it.
    static var descriptor: DescriptorPassing? { get }
    /// Reads params that `MethodCatalog.bind` has bound and validated. Throws -32603 only when
    /// they do not have the shape the schema promises (a bug, never the client's mistake).
    init(_ params: Params) throws
}

/// The params of a method that acts on one handle.
protocol HandleParams: MethodParams {
    var handle: Int64 { get }
}

/// A value read from a validated JSON value; `path` names it in messages ("sockaddr.port").
protocol ParamValue: Sendable {
    init(paramJSON value: JSONValue, path: String) throws
}

extension ParamValue where Self: RawRepresentable, RawValue == String {
    init(paramJSON value: JSONValue, path: String) throws {
        guard case .string(let text) = value, let parsed = Self(rawValue: text) else {
            throw ParamReader.mismatch(path, expected: "one of the enum's strings", value)
        }
        self = parsed
    }
}

extension Bool: ParamValue {
    init(paramJSON value: JSONValue, path: String) throws {
        guard case .bool(let flag) = value else { throw ParamReader.mismatch(path, expected: "a boolean", value) }
        self = flag
    }
}

extension String: ParamValue {
    init(paramJSON value: JSONValue, path: String) throws {
        guard case .string(let text) = value else { throw ParamReader.mismatch(path, expected: "a string", value) }
        self = text
    }
}

extension Int64: ParamValue {
    /// An integer, or a real with no fraction (JSON does not tell 3 from 3.0; the validator
    /// accepts both as an integer).
    init(paramJSON value: JSONValue, path: String) throws {
        switch value {
        case .int(let number):
            self = number
        case .double(let real):
            guard let exact = Int64(exactly: real) else { throw ParamReader.mismatch(path, expected: "an integer", value) }
            self = exact
        default:
            throw ParamReader.mismatch(path, expected: "an integer", value)
        }
    }
}

extension Int: ParamValue {
    init(paramJSON value: JSONValue, path: String) throws {
        guard let exact = Int(exactly: try Int64(paramJSON: value, path: path)) else {
            throw ParamReader.mismatch(path, expected: "an integer in Int's range", value)
        }
        self = exact
    }
}

extension Double: ParamValue {
    init(paramJSON value: JSONValue, path: String) throws {
        switch value {
        case .int(let number): self = Double(number)
        case .double(let real): self = real
        default: throw ParamReader.mismatch(path, expected: "a number", value)
        }
    }
}

extension Array: ParamValue where Element: ParamValue {
    init(paramJSON value: JSONValue, path: String) throws {
        guard case .array(let items) = value else { throw ParamReader.mismatch(path, expected: "an array", value) }
        self = try items.enumerated().map { index, item in try Element(paramJSON: item, path: "\(path)[\(index)]") }
    }
}

/// Reads the members of bound params, or of an object nested in them, by the names the
/// generated code gives. A null counts as absent, as binding treats it.
struct ParamReader {
    private let members: JSONObject
    private let path: String

    init(_ params: Params) {
        members = params.values
        path = ""
    }

    init(object value: JSONValue, path: String) throws {
        guard case .object(let object) = value else { throw ParamReader.mismatch(path, expected: "an object", value) }
        members = object
        self.path = path
    }

    private func member(_ name: String) -> (value: JSONValue?, path: String) {
        let value = members[name]
        return (value == .null ? nil : value, path.isEmpty ? name : "\(path).\(name)")
    }

    func required<T: ParamValue>(_ name: String) throws -> T {
        let (value, at) = member(name)
        guard let value else {
            throw RPCError.internalError("param '\(at)' is missing after validation")
        }
        return try T(paramJSON: value, path: at)
    }

    func optional<T: ParamValue>(_ name: String) throws -> T? {
        let (value, at) = member(name)
        guard let value else { return nil }
        return try T(paramJSON: value, path: at)
    }

    func optional<T: ParamValue>(_ name: String, default fallback: T) throws -> T {
        try optional(name) ?? fallback
    }

    /// The error for a validated value of the wrong shape: internal, since validation should
    /// have refused it.
    static func mismatch(_ path: String, expected: String, _ value: JSONValue) -> RPCError {
        .internalError("param '\(path)' is not \(expected) after validation (got \(value.typeName))")
    }
}

extension Dictionary where Key == String, Value == Dispatcher.Operation {
    /// Registers `body` as the operation of `P.method`; it gets the request's params as `P`.
    mutating func add<P: MethodParams>(_ type: P.Type, _ body: @escaping (Call, P) throws -> JSONValue?) {
        self[P.method] = { call in try body(call, try P(call.params)) }
    }
}
