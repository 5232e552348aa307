// Fuzz target: the port-spec and config-file parser (WarmstartBus/PortSpec.swift, PortConfig.swift).
// Input: text. Each line is parsed as a `--port` spec; the whole input as a config file; the
// derived values (name, socket mode, listens, MAC options) are read so their code runs too.
import WarmstartBus

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: n), as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: true).prefix(64) {
        if let spec = try? PortSpec.parse(String(line)) {
            _ = spec.name
            _ = spec.socketMode
            _ = spec.listens
            _ = spec.description
            if let mac = spec.option("mac") {
                _ = PortSpec.macProblem(mac)
                if let m = PortSpec.parseMAC(mac) { _ = PortSpec.formatMAC(m) }
            }
            // Round trip: what a spec prints must parse back to the same spec.
            guard let back = try? PortSpec.parse(spec.description), back == spec else {
                fatalError("port spec does not round-trip: \(String(line).debugDescription) → \(spec.description.debugDescription)")
            }
        }
    }
    _ = try? PortSpec.parseConfig(text, source: "fuzz")
    return 0
}
