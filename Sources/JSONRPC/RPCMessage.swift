/// One well-formed JSON-RPC 2.0 request. `id == nil` marks a notification, which is never answered.
public struct RPCRequest: Equatable, Sendable {
    public var id: JSONValue?
    public var method: String
    public var params: JSONValue?

    public init(id: JSONValue?, method: String, params: JSONValue? = nil) {
        self.id = id
        self.method = method
        self.params = params
    }

    public var isNotification: Bool { id == nil }

    public var json: JSONValue {
        var object: JSONObject = ["jsonrpc": "2.0", "method": .string(method)]
        if let params { object["params"] = params }
        if let id { object["id"] = id }
        return .object(object)
    }
}

/// One entry of what a line held: a request to run, or a malformed entry to answer with an error.
public enum RPCEntry: Equatable, Sendable {
    case request(RPCRequest)
    case invalid(id: JSONValue, error: RPCError)
}

/// What one received line is, after the envelope checks of the JSON-RPC 2.0 spec.
public enum RPCMessage: Equatable, Sendable {
    case single(RPCEntry)
    case batch([RPCEntry])
    /// Not JSON, an empty batch, or oversized: answered with one error, id null.
    case failure(RPCError)

    /// Decodes one line (without its newline).
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> RPCMessage {
        let value: JSONValue
        do {
            value = try JanssonCodec.parse(bytes)
        } catch let error as JSONParseError {
            return .failure(.parseError(error.description))
        } catch {
            return .failure(.parseError("\(error)"))
        }
        return decode(value)
    }

    public static func decode(_ value: JSONValue) -> RPCMessage {
        if case .array(let items) = value {
            if items.isEmpty { return .failure(.invalidRequest("empty batch")) }
            return .batch(items.map(entry))
        }
        return .single(entry(value))
    }

    /// Checks one request object. The id is echoed whenever it could be read, even when
    /// something else about the request is wrong.
    public static func entry(_ value: JSONValue) -> RPCEntry {
        guard case .object(let object) = value else {
            return .invalid(id: .null, error: .invalidRequest("a request must be an object, not \(value.typeName)"))
        }
        var id: JSONValue? = nil
        if let rawID = object["id"] {
            switch rawID {
            case .string, .int, .double, .null: id = rawID
            default:
                return .invalid(id: .null, error: .invalidRequest("'id' must be a string, a number or null"))
            }
        }
        let echo = id ?? .null
        guard object["jsonrpc"] == .string("2.0") else {
            return .invalid(id: echo, error: .invalidRequest("'jsonrpc' must be \"2.0\""))
        }
        guard let rawMethod = object["method"] else {
            return .invalid(id: echo, error: .invalidRequest("'method' is missing"))
        }
        guard case .string(let method) = rawMethod else {
            return .invalid(id: echo, error: .invalidRequest("'method' must be a string"))
        }
        var params: JSONValue? = nil
        if let rawParams = object["params"] {
            switch rawParams {
            case .array, .object: params = rawParams
            default:
                return .invalid(id: echo, error: .invalidRequest("'params' must be an array or an object"))
            }
        }
        return .request(RPCRequest(id: id, method: method, params: params))
    }
}

/// Builds response and notification objects.
public enum RPCResponse {
    public static func success(id: JSONValue, result: JSONValue) -> JSONValue {
        .object(["jsonrpc": "2.0", "result": result, "id": id])
    }

    public static func failure(id: JSONValue, error: RPCError) -> JSONValue {
        .object(["jsonrpc": "2.0", "error": error.json, "id": id])
    }

    public static func notification(method: String, params: JSONValue) -> JSONValue {
        .object(["jsonrpc": "2.0", "method": .string(method), "params": params])
    }
}
