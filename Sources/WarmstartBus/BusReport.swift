/// The bus's part of the boot report and `warmstart stats`, without Foundation.
public enum BusReport {
    /// DPDK's per-device figures the report compares against (ms).
    public static let dpdkProbeMsPerDevice: ClosedRange<Double> = 240...400
    public static let dpdkStartMsPerDevice: Double = 440

    /// `[{"name","kind","state","probe_ms","start_ms","ready_at_ms",...}]`; absent times are null.
    public static func devicesJSON(_ records: [DeviceRecord]) -> String {
        "[" + records.map { r in
            var fields: [String] = [
                "\"name\":\(quote(r.name))",
                "\"kind\":\(quote(r.kind))",
                "\"path\":\(quote(r.path))",
                "\"state\":\(quote(r.state.rawValue))",
                "\"probe_ms\":\(number(r.probeMs))",
                "\"start_ms\":\(number(r.startMs))",
                "\"ready_at_ms\":\(number(r.readyAtMs))",
                "\"first_packet_ms\":\(number(r.firstPacketMs))",
                "\"reconnects\":\(r.reconnects)",
            ]
            fields.append("\"reason\":" + (r.reason.map(quote) ?? "null"))
            return "{" + fields.joined(separator: ",") + "}"
        }.joined(separator: ",") + "]"
    }

    /// Phase figures: the bus probes in parallel, so its phase costs the slowest device, where
    /// DPDK pays the sum over devices. Returns (ours, DPDK's range) for `bus-probe` and
    /// `device-start`; devices that never connected are left out of ours.
    public static func phases(_ records: [DeviceRecord]) -> (probeMs: Double, startMs: Double,
                                                            dpdkProbeMs: ClosedRange<Double>, dpdkStartMs: Double) {
        let n = Double(records.count)
        return (records.compactMap(\.probeMs).max() ?? 0, records.compactMap(\.startMs).max() ?? 0,
                (dpdkProbeMsPerDevice.lowerBound * n)...(dpdkProbeMsPerDevice.upperBound * n), dpdkStartMsPerDevice * n)
    }

    /// One line per device for humans.
    public static func table(_ records: [DeviceRecord]) -> String {
        records.map { r in
            let t = { (v: Double?) in v.map { fixed($0) + " ms" } ?? "-" }
            var line = "\(r.name) [\(r.kind)] \(r.state.rawValue): probe \(t(r.probeMs)), start \(t(r.startMs)), ready at \(t(r.readyAtMs))"
            if let reason = r.reason { line += " — \(reason)" }
            return line
        }.joined(separator: "\n")
    }

    static func number(_ v: Double?) -> String { v.map(fixed) ?? "null" }

    /// Three decimals, no Foundation formatter.
    static func fixed(_ v: Double) -> String {
        let scaled = (v * 1000).rounded()
        guard scaled.isFinite, abs(scaled) < 1e15 else { return "0" }
        let i = Int64(scaled)
        let sign = i < 0 ? "-" : ""
        let a = abs(i)
        let frac = String(a % 1000)
        return "\(sign)\(a / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)"
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
