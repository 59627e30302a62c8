import Foundation
import CNetShim
import JSONRPC
import NIOCore

/// The byte transport of one gateway client: a Unix stream socket read with recvmsg (so
/// descriptors passed with SCM_RIGHTS arrive with the bytes they were attached to) and written
/// with sendmsg (so `tcp.flyAway` can attach one to its answer).
///
/// Writes queue in order; the queue's size drives backpressure both ways: above the high
/// watermark the session stops reading its TCP peers and the client's requests.
///
/// The socket stays registered with the reactor even while reading is paused, so a client
/// that hangs up is noticed at once, whatever its read state.
final class ClientTransport: ReactorSource, DeferredWork {
    struct ReceivedDescriptor {
        let offset: UInt64
        var fd: Int32
    }

    private struct Segment {
        var bytes: ByteBuffer
        var fd: Int32?  // attached to the segment's first byte, then closed by us once sent
    }

    private var socket: OwnedFD?
    private var watch = IOWatch(watchHangupWhenIdle: true)
    private let reactor: Reactor
    private var segments: CircularBuffer<Segment> = []
    private(set) var queuedBytes = 0
    private var waitingForWritable = false
    private var flushScheduled = false
    private var reading = false
    private(set) var isClosed = false
    private var receivedOffset: UInt64 = 0
    /// Shared by every client (the loop reads one socket at a time and the framer copies what
    /// it keeps), so an idle client costs no read buffer.
    private let readBuffer: UnsafeMutableRawBufferPointer

    /// Called with each chunk read and the descriptors that came with it.
    var onRead: ((UnsafeRawBufferPointer, [ReceivedDescriptor]) -> Void)?
    /// Called once when the client hangs up or the socket fails.
    var onClose: (() -> Void)?
    /// Called when the queue crosses the watermarks (true = congested).
    var onCongestion: ((Bool) -> Void)?
    /// Called with every change of the queued byte count (for the memory budget).
    var onQueued: ((Int) -> Void)?
    /// Set by `handOver`: where the socket goes once the queue is written.
    private var handingOver: ((consuming OwnedFD?) -> Void)?

    let highWatermark: Int
    let lowWatermark: Int
    private(set) var congested = false

    init(socket: consuming OwnedFD, reactor: Reactor, readBuffer: UnsafeMutableRawBufferPointer, highWatermark: Int) {
        self.reactor = reactor
        self.readBuffer = readBuffer
        self.highWatermark = highWatermark
        self.lowWatermark = highWatermark / 4
        self.socket = consume socket
    }

    var fd: Int32 { socket?.raw ?? -1 }
    /// Whether the socket is watched for writability (only while a send waits for room).
    var watchesWritable: Bool { watch.interest.contains(.write) }

    func start() throws {
        try watch.set([], fd: fd, source: self, reactor: reactor)
    }

    // MARK: reading

    /// Reads (and goes on reading) what the client sends.
    func resumeReading() {
        guard !isClosed, !reading else { return }
        reading = true
        updateInterest()
    }

    /// Leaves the client's requests in its socket (backpressure); a hang-up is still seen.
    func pauseReading() {
        guard !isClosed, reading else { return }
        reading = false
        updateInterest()
    }

    private func updateInterest() {
        var interest: IOInterest = []
        if reading { interest.insert(.read) }
        if waitingForWritable { interest.insert(.write) }
        try? watch.set(interest, fd: fd, source: self, reactor: reactor)
    }

    func ready(_ events: IOEvents) {
        if events.writable && waitingForWritable {
            waitingForWritable = false
            flush()
            // All sent: drop the write interest, or level-triggered EPOLLOUT wakes the loop
            // again and again for nothing (a busy loop for as long as the socket stays writable).
            if !waitingForWritable && !isClosed { updateInterest() }
        }
        guard !isClosed else { return }
        if events.readable && reading {
            readAvailable()
        } else if events.hangup {
            // Gone while we were not reading: whatever it left unread cannot be answered.
            close()
        }
    }

    private func readAvailable() {
        var nfds: Int32 = 0
        let n = fdSlots.withUnsafeMutableBufferPointer { slots in
            tcpgw_recv_with_fds(fd, readBuffer.baseAddress, readBuffer.count, slots.baseAddress, 8, &nfds, 1)
        }
        let fds = fdSlots
        if n == -Int(EAGAIN) || n == -Int(EINTR) { return }
        // Linux ends a read right after the message that carried descriptors (bytes before it
        // may be glued on), so they belong with the read's last byte.
        let lastByte = receivedOffset + UInt64(max(n, 1)) - 1
        var received: [ReceivedDescriptor] = []
        for i in 0..<Int(nfds) { received.append(ReceivedDescriptor(offset: lastByte, fd: fds[i])) }
        if n <= 0 {
            for d in received where d.fd >= 0 { _ = tcpgw_close(d.fd) }
            close()
            return
        }
        receivedOffset += UInt64(n)
        onRead?(UnsafeRawBufferPointer(rebasing: readBuffer[0..<n]), received)
    }

    // MARK: writing

    /// Queued lines are coalesced into segments of about this size, sent with one sendmsg.
    private static let coalesceLimit = 64 * 1024
    /// A sent segment's storage, kept for the next line: one call in, one answer out, no malloc.
    private var spare: ByteBuffer?
    /// Where recvmsg puts passed descriptors (kept, so a read allocates nothing).
    private var fdSlots = [Int32](repeating: -1, count: 8)

    /// Queues one encoded line (with its newline) and, optionally, a descriptor to pass with it.
    /// The transport closes `passing` once it has been sent (or dropped).
    func write(_ bytes: ByteBuffer, passing: Int32? = nil) {
        guard !isClosed else {
            if let passing { _ = tcpgw_close(passing) }
            return
        }
        if passing == nil, let last = coalescingSegment() {
            // Coalesce small lines into one send; a descriptor stays on its segment's first byte.
            // Appended in place: a copy of the segment would make the append copy its storage.
            var copy = bytes
            _ = segments.modify(last) { $0.bytes.writeBuffer(&copy) }
        } else {
            segments.append(Segment(bytes: bytes, fd: passing))
        }
        queuedBytes += bytes.readableBytes
        onQueued?(bytes.readableBytes)
        queued()
    }

    /// Queues one line that `body` writes (with its newline) straight into the send queue.
    func writeLine(_ body: (inout ByteBuffer) -> Void) {
        guard !isClosed else { return }
        let index: CircularBuffer<Segment>.Index
        if let last = coalescingSegment() {
            index = last
        } else {
            let storage = spare.take() ?? ByteBufferAllocator().buffer(capacity: 4096)
            segments.append(Segment(bytes: storage, fd: nil))
            index = segments.index(before: segments.endIndex)
        }
        let added = segments.modify(index) { segment in
            let before = segment.bytes.readableBytes
            body(&segment.bytes)
            return segment.bytes.readableBytes - before
        }
        queuedBytes += added
        onQueued?(added)
        queued()
    }

    /// The last queued segment, when another line may be appended to it.
    private func coalescingSegment() -> CircularBuffer<Segment>.Index? {
        guard !segments.isEmpty else { return nil }
        let last = segments.index(before: segments.endIndex)
        return segments.modify(last) { $0.bytes.readableBytes < ClientTransport.coalesceLimit } ? last : nil
    }

    private func queued() {
        // One send per loop iteration: answers and events written while a batch of requests
        // or a read loop is handled leave together.
        if !waitingForWritable && !flushScheduled {
            flushScheduled = true
            reactor.defer(self)
        }
        updateCongestion()
    }

    func runDeferred() {
        flushScheduled = false
        if !waitingForWritable { flush() }
    }

    private func flush() {
        while var segment = segments.first {
            let sent = segment.bytes.withUnsafeReadableBytes { raw in
                tcpgw_send_with_fd(fd, raw.baseAddress, raw.count, segment.fd ?? -1, 1)
            }
            if sent == -Int(EAGAIN) || sent == -Int(EINTR) {
                waitingForWritable = true
                updateInterest()
                updateCongestion()
                return
            }
            if sent < 0 {
                close()
                return
            }
            if let passed = segment.fd {
                _ = tcpgw_close(passed)
                segment.fd = nil
            }
            queuedBytes -= sent
            onQueued?(-sent)
            segment.bytes.moveReaderIndex(forwardBy: sent)
            if segment.bytes.readableBytes == 0 {
                segments.removeFirst()
                if segment.bytes.capacity <= 2 * ClientTransport.coalesceLimit {
                    segment.bytes.clear()
                    spare = segment.bytes
                }
            } else {
                segments[segments.startIndex] = segment
            }
        }
        updateCongestion()
        if handingOver != nil { finishHandOver() }
    }

    // MARK: handing the socket over

    /// Stops being a JSON-RPC transport (`tcp.attach`, contract §11): nothing more is read, and
    /// once everything queued is written the socket leaves, open and unwatched, through
    /// `then`; it gets nil when the client goes away first.
    func handOver(_ then: @escaping (consuming OwnedFD?) -> Void) {
        guard !isClosed else {
            then(nil)
            return
        }
        reading = false
        onRead = nil
        handingOver = then
        updateInterest()
        if !waitingForWritable { flush() }
    }

    private func finishHandOver() {
        guard segments.isEmpty, !isClosed, let then = handingOver else { return }
        handingOver = nil
        isClosed = true
        watch.cancel(reactor: reactor)
        onClose = nil
        onCongestion = nil
        onQueued = nil
        then(socket.take())
    }

    private func updateCongestion() {
        if !congested && queuedBytes > highWatermark {
            congested = true
            onCongestion?(true)
        } else if congested && queuedBytes <= lowWatermark {
            congested = false
            onCongestion?(false)
        }
    }

    // MARK: closing

    func close() {
        guard !isClosed else { return }
        isClosed = true
        watch.cancel(reactor: reactor)
        for segment in segments { if let passed = segment.fd { _ = tcpgw_close(passed) } }
        segments.removeAll()
        onQueued?(-queuedBytes)
        queuedBytes = 0
        socket = nil  // closes it
        let callback = onClose
        onClose = nil
        onRead = nil
        if let then = handingOver {
            handingOver = nil
            then(nil)
        }
        callback?()
    }
}
