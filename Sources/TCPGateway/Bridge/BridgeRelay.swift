import Foundation

/// The two copying loops of `tcpgw bridge`, one thread each: the client's lines (stdin) to the
/// gateway through `BridgeRequestFilter`, and the gateway's bytes to the client (stdout).
/// Two threads with blocking I/O, so neither direction ever waits for the other.
public enum BridgeRelay {
    /// How the gateway-to-client direction ended.
    public enum End: Equatable, Sendable {
        /// The link ended (the gateway closed, or ssh exited); `receivedAny`: a byte came first.
        case linkEnded(receivedAny: Bool)
        /// stdout failed: the client is gone.
        case clientGone
    }

    /// stdin → gateway until stdin ends or the link fails; then the link's write side is closed
    /// (the gateway ends the session when it has answered). Refused calls are answered on `output`.
    public static func clientToGateway(_ link: GatewayLink, _ output: BridgeOutput, input: Int32 = 0) {
        var filter = BridgeRequestFilter()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            let out = n > 0 ? buffer.withUnsafeBytes { filter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) } : filter.finish()
            for notice in out.notices { FileHandle.standardError.write(Data((notice + "\n").utf8)) }
            for answer in out.toClient { output.writeLine(answer) }
            if !out.toGateway.isEmpty && !BridgeOutput.writeAll(link.writeFD, out.toGateway) { break }
            if n <= 0 { break }
        }
        link.closeWrite()
    }

    /// gateway → stdout until either ends.
    public static func gatewayToClient(_ link: GatewayLink, _ output: BridgeOutput) -> End {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var receivedAny = false
        defer { output.endRelay() }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(link.readFD, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return .linkEnded(receivedAny: receivedAny) }
            receivedAny = true
            let ok = buffer.withUnsafeBytes { output.relay(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if !ok { return .clientGone }
        }
    }
}

/// The client's stdout, written by both directions: the gateway's bytes, and the bridge's own
/// answers to refused calls. Those must land between two of the gateway's lines, so the
/// relaying thread holds `lineLock` from the first byte of a line to its newline.
///
/// The bridge's answers go through a queue and a writer thread of their own (started by the
/// first one), so a client that writes without reading does not stop the bridge from reading
/// its requests while stdout is full, up to `maxQueuedBytes`, as the gateway would not.
public final class BridgeOutput: @unchecked Sendable {  // lineLock and queue guard the state below
    private let fd: Int32
    private let lineLock = NSLock()
    /// Only the relaying thread reads and writes it.
    private var midLine = false

    private let queue = NSCondition()
    private var queued: [[UInt8]] = []
    private var queuedBytes = 0
    private var writerStarted = false
    private var writeFailed = false
    public let maxQueuedBytes: Int

    public init(fd: Int32 = 1, maxQueuedBytes: Int = 1 << 20) {
        self.fd = fd
        self.maxQueuedBytes = maxQueuedBytes
    }

    /// Bytes from the gateway, passed on as they come. False when the write failed.
    public func relay(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let last = bytes.last else { return true }
        if !midLine { lineLock.lock() }
        let ok = BridgeOutput.writeAll(fd, bytes)
        midLine = ok && last != 0x0A
        if !midLine { lineLock.unlock() }
        return ok
    }

    /// The relaying thread is done (its link ended in the middle of a line, perhaps).
    public func endRelay() {
        if midLine {
            midLine = false
            lineLock.unlock()
        }
    }

    /// One whole line of the bridge's own, to be written between the gateway's lines. Waits
    /// only while `maxQueuedBytes` are already waiting. False once stdout has failed.
    @discardableResult
    public func writeLine(_ line: [UInt8]) -> Bool {
        queue.lock()
        defer { queue.unlock() }
        while queuedBytes > 0 && queuedBytes + line.count > maxQueuedBytes && !writeFailed { queue.wait() }
        if writeFailed { return false }
        queued.append(line)
        queuedBytes += line.count
        if !writerStarted {
            writerStarted = true
            Thread { [self] in writeQueued() }.start()
        }
        queue.broadcast()
        return true
    }

    /// Blocks until every queued line is written (or stdout failed); for an orderly exit.
    public func flush() {
        queue.lock()
        defer { queue.unlock() }
        while queuedBytes > 0 && !writeFailed { queue.wait() }
    }

    private func writeQueued() {
        while true {
            queue.lock()
            while queued.isEmpty { queue.wait() }
            let line = queued[0]
            queue.unlock()
            lineLock.lock()
            let ok = line.withUnsafeBytes { BridgeOutput.writeAll(fd, $0) }
            lineLock.unlock()
            queue.lock()
            queued.removeFirst()
            queuedBytes -= line.count
            if !ok {
                writeFailed = true
                queued = []
                queuedBytes = 0
            }
            queue.broadcast()
            queue.unlock()
            if !ok { return }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { writeAll(fd, $0) }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, base + offset, bytes.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }
}
