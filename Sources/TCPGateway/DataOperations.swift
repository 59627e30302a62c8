import CNetShim
import JSONRPC
import NIOCore

/// tcp.send, tcp.sendto, tcp.recv, tcp.recvfrom, tcp.pending, tcp.shutdown, tcp.isEOF,
/// tcp.pause, tcp.resume.
enum DataOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table["tcp.send"] = send
        table["tcp.sendto"] = send  // the seed's sendto ignores its remote address on TCP
        table["tcp.recv"] = { try recv($0, withRemote: false) }
        table["tcp.recvfrom"] = { try recv($0, withRemote: true) }
        table["tcp.pending"] = pending
        table["tcp.shutdown"] = shutdown
        table["tcp.isEOF"] = isEOF
        table["tcp.pause"] = { call in try call.session.handles.connection(call.params.handle).setFlowing(false); return true }
        table["tcp.resume"] = { call in try call.session.handles.connection(call.params.handle).setFlowing(true); return true }
    }

    /// The bytes of `data` (a string or an array of strings, gathered), cut by offset/length.
    static func payload(_ params: Params) throws -> ByteBuffer {
        let encoding = DataEncoding(rawValue: params.string("encoding") ?? "utf8") ?? .utf8
        var bytes: [UInt8]
        switch params["data"] {
        case .string(let text)?:
            bytes = try encoding.decode(text, param: "data")
        case .array(let parts)?:
            bytes = []
            for (index, part) in parts.enumerated() {
                guard case .string(let text) = part else { throw RPCError.invalidParams("'data[\(index)]' must be a string") }
                bytes += try encoding.decode(text, param: "data[\(index)]")
            }
        default:
            throw RPCError.invalidParams("'data' is required")
        }
        let offset = params.int("offset") ?? 0
        guard offset <= bytes.count else {
            throw RPCError.invalidParams("'offset' \(offset) is past the end of the data (\(bytes.count) bytes)")
        }
        var length = bytes.count - offset
        if let asked = params.int("length") {
            guard asked <= length else {
                throw RPCError.invalidParams("'length' \(asked) goes past the end of the data (\(length) bytes after offset)")
            }
            length = asked
        }
        var buffer = ByteBufferAllocator().buffer(capacity: length)
        buffer.writeBytes(bytes[offset..<(offset + length)])
        return buffer
    }

    static func send(_ call: Call) throws -> JSONValue? {
        let connection = try call.session.handles.connection(call.params.handle)
        let data = try payload(call.params)
        connection.send(data, timeoutMS: call.params.int("timeout")) { result in
            switch result {
            case .success(let count): call.succeed(.int(Int64(count)))
            case .failure(let error): call.fail(error)
            }
        }
        return nil
    }

    static func recv(_ call: Call, withRemote: Bool) throws -> JSONValue? {
        let connection = try call.session.handles.connection(call.params.handle)
        if connection.flowing {
            throw RPCError.handleState("handle \(connection.id) is flowing (data arrives as tcp.onData); call tcp.pause first")
        }
        let encoding = DataEncoding(rawValue: call.params.string("encoding") ?? "base64") ?? .base64
        let length = min(call.params.int("length") ?? 65536, call.session.gateway.config.maxRecvLength)
        connection.recv(length: length, timeoutMS: call.params.int("timeout")) { result in
            switch result {
            case .success(let (bytes, eof)):
                var answer: JSONObject = [
                    "data": .string(encoding.encode(bytes)), "encoding": .string(encoding.rawValue), "eof": .bool(eof),
                ]
                if withRemote { answer["remote"] = connection.remote?.json ?? .null }
                call.succeed(.object(answer))
            case .failure(let error):
                call.fail(error)
            }
        }
        return nil
    }

    static func pending(_ call: Call) throws -> JSONValue? {
        switch try call.session.handles.lookup(call.params.handle) {
        case .server: return 0
        case .connection(let connection):
            guard connection.isOpen else { return .int(Int64(connection.bufferedBytes)) }
            let kernel = tcpgw_fionread(try connection.openFD())
            return .int(Int64(connection.bufferedBytes + max(0, Int(kernel))))
        }
    }

    static func shutdown(_ call: Call) throws -> JSONValue? {
        let connection = try call.session.handles.connection(call.params.handle)
        let how = call.params.string("how") ?? "rw"
        connection.shutdown(read: how.contains("r"), write: how.contains("w")) { result in
            switch result {
            case .success: call.succeed(true)
            case .failure(let error): call.fail(error)
            }
        }
        return nil
    }

    static func isEOF(_ call: Call) throws -> JSONValue? {
        switch try call.session.handles.lookup(call.params.handle) {
        case .server: return false
        case .connection(let connection): return .bool(connection.eof)
        }
    }
}
