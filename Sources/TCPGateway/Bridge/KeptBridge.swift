import CNetShim
import Foundation
import JSONRPC

/// `tcpgw bridge --keep MS`: stdin/stdout to the gateway through a kept session (contract §12),
/// so the stdin/stdout client does not notice a dropped gateway connection. The bridge sends its
/// own `session.keep` first (its answer is swallowed), counts the lines both ways, acknowledges
/// the gateway's lines as they are passed on, and after a drop reconnects with backoff within
/// the grace, resumes and resends what the gateway had not read.
///
/// Only whole lines cross (a line the drop cut off is resent whole), so the client sees every
/// line once and in order. The bridge's own requests use ids that start with a random marker
/// no client would use; their answers are not passed on. To learn which of its lines the
/// gateway has read (and free them), it sends now and then another `session.keep` (a second
/// one only sets the grace again): its answer means every earlier line was read.
///
/// Calls that pass a descriptor are answered by the bridge itself with -32006, as the plain
/// bridge does (`BridgeRequestFilter`): never sent, so never counted as one of the client's lines.
///
/// Over ssh (`SSHTransport`) every reconnect runs ssh again; a link's ssh child is reaped (and
/// killed if need be) whenever the link is closed.
///
/// One thread and poll(2): the gateway connection is non-blocking; stdin is read only when
/// poll says so; stdout is written in the loop.
public final class KeptBridge {
    private let transport: BridgeTransport
    private let grace: Int
    private let marker: String
    private var link: BridgeLink?

    private enum Phase {
        /// The first session.keep is sent; its answer (not counted) is the first line back.
        case awaitingKeep
        case live
        /// A new connection sent session.resume; its answer (not counted) comes first.
        case awaitingResume
    }
    private var phase = Phase.awaitingKeep
    private var token = ""

    // Toward the gateway.
    private var log = UpstreamLog()
    /// Written before the log's bytes on a new connection: the keep or resume line (not counted).
    private var preamble: [UInt8] = []
    private var stdinPartial: [UInt8] = []
    private var filter = BridgeRequestFilter()
    private var stdinEnded = false
    private var writingShut = false
    /// The probe in flight (an id and the number of its line), and what was sent since the last.
    private var probe: (id: String, line: UInt64)?
    private var probes = 0
    private var linesSinceProbe = 0
    private var bytesSinceProbe = 0

    // Toward the client.
    private var downPartial: [UInt8] = []
    private var stdoutQueue: [UInt8] = []
    private var stdoutSent = 0
    /// The gateway's counted lines read, and the count last acknowledged.
    private var received: UInt64 = 0
    private var acknowledged: UInt64 = 0
    private var lastAck = KeptBridge.now()

    // Reconnecting.
    private var drops = 0
    private var dropDeadline: UInt64 = 0
    private var nextAttempt: UInt64 = 0
    private var backoff: UInt64 = 20
    /// How the last link's ssh ended, when it failed by itself (for the message that ends the bridge).
    private var lastLinkEnd: GatewayLinkEnd?

    /// Past this much unsent toward either side, the bridge stops reading the other (backpressure).
    private static let queueLimit = 1 << 20
    private static let ackEveryLines: UInt64 = 64
    private static let ackEveryMilliseconds: UInt64 = 100
    private static let probeEveryLines = 256
    private static let probeEveryBytes = 1 << 20

    public init(transport: BridgeTransport, grace: Int) {
        self.transport = transport
        self.grace = grace
        var generator = SystemRandomNumberGenerator()
        self.marker = "tcpgw-bridge-" + String(generator.next() as UInt64, radix: 16)
    }

    static func now() -> UInt64 { tcpgw_monotonic_ns() / 1_000_000 }

    /// Runs until stdin has ended and the session with it (0), or the session is lost (1, or 2
    /// when the gateway cannot be reached at all).
    public func run() -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        switch transport.connect() {
        case .failure(let failure):
            return fail(failure.description, status: 2)
        case .success(let link):
            attach(link)
        }
        preamble = line(["jsonrpc": "2.0", "id": .string(marker + "-keep"), "method": "session.keep",
                         "params": ["grace": .int(Int64(grace))]])
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let status = step(&chunk) {
                _ = closeLink(linger: 100, receivedAny: true)  // no ssh child left behind
                return status
            }
        }
    }

    private func attach(_ link: BridgeLink) {
        _ = tcpgw_set_nonblocking(link.readFD, 1)
        if link.writeFD != link.readFD { _ = tcpgw_set_nonblocking(link.writeFD, 1) }
        self.link = link
    }

    /// One turn of the loop; a status when the bridge is done.
    private func step(_ chunk: inout [UInt8]) -> Int32? {
        if link == nil, let status = reconnect() { return status }
        var fds: [pollfd] = []
        // stdout's queue holds the bridge's own refusals too: a client that does not read stops being read.
        let stdinSlot = pollSlot(&fds, 0, POLLIN, when: !stdinEnded && log.unsentBytes < KeptBridge.queueLimit
            && stdoutQueue.count - stdoutSent < KeptBridge.queueLimit)
        let stdoutSlot = pollSlot(&fds, 1, POLLOUT, when: stdoutSent < stdoutQueue.count)
        var linkReadSlot: Int? = nil
        var linkWriteSlot: Int? = nil
        if let link {
            linkReadSlot = pollSlot(&fds, link.readFD, POLLIN, when: stdoutQueue.count - stdoutSent < KeptBridge.queueLimit)
            linkWriteSlot = pollSlot(&fds, link.writeFD, POLLOUT, when: hasOutput)
        }
        let timeout: Int32 = link == nil ? 10 : Int32(KeptBridge.ackEveryMilliseconds)
        let n = poll(&fds, nfds_t(fds.count), timeout)
        if n < 0 && errno != EINTR { return fail("poll: \(String(cString: strerror(errno)))", status: 1) }
        if let slot = stdoutSlot, fds[slot].revents != 0, !writeStdout() { return 0 }  // the client is gone
        if let slot = linkReadSlot, fds[slot].revents != 0, let status = readLink(&chunk) { return status }
        if let slot = stdinSlot, fds[slot].revents != 0 { readStdin(&chunk) }
        if let slot = linkWriteSlot, link != nil, fds[slot].revents != 0 { writeLink() }
        if link != nil, phase == .live { acknowledgeIfDue() }
        if link != nil, stdinEnded, !writingShut, phase == .live, !hasOutput {
            // Everything the client wrote is out; the session ends when the gateway sees the end.
            link?.shutdownWriting()
            writingShut = true
        }
        return nil
    }

    private func pollSlot(_ fds: inout [pollfd], _ fd: Int32, _ events: Int32, when wanted: Bool) -> Int? {
        guard wanted else { return nil }
        fds.append(pollfd(fd: fd, events: Int16(events), revents: 0))
        return fds.count - 1
    }

    private var hasOutput: Bool {
        !preamble.isEmpty || (phase != .awaitingResume && log.unsentBytes > 0)
    }

    // MARK: toward the gateway

    private func readStdin(_ chunk: inout [UInt8]) {
        let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return }
        guard n > 0 else {
            // A line left unfinished is not sent (the gateway drops an unfinished line of a kept
            // session); a refused one is still answered. The last line makes the session end
            // with the connection instead of lingering for the grace.
            stdinEnded = true
            deliver(filter.finish(), forward: false)
            stdinPartial = []
            appendOwn(["jsonrpc": "2.0", "method": "session.keep", "params": ["grace": 0]])
            return
        }
        let out = chunk.withUnsafeBytes { filter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        deliver(out, forward: true)
    }

    /// What the filter made of the client's bytes: refusals to stdout (between whole lines: the
    /// queue holds only those), notices to stderr, the rest into the log as counted lines.
    private func deliver(_ out: BridgeRequestFilter.Output, forward: Bool) {
        for notice in out.notices { FileHandle.standardError.write(Data((notice + "\n").utf8)) }
        for answer in out.toClient { stdoutQueue.append(contentsOf: answer) }
        guard forward, !out.toGateway.isEmpty else { return }
        stdinPartial.append(contentsOf: out.toGateway)
        guard let lastNewline = stdinPartial.lastIndex(of: 0x0A) else { return }
        var start = 0
        while start <= lastNewline, let newline = stdinPartial[start...lastNewline].firstIndex(of: 0x0A) {
            log.append(line: stdinPartial[start...newline])
            linesSinceProbe += 1
            start = newline + 1
        }
        bytesSinceProbe += start
        stdinPartial.removeFirst(start)
        if probe == nil && (linesSinceProbe >= KeptBridge.probeEveryLines || bytesSinceProbe >= KeptBridge.probeEveryBytes) {
            probes += 1
            let id = "\(marker)-\(probes)"
            appendOwn(["jsonrpc": "2.0", "id": .string(id), "method": "session.keep", "params": ["grace": .int(Int64(grace))]])
            probe = (id, log.lines)
            linesSinceProbe = 0
            bytesSinceProbe = 0
        }
    }

    /// One of the bridge's own lines, counted like the client's.
    private func appendOwn(_ message: JSONValue) {
        let bytes = line(message)
        log.append(line: bytes[...])
    }

    private func line(_ message: JSONValue) -> [UInt8] {
        JanssonCodec.serialize(message) + [0x0A]
    }

    private func writeLink() {
        guard let link else { return }
        while hasOutput {
            let n: Int
            let fromPreamble = !preamble.isEmpty
            if fromPreamble {
                n = preamble.withUnsafeBytes { write(link.writeFD, $0.baseAddress, $0.count) }
            } else {
                n = log.withUnsent { write(link.writeFD, $0.baseAddress, $0.count) }
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            guard n > 0 else {
                dropped()
                return
            }
            if fromPreamble { preamble.removeFirst(n) } else { log.sent(n) }
        }
    }

    private func acknowledgeIfDue() {
        guard received > acknowledged else { return }
        let due = received - acknowledged >= KeptBridge.ackEveryLines
            || KeptBridge.now() - lastAck >= KeptBridge.ackEveryMilliseconds
        guard due else { return }
        appendOwn(["jsonrpc": "2.0", "method": "session.ack", "params": ["received": .int(Int64(received))]])
        acknowledged = received
        lastAck = KeptBridge.now()
        writeLink()
    }

    // MARK: toward the client

    private func readLink(_ chunk: inout [UInt8]) -> Int32? {
        guard let link else { return nil }
        let n = chunk.withUnsafeMutableBytes { read(link.readFD, $0.baseAddress, $0.count) }
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return nil }
        guard n > 0 else {
            if writingShut || phase == .awaitingKeep {
                // The session ended as the client asked (or never began): pass on what came, stop.
                while stdoutSent < stdoutQueue.count { if !writeStdout() { break } }
                if phase == .awaitingKeep {
                    // Over ssh, ssh's status says why (as for the plain bridge: 2, never reached).
                    if let end = closeLink(linger: 5000, receivedAny: false), let message = end.message {
                        return fail(message, status: end.status)
                    }
                    return fail("the gateway closed the connection before session.keep was answered", status: 1)
                }
                // The session is over; a remote bridge that failed at the end still says so.
                if let end = closeLink(linger: 5000, receivedAny: true), let message = end.message {
                    return fail(message, status: end.status)
                }
                return 0
            }
            dropped()
            return nil
        }
        downPartial.append(contentsOf: chunk[0..<n])
        guard let lastNewline = downPartial.lastIndex(of: 0x0A) else { return nil }
        var start = 0
        let drops = self.drops
        while start <= lastNewline, let newline = downPartial[start...lastNewline].firstIndex(of: 0x0A) {
            if let status = fromGateway(downPartial[start...newline]) { return status }
            // Dropped meanwhile (a write failed): the lines not yet counted come again in the replay.
            if self.drops != drops { return nil }
            start = newline + 1
        }
        downPartial.removeFirst(start)
        return nil
    }

    /// One whole line from the gateway.
    private func fromGateway(_ line: ArraySlice<UInt8>) -> Int32? {
        switch phase {
        case .awaitingKeep:
            guard let answer = try? JanssonCodec.parse(Array(line)), let token = answer["result"]?["token"]?.stringValue else {
                return fail("session.keep failed: \(String(decoding: line.dropLast(), as: UTF8.self))", status: 1)
            }
            self.token = token
            phase = .live
        case .awaitingResume:
            guard let answer = try? JanssonCodec.parse(Array(line)), let count = answer["result"]?["received"]?.intValue,
                count >= 0, log.rewind(to: UInt64(count))
            else {
                return fail("the session could not be resumed: \(String(decoding: line.dropLast(), as: UTF8.self))", status: 1)
            }
            phase = .live
            writeLink()
        case .live:
            received += 1
            if isOwnAnswer(line) { return nil }
            stdoutQueue.append(contentsOf: line)
        }
        return nil
    }

    /// Whether `line` answers one of the bridge's own requests (then it is not passed on).
    private func isOwnAnswer(_ line: ArraySlice<UInt8>) -> Bool {
        let needle = Array(marker.utf8)
        guard line.count > needle.count, contains(line, needle),
            let message = try? JanssonCodec.parse(Array(line)), let id = message["id"]?.stringValue, id.hasPrefix(marker)
        else { return false }
        if let probe, probe.id == id {
            log.release(upTo: probe.line)
            self.probe = nil
        }
        return true
    }

    private func contains(_ haystack: ArraySlice<UInt8>, _ needle: [UInt8]) -> Bool {
        guard let first = needle.first else { return true }
        var i = haystack.startIndex
        while let found = haystack[i...].firstIndex(of: first) {
            if haystack.endIndex - found >= needle.count && haystack[found..<found + needle.count].elementsEqual(needle) { return true }
            i = found + 1
        }
        return false
    }

    /// False when stdout is gone.
    private func writeStdout() -> Bool {
        let n = stdoutQueue[stdoutSent...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return true }
        guard n > 0 else { return false }
        stdoutSent += n
        if stdoutSent == stdoutQueue.count {
            stdoutQueue.removeAll(keepingCapacity: stdoutQueue.count <= 1 << 20)
            stdoutSent = 0
        }
        return true
    }

    // MARK: a dropped connection

    private func dropped() {
        drops += 1
        // ssh has usually exited already when its pipe ended: a moment to learn its status.
        if let end = closeLink(linger: 100, receivedAny: phase == .live), end.message != nil { lastLinkEnd = end }
        downPartial = []  // a cut line comes again whole, in the replay
        preamble = []
        let now = KeptBridge.now()
        guard phase != .awaitingResume else {
            // A new connection failed before resuming: the grace still runs from the first drop.
            nextAttempt = now + backoff
            backoff = min(backoff * 2, 1000)
            return
        }
        dropDeadline = now + UInt64(grace)
        nextAttempt = now
        backoff = 20
        phase = .awaitingResume
        FileHandle.standardError.write(Data("tcpgw: the gateway connection dropped; resuming\n".utf8))
    }

    private func reconnect() -> Int32? {
        let now = KeptBridge.now()
        guard now >= nextAttempt else { return nil }
        if token.isEmpty {
            if let end = lastLinkEnd, let message = end.message { return fail(message, status: 2) }
            return fail("the gateway connection dropped before session.keep was answered", status: 1)
        }
        if now > dropDeadline {
            let last = lastLinkEnd?.message.map { " (last attempt: \($0))" } ?? ""
            return fail("could not resume the session within its grace of \(grace) ms\(last)", status: 1)
        }
        switch transport.connect() {
        case .failure(let failure):
            lastLinkEnd = GatewayLinkEnd(status: 1, message: failure.description)
            nextAttempt = now + backoff
            backoff = min(backoff * 2, 1000)
            return nil
        case .success(let link):
            lastLinkEnd = nil
            attach(link)
        }
        preamble = line(["jsonrpc": "2.0", "id": .string(marker + "-resume"), "method": "session.resume",
                         "params": ["token": .string(token), "received": .int(Int64(received))]])
        return nil
    }

    /// Closes the link (reaping its ssh child); how ssh ended, when it ended by itself.
    private func closeLink(linger: Int, receivedAny: Bool) -> GatewayLinkEnd? {
        let end = link?.close(linger: linger, receivedAny: receivedAny)
        link = nil
        return end
    }

    private func fail(_ message: String, status: Int32) -> Int32 {
        // The plain bridge's prefix: both say the same things the same way.
        FileHandle.standardError.write(Data("tcpgw: \(message)\n".utf8))
        return status
    }
}

extension JSONValue {
    fileprivate var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    fileprivate var intValue: Int64? {
        if case .int(let number) = self { return number }
        return nil
    }
}
