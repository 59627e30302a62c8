import JSONRPC
import XCTest

@testable import TCPGateway

/// The typed params generated from the schema (Generated/MethodParams.swift): decoding from bound
/// params, defaults, by position and by name, absent and null, and the descriptor flags.
final class TypedParamsTests: XCTestCase {
    typealias S = GatewayTestSupport

    private var catalog: MethodCatalog!

    override func setUpWithError() throws {
        catalog = try MethodCatalog(json: OpenRPCDocument.json)
    }

    /// Binds and validates like the dispatcher, then decodes as `P` (the method is `P.method`).
    private func decode<P: MethodParams>(
        _ type: P.Type, _ raw: JSONValue?, file: StaticString = #filePath, line: UInt = #line
    ) throws -> P {
        let method = try XCTUnwrap(catalog.methods[P.method], "no method \(P.method)", file: file, line: line)
        return try P(catalog.bind(method, raw))
    }

    private static let loopback: JSONValue = ["addr": "127.0.0.1", "port": 8080]

    // MARK: - Every method has its type

    func testOneParamsTypePerRequestMethodInSchemaOrder() {
        let requests = catalog.orderedNames.filter { catalog.methods[$0]?.isEvent == false }
        XCTAssertEqual(MethodParamsTypes.all.map { $0.method }, requests)
    }

    func testOperationsAreRegisteredUnderTheTypesMethods() {
        let table = Dispatcher.operations()
        XCTAssertEqual(Set(table.keys), Set(MethodParamsTypes.all.map { $0.method }))
    }

    func testNamesFollowTheMethods() {
        XCTAssertEqual(TCPSendParams.method, "tcp.send")
        XCTAssertEqual(TCPSetIPv6OnlyParams.method, "tcp.setIPv6Only")
        XCTAssertEqual(GatewayInfoParams.method, "gateway.info")
        XCTAssertEqual(RPCDiscoverParams.method, "rpc.discover")
    }

    // MARK: - Descriptor flags

    func testDescriptorFlagsInTheCatalog() throws {
        XCTAssertEqual(catalog.methods["tcp.createByFd"]?.descriptor, .request)
        XCTAssertEqual(catalog.methods["tcp.flyAway"]?.descriptor, .answer)
        let flagged = catalog.orderedNames.filter { catalog.methods[$0]?.descriptor != nil }
        XCTAssertEqual(flagged, ["tcp.createByFd", "tcp.flyAway"], "no other method passes descriptors")
    }

    func testDescriptorFlagsOfTheGeneratedTypesMatchTheCatalog() {
        XCTAssertEqual(TCPCreateByFdParams.descriptor, .request)
        XCTAssertEqual(TCPFlyAwayParams.descriptor, .answer)
        XCTAssertNil(TCPSendParams.descriptor)
        for type in MethodParamsTypes.all {
            XCTAssertEqual(type.descriptor, catalog.methods[type.method]?.descriptor, type.method)
        }
    }

    func testAnUnknownDescriptorFlagStopsTheCatalog() throws {
        let json = OpenRPCDocument.json.replacingOccurrences(
            of: #""x-descriptor": "answer""#, with: #""x-descriptor": "both""#)
        XCTAssertNotEqual(json, OpenRPCDocument.json)
        let error = S.rpcError { _ = try MethodCatalog(json: json) }
        XCTAssertEqual(error?.code, -32603)
        XCTAssertEqual(error?.message, #"internal error: schema: tcp.flyAway has an unknown x-descriptor "both""#)
    }

    // MARK: - Defaults

    func testDefaultsApply() throws {
        XCTAssertEqual(
            try decode(TCPSendParams.self, [7, "hi"]),
            TCPSendParams(handle: 7, data: .string("hi"), encoding: .utf8, offset: 0, length: nil, timeout: nil))
        XCTAssertEqual(
            try decode(TCPRecvParams.self, [7]), TCPRecvParams(handle: 7, length: 65536, timeout: nil, encoding: .base64))
        XCTAssertEqual(try decode(TCPShutdownParams.self, [7]).how, .rw)
        XCTAssertEqual(try decode(TCPSetKeepAliveParams.self, [7, true, 1000]).count, 3)
        XCTAssertEqual(try decode(TCPCreateClientParams.self, [Self.loopback]).async, false)
        XCTAssertEqual(try decode(TCPAcceptParams.self, [1]).async, false)
        XCTAssertEqual(
            try decode(TCPCreateServerParams.self, [Self.loopback]),
            TCPCreateServerParams(
                sockaddr: SockAddrParam(domain: nil, addr: "127.0.0.1", port: 8080), backlog: 5, dev: nil, ipv6Only: nil))
    }

    func testGivenValuesOverrideDefaults() throws {
        XCTAssertEqual(
            try decode(TCPSendParams.self, [7, "6869", "hex", 1, 1, 250]),
            TCPSendParams(handle: 7, data: .string("6869"), encoding: .hex, offset: 1, length: 1, timeout: 250))
        XCTAssertEqual(try decode(TCPShutdownParams.self, [7, "w"]).how, .w)
        XCTAssertEqual(try decode(TCPCreateServerParams.self, [Self.loopback, 0]).backlog, 0)
        XCTAssertEqual(try decode(TCPCreateClientParams.self, [Self.loopback, 0, true]).async, true)
    }

    // MARK: - By position and by name

    func testByPositionAndByNameGiveTheSameStruct() throws {
        XCTAssertEqual(
            try decode(TCPSendParams.self, [3, ["a", "b"], "base64", 0, 2, 10]),
            try decode(
                TCPSendParams.self,
                ["timeout": 10, "length": 2, "offset": 0, "encoding": "base64", "data": ["a", "b"], "handle": 3]))
        XCTAssertEqual(
            try decode(TCPRecvParams.self, [3, 100, 0, "hex"]),
            try decode(TCPRecvParams.self, ["encoding": "hex", "timeout": 0, "handle": 3, "length": 100]))
        XCTAssertEqual(
            try decode(TCPCreateClientParams.self, [["domain": 10, "addr": "::1", "port": 1], 500]),
            try decode(TCPCreateClientParams.self, ["timeout": 500, "sockaddr": ["port": 1, "addr": "::1", "domain": 10]]))
        XCTAssertEqual(
            try decode(TCPSetLingerParams.self, [4, ["onoff": true, "time": 5]]),
            try decode(TCPSetLingerParams.self, ["linger": ["time": 5, "onoff": true], "handle": 4]))
        XCTAssertEqual(
            try decode(TCPSetKeepAliveParams.self, [4, true, 1000, 500, 9]),
            try decode(TCPSetKeepAliveParams.self, ["count": 9, "interval": 500, "idle": 1000, "enable": true, "handle": 4]))
        XCTAssertEqual(try decode(TCPMportsParams.self, [2, 3]), TCPMportsParams(handle: 2, mports: 3))
        XCTAssertEqual(try decode(TCPMportsParams.self, ["mports": 3, "handle": 2]), TCPMportsParams(handle: 2, mports: 3))
    }

    func testByNameOnlyPlaceholdersHaveNoProperty() throws {
        let sendto = try decode(TCPSendtoParams.self, ["handle": 4, "data": "hi", "remoteAddr": Self.loopback])
        XCTAssertEqual(sendto, TCPSendtoParams(handle: 4, data: .string("hi"), encoding: .utf8, offset: 0, length: nil, timeout: nil))
        XCTAssertEqual(try decode(TCPCreateByFdParams.self, ["sockFd": 9]), TCPCreateByFdParams())
        XCTAssertEqual(try decode(TCPAcceptParams.self, ["handle": 1, "remoteAddr": "x"]).handle, 1)
    }

    func testMethodsWithoutParams() throws {
        for raw: JSONValue? in [nil, [], [:]] {
            XCTAssertEqual(try decode(TCPListParams.self, raw), TCPListParams())
            XCTAssertEqual(try decode(GatewayInfoParams.self, raw), GatewayInfoParams())
        }
    }

    // MARK: - Absent and null

    func testOptionalAbsentAndNullAreBothNil() throws {
        let absent = try decode(TCPSendParams.self, ["handle": 1, "data": "x"])
        let null = try decode(TCPSendParams.self, ["handle": 1, "data": "x", "length": .null, "timeout": .null])
        XCTAssertNil(absent.timeout)
        XCTAssertNil(absent.length)
        XCTAssertEqual(absent, null)
        XCTAssertEqual(try decode(TCPSendParams.self, [1, "x", nil, nil, nil, nil]), absent, "nulls by position too")
        // A null for a param with a default gives the default.
        XCTAssertEqual(try decode(TCPRecvParams.self, ["handle": 1, "length": .null, "encoding": .null]).length, 65536)
        XCTAssertEqual(try decode(TCPRecvParams.self, [1, nil, nil, nil]).encoding, .base64)
    }

    func testOptionalGivenValuesAreKept() throws {
        XCTAssertEqual(try decode(TCPSendParams.self, [1, "x", nil, nil, 0, 0]).timeout, 0, "0 is not absent")
        XCTAssertEqual(try decode(TCPBindToDeviceParams.self, [1, ""]).ifname, "", "an empty name is given")
        XCTAssertNil(try decode(TCPBindToDeviceParams.self, [1]).ifname)
        XCTAssertNil(try decode(TCPBindToDeviceParams.self, [1, nil]).ifname)
        XCTAssertEqual(try decode(TCPCreateServerParams.self, ["sockaddr": Self.loopback, "ipv6Only": false]).ipv6Only, false)
        XCTAssertNil(try decode(TCPCreateServerParams.self, ["sockaddr": Self.loopback]).ipv6Only)
        XCTAssertEqual(try decode(TCPSetKeepAliveParams.self, [1, false]).idle, nil)
    }

    func testNestedOptionalMemberAbsentOrNull() throws {
        let absent = try decode(TCPCreateClientParams.self, [["addr": "::1", "port": 1]]).sockaddr
        let null = try decode(TCPCreateClientParams.self, [["domain": .null, "addr": "::1", "port": 1]]).sockaddr
        XCTAssertEqual(absent, SockAddrParam(domain: nil, addr: "::1", port: 1))
        XCTAssertEqual(null, absent)
        XCTAssertEqual(try decode(TCPCreateClientParams.self, [["domain": 10, "addr": "::1", "port": 1]]).sockaddr.domain, 10)
    }

    // MARK: - Shapes

    func testDataIsAStringOrAnArrayOfStrings() throws {
        XCTAssertEqual(try decode(TCPSendParams.self, [1, "abc"]).data, .string("abc"))
        XCTAssertEqual(try decode(TCPSendParams.self, [1, ["a", "", "c"]]).data, .array(["a", "", "c"]))
    }

    func testIntegralRealsAreIntegers() throws {
        XCTAssertEqual(try decode(TCPCloseParams.self, [7.0]).handle, 7)
        XCTAssertEqual(try decode(TCPSetTTLParams.self, [1, 64.0]).timeToLive, 64)
        XCTAssertEqual(try decode(TCPCreateClientParams.self, [["domain": 2.0, "addr": "127.0.0.1", "port": 80.0]]).sockaddr,
                       SockAddrParam(domain: 2, addr: "127.0.0.1", port: 80))
        XCTAssertEqual(try decode(TCPCloseParams.self, [9_007_199_254_740_991]).handle, 9_007_199_254_740_991, "Int64 handles")
    }

    func testEnumsCoverTheSchemasValues() {
        XCTAssertEqual(EncodingParam.allCases.map(\.rawValue), ["utf8", "base64", "hex"])
        XCTAssertEqual(HowParam.allCases.map(\.rawValue), ["r", "w", "rw"])
        XCTAssertEqual(EncodingParam.allCases.map { DataEncoding($0).rawValue }, ["utf8", "base64", "hex"])
    }

    // MARK: - Mismatches are internal errors, never traps

    func testMismatchesAreInternalErrors() {
        func internalError<P: MethodParams>(_ type: P.Type, _ values: JSONObject) -> String? {
            let error = S.rpcError { _ = try P(Params(values: values)) }
            XCTAssertEqual(error?.code, -32603, "\(P.method) \(values)")
            return error?.message
        }
        XCTAssertEqual(internalError(TCPCloseParams.self, [:]), "internal error: param 'handle' is missing after validation")
        XCTAssertEqual(
            internalError(TCPCloseParams.self, ["handle": "7"]),
            "internal error: param 'handle' is not an integer after validation (got string)")
        XCTAssertEqual(
            internalError(TCPCloseParams.self, ["handle": 1.5]),
            "internal error: param 'handle' is not an integer after validation (got number)")
        XCTAssertEqual(
            internalError(TCPCloseParams.self, ["handle": 1e300]),
            "internal error: param 'handle' is not an integer after validation (got number)", "out of range: no trap")
        XCTAssertEqual(
            internalError(TCPShutdownParams.self, ["handle": 1, "how": "x"]),
            "internal error: param 'how' is not one of the enum's strings after validation (got string)")
        XCTAssertEqual(
            internalError(TCPSendParams.self, ["handle": 1, "data": 5]),
            "internal error: param 'data' is not a string or an array of strings after validation (got integer)")
        XCTAssertEqual(
            internalError(TCPSendParams.self, ["handle": 1, "data": ["a", 2]]),
            "internal error: param 'data[1]' is not a string after validation (got integer)")
        XCTAssertEqual(
            internalError(TCPSetLingerParams.self, ["handle": 1, "linger": ["onoff": true]]),
            "internal error: param 'linger.time' is missing after validation")
        XCTAssertEqual(
            internalError(TCPSetLingerParams.self, ["handle": 1, "linger": "on"]),
            "internal error: param 'linger' is not an object after validation (got string)")
        XCTAssertEqual(
            internalError(TCPSetNoDelayParams.self, ["handle": 1, "enable": 1]),
            "internal error: param 'enable' is not a boolean after validation (got integer)")
    }
}
