#if canImport(Glibc)
import Glibc
#endif
import WarmstartBus
import WarmstartEngine
import WarmstartHandoff
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUserWire

// What a caller of the runtime (the `warmstart` command) names to set a run up: the vocabulary of
// its options, the pool lay-out, the memory boot of `warmstart run` and the snapshot commands. The
// CLI reaches the layers below only through these.

/// A port as declared: `KIND:PATH[,key=value...]` (WarmstartBus).
public typealias PortSpec = WarmstartBus.PortSpec
/// How the polling threads forward (WarmstartEngine).
public typealias ForwardMode = WarmstartEngine.ForwardMode
/// Hugepages: auto, require, off (WarmstartMemory).
public typealias HugepageMode = WarmstartMemory.HugepageMode
/// 4K, 2M or 1G (WarmstartMemory).
public typealias PageSize = WarmstartMemory.PageSize
/// Memory regions and pools, booted (WarmstartSnapshot).
public typealias LiveMemory = WarmstartSnapshot.LiveMemory
/// What `snapshot inspect` / `snapshot verify` found (WarmstartSnapshot).
public typealias SnapshotReport = WarmstartSnapshot.SnapshotReport
/// A hot upgrade's outcome, `BootReport.handoff` (WarmstartHandoff).
public typealias HandoffReport = WarmstartHandoff.HandoffReport

extension WarmstartBus.PortSpec {
    /// `--port` values, then the lines of the `--config` file (when given), in that order.
    public static func parse(_ values: [String], config: String?) throws(PortSpecError) -> [PortSpec] {
        var specs = try values.map { p throws(PortSpecError) in try PortSpec.parse(p) }
        if let config { specs += try PortSpec.loadConfig(path: config) }
        return specs
    }
}

extension Runtime {
    /// SIGPIPE ignored process-wide, before anything opens a socket: a peer that goes away must not
    /// kill the process.
    public static func ignoreBrokenPipes() { ignoreBrokenPipeSignals() }
}

extension RuntimeOptions {
    /// `--device-wait`'s default.
    public static var defaultDeviceWaitSeconds: Double { Bus.defaultDeviceWaitSeconds }
}

/// A byte size: "1048576", "512K", "64M", "2G" (binary units; an optional "B" or "iB").
public struct ByteSize: Sendable, Equatable {
    public let bytes: Int
    public init?(parsing text: String) {
        var t = text.uppercased()
        if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
        var mult = 1
        switch t.last {
        case "K": mult = 1 << 10
        case "M": mult = 1 << 20
        case "G": mult = 1 << 30
        case "T": mult = 1 << 40
        default: break
        }
        if mult > 1 { t.removeLast() }
        guard let n = Int(t), n > 0 else { return nil }
        let (v, o) = n.multipliedReportingOverflow(by: mult)
        guard !o else { return nil }
        bytes = v
    }
}

/// The mbuf pool and the memory around it, as `run` and `snapshot create` take them.
public struct PoolLayout: Sendable, Equatable {
    public static let defaultDataRoom = MbufLayout.defaultDataRoom
    public static let defaultHeadroom = MbufLayout.defaultHeadroom

    public var mbufs: Int
    public var dataRoom: Int
    public var headroom: Int
    public var cacheSize: Int
    /// Total memory; nil: the pool plus a general-purpose region of the default size.
    public var memoryBytes: Int?

    public init(mbufs: Int, dataRoom: Int = defaultDataRoom, headroom: Int = defaultHeadroom, cacheSize: Int = 256,
                memoryBytes: Int? = nil) {
        self.mbufs = mbufs; self.dataRoom = dataRoom; self.headroom = headroom; self.cacheSize = cacheSize
        self.memoryBytes = memoryBytes
    }

    var snapshotConfig: SnapshotConfig {
        SnapshotConfig(pool: MbufPoolConfig(count: mbufs, headroom: headroom, dataRoom: dataRoom, cacheSize: cacheSize),
                       memoryBytes: memoryBytes)
    }

    /// Checks every field; the error names the field and why.
    public func validate() throws { try snapshotConfig.pool.validate() }
}

extension MemoryBoot {
    /// `warmstart run`'s memory: the snapshot at `snapshotPath` (nil: the default snapshot, created
    /// on the first run), or a cold lay-out with `noSnapshot`.
    public static func boot(layout: PoolLayout, hugepages: HugepageMode, pageSize: PageSize?, snapshotPath: String?,
                            noSnapshot: Bool, fallback: SnapshotFallback, recorder: PhaseRecorder,
                            warn: (String) -> Void) throws -> (LiveMemory, BootReport.Snapshot) {
        let cfg = layout.snapshotConfig
        var path = snapshotPath
        if path == nil && !noSnapshot {
            path = DefaultSnapshot.path(hugepages: hugepages, bytesNeeded: cfg.estimatedBytes)
        }
        let options = MemoryOptions(snapshot: cfg, hugepages: hugepages, pageSize: pageSize,
                                    snapshotPath: noSnapshot ? nil : path, createIfMissing: true, fallback: fallback)
        return try boot(options, recorder: recorder, warn: warn)
    }
}

/// `warmstart snapshot create|inspect|verify`.
public enum SnapshotFiles {
    /// Lays memory and the pool out once and persists them at `path`; returns what to print (the
    /// summary line, then one line per phase).
    public static func create(path: String, layout: PoolLayout, pageSize: PageSize?) throws -> [String] {
        let cfg = layout.snapshotConfig
        var lines: [String] = []
        let l = try SnapshotWriter.create(path: path, config: cfg, pageSize: pageSize,
                                          createdUnixSeconds: UInt64(time(nil))) { name, t0, t1, work in
            lines.append("  \(name): \(work), \(Double(t1 - t0) / 1e6) ms")
        }
        let summary = "created \(path): \(cfg.pool.count) mbufs of \(cfg.pool.elementSize) bytes, \(l.memoryBytes) bytes in \(l.regions.count) regions, \(l.pageSize) pages"
        return [summary] + lines
    }

    /// The layout and header checks.
    public static func inspect(path: String) throws -> SnapshotReport { try SnapshotVerifier.inspect(path: path) }

    /// Inspect, and check the payload too.
    public static func verify(path: String) throws -> SnapshotReport { try SnapshotVerifier.verify(path: path) }
}
