import Glibc
import NIOCore
import XCTest

@testable import TCPGateway

/// The client transport's writing on a real Unix socket pair: a send that had to wait for room
/// stops watching for writability once everything is out (a level-triggered EPOLLOUT left
/// registered would wake the loop over and over while the socket stays writable).
final class ClientTransportTests: XCTestCase {
    /// Drains the peer end on the loop and counts the bytes.
    private final class Drain: ReactorSource {
        let fd: Int32
        var count = 0
        var onDrained: (() -> Void)?

        init(fd: Int32) { self.fd = fd }

        func ready(_ events: IOEvents) {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                count += n
            }
            onDrained?()
        }
    }

    func testAFinishedSendStopsWatchingForWritability() throws {
        let reactor = try Reactor()
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        for fd in fds { XCTAssertEqual(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0) }
        let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { readBuffer.deallocate() }
        let transport = ClientTransport(socket: OwnedFD(adopting: fds[0]), reactor: reactor, readBuffer: readBuffer,
                                        highWatermark: 64 << 20)
        let total = 4 << 20  // far more than a socket pair holds: the send must wait for room
        let drain = Drain(fd: fds[1])
        var waitedForRoom = false
        var stillWatching: Bool?
        reactor.schedule(in: 0) {
            do {
                try transport.start()
                _ = try reactor.register(fds[1], .read, drain)
            } catch {
                XCTFail("registering: \(error)")
                reactor.stop()
                return
            }
            transport.write(ByteBuffer(repeating: 0x61, count: total))
        }
        reactor.schedule(in: 1) { waitedForRoom = transport.watchesWritable }
        drain.onDrained = {
            guard drain.count == total, stillWatching == nil else { return }
            // Let the loop see the socket writable (and the transport react) once more.
            reactor.schedule(in: 20) {
                stillWatching = transport.watchesWritable
                reactor.stop()
            }
        }
        reactor.schedule(in: 5000) { reactor.stop() }  // bound: a stuck send fails below
        reactor.run()
        XCTAssertTrue(waitedForRoom, "the send never had to wait for room: the test proves nothing")
        XCTAssertEqual(drain.count, total)
        XCTAssertEqual(transport.queuedBytes, 0)
        XCTAssertEqual(stillWatching, false)
        transport.close()
        Glibc.close(fds[1])
    }
}
