/// The boot timing report drawn as a timeline: one bar per phase, one bar per device (probe, then
/// start), on a common axis from exec.
extension BootReport {
    public func renderSVG() -> String {
        let end = max(totalMs, devices.compactMap { $0.readyAtMs }.max() ?? 0, 0.001)
        let left = 150.0, width = 700.0, rowH = 22.0
        let rows = phases.count + devices.count
        let height = 60 + Double(rows) * rowH + 30
        func x(_ t: Double) -> Double { left + width * t / end }
        func esc(_ s: String) -> String {
            s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;")
        }
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(left + width + 120))" height="\(Int(height))" font-family="monospace" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="14">Warmstart boot timeline — total \(esc(ms(totalMs))) (snapshot: \(esc(snapshot.outcome)))</text>

        """
        var y = 40.0
        for p in phases {
            let w = max(1, x(p.startMs + p.ms) - x(p.startMs))
            s += "<text x=\"10\" y=\"\(fixed(y + 14, 1))\">\(esc(p.name))</text>"
            s += "<rect x=\"\(fixed(x(p.startMs), 2))\" y=\"\(fixed(y + 3, 1))\" width=\"\(fixed(w, 2))\" height=\"14\" fill=\"#4a7ebb\"><title>\(esc(p.name)): \(esc(ms(p.ms)))</title></rect>"
            s += "<text x=\"\(fixed(x(p.startMs) + w + 4, 2))\" y=\"\(fixed(y + 14, 1))\">\(esc(ms(p.ms)))</text>\n"
            y += rowH
        }
        for d in devices {
            s += "<text x=\"10\" y=\"\(fixed(y + 14, 1))\">\(esc(d.name))</text>"
            if let p0 = d.probeStartAtMs, let pm = d.probeMs {
                s += "<rect x=\"\(fixed(x(p0), 2))\" y=\"\(fixed(y + 3, 1))\" width=\"\(fixed(max(1, x(p0 + pm) - x(p0)), 2))\" height=\"14\" fill=\"#e39b2f\"><title>probe \(esc(ms(pm)))</title></rect>"
                if let sm = d.startMs {
                    s += "<rect x=\"\(fixed(x(p0 + pm), 2))\" y=\"\(fixed(y + 3, 1))\" width=\"\(fixed(max(1, x(p0 + pm + sm) - x(p0 + pm)), 2))\" height=\"14\" fill=\"#3d9a4a\"><title>start \(esc(ms(sm)))</title></rect>"
                }
            }
            s += "<text x=\"\(fixed(left + width + 4, 1))\" y=\"\(fixed(y + 14, 1))\">\(esc(d.state))</text>\n"
            y += rowH
        }
        s += "<line x1=\"\(left)\" y1=\"\(fixed(y + 4, 1))\" x2=\"\(left + width)\" y2=\"\(fixed(y + 4, 1))\" stroke=\"black\"/>"
        s += "<text x=\"\(left)\" y=\"\(fixed(y + 20, 1))\">0</text><text x=\"\(left + width - 60)\" y=\"\(fixed(y + 20, 1))\">\(esc(ms(end)))</text>\n"
        s += "</svg>\n"
        return s
    }
}

extension String {
    /// Replaces every occurrence of one character with a string (enough for XML escaping).
    func replacingAll(_ target: Character, _ replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
