import CNetShim
import Foundation

/// One connection of the bridge to the gateway: where it reads the gateway's lines and where it
/// writes its own (one socket for a Unix path; a transport such as ssh may use two pipes).
public struct BridgeLink {
    public let readFD: Int32
    public let writeFD: Int32

    public init(readFD: Int32, writeFD: Int32) {
        self.readFD = readFD
        self.writeFD = writeFD
    }

    public func shutdownWriting() {
        if readFD == writeFD { _ = tcpgw_shutdown(writeFD, 1) } else { _ = tcpgw_close(writeFD) }
    }

    public func close() {
        _ = tcpgw_close(readFD)
        if writeFD != readFD { _ = tcpgw_close(writeFD) }
    }
}

/// How the bridge reaches the gateway, once at start and again after a dropped connection.
public protocol BridgeTransport {
    /// Where it connects, for messages.
    var address: String { get }
    /// A new connection, or the errno (positive) of the failure.
    func connect() -> Result<BridgeLink, SystemCallFailure>
}

public struct SystemCallFailure: Error {
    public let errno: Int32

    public init(errno: Int32) {
        self.errno = errno
    }

    public var message: String { String(cString: strerror(errno)) }
}

/// The gateway's Unix socket on this machine.
public struct UnixSocketTransport: BridgeTransport {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public var address: String { path }

    public func connect() -> Result<BridgeLink, SystemCallFailure> {
        let fd = tcpgw_unix_connect(path)
        guard fd >= 0 else { return .failure(SystemCallFailure(errno: -fd)) }
        return .success(BridgeLink(readFD: fd, writeFD: fd))
    }
}
