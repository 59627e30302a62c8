import Foundation
import CNetShim
import JSONRPC

/// Socket options and queries: tcp.bindToDevice, tcp.setKeepAlive, tcp.setNoDelay, tcp.setLinger,
/// tcp.setTTL, tcp.setReuseAddr, tcp.setIPv6Only, tcp.getState, buffer sizes, tcp.sockName,
/// tcp.peerName, tcp.error.
enum OptionOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table["tcp.bindToDevice"] = bindToDevice
        table["tcp.setKeepAlive"] = setKeepAlive
        table["tcp.setNoDelay"] = { call in
            try setInt(call, tcpgw_const_ipproto_tcp(), tcpgw_const_tcp_nodelay(), call.params.bool("enable")! ? 1 : 0)
        }
        table["tcp.setLinger"] = setLinger
        table["tcp.setTTL"] = { call in
            let ttl = Int32(call.params.int("timeToLive")!)
            try eachFD(call) { try SystemError.check(tcpgw_set_ttl($0, ttl), "setsockopt") }
            return true
        }
        table["tcp.setReuseAddr"] = { call in
            let on = call.params.bool("enable")!
            if case .server(let server) = try call.session.lookup(call.params.handle) { server.options.reuseAddr = on }
            return try setInt(call, tcpgw_const_sol_socket(), tcpgw_const_so_reuseaddr(), on ? 1 : 0)
        }
        table["tcp.setIPv6Only"] = setIPv6Only
        table["tcp.getState"] = getState
        table["tcp.getRecvBufferSize"] = { try getInt($0, tcpgw_const_sol_socket(), tcpgw_const_so_rcvbuf()) }
        table["tcp.getSendBufferSize"] = { try getInt($0, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf()) }
        table["tcp.setRecvBufferSize"] = { call in
            try setInt(call, tcpgw_const_sol_socket(), tcpgw_const_so_rcvbuf(), Int32(call.params.int("size")!))
        }
        table["tcp.setSendBufferSize"] = { call in
            try setInt(call, tcpgw_const_sol_socket(), tcpgw_const_so_sndbuf(), Int32(call.params.int("size")!))
        }
        table["tcp.sockName"] = sockName
        table["tcp.peerName"] = peerName
        table["tcp.error"] = socketError
    }

    /// The descriptors an option applies to: a connection's socket, or every listener of a server.
    static func fds(_ call: Call) throws -> [Int32] {
        switch try call.session.lookup(call.params.handle) {
        case .connection(let connection):
            guard connection.phase != .closed else {
                throw RPCError.handleState("handle \(connection.id) is closed")
            }
            return [try connection.openFD()]
        case .server(let server):
            var all: [Int32] = []
            try server.forEachFD { all.append($0) }
            return all
        }
    }

    static func eachFD(_ call: Call, _ body: (Int32) throws -> Void) throws {
        for fd in try fds(call) { try body(fd) }
    }

    static func setInt(_ call: Call, _ level: Int32, _ name: Int32, _ value: Int32) throws -> JSONValue {
        try eachFD(call) { try SystemError.check(tcpgw_setsockopt_int($0, level, name, value), "setsockopt") }
        return true
    }

    static func getInt(_ call: Call, _ level: Int32, _ name: Int32) throws -> JSONValue {
        var value: Int32 = 0
        try SystemError.check(tcpgw_getsockopt_int(try fds(call)[0], level, name, &value), "getsockopt")
        return .int(Int64(value))
    }

    static func bindToDevice(_ call: Call) throws -> JSONValue? {
        let name = call.params.string("ifname") ?? ""
        if !name.isEmpty && !call.session.gateway.policy.allowBindToDevice {
            throw RPCError.policy("binding to a device is not allowed")
        }
        try eachFD(call) { try SystemError.check(tcpgw_bind_to_device($0, name), "setsockopt") }
        if case .server(let server) = try call.session.lookup(call.params.handle) {
            server.options.device = name.isEmpty ? nil : name
        }
        return true
    }

    /// Milliseconds in, whole seconds (rounded up) to the kernel.
    static func seconds(_ ms: Int) -> Int32 { Int32(min((ms + 999) / 1000, 32767)) }

    static func setKeepAlive(_ call: Call) throws -> JSONValue? {
        let enable = call.params.bool("enable")!
        var idle: Int32 = 0, interval: Int32 = 0
        let count = Int32(call.params.int("count") ?? 3)
        if enable {
            guard let idleMS = call.params.int("idle") else {
                throw RPCError.invalidParams("'idle' is required when 'enable' is true")
            }
            idle = seconds(idleMS)
            interval = seconds(call.params.int("interval") ?? idleMS)
        }
        try eachFD(call) { try SystemError.check(tcpgw_set_keepalive($0, enable ? 1 : 0, idle, interval, count), "setsockopt") }
        return true
    }

    static func setLinger(_ call: Call) throws -> JSONValue? {
        let linger = call.params["linger"]!
        let on = linger["onoff"] == .bool(true)
        let time: Int32
        switch linger["time"] {
        case .int(let t)?: time = Int32(t)
        case .double(let t)?: time = Int32(t)
        default: time = 0
        }
        try eachFD(call) { try SystemError.check(tcpgw_set_linger($0, on ? 1 : 0, time), "setsockopt") }
        return true
    }

    static func setIPv6Only(_ call: Call) throws -> JSONValue? {
        let enable = call.params.bool("enable")!
        switch try call.session.lookup(call.params.handle) {
        case .server(let server):
            guard server.local.domain == SockAddr.inet6 else {
                throw RPCError.handleState("handle \(server.id) is an IPv4 socket; IPv6-only applies to IPv6 sockets")
            }
            try call.session.gateway.policy.check(relisten: server, ipv6Only: enable)
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

    static func getState(_ call: Call) throws -> JSONValue? {
        switch try call.session.lookup(call.params.handle) {
        case .server(let server): return (server.isClosed ? TCPState.closed : .listen).json
        case .connection(let connection): return connection.state.json
        }
    }

    static func sockName(_ call: Call) throws -> JSONValue? {
        switch try call.session.lookup(call.params.handle) {
        case .server(let server): return server.local.json
        case .connection(let connection):
            if connection.isOpen, let fresh = SockAddr.local(of: try connection.openFD()) { return fresh.json }
            guard let local = connection.local else { throw RPCError.handleState("handle \(connection.id) has no local address yet") }
            return local.json
        }
    }

    static func peerName(_ call: Call) throws -> JSONValue? {
        switch try call.session.lookup(call.params.handle) {
        case .server(let server):
            throw RPCError.handleState("handle \(server.id) is a server; it has no peer")
        case .connection(let connection):
            guard connection.phase != .connecting else {
                throw RPCError.handleState("handle \(connection.id) is still connecting")
            }
            // Ask the kernel, as getpeername does: a socket no longer connected is ENOTCONN.
            guard connection.isOpen, let remote = SockAddr.remote(of: try connection.openFD()) else {
                throw SystemError(errno: ENOTCONN, syscall: "getpeername")
            }
            return remote.json
        }
    }

    static func socketError(_ call: Call) throws -> JSONValue? {
        let fd = try fds(call)[0]
        let code = tcpgw_so_error(fd)
        if code < 0 { throw SystemError(errno: -code, syscall: "getsockopt") }
        if code == 0 { return ["errnoNumber": 0, "errno": .null] }
        return ["errnoNumber": .int(Int64(code)), "errno": .string(Errno.name(code))]
    }
}
