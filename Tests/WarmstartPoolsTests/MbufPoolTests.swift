import XCTest
import WarmstartMemory
@testable import WarmstartPools

final class MbufPoolTests: XCTestCase {
    func testLayOutThenAllocEveryElementOnceThenExhaustion() throws {
        let c = MbufPoolConfig(count: 1000, cacheSize: 0)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 7)
        XCTAssertEqual(pool.availableCount, 1000)
        XCTAssertEqual(pool.inUseCount, 0)
        var seen = Set<UInt32>()
        for _ in 0..<1000 {
            guard let m = pool.alloc() else { return XCTFail("pool ran dry early") }
            XCTAssertTrue(seen.insert(m.index).inserted, "index \(m.index) handed out twice")
            XCTAssertEqual(pool.mbuf(at: m.index), m)
            XCTAssertEqual(Int(bitPattern: m.header) - Int(bitPattern: region.base) - PoolControl.Geometry(c).elementsOffset,
                           Int(m.index) * c.elementSize)
            assertPristineHeader(m, pool: pool)
        }
        XCTAssertEqual(seen.count, 1000)
        XCTAssertNil(pool.alloc())
        XCTAssertNil(pool.alloc())
        XCTAssertEqual(pool.availableCount, 0)
        XCTAssertEqual(pool.inUseCount, 1000)
        var out = [Mbuf](repeating: Mbuf(header: region.base), count: 4)
        XCTAssertFalse(pool.allocBulk(&out, count: 4))
        XCTAssertNil(pool.mbuf(at: 1000))
        XCTAssertNil(pool.mbuf(at: MbufLayout.noNext))
    }

    func testFreeThenReallocRewritesTheHeader() throws {
        let c = MbufPoolConfig(count: 4, cacheSize: 0)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 1)
        let all = (0..<4).compactMap { _ in pool.alloc() }
        XCTAssertEqual(all.count, 4)
        XCTAssertNil(pool.alloc())
        let m = all[2]
        m.dataOffset = 3; m.dataLength = 99; m.packetLength = 99; m.port = 5; m.queue = 6; m.hash = 7
        m.userData = 8; m.offload = [.gso, .needsChecksum]
        var v = VirtioNetHeader(); v.flags = 1; v.gsoSize = 1400; v.numBuffers = 2; m.vnetHeader = v
        pool.free(m)
        XCTAssertEqual(m.refCount, 0)
        XCTAssertEqual(pool.availableCount, 1)
        guard let again = pool.alloc() else { return XCTFail("freed mbuf not reusable") }
        XCTAssertEqual(again, m)
        assertPristineHeader(again, pool: pool)
        XCTAssertNil(pool.alloc())
        for x in all { pool.free(x) }
        XCTAssertEqual(pool.availableCount, 4)
        XCTAssertEqual(Set(drain(pool)), Set(all.map(\.index)))
    }

    /// Mbuf.reset (the portable helper) and the pool's vectorised header write agree byte for byte.
    func testResetHelperMatchesAllocatedHeader() throws {
        let c = MbufPoolConfig(count: 2, headroom: 100, dataRoom: 1000, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 77)
        let a = pool.alloc()!, b = pool.mbuf(at: 1)!
        for i in 0..<64 { b.header.storeBytes(of: UInt8(truncatingIfNeeded: i &* 37 &+ 1), toByteOffset: i, as: UInt8.self) }
        b.reset(index: 1, poolID: 77, headroom: 100, bufferLength: 1100)
        let first = pool.alloc()!
        XCTAssertEqual(first, b)
        for i in 0..<64 where i < MbufLayout.index || i >= MbufLayout.index + 4 {
            XCTAssertEqual(a.header.load(fromByteOffset: i, as: UInt8.self), b.header.load(fromByteOffset: i, as: UInt8.self), "byte \(i)")
        }
        XCTAssertEqual(b.index, 1)
    }

    func testAllocBulkIsAllOrNothing() throws {
        let c = MbufPoolConfig(count: 10, cacheSize: 0)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 1)
        var out = [Mbuf](repeating: Mbuf(header: region.base), count: 16)
        XCTAssertTrue(pool.allocBulk(&out, count: 6))
        XCTAssertEqual(Set(out[0..<6].map(\.index)).count, 6)
        pool.freeBulk(out, count: 3)         // 3 on the ring, 4 never used
        XCTAssertEqual(pool.availableCount, 7)
        XCTAssertFalse(pool.allocBulk(&out, count: 8)) // needs ring + bump and still falls short
        XCTAssertEqual(pool.availableCount, 7, "a failed bulk alloc gives everything back")
        XCTAssertEqual(pool.doubleFreeCount + pool.badFreeCount, 0)
        XCTAssertTrue(pool.allocBulk(&out, count: 7)) // ring + bump together
        for i in 0..<7 { assertPristineHeader(out[i], pool: pool) }
        XCTAssertEqual(pool.availableCount, 0)
        XCTAssertTrue(pool.allocBulk(&out, count: 0))
    }

    func testFreeBulkBatchesChainsAndBadFrees() throws {
        let c = MbufPoolConfig(count: 300, cacheSize: 0)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 1)
        pool.trapOnBadFree = false
        var ms = [Mbuf](repeating: Mbuf(header: region.base), count: 200)
        XCTAssertTrue(pool.allocBulk(&ms, count: 200))
        // ms[10] gets ms[11] chained behind it; ms[11]'s own slot becomes a second free of it.
        XCTAssertTrue(pool.append(ms[11], to: ms[10]))
        pool.freeBulk(ms, count: 200)
        XCTAssertEqual(pool.doubleFreeCount, 1)
        XCTAssertEqual(pool.availableCount, 300)
        XCTAssertEqual(pool.ringCount, 200)
        XCTAssertEqual(Set(drain(pool)).count, 300)
    }

    func testLayOutWritesOnlyIdentityWords() throws {
        let c = MbufPoolConfig(count: 50, headroom: 32, dataRoom: 200, cacheSize: 0)
        let region = try makeRegion(c)
        region.base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: region.size)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 9)
        let identity: Set<Int> = Set(MbufLayout.index..<MbufLayout.index + 4)
            .union(MbufLayout.poolID..<MbufLayout.poolID + 2)
            .union(MbufLayout.magic..<MbufLayout.magic + 4)
            .union(MbufLayout.bufferLength..<MbufLayout.bufferLength + 2)
        for i in 0..<UInt32(50) {
            let m = pool.mbuf(at: i)!
            XCTAssertEqual(m.index, i)
            XCTAssertEqual(m.poolID, 9)
            XCTAssertEqual(m.magic, MbufLayout.identityMagic)
            XCTAssertEqual(Int(m.bufferLength), 232)
            for b in 0..<c.elementSize where !identity.contains(b) {
                if m.header.load(fromByteOffset: b, as: UInt8.self) != 0xA5 {
                    return XCTFail("layOut wrote byte \(b) of element \(i)")
                }
            }
        }
        XCTAssertEqual(pool.verifyImage(), [])
    }

    func testDoubleFreeIsCountedAndNotDuplicated() throws {
        let c = MbufPoolConfig(count: 8, cacheSize: 0)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 2)
        pool.trapOnBadFree = false
        let m = pool.alloc()!
        let n = pool.alloc()!
        pool.free(m)
        XCTAssertEqual(pool.doubleFreeCount, 0)
        pool.free(m)
        XCTAssertEqual(pool.doubleFreeCount, 1)
        XCTAssertEqual(pool.availableCount, 7, "the element is not put back twice")
        // Not an mbuf of this pool: a pointer into a data room, and a header with a wrong index word.
        pool.free(Mbuf(header: n.header + 128))
        XCTAssertEqual(pool.badFreeCount, 1)
        let saved = n.header.load(fromByteOffset: MbufLayout.index, as: UInt32.self)
        n.header.storeBytes(of: saved + 1, toByteOffset: MbufLayout.index, as: UInt32.self)
        pool.free(n)
        XCTAssertEqual(pool.badFreeCount, 2)
        n.header.storeBytes(of: saved, toByteOffset: MbufLayout.index, as: UInt32.self)
        pool.free(n)
        XCTAssertEqual(pool.availableCount, 8)
        let indices = drain(pool)
        XCTAssertEqual(indices.count, 8)
        XCTAssertEqual(Set(indices).count, 8)
    }

    func testRefCountedFree() throws {
        let c = MbufPoolConfig(count: 4, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 2)
        let m = pool.alloc()!
        m.refCount = 3
        pool.free(m)
        XCTAssertEqual(m.refCount, 2)
        pool.free(m)
        XCTAssertEqual(pool.availableCount, 3)
        pool.free(m)
        XCTAssertEqual(m.refCount, 0)
        XCTAssertEqual(pool.availableCount, 4)
        XCTAssertEqual(pool.doubleFreeCount, 0)
    }

    func testPoolAtAnOffsetNextToAnotherPool() throws {
        let a = MbufPoolConfig(count: 10, cacheSize: 0)
        let b = MbufPoolConfig(count: 20, headroom: 0, dataRoom: 100, cacheSize: 0)
        let offsetB = MbufPoolConfig.bytesNeeded(a)
        let region = try makeRegion(b, offset: offsetB)
        let pa = try MbufPool.layOut(config: a, region: region, offset: 0, poolID: 1)
        let pb = try MbufPool.layOut(config: b, region: region, offset: offsetB, poolID: 2)
        XCTAssertEqual(pb.offset, offsetB)
        XCTAssertEqual(pb.base, region.base + offsetB)
        XCTAssertEqual(drain(pa).count, 10)
        XCTAssertEqual(drain(pb).count, 20)
        XCTAssertEqual(pa.verifyImage(), [])
        XCTAssertEqual(pb.verifyImage(), [])
        // Freeing into the wrong pool is caught by identity.
        pa.trapOnBadFree = false
        pa.free(pb.mbuf(at: 0)!)
        XCTAssertEqual(pa.badFreeCount, 1)
        XCTAssertEqual(pa.availableCount, 0)
    }

    func testSingleProducerSingleConsumerPool() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 4, mode: .spsc)
        XCTAssertEqual(pool.ringMode, .spsc)
        var held: [Mbuf] = []
        for round in 0..<50 {
            while held.count < 60, let m = pool.alloc() { held.append(m) }
            XCTAssertEqual(Set(held.map(\.index)).count, held.count)
            let k = round % 7 + 20
            for m in held.prefix(k) { pool.free(m) }
            held.removeFirst(k)
        }
        for m in held { pool.free(m) }
        XCTAssertEqual(pool.availableCount, 100)
        XCTAssertEqual(Set(drain(pool)).count, 100)
    }

    func testHugepagePoolWhenAvailable() throws {
        guard (Hugepages.pool(.huge2M)?.available ?? 0) > 0 else {
            print("testHugepagePoolWhenAvailable: skipped, no free 2 MiB hugepages")
            return
        }
        let c = MbufPoolConfig(count: 512, cacheSize: 32)
        let region = try MemoryRegion.memfd(name: "pools-test-2m", size: PageSize.huge2M.bytes, pageSize: .huge2M)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 5)
        let cache = MbufCache(pool: pool)
        var got: [Mbuf] = []
        while let m = cache.alloc() { got.append(m) }
        XCTAssertEqual(Set(got.map(\.index)).count, 512)
        for m in got { cache.free(m) }
        cache.flush()
        XCTAssertEqual(pool.availableCount, 512)
        XCTAssertEqual(pool.verifyImage(), [])
    }
}
