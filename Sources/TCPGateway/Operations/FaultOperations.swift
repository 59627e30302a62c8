import JSONRPC

/// fault.add, fault.remove, fault.list (contract §10): on a connection they act on its chains;
/// on a server, on the templates its future connections get.
enum FaultOperations {
    static func register(into table: inout [String: Dispatcher.Operation]) {
        table.add(FaultAddParams.self, add)
        table.add(FaultRemoveParams.self, remove)
        table.add(FaultListParams.self, list)
    }

    static func add(_ call: Call, _ p: FaultAddParams) throws -> JSONValue? {
        let spec = try FaultSpec(kind: p.type, stream: p.stream, toxicity: p.toxicity, attributes: p.attributes, name: p.name)
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server):
            guard !server.isClosed else { throw RPCError.handleState("handle \(p.handle) is closed") }
            try server.faultTemplates.ensureUnused(spec.name)
            server.faultTemplates.append(spec)
        case .connection(let connection):
            try connection.install([spec])
        }
        return ["name": .string(spec.name)]
    }

    static func remove(_ call: Call, _ p: FaultRemoveParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server):
            guard let index = server.faultTemplates.firstIndex(where: { $0.name == p.name }) else {
                throw RPCError.invalidParams("'name': handle \(p.handle) has no fault named '\(p.name)'")
            }
            server.faultTemplates.remove(at: index)
        case .connection(let connection):
            guard let faults = connection.faults else {
                throw RPCError.invalidParams("'name': handle \(p.handle) has no fault named '\(p.name)'")
            }
            try faults.remove(p.name)
        }
        return true
    }

    static func list(_ call: Call, _ p: FaultListParams) throws -> JSONValue? {
        switch try call.session.handles.lookup(p.handle) {
        case .server(let server): return .array(server.faultTemplates.map { $0.json(active: nil) })
        case .connection(let connection): return connection.faults?.json ?? .array([])
        }
    }
}

extension ConnectionHandle {
    /// Puts `specs` on the connection (checked first, so none is added when one is refused).
    func install(_ specs: [FaultSpec]) throws {
        guard !specs.isEmpty else { return }
        guard !isClosed else { throw RPCError.handleState("handle \(id) is closed") }
        let existing = faults?.installed.map(\.spec) ?? []
        for spec in specs { try existing.ensureUnused(spec.name) }
        let faults = faultsCreatingIfNeeded()
        for spec in specs { try faults.add(spec) }
    }

    /// An accepted connection's own instances of its server's fault templates.
    func inheritFaults(from server: ServerHandle) {
        try? install(server.faultTemplates)
    }
}
