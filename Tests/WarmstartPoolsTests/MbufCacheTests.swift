import XCTest
import Foundation
import CWarmstartShim
import WarmstartMemory
@testable import WarmstartPools

final class MbufCacheTests: XCTestCase {
    func testCacheAllocsEveryElementOnceAndFlushReturnsAll() throws {
        let c = MbufPoolConfig(count: 1000, cacheSize: 64)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        let cache = MbufCache(pool: pool)
        XCTAssertEqual(cache.size, 64)
        var got: [Mbuf] = []
        while let m = cache.alloc() {
            assertPristineHeader(m, pool: pool)
            got.append(m)
        }
        XCTAssertEqual(got.count, 1000)
        XCTAssertEqual(Set(got.map(\.index)).count, 1000)
        XCTAssertEqual(pool.availableCount, 0)
        for m in got { cache.free(m) }
        // The cache keeps at most size + size/2; the rest went back to the ring in chunks.
        XCTAssertLessThanOrEqual(cache.count, 96)
        XCTAssertEqual(pool.availableCount + cache.count, 1000)
        cache.flush()
        XCTAssertEqual(cache.count, 0)
        XCTAssertEqual(pool.availableCount, 1000)
        XCTAssertEqual(Set(drain(pool)).count, 1000)
    }

    func testBulkThroughCache() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 32)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 1)
        let cache = MbufCache(pool: pool)
        var burst = [Mbuf](repeating: Mbuf(header: region.base), count: 64)
        var held: [Mbuf] = []
        for _ in 0..<3 {
            XCTAssertTrue(cache.allocBulk(&burst, count: 32))
            held.append(contentsOf: burst[0..<32])
        }
        XCTAssertEqual(Set(held.map(\.index)).count, 96)
        XCTAssertFalse(cache.allocBulk(&burst, count: 8), "only 4 left")
        XCTAssertTrue(cache.allocBulk(&burst, count: 4))
        held.append(contentsOf: burst[0..<4])
        XCTAssertNil(cache.alloc())
        // A burst bigger than the cache goes straight to the pool.
        held.withUnsafeBufferPointer { cache.freeBulk($0.baseAddress!, count: 100) }
        XCTAssertTrue(cache.allocBulk(&burst, count: 64))
        cache.freeBulk(burst, count: 64)
        cache.flush()
        XCTAssertEqual(pool.availableCount, 100)
        XCTAssertEqual(pool.doubleFreeCount + pool.badFreeCount, 0)
    }

    func testDeinitFlushesAndZeroSizeCachePassesThrough() throws {
        let c = MbufPoolConfig(count: 50, cacheSize: 16)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        do {
            let cache = MbufCache(pool: pool)
            let m = cache.alloc()!
            cache.free(m)
            XCTAssertGreaterThan(cache.count, 0)
            XCTAssertLessThan(pool.availableCount, 50)
        }
        XCTAssertEqual(pool.availableCount, 50)
        let none = MbufCache(pool: pool, size: 0)
        let m = none.alloc()!
        XCTAssertEqual(pool.availableCount, 49)
        none.free(m)
        XCTAssertEqual(pool.availableCount, 50)
        XCTAssertEqual(none.count, 0)
    }

    func testDoubleFreeThroughCache() throws {
        let c = MbufPoolConfig(count: 20, cacheSize: 8)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        pool.trapOnBadFree = false
        let cache = MbufCache(pool: pool)
        let m = cache.alloc()!
        cache.free(m)
        cache.free(m)
        pool.free(m)
        XCTAssertEqual(pool.doubleFreeCount, 2)
        cache.flush()
        XCTAssertEqual(pool.availableCount, 20)
        XCTAssertEqual(Set(drain(pool)).count, 20)
    }

    /// Three threads with their own caches (plus direct pool alloc/free, single and bulk) hammer
    /// one MP/MC pool small enough to run dry. An owner byte per element, set with an atomic
    /// exchange on alloc, shows no element is ever held twice; after the flush every element is back.
    func testConservationUnderConcurrentAllocAndFree() throws {
        let count = 600
        let c = MbufPoolConfig(count: count, cacheSize: 64)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 3)
        let owner = UnsafeMutablePointer<UInt8>.allocate(capacity: count)
        owner.initialize(repeating: 0, count: count)
        defer { owner.deallocate() }
        let ownerAddress = UInt(bitPattern: owner)
        let duplicates = ManagedCounter(), allocations = ManagedCounter(), empties = ManagedCounter()
        runThreads(3) { t in
            let owner = UnsafeMutablePointer<UInt8>(bitPattern: ownerAddress)!
            let cache = MbufCache(pool: pool)
            var held = [Mbuf](repeating: Mbuf(header: region.base), count: 256)
            var n = 0, allocs = 0, dry = 0
            var seed = UInt64(t + 1) &* 0x9E37_79B9_7F4A_7C15
            func random(_ bound: Int) -> Int {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
                return Int(seed % UInt64(bound))
            }
            func take(_ m: Mbuf) {
                if ws_exchange_u8(owner + Int(m.index), 1) != 0 { duplicates.add() }
                held[n] = m; n += 1; allocs += 1
            }
            for _ in 0..<30_000 {
                switch random(6) {
                case 0, 1:
                    let k = 1 + random(32)
                    let direct = random(3) == 0
                    if n + k <= held.count, held.withUnsafeMutableBufferPointer({
                        direct ? pool.allocBulk($0.baseAddress! + n, count: k)
                               : cache.allocBulk($0.baseAddress! + n, count: k) }) {
                        for i in n..<(n + k) {
                            let m = held[i]
                            if ws_exchange_u8(owner + Int(m.index), 1) != 0 { duplicates.add() }
                        }
                        n += k; allocs += k
                    } else { dry += 1 }
                case 2:
                    if n < held.count, let m = (random(4) == 0 ? pool.alloc() : cache.alloc()) { take(m) } else { dry += 1 }
                case 3, 4:
                    let k = min(n, 1 + random(32))
                    for i in (n - k)..<n { ws_store_release_u8(owner + Int(held[i].index), 0) }
                    held.withUnsafeBufferPointer {
                        if random(3) == 0 { pool.freeBulk($0.baseAddress! + (n - k), count: k) }
                        else { cache.freeBulk($0.baseAddress! + (n - k), count: k) }
                    }
                    n -= k
                default:
                    if n > 0 {
                        n -= 1
                        ws_store_release_u8(owner + Int(held[n].index), 0)
                        if random(4) == 0 { pool.free(held[n]) } else { cache.free(held[n]) }
                    }
                }
            }
            for i in 0..<n { ws_store_release_u8(owner + Int(held[i].index), 0) }
            held.withUnsafeBufferPointer { cache.freeBulk($0.baseAddress!, count: n) }
            cache.flush()
            allocations.add(allocs)
            empties.add(dry)
        }
        XCTAssertEqual(duplicates.value, 0, "an element was held by two owners at once")
        XCTAssertGreaterThan(allocations.value, 10_000)
        XCTAssertEqual(pool.doubleFreeCount + pool.badFreeCount, 0)
        XCTAssertEqual(pool.availableCount, count)
        XCTAssertEqual(pool.inUseCount, 0)
        let all = drain(pool)
        XCTAssertEqual(all.count, count)
        XCTAssertEqual(Set(all).count, count)
        print("conservation: \(allocations.value) allocations, \(empties.value) refused (pool dry or full hands)")
    }
}
