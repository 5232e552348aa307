#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartHandoff

/// One timed boot phase. `budgetMs`/`budgetHighMs` are the seed's DPDK budget for the same work
/// (a range where the seed gives one); nil where the seed has none.
public struct BootPhase: Codable, Sendable, Equatable {
    public var name: String
    /// Start, in ms since the process was exec'd.
    public var startMs: Double
    public var ms: Double
    public var budgetMs: Double?
    public var budgetHighMs: Double?
    /// The work the phase did ("2 GiB", "1000000 mbufs", "8 devices").
    public var work: String

    enum CodingKeys: String, CodingKey {
        case name, ms, work
        case startMs = "start_ms", budgetMs = "budget_ms", budgetHighMs = "budget_high_ms"
    }

    public init(name: String, startMs: Double, ms: Double, budgetMs: Double? = nil, budgetHighMs: Double? = nil, work: String = "") {
        self.name = name
        self.startMs = startMs
        self.ms = ms
        self.budgetMs = budgetMs
        self.budgetHighMs = budgetHighMs
        self.work = work
    }

    /// How many times faster than the (low end of the) budget.
    public var speedup: Double? {
        guard let b = budgetMs, b > 0 else { return nil }
        return b / max(ms, 0.001)
    }
}

/// One device's way through boot.
public struct DeviceTiming: Codable, Sendable, Equatable {
    public var name: String
    public var kind: String
    public var state: String
    public var probeMs: Double?
    public var startMs: Double?
    /// Since exec: when the device joined the datapath.
    public var readyAtMs: Double?
    public var probeStartAtMs: Double?
    public var firstPacketAtMs: Double?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case name, kind, state, reason
        case probeMs = "probe_ms", startMs = "start_ms", readyAtMs = "ready_at_ms"
        case probeStartAtMs = "probe_start_at_ms", firstPacketAtMs = "first_packet_at_ms"
    }

    public init(name: String, kind: String, state: String, probeMs: Double? = nil, startMs: Double? = nil,
                readyAtMs: Double? = nil, probeStartAtMs: Double? = nil, firstPacketAtMs: Double? = nil, reason: String? = nil) {
        self.name = name; self.kind = kind; self.state = state; self.probeMs = probeMs; self.startMs = startMs
        self.readyAtMs = readyAtMs; self.probeStartAtMs = probeStartAtMs; self.firstPacketAtMs = firstPacketAtMs
        self.reason = reason
    }
}

/// The boot timing report: every phase against the seed's budgets, the memory used, where it came
/// from, and each device.
public struct BootReport: Codable, Sendable, Equatable {
    public struct Memory: Codable, Sendable, Equatable {
        public var backing: String
        public var pageSize: String
        public var bytes: Int
        /// Why hugepages were not used, when they were not.
        public var note: String?
        enum CodingKeys: String, CodingKey { case backing, bytes, note, pageSize = "page_size" }
    }
    public struct Snapshot: Codable, Sendable, Equatable {
        public var path: String?
        /// restored | created | cold-fallback | none
        public var outcome: String
        public var reason: String?
        public init(path: String?, outcome: String, reason: String?) { self.path = path; self.outcome = outcome; self.reason = reason }
    }

    public var version: String
    public var phases: [BootPhase]
    public var totalMs: Double
    public var memory: Memory
    public var snapshot: Snapshot
    public var devices: [DeviceTiming]
    /// "io_uring" or "poll" and, for the fallback, why.
    public var ioBackend: String?
    public var handoff: HandoffReport?
    /// True when process-start was read from /proc in 10 ms ticks rather than from the launcher.
    public var processStartCoarse: Bool

    enum CodingKeys: String, CodingKey {
        case version, phases, memory, snapshot, devices, handoff
        case totalMs = "total_ms", ioBackend = "io_backend", processStartCoarse = "process_start_coarse"
    }

    public init(phases: [BootPhase], totalMs: Double, memory: Memory, snapshot: Snapshot, devices: [DeviceTiming] = [],
                ioBackend: String? = nil, handoff: HandoffReport? = nil, processStartCoarse: Bool = false,
                version: String = "1") {
        self.version = version; self.phases = phases; self.totalMs = totalMs; self.memory = memory
        self.snapshot = snapshot; self.devices = devices; self.ioBackend = ioBackend; self.handoff = handoff
        self.processStartCoarse = processStartCoarse
    }

    public func jsonData() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(self)
    }

    public static func decode(_ data: Data) throws -> BootReport {
        try JSONDecoder().decode(BootReport.self, from: data)
    }
}
