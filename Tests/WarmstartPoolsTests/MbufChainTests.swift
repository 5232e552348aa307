import XCTest
@testable import WarmstartPools

final class MbufChainTests: XCTestCase {
    func testAppendCopyOutAndFreeWholeChain() throws {
        let c = MbufPoolConfig(count: 16, headroom: 16, dataRoom: 64, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        let segs = (0..<3).map { _ in pool.alloc()! }
        let texts = ["hello, ", "chained ", "world"]
        for (m, t) in zip(segs, texts) {
            XCTAssertTrue(Array(t.utf8).withUnsafeBytes { m.append(bytes: $0.baseAddress!, count: $0.count) })
        }
        XCTAssertEqual(segs[0].packetLength, 7)
        XCTAssertTrue(pool.append(segs[1], to: segs[0]))
        XCTAssertTrue(pool.append(segs[2], to: segs[0]))
        XCTAssertEqual(segs[0].segmentCount, 3)
        XCTAssertEqual(segs[0].packetLength, 20)
        XCTAssertEqual(pool.nextSegment(of: segs[0]), segs[1])
        XCTAssertEqual(pool.nextSegment(of: segs[1]), segs[2])
        XCTAssertNil(pool.nextSegment(of: segs[2]))
        XCTAssertEqual(pool.lastSegment(of: segs[0]), segs[2])
        XCTAssertFalse(pool.append(segs[0], to: segs[0]))

        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { pool.copyOut(segs[0], to: $0.baseAddress!, max: 64) }
        XCTAssertEqual(String(decoding: buf[0..<n], as: UTF8.self), "hello, chained world")
        let k = buf.withUnsafeMutableBytes { pool.copyOut(segs[0], to: $0.baseAddress!, max: 10) }
        XCTAssertEqual(String(decoding: buf[0..<k], as: UTF8.self), "hello, cha")

        // Too much data for one segment.
        let big = [UInt8](repeating: 1, count: 65)
        XCTAssertFalse(big.withUnsafeBytes { segs[2].append(bytes: $0.baseAddress!, count: $0.count) })

        XCTAssertEqual(pool.availableCount, 13)
        pool.free(segs[0])
        XCTAssertEqual(pool.availableCount, 16, "every segment of the chain goes back")
        pool.trapOnBadFree = false
        pool.free(segs[0])
        XCTAssertEqual(pool.doubleFreeCount, 1)
        XCTAssertEqual(pool.availableCount, 16)
    }

    func testSharedSegmentStaysWhileReferenced() throws {
        let c = MbufPoolConfig(count: 8, cacheSize: 4)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        let cache = MbufCache(pool: pool)
        let head = cache.alloc()!, tail = cache.alloc()!
        tail.addReference() // also referenced elsewhere
        XCTAssertEqual(tail.refCount, 2)
        XCTAssertTrue(pool.append(tail, to: head))
        cache.free(head)
        XCTAssertEqual(head.refCount, 0)
        XCTAssertEqual(tail.refCount, 1)
        cache.free(tail)
        XCTAssertEqual(tail.refCount, 0)
        cache.flush()
        XCTAssertEqual(pool.availableCount, 8)
        XCTAssertEqual(pool.doubleFreeCount + pool.badFreeCount, 0)
    }

    func testCorruptChainIsStoppedNotFollowedForever() throws {
        let c = MbufPoolConfig(count: 8, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 1)
        pool.trapOnBadFree = false
        let a = pool.alloc()!, b = pool.alloc()!
        a.nextIndex = b.index
        b.nextIndex = a.index // a cycle
        pool.free(a)
        XCTAssertEqual(pool.availableCount, 8)
        XCTAssertEqual(pool.doubleFreeCount, 1) // the walk came back to a, already freed
        let c1 = pool.alloc()!
        c1.nextIndex = 5000 // out of range
        pool.free(c1)
        XCTAssertEqual(pool.badFreeCount, 1)
        XCTAssertEqual(pool.availableCount, 8)
    }
}
