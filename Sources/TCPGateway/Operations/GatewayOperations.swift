import Foundation
import JSONRPC

/// tcp.constants, tcp.list, gateway.info, rpc.discover.
enum GatewayOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPConstantsParams.self) { _, _ in constants }
        table.add(TCPListParams.self, list)
        table.add(GatewayInfoParams.self, info)
        table.add(RPCDiscoverParams.self) { call, _ in call.session.gateway.catalog.document }
    }

    /// The seed's constants; IN6ADDR_LINKLOCAL_ALLROUTERS is ff02::2 (the seed's ff01::2 is the
    /// node-local group).
    static let constants: JSONValue = {
        var object: JSONObject = [
            "AF_INET": 2, "AF_INET6": 10,
            "INADDR_NONE": "255.255.255.255", "INADDR_LOOPBACK": "127.0.0.1", "INADDR_ANY": "0.0.0.0",
            "INADDR_BROADCAST": "255.255.255.255", "IN6ADDR_ANY": "::", "IN6ADDR_LOOPBACK": "::1",
            "IN6ADDR_NODELOCAL_ALLNODES": "ff01::1", "IN6ADDR_LINKLOCAL_ALLNODES": "ff02::1",
            "IN6ADDR_LINKLOCAL_ALLROUTERS": "ff02::2",
        ]
        for state in TCPState.allCases { object["TCP_\(state.name)"] = .int(Int64(state.rawValue)) }
        return .object(object)
    }()

    static func list(_ call: Call, _ p: TCPListParams) throws -> JSONValue? {
        listEntries(call.session)
    }

    /// A session's handles as tcp.list shows them (session.resume answers them too).
    static func listEntries(_ session: Session) -> JSONValue {
        let entries = session.handles.all.sorted(by: { $0.key < $1.key }).map { id, handle -> JSONValue in
            switch handle {
            case .server(let server):
                return [
                    "handle": .int(id), "kind": "server", "state": (server.isClosed ? TCPState.closed : .listen).json,
                    "local": server.local.json, "remote": .null, "flowing": .bool(server.asyncAccepting),
                    "bytesIn": 0, "bytesOut": 0, "faults": .array(server.faultTemplates.map { .string($0.name) }),
                ]
            case .connection(let connection):
                var entry: JSONObject = [
                    "handle": .int(id), "kind": "connection", "state": connection.state.json,
                    "local": connection.local?.json ?? .null, "remote": connection.remote?.json ?? .null,
                    "flowing": .bool(connection.flowing), "bytesIn": .int(connection.bytesIn),
                    "bytesOut": .int(connection.bytesOut),
                    "faults": .array((connection.faults?.names ?? []).map { .string($0) }),
                ]
                // Relayed (contract §11): where its bytes go instead of to the client.
                if let relay = connection.relay {
                    if let peer = relay.peer(of: connection) { entry["pipedTo"] = .int(peer.id) } else { entry["attached"] = true }
                    if let mode = relay.mode(readingFrom: connection) { entry["relayMode"] = mode == .splice ? "splice" : "copy" }
                }
                return .object(entry)
            }
        }
        return .array(entries)
    }

    static func info(_ call: Call, _ p: GatewayInfoParams) throws -> JSONValue? {
        let gateway = call.session.gateway
        let config = gateway.config
        let policy = call.session.policy  // this client's: its profile's limits
        let uptime = (Date().timeIntervalSince(gateway.startTime) * 1000).rounded() / 1000
        return [
            "name": "tcpgw", "version": .string(Gateway.version), "pid": .int(Int64(getpid())),
            "uptime": .double(uptime), "socket": .string(config.socketPath),
            "limits": [
                "maxMessageBytes": .int(Int64(config.maxMessageBytes)),
                "maxHandlesPerConnection": .int(Int64(policy.maxHandlesPerConnection)),
                "maxConnections": .int(Int64(config.maxConnections)),
                "maxConnectionsPerUid": .int(Int64(
                    ConnectionAdmission.perUidLimit(policy: policy, maxConnections: config.maxConnections))),
                "maxRecvLength": .int(Int64(config.maxRecvLength)),
                "outboundHighWatermark": .int(Int64(config.outboundHighWatermark)),
                "maxBufferBytes": .int(Int64(config.maxBufferBytes)),
                "replayBytes": .int(Int64(config.replayBytes)),
            ],
            "connections": .int(Int64(gateway.sessionCount)), "handles": .int(Int64(gateway.handleCount)),
            "policy": gateway.loadedPolicy.json,
        ]
    }
}
