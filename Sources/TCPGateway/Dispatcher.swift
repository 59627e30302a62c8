import CNetShim
import JSONRPC

/// Routes a request to its operation. The table must name exactly the schema's methods: a
/// method in one and not the other stops the gateway at start, so the two cannot drift.
final class Dispatcher {
    /// Answers at once with a value, or returns nil and answers later through the call.
    typealias Operation = (Call) throws -> JSONValue?

    private var table: [String: Operation] = [:]
    unowned let gateway: Gateway

    init(gateway: Gateway) throws {
        self.gateway = gateway
        ServerOperations.register(into: &table)
        ClientOperations.register(into: &table)
        DataOperations.register(into: &table)
        OptionOperations.register(into: &table)
        DescriptorOperations.register(into: &table)
        GatewayOperations.register(into: &table)
        LookupOperations.register(into: &table)
        let schemaMethods = Set(gateway.catalog.methods.values.filter { !$0.isEvent }.map(\.name))
        let implemented = Set(table.keys)
        guard schemaMethods == implemented else {
            throw RPCError.internalError(
                "method table and schema differ: only in schema \(schemaMethods.subtracting(implemented).sorted()), "
                    + "only implemented \(implemented.subtracting(schemaMethods).sorted())")
        }
    }

    func dispatch(_ call: Call) {
        defer {
            // Descriptors that no operation took are closed: never leaked.
            for fd in call.passedDescriptors where fd >= 0 { _ = tcpgw_close(fd) }
            call.passedDescriptors = []
        }
        guard let method = gateway.catalog.methods[call.request.method], !method.isEvent,
            let operation = table[method.name]
        else {
            call.fail(RPCError.methodNotFound(call.request.method))
            return
        }
        do {
            call.params = try gateway.catalog.bind(method, call.request.params)
            if let result = try operation(call) { call.succeed(result) }
        } catch {
            let answer = error.asRPCError
            if answer.code == -32603 {
                gateway.logger.error("\(method.name) failed unexpectedly: \(error)")
            }
            call.fail(answer)
        }
    }
}
