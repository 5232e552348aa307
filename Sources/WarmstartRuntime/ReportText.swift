/// The boot timing report as an aligned text table, printed on every boot.
extension BootReport {
    public func renderText() -> String {
        var rows: [[String]] = [["phase", "work", "measured", "budget (DPDK 2017)", "times faster"]]
        for p in phases {
            let budget: String
            if let lo = p.budgetMs {
                budget = p.budgetHighMs.map { $0 != lo ? "\(ms(lo))–\(ms($0))" : ms(lo) } ?? ms(lo)
            } else {
                budget = "—"
            }
            let faster = p.speedup.map { $0 >= 10 ? "\(Int($0.rounded()))×" : "\(fixed($0, 1))×" } ?? "—"
            rows.append([p.name, p.work, ms(p.ms), budget, faster])
        }
        rows.append(["total", "", ms(totalMs), "", ""])
        var widths = [Int](repeating: 0, count: rows[0].count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var out = "Warmstart boot timing report\n"
        for (n, r) in rows.enumerated() {
            var line = ""
            for (i, c) in r.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - c.count)
                line += i == 0 || i == 1 ? c + pad : pad + c
                if i < r.count - 1 { line += "  " }
            }
            out += line + "\n"
            if n == 0 || n == rows.count - 2 {
                out += String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)) + "\n"
            }
        }
        out += "memory: \(memory.backing), \(memory.pageSize) pages, \(memory.bytes) bytes"
        if let note = memory.note { out += " (\(note))" }
        out += "\nsnapshot: \(snapshot.outcome)"
        if let p = snapshot.path { out += " \(p)" }
        if let r = snapshot.reason { out += " — \(r)" }
        out += "\n"
        if let io = ioBackend { out += "io: \(io)\n" }
        if processStartCoarse { out += "process-start read from /proc in 10 ms ticks (set WARMSTART_EXEC_EPOCH=$EPOCHREALTIME for a precise figure)\n" }
        if !devices.isEmpty {
            out += "devices:\n"
            for d in devices {
                out += "  \(d.name) (\(d.kind)): \(d.state)"
                if let p = d.probeMs { out += ", probe \(ms(p))" }
                if let s = d.startMs { out += ", start \(ms(s))" }
                if let r = d.readyAtMs { out += ", ready at \(ms(r))" }
                if let f = d.firstPacketAtMs { out += ", first packet at \(ms(f))" }
                if let r = d.reason { out += " — \(r)" }
                out += "\n"
            }
        }
        if let h = handoff {
            out += "handoff: \(h.outcome)"
            if let b = h.blackoutMs { out += ", blackout \(ms(b))" }
            if let n = h.notPollingMs { out += ", no thread polling \(ms(n))" }
            if let n = h.blackoutNote { out += ", blackout unknown: \(n)" }
            if !h.blackoutParts.isEmpty {
                out += " (" + h.blackoutParts.map { "\($0.name) \(ms($0.ms))" }.joined(separator: ", ") + ")"
            }
            out += "\n"
            for s in h.steps { out += "  \(s.name): \(ms(s.ms))\n" }
        }
        return out
    }
}

/// "0.412 ms", "12.3 ms", "1520 ms".
func ms(_ v: Double) -> String {
    if v < 1 { return fixed(v, 3) + " ms" }
    if v < 100 { return fixed(v, 1) + " ms" }
    return "\(Int(v.rounded())) ms"
}

func fixed(_ v: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((v * scale).rounded())
    let whole = n / Int(scale), frac = abs(n % Int(scale))
    guard digits > 0 else { return "\(whole)" }
    let f = String(frac)
    return (n < 0 && whole == 0 ? "-" : "") + "\(whole)." + String(repeating: "0", count: digits - f.count) + f
}
