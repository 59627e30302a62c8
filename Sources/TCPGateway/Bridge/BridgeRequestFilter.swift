import CNetShim
import Foundation
import JSONRPC

/// What `tcpgw bridge` does with the bytes its client writes: whole lines go on to the
/// gateway, except calls of a method that passes a descriptor (the schema's `x-descriptor`:
/// tcp.createByFd, tcp.flyAway). A descriptor cannot cross stdin/stdout, let alone ssh, so the
/// bridge answers such a request itself with -32006 and the gateway never sees it: a flyAway
/// that went through would hand the socket to a pipe that drops it.
///
/// Pure: bytes in, actions out; the bridge does the writing.
public struct BridgeRequestFilter {
    public struct Output: Equatable {
        /// Bytes for the gateway, in order (whole lines, plus at most the start of one that
        /// is too long to inspect).
        public var toGateway: [UInt8] = []
        /// Answer lines for the client (newline included).
        public var toClient: [[UInt8]] = []
        /// One-line messages for stderr (refused notifications: there is no one to answer).
        public var notices: [String] = []
    }

    /// Lines longer than this are passed on without a look (the gateway's own line limit,
    /// 16 MiB by default, refuses them anyway).
    public let maxInspectedLineBytes: Int
    /// The start of a line whose newline has not come yet.
    private var pending: [UInt8] = []
    /// True while passing on the rest of an over-long line.
    private var passingThrough = false
    private let descriptorMethods: [String: DescriptorPassing]
    /// Byte strings, one of which a line must contain to possibly call such a method: the
    /// method names, and `\u`, with which JSON may spell any of their letters.
    private let triggers: [[UInt8]]

    public init(maxInspectedLineBytes: Int = 64 << 20) {
        self.maxInspectedLineBytes = maxInspectedLineBytes
        var methods: [String: DescriptorPassing] = [:]
        for type in MethodParamsTypes.all {
            if let passing = type.descriptor { methods[type.method] = passing }
        }
        descriptorMethods = methods
        triggers = methods.keys.sorted().map { Array($0.utf8) } + [Array("\\u".utf8)]
    }

    /// Takes what the client wrote; answers what to send where.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Output {
        var out = Output()
        guard let base = bytes.baseAddress, bytes.count > 0 else { return out }
        var start = 0
        // Lines before this offset are judged one by one: their block holds a trigger.
        var oneByOneUntil = 0
        while start < bytes.count {
            // Fast path: all the whole lines left in this read at once, when none of them
            // holds a trigger (almost always: base64 payloads have no backslash).
            if !passingThrough && pending.isEmpty && start >= oneByOneUntil,
                let last = tcpgw_memrchr(base + start, 0x0A, bytes.count - start)
            {
                let blockEnd = base.distance(to: UnsafeRawPointer(last)) + 1
                let block = UnsafeRawBufferPointer(rebasing: bytes[start..<blockEnd])
                if !mayCallDescriptorMethod(block) {
                    out.toGateway.append(contentsOf: block)
                    start = blockEnd
                    continue
                }
                oneByOneUntil = blockEnd
            }
            let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
            guard let newline = memchr(base + start, 0x0A, rest.count) else {
                if passingThrough {
                    out.toGateway.append(contentsOf: rest)
                } else if pending.count + rest.count > maxInspectedLineBytes {
                    out.toGateway.append(contentsOf: pending)
                    out.toGateway.append(contentsOf: rest)
                    pending = []
                    passingThrough = true
                } else {
                    pending.append(contentsOf: rest)
                }
                return out
            }
            let end = base.distance(to: UnsafeRawPointer(newline)) + 1  // past the newline
            let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            if passingThrough {
                out.toGateway.append(contentsOf: line)
                passingThrough = false
            } else if pending.isEmpty {
                take(line, into: &out)
            } else {
                pending.append(contentsOf: line)
                let whole = pending
                pending = []
                whole.withUnsafeBytes { take($0, into: &out) }
            }
            start = end
        }
        return out
    }

    /// The client's stdin has ended: a last line without its newline is judged as a line too
    /// (the gateway would run it).
    public mutating func finish() -> Output {
        var out = Output()
        let last = pending
        pending = []
        passingThrough = false
        if !last.isEmpty { last.withUnsafeBytes { take($0, into: &out) } }
        return out
    }

    /// One line (newline included, if it has one).
    private func take(_ line: UnsafeRawBufferPointer, into out: inout Output) {
        if mayCallDescriptorMethod(line), let refusal = refuse(line) {
            if let answer = refusal.answer {
                var bytes = JanssonCodec.serialize(answer)
                bytes.append(0x0A)
                out.toClient.append(bytes)
            }
            out.notices += refusal.notices
            return
        }
        out.toGateway.append(contentsOf: line)
    }

    private func mayCallDescriptorMethod(_ line: UnsafeRawBufferPointer) -> Bool {
        guard let base = line.baseAddress else { return false }
        return triggers.contains { needle in
            needle.withUnsafeBytes { tcpgw_memmem(base, line.count, $0.baseAddress, needle.count) != nil }
        }
    }

    /// The answer to a line that calls a descriptor method (nil answer: nothing to answer, a
    /// notification); nil when the line does not call one (it goes to the gateway).
    private func refuse(_ line: UnsafeRawBufferPointer) -> (answer: JSONValue?, notices: [String])? {
        // The gateway's own parser: both read the same text the same way (duplicate keys too).
        guard let message = try? JanssonCodec.parse(line) else { return nil }
        switch message {
        case .object:
            guard let (method, passing) = descriptorCall(message) else { return nil }
            let error = BridgeRequestFilter.refusal(method, passing)
            guard let id = message["id"] else {
                return (nil, ["tcpgw bridge: dropped a \(method) notification: \(error.message)"])
            }
            return (BridgeRequestFilter.answer(id: id, error), [])
        case .array(let batch):
            // A batch is answered as one array: the bridge cannot merge its answers into the
            // gateway's, so none of it runs, and every request in it says why.
            guard let (method, _) = batch.lazy.compactMap({ self.descriptorCall($0) }).first else { return nil }
            var answers: [JSONValue] = []
            var dropped = 0
            for element in batch {
                guard case .object = element else {
                    answers.append(BridgeRequestFilter.answer(id: .null, .invalidRequest("a batch element must be an object")))
                    continue
                }
                let error: RPCError
                if let (own, passing) = descriptorCall(element) {
                    error = BridgeRequestFilter.refusal(own, passing)
                } else {
                    error = RPCError(
                        code: GatewayErrorCode.descriptor.rawValue,
                        message: "not run: its batch calls \(method), which passes a descriptor (SCM_RIGHTS) and cannot cross tcpgw bridge; send the other calls without it")
                }
                if let id = element["id"] {
                    answers.append(BridgeRequestFilter.answer(id: id, error))
                } else {
                    dropped += 1
                }
            }
            let notices = dropped > 0 ? ["tcpgw bridge: dropped \(dropped) notification(s) of a batch calling \(method): descriptors cannot cross the bridge"] : []
            return (answers.isEmpty ? nil : .array(answers), notices)
        default:
            return nil
        }
    }

    private func descriptorCall(_ message: JSONValue) -> (String, DescriptorPassing)? {
        guard case .string(let method)? = message["method"], let passing = descriptorMethods[method] else { return nil }
        return (method, passing)
    }

    static func refusal(_ method: String, _ passing: DescriptorPassing) -> RPCError {
        let what = passing == .answer
            ? "\(method) hands the socket over with SCM_RIGHTS"
            : "\(method) needs a socket passed with SCM_RIGHTS"
        let outcome = passing == .answer ? "; the handle stays in the gateway" : ""
        return RPCError(
            code: GatewayErrorCode.descriptor.rawValue,
            message: "\(what), which cannot cross tcpgw bridge (stdin/stdout or ssh://): refused by the bridge\(outcome)",
            data: ["method": .string(method), "refusedBy": "bridge"])
    }

    static func answer(id: JSONValue, _ error: RPCError) -> JSONValue {
        // An id of a type JSON-RPC does not allow is answered as the gateway would: null.
        let echoed: JSONValue
        switch id {
        case .string, .int, .double, .null: echoed = id
        default: echoed = .null
        }
        return ["jsonrpc": "2.0", "error": error.json, "id": echoed]
    }
}
