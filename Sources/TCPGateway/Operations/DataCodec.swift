import CNetShim
import JSONRPC
import NIOCore

/// Base64 and hex, written for the data path: jansson's string handling is the slow part of a
/// large frame, so the bytes are converted here, straight between buffers.
enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, char) in alphabet.enumerated() { table[Int(char)] = UInt8(index) }
        // The URL-safe alphabet decodes too; it costs nothing.
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Appends the base64 of `input` to `out` (vectorised, in the C shim: see base64.c).
    static func encode(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let length = encodedLength(input.count)
        _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { dest in
            guard let source = input.baseAddress, let target = dest.baseAddress else { return 0 }
            return tcpgw_base64_encode(source, input.count, target)
        }
    }

    static func encode(_ buffer: ByteBuffer) -> String {
        buffer.withUnsafeReadableBytes { input in
            String(unsafeUninitializedCapacity: encodedLength(input.count)) { dest in
                guard let source = input.baseAddress, let target = dest.baseAddress else { return 0 }
                return tcpgw_base64_encode(source, input.count, target)
            }
        }
    }

    /// Per input position, the 6-bit value already shifted into place; 0xFF00_0000 marks a
    /// character outside the alphabet, so one OR over four lookups both assembles and checks.
    private static let shiftedTables: [[UInt32]] = (0..<4).map { position in
        decodeTable.map { value in value == 0xFF ? 0xFF00_0000 : UInt32(value) << (18 - 6 * UInt32(position)) }
    }
    private static let t0 = shiftedTables[0], t1 = shiftedTables[1], t2 = shiftedTables[2], t3 = shiftedTables[3]

    /// Decodes base64 (padding optional, whitespace not allowed) straight onto the end of `out`
    /// (no intermediate array); false, with `out` unchanged, if it is not base64.
    static func decode(_ text: String, appendingTo out: inout ByteBuffer) -> Bool {
        var text = text
        return text.withUTF8 { utf8 -> Bool in
            var n = utf8.count
            while n > 0 && utf8[n - 1] == UInt8(ascii: "=") { n -= 1 }
            if utf8.count - n > 2 || n % 4 == 1 { return false }
            if utf8.count % 4 != 0 && utf8.count != n { return false }  // padded, but not to a multiple of 4
            let outCount = n / 4 * 3 + max(0, n % 4 - 1)
            var failed = false
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: outCount) { raw in
                let dest = raw.bindMemory(to: UInt8.self)
                t0.withUnsafeBufferPointer { t0 in
                    t1.withUnsafeBufferPointer { t1 in
                        t2.withUnsafeBufferPointer { t2 in
                            t3.withUnsafeBufferPointer { t3 in
                                // Whole blocks of the standard alphabet go vectorised (base64.c);
                                // the rest, and any block it will not take, is checked here.
                                var i = 0
                                if let source = utf8.baseAddress, let target = dest.baseAddress {
                                    i = tcpgw_base64_decode_prefix(source, n, target, outCount)
                                }
                                var o = i / 4 * 3
                                var bad: UInt32 = 0
                                while i + 4 <= n {
                                    let v = t0[Int(utf8[i])] | t1[Int(utf8[i + 1])] | t2[Int(utf8[i + 2])] | t3[Int(utf8[i + 3])]
                                    bad |= v
                                    dest[o] = UInt8(truncatingIfNeeded: v >> 16)
                                    dest[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                                    dest[o + 2] = UInt8(truncatingIfNeeded: v)
                                    i += 4
                                    o += 3
                                }
                                let rest = n - i
                                if rest >= 2 {
                                    let c = rest == 3 ? t2[Int(utf8[i + 2])] : 0
                                    let v = t0[Int(utf8[i])] | t1[Int(utf8[i + 1])] | c
                                    bad |= v
                                    dest[o] = UInt8(truncatingIfNeeded: v >> 16)
                                    if rest == 3 { dest[o + 1] = UInt8(truncatingIfNeeded: v >> 8) }
                                }
                                failed = bad & 0xFF00_0000 != 0
                            }
                        }
                    }
                }
                return failed ? 0 : outCount
            }
            return !failed
        }
    }
}

enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func encode(_ buffer: ByteBuffer) -> String {
        var out = [UInt8]()
        out.reserveCapacity(buffer.readableBytes * 2)
        buffer.withUnsafeReadableBytes { bytes in
            for byte in bytes {
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 15)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var i = 0
        while i < utf8.count {
            guard let hi = value(utf8[i]), let lo = value(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

/// The encodings `data` may be given or asked in.
enum DataEncoding: String {
    case utf8, base64, hex

    /// Room enough for the bytes `text` stands for (exact for utf8; base64 and hex: at most that).
    func decodedCapacity(_ text: String) -> Int {
        switch self {
        case .utf8: return text.utf8.count
        case .base64: return text.utf8.count / 4 * 3 + 2
        case .hex: return text.utf8.count / 2
        }
    }

    /// Appends the bytes `text` stands for to `out`; -32602 naming `param` if it is not that.
    func decode(_ text: String, param: String, appendingTo out: inout ByteBuffer) throws {
        switch self {
        case .utf8: out.writeString(text)
        case .base64:
            guard Base64.decode(text, appendingTo: &out) else { throw RPCError.invalidParams("'\(param)' is not valid base64") }
        case .hex:
            guard let bytes = Hex.decode(text) else { throw RPCError.invalidParams("'\(param)' is not valid hex") }
            out.writeBytes(bytes)
        }
    }

    func encode(_ buffer: ByteBuffer) -> String {
        switch self {
        case .utf8: return String(decoding: buffer.readableBytesView, as: UTF8.self)  // invalid bytes → U+FFFD
        case .base64: return Base64.encode(buffer)
        case .hex: return Hex.encode(buffer)
        }
    }
}

/// Writes the two messages whose size grows with the traffic, `tcp.onData` and the answer to
/// `tcp.recv`, without building a JSON tree or a String of the data. Each line is byte for byte
/// what jansson would print for the same object.
enum DataFrameEncoder {
    private static let head = Array(#"{"jsonrpc":"2.0","method":"tcp.onData","params":{"handle":"#.utf8)
    private static let middle = Array(#","data":""#.utf8)
    private static let tail = Array(#"","encoding":"base64"}}"#.utf8)

    static func onData(handle: Int64, _ data: ByteBuffer) -> ByteBuffer {
        data.withUnsafeReadableBytes { onData(handle: handle, $0) }
    }

    static func onData(handle: Int64, _ data: UnsafeRawBufferPointer) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(
            capacity: head.count + 20 + middle.count + Base64.encodedLength(data.count) + tail.count + 1)
        out.writeBytes(head)
        out.writeString(String(handle))
        out.writeBytes(middle)
        Base64.encode(data, into: &out)
        out.writeBytes(tail)
        out.writeInteger(UInt8(0x0A))
        return out
    }

    private static let answerHead = Array(#"{"jsonrpc":"2.0","result":{"data":""#.utf8)
    private static let answerEncoding = Array(#"","encoding":"base64","eof":"#.utf8)
    private static let answerRemote = Array(#","remote":"#.utf8)
    private static let answerID = Array(#"},"id":"#.utf8)

    /// The answer line to a `tcp.recv` (or, with `remote`, `tcp.recvfrom`) in base64:
    /// `{"jsonrpc":"2.0","result":{"data":…,"encoding":"base64","eof":…[,"remote":…]},"id":…}`.
    /// Nil when `id` or `remote` is not a simple value (the generic writer takes those).
    static func recvAnswer(id: JSONValue, _ data: ByteBuffer, eof: Bool, remote: JSONValue?) -> ByteBuffer? {
        guard let idLength = LineEncoder.simpleLength(id) else { return nil }
        let remoteLength: Int
        if let remote {
            guard let length = LineEncoder.simpleLength(remote) else { return nil }
            remoteLength = answerRemote.count + length
        } else {
            remoteLength = 0
        }
        var out = ByteBufferAllocator().buffer(
            capacity: answerHead.count + Base64.encodedLength(data.readableBytes) + answerEncoding.count + 5
                + remoteLength + answerID.count + idLength + 2)
        out.writeBytes(answerHead)
        data.withUnsafeReadableBytes { Base64.encode($0, into: &out) }
        out.writeBytes(answerEncoding)
        out.writeStaticString(eof ? "true" : "false")
        if let remote {
            out.writeBytes(answerRemote)
            _ = LineEncoder.appendSimple(remote, to: &out)
        }
        out.writeBytes(answerID)
        _ = LineEncoder.appendSimple(id, to: &out)
        out.writeStaticString("}\n")
        return out
    }
}
