import JSONRPC
import XCTest

@testable import TCPGateway

/// The compiled checks agree with the interpreting validator on every param of the schema.
final class SchemaCheckTests: XCTestCase {
    func testCompiledChecksAgreeWithTheValidator() throws {
        let catalog = try MethodCatalog(json: OpenRPCDocument.json)
        let validator = SchemaValidator(document: catalog.document)
        let scalars: [JSONValue] = [
            .null, true, false, 0, 1, -1, 2, 10, 255, 256, 65535, 65536, 1_000_000, .int(Int64.max), .int(Int64.min),
            0.0, 1.0, 1.5, -2.0, 9.5e15, 1e300, "", "a", "r", "w", "rw", "utf8", "hex", "base64", "127.0.0.1", "::1",
            "aGk=", .string(String(repeating: "x", count: 300)), .string(String(repeating: "\u{e9}", count: 20)),
        ]
        var values = scalars
        values += [[], [1], ["a", "b"], [1, "a"], [true], .array(Array(repeating: "x", count: 70))]
        values += [[:], ["addr": "127.0.0.1", "port": 80], ["domain": 2, "addr": "::1", "port": 65535],
                   ["domain": .null, "addr": "1.2.3.4", "port": 0], ["addr": "1.2.3.4"], ["port": 1],
                   ["addr": "1.2.3.4", "port": 1, "extra": 1], ["onoff": true, "time": 5], ["onoff": 1, "time": 5],
                   ["onoff": false, "time": -1], ["addr": 5, "port": "x"]]
        var checked = 0
        for name in catalog.orderedNames {
            guard let method = catalog.methods[name] else { continue }
            for param in method.params {
                for value in values {
                    XCTAssertEqual(
                        param.check.accepts(value), validator.accepts(value, param.schema),
                        "\(name) '\(param.name)' with \(JanssonCodec.serializeToString(value))")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 1000)
    }
}
