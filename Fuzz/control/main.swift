// Fuzz target: the control-request parser (WarmstartRuntime ControlServer.answer: one JSON request
// line in, one JSON response line out). Input: request lines. Every answer must itself be a JSON
// object with a boolean "ok" (a client parses it), whatever the request held.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
@testable import WarmstartRuntime

struct Answer: Decodable { var ok: Bool; var error: String?; var cmd: String? }

let server: ControlServer = {
    let s = ControlServer(path: "/nonexistent/warmstart-fuzz.sock", listeningFD: -1, logger: Logger(label: "fuzz"))
    // Handlers shaped like the runtime's: one that echoes its arguments, one that fails.
    s.register("stats") { r in try ControlServer.encode(r.args ?? [:]) }
    s.register("fail") { _ in throw ControlFuzzError.refused }
    return s
}()
enum ControlFuzzError: Error { case refused }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: n))
    for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).prefix(16) {
        let reply = server.answer(Array(line))
        guard let a = try? JSONDecoder().decode(Answer.self, from: Data(reply)) else {
            fatalError("answer is not a JSON object with \"ok\": \(String(decoding: reply, as: UTF8.self).debugDescription)")
        }
        if !a.ok && a.error == nil { fatalError("a refusal without an error: \(String(decoding: reply, as: UTF8.self))") }
    }
    return 0
}
