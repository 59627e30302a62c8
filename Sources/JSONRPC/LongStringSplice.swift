import CJansson

/// Long plain strings — printable ASCII with nothing to escape, which is what base64 and hex
/// payloads are — travel around jansson instead of through it. jansson handles strings a
/// character at a time (about 70 MB/s parsing, 120 MB/s printing for a 64 KiB string), while
/// copying the bytes costs next to nothing; so the strings are swapped for short placeholders
/// before jansson works and swapped back after.
///
/// A placeholder is the string "\u{0}tcpgw:N". Messages that already contain an escaped NUL
/// (`\u0000`) are left entirely to jansson, so no client string can be mistaken for one.
enum LongStringSplice {
    static let threshold = 512
    /// The placeholder's text as it stands, escaped, inside a JSON string.
    static let escapedMarker: [UInt8] = Array(#"\u0000tcpgw:"#.utf8)
    static let decodedMarker: [UInt8] = [0] + Array("tcpgw:".utf8)

    @inline(__always)
    static func isPlain(_ byte: UInt8) -> Bool { byte >= 0x20 && byte <= 0x7E && byte != 0x22 && byte != 0x5C }

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

    /// The index of the first byte at or after `from` that is not plain (a word-at-a-time scan
    /// in the C shim: this runs over every payload byte).
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
        guard chars.count > decodedMarker.count, chars[0] == 0 else { return nil }
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
            for byte in utf8 where !isPlain(byte) { return false }
            return true
        }
    }

    /// Puts the long strings back into jansson's output, in order.
    static func paste(_ output: [UInt8], _ strings: [String]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(output.count + strings.reduce(0) { $0 + $1.utf8.count })
        var i = 0
        var next = 0
        let marker = escapedMarker
        while i < output.count {
            if next < strings.count && output[i] == marker[0] && i + marker.count <= output.count
                && output[i..<(i + marker.count)].elementsEqual(marker)
            {
                var j = i + marker.count
                while j < output.count && output[j] >= 0x30 && output[j] <= 0x39 { j += 1 }
                var text = strings[next]
                text.withUTF8 { result.append(contentsOf: $0) }
                next += 1
                i = j
                continue
            }
            result.append(output[i])
            i += 1
        }
        return result
    }
}
