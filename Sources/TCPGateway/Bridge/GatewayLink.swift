import CNetShim
import Foundation

/// One connection to a gateway as `tcpgw bridge` uses it: the gateway's lines arrive on
/// `readFD`, ours leave on `writeFD`. Over a Unix socket they are two descriptors of the
/// socket; over ssh, the pipes to the ssh child's stdout and stdin (the remote `tcpgw bridge`
/// does the rest). Each belongs to one side: `closeWrite` closes `writeFD` (once, by the
/// writing thread), `finish` or `abandon` closes `readFD`.
///
/// Connecting again is `GatewayLink.connect` again: nothing here outlives one link.
public struct GatewayLink: Sendable {
    public enum Carrier: Sendable, Equatable {
        case socket(path: String)
        case ssh(pid: pid_t, address: SSHGatewayAddress)
    }

    public let readFD: Int32
    public let writeFD: Int32
    public let carrier: Carrier

    /// The socket (or ssh) that `address` names, connected. The environment gives TCPGW_SSH and
    /// TCPGW_REMOTE_BIN; the ssh child inherits the process's own environment.
    public static func connect(
        _ address: GatewayAddress, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(GatewayLinkError) -> GatewayLink {
        switch address {
        case .unixSocket(let path):
            let fd = tcpgw_unix_connect(path)
            guard fd >= 0 else { throw GatewayLinkError("cannot connect to \(path): \(Errno.message(-fd))") }
            // A descriptor per direction, so each side closes its own.
            let writeFD = fcntl(fd, F_DUPFD_CLOEXEC, 0)
            guard writeFD >= 0 else {
                let failure = errno
                Glibc.close(fd)
                throw GatewayLinkError("cannot connect to \(path): \(Errno.message(failure))")
            }
            return GatewayLink(readFD: fd, writeFD: writeFD, carrier: .socket(path: path))
        case .ssh(let remote):
            let argv: [String]
            do { argv = try SSHCommand.argv(for: remote, environment: environment) } catch {
                throw GatewayLinkError("\(remote): \(error)")
            }
            return try spawn(argv, remote)
        }
    }

    /// Nothing more goes to the gateway: it ends the session once it has answered what it has.
    /// Over ssh the child's stdin closes; the remote bridge passes that on as a shutdown.
    /// Closes `writeFD`: call it once.
    public func closeWrite() {
        if case .socket = carrier { _ = tcpgw_shutdown(writeFD, 1) }
        Glibc.close(writeFD)
    }

    /// After `readFD` has ended: how the link ended, with the ssh child reaped. `receivedAny`
    /// tells a link that never worked (status 2, like an unreachable socket) from one that
    /// broke (status 1). Closes `readFD`.
    public func finish(receivedAny: Bool) -> GatewayLinkEnd {
        switch carrier {
        case .socket:
            Glibc.close(readFD)
            return GatewayLinkEnd(status: 0, message: nil)
        case .ssh(let pid, let remote):
            Glibc.close(readFD)
            return GatewayLinkEnd(remote, waitStatus: GatewayLink.reap(pid), receivedAny: receivedAny)
        }
    }

    /// Ends the link at once (a reconnect gives up on it): the socket is shut down both ways,
    /// the ssh child killed and reaped, so a thread still writing gets an error and calls
    /// `closeWrite`. Closes `readFD`.
    public func abandon() {
        switch carrier {
        case .socket:
            _ = tcpgw_shutdown(readFD, 2)
        case .ssh(let pid, _):
            kill(pid, SIGKILL)
            _ = GatewayLink.reap(pid)
        }
        Glibc.close(readFD)
    }

    static func spawn(_ argv: [String], _ remote: SSHGatewayAddress) throws(GatewayLinkError) -> GatewayLink {
        var toChild: [Int32] = [-1, -1]
        var fromChild: [Int32] = [-1, -1]
        // Close-on-exec: the child gets only the dup2'd copies as its stdin and stdout.
        let first = tcpgw_pipe_cloexec(&toChild)
        guard first == 0 else { throw GatewayLinkError("pipe: \(Errno.message(-first))") }
        let second = tcpgw_pipe_cloexec(&fromChild)
        guard second == 0 else {
            Glibc.close(toChild[0])
            Glibc.close(toChild[1])
            throw GatewayLinkError("pipe: \(Errno.message(-second))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The bridge ignores SIGPIPE; an ignored signal stays ignored across exec, so give ssh
        // the default back.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArgs.append(nil)
        defer { for arg in cArgs { free(arg) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, environ)
        Glibc.close(toChild[0])
        Glibc.close(fromChild[1])
        guard rc == 0 else {
            Glibc.close(toChild[1])
            Glibc.close(fromChild[0])
            throw GatewayLinkError("\(remote): cannot run '\(argv[0])': \(Errno.message(rc)) (set \(SSHCommand.programVariable) to the ssh program)")
        }
        return GatewayLink(readFD: fromChild[0], writeFD: toChild[1], carrier: .ssh(pid: pid, address: remote))
    }

    /// waitpid, bounded: ssh exits when its stdout has ended; one that lingers is stopped.
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        for attempt in 0..<600 {
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid { return status }
            if rc < 0 && errno != EINTR { return 0 }  // not our child any more: nothing to report
            if attempt == 500 { kill(pid, SIGTERM) }  // 5 s after its stdout ended
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }
}

/// How a link ended: the bridge's exit status and what to tell the user (nil: nothing wrong).
public struct GatewayLinkEnd: Equatable, Sendable {
    public let status: Int32
    public let message: String?

    public init(status: Int32, message: String?) {
        self.status = status
        self.message = message
    }

    /// The end of an ssh link from ssh's wait status.
    init(_ remote: SSHGatewayAddress, waitStatus: Int32, receivedAny: Bool) {
        let lost = receivedAny ? "; the session with the gateway is lost" : ""
        let failed: Int32 = receivedAny ? 1 : 2
        let exited = waitStatus & 0x7F == 0
        if exited {
            let code = (waitStatus >> 8) & 0xFF
            switch code {
            case 0:
                self.init(status: 0, message: nil)
            case 255:
                self.init(
                    status: failed,
                    message: receivedAny
                        ? "\(remote): the ssh connection broke (ssh status 255)\(lost)"
                        : "\(remote): ssh failed (status 255: the host is unreachable, its host key is not trusted, or authentication was refused; ssh's own message is above)")
            case 127:
                self.init(
                    status: failed,
                    message: "\(remote): the remote shell did not find tcpgw (status 127); install it there or set \(SSHCommand.remoteBinVariable) to its path")
            case 126:
                self.init(status: failed, message: "\(remote): the remote tcpgw could not be run (status 126)")
            default:
                self.init(status: failed, message: "\(remote): the remote tcpgw bridge exited with status \(code) (its message, if any, is above)\(lost)")
            }
        } else {
            let signal = waitStatus & 0x7F
            let name = strsignal(signal).map { String(cString: $0) } ?? "signal \(signal)"
            self.init(status: failed, message: "\(remote): ssh ended by signal \(signal) (\(name))\(lost)")
        }
    }
}

public struct GatewayLinkError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
