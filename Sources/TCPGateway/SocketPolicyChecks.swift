import CNetShim
import JSONRPC

/// The policy's word on sockets beyond a plain create (contract §8): every extra port of
/// `tcp.mports`, a listener re-created by `tcp.setIPv6Only`, and a socket adopted by
/// `tcp.createByFd`. Each listening address is checked as dual-stack where it is.
extension Policy {
    /// `tcp.mports`: each extra port as the extra listeners will be created.
    func check(mports count: Int, of server: ServerHandle) throws {
        guard count > 0 else { return }
        for offset in 1...count {
            var address = server.local
            address.port = server.local.port + offset
            guard address.port <= 65535 else { return }  // setExtraPorts refuses the count
            try check(listen: address, ipv6Only: server.options.ipv6Only)
        }
    }

    /// `tcp.setIPv6Only` on a server: every port it listens on, with the new option.
    func check(relisten server: ServerHandle, ipv6Only: Bool) throws {
        let ports = [server.local.port] + (0..<server.extraPorts).map { server.local.port + 1 + $0 }
        for port in ports {
            var address = server.local
            address.port = port
            try check(listen: address, ipv6Only: ipv6Only)
        }
    }

    /// `tcp.createByFd`: a listening socket by its local address (dual-stack as its
    /// IPV6_V6ONLY says), a connected one by its peer. A socket with neither is left to the
    /// adopting code, which refuses it.
    func check(adopting fd: Int32, listening: Bool) throws {
        if listening {
            guard let local = SockAddr.local(of: fd) else { return }
            try check(listen: local, alsoIPv4: DualStack.coversIPv4(fd: fd, local: local))
        } else {
            guard let remote = SockAddr.remote(of: fd) else { return }
            try check(connect: remote)
        }
    }
}
