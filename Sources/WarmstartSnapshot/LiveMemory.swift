import CWarmstartShim
import WarmstartMemory
import WarmstartPools

/// The runtime's memory once booted: its regions (each one fd, mapped once) and the mbuf pools in
/// them, however they came to be.
extension SnapshotConfig {
    /// An upper bound of the bytes this configuration lays out, before page rounding: the pool
    /// plus `memoryBytes` (a total that already includes the pool) or the default general region.
    public var estimatedBytes: Int {
        MbufPoolConfig.bytesNeeded(pool) + (memoryBytes ?? SnapshotConfig.defaultGeneralBytes)
    }
}

public final class LiveMemory: @unchecked Sendable {
    public enum Origin: String, Sendable {
        /// Mapped from a resident snapshot in place (no page zeroing, no per-mbuf work).
        case restoredResident = "restored-resident"
        /// Laid out from a disk snapshot's recorded layout into fresh memory.
        case restoredDisk = "restored-disk"
        /// Laid out from scratch.
        case cold
        /// Handed over by the process this one replaced (hot upgrade): its live regions and pools.
        case handedOver = "handed-over"
    }

    public let origin: Origin
    /// Every region: the laid-out ones (mbufs, general) and the private one that holds the pools'
    /// control blocks and free rings. A handoff passes them all on.
    public let regions: [MemoryRegion]
    public let pools: [MbufPool]
    /// Kept open while its regions are mapped from it.
    public let snapshot: SnapshotFile?

    public var pageSize: PageSize { regions.first?.pageSize ?? .small4K }
    public var backing: MemoryBacking { regions.first?.backing ?? .memfd }
    /// The laid-out memory (what a peer may see), without the pools' private metadata.
    public var totalBytes: Int { sharedRegions.reduce(0) { $0 + $1.size } }
    public var table: MemoryTable { MemoryTable(regions: sharedRegions) }
    public var mbufPool: MbufPool { pools[0] }
    public var generalRegion: MemoryRegion? { regions.first { $0.name == "general" } }

    /// The regions a peer may be given (a virtio-user back-end's memory table): every region but
    /// those that hold only pool metadata (control blocks and free rings), which stay private to
    /// this process. An inline pool (a handoff from a build before format 1.1) keeps its region
    /// shared, as it was.
    public var sharedRegions: [MemoryRegion] {
        regions.filter { r in !pools.contains { $0.hasSeparateMetadata && $0.metadataRegion === r } }
    }

    init(origin: Origin, regions: [MemoryRegion], pools: [MbufPool], snapshot: SnapshotFile?) {
        self.origin = origin
        self.regions = regions
        self.pools = pools
        self.snapshot = snapshot
    }

    /// Restores from an opened snapshot. Resident: maps the file's regions in place and resets each
    /// pool to pristine in O(1). Disk: creates fresh regions of the recorded layout (hugepages as
    /// `hugepages` allows) and resets the pools the same way. No per-mbuf work either way.
    public static func restore(from file: SnapshotFile, hugepages: HugepageMode = .auto, populate: Bool = false,
                               phases: PhaseSink? = nil) throws -> LiveMemory {
        let layout = file.layout
        var t0 = ws_monotonic_ns()
        let regions: [MemoryRegion]
        let origin: Origin
        if file.isResident {
            regions = try file.mapRegions(populate: populate)
            origin = .restoredResident
            let t1 = ws_monotonic_ns()
            phases?("snapshot-map", t0, t1, "\(regions.count) regions, \(bytesText(Int(layout.memoryBytes)))")
            t0 = t1
        } else {
            regions = try freshRegions(layout: layout, hugepages: hugepages, populate: populate, path: file.path)
            origin = .restoredDisk
            let t1 = ws_monotonic_ns()
            phases?("hugepage-init", t0, t1, bytesText(Int(layout.memoryBytes)) + (populate ? "" : ", faulted on use"))
            t0 = t1
        }
        let metadata = try layout.poolMetadataRegion(path: file.path)
        let pools = try layout.makePools(in: regions, path: file.path) {
            try MbufPool.restore(config: $0.config, region: $0.region, offset: $0.elementsOffset,
                                 metadata: metadata, metadataOffset: $0.metadataOffset, poolID: $0.poolID)
        }
        phases?("mbuf-init", t0, ws_monotonic_ns(), "\(layout.mbufCount) mbufs, restored")
        return LiveMemory(origin: origin, regions: regions + [metadata], pools: pools, snapshot: file)
    }

    /// Lays everything out from scratch in fresh memfd regions: the cold boot, and the fallback when
    /// a snapshot cannot be used.
    public static func coldLayout(_ config: SnapshotConfig, hugepages: HugepageMode = .auto,
                                  pageSize preferred: PageSize = .huge2M, phases: PhaseSink? = nil) throws -> LiveMemory {
        let probe = try SnapshotLayout.plan(config, pageSize: preferred.isHuge ? preferred : .small4K)
        let pageSize: PageSize
        do {
            pageSize = try MemoryRegion.choosePageSize(bytes: Int(probe.memoryBytes), mode: hugepages, preferred: preferred)
        } catch let e as MemoryError {
            throw SnapshotError.memory(path: "(cold boot)", e)
        }
        let layout = try SnapshotLayout.plan(config, pageSize: pageSize)
        var t0 = ws_monotonic_ns()
        let regions = try freshRegions(layout: layout, hugepages: hugepages, populate: false, path: "(cold boot)")
        for r in regions { r.prefault() }
        let t1 = ws_monotonic_ns()
        phases?("hugepage-init", t0, t1, "\(bytesText(Int(layout.memoryBytes))) in \(pageSize) pages")
        t0 = t1
        let metadata = try layout.poolMetadataRegion(path: "(cold boot)")
        let pools = try layout.makePools(in: regions, path: "(cold boot)") {
            try MbufPool.layOut(config: $0.config, region: $0.region, offset: $0.elementsOffset,
                                metadata: metadata, metadataOffset: $0.metadataOffset, poolID: $0.poolID)
        }
        phases?("mbuf-init", t0, ws_monotonic_ns(), "\(config.pool.count) mbufs laid out")
        return LiveMemory(origin: .cold, regions: regions + [metadata], pools: pools, snapshot: nil)
    }

    /// memfd regions with the layout's sizes and I/O addresses, in the page size `hugepages` allows.
    static func freshRegions(layout: SnapshotLayout, hugepages: HugepageMode, populate: Bool,
                             path: String) throws -> [MemoryRegion] {
        do {
            let preferred = layout.pageSize.isHuge ? layout.pageSize : (Hugepages.defaultSize ?? .huge2M)
            let ps = try MemoryRegion.choosePageSize(bytes: Int(layout.memoryBytes), mode: hugepages, preferred: preferred)
            var io = SnapshotLayout.ioBase
            return try layout.regions.map {
                let size = ps.roundUp(Int($0.size)) ?? Int($0.size)
                defer { io += UInt64(size) }
                return try MemoryRegion.memfd(name: $0.name, size: size, pageSize: ps, ioAddress: io, populate: populate)
            }
        } catch let e as MemoryError {
            throw SnapshotError.memory(path: path, e)
        }
    }
}
