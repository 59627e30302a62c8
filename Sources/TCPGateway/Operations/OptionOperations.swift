import Foundation
import CNetShim
import JSONRPC

/// Socket options and queries: tcp.bindToDevice, tcp.setKeepAlive, tcp.setNoDelay, tcp.setLinger,
/// tcp.setTTL, tcp.setReuseAddr, tcp.setIPv6Only, tcp.getState, buffer sizes, tcp.sockName,
/// tcp.peerName, tcp.error.
enum OptionOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPBindToDeviceParams.self, bindToDevice)
        table.add(TCPSetKeepAliveParams.self, setKeepAlive)
        table.add(TCPSetNoDelayParams.self) { call, p in
            try setInt(call, p, tcpgw_const_ipproto_tcp(), tcpgw_const_tcp_nodelay(), p.enable ? 1 : 0)
        }
        table.add(TCPSetLingerParams.self, setLinger)
        table.add(TCPSetTTLParams.self) { call, p in
            let ttl = Int32(p.timeToLive)
            try eachFD(call, p) { try SystemError.check(tcpgw_set_ttl($0, ttl), "setsockopt") }
            return true
        }
        table.add(TCPSetReuseAddrParams.self) { call, p in
            let on = p.enable
            if case .server(let server) = try call.session.handles.lookup(p.handle) { server.options.reuseAddr = on }
            return try setInt(call, p, tcpgw_const_sol_socket(), tcpgw_const_so_reuseaddr(), on ? 1 : 0)
        }
        table.add(TCPSetIPv6OnlyParams.self, setIPv6Only)
        table.add(TCPGetStateParams.self, getState)
        table.add(TCPGetRecvBufferSizeParams.self) { try getInt($0, $1, tcpgw_const_sol_socket(), tcpgw_const_so_rcvbuf()) }
        table.add(TCPGetSendBufferSizeParams.self) { try getInt($0, $1, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf()) }
        table.add(TCPSetRecvBufferSizeParams.self) { call, p in
            try setInt(call, p, tcpgw_const_sol_socket(), tcpgw_const_so_rcvbuf(), Int32(p.size))
        }
        table.add(TCPSetSendBufferSizeParams.self) { call, p in
            try setInt(call, p, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf(), Int32(p.size))
        }
        table.add(TCPSockNameParams.self, sockName)
        table.add(TCPPeerNameParams.self, peerName)
        table.add(TCPErrorParams.self, socketError)
    }

    /// The descriptors an option applies to: a connection's socket, or every listener of a server.
    static func fds(_ call: Call, _ p: some HandleParams) throws -> [Int32] {
        switch try call.session.handles.lookup(p.handle) {
        case .connection(let connection):
            return [try connection.openFD()]
        case .server(let server):
            var all: [Int32] = []
            try server.forEachFD { all.append($0) }
            return all
        }
    }

    static func eachFD(_ call: Call, _ p: some HandleParams, _ body: (Int32) throws -> Void) throws {
        for fd in try fds(call, p) { try body(fd) }
    }

    static func setInt(_ call: Call, _ p: some HandleParams, _ level: Int32, _ name: Int32, _ value: Int32) throws -> JSONValue {
        try eachFD(call, p) { try SystemError.check(tcpgw_setsockopt_int($0, level, name, value), "setsockopt") }
        return true
    }

    static func getInt(_ call: Call, _ p: some HandleParams, _ level: Int32, _ name: Int32) throws -> JSONValue {
        var value: Int32 = 0
        try SystemError.check(tcpgw_getsockopt_int(try fds(call, p)[0], level, name, &value), "getsockopt")
        return .int(Int64(value))
    }

    static func bindToDevice(_ call: Call, _ p: TCPBindToDeviceParams) throws -> JSONValue? {
        let name = p.ifname ?? ""
        if !name.isEmpty {  // unbinding needs no permission
            let local: SockAddr?
            switch try call.session.handles.lookup(p.handle) {
            case .server(let server): local = server.local
            case .connection(let connection): local = connection.local
            }
            try call.session.enforce(
                .flag(
                    call.session.policy.allowBindToDevice, key: "allowBindToDevice", action: .bindToDevice,
                    target: .init(local, device: name), refusal: "binding to a device is not allowed"),
                handle: p.handle)
        }
        try eachFD(call, p) { try SystemError.check(tcpgw_bind_to_device($0, name), "setsockopt") }
        if case .server(let server) = try call.session.handles.lookup(p.handle) {
            server.options.device = name.isEmpty ? nil : name
        }
        return true
    }

    /// Milliseconds in, whole seconds (rounded up) to the kernel.
    static func seconds(_ ms: Int) -> Int32 { Int32(min((ms + 999) / 1000, 32767)) }

    static func setKeepAlive(_ call: Call, _ p: TCPSetKeepAliveParams) throws -> JSONValue? {
        let enable = p.enable
        var idle: Int32 = 0, interval: Int32 = 0
        let count = Int32(p.count)
        if enable {
            guard let idleMS = p.idle else {
                throw RPCError.invalidParams("'idle' is required when 'enable' is true")
            }
            idle = seconds(idleMS)
            interval = seconds(p.interval ?? idleMS)
        }
        try eachFD(call, p) { try SystemError.check(tcpgw_set_keepalive($0, enable ? 1 : 0, idle, interval, count), "setsockopt") }
        return true
    }

    static func setLinger(_ call: Call, _ p: TCPSetLingerParams) throws -> JSONValue? {
        let on = p.linger.onoff
        let time = Int32(p.linger.time)
        try eachFD(call, p) { try SystemError.check(tcpgw_set_linger($0, on ? 1 : 0, time), "setsockopt") }
        return true
    }

    static func setIPv6Only(_ call: Call, _ p: TCPSetIPv6OnlyParams) throws -> JSONValue? {
        let enable = p.enable
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server):
            guard server.local.domain == SockAddr.inet6 else {
                throw RPCError.handleState("handle \(server.id) is an IPv4 socket; IPv6-only applies to IPv6 sockets")
            }
            for decision in call.session.policy.decisions(relisten: server, ipv6Only: enable) {
                try call.session.enforce(decision, handle: server.id)
            }
            try server.relisten(ipv6Only: enable)
            return true
        case .connection(let connection):
            guard connection.local?.domain ?? connection.remote?.domain == SockAddr.inet6 else {
                throw RPCError.handleState("handle \(connection.id) is an IPv4 socket; IPv6-only applies to IPv6 sockets")
            }
            try SystemError.check(
                tcpgw_setsockopt_int(try connection.openFD(), tcpgw_const_ipproto_ipv6(), tcpgw_const_ipv6_v6only(), enable ? 1 : 0),
                "setsockopt")
            return true
        }
    }

    static func getState(_ call: Call, _ p: TCPGetStateParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server): return (server.isClosed ? TCPState.closed : .listen).json
        case .connection(let connection): return connection.state.json
        }
    }

    static func sockName(_ call: Call, _ p: TCPSockNameParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server): return server.local.json
        case .connection(let connection):
            if connection.isOpen, let fresh = SockAddr.local(of: try connection.openFD()) { return fresh.json }
            guard let local = connection.local else { throw RPCError.handleState("handle \(connection.id) has no local address yet") }
            return local.json
        }
    }

    static func peerName(_ call: Call, _ p: TCPPeerNameParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server):
            throw RPCError.handleState("handle \(server.id) is a server; it has no peer")
        case .connection(let connection):
            guard !connection.isConnecting else {
                throw RPCError.handleState("handle \(connection.id) is still connecting")
            }
            // Ask the kernel, as getpeername does: a socket no longer connected is ENOTCONN.
            guard connection.isOpen, let remote = SockAddr.remote(of: try connection.openFD()) else {
                throw SystemError(errno: ENOTCONN, syscall: "getpeername")
            }
            return remote.json
        }
    }

    static func socketError(_ call: Call, _ p: TCPErrorParams) throws -> JSONValue? {
        let fd = try fds(call, p)[0]
        let code = tcpgw_so_error(fd)
        if code < 0 { throw SystemError(errno: -code, syscall: "getsockopt") }
        if code == 0 { return ["errnoNumber": 0, "errno": .null] }
        return ["errnoNumber": .int(Int64(code)), "errno": .string(Errno.name(code))]
    }
}
