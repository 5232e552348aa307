// The handoff's outcome as the new process saw it: the section `BootReport.handoff` carries.

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
