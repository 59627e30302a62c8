import JSONRPC
import NIOCore

/// Writes one outbound message, with its newline, straight into a transport buffer.
///
/// Small answers (`{"jsonrpc":"2.0","result":{"state":4,"name":"ESTABLISHED"},"id":7}`) are
/// made of integers, booleans, nulls and short ASCII strings with nothing to escape; those are
/// written here byte for byte as jansson prints them (compact, members in order), without
/// building a jansson tree or an intermediate array. Anything else (reals, strings that need
/// escaping or hold non-ASCII text) goes to `JanssonCodec.serialize`, which stays the reference.
enum LineEncoder {
    static func write(_ message: JSONValue, into buffer: inout ByteBuffer) {
        if let length = simpleLength(message) {
            // Measured first, so the bytes go in with one capacity check and plain stores.
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length + 1) { raw in
                var out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                writeSimple(message, to: &out)
                out.pointee = UInt8(ascii: "\n")
                return length + 1
            }
            return
        }
        var bytes = JanssonCodec.serialize(message)
        bytes.append(UInt8(ascii: "\n"))
        buffer.writeBytes(bytes)
    }

    private static let successHead: StaticString = #"{"jsonrpc":"2.0","result":"#
    private static let successIDKey: StaticString = #","id":"#

    /// `RPCResponse.success(id:result:)`, written without building the envelope object.
    static func writeSuccess(id: JSONValue, result: JSONValue, into buffer: inout ByteBuffer) {
        guard let resultLength = simpleLength(result), let idLength = simpleLength(id) else {
            write(RPCResponse.success(id: id, result: result), into: &buffer)
            return
        }
        let length = successHead.utf8CodeUnitCount + resultLength + successIDKey.utf8CodeUnitCount + idLength + 2
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            put(successHead, &out)
            writeSimple(result, to: &out)
            put(successIDKey, &out)
            writeSimple(id, to: &out)
            put(UInt8(ascii: "}"), &out)
            put(UInt8(ascii: "\n"), &out)
            return length
        }
    }

    /// Appends `value` as jansson prints it, when it is simple; false (nothing written) otherwise.
    static func appendSimple(_ value: JSONValue, to buffer: inout ByteBuffer) -> Bool {
        guard let length = simpleLength(value) else { return false }
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            var out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            writeSimple(value, to: &out)
            return length
        }
        return true
    }

    /// How many bytes `value` prints as, when every part of it is simple; nil otherwise.
    static func simpleLength(_ value: JSONValue) -> Int? {
        switch value {
        case .null: return 4
        case .bool(let flag): return flag ? 4 : 5
        case .int(let number): return digitCount(number)
        case .double: return nil  // jansson's precision rule decides how a real prints
        case .string(let text): return stringLength(text)
        case .array(let items):
            var total = 2 + max(items.count - 1, 0)
            for item in items {
                guard let length = simpleLength(item) else { return nil }
                total += length
            }
            return total
        case .object(let object):
            var total = 2 + max(object.count - 1, 0)
            for (key, member) in object.members {
                guard let keyLength = stringLength(key), let length = simpleLength(member) else { return nil }
                total += keyLength + 1 + length
            }
            return total
        }
    }

    /// The quoted length of a string of printable ASCII other than `"` and `\`; nil for any other.
    private static func stringLength(_ text: String) -> Int? {
        var text = text
        return text.withUTF8 { utf8 in
            for byte in utf8 where byte < 0x20 || byte > 0x7E || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                return nil
            }
            return utf8.count + 2
        }
    }

    private static func digitCount(_ number: Int64) -> Int {
        var magnitude = number.magnitude
        var count = number < 0 ? 2 : 1
        while magnitude >= 10 {
            magnitude /= 10
            count += 1
        }
        return count
    }

    /// Writes a value `simpleLength` accepted (so there is room, and nothing to escape).
    private static func writeSimple(_ value: JSONValue, to out: inout UnsafeMutablePointer<UInt8>) {
        switch value {
        case .null: put("null", &out)
        case .bool(let flag): put(flag ? "true" : "false", &out)
        case .int(let number): writeInteger(number, to: &out)
        case .double: break  // refused by simpleLength
        case .string(let text): writeString(text, to: &out)
        case .array(let items):
            put(UInt8(ascii: "["), &out)
            for (index, item) in items.enumerated() {
                if index > 0 { put(UInt8(ascii: ","), &out) }
                writeSimple(item, to: &out)
            }
            put(UInt8(ascii: "]"), &out)
        case .object(let object):
            put(UInt8(ascii: "{"), &out)
            var first = true
            for (key, member) in object.members {
                if !first { put(UInt8(ascii: ","), &out) }
                first = false
                writeString(key, to: &out)
                put(UInt8(ascii: ":"), &out)
                writeSimple(member, to: &out)
            }
            put(UInt8(ascii: "}"), &out)
        }
    }

    @inline(__always)
    private static func put(_ byte: UInt8, _ out: inout UnsafeMutablePointer<UInt8>) {
        out.pointee = byte
        out += 1
    }

    @inline(__always)
    private static func put(_ text: StaticString, _ out: inout UnsafeMutablePointer<UInt8>) {
        out.update(from: text.utf8Start, count: text.utf8CodeUnitCount)
        out += text.utf8CodeUnitCount
    }

    private static func writeString(_ text: String, to out: inout UnsafeMutablePointer<UInt8>) {
        var text = text
        put(UInt8(ascii: "\""), &out)
        text.withUTF8 { utf8 in
            if let base = utf8.baseAddress { out.update(from: base, count: utf8.count) }
            out += utf8.count
        }
        put(UInt8(ascii: "\""), &out)
    }

    /// Decimal digits, as printf's %lld.
    private static func writeInteger(_ number: Int64, to out: inout UnsafeMutablePointer<UInt8>) {
        if number < 0 { put(UInt8(ascii: "-"), &out) }
        var magnitude = number.magnitude
        let count = digitCount(number) - (number < 0 ? 1 : 0)
        var index = count
        repeat {
            index -= 1
            out[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        out += count
    }
}
