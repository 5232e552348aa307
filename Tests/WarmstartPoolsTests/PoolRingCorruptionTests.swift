import XCTest
import WarmstartMemory
@testable import WarmstartPools

/// The free ring lives in shared memory: whatever element index it holds is untrusted. An index
/// outside the pool is counted and dropped, never turned into a pointer, on every path that takes
/// indices off the ring (one alloc, a bulk alloc, a cache refill).
final class PoolRingCorruptionTests: XCTestCase {
    static let config = MbufPoolConfig(count: 64, cacheSize: 0)

    /// A pool whose region has 1 MiB of zeroes after it (where an index just past the end would
    /// land), with `returned` mbufs on the ring and `bad` written over the first ring slots.
    func makePool(returned: Int = 8, bad: [UInt32]) throws -> (MbufPool, MemoryRegion) {
        let c = Self.config
        let region = try makeRegion(c, extra: 1 << 20)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 3)
        pool.trapOnBadFree = false
        let held = (0..<returned).compactMap { _ in pool.alloc() }
        for m in held { pool.free(m) }
        XCTAssertEqual(pool.ringCount, returned)
        for (k, v) in bad.enumerated() { pool.ring.setSlot(UInt64(k), v) }
        return (pool, region)
    }

    /// Nothing was written past the pool's last element.
    func assertNothingPastThePool(_ region: MemoryRegion, file: StaticString = #filePath, line: UInt = #line) {
        let end = MbufPoolConfig.bytesNeeded(Self.config)
        let past = UnsafeRawBufferPointer(start: region.base + end, count: region.size - end)
        XCTAssertTrue(past.allSatisfy { $0 == 0 }, "the pool wrote past its last element", file: file, line: line)
    }

    func testBulkAllocDropsOutOfRangeIndices() throws {
        let (pool, region) = try makePool(bad: [64, 300])
        var out = [Mbuf](repeating: Mbuf(header: region.base), count: 8)
        XCTAssertTrue(pool.allocBulk(&out, count: 8))
        XCTAssertTrue(out.allSatisfy { $0.index < 64 }, "handed out \(out.map(\.index))")
        XCTAssertEqual(Set(out.map(\.index)).count, 8)
        assertNothingPastThePool(region)
        XCTAssertEqual(pool.corruptIndexCount, 2)
    }

    func testSingleAllocDropsAnOutOfRangeIndex() throws {
        let (pool, region) = try makePool(returned: 1, bad: [65])
        let m = pool.alloc()
        XCTAssertNotNil(m)
        XCTAssertLessThan(m?.index ?? .max, 64)
        assertNothingPastThePool(region)
        XCTAssertEqual(pool.corruptIndexCount, 1)
    }

    func testCacheRefillDropsOutOfRangeIndices() throws {
        let (pool, region) = try makePool(returned: 16, bad: [64, 64 + 100, 0xFFFF_FFF0])
        let cache = MbufCache(pool: pool, size: 32)
        var got: [UInt32] = []
        while got.count < 64, let m = cache.alloc() { got.append(m.index) }
        XCTAssertEqual(got.count, 61, "every good mbuf once: 13 from the ring, 48 never used")
        XCTAssertTrue(got.allSatisfy { $0 < 64 }, "handed out \(got.filter { $0 >= 64 })")
        XCTAssertEqual(Set(got).count, got.count)
        assertNothingPastThePool(region)
        XCTAssertEqual(pool.corruptIndexCount, 3)
    }

    /// An index far outside the mapping would fault on the first header store.
    func testFarIndexDoesNotCrash() throws {
        let (pool, region) = try makePool(bad: [0x7FFF_0000, 0xFFFF_FFFE])
        var out = [Mbuf](repeating: Mbuf(header: region.base), count: 8)
        XCTAssertTrue(pool.allocBulk(&out, count: 8))
        XCTAssertTrue(out.allSatisfy { $0.index < 64 })
        XCTAssertEqual(pool.corruptIndexCount, 2)
    }
}
