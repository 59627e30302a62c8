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
            "denied by policy: connecting to 0.0.0.0 port 80 (judged as 127.0.0.1) is not in the policy's 'connect' list")
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
        XCTAssertEqual(policy.connect?.count, 3)
        XCTAssertEqual(policy.listen?.count, 2)
        XCTAssertFalse(policy.allowBindToDevice)
        XCTAssertTrue(policy.allowCreateByFd)
        XCTAssertTrue(policy.allowFlyAway)
        XCTAssertEqual(policy.maxHandlesPerConnection, 256)

        XCTAssertNoThrow(try policy.check(connect: v4("127.0.0.1", 1)))
        XCTAssertNoThrow(try policy.check(connect: v6("::1", 6379)))
        XCTAssertNoThrow(try policy.check(connect: v4("10.1.2.3", 8080)))
        let denied = S.rpcError { try policy.check(connect: v6("::1", 6380)) }
        XCTAssertEqual(denied?.code, -32003)
        XCTAssertEqual(denied?.message, "denied by policy: connecting to ::1 port 6380 is not in the policy's 'connect' list")
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
            (["connect": "127.0.0.1"], "'connect' must be an array of rules"),
            (["listen": ["127.0.0.1": true]], "'listen' must be an array of rules"),
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
        XCTAssertEqual(try Policy(file: path).connect?.count, 1)
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
