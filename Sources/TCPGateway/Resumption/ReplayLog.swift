import NIOCore

/// The lines a kept session wrote to its client and the client has not acknowledged yet
/// (contract §12), kept for replay after a resume. Lines are numbered from 1 in the order
/// written. Their bytes are copied into chunks of about 64 KiB with each line's end recorded,
/// so a release or a replay is by line and costs no per-line allocation.
struct ReplayLog {
    /// Number of the last line appended (0 before the first).
    private(set) var written: UInt64 = 0
    /// Lines up to this one are acknowledged: released, never replayed.
    private(set) var acknowledged: UInt64 = 0
    /// Stream offset just after each retained line (lines acknowledged+1 ... written).
    private var lineEnds: CircularBuffer<UInt64> = []
    private var chunks: CircularBuffer<ByteBuffer> = []
    /// Stream offset of the first retained byte (the first chunk's first readable byte).
    private var start: UInt64 = 0
    /// Stream offset just after the last byte appended.
    private var end: UInt64 = 0

    static let chunkBytes = 64 * 1024

    /// Bytes held for lines not yet acknowledged.
    var retainedBytes: Int { Int(end - start) }
    var retainedLines: Int { lineEnds.count }

    /// Appends one complete line (with its newline); it gets the number `written` + 1.
    mutating func append(_ line: UnsafeRawBufferPointer) {
        written += 1
        end += UInt64(line.count)
        lineEnds.append(end)
        if !chunks.isEmpty {
            let last = chunks.index(before: chunks.endIndex)
            // Only into room already there: a chunk never reallocates (and never copies).
            let fitted = chunks.modify(last) { chunk -> Bool in
                guard chunk.writableBytes >= line.count else { return false }
                chunk.writeBytes(line)
                return true
            }
            if fitted { return }
        }
        var chunk = ByteBufferAllocator().buffer(capacity: max(ReplayLog.chunkBytes, line.count))
        chunk.writeBytes(line)
        chunks.append(chunk)
    }

    /// The client has read lines up to `count`: they are released. Returns the bytes freed.
    /// `count` must not exceed `written`; an older count than one acknowledged changes nothing.
    @discardableResult
    mutating func acknowledge(_ count: UInt64) -> Int {
        precondition(count <= written, "acknowledging lines never written")
        guard count > acknowledged else { return 0 }
        var newStart = start
        while acknowledged < count {
            newStart = lineEnds.removeFirst()
            acknowledged += 1
        }
        let freed = Int(newStart - start)
        while var first = chunks.first {
            let available = UInt64(first.readableBytes)
            if start + available <= newStart {
                start += available
                chunks.removeFirst()
                continue
            }
            first.moveReaderIndex(forwardBy: Int(newStart - start))
            chunks[chunks.startIndex] = first
            break
        }
        start = newStart
        return freed
    }

    /// The bytes of the lines after `count` (which must lie between `acknowledged` and
    /// `written`), as slices sharing the log's storage, in order.
    func lines(after count: UInt64) -> [ByteBuffer] {
        precondition(count >= acknowledged && count <= written, "replaying lines not retained")
        var from = count == acknowledged ? start : lineEnds[lineEnds.index(lineEnds.startIndex, offsetBy: Int(count - acknowledged) - 1)]
        var slices: [ByteBuffer] = []
        var chunkStart = start
        for chunk in chunks {
            let chunkEnd = chunkStart + UInt64(chunk.readableBytes)
            if from < chunkEnd {
                let skip = Int(from - chunkStart)
                if let slice = chunk.getSlice(at: chunk.readerIndex + skip, length: chunk.readableBytes - skip) {
                    slices.append(slice)
                }
                from = chunkEnd
            }
            chunkStart = chunkEnd
        }
        return slices
    }
}
