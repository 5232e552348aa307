import WarmstartMemory
import WarmstartPools

/// The fixed 256-byte header at offset 0 of a snapshot file (Snapshots/FORMAT.md).
public struct SnapshotHeader: Equatable, Sendable {
    public static let magic: [UInt8] = Array("WARMSNAP".utf8)
    public static let formatMajor: UInt16 = 1
    /// 1.1: a pool record describes the pool's elements only; its control block and free ring are
    /// not in the file (Snapshots/FORMAT.md, "Pool metadata"). 1.0 files still load.
    public static let formatMinor: UInt16 = 1
    public static let size = 256
    /// Offset of the CRC-32C field (the last 4 bytes of the header).
    static let crcOffset = 252
    public static let maxRegions = 16
    public static let maxPools = 16

    public var major: UInt16 = formatMajor
    public var minor: UInt16 = formatMinor
    public var writer: String = WarmstartVersion.string
    public var pageSize: Int
    public var fileSize: UInt64
    public var metadataOffset: UInt64 = UInt64(SnapshotHeader.size)
    public var metadataSize: UInt64
    public var regionCount: UInt32
    public var poolCount: UInt32
    public var createdUnixSeconds: UInt64
    public var memoryBytes: UInt64
    public var mbufs: UInt64
    public var headroom: UInt32
    public var dataRoom: UInt32
    public var cacheSize: UInt32
    public var flags: SnapshotFlags
    public var payloadOffset: UInt64
    public var crc: UInt32 = 0

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.bytes += Self.magic
        w.u16(major); w.u16(minor); w.u32(UInt32(Self.size))
        w.text(writer, width: 32)
        w.u64(UInt64(pageSize)); w.u64(fileSize); w.u64(metadataOffset); w.u64(metadataSize)
        w.u32(regionCount); w.u32(poolCount)
        w.u64(createdUnixSeconds); w.u64(memoryBytes); w.u64(mbufs)
        w.u32(headroom); w.u32(dataRoom); w.u32(cacheSize); w.u32(flags.rawValue)
        w.u64(payloadOffset)
        w.pad(to: Self.crcOffset)
        w.u32(crc)
        return w.bytes
    }

    /// Decodes the header; checks only what is needed to read the rest (magic, version, size).
    static func decode(_ bytes: [UInt8], path: String) throws -> SnapshotHeader {
        guard bytes.count >= Self.size else { throw SnapshotError.truncated(path: path, size: bytes.count, expected: Self.size) }
        guard Array(bytes[0..<8]) == Self.magic else { throw SnapshotError.badMagic(path: path) }
        var r = ByteReader(bytes, at: 8)
        do {
            let major = try r.u16(), minor = try r.u16()
            guard major == formatMajor, minor <= formatMinor else {
                throw SnapshotError.unsupportedVersion(path: path, major: major, minor: minor)
            }
            guard try r.u32() == UInt32(Self.size) else {
                throw SnapshotError.corruptMetadata(path: path, reason: "header size field is not \(Self.size)")
            }
            let writer = try r.text(width: 32)
            var h = SnapshotHeader(pageSize: Int(truncatingIfNeeded: try r.u64()), fileSize: try r.u64(), metadataSize: 0,
                                   regionCount: 0, poolCount: 0, createdUnixSeconds: 0, memoryBytes: 0, mbufs: 0,
                                   headroom: 0, dataRoom: 0, cacheSize: 0, flags: [], payloadOffset: 0)
            h.major = major; h.minor = minor; h.writer = writer
            h.metadataOffset = try r.u64(); h.metadataSize = try r.u64()
            h.regionCount = try r.u32(); h.poolCount = try r.u32()
            h.createdUnixSeconds = try r.u64(); h.memoryBytes = try r.u64(); h.mbufs = try r.u64()
            h.headroom = try r.u32(); h.dataRoom = try r.u32(); h.cacheSize = try r.u32()
            h.flags = SnapshotFlags(rawValue: try r.u32())
            h.payloadOffset = try r.u64()
            r.offset = Self.crcOffset
            h.crc = try r.u32()
            return h
        } catch is ByteReader.Short {
            throw SnapshotError.truncated(path: path, size: bytes.count, expected: Self.size)
        }
    }
}

public struct SnapshotFlags: OptionSet, Sendable, Equatable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The region contents live in the file itself (hugetlbfs or tmpfs): restore maps them in place.
    public static let resident = SnapshotFlags(rawValue: 1)
}

/// What a region holds.
public enum RegionRole: UInt32, Sendable, Codable {
    case general = 0
    case pool = 1
}

/// One entry of the region table (64 bytes).
public struct RegionRecord: Equatable, Sendable {
    public static let size = 64
    public var name: String
    public var role: RegionRole
    /// Where the region's contents start in the file (page aligned).
    public var fileOffset: UInt64
    public var size: UInt64
    /// The I/O address a peer sees the region at.
    public var ioAddress: UInt64

    func encode(into w: inout ByteWriter) {
        let start = w.bytes.count
        w.text(name, width: 16); w.u32(role.rawValue); w.u32(0)
        w.u64(fileOffset); w.u64(size); w.u64(ioAddress)
        w.pad(to: start + Self.size)
    }

    static func decode(_ r: inout ByteReader, path: String) throws -> RegionRecord {
        let start = r.offset
        let name = try r.text(width: 16)
        let rawRole = try r.u32()
        guard let role = RegionRole(rawValue: rawRole) else {
            throw SnapshotError.corruptMetadata(path: path, reason: "region '\(name)' has unknown role \(rawRole)")
        }
        try r.skip(4)
        let rec = RegionRecord(name: name, role: role, fileOffset: try r.u64(), size: try r.u64(), ioAddress: try r.u64())
        r.offset = start + Self.size
        return rec
    }
}

/// One entry of the pool table (64 bytes).
public struct PoolRecord: Equatable, Sendable {
    public static let size = 64
    public var name: String
    public var regionIndex: UInt32
    public var poolID: UInt16
    /// Where the pool starts inside its region.
    public var offset: UInt64
    public var config: MbufPoolConfig
    public var elementSize: UInt32
    public var bytes: UInt64

    func encode(into w: inout ByteWriter) {
        let start = w.bytes.count
        w.text(name, width: 16); w.u32(regionIndex); w.u16(poolID); w.u16(0)
        w.u64(offset); w.u64(UInt64(config.count))
        w.u32(UInt32(config.headroom)); w.u32(UInt32(config.dataRoom)); w.u32(UInt32(config.cacheSize))
        w.u32(elementSize); w.u64(bytes)
        w.pad(to: start + Self.size)
    }

    static func decode(_ r: inout ByteReader, path: String) throws -> PoolRecord {
        let start = r.offset
        let name = try r.text(width: 16)
        let regionIndex = try r.u32(), poolID = try r.u16()
        try r.skip(2)
        let offset = try r.u64(), count = try r.u64()
        let headroom = try r.u32(), dataRoom = try r.u32(), cache = try r.u32()
        let elementSize = try r.u32(), bytes = try r.u64()
        guard count <= UInt64(UInt32.max) else {
            throw SnapshotError.corruptMetadata(path: path, reason: "pool '\(name)' claims \(count) elements")
        }
        let config = MbufPoolConfig(count: Int(count), headroom: Int(headroom), dataRoom: Int(dataRoom), cacheSize: Int(cache))
        r.offset = start + Self.size
        return PoolRecord(name: name, regionIndex: regionIndex, poolID: poolID, offset: offset, config: config,
                          elementSize: elementSize, bytes: bytes)
    }
}

/// The version this build writes into snapshots and reports.
public enum WarmstartVersion {
    public static let string = "warmstart 0.1.0"
}
