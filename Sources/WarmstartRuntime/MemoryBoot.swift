import CWarmstartShim
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
#if canImport(Glibc)
import Glibc
#endif

/// `--snapshot-fallback cold|fail`: what to do when a snapshot cannot be used.
public enum SnapshotFallback: String, CaseIterable, Sendable {
    case cold, fail
}

/// How the runtime gets its memory.
public struct MemoryOptions: Sendable {
    public var snapshot: SnapshotConfig
    public var hugepages: HugepageMode
    /// nil: what the snapshot's file system gives (or 2M for a cold boot with hugepages).
    public var pageSize: PageSize?
    public var snapshotPath: String?
    /// Create the snapshot when `snapshotPath` does not exist yet (the main job's first run).
    public var createIfMissing: Bool
    public var fallback: SnapshotFallback

    public init(snapshot: SnapshotConfig, hugepages: HugepageMode = .auto, pageSize: PageSize? = nil,
                snapshotPath: String? = nil, createIfMissing: Bool = false, fallback: SnapshotFallback = .cold) {
        self.snapshot = snapshot; self.hugepages = hugepages; self.pageSize = pageSize
        self.snapshotPath = snapshotPath; self.createIfMissing = createIfMissing; self.fallback = fallback
    }
}

/// Collects timed phases against the boot clock and gives each its scaled budget.
public final class PhaseRecorder: @unchecked Sendable {
    public let clock: BootClock
    public private(set) var phases: [BootPhase] = []

    public init(clock: BootClock) { self.clock = clock }

    public func record(_ name: String, startNs: UInt64, endNs: UInt64, work: String,
                       budget: Double? = nil, budgetHigh: Double? = nil) {
        phases.append(BootPhase(name: name, startMs: clock.ms(startNs), ms: Double(endNs &- startNs) / 1e6,
                                budgetMs: budget, budgetHighMs: budgetHigh, work: work))
    }

    /// Times `body` as phase `name`.
    public func time<T>(_ name: String, work: String = "", budget: Double? = nil, budgetHigh: Double? = nil,
                        _ body: () throws -> T) rethrows -> T {
        let t0 = ws_monotonic_ns()
        defer { record(name, startNs: t0, endNs: ws_monotonic_ns(), work: work, budget: budget, budgetHigh: budgetHigh) }
        return try body()
    }

    /// A sink for the snapshot layer's phases, with budgets for `memoryBytes` and `mbufs`.
    func sink(memoryBytes: Int, mbufs: Int) -> PhaseSink {
        return { [self] name, t0, t1, work in
            switch name {
            case "hugepage-init", "snapshot-map":
                self.record(name, startNs: t0, endNs: t1, work: work, budget: Budgets.hugepages(bytes: memoryBytes))
            case "mbuf-init":
                let b = Budgets.mbufs(mbufs)
                self.record(name, startNs: t0, endNs: t1, work: work, budget: b.0, budgetHigh: b.1)
            default:
                self.record(name, startNs: t0, endNs: t1, work: work)
            }
        }
    }
}

/// Where the main job keeps its default snapshot: on hugetlbfs when a mount gives free 2M pages
/// (resident: the pages stay allocated between runs), else on tmpfs (/dev/shm, 4 KiB pages, resident
/// too), else in the working directory (a disk snapshot).
public enum DefaultSnapshot {
    public static let fileName = "warmstart-default.snap"

    public static func path(hugepages: HugepageMode, bytesNeeded: Int) -> String {
        if hugepages != .off, let mount = Hugepages.mount(for: .huge2M), access(mount.path, W_OK) == 0 {
            let existing = mount.path + "/" + fileName
            if access(existing, F_OK) == 0 { return existing }
            if let pool = Hugepages.pool(.huge2M), pool.available * PageSize.huge2M.bytes >= bytesNeeded { return existing }
        }
        if access("/dev/shm", W_OK) == 0 { return "/dev/shm/" + fileName }
        return fileName
    }
}

public enum MemoryBoot {
    /// Restores (or creates, then restores) the snapshot, or lays memory out cold; records every
    /// phase. A snapshot that cannot be used is reported and, with fallback `cold`, replaced by a
    /// cold lay-out; it is never used half-checked.
    public static func boot(_ options: MemoryOptions, recorder: PhaseRecorder,
                            warn: (String) -> Void) throws -> (LiveMemory, BootReport.Snapshot) {
        let cfg = options.snapshot
        let mbufs = cfg.pool.count
        let estimate = cfg.estimatedBytes
        guard let path = options.snapshotPath else {
            let live = try LiveMemory.coldLayout(cfg, hugepages: options.hugepages, pageSize: options.pageSize ?? .huge2M,
                                                 phases: recorder.sink(memoryBytes: estimate, mbufs: mbufs))
            return (live, .init(path: nil, outcome: "none", reason: nil))
        }
        var outcome = "restored"
        do {
            if options.createIfMissing && access(path, F_OK) != 0 {
                try SnapshotWriter.create(path: path, config: cfg, pageSize: options.pageSize,
                                          createdUnixSeconds: UInt64(time(nil)),
                                          phases: recorder.sink(memoryBytes: estimate, mbufs: mbufs))
                outcome = "created"
            }
            let t0 = ws_monotonic_ns()
            let file = try SnapshotFile.open(path: path)
            try file.check(against: cfg)
            let t1 = ws_monotonic_ns()
            recorder.record("snapshot-open", startNs: t0, endNs: t1, work: "header, CRC-32C, \(file.layout.regions.count) regions")
            let live = try LiveMemory.restore(from: file, hugepages: options.hugepages,
                                              phases: recorder.sink(memoryBytes: Int(file.layout.memoryBytes), mbufs: mbufs))
            return (live, .init(path: path, outcome: outcome, reason: nil))
        } catch let error as SnapshotError {
            if options.fallback == .fail { throw error }
            warn("\(error); booting cold instead (--snapshot-fallback cold)")
            let live = try LiveMemory.coldLayout(cfg, hugepages: options.hugepages, pageSize: options.pageSize ?? .huge2M,
                                                 phases: recorder.sink(memoryBytes: estimate, mbufs: mbufs))
            return (live, .init(path: path, outcome: "cold-fallback", reason: "\(error)"))
        }
    }

    /// The memory section of the report.
    public static func memorySection(_ live: LiveMemory, mode: HugepageMode) -> BootReport.Memory {
        var note: String?
        if !live.backing.isHuge && mode != .off {
            if let pool = Hugepages.pool(Hugepages.defaultSize ?? .huge2M) {
                note = "hugepages not used: \(pool.available) of \(pool.total) \(pool.pageSize) pages available"
            } else {
                note = "hugepages not used: the kernel offers none"
            }
        } else if mode == .off {
            note = "--hugepages off"
        }
        return .init(backing: live.backing.rawValue, pageSize: live.pageSize.description, bytes: live.totalBytes, note: note)
    }
}
