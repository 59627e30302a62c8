import CNetShim
import Foundation

/// A listening socket handed over by a service manager (systemd's socket activation,
/// contract §9), found in descriptor 3.
public struct InheritedListener: Sendable {
    public let fd: Int32
    /// Where clients reach it, from getsockname: a path, or "@name" (abstract namespace).
    public let path: String
}

/// Reads the socket-activation protocol: `LISTEN_PID` names the process the descriptors are
/// for (a child that inherited the variables must not take them), `LISTEN_FDS` how many
/// start at descriptor 3. The gateway serves exactly one.
public enum SocketActivation {
    public static let firstDescriptor: Int32 = 3
    static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    /// The inherited listener, or nil when the environment hands this process none. A handed
    /// descriptor that is not one listening Unix stream socket is an error with a message.
    /// The variables are unset either way once they were meant for us, so nothing the gateway
    /// might start later takes the socket for itself.
    public static func take(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        pid: Int32 = getpid(), descriptor: Int32 = firstDescriptor
    ) throws(GatewayStartError) -> InheritedListener? {
        guard let listenPID = environment["LISTEN_PID"], Int32(listenPID) == pid else { return nil }
        defer { for name in variables { unsetenv(name) } }
        guard let countText = environment["LISTEN_FDS"] else { return nil }
        guard let count = Int(countText), count >= 0 else {
            throw GatewayStartError(description: "LISTEN_FDS=\(countText) is not a number of descriptors")
        }
        if count == 0 { return nil }
        guard count == 1 else {
            throw GatewayStartError(
                description: "socket activation passed \(count) descriptors (LISTEN_FDS); the gateway serves exactly one Unix socket")
        }
        return try adopt(descriptor)
    }

    /// Checks that `fd` is a listening Unix stream socket and makes it fit the reactor:
    /// non-blocking, closed on exec.
    static func adopt(_ fd: Int32) throws(GatewayStartError) -> InheritedListener {
        let what = "descriptor \(fd) from socket activation"
        var family: Int32 = 0
        var type: Int32 = 0
        var listening: Int32 = 0
        let kind = tcpgw_socket_kind(fd, &family, &type, &listening)
        if kind == -ENOTSOCK { throw GatewayStartError(description: "\(what) is not a socket") }
        if kind == -EBADF { throw GatewayStartError(description: "\(what) is not open") }
        if kind < 0 {
            throw GatewayStartError(description: "cannot inspect \(what): \(Errno.message(-kind)) (\(Errno.name(-kind)))")
        }
        guard family == tcpgw_const_af_unix() else {
            throw GatewayStartError(description: "\(what) is not a Unix socket (address family \(family)); the gateway serves a Unix stream socket")
        }
        guard type == tcpgw_const_sock_stream() else {
            throw GatewayStartError(description: "\(what) is a Unix socket but not a stream socket (type \(type))")
        }
        guard listening != 0 else {
            throw GatewayStartError(description: "\(what) is a Unix stream socket that is not listening")
        }
        var name = [CChar](repeating: 0, count: 128)
        let length = tcpgw_unix_sockname(fd, &name, name.count)
        guard length >= 0 else {
            throw GatewayStartError(description: "cannot read the address of \(what): \(Errno.message(-length))")
        }
        let path = String(decoding: name.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for (step, rc) in [("O_NONBLOCK", tcpgw_set_nonblocking(fd, 1)), ("FD_CLOEXEC", tcpgw_set_cloexec(fd))] where rc < 0 {
            throw GatewayStartError(description: "cannot set \(step) on \(what): \(Errno.message(-rc))")
        }
        return InheritedListener(fd: fd, path: path.isEmpty ? "(unnamed socket)" : path)
    }
}
