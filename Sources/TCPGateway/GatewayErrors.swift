import CNetShim
import JSONRPC

/// The gateway's own error codes (-32000...-32099). The schema's components.errors lists each once.
public enum GatewayErrorCode: Int, CaseIterable {
    case unknownHandle = -32000
    case handleState = -32001
    case timedOut = -32002
    case policyDenied = -32003
    case limitReached = -32004
    case system = -32005
    case descriptor = -32006
    case unknownSession = -32007
    case streamToken = -32008
}

extension RPCError {
    static func gateway(_ code: GatewayErrorCode, _ message: String, data: JSONValue? = nil) -> RPCError {
        RPCError(code: code.rawValue, message: message, data: data)
    }
    static func unknownHandle(_ handle: Int64) -> RPCError {
        .gateway(.unknownHandle, "unknown handle \(handle): it does not exist, is closed, or belongs to another connection")
    }
    /// A fault (contract §10) reset the connection: the handle is gone, and says why.
    static func endedByFault(_ handle: Int64, fault: String, errno: Int32) -> RPCError {
        .gateway(
            .unknownHandle, "handle \(handle) is gone: the fault '\(fault)' reset the connection",
            data: ["fault": .string(fault), "errno": .string(Errno.name(errno)), "errnoNumber": .int(Int64(errno))])
    }
    static func handleState(_ message: String) -> RPCError { .gateway(.handleState, message) }
    static func timedOut(_ what: String) -> RPCError {
        .gateway(.timedOut, "\(what) timed out")
    }
    static func policy(_ message: String) -> RPCError { .gateway(.policyDenied, "denied by policy: \(message)") }
    static func limit(_ message: String) -> RPCError { .gateway(.limitReached, "limit reached: \(message)") }
    static func descriptor(_ message: String) -> RPCError { .gateway(.descriptor, message) }
    static func unknownSession(_ message: String) -> RPCError { .gateway(.unknownSession, message) }
}

/// An operating-system failure, reported as -32005 with the errno's name, number and the syscall.
struct SystemError: Error, CustomStringConvertible {
    let errno: Int32
    let syscall: String

    var name: String { Errno.name(errno) }
    var message: String { Errno.message(errno) }
    var description: String { "\(syscall): \(message) (\(name))" }

    var rpcError: RPCError {
        .gateway(
            .system, "\(syscall) failed: \(message)",
            data: ["errno": .string(name), "errnoNumber": .int(Int64(errno)), "syscall": .string(syscall)])
    }

    /// `{"errno", "errnoNumber", "message"}` as events and tcp.list carry it.
    var eventJSON: JSONValue { Errno.json(errno) }

    /// Throws for a negative C-shim return value.
    @discardableResult
    static func check(_ rc: Int32, _ syscall: String) throws -> Int32 {
        if rc < 0 { throw SystemError(errno: -rc, syscall: syscall) }
        return rc
    }
}

enum Errno {
    static func name(_ code: Int32) -> String {
        guard let cName = tcpgw_errno_name(code) else { return "E\(code)" }
        return String(cString: cName)
    }
    static func message(_ code: Int32) -> String {
        guard let text = tcpgw_errno_message(code) else { return "error \(code)" }
        return String(cString: text)
    }
    static func json(_ code: Int32) -> JSONValue {
        ["errno": .string(name(code)), "errnoNumber": .int(Int64(code)), "message": .string(message(code))]
    }
}

extension Error {
    /// Any error as the RPC error a client sees.
    var asRPCError: RPCError {
        if let rpc = self as? RPCError { return rpc }
        if let sys = self as? SystemError { return sys.rpcError }
        return .internalError("\(self)")
    }
}
