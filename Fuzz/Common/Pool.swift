import WarmstartMemory
import WarmstartPools

/// The host-side mbuf pool the device rings copy into and out of: one per process, checked empty
/// after every input (an mbuf the ring code forgot to free or return is a finding).
enum FuzzPool {
    static let region: MemoryRegion = {
        let cfg = MbufPoolConfig(count: 1024)
        let bytes = (MbufPoolConfig.bytesNeeded(cfg) + 4095) & ~4095
        return try! MemoryRegion.memfd(name: "fuzz-pool", size: bytes, pageSize: .small4K)
    }()
    static let pool: MbufPool = try! MbufPool.layOut(config: MbufPoolConfig(count: 1024), region: region, offset: 0, poolID: 7)

    /// A packet of `length` bytes (chained when it outgrows one data room), or nil when the pool
    /// is short. Byte i is `seed &+ i`.
    static func packet(length: Int, seed: UInt8) -> Mbuf? {
        guard let head = pool.alloc() else { return nil }
        var seg = head
        var left = length
        var segs: UInt16 = 1
        var i = 0
        while true {
            let n = min(left, seg.tailroom)
            for k in 0..<n { seg.data.storeBytes(of: seed &+ UInt8(truncatingIfNeeded: i + k), toByteOffset: k, as: UInt8.self) }
            seg.dataLength = UInt16(n)
            left -= n
            i += n
            if left == 0 { break }
            guard let next = pool.alloc() else { pool.free(head); return nil }
            seg.nextIndex = next.index
            seg = next
            segs += 1
        }
        head.packetLength = UInt32(length)
        head.segmentCount = segs
        return head
    }

    static func verifyAllFree(_ what: String) {
        if pool.inUseCount != 0 {
            fatalError("\(what): \(pool.inUseCount) mbufs still in use after the input (leaked or never returned)")
        }
        if pool.doubleFreeCount != 0 || pool.badFreeCount != 0 {
            fatalError("\(what): pool saw \(pool.doubleFreeCount) double frees, \(pool.badFreeCount) bad frees")
        }
    }
}
