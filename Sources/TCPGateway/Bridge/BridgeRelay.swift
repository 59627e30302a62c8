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
            for answer in out.toClient { _ = output.writeLine(answer) }
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
/// relaying thread holds the lock from the first byte of a line to its newline.
public final class BridgeOutput: @unchecked Sendable {  // the lock guards fd's line boundaries
    private let fd: Int32
    private let lock = NSLock()
    /// Only the relaying thread reads and writes it.
    private var midLine = false

    public init(fd: Int32 = 1) { self.fd = fd }

    /// Bytes from the gateway, passed on as they come. False when the write failed.
    public func relay(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let last = bytes.last else { return true }
        if !midLine { lock.lock() }
        let ok = BridgeOutput.writeAll(fd, bytes)
        midLine = ok && last != 0x0A
        if !midLine { lock.unlock() }
        return ok
    }

    /// The relaying thread is done (its link ended in the middle of a line, perhaps).
    public func endRelay() {
        if midLine {
            midLine = false
            lock.unlock()
        }
    }

    /// One whole line of the bridge's own, between the gateway's lines.
    public func writeLine(_ line: [UInt8]) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return line.withUnsafeBytes { BridgeOutput.writeAll(fd, $0) }
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
