import CJansson
#if canImport(Glibc)
import Glibc
#endif

/// Why a byte string is not JSON, with jansson's own explanation.
public struct JSONParseError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public let position: Int
    public var description: String { "\(message) at byte \(position)" }
}

/// Parses and prints JSON with jansson. Conversion to `JSONValue` happens once per message;
/// the hot data frames (`tcp.onData`) bypass this with their own encoder.
public enum JanssonCodec {
    /// Parses one JSON text of any type. NUL characters inside strings are allowed (they are
    /// valid JSON); duplicate keys keep the last value, as most parsers do.
    /// `splicing: false` sends long strings through jansson too (the baseline the codec
    /// benchmark compares against).
    public static func parse(_ bytes: UnsafeRawBufferPointer, splicing: Bool = true) throws -> JSONValue {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            throw JSONParseError(message: "empty input", position: 0)
        }
        // A raw NUL byte is never valid JSON, but jansson 2.14 silently accepts one right after a
        // top-level number or literal ("1\0" parses as 1), so refuse it before jansson sees it.
        if let nul = memchr(base, 0, bytes.count) {
            throw JSONParseError(message: "raw NUL byte", position: base.distance(to: UnsafeRawPointer(nul)))
        }
        var error = json_error_t()
        if splicing, bytes.count >= 2 * LongStringSplice.threshold, let (reduced, pieces) = LongStringSplice.cut(bytes),
            let root = reduced.withUnsafeBytes({ load($0, &error) })
        {
            // Only the short remainder went through jansson; the long strings are put back during
            // conversion. (Had it failed, the full parse below reports the error with its
            // position in the original text.)
            defer { tcpgw_json_decref(root) }
            return convert(root, (bytes, pieces))
        }
        guard let root = load(bytes, &error) else {
            let text = withUnsafePointer(to: &error) { String(cString: tcpgw_json_error_text($0)) }
            // jansson stops at integers beyond 64 bits, which are valid JSON. Read them as
            // reals instead (a rare, slow path), so such a value is judged by the schema.
            if text.hasPrefix("too big"), let widened = widenHugeIntegers(bytes) {
                return try widened.withUnsafeBytes { try parse($0, splicing: false) }
            }
            throw JSONParseError(message: text, position: Int(error.position))
        }
        defer { tcpgw_json_decref(root) }
        return convert(root, nil)
    }

    /// jansson's parse of any JSON text, NULs inside strings allowed; the caller owns the result.
    private static func load(_ bytes: UnsafeRawBufferPointer, _ error: inout json_error_t) -> UnsafeMutablePointer<json_t>? {
        let flags = JSON_DECODE_ANY | JSON_ALLOW_NUL
        return json_loadb(bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count, Int(flags), &error)
    }

    /// The text with ".0" after every integer literal of more than 18 digits (outside strings);
    /// nil when there is none.
    static func widenHugeIntegers(_ bytes: UnsafeRawBufferPointer) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var inString = false
        var escaped = false
        var changed = false
        var i = 0
        let isDigit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
        while i < bytes.count {
            let c = bytes[i]
            if inString {
                out.append(c)
                if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { inString = false }
                i += 1
                continue
            }
            if c == 0x22 {
                inString = true
                out.append(c)
                i += 1
                continue
            }
            if isDigit(c) || c == 0x2D {
                var j = i + 1
                while j < bytes.count, isDigit(bytes[j]) { j += 1 }
                out.append(contentsOf: bytes[i..<j])
                let isInteger = j >= bytes.count || ![0x2E, 0x65, 0x45].contains(bytes[j])
                if isInteger && j - i > 18 {
                    out.append(contentsOf: [0x2E, 0x30])
                    changed = true
                }
                i = j
                continue
            }
            out.append(c)
            i += 1
        }
        return changed ? out : nil
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0) }
    }

    public static func parse(_ text: String) throws -> JSONValue {
        var text = text
        return try text.withUTF8 { try parse(UnsafeRawBufferPointer($0)) }
    }

    private typealias Spliced = (original: UnsafeRawBufferPointer, pieces: [Range<Int>])

    private static func convert(_ node: UnsafeMutablePointer<json_t>, _ spliced: Spliced?) -> JSONValue {
        switch tcpgw_json_typeof(node) {
        case JSON_OBJECT:
            var object = JSONObject()
            var iterator = json_object_iter(node)
            while let it = iterator {
                let key = String(cString: json_object_iter_key(it))
                if let value = json_object_iter_value(it) { object[key] = convert(value, spliced) }
                iterator = json_object_iter_next(node, it)
            }
            return .object(object)
        case JSON_ARRAY:
            let count = json_array_size(node)
            var items: [JSONValue] = []
            items.reserveCapacity(count)
            for index in 0..<count {
                if let item = json_array_get(node, index) { items.append(convert(item, spliced)) }
            }
            return .array(items)
        case JSON_STRING:
            let length = json_string_length(node)
            guard let chars = json_string_value(node) else { return .string("") }
            let buffer = UnsafeRawBufferPointer(start: chars, count: length)
            if let spliced, let index = LongStringSplice.pieceIndex(buffer), index < spliced.pieces.count {
                return .string(String(decoding: UnsafeRawBufferPointer(rebasing: spliced.original[spliced.pieces[index]]), as: UTF8.self))
            }
            return .string(String(decoding: buffer, as: UTF8.self))
        case JSON_INTEGER:
            return .int(Int64(json_integer_value(node)))
        case JSON_REAL:
            return .double(json_real_value(node))
        case JSON_TRUE:
            return .bool(true)
        case JSON_FALSE:
            return .bool(false)
        default:
            return .null
        }
    }

    /// Gathers the long plain strings that `build` replaced with placeholders, and where each
    /// one stands among all the strings jansson will write (keys and values, in writing order).
    private final class SpliceCollector {
        var strings: [String] = []
        var ordinals: [Int] = []
        var stringsWritten = 0
    }

    /// Builds the jansson tree for `value`. The caller owns the returned reference.
    private static func build(_ value: JSONValue, _ collector: SpliceCollector? = nil) -> UnsafeMutablePointer<json_t> {
        switch value {
        case .null: return json_null()
        case .bool(let flag): return flag ? json_true() : json_false()
        case .int(let number): return json_integer(json_int_t(number))
        case .double(let number):
            // jansson refuses NaN and infinities; JSON has no spelling for them either.
            return number.isFinite ? json_real(number) : json_null()
        case .string(var text):
            if let collector {
                collector.stringsWritten += 1
                if LongStringSplice.isLongPlain(&text) {
                    collector.ordinals.append(collector.stringsWritten - 1)
                    collector.strings.append(text)
                    return build(.string(LongStringSplice.placeholder(collector.strings.count - 1)))
                }
            }
            if text.isEmpty { return json_string("") }
            return text.withUTF8 { utf8 in
                utf8.withMemoryRebound(to: CChar.self) { json_stringn_nocheck($0.baseAddress!, $0.count) }
            }
        case .array(let items):
            let array = json_array()!
            for item in items { json_array_append_new(array, build(item, collector)) }
            return array
        case .object(let object):
            let node = json_object()!
            for (key, item) in object.members {
                collector?.stringsWritten += 1  // jansson writes each key just before its value
                if key.isEmpty {
                    json_object_set_new_nocheck(node, "", build(item, collector))
                    continue
                }
                var key = key
                key.withUTF8 { utf8 in
                    utf8.withMemoryRebound(to: CChar.self) {
                        _ = json_object_setn_new_nocheck(node, $0.baseAddress!, $0.count, build(item, collector))
                    }
                }
            }
            return node
        }
    }

    /// Compact JSON text, never containing a raw newline (jansson escapes control characters).
    public static func serialize(_ value: JSONValue, splicing: Bool = true) -> [UInt8] {
        let precision = realPrecision(value)
        guard splicing else {
            let plain = build(value)
            defer { tcpgw_json_decref(plain) }
            return serialize(plain, precision: precision)
        }
        let collector = SpliceCollector()
        let root = build(value, collector)
        defer { tcpgw_json_decref(root) }
        if collector.strings.isEmpty { return serialize(root, precision: precision) }
        if let pasted = LongStringSplice.paste(serialize(root, precision: precision), collector.strings, at: collector.ordinals) {
            return pasted
        }
        // jansson wrote something other than what was built: never paste by guesswork.
        let plain = build(value)
        defer { tcpgw_json_decref(plain) }
        return serialize(plain, precision: precision)
    }

    /// jansson prints every real with one precision. 15 significant digits read naturally
    /// (an uptime of 0.27 prints as 0.27, not 0.27000000000000002) but do not always give the
    /// same double back; 17 always do. So: 15 when every real in the value survives it, else 17
    /// (a client's fractional id is then echoed as exactly the same number).
    static func realPrecision(_ value: JSONValue) -> Int32 {
        switch value {
        case .double(let d):
            return roundTrips(d, digits: 15) ? 15 : 17
        case .array(let items):
            return items.reduce(15) { max($0, realPrecision($1)) }
        case .object(let object):
            return object.members.reduce(15) { max($0, realPrecision($1.value)) }
        default:
            return 15
        }
    }

    private static func roundTrips(_ d: Double, digits: Int32) -> Bool {
        guard d.isFinite else { return true }
        var buffer = [CChar](repeating: 0, count: 40)
        _ = withVaList([d]) { vsnprintf(&buffer, buffer.count, "%.\(digits)g", $0) }
        return strtod(buffer, nil) == d
    }

    /// Prints a tree (consuming nothing: the caller still owns `root`).
    private static func serialize(_ root: UnsafeMutablePointer<json_t>, precision: Int32) -> [UInt8] {
        let flags = JSON_COMPACT | JSON_ENCODE_ANY | realPrecisionFlag(precision)
        let size = json_dumpb(root, nil, 0, Int(flags))
        var out = [UInt8](repeating: 0, count: size)
        if size > 0 {
            _ = out.withUnsafeMutableBytes { json_dumpb(root, $0.baseAddress!.assumingMemoryBound(to: CChar.self), size, Int(flags)) }
        }
        return escapingLineSeparators(out)
    }

    /// jansson escapes control characters but writes U+2028/U+2029 raw; line readers that decode
    /// text (Python's splitlines, older JavaScript) treat those as line ends, so escape them as
    /// Go's encoding/json does. E2 80 A8/A9 can only occur inside a string literal here, and E2 is
    /// a UTF-8 lead byte, so the match never straddles another character.
    private static func escapingLineSeparators(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.contains(0xE2) else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0xE2, index + 2 < bytes.count, bytes[index + 1] == 0x80,
               bytes[index + 2] == 0xA8 || bytes[index + 2] == 0xA9 {
                out.append(contentsOf: bytes[index + 2] == 0xA8 ? Array("\\u2028".utf8) : Array("\\u2029".utf8))
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return out
    }

    public static func serializeToString(_ value: JSONValue, pretty: Bool = false) -> String {
        if !pretty { return String(decoding: serialize(value), as: UTF8.self) }
        let root = build(value)
        defer { tcpgw_json_decref(root) }
        let flags = JSON_INDENT_FLAG_2 | JSON_ENCODE_ANY | realPrecisionFlag(realPrecision(value))
        guard let text = json_dumps(root, Int(flags)) else { return "null" }
        defer { free(text) }
        return String(cString: text)
    }
}

/// JSON_REAL_PRECISION(n) and JSON_INDENT(2): function-like macros Swift cannot import.
private func realPrecisionFlag(_ digits: Int32) -> Int32 { (digits & 0x1F) << 11 }
private let JSON_INDENT_FLAG_2: Int32 = 2 & 0x1F
