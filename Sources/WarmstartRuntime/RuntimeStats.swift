#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartEngine

/// Per-port and per-queue counters with each device's state: what `warmstart run` prints at exit
/// and what the control socket's `stats` command answers.
public struct RuntimeStats: Codable, Sendable, Equatable {
    public struct Port: Codable, Sendable, Equatable {
        public var name: String
        public var kind: String
        public var state: String
        public var slot: Int
        /// Live queues plus what earlier connections counted.
        public var total: QueueCounters
        /// Queue pairs polled now, by index.
        public var queues: [QueueCounters]
        public var reconnects: Int
        public var reason: String?
        /// The port's own MAC address (virtio-user ports), nil where the port has none.
        public var mac: String?
    }

    public var forward: String
    public var cores: Int
    public var ports: [Port]
    /// Descriptors, mappings, threads and mbufs this process holds (absent in answers from
    /// binaries before it).
    public var process: ProcessFootprint?

    public init(forward: String, cores: Int, ports: [Port], process: ProcessFootprint? = nil) {
        self.forward = forward; self.cores = cores; self.ports = ports; self.process = process
    }

    public func jsonData(pretty: Bool = true) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return try e.encode(self)
    }

    /// A table: one row per port (total) and one per live queue pair.
    public func renderText() -> String {
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
        func num(_ v: UInt64, _ w: Int) -> String { let s = String(v); return s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        var out = "forward \(forward), \(cores) polling thread\(cores == 1 ? "" : "s")\n"
        out += pad("port", 22) + pad("state", 12) + "   rx-packets     rx-bytes   tx-packets     tx-bytes      drops  errors\n"
        func row(_ label: String, _ state: String, _ c: QueueCounters) -> String {
            pad(label, 22) + pad(state, 12) + num(c.rxPackets, 13) + num(c.rxBytes, 13) + num(c.txPackets, 13)
                + num(c.txBytes, 13) + num(c.drops, 11) + num(c.errors, 8) + "\n"
        }
        for p in ports {
            out += row(p.name, p.state, p.total)
            if let mac = p.mac { out += "  mac \(mac)\n" }
            for (i, q) in p.queues.enumerated() { out += row("  queue \(i)", "", q) }
            if let r = p.reason, p.state != "started" { out += "  (\(r))\n" }
        }
        if let f = process {
            out += "process \(f.pid): \(f.openFDs) descriptors, \(f.mappings) mappings (\(f.sharedMappings) shared), \(f.threads) thread\(f.threads == 1 ? "" : "s"); "
                + "mbufs in use \(f.mbufsInUse) (\(f.mbufsCached) in this process's caches)\n"
        }
        return out
    }
}
