// Differential: the long-string splice must be invisible. Parsing with and without it gives the
// same value or the same error; printing with and without it gives the same bytes; what is
// printed parses back to the value and prints the same again.
import FuzzSupport
import JSONRPC

private func parse(_ bytes: [UInt8], splicing: Bool) -> Result<JSONValue, JSONParseError> {
    bytes.withUnsafeBytes { raw in
        do { return .success(try JanssonCodec.parse(raw, splicing: splicing)) } catch let error as JSONParseError {
            return .failure(error)
        } catch {
            FuzzInput.fail("parse threw \(error)")
        }
    }
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes.prefix(400), as: UTF8.self) }

/// Whether any key holds a NUL: jansson prints those but refuses to read them back.
private func hasNULKey(_ value: JSONValue) -> Bool {
    switch value {
    case .array(let items): return items.contains(where: hasNULKey)
    case .object(let object): return object.members.contains { $0.key.utf8.contains(0) || hasNULKey($0.value) }
    default: return false
    }
}

private func checkPrint(_ value: JSONValue) {
    let spliced = JanssonCodec.serialize(value)
    let plain = JanssonCodec.serialize(value, splicing: false)
    guard spliced == plain else { FuzzInput.fail("spliced print differs:\n\(text(spliced))\n\(text(plain))") }
    guard !spliced.contains(0x0A) else { FuzzInput.fail("a raw newline in \(text(spliced))") }
    guard !hasNULKey(value) else { return }
    switch parse(spliced, splicing: true) {
    case .success(let back):
        guard back == value else { FuzzInput.fail("print does not read back: \(text(spliced))") }
        guard JanssonCodec.serialize(back) == spliced else { FuzzInput.fail("second print differs: \(text(spliced))") }
    case .failure(let error):
        FuzzInput.fail("printed text does not parse (\(error)): \(text(spliced))")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzCodec(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = FuzzInput.expand(UnsafeRawBufferPointer(start: data, count: size))
    let long = JSONValue.string(String(decoding: FuzzInput.longRun + [0x5A], as: UTF8.self))
    switch (parse(bytes, splicing: true), parse(bytes, splicing: false)) {
    case (.success(let fast), .success(let slow)):
        guard fast == slow else { FuzzInput.fail("spliced parse differs for \(text(bytes))") }
        // The value, and the value among long strings (placeholders numbered around it).
        checkPrint(fast)
        checkPrint([.string(String(decoding: FuzzInput.longRun, as: UTF8.self) + "12"), fast, ["id": long]])
    case (.failure(let fast), .failure(let slow)):
        guard fast == slow else { FuzzInput.fail("spliced parse error differs: \(fast) vs \(slow)") }
    case (.success, .failure(let error)), (.failure(let error), .success):
        FuzzInput.fail("only one parse failed (\(error)) for \(text(bytes))")
    }
    // The bytes as text a peer sent (tcp.recv utf8), as a key and beside long strings.
    let peer = JSONValue.string(String(decoding: bytes, as: UTF8.self))
    checkPrint([peer, .object([String(decoding: bytes.prefix(64), as: UTF8.self): long])])
    return 0
}
