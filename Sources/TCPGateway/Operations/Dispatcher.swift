import CNetShim
import JSONRPC

/// Routes a request to its operation. The table must name exactly the schema's methods: a
/// method in one and not the other stops the gateway at start, so the two cannot drift.
final class Dispatcher {
    /// Answers at once with a value, or returns nil and answers later through the call.
    typealias Operation = (Call) throws -> JSONValue?

    /// A request method with what runs it: found once per call, by the method's name.
    struct Route {
        let method: MethodCatalog.Method
        let operation: Operation
    }

    private var routes: [String: Route] = [:]
    unowned let gateway: Gateway

    /// Every operation, by method name: the groups register themselves.
    static func operations() -> [String: Operation] {
        var table: [String: Operation] = [:]
        ServerOperations.register(into: &table)
        ClientOperations.register(into: &table)
        DataOperations.register(into: &table)
        OptionOperations.register(into: &table)
        DescriptorOperations.register(into: &table)
        GatewayOperations.register(into: &table)
        LookupOperations.register(into: &table)
        FaultOperations.register(into: &table)
        RelayOperations.register(into: &table)
        SessionOperations.register(into: &table)
        return table
    }

    init(gateway: Gateway) throws {
        self.gateway = gateway
        let table = Dispatcher.operations()
        let schemaMethods = Set(gateway.catalog.methods.values.filter { !$0.isEvent }.map(\.name))
        let implemented = Set(table.keys)
        guard schemaMethods == implemented else {
            throw RPCError.internalError(
                "method table and schema differ: only in schema \(schemaMethods.subtracting(implemented).sorted()), "
                    + "only implemented \(implemented.subtracting(schemaMethods).sorted())")
        }
        for (name, operation) in table {
            if let method = gateway.catalog.methods[name] { routes[name] = Route(method: method, operation: operation) }
        }
    }

    /// The route of a request method; nil for an unknown name or an event.
    func route(_ name: String) -> Route? { routes[name] }

    /// Runs `call` by its route (from `route`; nil answers "method not found").
    func dispatch(_ call: Call, _ route: Route?) {
        defer {
            // Descriptors that no operation took are closed: never leaked.
            _ = call.passedDescriptors.takeAll()  // dropped: closed
        }
        guard let route else {
            call.fail(RPCError.methodNotFound(call.request.method))
            return
        }
        let method = route.method
        do {
            call.params = try gateway.catalog.bind(method, call.request.params)
            if let result = try route.operation(call) { call.succeed(result) }
        } catch {
            let answer = error.asRPCError
            if answer.code == -32603 {
                gateway.logger.error("\(method.name) failed unexpectedly: \(error)")
            }
            call.fail(answer)
        }
    }
}
