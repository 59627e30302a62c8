import CNetShim
import JSONRPC
import NIOCore

/// A kept session's side of contract §12: its counted lines go into the replay log as well as
/// to the connection (when there is one), acknowledgements release them, and above
/// --replay-bytes of them the flowing handles stop reading.
extension Session {
    /// `session.keep`: answers (an uncounted line), then counts and keeps every line after it.
    func keep(_ call: Call, grace: Int) {
        let first = token == nil
        let token = self.token ?? SessionToken.make()
        lifecycle.keep(grace: grace)
        // The answer goes out first: it is not counted (on a kept session it is, being a
        // line after the first keep's answer).
        call.succeed(["token": .string(token), "grace": .int(Int64(grace))])
        guard first, !isClosed else { return }
        self.token = token
        replay = ReplayLog()
        gateway.keptSessions[token] = self
        gateway.logger.debug("client \(id): session kept (grace \(grace) ms)")
    }

    /// One counted line, written by `body` with its newline.
    func writeKept(passing fd: Int32? = nil, _ body: (inout ByteBuffer) -> Void) {
        var line = ByteBufferAllocator().buffer(capacity: 256)
        body(&line)
        keep(line: line, passing: fd)
    }

    /// One counted line: kept for replay, and written when the client is connected.
    func keep(line: ByteBuffer, passing fd: Int32? = nil) {
        line.withUnsafeReadableBytes { replay?.append($0) }
        account(line.readableBytes)
        if lifecycle.isDetached {
            if let fd { _ = tcpgw_close(fd) }
        } else {
            transport.write(line, passing: fd)
        }
        updateReplayCongestion()
    }

    /// Lines up to `count` have reached the client (`session.ack`, `session.resume`).
    func acknowledge(_ count: UInt64) {
        guard var log = replay else { return }
        replay = nil  // moved out while it changes, so the log's storage is not copied
        let freed = log.acknowledge(min(count, log.written))
        replay = log
        account(-freed)
        updateReplayCongestion()
    }

    private func updateReplayCongestion() {
        guard let replay else { return }
        let bytes = replay.retainedBytes
        let limit = gateway.config.replayBytes
        if !replayCongested && bytes > limit {
            replayCongested = true
            gateway.logger.debug("client \(id): \(bytes) bytes unacknowledged; pausing its flowing handles")
            handles.congestionChanged()
        } else if replayCongested && bytes <= limit / 2 {
            replayCongested = false
            handles.congestionChanged()
        }
    }

    /// The session ends: its token is forgotten and its log freed.
    func endResumption() {
        graceTimer?.cancel()
        graceTimer = nil
        if let token { gateway.keptSessions[token] = nil }
        if let replay { account(-replay.retainedBytes) }
        replay = nil
        replayCongested = false
    }

    /// The session's handles, as `tcp.list` shows them.
    var handleEntries: JSONValue { GatewayOperations.listEntries(self) }
}
