import JSONRPC
import XCTest

@testable import TCPGateway

/// SockAddr from params, and Linux TCP states in the seed's lwIP numbering.
final class SocketAddressTests: XCTestCase {
    typealias S = GatewayTestSupport

    // MARK: - SockAddr(params:)

    /// A `sockaddr` param as the typed params give it, then the address.
    private func sockAddr(_ json: JSONValue) throws -> SockAddr {
        try SockAddr(params: SockAddrParam(paramJSON: json, path: "sockaddr"))
    }

    func testIPv4() throws {
        let a = try sockAddr(["addr": "127.0.0.1", "port": 8080])
        XCTAssertEqual(a, SockAddr(domain: 2, addr: "127.0.0.1", port: 8080))
        XCTAssertEqual(try sockAddr(["domain": 2, "addr": "0.0.0.0", "port": 0]), SockAddr(domain: 2, addr: "0.0.0.0", port: 0))
        XCTAssertEqual(a.json, ["domain": 2, "addr": "127.0.0.1", "port": 8080])
        XCTAssertEqual(S.keysOf(a.json), ["domain", "addr", "port"])
    }

    func testIPv6() throws {
        XCTAssertEqual(try sockAddr(["addr": "::1", "port": 6379]), SockAddr(domain: 10, addr: "::1", port: 6379))
        XCTAssertEqual(try sockAddr(["domain": 10, "addr": "::", "port": 1]), SockAddr(domain: 10, addr: "::", port: 1))
        XCTAssertEqual(
            try sockAddr(["domain": 10, "addr": "::ffff:127.0.0.1", "port": 1]).domain, 10,
            "a mapped address given as IPv6 stays IPv6")
        XCTAssertEqual(try sockAddr(["addr": "::1", "port": 80.0]).port, 80, "an integral real is an integer")
        XCTAssertEqual(try sockAddr(["domain": 10.0, "addr": "::1", "port": 80]).domain, 10)
    }

    func testScopedLinkLocal() throws {
        let a = try sockAddr(["addr": "fe80::1%lo", "port": 80])
        XCTAssertEqual(a.domain, 10)
        XCTAssertEqual(a.addr, "fe80::1%lo", "the text is kept as given")
        XCTAssertEqual(try sockAddr(["domain": 10, "addr": "fe80::1%lo", "port": 80]).domain, 10)
        // An interface that does not exist is a bad address, not an OS error later.
        let missing = S.rpcError { _ = try sockAddr(["addr": "fe80::1%nosuchif0", "port": 80]) }
        XCTAssertEqual(missing?.code, -32602)
    }

    func testDomainAddressMismatch() {
        let v4AsV6 = S.rpcError { _ = try sockAddr(["domain": 10, "addr": "127.0.0.1", "port": 80]) }
        XCTAssertEqual(v4AsV6?.code, -32602)
        XCTAssertEqual(v4AsV6?.message, "invalid params: 'sockaddr.addr' must be an IPv6 address literal, got \"127.0.0.1\"")
        let v6AsV4 = S.rpcError { _ = try sockAddr(["domain": 2, "addr": "::1", "port": 80]) }
        XCTAssertEqual(v6AsV4?.code, -32602)
        XCTAssertEqual(v6AsV4?.message, "invalid params: 'sockaddr.addr' must be an IPv4 address literal, got \"::1\"")
    }

    func testNotAnAddress() {
        for bad in ["localhost", "1.2.3", "300.1.1.1", "::1::2", " 127.0.0.1", "127.0.0.1 ", "[::1]", "::1%", ""] {
            let error = S.rpcError { _ = try sockAddr(["addr": .string(bad), "port": 80]) }
            XCTAssertEqual(error?.code, -32602, bad.debugDescription)
            XCTAssertEqual(
                error?.message, "invalid params: 'sockaddr.addr' must be an IPv4 or IPv6 address literal, got \"\(bad)\"",
                bad.debugDescription)
        }
        // Longer than the shim's buffer: still refused, without overrunning it.
        let long = "fe80::1%" + String(repeating: "x", count: 100)
        XCTAssertEqual(S.rpcError { _ = try sockAddr(["addr": .string(long), "port": 80]) }?.code, -32602)
    }

    func testNULAndStrayBytesAreRefused() {
        // A C string ends at NUL: these once passed as the address before it.
        for bad in ["127.0.0.1\u{0}x", "127.0.0.1\u{0}", "::1\u{0}", "\u{0}127.0.0.1", "fe80::1%lo\u{0}x"] {
            let error = S.rpcError { _ = try sockAddr(["addr": .string(bad), "port": 80]) }
            XCTAssertEqual(error?.code, -32602, bad.debugDescription)
            XCTAssertEqual(
                error?.message,
                "invalid params: 'sockaddr.addr' must be an IPv4 or IPv6 address literal; it contains a NUL byte",
                bad.debugDescription)
        }
        for bad in ["127.0.0.1\n", "::1\t", "127.0.0.\u{FF11}", "fe80::1%l/o", "fe80::1%lo%lo", "fe80::1%l o"] {
            XCTAssertFalse(SockAddr.holdsOnlyLiteralBytes(bad), bad.debugDescription)
            XCTAssertEqual(S.rpcError { _ = try sockAddr(["addr": .string(bad), "port": 80]) }?.code, -32602)
        }
        for good in ["127.0.0.1", "::FFFF:7f00:1", "fe80::1%lo", "fe80::1%eth0.100"] {
            XCTAssertTrue(SockAddr.holdsOnlyLiteralBytes(good), good)
        }
    }

    func testMissingMembers() {
        // Binding refuses these with -32602 first; reaching the typed params they are internal errors.
        XCTAssertEqual(
            S.rpcError { _ = try sockAddr(["port": 80]) }?.message,
            "internal error: param 'sockaddr.addr' is missing after validation")
        XCTAssertEqual(
            S.rpcError { _ = try sockAddr(["addr": "::1"]) }?.message,
            "internal error: param 'sockaddr.port' is missing after validation")
        XCTAssertEqual(
            S.rpcError { _ = try sockAddr(["addr": "::1", "port": "80"]) }?.message,
            "internal error: param 'sockaddr.port' is not an integer after validation (got string)")
    }

    // MARK: - TCPState

    func testLinuxStatesMapToLwIPNumbering() {
        // include/net/tcp_states.h → the seed's lwIP enum.
        let expected: [Int32: (Int, String)] = [
            1: (4, "ESTABLISHED"),
            2: (2, "SYN_SENT"),
            3: (3, "SYN_RCVD"),
            4: (5, "FIN_WAIT_1"),
            5: (6, "FIN_WAIT_2"),
            6: (10, "TIME_WAIT"),
            7: (0, "CLOSED"),
            8: (7, "CLOSE_WAIT"),
            9: (9, "LAST_ACK"),
            10: (1, "LISTEN"),
            11: (8, "CLOSING"),
            12: (3, "SYN_RCVD"),  // TCP_NEW_SYN_RECV
        ]
        for linux in Int32(1)...12 {
            let state = TCPState(linux: linux)
            XCTAssertEqual(state.rawValue, expected[linux]?.0, "linux state \(linux)")
            XCTAssertEqual(state.name, expected[linux]?.1, "linux state \(linux)")
            XCTAssertEqual(state.json, ["state": .int(Int64(state.rawValue)), "name": .string(state.name)])
        }
        // Nothing in range is left unmapped except CLOSE (7) → CLOSED, and every lwIP state is reachable.
        let reached = Set((Int32(1)...12).map { TCPState(linux: $0) })
        XCTAssertEqual(reached, Set(TCPState.allCases))
        // Out-of-range values read as CLOSED rather than trapping.
        XCTAssertEqual(TCPState(linux: 0), .closed)
        XCTAssertEqual(TCPState(linux: 13), .closed)
        XCTAssertEqual(TCPState(linux: -1), .closed)
    }

    func testLwIPNumberingAndNames() {
        let names = TCPState.allCases.map { "\($0.rawValue) \($0.name)" }
        XCTAssertEqual(
            names,
            ["0 CLOSED", "1 LISTEN", "2 SYN_SENT", "3 SYN_RCVD", "4 ESTABLISHED", "5 FIN_WAIT_1", "6 FIN_WAIT_2",
             "7 CLOSE_WAIT", "8 CLOSING", "9 LAST_ACK", "10 TIME_WAIT"])
    }
}

extension GatewayTestSupport {
    static func keysOf(_ value: JSONValue?) -> [String]? {
        if case .object(let object)? = value { return object.keys }
        return nil
    }
}
