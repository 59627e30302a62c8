// Measures the JSON codec on the data path: a tcp.send request and a tcp.recv answer carrying
// 64 KiB of base64, with long strings spliced around jansson and (baseline, same run) without.
// Prints MB/s of JSON text and the speed-up ratio. Bounded: a fixed number of rounds.
import Foundation
import JSONRPC

func measure(_ label: String, bytes: Int, rounds: Int, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0..<3 { try body() }  // warm up
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<rounds { try body() }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let rate = Double(bytes * rounds) / seconds / 1e6
    let padded = label.padding(toLength: 44, withPad: " ", startingAt: 0)
    print(padded + String(format: " %9.1f MB/s  %8.2f µs/op", rate, seconds / Double(rounds) * 1e6))
    return rate
}

let payloadSize = 64 * 1024
var generator = SystemRandomNumberGenerator()
let payload = (0..<payloadSize).map { _ in UInt8.random(in: 0...255, using: &generator) }
let base64 = Data(payload).base64EncodedString()
let rounds = CommandLine.arguments.contains("--quick") ? 200 : 2000

let request = Array(#"{"jsonrpc":"2.0","id":7,"method":"tcp.send","params":{"handle":3,"data":"\#(base64)","encoding":"base64"}}"#.utf8)
let answer: JSONValue = [
    "jsonrpc": "2.0", "id": 7, "result": ["data": .string(base64), "encoding": "base64", "eof": false],
]
let small = Array(#"{"jsonrpc":"2.0","id":1,"method":"tcp.pending","params":{"handle":3}}"#.utf8)

print("codec bench: 64 KiB payload (\(request.count) bytes of JSON), \(rounds) rounds")
let parseFast = try measure("parse tcp.send, spliced", bytes: request.count, rounds: rounds) {
    _ = try request.withUnsafeBytes { try JanssonCodec.parse($0) }
}
let parseBase = try measure("parse tcp.send, all through jansson", bytes: request.count, rounds: rounds) {
    _ = try request.withUnsafeBytes { try JanssonCodec.parse($0, splicing: false) }
}
let printed = JanssonCodec.serialize(answer)
let dumpFast = measure("print tcp.recv answer, spliced", bytes: printed.count, rounds: rounds) {
    _ = JanssonCodec.serialize(answer)
}
let dumpBase = measure("print tcp.recv answer, all through jansson", bytes: printed.count, rounds: rounds) {
    _ = JanssonCodec.serialize(answer, splicing: false)
}
_ = try measure("parse a small request (tcp.pending)", bytes: small.count, rounds: rounds * 10) {
    _ = try small.withUnsafeBytes { try JanssonCodec.parse($0) }
}
// Most answers are small: the splice's bookkeeping must cost them nothing.
let smallAnswer: JSONValue = ["jsonrpc": "2.0", "id": 8, "result": ["data": "+PONG\r\n", "encoding": "utf8", "eof": false]]
_ = measure("print a small answer (tcp.recv, utf8)", bytes: JanssonCodec.serialize(smallAnswer).count, rounds: rounds * 10) {
    _ = JanssonCodec.serialize(smallAnswer)
}
precondition(JanssonCodec.serialize(answer) == JanssonCodec.serialize(answer, splicing: false), "spliced output differs")
precondition(try! request.withUnsafeBytes { try JanssonCodec.parse($0) } == (try! request.withUnsafeBytes { try JanssonCodec.parse($0, splicing: false) }), "spliced parse differs")
print(String(format: "  ratio spliced/jansson: parse %.1fx, print %.1fx", parseFast / parseBase, dumpFast / dumpBase))
