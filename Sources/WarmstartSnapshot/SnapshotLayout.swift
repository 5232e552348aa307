import WarmstartMemory
import WarmstartPools

/// What a snapshot (or a cold boot) lays out: the mbuf pool and the total memory.
public struct SnapshotConfig: Equatable, Sendable {
    public var pool: MbufPoolConfig
    /// Total memory, at least what the pool needs; the rest is a general-purpose region (rings,
    /// tables). nil: the pool plus `defaultGeneralBytes`.
    public var memoryBytes: Int?
    public static let defaultGeneralBytes = 16 << 20

    public init(pool: MbufPoolConfig, memoryBytes: Int? = nil) {
        self.pool = pool
        self.memoryBytes = memoryBytes
    }
}

/// Where every region and pool goes, in the file and in the I/O address space. Offsets only:
/// nothing here depends on where the file is mapped.
public struct SnapshotLayout: Equatable, Sendable {
    /// I/O address of the first region; regions follow one another.
    public static let ioBase: UInt64 = 1 << 32

    public var pageSize: PageSize
    public var regions: [RegionRecord]
    public var pools: [PoolRecord]
    public var memoryBytes: UInt64
    /// Format 1.0: each pool record covers control block, free ring and elements, in that order.
    /// From 1.1 it covers the elements alone, and the control block and ring live in process-private
    /// memory (`poolMetadataBytes`), never in the file: the file's fd is what a virtio-user
    /// back-end is given to map packet memory, and it could write any byte of it.
    public var poolMetadataInFile: Bool = false

    /// The header page, then each region's contents, page aligned.
    public var payloadOffset: UInt64 { UInt64(pageSize.bytes) }
    public var fileSize: UInt64 { regions.map { $0.fileOffset + $0.size }.max() ?? payloadOffset }

    public static func plan(_ config: SnapshotConfig, pageSize: PageSize) throws -> SnapshotLayout {
        do { try config.pool.validate() } catch let e as PoolError {
            throw SnapshotError.invalidConfiguration("\(e)")
        }
        let poolBytes = MbufPoolConfig.elementBytes(config.pool)
        guard let poolRegion = pageSize.roundUp(poolBytes) else {
            throw SnapshotError.invalidConfiguration("pool of \(config.pool.count) mbufs is too large")
        }
        let total: Int
        if let m = config.memoryBytes {
            guard m >= poolRegion else {
                throw SnapshotError.invalidConfiguration(
                    "--memory \(m) bytes is less than the \(poolRegion) bytes the pool of \(config.pool.count) mbufs needs (\(pageSize) pages)")
            }
            guard m % pageSize.bytes == 0 else {
                throw SnapshotError.invalidConfiguration("--memory \(m) bytes is not a multiple of the page size \(pageSize)")
            }
            total = m
        } else {
            total = poolRegion + (pageSize.roundUp(Self.generalDefault(pageSize)) ?? 0)
        }
        var regions = [RegionRecord(name: "mbufs", role: .pool, fileOffset: UInt64(pageSize.bytes),
                                    size: UInt64(poolRegion), ioAddress: ioBase)]
        if total > poolRegion {
            regions.append(RegionRecord(name: "general", role: .general,
                                        fileOffset: UInt64(pageSize.bytes + poolRegion),
                                        size: UInt64(total - poolRegion), ioAddress: ioBase + UInt64(poolRegion)))
        }
        let pool = PoolRecord(name: "mbufs", regionIndex: 0, poolID: 0, offset: 0, config: config.pool,
                              elementSize: UInt32(config.pool.elementSize), bytes: UInt64(poolBytes))
        return SnapshotLayout(pageSize: pageSize, regions: regions, pools: [pool], memoryBytes: UInt64(total))
    }

    /// Mbufs in all pools.
    public var mbufCount: Int { pools.reduce(0) { $0 + $1.config.count } }

    /// Where a pool's elements start inside its region: the record's offset, or in a 1.0 file
    /// past the control block and ring that precede them.
    public func elementsOffset(of p: PoolRecord) -> Int {
        Int(p.offset) + (poolMetadataInFile ? MbufPoolConfig.metadataBytes(p.config) : 0)
    }

    /// Bytes of private memory for every pool's control block and ring, back to back.
    public var poolMetadataBytes: Int { pools.reduce(0) { $0 + MbufPoolConfig.metadataBytes($1.config) } }

    /// One place of a pool: elements at `elementsOffset` in `region`, control block and ring at
    /// `metadataOffset` in the private metadata region.
    struct PoolSite {
        var config: MbufPoolConfig
        var region: MemoryRegion
        var elementsOffset: Int
        var metadataOffset: Int
        var poolID: UInt16
    }

    /// Builds every pool of the layout with `make` (lay out, restore): elements in `regions`,
    /// control block and ring at `metadataOffset` in a private region of `poolMetadataBytes`
    /// (`poolMetadataRegion`), turning a pool error into a snapshot error that names `path`.
    func makePools(in regions: [MemoryRegion], path: String,
                   _ make: (PoolSite) throws -> MbufPool) throws -> [MbufPool] {
        var at = 0
        do {
            return try pools.map { p in
                defer { at += MbufPoolConfig.metadataBytes(p.config) }
                return try make(PoolSite(config: p.config, region: regions[Int(p.regionIndex)],
                                         elementsOffset: elementsOffset(of: p), metadataOffset: at, poolID: p.poolID))
            }
        } catch let e as PoolError {
            throw SnapshotError.pool(path: path, e)
        }
    }

    /// The private region that holds every pool's control block and ring: a 4 KiB memfd that is
    /// never in a memory table given to a peer.
    func poolMetadataRegion(path: String) throws -> MemoryRegion {
        do {
            return try MemoryRegion.memfd(name: "pool-meta", size: max(poolMetadataBytes, PageSize.small4K.bytes),
                                          pageSize: .small4K)
        } catch let e as MemoryError {
            throw SnapshotError.memory(path: path, e)
        }
    }

    static func generalDefault(_ pageSize: PageSize) -> Int {
        max(SnapshotConfig.defaultGeneralBytes, pageSize.bytes)
    }

    /// The header for this layout, CRC filled in.
    func header(config: SnapshotConfig, resident: Bool, createdUnixSeconds: UInt64) -> (SnapshotHeader, [UInt8]) {
        var meta = ByteWriter()
        for r in regions { r.encode(into: &meta) }
        for p in pools { p.encode(into: &meta) }
        var h = SnapshotHeader(pageSize: pageSize.bytes, fileSize: fileSize, metadataSize: UInt64(meta.bytes.count),
                               regionCount: UInt32(regions.count), poolCount: UInt32(pools.count),
                               createdUnixSeconds: createdUnixSeconds, memoryBytes: memoryBytes,
                               mbufs: UInt64(config.pool.count), headroom: UInt32(config.pool.headroom),
                               dataRoom: UInt32(config.pool.dataRoom), cacheSize: UInt32(config.pool.cacheSize),
                               flags: resident ? .resident : [], payloadOffset: payloadOffset)
        h.crc = Self.checksum(header: h.encode(), metadata: meta.bytes)
        return (h, h.encode() + meta.bytes)
    }

    /// CRC-32C over the header (up to its CRC field) followed by the metadata.
    static func checksum(header: [UInt8], metadata: [UInt8]) -> UInt32 {
        let c = header.withUnsafeBytes { CRC32C.update(0, $0.baseAddress!, SnapshotHeader.crcOffset) }
        return metadata.withUnsafeBytes { $0.count == 0 ? c : CRC32C.update(c, $0.baseAddress!, $0.count) }
    }

    /// Semantic checks of a decoded layout: everything inside the file, page aligned, no overlaps,
    /// pools inside their regions and of the size their config needs.
    func validate(path: String, header h: SnapshotHeader) throws {
        func bad(_ reason: String) -> SnapshotError { .corruptMetadata(path: path, reason: reason) }
        let page = UInt64(pageSize.bytes)
        guard h.payloadOffset == page else { throw bad("payload offset \(h.payloadOffset) is not one page (\(page))") }
        var spans: [(UInt64, UInt64)] = []
        var io: [(UInt64, UInt64)] = []
        for r in regions {
            let (end, o) = r.fileOffset.addingReportingOverflow(r.size)
            guard !o, r.size > 0, r.fileOffset >= page, end <= h.fileSize else {
                throw bad("region '\(r.name)' (offset \(r.fileOffset), \(r.size) bytes) lies outside the file")
            }
            guard r.fileOffset % page == 0, r.size % page == 0 else {
                throw bad("region '\(r.name)' is not aligned to the \(pageSize) page size")
            }
            let (ioEnd, o2) = r.ioAddress.addingReportingOverflow(r.size)
            guard !o2 else { throw bad("region '\(r.name)' I/O address range overflows") }
            spans.append((r.fileOffset, end))
            io.append((r.ioAddress, ioEnd))
        }
        for list in [spans, io] {
            let s = list.sorted { $0.0 < $1.0 }
            for i in s.indices.dropFirst() where s[i].0 < s[i - 1].1 { throw bad("regions overlap") }
        }
        guard regions.reduce(0, { $0 + $1.size }) == h.memoryBytes else {
            throw bad("regions add up to \(regions.reduce(0) { $0 + $1.size }) bytes, the header says \(h.memoryBytes)")
        }
        var ids = Set<UInt16>()
        for p in pools {
            guard Int(p.regionIndex) < regions.count else { throw bad("pool '\(p.name)' names region \(p.regionIndex)") }
            guard ids.insert(p.poolID).inserted else { throw bad("pool id \(p.poolID) appears twice") }
            do { try p.config.validate() } catch { throw bad("pool '\(p.name)': \(error)") }
            let needed = UInt64(poolMetadataInFile ? MbufPoolConfig.bytesNeeded(p.config) : MbufPoolConfig.elementBytes(p.config))
            guard p.bytes == needed, p.elementSize == UInt32(p.config.elementSize) else {
                throw bad("pool '\(p.name)' records \(p.bytes) bytes of \(p.elementSize)-byte elements; its config needs \(needed) of \(p.config.elementSize)")
            }
            let region = regions[Int(p.regionIndex)]
            let (end, o) = p.offset.addingReportingOverflow(p.bytes)
            guard !o, end <= region.size else { throw bad("pool '\(p.name)' runs past the end of region '\(region.name)'") }
        }
    }

    /// Decodes the region and pool tables that follow the header.
    static func decode(metadata: [UInt8], header h: SnapshotHeader, path: String) throws -> SnapshotLayout {
        guard let ps = PageSize(bytes: h.pageSize) else {
            throw SnapshotError.corruptMetadata(path: path, reason: "page size \(h.pageSize) is not 4K, 2M or 1G")
        }
        guard h.regionCount >= 1, h.regionCount <= SnapshotHeader.maxRegions, h.poolCount <= SnapshotHeader.maxPools else {
            throw SnapshotError.corruptMetadata(path: path, reason: "\(h.regionCount) regions, \(h.poolCount) pools")
        }
        let expected = Int(h.regionCount) * RegionRecord.size + Int(h.poolCount) * PoolRecord.size
        guard h.metadataSize == UInt64(expected), metadata.count == expected else {
            throw SnapshotError.corruptMetadata(path: path, reason: "metadata is \(h.metadataSize) bytes, \(expected) expected")
        }
        var r = ByteReader(metadata)
        do {
            var regions: [RegionRecord] = []
            for _ in 0..<h.regionCount { regions.append(try RegionRecord.decode(&r, path: path)) }
            var pools: [PoolRecord] = []
            for _ in 0..<h.poolCount { pools.append(try PoolRecord.decode(&r, path: path)) }
            return SnapshotLayout(pageSize: ps, regions: regions, pools: pools, memoryBytes: h.memoryBytes,
                                  poolMetadataInFile: h.minor == 0)
        } catch is ByteReader.Short {
            throw SnapshotError.corruptMetadata(path: path, reason: "metadata ends early")
        }
    }
}
