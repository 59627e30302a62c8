import CNetShim
import Foundation

/// One connection of the bridge to the gateway: where it reads the gateway's lines and where it
/// writes its own (one socket for a Unix path; ssh uses two pipes and a child process).
///
/// A class: the link owns its descriptors and its ssh child, and `close` ends them exactly once.
public final class BridgeLink {
    public let readFD: Int32
    public let writeFD: Int32
    /// The ssh child carrying the link (nil: a socket). Closing the link reaps it.
    private let child: (pid: pid_t, address: SSHGatewayAddress)?
    private var writeOpen = true
    private var isClosed = false

    public init(readFD: Int32, writeFD: Int32) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.child = nil
    }

    init(readFD: Int32, writeFD: Int32, sshChild pid: pid_t, address: SSHGatewayAddress) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.child = (pid, address)
    }

    public var childPID: pid_t? { child?.pid }

    public func shutdownWriting() {
        guard writeOpen, !isClosed else { return }
        writeOpen = false
        if readFD == writeFD { _ = tcpgw_shutdown(writeFD, 1) } else { _ = tcpgw_close(writeFD) }
    }

    /// Ends the link: its descriptors are closed and an ssh child reaped. The child gets
    /// `linger` ms to exit by itself (its pipes are closed, so a healthy one does), then it is
    /// killed: no zombie outlives a link. Returns how ssh ended when it ended by itself (nil for
    /// a socket, or when it had to be killed).
    @discardableResult
    public func close(linger: Int = 0, receivedAny: Bool = true) -> GatewayLinkEnd? {
        guard !isClosed else { return nil }
        isClosed = true
        _ = tcpgw_close(readFD)
        if writeOpen && writeFD != readFD { _ = tcpgw_close(writeFD) }
        writeOpen = false
        guard let child else { return nil }
        var status: Int32 = 0
        let deadline = tcpgw_monotonic_ns() / 1_000_000 + UInt64(max(linger, 0))
        while true {
            let rc = waitpid(child.pid, &status, WNOHANG)
            if rc == child.pid { return GatewayLinkEnd(child.address, waitStatus: status, receivedAny: receivedAny) }
            if rc < 0 && errno != EINTR { return nil }  // not our child any more
            if tcpgw_monotonic_ns() / 1_000_000 >= deadline { break }
            usleep(1000)
        }
        kill(child.pid, SIGKILL)
        while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
        return nil
    }

    deinit { close() }
}

/// How the bridge reaches the gateway, once at start and again after a dropped connection.
public protocol BridgeTransport {
    /// Where it connects, for messages.
    var address: String { get }
    /// A new connection, or why there is none.
    func connect() -> Result<BridgeLink, BridgeConnectError>
}

public struct BridgeConnectError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// The gateway's Unix socket on this machine.
public struct UnixSocketTransport: BridgeTransport {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public var address: String { path }

    public func connect() -> Result<BridgeLink, BridgeConnectError> {
        let fd = tcpgw_unix_connect(path)
        guard fd >= 0 else { return .failure(BridgeConnectError("cannot connect to \(path): \(Errno.message(-fd))")) }
        return .success(BridgeLink(readFD: fd, writeFD: fd))
    }
}

/// A remote gateway through `ssh ... tcpgw bridge [--socket PATH]`: every connect runs ssh
/// again (the remote side is a plain bridge; the session lives in the remote gateway).
public struct SSHTransport: BridgeTransport {
    public let remote: SSHGatewayAddress
    private let argv: [String]

    /// The command line is checked here, once: a bad $TCPGW_SSH is an error at start.
    public init(_ remote: SSHGatewayAddress, environment: [String: String] = ProcessInfo.processInfo.environment) throws(GatewayLinkError) {
        self.remote = remote
        do { argv = try SSHCommand.argv(for: remote, environment: environment) } catch {
            throw GatewayLinkError("\(remote): \(error)")
        }
    }

    public var address: String { remote.description }

    public func connect() -> Result<BridgeLink, BridgeConnectError> {
        do {
            let link = try GatewayLink.spawn(argv, remote)
            guard case .ssh(let pid, _) = link.carrier else { return .failure(BridgeConnectError("\(remote): not an ssh link")) }
            return .success(BridgeLink(readFD: link.readFD, writeFD: link.writeFD, sshChild: pid, address: remote))
        } catch {
            return .failure(BridgeConnectError(error.description))
        }
    }
}
