import JSONRPC
import XCTest

@testable import TCPGateway

/// A fault's checks beyond the schema's (which bounds every value): each type takes only its
/// own attributes and needs its required ones; defaults fill in; the randomness repeats.
final class FaultSpecTests: XCTestCase {
    private func attributes(_ json: JSONObject) throws -> FaultAttributesParam {
        try FaultAttributesParam(paramJSON: .object(json), path: "attributes")
    }

    private func assertRefused(_ kind: FaultTypeParam, _ json: JSONObject, naming field: String,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let given = try attributes(json)
        XCTAssertThrowsError(try FaultSpec(kind: kind, stream: .in, toxicity: 1, attributes: given, name: nil), file: file, line: line) { error in
            let rpc = error as? RPCError
            XCTAssertEqual(rpc?.code, -32602, file: file, line: line)
            XCTAssertTrue(rpc?.message.contains(field) == true, "\(rpc?.message ?? "") lacks \(field)", file: file, line: line)
        }
    }

    func testEachTypeTakesOnlyItsAttributes() throws {
        try assertRefused(.latency, ["latency": 1, "rate": 2], naming: "attributes.rate")
        try assertRefused(.bandwidth, ["rate": 1, "jitter": 2], naming: "attributes.jitter")
        try assertRefused(.slicer, ["averageSize": 1, "bytes": 2], naming: "attributes.bytes")
        try assertRefused(.limitData, ["bytes": 1, "timeout": 2], naming: "attributes.timeout")
        try assertRefused(.timeout, ["timeout": 1, "delay": 2], naming: "attributes.delay")
        try assertRefused(.resetPeer, ["delayUs": 2], naming: "attributes.delayUs")
        try assertRefused(.slowClose, ["delay": 1, "latency": 2], naming: "attributes.latency")
        try assertRefused(.stall, ["sizeVariation": 1], naming: "attributes.sizeVariation")
    }

    func testRequiredAttributes() throws {
        try assertRefused(.latency, ["jitter": 1], naming: "attributes.latency")
        try assertRefused(.bandwidth, [:], naming: "attributes.rate")
        try assertRefused(.slicer, ["delayUs": 1], naming: "attributes.averageSize")
        try assertRefused(.limitData, [:], naming: "attributes.bytes")
        try assertRefused(.timeout, [:], naming: "attributes.timeout")
        try assertRefused(.slowClose, [:], naming: "attributes.delay")
        XCTAssertNoThrow(try FaultSpec(kind: .resetPeer, stream: .out, toxicity: 1, attributes: nil, name: nil))
        XCTAssertNoThrow(try FaultSpec(kind: .stall, stream: .in, toxicity: 0, attributes: nil, name: nil))
    }

    func testToxicityRange() {
        for bad in [-0.01, 1.01, Double.nan] {
            XCTAssertThrowsError(try FaultSpec(kind: .stall, stream: .in, toxicity: bad, attributes: nil, name: nil)) {
                XCTAssertTrue(($0 as? RPCError)?.message.contains("toxicity") == true)
            }
        }
    }

    func testDefaultsAndListing() throws {
        let spec = try FaultSpec(kind: .slicer, stream: .out, toxicity: 0.5, attributes: try attributes(["averageSize": 8]), name: nil)
        XCTAssertEqual(spec.name, "slicer_out")
        XCTAssertEqual(
            spec.json(active: true),
            ["name": "slicer_out", "type": "slicer", "stream": "out", "toxicity": .double(0.5),
             "attributes": ["averageSize": 8, "sizeVariation": 0, "delayUs": 0], "active": true])
    }

    func testCreateClientListNamesTheEntryAndRefusesDuplicates() throws {
        let stall = try FaultSpecParam(paramJSON: ["type": "stall"], path: "faults[0]")
        let bad = try FaultSpecParam(paramJSON: ["type": "latency"], path: "faults[1]")
        XCTAssertThrowsError(try FaultSpec.list([stall, bad])) {
            XCTAssertTrue(($0 as? RPCError)?.message.contains("faults[1].attributes.latency") == true)
        }
        XCTAssertThrowsError(try FaultSpec.list([stall, stall])) {
            XCTAssertTrue(($0 as? RPCError)?.message.contains("faults[1].name") == true)
        }
        XCTAssertEqual(try FaultSpec.list(nil), [])
    }

    func testRandomRepeatsWithTheSeedAndDiffersAcrossStreams() {
        var a = FaultRandom(gatewaySeed: 42, handle: 7, stream: "in", name: "slicer_in")
        var b = FaultRandom(gatewaySeed: 42, handle: 7, stream: "in", name: "slicer_in")
        var otherHandle = FaultRandom(gatewaySeed: 42, handle: 8, stream: "in", name: "slicer_in")
        var otherSeed = FaultRandom(gatewaySeed: 43, handle: 7, stream: "in", name: "slicer_in")
        let first = (0..<32).map { _ in a.next() }
        XCTAssertEqual(first, (0..<32).map { _ in b.next() })
        XCTAssertNotEqual(first, (0..<32).map { _ in otherHandle.next() })
        XCTAssertNotEqual(first, (0..<32).map { _ in otherSeed.next() })
        var spread = FaultRandom(seed: 1)
        let draws = (0..<2000).map { _ in spread.spread(3) }
        XCTAssertEqual(Set(draws), Set(-3...3))
        var unit = FaultRandom(seed: 2)
        let units = (0..<2000).map { _ in unit.unit() }
        XCTAssertTrue(units.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(units.reduce(0, +) / 2000, 0.5, accuracy: 0.05)
    }
}
