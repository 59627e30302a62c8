import CNetShim
import JSONRPC

/// The policy's word on sockets beyond a plain create (contract §8): every extra port of
/// `tcp.mports`, a listener re-created by `tcp.setIPv6Only`, and a socket adopted by
/// `tcp.createByFd`. Each listening address is checked as dual-stack where it is.
extension Policy {
    /// `tcp.mports`: each extra port as the extra listeners will be created, in order; the
    /// caller stops at the first refusal.
    func decisions(mports count: Int, of server: ServerHandle) -> [PolicyDecision] {
        guard count > 0 else { return [] }
        var decisions: [PolicyDecision] = []
        for offset in 1...count {
            var address = server.local
            address.port = server.local.port + offset
            guard address.port <= 65535 else { break }  // setExtraPorts refuses the count
            decisions.append(decide(listen: address, ipv6Only: server.options.ipv6Only))
        }
        return decisions
    }

    /// `tcp.setIPv6Only` on a server: every port it listens on, with the new option.
    func decisions(relisten server: ServerHandle, ipv6Only: Bool) -> [PolicyDecision] {
        let ports = [server.local.port] + (0..<server.extraPorts).map { server.local.port + 1 + $0 }
        return ports.map { port in
            var address = server.local
            address.port = port
            return decide(listen: address, ipv6Only: ipv6Only)
        }
    }

    /// `tcp.createByFd`: a listening socket by its local address (dual-stack as its
    /// IPV6_V6ONLY says), a connected one by its peer. A socket with neither (nil) is left to
    /// the adopting code, which refuses it.
    func decision(adopting fd: Int32, listening: Bool) -> PolicyDecision? {
        if listening {
            guard let local = SockAddr.local(of: fd) else { return nil }
            return decide(listen: local, alsoIPv4: DualStack.coversIPv4(fd: fd, local: local), action: .createByFd)
        }
        guard let remote = SockAddr.remote(of: fd) else { return nil }
        return decide(connect: remote, action: .createByFd)
    }

    func check(mports count: Int, of server: ServerHandle) throws {
        for decision in decisions(mports: count, of: server) { try decision.enforce() }
    }

    func check(relisten server: ServerHandle, ipv6Only: Bool) throws {
        for decision in decisions(relisten: server, ipv6Only: ipv6Only) { try decision.enforce() }
    }

    func check(adopting fd: Int32, listening: Bool) throws {
        try decision(adopting: fd, listening: listening)?.enforce()
    }
}
