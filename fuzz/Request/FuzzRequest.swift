// The request path, as the gateway runs it on a client's bytes: LineFramer in chunks of
// input-derived sizes -> JanssonCodec.parse (splicing) -> RPCMessage.decode -> the schema's
// MethodCatalog.bind; then each entry's answer is printed and must read back with its id.
import FuzzSupport
import JSONRPC
@testable import TCPGateway

// libFuzzer calls the target on one thread only.
nonisolated(unsafe) private let catalog: MethodCatalog = {
    do { return try MethodCatalog(json: OpenRPCDocument.json) } catch { FuzzInput.fail("schema: \(error)") }
}()

/// Frames the bytes in one piece, or in chunks of 1...512 bytes, a quarter of them tiny (1...4:
/// the hard case for a framer).
private func frames(_ bytes: [UInt8], limit: Int, chunked: Bool) -> (frames: [LineFramer.Frame], buffered: Int) {
    var framer = LineFramer(maxLineBytes: limit)
    var out: [LineFramer.Frame] = []
    var generator = FuzzInput.Generator(bytes)
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let size = chunked ? min(raw.count - offset, 1 + generator.next(below: generator.next(below: 4) == 0 ? 4 : 512)) : raw.count
            framer.append(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + size)]), into: &out)
            offset += size
        }
    }
    return (out, framer.bufferedBytes)
}

/// Every frame names the stream bytes it came from; chunking changes nothing.
private func checkFraming(_ bytes: [UInt8], limit: Int) -> [LineFramer.Frame] {
    let whole = frames(bytes, limit: limit, chunked: false)
    let pieces = frames(bytes, limit: limit, chunked: true)
    guard whole.frames == pieces.frames, whole.buffered == pieces.buffered else {
        FuzzInput.fail("framing depends on chunk sizes (limit \(limit))")
    }
    var previousEnd: UInt64 = 0
    for frame in whole.frames {
        switch frame {
        case .line(let line, let start, let end):
            guard start >= previousEnd, end > start, Int(end) <= bytes.count, bytes[Int(end) - 1] == 0x0A,
                line.count <= limit, !line.contains(0x0A)
            else { FuzzInput.fail("bad line frame \(start)..<\(end)") }
            var body = Array(bytes[Int(start)..<Int(end) - 1])
            if body.last == 0x0D { body.removeLast() }
            guard body == line else { FuzzInput.fail("line frame \(start)..<\(end) is not its bytes") }
            previousEnd = end
        case .oversized(let start, let end):
            guard start >= previousEnd, Int(end) - Int(start) > limit, Int(end) <= bytes.count, bytes[Int(end) - 1] == 0x0A
            else { FuzzInput.fail("bad oversized frame \(start)..<\(end)") }
            previousEnd = end
        }
    }
    return whole.frames
}

/// The answer the gateway would give for one entry, short of running the operation.
private func answer(_ entry: RPCEntry) -> JSONValue? {
    switch entry {
    case .invalid(let id, let error):
        return RPCResponse.failure(id: id, error: error)
    case .request(let request):
        guard let id = request.id else { return nil }
        guard let method = catalog.methods[request.method] else {
            return RPCResponse.failure(id: id, error: .methodNotFound(request.method))
        }
        do {
            _ = try catalog.bind(method, request.params)
            return RPCResponse.success(id: id, result: request.params ?? .null)
        } catch let error as RPCError {
            return RPCResponse.failure(id: id, error: error)
        } catch {
            return RPCResponse.failure(id: id, error: .internalError("\(error)"))
        }
    }
}

/// Printed answers are one line of JSON that reads back as the answer (its id above all).
private func checkAnswer(_ value: JSONValue) {
    let bytes = JanssonCodec.serialize(value)
    guard !bytes.contains(0x0A) else { FuzzInput.fail("an answer holds a raw newline") }
    guard let back = try? JanssonCodec.parse(bytes), back == value else {
        FuzzInput.fail("an answer does not read back: \(String(decoding: bytes.prefix(300), as: UTF8.self))")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzInput.expand(UnsafeRawBufferPointer(start: data, count: size))
    // A small limit for one input in four, so that oversized lines are common.
    var generator = FuzzInput.Generator(bytes)
    let limit = generator.next(below: 4) == 0 ? 300 : 1 << 20
    for case .line(let line, _, _) in checkFraming(bytes, limit: limit) {
        let message = line.withUnsafeBytes { RPCMessage.decode($0) }
        switch message {
        case .failure(let error):
            checkAnswer(RPCResponse.failure(id: .null, error: error))
        case .single(let entry):
            if let value = answer(entry) { checkAnswer(value) }
        case .batch(let entries):
            let answers = entries.compactMap(answer)
            if !answers.isEmpty { checkAnswer(.array(answers)) }
        }
    }
    return 0
}
