#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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

public struct HandoffStep: Codable, Sendable, Equatable {
    public var name: String
    public var ms: Double
    public init(name: String, ms: Double) { self.name = name; self.ms = ms }
}

public struct HandoffReport: Codable, Sendable, Equatable {
    public var outcome: String
    /// The old process's last forwarded burst → the new process's first (CLOCK_MONOTONIC, which
    /// both read); nil when either side forwarded nothing (`blackoutNote` says which).
    public var blackoutMs: Double?
    /// Why there is no blackout figure.
    public var blackoutNote: String?
    /// The part of the blackout in which no thread of either process polled the rings (the old
    /// one's first thread parked → the new one's last thread unparked): what the handoff itself
    /// costs. The rest of the blackout the guest sent nothing (or was not scheduled).
    public var notPollingMs: Double?
    /// Where the blackout went, in order; the parts add up to `blackoutMs`.
    public var blackoutParts: [HandoffStep]
    public var steps: [HandoffStep]
    enum CodingKeys: String, CodingKey {
        case outcome, steps, blackoutMs = "blackout_ms", blackoutNote = "blackout_note", blackoutParts = "blackout_parts"
        case notPollingMs = "not_polling_ms"
    }
    public init(outcome: String, blackoutMs: Double?, blackoutNote: String? = nil, blackoutParts: [HandoffStep] = [],
                notPollingMs: Double? = nil, steps: [HandoffStep]) {
        self.outcome = outcome; self.blackoutMs = blackoutMs; self.blackoutNote = blackoutNote
        self.blackoutParts = blackoutParts; self.notPollingMs = notPollingMs; self.steps = steps
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        outcome = try c.decode(String.self, forKey: .outcome)
        blackoutMs = try c.decodeIfPresent(Double.self, forKey: .blackoutMs)
        blackoutNote = try c.decodeIfPresent(String.self, forKey: .blackoutNote)
        blackoutParts = try c.decodeIfPresent([HandoffStep].self, forKey: .blackoutParts) ?? []
        notPollingMs = try c.decodeIfPresent(Double.self, forKey: .notPollingMs)
        steps = try c.decode([HandoffStep].self, forKey: .steps)
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
