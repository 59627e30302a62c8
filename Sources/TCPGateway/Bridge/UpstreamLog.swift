/// What `tcpgw bridge --keep` has written to the gateway since its `session.keep` request, kept
/// until the gateway is known to have read it (contract §12): the gateway counts the client's
/// non-blank lines 1, 2, 3..., and after a resume the bridge resends what follows the count the
/// gateway answers. The same bytes are the send queue: `sendPosition` is the next byte to write.
struct UpstreamLog {
    private var bytes: [UInt8] = []
    /// Bytes before this are released.
    private var head = 0
    /// Index just after each counted line not yet released (lines released+1 ... lines).
    private var ends: [Int] = []
    private var endsHead = 0
    /// Counted lines released (the gateway has read them).
    private(set) var released: UInt64 = 0
    /// Counted lines appended.
    private(set) var lines: UInt64 = 0
    private(set) var sendPosition = 0

    /// Bytes kept (sent or not) for lines not yet released.
    var retainedBytes: Int { bytes.count - head }
    var unsentBytes: Int { bytes.count - sendPosition }

    /// One whole line with its newline; blank lines (only spaces, tabs, CR) are not counted,
    /// as the gateway does not count them.
    mutating func append(line: ArraySlice<UInt8>) {
        bytes.append(contentsOf: line)
        if !UpstreamLog.isBlank(line) {
            lines += 1
            ends.append(bytes.count)
        }
    }

    static func isBlank(_ line: ArraySlice<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }
    }

    /// The gateway has read lines up to `count`.
    mutating func release(upTo count: UInt64) {
        guard count > released else { return }
        let target = min(count, lines)
        head = ends[endsHead + Int(target - released) - 1]
        endsHead += Int(target - released)
        released = target
        sendPosition = max(sendPosition, head)
        compact()
    }

    /// After a resume: the gateway had read `count` lines; resend everything after them.
    /// False when `count` is outside what is kept (the gateway and the bridge disagree).
    mutating func rewind(to count: UInt64) -> Bool {
        guard count >= released, count <= lines else { return false }
        release(upTo: count)
        sendPosition = head
        return true
    }

    /// The next bytes to write.
    func withUnsent<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes[sendPosition...].withUnsafeBytes(body)
    }

    mutating func sent(_ count: Int) {
        sendPosition += count
    }

    /// Gives released bytes back once they are most of the buffer.
    private mutating func compact() {
        guard head > 64 * 1024, head * 2 > bytes.count else { return }
        bytes.removeFirst(head)
        sendPosition -= head
        ends.removeFirst(endsHead)
        for i in ends.indices { ends[i] -= head }
        endsHead = 0
        head = 0
    }
}
