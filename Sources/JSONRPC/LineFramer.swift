#if canImport(Glibc)
import Glibc
#endif

/// Splits a byte stream into newline-delimited frames, with a size limit.
///
/// A line longer than `maxLineBytes` is reported once as `.oversized` and the rest of it is
/// discarded up to its newline, so the connection stays usable. Each frame carries the stream
/// offsets it came from, so bytes that arrived with ancillary data (passed descriptors) can be
/// matched to the line they belong to. A trailing "\r" is dropped, and blank lines are skipped.
public struct LineFramer {
    public enum Frame: Equatable {
        case line([UInt8], start: UInt64, end: UInt64)
        case oversized(start: UInt64, end: UInt64)
    }

    public let maxLineBytes: Int
    private var buffer: [UInt8] = []
    /// Stream offset of buffer[0].
    private var bufferOffset: UInt64 = 0
    /// How far into `buffer` we have already searched for a newline.
    private var scanned = 0
    /// Discarding the tail of an oversized line; its start offset.
    private var discardingFrom: UInt64? = nil

    public init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    /// Bytes buffered while waiting for the end of a line.
    public var bufferedBytes: Int { buffer.count }
    /// Memory the buffer holds (its capacity), which is what a memory budget must count.
    public var heldBytes: Int { buffer.capacity }

    public mutating func append(_ bytes: UnsafeRawBufferPointer, into frames: inout [Frame]) {
        var input = bytes[...]
        while !input.isEmpty {
            if let start = discardingFrom {
                // Skip to the newline that ends the oversized line.
                guard let newline = input.firstIndex(of: 0x0A) else {
                    bufferOffset += UInt64(input.count)
                    return
                }
                let skipped = newline - input.startIndex + 1
                bufferOffset += UInt64(skipped)
                frames.append(.oversized(start: start, end: bufferOffset))
                discardingFrom = nil
                input = input[(newline + 1)...]
                continue
            }
            // Take at most what fits under the limit (plus one byte to notice overflow).
            let room = maxLineBytes + 1 - buffer.count
            let chunk = input.prefix(max(room, 0))
            buffer.append(contentsOf: chunk)
            input = input[chunk.endIndex...]
            extractLines(into: &frames)
            if buffer.count > maxLineBytes {
                // No newline within the limit: the line is too long.
                discardingFrom = bufferOffset
                bufferOffset += UInt64(buffer.count)
                buffer.removeAll(keepingCapacity: false)
                scanned = 0
            }
        }
    }

    private mutating func extractLines(into frames: inout [Frame]) {
        var lineStart = 0
        let count = buffer.count
        // memchr finds the newlines: a long line is scanned at memory speed, once.
        let newlines: [Int] = buffer.withUnsafeBytes { raw in
            var found: [Int] = []
            var from = scanned
            while from < count, let hit = memchr(raw.baseAddress! + from, 0x0A, count - from) {
                let at = raw.baseAddress!.distance(to: UnsafeRawPointer(hit))
                found.append(at)
                from = at + 1
            }
            return found
        }
        for index in newlines {
            do {
                var end = index
                if end > lineStart && buffer[end - 1] == 0x0D { end -= 1 }
                let start = bufferOffset + UInt64(lineStart)
                let stop = bufferOffset + UInt64(index + 1)
                if !isBlank(lineStart, end) {
                    frames.append(.line(Array(buffer[lineStart..<end]), start: start, end: stop))
                }
                lineStart = index + 1
            }
        }
        if lineStart > 0 {
            buffer.removeFirst(lineStart)
            bufferOffset += UInt64(lineStart)
            // After a long line, give the memory back rather than keep it for the client's life.
            if buffer.capacity > 256 * 1024 && buffer.count < buffer.capacity / 4 { buffer = Array(buffer) }
        }
        scanned = buffer.count
    }

    private func isBlank(_ from: Int, _ to: Int) -> Bool {
        var i = from
        while i < to {
            switch buffer[i] {
            case 0x20, 0x09, 0x0D: i += 1
            default: return false
            }
        }
        return true
    }
}
