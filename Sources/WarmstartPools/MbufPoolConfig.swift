/// The shape of one mbuf pool. Stored in the pool's control block, so a restarted or upgraded
/// process can check it is looking at the pool it expects.
public struct MbufPoolConfig: Equatable, Codable, Sendable {
    /// Number of mbufs.
    public var count: Int
    /// Bytes reserved in front of the data (room to prepend headers).
    public var headroom: Int
    /// Bytes of packet data per mbuf.
    public var dataRoom: Int
    /// Per-thread cache size (like RTE_MEMPOOL_CACHE_MAX_SIZE, bounded by `maxCacheSize`).
    public var cacheSize: Int

    /// DPDK's RTE_MEMPOOL_CACHE_MAX_SIZE.
    public static let maxCacheSize = 512
    public static let cacheLine = 64
    public static let pageAlignment = 4096

    public init(count: Int, headroom: Int = MbufLayout.defaultHeadroom,
                dataRoom: Int = MbufLayout.defaultDataRoom, cacheSize: Int = 256) {
        self.count = count
        self.headroom = headroom
        self.dataRoom = dataRoom
        self.cacheSize = cacheSize
    }

    /// Headroom plus data room: the mbuf's `bufferLength`.
    public var bufferLength: Int { headroom + dataRoom }

    /// Bytes per element: header + headroom + data room, rounded up to a cache line
    /// (2240 with the defaults).
    public var elementSize: Int { Self.roundUp(MbufLayout.headerSize + headroom + dataRoom, Self.cacheLine) }

    /// Free ring slots: the next power of two ≥ count, so the ring can hold every element.
    public var ringCapacity: Int { Self.nextPowerOfTwo(count) }

    /// Checks every field; the error names the field and why.
    public func validate() throws {
        guard count >= 1 else {
            throw PoolError.invalidConfig(field: "count", value: count, reason: "a pool needs at least 1 mbuf")
        }
        // 0xFFFF_FFFF is MbufLayout.noNext, so the last usable index is UInt32.max - 1.
        guard count <= Int(UInt32.max) - 1 else {
            throw PoolError.invalidConfig(field: "count", value: count,
                                          reason: "at most \(Int(UInt32.max) - 1) mbufs (indices are 32-bit)")
        }
        guard headroom >= 0 else {
            throw PoolError.invalidConfig(field: "headroom", value: headroom, reason: "must not be negative")
        }
        guard dataRoom >= 1 else {
            throw PoolError.invalidConfig(field: "dataRoom", value: dataRoom, reason: "must be at least 1 byte")
        }
        guard headroom + dataRoom <= Int(UInt16.max) else {
            throw PoolError.invalidConfig(field: "headroom + dataRoom", value: headroom + dataRoom,
                                          reason: "must be at most 65535 (bufferLength is 16-bit)")
        }
        guard cacheSize >= 0, cacheSize <= Self.maxCacheSize else {
            throw PoolError.invalidConfig(field: "cacheSize", value: cacheSize,
                                          reason: "must be between 0 and \(Self.maxCacheSize)")
        }
    }

    /// Bytes an inline pool with `config` occupies from its offset: control block, ring slots, elements
    /// (`metadataBytes` + `elementBytes`).
    /// Rounded up to a page so pools can be placed back to back and keep their elements page
    /// aligned. Assumes a valid config.
    public static func bytesNeeded(_ config: MbufPoolConfig) -> Int {
        PoolControl.Geometry(config).totalBytes
    }

    /// Bytes of a pool's control block and free ring alone (separate metadata), page aligned.
    public static func metadataBytes(_ config: MbufPoolConfig) -> Int {
        PoolControl.Geometry(config).metadataBytes
    }

    /// Bytes of a pool's elements alone (separate metadata), page aligned.
    public static func elementBytes(_ config: MbufPoolConfig) -> Int {
        PoolControl.Geometry(config).elementBytes
    }

    @inlinable static func roundUp(_ x: Int, _ alignment: Int) -> Int { (x + alignment - 1) & ~(alignment - 1) }

    static func nextPowerOfTwo(_ n: Int) -> Int {
        n <= 1 ? 1 : 1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)
    }
}
