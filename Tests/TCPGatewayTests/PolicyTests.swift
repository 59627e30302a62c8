import Foundation
import JSONRPC
import XCTest

@testable import TCPGateway

/// AddressRule parsing and matching, and Policy(json:).
final class PolicyTests: XCTestCase {
    typealias S = GatewayTestSupport

    private func rule(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> AddressRule? {
        do {
            return try AddressRule(text)
        } catch {
            XCTFail("rule \(text.debugDescription) should parse: \(error)", file: file, line: line)
            return nil
        }
    }

    private func v4(_ addr: String, _ port: Int) -> SockAddr { SockAddr(domain: SockAddr.inet, addr: addr, port: port) }
    private func v6(_ addr: String, _ port: Int) -> SockAddr { SockAddr(domain: SockAddr.inet6, addr: addr, port: port) }

    // MARK: - Parsing

    func testParsesCIDR() throws {
        let r = try XCTUnwrap(rule("127.0.0.0/8"))
        XCTAssertEqual(r.family, SockAddr.inet)
        XCTAssertEqual(r.prefix, [127, 0, 0, 0])
        XCTAssertEqual(r.prefixLength, 8)
        XCTAssertTrue(r.ports.isEmpty)
    }

    func testParsesBareIPv6() throws {
        let r = try XCTUnwrap(rule("::1"))
        XCTAssertEqual(r.family, SockAddr.inet6)
        XCTAssertEqual(r.prefix, [UInt8](repeating: 0, count: 15) + [1])
        XCTAssertEqual(r.prefixLength, 128)
        XCTAssertTrue(r.ports.isEmpty, "the colons of a bare IPv6 address are not a port separator")
    }

    func testParsesBracketedIPv6WithPort() throws {
        let r = try XCTUnwrap(rule("[::1]:6379"))
        XCTAssertEqual(r.family, SockAddr.inet6)
        XCTAssertEqual(r.prefixLength, 128)
        XCTAssertEqual(r.ports, [6379...6379])
        let bare = try XCTUnwrap(rule("[::1]"))
        XCTAssertTrue(bare.ports.isEmpty)
    }

    func testParsesPortList() throws {
        let r = try XCTUnwrap(rule("10.0.0.1:80,443"))
        XCTAssertEqual(r.family, SockAddr.inet)
        XCTAssertEqual(r.prefix, [10, 0, 0, 1])
        XCTAssertEqual(r.prefixLength, 32)
        XCTAssertEqual(r.ports, [80...80, 443...443])
    }

    func testParsesAnyAddressWithPortRange() throws {
        let r = try XCTUnwrap(rule("*:8000-8100"))
        XCTAssertEqual(r.family, 0)
        XCTAssertEqual(r.ports, [8000...8100])
        let any = try XCTUnwrap(rule("*"))
        XCTAssertEqual(any.family, 0)
        XCTAssertTrue(any.ports.isEmpty)
        let anyPort = try XCTUnwrap(rule("127.0.0.1:*"))
        XCTAssertTrue(anyPort.ports.isEmpty)
        XCTAssertEqual(try XCTUnwrap(rule("*:0-65535")).ports, [0...65535])
    }

    func testRejectsBadRules() {
        let cases: [(String, String)] = [
            ("300.1.1.1", "is not an IP address or host name"),
            ("1.2.3.4/33", "prefix length out of range"),
            ("::1/129", "prefix length out of range"),
            ("1.2.3.4/", "bad prefix length"),
            ("1.2.3.4/x", "bad prefix length"),
            ("[::1", "missing ']'"),
            ("[::1]x", "unexpected text after ']'"),
            ("x:99999", "bad port list"),
            ("1.2.3.4:65536", "bad port list"),
            ("1.2.3.4:10-5", "bad port list"),
            ("1.2.3.4:1-2-3", "bad port list"),
            ("1.2.3.4:http", "bad port list"),
            ("[::1]:x", "bad port list"),
            ("1.2.3", "is not an IP address or host name"),
            ("fe80::1%lo", "is not an IP address or host name"),
            // An empty port list or piece is a typo, not "any port" (that is written '*').
            ("127.0.0.1:", "bad port list"),
            ("[::1]:", "bad port list"),
            ("127.0.0.1:80-", "bad port list"),
            ("127.0.0.1:-80", "bad port list"),
            ("127.0.0.1:80,,443", "bad port list"),
            ("127.0.0.1:,", "bad port list"),
        ]
        for (text, fragment) in cases {
            let message = S.policyError { _ = try AddressRule(text) }
            XCTAssertTrue(message?.contains(fragment) == true, "\(text): \(message ?? "nil") should mention \(fragment)")
            XCTAssertTrue(message?.contains("'\(text)'") == true, "\(text): the message names the rule: \(message ?? "nil")")
        }
    }

    // MARK: - Matching

    func testPrefixBoundaries() throws {
        let loopback = try XCTUnwrap(rule("127.0.0.0/8"))
        XCTAssertTrue(loopback.matches(v4("127.0.0.1", 80)))
        XCTAssertTrue(loopback.matches(v4("127.255.255.255", 80)))
        XCTAssertTrue(loopback.matches(v4("127.0.0.0", 0)))
        XCTAssertFalse(loopback.matches(v4("126.255.255.255", 80)))
        XCTAssertFalse(loopback.matches(v4("128.0.0.0", 80)))

        // A prefix that is not a whole number of bytes: 10.16.0.0/12 is 10.16.0.0 ... 10.31.255.255.
        let twelve = try XCTUnwrap(rule("10.16.0.0/12"))
        XCTAssertTrue(twelve.matches(v4("10.16.0.0", 1)))
        XCTAssertTrue(twelve.matches(v4("10.31.255.255", 1)))
        XCTAssertFalse(twelve.matches(v4("10.15.255.255", 1)))
        XCTAssertFalse(twelve.matches(v4("10.32.0.0", 1)))

        let single = try XCTUnwrap(rule("192.168.1.7"))
        XCTAssertTrue(single.matches(v4("192.168.1.7", 1)))
        XCTAssertFalse(single.matches(v4("192.168.1.6", 1)))
        XCTAssertFalse(single.matches(v4("192.168.1.8", 1)))

        let slash31 = try XCTUnwrap(rule("192.168.1.6/31"))
        XCTAssertTrue(slash31.matches(v4("192.168.1.6", 1)))
        XCTAssertTrue(slash31.matches(v4("192.168.1.7", 1)))
        XCTAssertFalse(slash31.matches(v4("192.168.1.8", 1)))
        XCTAssertFalse(slash31.matches(v4("192.168.1.5", 1)))

        let everything = try XCTUnwrap(rule("0.0.0.0/0"))
        XCTAssertTrue(everything.matches(v4("255.255.255.255", 1)))
        XCTAssertFalse(everything.matches(v6("::1", 1)), "a v4 /0 is still IPv4 only")

        let v6Net = try XCTUnwrap(rule("fd00::/8"))
        XCTAssertTrue(v6Net.matches(v6("fd12:3456::1", 1)))
        XCTAssertFalse(v6Net.matches(v6("fc00::1", 1)))
        let v6Odd = try XCTUnwrap(rule("2001:db8::/33"))
        XCTAssertTrue(v6Odd.matches(v6("2001:db8:7fff::1", 1)))
        XCTAssertFalse(v6Odd.matches(v6("2001:db8:8000::1", 1)))
    }

    func testPorts() throws {
        let list = try XCTUnwrap(rule("10.0.0.1:80,443"))
        XCTAssertTrue(list.matches(v4("10.0.0.1", 80)))
        XCTAssertTrue(list.matches(v4("10.0.0.1", 443)))
        XCTAssertFalse(list.matches(v4("10.0.0.1", 81)))
        XCTAssertFalse(list.matches(v4("10.0.0.1", 442)))
        XCTAssertFalse(list.matches(v4("10.0.0.2", 80)), "right port, wrong address")

        let range = try XCTUnwrap(rule("*:8000-8100"))
        XCTAssertTrue(range.matches(v4("127.0.0.1", 8000)))
        XCTAssertTrue(range.matches(v4("127.0.0.1", 8100)))
        XCTAssertTrue(range.matches(v6("::1", 8050)), "'*' is any family")
        XCTAssertFalse(range.matches(v4("127.0.0.1", 7999)))
        XCTAssertFalse(range.matches(v4("127.0.0.1", 8101)))

        let redis = try XCTUnwrap(rule("[::1]:6379"))
        XCTAssertTrue(redis.matches(v6("::1", 6379)))
        XCTAssertTrue(redis.matches(v6("0:0:0:0:0:0:0:1", 6379)), "compared as bytes, not text")
        XCTAssertFalse(redis.matches(v6("::1", 6380)))
        XCTAssertFalse(redis.matches(v6("::2", 6379)))

        let any = try XCTUnwrap(rule("*"))
        XCTAssertTrue(any.matches(v4("8.8.8.8", 0)))
        XCTAssertTrue(any.matches(v6("::", 65535)))
    }

    func testIPv4MappedIPv6MatchesIPv4Rule() throws {
        let loopback = try XCTUnwrap(rule("127.0.0.0/8"))
        XCTAssertTrue(loopback.matches(v6("::ffff:127.0.0.1", 80)))
        XCTAssertTrue(loopback.matches(v6("::FFFF:7f00:2", 80)))
        XCTAssertFalse(loopback.matches(v6("::ffff:128.0.0.1", 80)))
        // Not mapped: the IPv4-compatible form and a near miss of the ::ffff: marker.
        XCTAssertFalse(loopback.matches(v6("::127.0.0.1", 80)))
        XCTAssertFalse(loopback.matches(v6("::fffe:127.0.0.1", 80)))
        XCTAssertFalse(loopback.matches(v6("1::ffff:127.0.0.1", 80)))

        let withPort = try XCTUnwrap(rule("127.0.0.1:6379"))
        XCTAssertTrue(withPort.matches(v6("::ffff:127.0.0.1", 6379)))
        XCTAssertFalse(withPort.matches(v6("::ffff:127.0.0.1", 6380)))
    }

    func testFamilyMismatch() throws {
        let v6Loopback = try XCTUnwrap(rule("::1"))
        XCTAssertFalse(v6Loopback.matches(v4("127.0.0.1", 80)))
        XCTAssertFalse(v6Loopback.matches(v4("0.0.0.1", 80)), "same trailing bytes, other family")
        let v4Loopback = try XCTUnwrap(rule("127.0.0.1"))
        XCTAssertFalse(v4Loopback.matches(v6("::1", 80)))
        // A rule written in mapped form is the IPv4 rule (mapped addresses are judged as IPv4).
        let mappedRule = try XCTUnwrap(rule("::ffff:127.0.0.1"))
        XCTAssertTrue(mappedRule.matches(v4("127.0.0.1", 80)))
        XCTAssertTrue(mappedRule.matches(v6("::ffff:127.0.0.1", 80)))
        XCTAssertFalse(mappedRule.matches(v4("127.0.0.2", 80)))
        // An address that is not a literal never matches an address rule.
        XCTAssertFalse(v4Loopback.matches(v4("localhost", 80)))
    }

    func testIPv6RulesDoNotMatchMappedAddresses() throws {
        // Mapped addresses reach IPv4: an IPv6-only rule must not let them through.
        let allV6 = try XCTUnwrap(rule("[::/0]:80"))
        XCTAssertTrue(allV6.matches(v6("::1", 80)))
        XCTAssertFalse(allV6.matches(v6("::ffff:127.0.0.1", 80)))
        XCTAssertFalse(allV6.matches(v6("::ffff:0.0.0.0", 80)))
        let wide = try XCTUnwrap(rule("::/80"))
        XCTAssertFalse(wide.matches(v6("::ffff:10.0.0.1", 80)), "a v6 prefix covering the mapped range is still IPv6")
    }

    func testMappedRulesBecomeIPv4Rules() throws {
        let mappedNet = try XCTUnwrap(rule("[::ffff:0:0/96]"))
        XCTAssertEqual(mappedNet.family, SockAddr.inet)
        XCTAssertEqual(mappedNet.prefixLength, 0)
        XCTAssertTrue(mappedNet.matches(v4("8.8.8.8", 1)))
        XCTAssertFalse(mappedNet.matches(v6("::1", 1)))
        let mapped8 = try XCTUnwrap(rule("::ffff:10.0.0.0/104"))
        XCTAssertEqual(mapped8.family, SockAddr.inet)
        XCTAssertEqual(mapped8.prefix, [10, 0, 0, 0])
        XCTAssertEqual(mapped8.prefixLength, 8)
        XCTAssertTrue(mapped8.matches(v4("10.9.9.9", 1)))
        XCTAssertFalse(mapped8.matches(v4("11.0.0.1", 1)))
        let short = try XCTUnwrap(rule("::ffff:0:0/95"))
        XCTAssertEqual(short.family, SockAddr.inet6, "a prefix shorter than the mapped range stays IPv6")
    }

    func testJudgedAddresses() {
        let mapped = JudgedAddress(v6("::ffff:127.0.0.1", 80), connecting: false)
        XCTAssertEqual(mapped, JudgedAddress(family: SockAddr.inet, bytes: [127, 0, 0, 1], port: 80))
        XCTAssertEqual(JudgedAddress(v4("0.0.0.0", 1), connecting: true).bytes, [127, 0, 0, 1])
        XCTAssertEqual(JudgedAddress(v4("0.0.0.0", 1), connecting: false).bytes, [0, 0, 0, 0], "listening on any stays any")
        XCTAssertEqual(JudgedAddress(v6("::", 1), connecting: true).bytes, [UInt8](repeating: 0, count: 15) + [1])
        XCTAssertEqual(JudgedAddress(v6("::ffff:0.0.0.0", 1), connecting: true).bytes, [127, 0, 0, 1])
        XCTAssertEqual(JudgedAddress(v6("::ffff:0.0.0.0", 1), connecting: true).family, SockAddr.inet)
        XCTAssertEqual(JudgedAddress(v6("fe80::1%lo", 1), connecting: true).family, SockAddr.inet6, "the scope is not the address")
        XCTAssertEqual(JudgedAddress(v4("localhost", 1), connecting: true).family, 0)
    }

    func testConnectToUnspecifiedIsJudgedAsLoopback() throws {
        let onlyAny = try Policy(json: ["connect": ["0.0.0.0", "::"]])
        let v4Denied = S.rpcError { try onlyAny.check(connect: v4("0.0.0.0", 80)) }
        XCTAssertEqual(v4Denied?.code, -32003)
        XCTAssertEqual(
            v4Denied?.message,
            "denied by policy: connecting to 0.0.0.0 port 80 (judged as 127.0.0.1): no allow rule in the policy's 'connect' list matches")
        XCTAssertEqual(S.rpcError { try onlyAny.check(connect: v6("::", 80)) }?.code, -32003)
        let loopback = try Policy(json: ["connect": ["127.0.0.1", "::1"]])
        XCTAssertNoThrow(try loopback.check(connect: v4("0.0.0.0", 80)))
        XCTAssertNoThrow(try loopback.check(connect: v6("::", 80)))
        XCTAssertNoThrow(try loopback.check(connect: v6("::ffff:0.0.0.0", 80)))
        XCTAssertNoThrow(try loopback.check(connect: v6("::ffff:127.0.0.1", 80)))
    }

    func testDualStackListenIsCheckedAsBothAnyAddresses() throws {
        let v6Any = try Policy(json: ["listen": ["[::]"]])
        XCTAssertNoThrow(try v6Any.check(listen: v6("::", 80), ipv6Only: true))
        let dual = S.rpcError { try v6Any.check(listen: v6("::", 80), ipv6Only: false) }
        XCTAssertEqual(dual?.code, -32003)
        XCTAssertTrue(dual?.message.contains("0.0.0.0 port 80") == true, dual?.message ?? "nil")
        XCTAssertEqual(S.rpcError { try v6Any.check(listen: v6("0:0::0", 80), alsoIPv4: true) }?.code, -32003)
        XCTAssertNoThrow(try v6Any.check(listen: v6("::", 80), alsoIPv4: false))
        let both = try Policy(json: ["listen": ["[::]", "0.0.0.0:80"]])
        XCTAssertNoThrow(try both.check(listen: v6("::", 80), ipv6Only: false))
        XCTAssertEqual(S.rpcError { try both.check(listen: v6("::", 81), ipv6Only: false) }?.code, -32003)
        // Only `::` takes IPv4 connections to any address; a specific IPv6 address does not.
        let loop = try Policy(json: ["listen": ["::1"]])
        XCTAssertNoThrow(try loop.check(listen: v6("::1", 80), ipv6Only: false))
        XCTAssertFalse(DualStack.coversIPv4(v6("::1", 80), ipv6Only: false))
        XCTAssertTrue(DualStack.coversIPv4(v6("::", 80), ipv6Only: false))
        XCTAssertFalse(DualStack.coversIPv4(v6("::", 80), ipv6Only: true))
        XCTAssertFalse(DualStack.coversIPv4(v4("0.0.0.0", 80), ipv6Only: false))
        XCTAssertEqual(DualStack.coversIPv4(v6("::", 80), ipv6Only: nil), DualStack.systemDefaultIsDualStack())
    }

    // MARK: - Policy(json:)

    func testReadmeExample() throws {
        let json = try JanssonCodec.parse(
            """
            {"connect": ["127.0.0.0/8", "[::1]:6379", "*:8000-8100"],
             "listen": ["127.0.0.1", "::1"],
             "allowBindToDevice": false, "allowCreateByFd": true, "allowFlyAway": true,
             "maxHandlesPerConnection": 256}
            """)
        let policy = try Policy(json: json)
        XCTAssertEqual(policy.connect?.allow?.count, 3)
        XCTAssertEqual(policy.listen?.allow?.count, 2)
        XCTAssertFalse(policy.allowBindToDevice)
        XCTAssertTrue(policy.allowCreateByFd)
        XCTAssertTrue(policy.allowFlyAway)
        XCTAssertEqual(policy.maxHandlesPerConnection, 256)

        XCTAssertNoThrow(try policy.check(connect: v4("127.0.0.1", 1)))
        XCTAssertNoThrow(try policy.check(connect: v6("::1", 6379)))
        XCTAssertNoThrow(try policy.check(connect: v4("10.1.2.3", 8080)))
        let denied = S.rpcError { try policy.check(connect: v6("::1", 6380)) }
        XCTAssertEqual(denied?.code, -32003)
        XCTAssertEqual(denied?.message, "denied by policy: connecting to ::1 port 6380: no allow rule in the policy's 'connect' list matches")
        XCTAssertNoThrow(try policy.check(listen: v6("::1", 0), ipv6Only: nil))
        let listenDenied = S.rpcError { try policy.check(listen: v4("0.0.0.0", 80), ipv6Only: nil) }
        XCTAssertEqual(listenDenied?.code, -32003)
        XCTAssertTrue(listenDenied?.message.contains("'listen' list") == true)
    }

    func testDefaultsAllowEverything() throws {
        let policy = try Policy(json: [:])
        XCTAssertNil(policy.connect)
        XCTAssertNil(policy.listen)
        XCTAssertTrue(policy.allowBindToDevice && policy.allowCreateByFd && policy.allowFlyAway)
        XCTAssertEqual(policy.maxHandlesPerConnection, 1024)
        XCTAssertNoThrow(try policy.check(connect: v4("1.2.3.4", 5)))
        // An empty list allows nothing.
        let closed = try Policy(json: ["connect": []])
        XCTAssertEqual(S.rpcError { try closed.check(connect: v4("127.0.0.1", 80)) }?.code, -32003)
        XCTAssertNoThrow(try closed.check(listen: v4("127.0.0.1", 80), ipv6Only: nil), "listen stays unrestricted")
    }

    func testRejectsUnknownKeysAndWrongTypes() {
        let cases: [(JSONValue, String)] = [
            (["conect": []], "unknown key 'conect'"),
            (["connect": "127.0.0.1"], "'connect' must be an array of rules or an object with 'allow' and 'deny' arrays"),
            (["listen": ["127.0.0.1": true]], "'listen': unknown key '127.0.0.1' (only 'allow' and 'deny')"),
            (["connect": [1]], "'connect' rules must be strings"),
            (["listen": [.null]], "'listen' rules must be strings"),
            (["allowBindToDevice": 0], "'allowBindToDevice' must be a boolean"),
            (["allowCreateByFd": "true"], "'allowCreateByFd' must be a boolean"),
            (["allowFlyAway": .null], "'allowFlyAway' must be a boolean"),
            (["maxHandlesPerConnection": "256"], "'maxHandlesPerConnection' must be an integer in 1..1000000"),
            (["maxHandlesPerConnection": 256.0], "'maxHandlesPerConnection' must be an integer in 1..1000000"),
            (["maxHandlesPerConnection": 0], "'maxHandlesPerConnection' must be an integer in 1..1000000"),
            (["maxHandlesPerConnection": 1_000_001], "'maxHandlesPerConnection' must be an integer in 1..1000000"),
        ]
        for (json, fragment) in cases {
            let message = S.policyError { _ = try Policy(json: json, source: "p.json") }
            XCTAssertEqual(message, "p.json: \(fragment)", "for \(json)")
        }
        XCTAssertEqual(S.policyError { _ = try Policy(json: ["connect"]) }, "policy: the policy must be a JSON object")
        XCTAssertNoThrow(try Policy(json: ["maxHandlesPerConnection": 1]))
        XCTAssertNoThrow(try Policy(json: ["maxHandlesPerConnection": 1_000_000]))
    }

    func testMaxConnectionsPerUid() throws {
        XCTAssertNil(try Policy(json: [:]).maxConnectionsPerUid)
        XCTAssertEqual(ConnectionAdmission.perUidLimit(policy: try Policy(json: [:]), maxConnections: 128), 64)
        XCTAssertEqual(ConnectionAdmission.perUidLimit(policy: try Policy(json: [:]), maxConnections: 1), 1)
        let set = try Policy(json: ["maxConnectionsPerUid": 3])
        XCTAssertEqual(ConnectionAdmission.perUidLimit(policy: set, maxConnections: 128), 3)
        for bad: JSONValue in [0, -1, "3", 2.5, 1_000_001, .null] {
            XCTAssertEqual(
                S.policyError { _ = try Policy(json: ["maxConnectionsPerUid": bad], source: "p.json") },
                "p.json: 'maxConnectionsPerUid' must be an integer in 1..1000000", "\(bad)")
        }
    }

    func testRuleWithNULIsRejected() {
        for text in ["127.0.0.1\u{0}x", "\u{0}", "[::1]:80\u{0}"] {
            let message = S.policyError { _ = try AddressRule(text) }
            XCTAssertTrue(message?.hasSuffix("contains a NUL byte") == true, "\(text.debugDescription): \(message ?? "nil")")
            XCTAssertFalse(message?.utf8.contains(0) ?? true, "the message shows the NUL escaped")
        }
        let message = S.policyError { _ = try Policy(json: ["connect": ["127.0.0.1\u{0}x"]], source: "p.json") }
        XCTAssertEqual(message, "p.json: 'connect': rule '127.0.0.1\\u0000x': contains a NUL byte")
    }

    func testDuplicateKeysAreFound() {
        let cases: [(String, String?)] = [
            (#"{"connect": [], "listen": [], "connect": ["*"]}"#, "duplicate key 'connect'"),
            (#"{"listen": [], "li\u0073ten": ["*"]}"#, "duplicate key 'listen'"),
            (#"{"a": {"b": 1, "c": {"b": 2}, "b": 3}}"#, "duplicate key 'b' in a"),
            (#"{"p": [{"uid": 1}, {"uid": 2, "gid": 3, "uid": 4}]}"#, "duplicate key 'uid' in p[1]"),
            (#"{"x": "\"y\":", "y": 1, "z": ["y", "y"]}"#, nil),
            (#"{"a": {"k": 1}, "b": {"k": 2}, "k": [{"k": 1}, {"k": 1}]}"#, nil),
            (#"["k", "k", {"k": 1}]"#, nil),
            (#"{"\u0000": 1, "": 2}"#, nil),
            (#"{"": 1, "": 2}"#, "duplicate key ''"),
        ]
        for (text, expected) in cases {
            XCTAssertEqual(JSONDuplicateKeys.firstDuplicate(in: Array(text.utf8)), expected, text)
        }
    }

    func testPolicyFileWithDuplicateKeyIsRefused() throws {
        let path = NSTemporaryDirectory() + "/tcpgw-policy-\(getpid())-dup.json"
        defer { unlink(path) }
        try Data(#"{"connect": ["10.0.0.0/8"], "connect": ["*"]}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(S.policyError { _ = try Policy(file: path) }, "\(path): duplicate key 'connect'")
        try Data(#"{"connect": ["10.0.0.0/8"]}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try Policy(file: path).connect?.allow?.count, 1)
    }

    func testPolicyFileIsReadUntilEndOfFile() throws {
        // A pipe has no size; the text is whatever arrives before end of file.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let text = Array(#"{"maxHandlesPerConnection": 9}"#.utf8)
        XCTAssertEqual(text.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }, text.count)
        close(fds[1])
        defer { close(fds[0]) }
        XCTAssertEqual(try Policy(file: "/dev/fd/\(fds[0])").maxHandlesPerConnection, 9)
        let missing = S.policyError { _ = try Policy(file: "/nonexistent/policy.json") }
        XCTAssertEqual(missing, "cannot read policy file /nonexistent/policy.json: No such file or directory")
    }

    func testBadRuleInsidePolicyIsRejected() {
        let message = S.policyError { _ = try Policy(json: ["listen": ["127.0.0.1", "300.1.1.1"]]) }
        XCTAssertTrue(message?.contains("'300.1.1.1'") == true, message ?? "nil")
    }
}

/// Allow and deny lists, accept rules, profiles, decisions and the digest (contract §8).
final class PolicyListTests: XCTestCase {
    typealias S = GatewayTestSupport

    private func v4(_ addr: String, _ port: Int) -> SockAddr { SockAddr(domain: SockAddr.inet, addr: addr, port: port) }
    private func v6(_ addr: String, _ port: Int) -> SockAddr { SockAddr(domain: SockAddr.inet6, addr: addr, port: port) }

    func testDenyWinsOverAllow() throws {
        let policy = try Policy(json: [
            "connect": ["allow": ["127.0.0.0/8"], "deny": ["127.0.0.1:22"]],
            "listen": ["allow": ["*"], "deny": ["127.0.0.5"]],
        ])
        XCTAssertNoThrow(try policy.check(connect: v4("127.0.0.1", 80)))
        let denied = policy.decide(connect: v4("127.0.0.1", 22))
        XCTAssertFalse(denied.allowed)
        XCTAssertEqual(denied.rule, "127.0.0.1:22")
        XCTAssertEqual(
            S.rpcError { try denied.enforce() }?.message,
            "denied by policy: connecting to 127.0.0.1 port 22: the policy's 'connect' deny rule '127.0.0.1:22' matches")
        let allowed = policy.decide(connect: v4("127.9.9.9", 22))
        XCTAssertTrue(allowed.allowed)
        XCTAssertEqual(allowed.rule, "127.0.0.0/8")
        XCTAssertEqual(S.rpcError { try policy.check(listen: v4("127.0.0.5", 1), ipv6Only: nil) }?.code, -32003)
        XCTAssertNoThrow(try policy.check(listen: v4("127.0.0.6", 1), ipv6Only: nil))
    }

    func testDenyOnlyListAllowsTheRest() throws {
        let policy = try Policy(json: ["connect": ["deny": ["10.0.0.0/8"]]])
        XCTAssertNil(policy.connect?.allow)
        let open = policy.decide(connect: v4("127.0.0.1", 1))
        XCTAssertTrue(open.allowed)
        XCTAssertNil(open.rule, "nothing restricted it")
        XCTAssertEqual(policy.decide(connect: v4("10.1.1.1", 1)).rule, "10.0.0.0/8")
        XCTAssertFalse(policy.decide(connect: v4("10.1.1.1", 1)).allowed)
    }

    func testEmptyAllowAllowsNothing() throws {
        for json: JSONValue in [["accept": []], ["accept": ["allow": []]], ["accept": ["allow": [], "deny": []]]] {
            let policy = try Policy(json: json)
            let decision = policy.decide(accept: v4("127.0.0.1", 5000))
            XCTAssertFalse(decision.allowed, "\(json)")
            XCTAssertEqual(decision.rule, "no allow rule")
            XCTAssertEqual(
                decision.refusal,
                "a connection from 127.0.0.1 port 5000: no allow rule in the policy's 'accept' list matches")
        }
        XCTAssertTrue(try Policy(json: ["accept": ["deny": []]]).decide(accept: v4("127.0.0.1", 1)).allowed)
    }

    func testDenyRulesSeeThroughMappedUnspecifiedAndDualStack() throws {
        let connect = try Policy(json: ["connect": ["deny": ["127.0.0.1"]]])
        XCTAssertFalse(connect.decide(connect: v6("::ffff:127.0.0.1", 80)).allowed, "mapped is its IPv4 address")
        XCTAssertFalse(connect.decide(connect: v4("0.0.0.0", 80)).allowed, "0.0.0.0 reaches 127.0.0.1")
        XCTAssertFalse(connect.decide(connect: v6("::ffff:0.0.0.0", 80)).allowed)
        XCTAssertTrue(connect.decide(connect: v4("127.0.0.2", 80)).allowed)
        let v6Deny = try Policy(json: ["connect": ["deny": ["::1"]]])
        XCTAssertFalse(v6Deny.decide(connect: v6("::", 80)).allowed, ":: reaches ::1")
        let listen = try Policy(json: ["listen": ["deny": ["0.0.0.0"]]])
        let dual = listen.decide(listen: v6("::", 80), alsoIPv4: true)
        XCTAssertFalse(dual.allowed, "a dual-stack :: listener also listens on 0.0.0.0")
        XCTAssertEqual(dual.rule, "0.0.0.0")
        XCTAssertEqual(
            dual.refusal,
            "listening on :: port 80 without ipv6Only also listens on IPv4 0.0.0.0 port 80: the policy's 'listen' deny rule '0.0.0.0' matches")
        XCTAssertTrue(listen.decide(listen: v6("::", 80), alsoIPv4: false).allowed)
        XCTAssertFalse(listen.decide(listen: v6("::ffff:0.0.0.0", 80), alsoIPv4: false).allowed)
        let mappedRule = try Policy(json: ["accept": ["deny": ["::ffff:127.0.0.0/104"]]])
        XCTAssertFalse(mappedRule.decide(accept: v4("127.0.0.3", 1)).allowed, "a mapped deny rule is the IPv4 rule")
        XCTAssertFalse(mappedRule.decide(accept: v6("::ffff:127.0.0.3", 1)).allowed)
        XCTAssertTrue(mappedRule.decide(accept: v6("::1", 1)).allowed)
    }

    func testListErrorsNameTheMember() {
        let cases: [(JSONValue, String)] = [
            (["connect": ["allow": "127.0.0.1"]], "'connect.allow' must be an array of rules"),
            (["accept": ["deny": [5]]], "'accept.deny' rules must be strings"),
            (["listen": ["deny": ["300.1.1.1"]]], "'listen.deny': rule '300.1.1.1': '300.1.1.1' is not an IP address or host name"),
            (["accept": ["allow": [], "except": []]], "'accept': unknown key 'except' (only 'allow' and 'deny')"),
            (["accept": 3], "'accept' must be an array of rules or an object with 'allow' and 'deny' arrays"),
            (["connect": ["deny": ["127.0.0.1:80-"]]], "'connect.deny': rule '127.0.0.1:80-': bad port list '80-'"),
        ]
        for (json, fragment) in cases {
            XCTAssertEqual(S.policyError { _ = try Policy(json: json, source: "p.json") }, "p.json: \(fragment)", "for \(json)")
        }
    }

    func testProfilesPickByUidThenGidAndReplaceKeys() throws {
        let policy = try Policy(json: [
            "connect": ["127.0.0.1:80"], "maxHandlesPerConnection": 7, "allowFlyAway": false,
            "profiles": [
                ["uid": 1000, "connect": ["deny": ["127.0.0.1"]]],
                ["gid": 100, "maxHandlesPerConnection": 3],
                ["uid": 1000, "maxHandlesPerConnection": 99],
            ],
        ])
        let top = policy.effective(for: PeerCredentials(uid: 5, gid: 5, pid: 1))
        XCTAssertEqual(top.maxHandlesPerConnection, 7)
        XCTAssertTrue(top.decide(connect: v4("127.0.0.1", 80)).allowed)
        let user = policy.effective(for: PeerCredentials(uid: 1000, gid: 100, pid: 1))
        XCTAssertFalse(user.decide(connect: v4("127.0.0.1", 80)).allowed, "the profile's connect replaced the top level's")
        XCTAssertTrue(user.decide(connect: v4("127.0.0.2", 9)).allowed)
        XCTAssertEqual(user.maxHandlesPerConnection, 7, "the first matching profile wins; keys it omits stay top-level")
        XCTAssertFalse(user.allowFlyAway)
        let group = policy.effective(for: PeerCredentials(uid: 2000, gid: 100, pid: 1))
        XCTAssertEqual(group.maxHandlesPerConnection, 3)
        XCTAssertFalse(group.decide(connect: v4("127.0.0.2", 9)).allowed, "the top-level connect list still applies")
        XCTAssertEqual(policy.effective(for: PeerCredentials(uid: -1, gid: -1, pid: -1)).maxHandlesPerConnection, 7)
    }

    func testProfilesSeeTopLevelKeysWrittenAfterThem() throws {
        let policy = try Policy(json: ["profiles": [["uid": 0, "allowFlyAway": true]], "allowFlyAway": false, "listen": []])
        let root = policy.effective(for: PeerCredentials(uid: 0, gid: 0, pid: 1))
        XCTAssertTrue(root.allowFlyAway)
        XCTAssertNotNil(root.listen, "a top-level key after 'profiles' is inherited")
        XCTAssertFalse(policy.allowFlyAway)
    }

    func testProfileErrors() {
        let cases: [(JSONValue, String)] = [
            (["profiles": ["uid": 1]], "'profiles' must be an array of objects"),
            (["profiles": [1]], "'profiles[0]' must be an object"),
            (["profiles": [["connect": []]]], "'profiles[0]' needs a 'uid' or a 'gid'"),
            (["profiles": [["uid": -1]]], "'profiles[0]': 'uid' must be an integer in 0..4294967294"),
            (["profiles": [["gid": "100"]]], "'profiles[0]': 'gid' must be an integer in 0..4294967294"),
            (["profiles": [["uid": 1], ["uid": 2, "conect": []]]], "'profiles[1]': unknown key 'conect'"),
            (["profiles": [["uid": 1, "profiles": []]]], "'profiles[0]': unknown key 'profiles' (profiles do not nest)"),
            (["profiles": [["uid": 1, "accept": ["deny": ["1.2.3"]]]]], "'profiles[0]': 'accept.deny': rule '1.2.3': '1.2.3' is not an IP address or host name"),
        ]
        for (json, fragment) in cases {
            XCTAssertEqual(S.policyError { _ = try Policy(json: json, source: "p.json") }, "p.json: \(fragment)", "for \(json)")
        }
    }

    func testSwitchDecisions() {
        let denied = PolicyDecision.flag(
            false, key: "allowFlyAway", action: .flyAway, target: .init(addr: "127.0.0.1", port: 1), refusal: "tcp.flyAway is not allowed")
        XCTAssertEqual(denied.rule, "allowFlyAway")
        XCTAssertEqual(S.rpcError { try denied.enforce() }?.message, "denied by policy: tcp.flyAway is not allowed (the policy's 'allowFlyAway' is false)")
        let allowed = PolicyDecision.flag(true, key: "allowFlyAway", action: .flyAway, target: .init(addr: nil, port: nil), refusal: "x")
        XCTAssertNil(allowed.rule)
        XCTAssertNoThrow(try allowed.enforce())
        XCTAssertEqual(JanssonCodec.serializeToString(allowed.target.json), #"{"addr":null,"port":null}"#)
    }

    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // Two blocks: the padding spills into a second one.
        XCTAssertEqual(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(
            SHA256.hex([UInt8](repeating: 0x61, count: 1000)),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    func testRFC3339() {
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 0)), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(Date(timeIntervalSince1970: 1_796_118_000.25)), "2026-12-01T09:40:00.250Z")
    }
}

extension PolicyListTests {
    func testWildcardListenUnderADenyOfOneAddress() throws {
        let policy = try Policy(json: ["listen": ["deny": ["127.0.0.1:80", "[::1]"]]])
        let any = policy.decide(listen: v4("0.0.0.0", 80), alsoIPv4: false)
        XCTAssertFalse(any.allowed, "0.0.0.0 port 80 would serve 127.0.0.1 port 80")
        XCTAssertEqual(any.rule, "127.0.0.1:80")
        XCTAssertTrue(policy.decide(listen: v4("0.0.0.0", 81), alsoIPv4: false).allowed, "the rule names port 80 only")
        XCTAssertTrue(policy.decide(listen: v4("127.0.0.2", 80), alsoIPv4: false).allowed)
        XCTAssertFalse(policy.decide(listen: v6("::", 81), alsoIPv4: false).allowed, ":: would serve ::1")
        let v4Only = try Policy(json: ["listen": ["deny": ["127.0.0.1:80"]]])
        XCTAssertTrue(v4Only.decide(listen: v6("::", 80), alsoIPv4: false).allowed, "an IPv6-only :: serves no IPv4")
        XCTAssertFalse(v4Only.decide(listen: v6("::", 80), alsoIPv4: true).allowed, "a dual-stack :: does")
        XCTAssertFalse(v4Only.decide(listen: v6("::ffff:0.0.0.0", 80), alsoIPv4: false).allowed)
    }
}

extension PolicyListTests {
    /// The example of the README's Policy section, as written there.
    func testReadmeV2Example() throws {
        let text = #"""
            {"connect": {"allow": ["127.0.0.0/8", "[::1]:6379", "*:8000-8100"], "deny": ["127.0.0.1:22"]},
             "listen": ["127.0.0.1", "::1"],
             "accept": {"deny": ["127.0.0.3"]},
             "allowBindToDevice": false, "allowCreateByFd": true, "allowFlyAway": true,
             "maxHandlesPerConnection": 256, "maxConnectionsPerUid": 16,
             "profiles": [{"uid": 1000, "connect": ["*"]}, {"gid": 100, "allowFlyAway": false}]}
            """#
        let policy = try Policy(bytes: Array(text.utf8), source: "README")
        XCTAssertFalse(policy.decide(connect: v4("127.0.0.1", 22)).allowed)
        XCTAssertTrue(policy.decide(connect: v4("127.0.0.1", 23)).allowed)
        XCTAssertFalse(policy.decide(accept: v4("127.0.0.3", 5)).allowed)
        XCTAssertTrue(policy.decide(accept: v6("::1", 5)).allowed)
        let user = policy.effective(for: PeerCredentials(uid: 1000, gid: 1000, pid: 1))
        XCTAssertTrue(user.decide(connect: v4("127.0.0.1", 22)).allowed, "the profile's connect list replaces the deny too")
        XCTAssertFalse(policy.effective(for: PeerCredentials(uid: 7, gid: 100, pid: 1)).allowFlyAway)
        XCTAssertEqual(user.maxHandlesPerConnection, 256)
    }
}

extension PolicyListTests {
    func testDuplicateKeysInsideListsAndProfilesAreRefused() {
        for (text, duplicate) in [
            (#"{"connect": {"deny": [], "deny": ["127.0.0.1"]}}"#, "duplicate key 'deny' in connect"),
            (#"{"profiles": [{"uid": 1, "uid": 2}]}"#, "duplicate key 'uid' in profiles[0]"),
        ] {
            let message = S.policyError { _ = try Policy(bytes: Array(text.utf8), source: "p.json") }
            XCTAssertEqual(message, "p.json: \(duplicate)")
        }
    }
}
