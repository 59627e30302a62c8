import XCTest
@testable import JSONRPC

/// Small helpers shared by the JSONRPC test cases.
enum TestSupport {
    /// Parses `text`, failing the calling test (and returning nil) on a parse error.
    static func parse(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> JSONValue? {
        do {
            return try JanssonCodec.parse(text)
        } catch {
            XCTFail("unexpected parse error for \(text.debugDescription): \(error)", file: file, line: line)
            return nil
        }
    }

    /// The parse error for `bytes`, failing the calling test when the bytes parse.
    static func parseError(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        do {
            let value = try JanssonCodec.parse(bytes)
            XCTFail("expected a parse error, got \(value)", file: file, line: line)
            return nil
        } catch let error as JSONParseError {
            return error
        } catch {
            XCTFail("expected JSONParseError, got \(error)", file: file, line: line)
            return nil
        }
    }

    static func parseError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        parseError(Array(text.utf8), file: file, line: line)
    }

    /// Decodes one line the way the gateway does: bytes in, `RPCMessage` out.
    static func decode(_ text: String) -> RPCMessage {
        Array(text.utf8).withUnsafeBytes { RPCMessage.decode($0) }
    }

    /// Serializes to a String (compact), for exact-text assertions.
    static func text(_ value: JSONValue) -> String {
        String(decoding: JanssonCodec.serialize(value), as: UTF8.self)
    }

    /// Member names of an object value, in order; nil for non-objects.
    static func keys(_ value: JSONValue?) -> [String]? {
        if case .object(let object)? = value { return object.keys }
        return nil
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs as a contiguous run of bytes.
    func containsSequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        for start in 0...(count - needle.count) where self[start..<(start + needle.count)].elementsEqual(needle) {
            return true
        }
        return false
    }
}
