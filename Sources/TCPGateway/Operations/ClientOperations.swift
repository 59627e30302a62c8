import Foundation
import CNetShim
import JSONRPC

/// tcp.createClient, sync and async, to an address or a host name.
enum ClientOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(TCPCreateClientParams.self, createClient)
    }

    static func createClient(_ call: Call, _ p: TCPCreateClientParams) throws -> JSONValue? {
        let session = call.session
        let destination = try Destination(params: p.sockaddr)
        let isAsync = p.async
        let faults = try FaultSpec.list(p.faults)  // refused before any socket is made
        switch destination {
        case .address(let address):
            let audit = CreationAudit(session)
            defer { audit.finish() }
            try audit.enforce(session.policy.decide(connect: address))
            try session.handles.ensureRoom()  // fail early when the limit is reached
            let socket = OwnedFD(adopting: try SystemError.check(tcpgw_tcp_socket(address.domain), "socket"))
            let connection = try session.handles.openConnection(socket, remote: address, flowing: isAsync, connecting: true)
            audit.handle = connection.id
            try connection.install(faults)
            connection.connect(to: address, timeoutMS: p.timeout, completion: outcome(call, connection, address, host: nil, isAsync: isAsync))
            return isAsync ? ["handle": .int(connection.id)] : nil
        case .name(let host, let domain, let port):
            // Refused before any query when the policy names no such host (no DNS side channel).
            let rules = session.policy.connectNames
            try rules.checkResolving(host, port: port, action: "connecting to")
            try session.handles.ensureRoom()
            // No socket yet: each resolved address gets its own, of its family.
            let connection = try session.handles.openConnection(nil, remote: nil, flowing: isAsync, connecting: true)
            try connection.install(faults)
            connection.beginConnecting(timeoutMS: p.timeout, completion: outcome(call, connection, nil, host: host, isAsync: isAsync))
            session.gateway.resolver.lookup(host, family: domain) { [weak session, weak connection] result in
                // The client may have gone, closed the handle, or timed out meanwhile: drop it.
                guard let session, !session.isClosed, let connection, connection.awaitsConnect else { return }
                switch result {
                case .failure(let error):
                    connection.endConnect(.rejected(error.rpcError(host: host), event: error.eventJSON(host: host)))
                case .success(let found) where found.isEmpty:
                    let error = ResolveError(code: -2)  // no address is no such name
                    connection.endConnect(.rejected(error.rpcError(host: host), event: error.eventJSON(host: host)))
                case .success(let found):
                    let addresses = found.map { SockAddr($0, port: port) }
                    NameConnector(connection: connection, host: host, addresses: addresses, rules: rules).tryNext()
                }
            }
            return isAsync ? ["handle": .int(connection.id)] : nil
        }
    }

    /// What a connect's outcome becomes: the sync answer, or the async form's tcp.onConnect.
    private static func outcome(_ call: Call, _ connection: ConnectionHandle, _ address: SockAddr?, host: String?, isAsync: Bool)
        -> (Result<Void, ConnectionHandle.ConnectFailure>) -> Void
    {
        let handleID = connection.id
        return { [weak session = call.session, weak connection] result in
            guard let session, !session.isClosed, let connection else { return }
            switch result {
            case .success:
                var answer: JSONObject = ["handle": .int(handleID), "remote": (connection.remote ?? address)?.json ?? .null]
                if let host { answer["host"] = .string(host) }
                if isAsync {
                    session.emit("tcp.onConnect", .object(answer))
                    connection.updateInterest()  // reading starts after the event that introduces it
                } else {
                    answer["local"] = connection.local?.json ?? .null
                    call.succeed(.object(answer))
                }
            case .failure(let failure):
                guard isAsync else {
                    switch failure {
                    case .system(let error): call.fail(error)
                    case .timedOut: call.fail(RPCError.timedOut("connect"))
                    case .closed: call.fail(RPCError.handleState("handle \(handleID) was closed while connecting"))
                    case .rejected(let error, _): call.fail(error)
                    }
                    return
                }
                // The async form reports through the event, as the seed's callback does; a
                // handle the client closed itself gets none.
                let error: JSONValue
                switch failure {
                case .system(let failure): error = failure.eventJSON
                case .timedOut: error = Errno.json(ETIMEDOUT)
                case .rejected(_, let event): error = event
                case .closed: return
                }
                var event: JSONObject = ["handle": .int(handleID), "error": error]
                if let host { event["host"] = .string(host) }
                session.emit("tcp.onConnect", .object(event))
            }
        }
    }
}

/// Tries a host name's addresses in the resolver's order until one connects (contract §7);
/// the handle's one timeout bounds them all. Addresses the policy refuses are skipped; when
/// every address failed the last OS error ends the connect, and when the policy refused
/// them all, -32003.
final class NameConnector {
    private weak var connection: ConnectionHandle?
    private let host: String
    private let addresses: [SockAddr]
    private let rules: NameRules
    private var next = 0
    private var lastError: SystemError?
    private var refusals: [String] = []

    init(connection: ConnectionHandle, host: String, addresses: [SockAddr], rules: NameRules) {
        self.connection = connection
        self.host = host
        self.addresses = addresses
        self.rules = rules
    }

    func tryNext() {
        guard let connection, connection.awaitsConnect else { return }
        while next < addresses.count {
            let address = addresses[next]
            next += 1
            if let refusal = rules.refusal(of: address, host: host, connecting: true) {
                refusals.append(refusal)
                continue
            }
            let raw = tcpgw_tcp_socket(address.domain)
            guard raw >= 0 else {
                lastError = SystemError(errno: -raw, syscall: "socket")
                continue
            }
            // The attempt's closure keeps this connector alive until the connect ends.
            connection.attempt(address, socket: OwnedFD(adopting: raw)) { [self] error in
                lastError = error
                tryNext()
            }
            return
        }
        if let lastError {
            connection.endConnect(.system(lastError))
        } else {
            let error = RPCError.policy("connecting to \(host): every address is refused: " + refusals.joined(separator: "; "))
            connection.endConnect(.rejected(error, event: PolicyEvent.json(error)))
        }
    }
}

/// A policy refusal as an event's `error` member (`code` tells it from an OS error).
enum PolicyEvent {
    static func json(_ error: RPCError) -> JSONValue {
        ["errno": "EACCES", "errnoNumber": .int(Int64(EACCES)), "message": .string(error.message),
         "code": .int(Int64(error.code))]
    }
}
