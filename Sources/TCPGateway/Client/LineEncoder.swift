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
        let start = buffer.writerIndex
        if writeSimple(message, into: &buffer) {
            buffer.writeInteger(UInt8(ascii: "\n"))
            return
        }
        buffer.moveWriterIndex(to: start)
        var bytes = JanssonCodec.serialize(message)
        bytes.append(UInt8(ascii: "\n"))
        buffer.writeBytes(bytes)
    }

    /// Writes `value` if every part of it is simple; false (with some bytes written) otherwise.
    private static func writeSimple(_ value: JSONValue, into buffer: inout ByteBuffer) -> Bool {
        switch value {
        case .null:
            buffer.writeStaticString("null")
        case .bool(let flag):
            buffer.writeStaticString(flag ? "true" : "false")
        case .int(let number):
            writeInteger(number, into: &buffer)
        case .double:
            return false  // jansson's precision rule decides how a real prints
        case .string(let text):
            return writeString(text, into: &buffer)
        case .array(let items):
            buffer.writeInteger(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                guard writeSimple(item, into: &buffer) else { return false }
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let object):
            buffer.writeInteger(UInt8(ascii: "{"))
            var first = true
            for (key, member) in object.members {
                if !first { buffer.writeInteger(UInt8(ascii: ",")) }
                first = false
                guard writeString(key, into: &buffer) else { return false }
                buffer.writeInteger(UInt8(ascii: ":"))
                guard writeSimple(member, into: &buffer) else { return false }
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        return true
    }

    /// A quoted string of printable ASCII other than `"` and `\`; false for anything else.
    private static func writeString(_ text: String, into buffer: inout ByteBuffer) -> Bool {
        var text = text
        return text.withUTF8 { utf8 in
            for byte in utf8 where byte < 0x20 || byte > 0x7E || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                return false
            }
            buffer.writeInteger(UInt8(ascii: "\""))
            buffer.writeBytes(UnsafeRawBufferPointer(utf8))
            buffer.writeInteger(UInt8(ascii: "\""))
            return true
        }
    }

    /// Decimal digits, as printf's %lld.
    private static func writeInteger(_ number: Int64, into buffer: inout ByteBuffer) {
        if number >= 0 && number < 10 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(number))
            return
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var magnitude = number.magnitude
            var index = 20
            repeat {
                index -= 1
                digits[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if number < 0 { buffer.writeInteger(UInt8(ascii: "-")) }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(digits)[index...]))
        }
    }
}
