import WarmstartMemory
import WarmstartPools

/// One queue pair of a port, as a polling thread drives it: a vhost-user backend queue pair, a
/// virtio-user frontend queue pair, a TAP fd. Called once per burst (never per packet) by exactly
/// one polling thread at a time.
public protocol BurstQueue: AnyObject {
    /// Receives up to `max` packets into `out` (for a vhost-user backend: the guest's TX), taking
    /// mbufs from `cache`. Returns how many.
    func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int
    /// Sends `pkts[0..<count]` (for a vhost-user backend: into the guest's RX). Returns how many were
    /// taken; the queue frees those (to `cache`) once copied. The caller frees the rest.
    func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int
    /// Errors seen by the queue itself (bad descriptors, broken ring), for the counters.
    var errorCount: UInt64 { get }
    /// The flag the SIGBUS guard sets when the peer shrinks memory this queue uses (nil: the
    /// queue maps nothing a peer can shrink). Polling threads check it once per burst.
    var memoryFault: MappingFaultFlag? { get }
}

extension BurstQueue {
    public var memoryFault: MappingFaultFlag? { nil }
}

/// Per-queue counters, written by the one polling thread that owns the queue, read by stats.
public struct QueueCounters: Sendable, Equatable, Codable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    /// Packets dropped: no room in the peer, no peer, no mbufs.
    public var drops: UInt64 = 0
    /// Errors: bad descriptors and the like (from the queue) plus forwarding errors.
    public var errors: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case drops, errors
        case rxPackets = "rx_packets", rxBytes = "rx_bytes", txPackets = "tx_packets", txBytes = "tx_bytes"
    }

    public static func + (a: QueueCounters, b: QueueCounters) -> QueueCounters {
        var c = a
        c.rxPackets &+= b.rxPackets; c.rxBytes &+= b.rxBytes
        c.txPackets &+= b.txPackets; c.txBytes &+= b.txBytes
        c.drops &+= b.drops; c.errors &+= b.errors
        return c
    }
}

/// `--forward io|macswap|l2`.
public enum ForwardMode: String, CaseIterable, Sendable, Codable {
    /// Ports paired 0↔1, 2↔3, …; an odd last port is paired with itself (testpmd's io mode).
    case io
    /// Swap source and destination MAC and send back where it came from.
    case macswap
    /// A MAC-learning switch over all ports.
    case l2
    /// A traffic source, like testpmd's txonly: every poll of a queue sends a burst of generated
    /// frames (`Datapath.Options.txSize` bytes) on it; what it receives is counted and dropped.
    case txonly
}
