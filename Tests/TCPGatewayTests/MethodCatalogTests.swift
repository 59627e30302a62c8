import JSONRPC
import XCTest

@testable import TCPGateway

/// The catalog built from the real embedded OpenRPC document, its binding and its messages.
final class MethodCatalogTests: XCTestCase {
    typealias S = GatewayTestSupport

    private var catalog: MethodCatalog!

    override func setUpWithError() throws {
        catalog = try MethodCatalog(json: OpenRPCDocument.json)
    }

    private func method(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> MethodCatalog.Method {
        try XCTUnwrap(catalog.methods[name], "no method \(name) in the catalog", file: file, line: line)
    }

    /// Binds, failing the test on an error.
    private func bind(_ name: String, _ params: JSONValue?, file: StaticString = #filePath, line: UInt = #line) throws -> Params {
        try catalog.bind(method(name, file: file, line: line), params)
    }

    /// The -32602 message binding produces, failing the test when binding succeeds.
    private func bindError(_ name: String, _ params: JSONValue?, file: StaticString = #filePath, line: UInt = #line) throws -> String? {
        let m = try method(name, file: file, line: line)
        let error = S.rpcError(file: file, line: line) { _ = try catalog.bind(m, params) }
        XCTAssertEqual(error?.code, -32602, "code for \(name) \(String(describing: params))", file: file, line: line)
        return error?.message
    }

    // MARK: - The catalog itself

    func testCatalogHasEveryMethodInDocumentOrder() throws {
        XCTAssertEqual(catalog.orderedNames.count, 51)  // 42 + fault.add/remove/list + tcp.pipe/stream/attach + session.keep/ack/resume
        XCTAssertEqual(catalog.orderedNames.first, "tcp.createServer")
        XCTAssertEqual(Set(catalog.orderedNames).count, catalog.orderedNames.count, "no duplicates")
        for name in ["tcp.send", "tcp.sendto", "tcp.recv", "tcp.createClient", "tcp.setLinger", "rpc.discover", "gateway.info"] {
            XCTAssertNotNil(catalog.methods[name], name)
        }
        XCTAssertNil(catalog.methods["tcp.nope"])
        let events = catalog.orderedNames.filter { catalog.methods[$0]!.isEvent }
        XCTAssertEqual(events, ["tcp.onConnect", "tcp.onAccept", "tcp.onData", "tcp.onEnd", "tcp.onClose"])
    }

    func testParamsComeFromContentDescriptorRefs() throws {
        let send = try method("tcp.send")
        XCTAssertEqual(send.params.map(\.name), ["handle", "data", "encoding", "offset", "length", "timeout"])
        XCTAssertEqual(send.positional.map(\.name), send.params.map(\.name))
        XCTAssertEqual(send.params.filter(\.required).map(\.name), ["handle", "data"])
        // Schemas are inlined: no $ref left in the handle's schema.
        XCTAssertNil(send.params[0].schema["$ref"])
        XCTAssertEqual(send.params[0].schema["minimum"], .int(1))

        let sendto = try method("tcp.sendto")
        XCTAssertEqual(sendto.params.map(\.name), ["handle", "data", "encoding", "offset", "length", "timeout", "remoteAddr"])
        XCTAssertEqual(sendto.positional.map(\.name), ["handle", "data", "encoding", "offset", "length", "timeout"])
        XCTAssertEqual(sendto.params.last?.byNameOnly, true)

        XCTAssertEqual(try method("tcp.recv").positional.map(\.name), ["handle", "length", "timeout", "encoding"])
    }

    func testInlineReplacesNestedRefs() throws {
        let sockaddr = try XCTUnwrap(try method("tcp.createClient").params.first)
        XCTAssertEqual(sockaddr.name, "sockaddr")
        XCTAssertNil(sockaddr.schema["$ref"])
        XCTAssertEqual(sockaddr.schema["properties"]?["port"]?["maximum"], .int(65535), "Port was inlined into SockAddr")
        XCTAssertNil(sockaddr.schema["properties"]?["port"]?["$ref"])
    }

    // MARK: - Binding by position

    func testSendByPosition() throws {
        let bound = try bind("tcp.send", [7, "aGk=", "base64", 1, 2, 500])
        XCTAssertEqual(bound.values.keys, ["handle", "data", "encoding", "offset", "length", "timeout"])
        XCTAssertEqual(bound["handle"], 7)
        XCTAssertEqual(bound["data"], "aGk=")
        XCTAssertEqual(bound["encoding"], "base64")
        XCTAssertEqual(bound["offset"], 1)
        XCTAssertEqual(bound["length"], 2)
        XCTAssertEqual(bound["timeout"], 500)

        let short = try bind("tcp.send", [7, "hi"])
        XCTAssertEqual(short.values.keys, ["handle", "data"])
        XCTAssertNil(short["encoding"])
    }

    func testPositionAndNameBindTheSame() throws {
        let byPosition = try bind("tcp.recv", [3, 100, 0, "hex"])
        let byName = try bind("tcp.recv", ["encoding": "hex", "timeout": 0, "handle": 3, "length": 100])
        XCTAssertEqual(byPosition.values, byName.values)
        XCTAssertEqual(byName.values.keys, ["handle", "length", "timeout", "encoding"], "bound in schema order")
    }

    func testTooManyPositionalParams() throws {
        XCTAssertEqual(
            try bindError("tcp.send", [1, "x", "utf8", 0, 1, 0, "extra"]),
            "invalid params: tcp.send takes at most 6 positional params, got 7")
        // remoteAddr is by name only, so tcp.sendto still takes six positions.
        XCTAssertEqual(
            try bindError("tcp.sendto", [1, "x", "utf8", 0, 1, 0, ["addr": "127.0.0.1", "port": 1]]),
            "invalid params: tcp.sendto takes at most 6 positional params, got 7")
        XCTAssertEqual(
            try bindError("tcp.constants", [1]), "invalid params: tcp.constants takes at most 0 positional params, got 1")
        XCTAssertNoThrow(try bind("tcp.constants", []))
        XCTAssertNoThrow(try bind("tcp.constants", nil))
        XCTAssertNoThrow(try bind("tcp.constants", [:]))
    }

    // MARK: - Binding by name

    func testByNameOnlyParamIsAcceptedAndDropped() throws {
        for remote: JSONValue in [["domain": 2, "addr": "127.0.0.1", "port": 80], .null, "anything", 5, [1, 2]] {
            let bound = try bind("tcp.sendto", ["handle": 4, "data": "hi", "remoteAddr": remote])
            XCTAssertEqual(bound.values.keys, ["handle", "data"], "remoteAddr \(remote) is dropped")
            XCTAssertNil(bound["remoteAddr"])
        }
        // tcp.send has no such param at all.
        let message = try bindError("tcp.send", ["handle": 4, "data": "hi", "remoteAddr": .null])
        XCTAssertTrue(message?.hasPrefix("invalid params: unknown param 'remoteAddr' for tcp.send") == true, message ?? "nil")
    }

    func testUnknownNamedParam() throws {
        XCTAssertEqual(
            try bindError("tcp.send", ["handle": 1, "data": "x", "dta": "y"]),
            "invalid params: unknown param 'dta' for tcp.send (known: 'handle', 'data', 'encoding', 'offset', 'length', 'timeout')")
        XCTAssertEqual(
            try bindError("gateway.info", ["verbose": true]), "invalid params: unknown param 'verbose' for gateway.info (it takes none)")
    }

    func testMissingRequired() throws {
        XCTAssertEqual(try bindError("tcp.send", ["data": "x"]), "invalid params: 'handle' is required")
        XCTAssertEqual(try bindError("tcp.send", [1]), "invalid params: 'data' is required")
        XCTAssertEqual(try bindError("tcp.send", nil), "invalid params: 'handle' is required")
        XCTAssertEqual(try bindError("tcp.send", []), "invalid params: 'handle' is required")
        XCTAssertEqual(try bindError("tcp.setLinger", [1]), "invalid params: 'linger' is required")
    }

    func testNullForOptionalMeansAbsent() throws {
        let bound = try bind("tcp.send", [1, "x", nil, nil, nil, nil])
        XCTAssertEqual(bound.values.keys, ["handle", "data"])
        let named = try bind("tcp.recv", ["handle": 1, "length": .null, "timeout": .null, "encoding": .null])
        XCTAssertEqual(named.values.keys, ["handle"])
        XCTAssertNil(named["timeout"])
        // A null for a required param is a type error, not "absent".
        XCTAssertEqual(
            try bindError("tcp.send", [nil, "x"]), "invalid params: 'handle' must be an integer in 1..9007199254740991, got null")
        // A null for an optional param whose schema does not allow null is rejected too.
        XCTAssertEqual(
            try bindError("tcp.createClient", ["sockaddr": ["addr": "127.0.0.1", "port": 1], "async": .null]),
            "invalid params: 'async' must be a boolean, got null")
    }

    func testParamsOfTheWrongShape() throws {
        XCTAssertEqual(try bindError("tcp.send", "x"), "invalid params: params must be an array or an object")
        XCTAssertEqual(try bindError("tcp.send", 1), "invalid params: params must be an array or an object")
        XCTAssertEqual(try bindError("tcp.send", .null), "invalid params: params must be an array or an object")
    }

    // MARK: - Validation messages

    func testNestedPathMessages() throws {
        let createClient = "tcp.createClient"
        XCTAssertEqual(
            try bindError(createClient, ["sockaddr": ["addr": "127.0.0.1", "port": 70000]]),
            "invalid params: 'sockaddr.port' must be an integer in 0..65535, got 70000")
        XCTAssertEqual(
            try bindError(createClient, [["addr": "127.0.0.1", "port": -1]]),
            "invalid params: 'sockaddr.port' must be an integer in 0..65535, got -1")
        XCTAssertEqual(
            try bindError(createClient, [["addr": "127.0.0.1", "port": "80"]]),
            "invalid params: 'sockaddr.port' must be an integer in 0..65535, got \"80\"")
        XCTAssertEqual(
            try bindError(createClient, [["addr": "127.0.0.1"]]), "invalid params: 'sockaddr.port' must be present, got null")
        XCTAssertEqual(
            try bindError(createClient, [["addr": "127.0.0.1", "port": 1, "host": "x"]]),
            "invalid params: 'sockaddr.host' must be absent (unknown member), got \"x\"")
        XCTAssertEqual(
            try bindError(createClient, [["domain": 3, "addr": "127.0.0.1", "port": 1]]),
            "invalid params: 'sockaddr.domain' must be one of 2, 10, got 3")
        XCTAssertEqual(
            try bindError(createClient, [["addr": "", "port": 1]]),
            "invalid params: 'sockaddr.addr' must be a string of 1 to 254 characters, got \"\"")
        XCTAssertEqual(
            try bindError(createClient, ["127.0.0.1"]),
            "invalid params: 'sockaddr' must be an object with members domain, addr, port, got \"127.0.0.1\"")
        XCTAssertEqual(
            try bindError("tcp.setLinger", [1, ["onoff": true, "time": 70000]]),
            "invalid params: 'linger.time' must be an integer in 0..65535, got 70000")

        let ok = try bind(createClient, [["domain": .null, "addr": "::1", "port": 65535], 0, true])
        XCTAssertEqual(ok.values.keys, ["sockaddr", "timeout", "async"])
        XCTAssertEqual(ok["async"], true)
    }

    func testDataMessages() throws {
        XCTAssertEqual(
            try bindError("tcp.send", [1, 5]),
            "invalid params: 'data' must be a string or an array of (a string) with 1 to 1024 items, got 5")
        XCTAssertEqual(try bindError("tcp.send", [1, ["a", 2]]), "invalid params: 'data[1]' must be a string, got 2")
        XCTAssertEqual(
            try bindError("tcp.send", [1, []]),
            "invalid params: 'data' must be an array of (a string) with 1 to 1024 items, got []")
        XCTAssertEqual(
            try bindError("tcp.send", [1, "x", "utf16"]),
            "invalid params: 'encoding' must be one of \"utf8\", \"base64\", \"hex\", got \"utf16\"")
        XCTAssertEqual(
            try bindError("tcp.send", [0, "x"]), "invalid params: 'handle' must be an integer in 1..9007199254740991, got 0")
        XCTAssertEqual(
            try bindError("tcp.send", [1.5, "x"]), "invalid params: 'handle' must be an integer in 1..9007199254740991, got 1.5")
        XCTAssertEqual(
            try bindError("tcp.send", [1, "x", "utf8", 0, 0, -1]),
            "invalid params: 'timeout' must be an integer in 0..2147483647, got -1")
        let long = String(repeating: "x", count: 100)
        let message = try bindError("tcp.send", [.string(long), "x"])
        XCTAssertEqual(message, "invalid params: 'handle' must be an integer in 1..9007199254740991, got \"\(String(repeating: "x", count: 36))...")

        // Accepted shapes: a gather array, an integral real for an integer.
        let gather = try bind("tcp.send", [1, ["a", "b"]])
        XCTAssertEqual(gather["data"], ["a", "b"])
        XCTAssertEqual(try TCPSendParams(bind("tcp.send", [2.0, "x"])).handle, 2, "an integral real is an integer handle")
    }

    // MARK: - SchemaValidator.describe

    func testDescribe() throws {
        let validator = SchemaValidator(document: catalog.document)
        func ref(_ name: String) -> JSONValue { ["$ref": .string("#/components/schemas/\(name)")] }
        XCTAssertEqual(validator.describe(ref("Port")), "an integer in 0..65535")
        XCTAssertEqual(validator.describe(ref("Timeout")), "an integer in 0..2147483647")
        XCTAssertEqual(validator.describe(ref("Handle")), "an integer in 1..9007199254740991")
        XCTAssertEqual(validator.describe(ref("Encoding")), "one of \"utf8\", \"base64\", \"hex\"")
        XCTAssertEqual(validator.describe(ref("Domain")), "one of 2, 10")
        XCTAssertEqual(validator.describe(ref("SendData")), "a string or an array of (a string) with 1 to 1024 items")
        XCTAssertEqual(validator.describe(ref("SockAddr")), "an object with members domain, addr, port")
        XCTAssertEqual(validator.describe(ref("Linger")), "an object with members onoff, time")

        XCTAssertEqual(validator.describe(["type": "boolean"]), "a boolean")
        XCTAssertEqual(validator.describe(["type": "integer", "minimum": 0]), "an integer >= 0")
        XCTAssertEqual(validator.describe(["type": "number", "maximum": 1.5]), "a number <= 1.5")
        XCTAssertEqual(validator.describe(["type": ["string", "null"], "minLength": 1, "maxLength": 15]), "a string of 1 to 15 characters")
        XCTAssertEqual(validator.describe(["type": "string", "maxLength": 15]), "a string of at most 15 characters")
        XCTAssertEqual(validator.describe(["type": "string", "minLength": 2]), "a string of at least 2 characters")
        XCTAssertEqual(validator.describe(["type": ["string", "integer"]]), "a string (or integer)")
        XCTAssertEqual(validator.describe(["type": "array", "items": ["type": "integer"]]), "an array of (an integer)")
        XCTAssertEqual(validator.describe(["type": "object"]), "an object")
        XCTAssertEqual(validator.describe([:]), "valid")
        XCTAssertEqual(validator.describe(["enum": ["r", "w", .null]]), "one of \"r\", \"w\"")
        XCTAssertEqual(validator.describe(["anyOf": [["type": "boolean"], ["type": "integer"]]]), "a boolean or an integer")
    }

    func testAcceptsAgreesWithBinding() throws {
        let validator = SchemaValidator(document: catalog.document)
        let port: JSONValue = ["$ref": "#/components/schemas/Port"]
        XCTAssertTrue(validator.accepts(0, port))
        XCTAssertTrue(validator.accepts(65535, port))
        XCTAssertTrue(validator.accepts(80.0, port))
        XCTAssertFalse(validator.accepts(65536, port))
        XCTAssertFalse(validator.accepts(80.5, port))
        XCTAssertFalse(validator.accepts(.null, port))
        let sendData: JSONValue = ["$ref": "#/components/schemas/SendData"]
        XCTAssertTrue(validator.accepts("x", sendData))
        XCTAssertTrue(validator.accepts(.array(Array(repeating: "x", count: 1024)), sendData))
        XCTAssertFalse(validator.accepts(.array(Array(repeating: "x", count: 1025)), sendData))
    }
}
