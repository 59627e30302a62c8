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
final class ClientTransport {
    struct ReceivedDescriptor {
        let offset: UInt64
        var fd: Int32
    }

    private struct Segment {
        var bytes: ByteBuffer
        var fd: Int32?  // attached to the segment's first byte, then closed by us once sent
    }

    let fd: Int32
    private let monitor: FDMonitor
    private var segments: CircularBuffer<Segment> = []
    private(set) var queuedBytes = 0
    private var waitingForWritable = false
    private var flushScheduled = false
    private var readArmed = false
    private(set) var isClosed = false
    private var receivedOffset: UInt64 = 0
    private var readBuffer = [UInt8](repeating: 0, count: 256 * 1024)

    /// Called with each chunk read and the descriptors that came with it.
    var onRead: ((UnsafeRawBufferPointer, [ReceivedDescriptor]) -> Void)?
    /// Called once when the client hangs up or the socket fails.
    var onClose: (() -> Void)?
    /// Called when the queue crosses the watermarks (true = congested).
    var onCongestion: ((Bool) -> Void)?

    let highWatermark: Int
    let lowWatermark: Int
    private(set) var congested = false

    private let loop: EventLoop

    init(fd: Int32, loop: EventLoop, monitor: FDMonitor, highWatermark: Int) {
        self.fd = fd
        self.loop = loop
        self.monitor = monitor
        self.highWatermark = highWatermark
        self.lowWatermark = highWatermark / 4
    }

    // MARK: reading

    /// Arms the next read; the session calls this again after handling what was read, unless it
    /// wants the client to wait (backpressure).
    func resumeReading() {
        guard !isClosed, !readArmed else { return }
        readArmed = true
        monitor.arm(fd, for: .read) { [weak self] in
            guard let self else { return }
            self.readArmed = false
            self.readAvailable()
        }
    }

    private func readAvailable() {
        guard !isClosed else { return }
        var fds = [Int32](repeating: -1, count: 8)
        var nfds: Int32 = 0
        let n = readBuffer.withUnsafeMutableBytes { buffer in
            tcpgw_recv_with_fds(fd, buffer.baseAddress, buffer.count, &fds, 8, &nfds, 1)
        }
        if n == -Int(EAGAIN) || n == -Int(EINTR) {
            resumeReading()
            return
        }
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
        readBuffer.withUnsafeBytes { buffer in
            onRead?(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), received)
        }
    }

    // MARK: writing

    /// Queues one encoded line (with its newline) and, optionally, a descriptor to pass with it.
    /// The transport closes `passing` once it has been sent (or dropped).
    func write(_ bytes: ByteBuffer, passing: Int32? = nil) {
        guard !isClosed else {
            if let passing { _ = tcpgw_close(passing) }
            return
        }
        queuedBytes += bytes.readableBytes
        if passing == nil, var last = segments.last, last.bytes.readableBytes < 64 * 1024 {
            // Coalesce small lines into one send; a descriptor stays on its segment's first byte.
            var copy = bytes
            last.bytes.writeBuffer(&copy)
            segments[segments.index(before: segments.endIndex)] = last
        } else {
            segments.append(Segment(bytes: bytes, fd: passing))
        }
        // One send per event-loop tick: answers and events written while a batch of requests
        // or a read loop is handled leave together.
        if !waitingForWritable && !flushScheduled {
            flushScheduled = true
            loop.assumeIsolated().execute { [weak self] in
                guard let self else { return }
                self.flushScheduled = false
                if !self.waitingForWritable { self.flush() }
            }
        }
        updateCongestion()
    }

    private func flush() {
        while var segment = segments.first {
            let sent = segment.bytes.withUnsafeReadableBytes { raw in
                tcpgw_send_with_fd(fd, raw.baseAddress, raw.count, segment.fd ?? -1, 1)
            }
            if sent == -Int(EAGAIN) || sent == -Int(EINTR) {
                waitingForWritable = true
                monitor.arm(fd, for: .write) { [weak self] in
                    guard let self else { return }
                    self.waitingForWritable = false
                    self.flush()
                }
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
            segment.bytes.moveReaderIndex(forwardBy: sent)
            if segment.bytes.readableBytes == 0 {
                segments.removeFirst()
            } else {
                segments[segments.startIndex] = segment
            }
        }
        updateCongestion()
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
        monitor.remove(fd)
        for segment in segments { if let passed = segment.fd { _ = tcpgw_close(passed) } }
        segments.removeAll()
        queuedBytes = 0
        _ = tcpgw_close(fd)
        let callback = onClose
        onClose = nil
        onRead = nil
        callback?()
    }
}
