import CJansson
import CNetShim

/// Long plain strings — printable ASCII with nothing to escape, which is what base64 and hex
/// payloads are — travel around jansson instead of through it. jansson handles strings a
/// character at a time (about 70 MB/s parsing, 120 MB/s printing for a 64 KiB string), while
/// copying the bytes costs next to nothing; so the strings are swapped for short placeholders
/// before jansson works and swapped back after.
///
/// A placeholder is the string "\u{0}tcpgw:N". Neither direction trusts that text alone, since
/// data can hold it (a peer's bytes, a client's method name):
/// - Parsing: jansson only yields a NUL for an escaped `\u0000`, and a message holding one is
///   left entirely to jansson, so every decoded placeholder is one of ours.
/// - Printing: placeholders are found by position, as the Nth string jansson writes (counted by
///   a walk that honours escapes), and each must read exactly as expected there; otherwise the
///   answer is printed without splicing.
enum LongStringSplice {
    static let threshold = 512
    /// The placeholder's text as it stands, escaped, inside a JSON string.
    static let escapedMarker: [UInt8] = Array(#"\u0000tcpgw:"#.utf8)
    static let decodedMarker: [UInt8] = [0] + Array("tcpgw:".utf8)

    /// The text with long plain string values replaced, and where the originals are; nil when
    /// there is nothing to gain (or a placeholder could be ambiguous).
    static func cut(_ bytes: UnsafeRawBufferPointer) -> (reduced: [UInt8], pieces: [Range<Int>])? {
        let n = bytes.count
        var pieces: [Range<Int>] = []
        var reduced: [UInt8] = []
        var copiedUpTo = 0
        var i = 0
        while i < n {
            guard bytes[i] == 0x22 else {
                i += 1
                continue
            }
            var j = plainRunEnd(bytes, from: i + 1)
            if j < n && bytes[j] == 0x22 && j - i - 1 >= threshold && !isKey(bytes, after: j + 1) {
                if reduced.isEmpty { reduced.reserveCapacity(n / 4 + 64) }
                reduced.append(contentsOf: bytes[copiedUpTo...i])
                reduced.append(contentsOf: escapedMarker)
                reduced.append(contentsOf: String(pieces.count).utf8)
                pieces.append((i + 1)..<j)
                copiedUpTo = j
                i = j + 1
                continue
            }
            // Not a long plain string: step over it, honouring escapes.
            while j < n && bytes[j] != 0x22 {
                if bytes[j] == 0x5C {
                    if j + 5 < n && bytes[j + 1] == 0x75 && bytes[j + 2] == 0x30 && bytes[j + 3] == 0x30
                        && bytes[j + 4] == 0x30 && bytes[j + 5] == 0x30
                    {
                        return nil  // an escaped NUL: a placeholder could be forged
                    }
                    j += 2
                } else {
                    j += 1
                }
            }
            i = j + 1
        }
        guard !pieces.isEmpty else { return nil }
        reduced.append(contentsOf: bytes[copiedUpTo..<n])
        return (reduced, pieces)
    }

    /// The index of the first byte at or after `from` that is not plain (a vector scan in the
    /// C shim: this runs over every payload byte).
    @inline(__always)
    static func plainRunEnd(_ bytes: UnsafeRawBufferPointer, from: Int) -> Int {
        guard let base = bytes.baseAddress, from < bytes.count else { return from }
        return from + tcpgw_plain_run(base.assumingMemoryBound(to: UInt8.self) + from, bytes.count - from)
    }

    /// Whether the string that ended just before `index` is an object key (a ':' follows).
    private static func isKey(_ bytes: UnsafeRawBufferPointer, after index: Int) -> Bool {
        var k = index
        while k < bytes.count, bytes[k] == 0x20 || bytes[k] == 0x09 || bytes[k] == 0x0A || bytes[k] == 0x0D { k += 1 }
        return k < bytes.count && bytes[k] == 0x3A
    }

    /// The piece number a decoded jansson string names, if it is a placeholder.
    static func pieceIndex(_ chars: UnsafeRawBufferPointer) -> Int? {
        // Ours are at most 18 digits, so the number cannot overflow.
        guard chars.count > decodedMarker.count, chars.count <= decodedMarker.count + 18, chars[0] == 0 else { return nil }
        for (k, byte) in decodedMarker.enumerated() where chars[k] != byte { return nil }
        var value = 0
        for byte in chars[decodedMarker.count...] {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return value
    }

    /// Whether `text` may be printed verbatim between quotes, and is long enough to bother.
    static func isLongPlain(_ text: inout String) -> Bool {
        guard text.utf8.count >= threshold else { return false }
        return text.withUTF8 { utf8 in
            tcpgw_plain_run(utf8.baseAddress!, utf8.count) == utf8.count
        }
    }

    /// The placeholder for piece `index`, as `build` hands it to jansson.
    static func placeholder(_ index: Int) -> String { "\u{0}tcpgw:\(index)" }

    /// Puts the long strings back into jansson's output. `ordinals[k]` is the position of
    /// `strings[k]` among all the strings (keys included) in the order jansson writes them;
    /// the string found there must be placeholder k. nil when the output does not have that
    /// shape, so nothing is ever pasted where the placeholders were not put.
    static func paste(_ output: [UInt8], _ strings: [String], at ordinals: [Int]) -> [UInt8]? {
        precondition(strings.count == ordinals.count)
        return output.withUnsafeBytes { out -> [UInt8]? in
            guard let base = out.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
            let n = out.count
            // Content ranges (between the quotes) of the placeholders, in order.
            var holes: [Range<Int>] = []
            holes.reserveCapacity(strings.count)
            var ordinal = -1
            var i = 0
            while holes.count < strings.count {
                i += tcpgw_quote_or_backslash(base + i, n - i)
                guard i < n, base[i] == 0x22 else { return nil }  // outside strings: only a quote
                ordinal += 1
                let open = i + 1
                i = open
                while true {
                    i += tcpgw_quote_or_backslash(base + i, n - i)
                    guard i < n else { return nil }
                    if base[i] == 0x22 { break }
                    i += 2  // an escape: the byte after the backslash is never the end
                    guard i <= n else { return nil }
                }
                if ordinal == ordinals[holes.count] {
                    guard isPlaceholder(UnsafeRawBufferPointer(rebasing: out[open..<i]), holes.count) else { return nil }
                    holes.append(open..<i)
                }
                i += 1
            }
            var total = n
            for (k, hole) in holes.enumerated() { total += strings[k].utf8.count - hole.count }
            return [UInt8](unsafeUninitializedCapacity: total) { buffer, count in
                var written = 0
                var copied = 0
                func put(_ source: UnsafeRawBufferPointer) {
                    guard let from = source.baseAddress, !source.isEmpty else { return }
                    UnsafeMutableRawPointer(buffer.baseAddress! + written).copyMemory(from: from, byteCount: source.count)
                    written += source.count
                }
                for (k, hole) in holes.enumerated() {
                    put(UnsafeRawBufferPointer(rebasing: out[copied..<hole.lowerBound]))
                    var text = strings[k]
                    text.withUTF8 { put(UnsafeRawBufferPointer($0)) }
                    copied = hole.upperBound
                }
                put(UnsafeRawBufferPointer(rebasing: out[copied..<n]))
                count = written
            }
        }
    }

    /// Whether jansson's text for a string (between its quotes) is placeholder `index`.
    private static func isPlaceholder(_ text: UnsafeRawBufferPointer, _ index: Int) -> Bool {
        let digits = String(index).utf8
        guard text.count == escapedMarker.count + digits.count else { return false }
        return text.prefix(escapedMarker.count).elementsEqual(escapedMarker)
            && text.suffix(digits.count).elementsEqual(digits)
    }
}
