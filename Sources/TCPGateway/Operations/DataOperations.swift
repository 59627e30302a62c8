import CNetShim
import JSONRPC
import NIOCore

/// tcp.send, tcp.sendto, tcp.recv, tcp.recvfrom, tcp.pending, tcp.shutdown, tcp.isEOF,
/// tcp.pause, tcp.resume.
enum DataOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPSendParams.self, send)
        table.add(TCPSendtoParams.self, send)  // the seed's sendto ignores its remote address on TCP
        table.add(TCPRecvParams.self) { try recv($0, $1, withRemote: false) }
        table.add(TCPRecvfromParams.self) { try recv($0, $1, withRemote: true) }
        table.add(TCPPendingParams.self, pending)
        table.add(TCPShutdownParams.self, shutdown)
        table.add(TCPIsEOFParams.self, isEOF)
        table.add(TCPPauseParams.self) { call, p in try call.session.handles.connection(p.handle).setFlowing(false); return true }
        table.add(TCPResumeParams.self) { call, p in try call.session.handles.connection(p.handle).setFlowing(true); return true }
    }

    /// The bytes of `data` (a string or an array of strings, gathered), cut by offset/length.
    /// Decoded straight into the buffer that is queued for the socket.
    static func payload(_ p: some SendParameters) throws -> ByteBuffer {
        let encoding = DataEncoding(p.encoding)
        // Sized for the decoded bytes up front: growing would round the storage up to a power of 2.
        let texts: Int
        switch p.data {
        case .string(let text): texts = encoding.decodedCapacity(text)
        case .array(let parts): texts = parts.reduce(0) { $0 + encoding.decodedCapacity($1) }
        }
        var bytes = ByteBufferAllocator().buffer(capacity: texts)
        switch p.data {
        case .string(let text):
            try encoding.decode(text, param: "data", appendingTo: &bytes)
        case .array(let parts):
            for (index, text) in parts.enumerated() {
                try encoding.decode(text, param: "data[\(index)]", appendingTo: &bytes)
            }
        }
        let total = bytes.readableBytes
        let offset = p.offset
        guard offset <= total else {
            throw RPCError.invalidParams("'offset' \(offset) is past the end of the data (\(total) bytes)")
        }
        var length = total - offset
        if let asked = p.length {
            guard asked <= length else {
                throw RPCError.invalidParams("'length' \(asked) goes past the end of the data (\(length) bytes after offset)")
            }
            length = asked
        }
        if length == total { return bytes }
        // A part of it: copied out, so the queue (and the budget) holds only what is sent.
        var part = ByteBufferAllocator().buffer(capacity: length)
        part.writeImmutableBuffer(bytes.getSlice(at: bytes.readerIndex + offset, length: length) ?? ByteBuffer())
        return part
    }

    static func send(_ call: Call, _ p: some SendParameters) throws -> JSONValue? {
        let connection = try call.session.handles.connection(p.handle)
        let data = try payload(p)
        connection.send(data, timeoutMS: p.timeout) { result in
            switch result {
            case .success(let count): call.succeed(.int(Int64(count)))
            case .failure(let error): call.fail(error)
            }
        }
        return nil
    }

    static func recv(_ call: Call, _ p: some RecvParameters, withRemote: Bool) throws -> JSONValue? {
        let connection = try call.session.handles.connection(p.handle)
        if let refusal = connection.relayRefusal { throw refusal }
        if connection.flowing {
            throw RPCError.handleState("handle \(connection.id) is flowing (data arrives as tcp.onData); call tcp.pause first")
        }
        let encoding = DataEncoding(p.encoding)
        let length = min(p.length, call.session.gateway.config.maxRecvLength)
        connection.recv(length: length, timeoutMS: p.timeout) { result in
            switch result {
            case .success(let (bytes, eof)):
                // Spelled out: JSONValue takes a nil literal as JSON null.
                let remote: JSONValue? = withRemote ? (connection.remote?.json ?? JSONValue.null) : Optional.none
                call.succeed(received: bytes, encoding: encoding, eof: eof, remote: remote)
            case .failure(let error):
                call.fail(error)
            }
        }
        return nil
    }

    static func pending(_ call: Call, _ p: TCPPendingParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server: return 0
        case .connection(let connection):
            guard connection.isOpen else { return .int(Int64(connection.bufferedBytes)) }
            let kernel = tcpgw_fionread(try connection.openFD())
            return .int(Int64(connection.bufferedBytes + max(0, Int(kernel))))
        }
    }

    static func shutdown(_ call: Call, _ p: TCPShutdownParams) throws -> JSONValue? {
        let connection = try call.session.handles.connection(p.handle)
        let how = p.how
        connection.shutdown(read: how != .w, write: how != .r) { result in
            switch result {
            case .success: call.succeed(true)
            case .failure(let error): call.fail(error)
            }
        }
        return nil
    }

    static func isEOF(_ call: Call, _ p: TCPIsEOFParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server: return false
        case .connection(let connection): return .bool(connection.eof)
        }
    }
}

/// What tcp.send and tcp.sendto share: one operation serves both (sendto's remote address is
/// by name only and ignored on TCP).
protocol SendParameters: HandleParams {
    var data: SendDataParam { get }
    var encoding: EncodingParam { get }
    var offset: Int { get }
    var length: Int? { get }
    var timeout: Int? { get }
}

extension TCPSendParams: SendParameters {}
extension TCPSendtoParams: SendParameters {}

/// What tcp.recv and tcp.recvfrom share.
protocol RecvParameters: HandleParams {
    var length: Int { get }
    var timeout: Int? { get }
    var encoding: EncodingParam { get }
}

extension TCPRecvParams: RecvParameters {}
extension TCPRecvfromParams: RecvParameters {}

extension DataEncoding {
    /// The encoding a request names (exhaustive, so a new schema value must be handled here).
    init(_ param: EncodingParam) {
        switch param {
        case .utf8: self = .utf8
        case .base64: self = .base64
        case .hex: self = .hex
        }
    }
}
