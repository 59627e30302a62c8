import Foundation
import Glibc
import JSONRPC
import Logging
import XCTest

@testable import TCPGateway

/// Host name syntax, name rules, and resolution through an in-process gateway whose resolver
/// is injected: lookups that block, fail, or answer addresses no DNS would give.
final class HostNameSyntaxTests: XCTestCase {
    func testValidNames() {
        let label63 = String(repeating: "a", count: 63)
        let longest = [label63, label63, label63, String(repeating: "b", count: 61)].joined(separator: ".")
        XCTAssertEqual(longest.utf8.count, 253)
        for name in ["localhost", "LOCALHOST", "localhost.", "a", "a-b.c", "x1.123a", "1a", "0x", label63, longest,
                     longest + ".", "abc", "beef"] {
            XCTAssertTrue(HostName.isValid(name), name)
        }
    }

    func testInvalidNames() {
        let label63 = String(repeating: "a", count: 63)
        let tooLong = [label63, label63, label63, String(repeating: "b", count: 62)].joined(separator: ".")
        for name in ["", ".", "..", "127.1", "300.1.1.1", "1.2.3.4", "12", "a.1", "-a", "a-", "a.-b", "a.b-", "a..b",
                     ".a", "a..", String(repeating: "a", count: 64), tooLong, tooLong + ".", "a_b", "a b", "a\u{0}b",
                     "é.com", "a:b", "[::1]", "*.a", "a/b", "a\n"] {
            XCTAssertFalse(HostName.isValid(name), name.debugDescription)
        }
    }

    func testCanonical() {
        XCTAssertEqual(HostName.canonical("LocalHost."), "localhost")
        XCTAssertEqual(HostName.canonical("A-B.Example"), "a-b.example")
    }
}

final class NameRuleTests: XCTestCase {
    func testPatterns() throws {
        let exact = try XCTUnwrap(HostPattern("LocalHost."))
        XCTAssertTrue(exact.matches(host: "localhost"))
        XCTAssertTrue(exact.matches(host: "LOCALHOST."))
        XCTAssertFalse(exact.matches(host: "localhost.localdomain"))
        XCTAssertFalse(exact.matches(host: "xlocalhost"))
        let wild = try XCTUnwrap(HostPattern("*.Example.com"))
        XCTAssertTrue(wild.matches(host: "a.example.com"))
        XCTAssertTrue(wild.matches(host: "a.b.EXAMPLE.com."))
        XCTAssertFalse(wild.matches(host: "example.com"), "not the parent itself")
        XCTAssertFalse(wild.matches(host: "badexample.com"))
        XCTAssertFalse(wild.matches(host: "example.com.evil"))
        for bad in ["*", "*.", "**.a", "*a.b", "a.*.b", "-a", "127.1", ""] {
            XCTAssertNil(HostPattern(bad), bad)
        }
    }

    func testPolicyRulesWithNames() throws {
        let policy = try Policy(json: ["connect": ["localhost:6379", "*.example.com:443,8000-8001", "10.0.0.0/8"]])
        let rules = try XCTUnwrap(policy.connect?.allow).map(\.addressRule)
        XCTAssertTrue(rules[0].matches(host: "localhost", port: 6379))
        XCTAssertFalse(rules[0].matches(host: "localhost", port: 6380))
        XCTAssertTrue(rules[1].matches(host: "a.example.com", port: 8001))
        XCTAssertFalse(rules[1].matches(host: "example.com", port: 443))
        XCTAssertFalse(rules[2].matches(host: "localhost", port: 1), "an address rule names no host")
        // A name rule never matches an address, even as "any address".
        let any = JudgedAddress(SockAddr(domain: 2, addr: "127.0.0.1", port: 6379), connecting: true)
        XCTAssertFalse(rules[0].matches(any))
        for bad in ["-bad", "a..b", "*.", "localhost:", "localhost:70000", "localhost/8", "loc al"] {
            let text = GatewayTestSupport.policyError { _ = try Policy(json: ["connect": .array([.string(bad)])]) }
            XCTAssertNotNil(text, bad)
        }
    }

    func testGateBeforeResolving() throws {
        let named = NameRules(list: "connect", allow: [try AddressRule("localhost"), try AddressRule("*.test:80")], deny: [])
        XCTAssertNoThrow(try named.checkResolving("LOCALHOST.", port: 1, action: "connecting to"))
        XCTAssertNoThrow(try named.checkResolving("a.test", port: 1, action: "connecting to"), "ports are judged per address")
        let refused = GatewayTestSupport.rpcError { try named.checkResolving("other", port: nil, action: "looking up") }
        XCTAssertEqual(refused?.code, -32003)
        XCTAssertTrue(refused?.message.contains("no allow rule") ?? false, refused?.message ?? "")
        XCTAssertTrue(refused?.message.contains("'connect'") ?? false)
        // An address rule does not name a host: the name is not looked up at all.
        let addressOnly = NameRules(list: "connect", allow: [try AddressRule("127.0.0.0/8")], deny: [])
        XCTAssertEqual(GatewayTestSupport.rpcError { try addressOnly.checkResolving("localhost", port: 80, action: "x") }?.code, -32003)
        // No allow list: every name resolves, unless a deny rule names it.
        let open = NameRules(list: "connect", allow: nil, deny: [try AddressRule("*.evil.test")])
        XCTAssertNoThrow(try open.checkResolving("localhost", port: 80, action: "x"))
        let denied = GatewayTestSupport.rpcError { try open.checkResolving("a.evil.test", port: 80, action: "x") }
        XCTAssertEqual(denied?.code, -32003)
        XCTAssertTrue(denied?.message.contains("*.evil.test") ?? false)
        // A deny rule for some ports only does not stop a lookup (no port there).
        let portDeny = NameRules(list: "connect", allow: nil, deny: [try AddressRule("a.test:25")])
        XCTAssertNoThrow(try portDeny.checkResolving("a.test", port: nil, action: "x"))
        XCTAssertNotNil(GatewayTestSupport.rpcError { try portDeny.checkResolving("a.test", port: 25, action: "x") })
    }

    func testEachResolvedAddress() throws {
        let rules = NameRules(
            list: "connect", allow: [try AddressRule("a.test:80"), try AddressRule("127.0.0.2")],
            deny: [try AddressRule("127.0.0.3"), try AddressRule("b.test")])
        let v4 = { (addr: String, port: Int) in SockAddr(domain: 2, addr: addr, port: port) }
        XCTAssertNil(rules.refusal(of: v4("127.0.0.9", 80), host: "a.test", connecting: true), "the name allows it")
        XCTAssertNil(rules.refusal(of: v4("127.0.0.2", 81), host: "a.test", connecting: true), "the address allows it")
        XCTAssertNotNil(rules.refusal(of: v4("127.0.0.9", 81), host: "a.test", connecting: true))
        XCTAssertNotNil(rules.refusal(of: v4("127.0.0.3", 80), host: "a.test", connecting: true), "a deny rule wins")
        XCTAssertNotNil(rules.refusal(of: v4("127.0.0.2", 80), host: "b.test", connecting: true), "deny by name wins")
        XCTAssertNotNil(rules.refusal(of: SockAddr(domain: 10, addr: "::ffff:127.0.0.3", port: 80), host: "a.test", connecting: true),
                        "a mapped address is judged as IPv4")
        let open = NameRules(list: "connect", allow: nil, deny: [])
        XCTAssertNil(open.refusal(of: v4("10.1.1.1", 1), host: "x", connecting: true))
    }

    func testResolveErrorNames() {
        XCTAssertEqual(ResolveError(code: EAI_NONAME).name, "EAI_NONAME")
        XCTAssertEqual(EAI_NONAME, -2)
        XCTAssertEqual(ResolveError(code: EAI_AGAIN).name, "EAI_AGAIN")
        XCTAssertEqual(ResolveError(code: EAI_FAIL).name, "EAI_FAIL")
        XCTAssertEqual(ResolveError(code: EAI_FAMILY).name, "EAI_FAMILY")
        XCTAssertEqual(ResolveError(code: EAI_MEMORY).name, "EAI_MEMORY")
        XCTAssertEqual(ResolveError(code: EAI_SYSTEM).name, "EAI_SYSTEM")
        XCTAssertEqual(ResolveError(code: EAI_SERVICE).name, "EAI_SERVICE")
        let error = ResolveError(code: -2).rpcError(host: "x.test")
        XCTAssertEqual(error.code, -32005)
        XCTAssertEqual(error.data, ["errno": "EAI_NONAME", "errnoNumber": -2, "syscall": "getaddrinfo", "host": "x.test"])
    }

    func testSystemResolverLocalhost() {
        // localhost is in /etc/hosts; nothing else is looked up here.
        guard case .success(let found) = Resolver.system("localhost", SockAddr.inet) else {
            return XCTFail("localhost did not resolve")
        }
        XCTAssertTrue(found.contains(SockAddrValue(domain: 2, addr: "127.0.0.1")), "\(found)")
        XCTAssertTrue(found.allSatisfy { $0.domain == 2 })
        XCTAssertEqual(found.count, Set(found.map(\.addr)).count, "no duplicates")
    }
}

/// A gateway in this process with an injected resolver, and blocking clients for it.
final class ResolverGatewayTests: XCTestCase {
    /// What the injected resolver did and how it answers; blocking names wait on `gate`.
    final class FakeDNS: @unchecked Sendable {
        let lock = NSLock()
        var calls: [(String, Int32)] = []
        var answers: [String: Result<[SockAddrValue], ResolveError>] = [:]
        let gate = DispatchSemaphore(value: 0)
        var blocking: Set<String> = []

        func resolve(_ host: String, _ family: Int32) -> Result<[SockAddrValue], ResolveError> {
            lock.lock()
            calls.append((host, family))
            let blocks = blocking.contains(host)
            let answer = answers[host] ?? .failure(ResolveError(code: -2))
            lock.unlock()
            if blocks { _ = gate.wait(timeout: .now() + 10) }
            return answer
        }

        var callCount: Int {
            lock.lock()
            defer { lock.unlock() }
            return calls.count
        }
    }

    var gateway: Gateway?
    var path = ""
    let dns = FakeDNS()

    func start(policy: Policy = .allowAll) throws {
        path = "/tmp/tgw-names-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        var config = GatewayConfig(socketPath: path)
        config.policy = policy
        let dns = self.dns
        config.resolve = { dns.resolve($0, $1) }
        let gateway = try Gateway(config: config, logger: Logger(label: "test"))
        try gateway.start()
        self.gateway = gateway
    }

    override func tearDown() {
        dns.lock.lock()
        dns.blocking = []
        dns.lock.unlock()
        for _ in 0..<8 { dns.gate.signal() }
        gateway?.shutdown()
        gateway = nil
        unlink(path)
    }

    /// A blocking newline-JSON client on the gateway's socket.
    final class LineClient {
        let fd: Int32
        var buffer: [UInt8] = []
        var nextID = 1

        init(path: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, byte) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = byte }
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard rc == 0 else { throw SystemError(errno: errno, syscall: "connect") }
        }

        deinit { close(fd) }

        @discardableResult
        func send(_ method: String, _ params: JSONValue) -> Int {
            let id = nextID
            nextID += 1
            let line = JanssonCodec.serialize(["jsonrpc": "2.0", "id": .int(Int64(id)), "method": .string(method), "params": params]) + [0x0A]
            _ = line.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
            return id
        }

        /// The next line within `seconds`, or nil.
        func nextMessage(within seconds: Double) -> JSONValue? {
            let deadline = Date().addingTimeInterval(seconds)
            for _ in 0..<10_000 {
                if let newline = buffer.firstIndex(of: 0x0A) {
                    let line = Array(buffer[..<newline])
                    buffer.removeSubrange(...newline)
                    return try? JanssonCodec.parse(line)
                }
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { return nil }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, Int32(min(left, 1) * 1000) + 1) > 0 else { continue }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return nil }
                buffer.append(contentsOf: chunk[0..<n])
            }
            return nil
        }

        /// The answer to `id` (events before it are returned in `events`).
        func answer(_ id: Int, within seconds: Double = 5, events: inout [JSONValue]) -> JSONValue? {
            let deadline = Date().addingTimeInterval(seconds)
            for _ in 0..<1000 {
                guard let message = nextMessage(within: max(0.01, deadline.timeIntervalSinceNow)) else { return nil }
                if message["id"] == .int(Int64(id)) { return message }
                events.append(message)
            }
            return nil
        }

        func call(_ method: String, _ params: JSONValue, within seconds: Double = 5) -> JSONValue? {
            var events: [JSONValue] = []
            return answer(send(method, params), within: seconds, events: &events)
        }
    }

    /// A loopback listener (never accepted from: the kernel completes the handshake).
    func listener(_ addr: String = "127.0.0.1") throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, addr, &sin.sin_addr)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(fd, 16), 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, Int(UInt16(bigEndian: sin.sin_port)))
    }

    func v4(_ addrs: String...) -> Result<[SockAddrValue], ResolveError> {
        .success(addrs.map { SockAddrValue(domain: 2, addr: $0) })
    }

    func testSlowLookupDoesNotStallOtherClients() throws {
        dns.blocking = ["slow.test"]
        dns.answers["slow.test"] = v4("127.0.0.1")
        try start()
        let a = try LineClient(path: path)
        let b = try LineClient(path: path)
        let slow = a.send("dns.lookup", ["host": "slow.test"])
        // While slow.test blocks a resolver thread, both clients are served, lookups too.
        dns.answers["fast.test"] = v4("127.0.0.5")
        let info = b.call("gateway.info", .array([]))
        XCTAssertEqual(info?["result"]?["name"], "tcpgw")
        XCTAssertEqual(b.call("dns.lookup", ["host": "fast.test"])?["result"], [["domain": 2, "addr": "127.0.0.5"]])
        var events: [JSONValue] = []
        XCTAssertEqual(a.call("tcp.list", .array([]))?["result"], [])
        XCTAssertNil(a.answer(slow, within: 0.2, events: &events), "still blocked")
        dns.gate.signal()
        XCTAssertEqual(a.answer(slow, within: 5, events: &events)?["result"], [["domain": 2, "addr": "127.0.0.1"]])
    }

    func testConnectFallsBackToTheNextAddress() throws {
        let (lfd, port) = try listener("127.0.0.1")
        defer { close(lfd) }
        // 127.0.0.2 has no listener on the port: refused, then 127.0.0.1 connects.
        dns.answers["two.test"] = v4("127.0.0.2", "127.0.0.1")
        try start()
        let c = try LineClient(path: path)
        let answer = c.call("tcp.createClient", ["sockaddr": ["addr": "two.test", "port": .int(Int64(port))], "timeout": 3000])
        XCTAssertEqual(answer?["result"]?["remote"], ["domain": 2, "addr": "127.0.0.1", "port": .int(Int64(port))])
        XCTAssertEqual(answer?["result"]?["host"], "two.test")
        // Async: the same through tcp.onConnect.
        let id = c.send("tcp.createClient", ["sockaddr": ["addr": "two.test", "port": .int(Int64(port))], "async": true])
        var events: [JSONValue] = []
        let handle = c.answer(id, events: &events)?["result"]?["handle"]
        XCTAssertNotNil(handle)
        let event = c.nextMessage(within: 5)
        XCTAssertEqual(event?["method"], "tcp.onConnect")
        XCTAssertEqual(event?["params"]?["handle"], handle)
        XCTAssertEqual(event?["params"]?["remote"]?["addr"], "127.0.0.1")
        XCTAssertEqual(event?["params"]?["host"], "two.test")
    }

    func testEveryAddressFailingIsTheLastOSError() throws {
        let (lfd, port) = try listener("127.0.0.1")
        close(lfd)  // now nothing listens there
        dns.answers["none.test"] = v4("127.0.0.2", "127.0.0.1")
        try start()
        let c = try LineClient(path: path)
        let error = c.call("tcp.createClient", ["sockaddr": ["addr": "none.test", "port": .int(Int64(port))], "timeout": 3000])?["error"]
        XCTAssertEqual(error?["code"], -32005)
        XCTAssertEqual(error?["data"]?["errno"], "ECONNREFUSED")
        XCTAssertEqual(c.call("tcp.list", .array([]))?["result"], [], "the handle is gone")
    }

    func testUnresolvableNameSyncAndAsync() throws {
        dns.answers["nx.test"] = .failure(ResolveError(code: -2))
        try start()
        let c = try LineClient(path: path)
        let error = c.call("tcp.createClient", ["sockaddr": ["addr": "nx.test", "port": 80], "timeout": 3000])?["error"]
        XCTAssertEqual(error?["code"], -32005)
        XCTAssertEqual(error?["data"], ["errno": "EAI_NONAME", "errnoNumber": -2, "syscall": "getaddrinfo", "host": "nx.test"])
        let lookup = c.call("dns.lookup", ["host": "nx.test"])?["error"]
        XCTAssertEqual(lookup?["data"]?["errno"], "EAI_NONAME")
        let server = c.call("tcp.createServer", ["sockaddr": ["addr": "nx.test", "port": 0]])?["error"]
        XCTAssertEqual(server?["data"]?["syscall"], "getaddrinfo")
        let id = c.send("tcp.createClient", ["sockaddr": ["addr": "nx.test", "port": 80], "async": true])
        var events: [JSONValue] = []
        XCTAssertNotNil(c.answer(id, events: &events)?["result"]?["handle"])
        let event = c.nextMessage(within: 5)?["params"]
        XCTAssertEqual(event?["error"]?["errno"], "EAI_NONAME")
        XCTAssertEqual(event?["error"]?["errnoNumber"], -2)
        XCTAssertEqual(event?["host"], "nx.test")
        XCTAssertEqual(c.call("tcp.list", .array([]))?["result"], [])
    }

    func testDomainIsPassedAsTheHint() throws {
        dns.answers["h.test"] = .success([SockAddrValue(domain: 10, addr: "::1")])
        try start()
        let c = try LineClient(path: path)
        XCTAssertEqual(c.call("dns.lookup", ["host": "h.test", "domain": 10])?["result"], [["domain": 10, "addr": "::1"]])
        _ = c.call("dns.lookup", ["host": "h.test", "domain": 2])
        _ = c.call("dns.lookup", ["host": "h.test"])
        dns.lock.lock()
        let families = dns.calls.map(\.1)
        dns.lock.unlock()
        XCTAssertEqual(families, [10, 2, 0])
    }

    func testDuplicatesAreDropped() throws {
        dns.answers["dup.test"] = v4("127.0.0.1", "127.0.0.2", "127.0.0.1")
        try start()
        let c = try LineClient(path: path)
        XCTAssertEqual(
            c.call("dns.lookup", ["host": "dup.test"])?["result"],
            [["domain": 2, "addr": "127.0.0.1"], ["domain": 2, "addr": "127.0.0.2"]])
    }

    func testPolicyRefusesUnnamedHostsWithoutALookup() throws {
        dns.answers["LocalHost."] = v4("127.0.0.1")  // the name goes to the resolver as given
        try start(policy: try Policy(json: ["connect": ["localhost"]]))
        let c = try LineClient(path: path)
        let refused = c.call("dns.lookup", ["host": "not-in-hosts.invalid"])?["error"]
        XCTAssertEqual(refused?["code"], -32003)
        let connect = c.call("tcp.createClient", ["sockaddr": ["addr": "other.test", "port": 80], "async": true])?["error"]
        XCTAssertEqual(connect?["code"], -32003)
        XCTAssertEqual(dns.callCount, 0, "no query was made")
        XCTAssertEqual(c.call("dns.lookup", ["host": "LocalHost."])?["result"], [["domain": 2, "addr": "127.0.0.1"]])
        XCTAssertEqual(dns.callCount, 1)
    }

    func testDeniedAddressesAreSkipped() throws {
        let (lfd, port) = try listener("127.0.0.1")
        defer { close(lfd) }
        dns.answers["mixed.test"] = v4("127.0.0.2", "127.0.0.1")
        dns.answers["blocked.test"] = v4("127.0.0.2")
        try start(policy: try Policy(json: ["connect": ["mixed.test:1", "blocked.test:1", "127.0.0.1"]]))
        let c = try LineClient(path: path)
        let ok = c.call("tcp.createClient", ["sockaddr": ["addr": "mixed.test", "port": .int(Int64(port))], "timeout": 3000])
        XCTAssertEqual(ok?["result"]?["remote"]?["addr"], "127.0.0.1", "127.0.0.2 is skipped")
        let all = c.call("tcp.createClient", ["sockaddr": ["addr": "blocked.test", "port": .int(Int64(port))], "timeout": 3000])
        XCTAssertEqual(all?["error"]?["code"], -32003)
        let message = all?["error"]?["message"]
        guard case .string(let text)? = message else { return XCTFail("no message") }
        XCTAssertTrue(text.contains("no allow rule"), text)
    }

    func testTimeoutCoversTheLookup() throws {
        dns.blocking = ["stuck.test"]
        dns.answers["stuck.test"] = v4("127.0.0.1")
        try start()
        let c = try LineClient(path: path)
        let started = Date()
        let error = c.call("tcp.createClient", ["sockaddr": ["addr": "stuck.test", "port": 9], "timeout": 200])?["error"]
        let took = Date().timeIntervalSince(started)
        XCTAssertEqual(error?["code"], -32002)
        XCTAssertGreaterThanOrEqual(took, 0.18)
        XCTAssertLessThan(took, 3)
        XCTAssertEqual(c.call("tcp.list", .array([]))?["result"], [])
        // The late result is dropped; the gateway goes on serving.
        dns.gate.signal()
        XCTAssertEqual(c.call("gateway.info", .array([]))?["result"]?["name"], "tcpgw")
    }

    func testClientGoneDuringLookup() throws {
        dns.blocking = ["stuck.test"]
        dns.answers["stuck.test"] = v4("127.0.0.1")
        try start()
        do {
            let c = try LineClient(path: path)
            c.send("tcp.createClient", ["sockaddr": ["addr": "stuck.test", "port": 9], "async": true])
            c.send("dns.lookup", ["host": "stuck.test"])
            XCTAssertNotNil(c.nextMessage(within: 5), "the async answer")
        }
        // The client is gone; its lookups finish into nothing.
        dns.gate.signal()
        dns.gate.signal()
        let other = try LineClient(path: path)
        XCTAssertEqual(other.call("gateway.info", .array([]))?["result"]?["name"], "tcpgw")
        XCTAssertEqual(other.call("tcp.list", .array([]))?["result"], [])
    }

    func testHandleClosedDuringLookupGetsNoEvent() throws {
        let (lfd, port) = try listener("127.0.0.1")
        defer { close(lfd) }
        dns.blocking = ["stuck.test"]
        dns.answers["stuck.test"] = v4("127.0.0.1")
        try start()
        let c = try LineClient(path: path)
        let created = c.call("tcp.createClient", ["sockaddr": ["addr": "stuck.test", "port": .int(Int64(port))], "async": true])
        guard let handle = created?["result"]?["handle"] else { return XCTFail("no handle: \(String(describing: created))") }
        // While resolving there is no socket: options say so, and the handle is connecting.
        let option = c.call("tcp.setNoDelay", ["handle": handle, "enable": true])?["error"]
        XCTAssertEqual(option?["code"], -32001)
        XCTAssertEqual(c.call("tcp.getState", ["handle": handle])?["result"]?["name"], "SYN_SENT")
        XCTAssertEqual(c.call("tcp.close", ["handle": handle])?["result"], true)
        dns.gate.signal()
        // The late result is dropped: no tcp.onConnect, no handle, nothing connected.
        XCTAssertNil(c.nextMessage(within: 0.3))
        XCTAssertEqual(c.call("tcp.list", .array([]))?["result"], [])
        var pfd = pollfd(fd: lfd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 100), 0, "nothing connected to the listener")
    }

    func testNoAddressIsNoSuchName() throws {
        dns.answers["empty.test"] = .success([])
        try start()
        let c = try LineClient(path: path)
        let error = c.call("tcp.createClient", ["sockaddr": ["addr": "empty.test", "port": 80], "timeout": 1000])?["error"]
        XCTAssertEqual(error?["code"], -32005)
        XCTAssertEqual(error?["data"]?["errno"], "EAI_NONAME")
        XCTAssertEqual(c.call("tcp.list", .array([]))?["result"], [])
    }
}
