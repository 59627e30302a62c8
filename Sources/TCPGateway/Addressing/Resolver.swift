import CNetShim
import Foundation
import Glibc
import JSONRPC

/// A resolver failure: getaddrinfo's EAI_* code (glibc's negative numbers).
public struct ResolveError: Error, Sendable, Equatable {
    public let code: Int32
    public init(code: Int32) { self.code = code }

    /// glibc's netdb.h names; there is no strerrorname for EAI codes.
    static let names: [Int32: String] = [
        -1: "EAI_BADFLAGS", -2: "EAI_NONAME", -3: "EAI_AGAIN", -4: "EAI_FAIL", -5: "EAI_NODATA",
        -6: "EAI_FAMILY", -7: "EAI_SOCKTYPE", -8: "EAI_SERVICE", -9: "EAI_ADDRFAMILY", -10: "EAI_MEMORY",
        -11: "EAI_SYSTEM", -12: "EAI_OVERFLOW", -100: "EAI_INPROGRESS", -101: "EAI_CANCELED",
        -102: "EAI_NOTCANCELED", -103: "EAI_ALLDONE", -104: "EAI_INTR", -105: "EAI_IDN_ENCODE",
    ]

    var name: String { ResolveError.names[code] ?? "EAI_\(-code)" }
    var message: String {
        guard let text = gai_strerror(code) else { return "resolver error \(code)" }
        return String(cString: text)
    }

    /// -32005 as contract §7 gives it, naming the host.
    func rpcError(host: String) -> RPCError {
        .gateway(
            .system, "getaddrinfo failed for \(host): \(message)",
            data: ["errno": .string(name), "errnoNumber": .int(Int64(code)), "syscall": .string("getaddrinfo"),
                   "host": .string(host)])
    }

    /// The `error` of a tcp.onConnect: as an OS error's, plus the syscall and the host.
    func eventJSON(host: String) -> JSONValue {
        ["errno": .string(name), "errnoNumber": .int(Int64(code)), "message": .string(message),
         "syscall": "getaddrinfo", "host": .string(host)]
    }
}

/// A lookup: the host and the family hint (0 any, 2 IPv4, 10 IPv6) → numeric addresses
/// (port 0) in the resolver's order. Runs on a resolver thread and may block.
public typealias ResolveFunction = @Sendable (_ host: String, _ family: Int32) -> Result<[SockAddrValue], ResolveError>

/// A numeric address as a resolver hands it back (Sendable, public for injection in tests).
public struct SockAddrValue: Sendable, Equatable {
    public let domain: Int32
    public let addr: String
    public init(domain: Int32, addr: String) {
        self.domain = domain
        self.addr = addr
    }
}

/// Host names resolved off the event loop (contract §7): a few threads run the (blocking)
/// resolve function and hand each result back to the loop with `reactor.submit`, so a slow
/// lookup never stalls another client's calls.
final class Resolver: @unchecked Sendable {
    private let resolve: ResolveFunction
    private let reactor: Reactor
    private let lock = NSCondition()
    private var queue: [(String, Int32, @Sendable (Result<[SockAddrValue], ResolveError>) -> Void)] = []
    private var stopping = false
    private let threadCount: Int
    private var started = false

    /// The threads start with the first lookup: a gateway that resolves nothing has none.
    init(reactor: Reactor, threads count: Int = 3, resolve: @escaping ResolveFunction = Resolver.system) {
        self.reactor = reactor
        self.resolve = resolve
        self.threadCount = max(1, count)
    }

    /// Resolves `host` on a resolver thread; `completion` runs on the loop. Callers check
    /// there whether what asked still exists (a closed handle or a gone session drops it).
    func lookup(_ host: String, family: Int32, completion: @escaping (Result<[SockAddrValue], ResolveError>) -> Void) {
        // The completion holds loop-confined objects; it only ever runs on the loop.
        let box = UncheckedBox(completion)
        let reactor = self.reactor
        lock.lock()
        if !started && !stopping {
            started = true
            for index in 0..<threadCount {
                let thread = Thread { [self] in work() }
                thread.name = "tcpgw-resolver-\(index)"
                thread.start()
            }
        }
        queue.append((host, family, { result in reactor.submit { box.value(result) } }))
        lock.signal()
        lock.unlock()
    }

    /// Lets the threads finish; a lookup under way finishes and its result is dropped by the
    /// stopped loop.
    func stop() {
        lock.lock()
        stopping = true
        queue.removeAll()
        lock.broadcast()
        lock.unlock()
    }

    private func work() {
        while true {
            lock.lock()
            while queue.isEmpty && !stopping { lock.wait() }
            if stopping {
                lock.unlock()
                return
            }
            let (host, family, deliver) = queue.removeFirst()
            lock.unlock()
            deliver(resolve(host, family))
        }
    }

    /// getaddrinfo for TCP (SOCK_STREAM), `family` as the hint; duplicates dropped, order kept.
    static let system: ResolveFunction = { host, family in
        var hints = addrinfo()
        hints.ai_family = family == SockAddr.inet ? AF_INET : family == SockAddr.inet6 ? AF_INET6 : AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0 else { return .failure(ResolveError(code: rc)) }
        defer { freeaddrinfo(list) }
        var found: [SockAddrValue] = []
        var node = list
        while let entry = node {
            node = entry.pointee.ai_next
            guard let raw = entry.pointee.ai_addr else { continue }
            var text = [CChar](repeating: 0, count: 64)
            let ok: Bool
            let domain: Int32
            switch entry.pointee.ai_family {
            case AF_INET:
                domain = SockAddr.inet
                ok = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var address = sin.pointee.sin_addr
                    return inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil
                }
            case AF_INET6:
                domain = SockAddr.inet6
                ok = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var address = sin6.pointee.sin6_addr
                    return inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil
                }
            default:
                continue
            }
            guard ok else { continue }
            let value = SockAddrValue(
                domain: domain, addr: String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            if !found.contains(value) { found.append(value) }
        }
        return found.isEmpty ? .failure(ResolveError(code: -2)) : .success(found)
    }
}

/// Carries a loop-confined value through a Sendable closure to the loop.
private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
