import XCTest
import Foundation
import Glibc
import WarmstartMemory
@testable import WarmstartPools

final class PoolPersistenceTests: XCTestCase {
    /// Uses the pool, scribbles on headers, ring slots and ring counters, then restores: the pool
    /// is pristine, with the element pages made inaccessible during restore to prove it reads none.
    func testRestoreIsPristineAfterArbitraryUseAndReadsNoElement() throws {
        let c = MbufPoolConfig(count: 3000, cacheSize: 64)
        let region = try makeRegion(c)
        var pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 11)
        let cache = MbufCache(pool: pool)
        var held: [Mbuf] = []
        for i in 0..<2500 { if let m = (i % 2 == 0 ? cache.alloc() : pool.alloc()) { held.append(m) } }
        for m in held[0..<1000] { cache.free(m) }
        cache.flush()
        // Garbage: headers of in-use mbufs, the ring slots, the ring heads and the bump counter.
        var seed: UInt64 = 42
        func junk() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed }
        for m in held[1000...] { for w in 0..<8 { m.header.storeBytes(of: junk(), toByteOffset: w * 8, as: UInt64.self) } }
        let g = PoolControl.Geometry(c)
        for s in 0..<g.capacity { (pool.base + g.ringOffset).storeBytes(of: UInt32(truncatingIfNeeded: junk()), toByteOffset: s * 4, as: UInt32.self) }
        for off in [64, 128, 192, 256, 320] { pool.base.storeBytes(of: junk(), toByteOffset: off, as: UInt64.self) }

        // No access to any element page while restoring.
        let elementBytes = MbufPoolConfig.bytesNeeded(c) - g.elementsOffset
        XCTAssertEqual(mprotect(region.base + g.elementsOffset, elementBytes, PROT_NONE), 0)
        pool = try MbufPool.restore(config: c, region: region, offset: 0, poolID: 11)
        XCTAssertEqual(pool.availableCount, 3000)
        XCTAssertEqual(pool.ringCount, 0)
        XCTAssertEqual(pool.neverUsedCount, 3000)
        XCTAssertEqual(pool.doubleFreeCount, 0)
        XCTAssertEqual(mprotect(region.base + g.elementsOffset, elementBytes, PROT_READ | PROT_WRITE), 0)

        var seen = Set<UInt32>()
        while let m = pool.alloc() {
            XCTAssertTrue(seen.insert(m.index).inserted)
            assertPristineHeader(m, pool: pool)
        }
        XCTAssertEqual(seen.count, 3000)
        // An attach after restore sees the same (valid) state.
        XCTAssertNoThrow(try MbufPool.attach(config: c, region: region, offset: 0, poolID: 11))
    }

    func testAttachKeepsLiveState() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 16)
        let region = try makeRegion(c)
        let first = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 12)
        let held = (0..<40).compactMap { _ in first.alloc() }
        for m in held[0..<15] { first.free(m) }
        XCTAssertEqual(first.availableCount, 75)
        let second = try MbufPool.attach(config: c, region: region, offset: 0, poolID: 12)
        XCTAssertEqual(second.availableCount, 75)
        XCTAssertEqual(second.ringCount, 15)
        let stillHeld = Set(held[15...].map(\.index))
        let rest = drain(second)
        XCTAssertEqual(rest.count, 75)
        XCTAssertTrue(stillHeld.isDisjoint(with: rest), "attach handed out an mbuf the old process holds")
        for m in held[15...] { second.free(m) }
        XCTAssertEqual(second.availableCount, 25)
    }

    func testAttachRejectsACorruptedControlBlock() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 16)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 13)
        _ = pool.alloc()
        func attachError(_ config: MbufPoolConfig = c, poolID: UInt16 = 13) -> PoolError? {
            do {
                _ = try MbufPool.attach(config: config, region: region, offset: 0, poolID: poolID)
                return nil
            } catch { return error as? PoolError }
        }
        XCTAssertNil(attachError())
        XCTAssertEqual(attachError(MbufPoolConfig(count: 100, cacheSize: 32)),
                       .configMismatch(poolID: 13, field: "cacheSize", stored: 16, expected: 32))
        XCTAssertEqual(attachError(MbufPoolConfig(count: 99, cacheSize: 16)),
                       .configMismatch(poolID: 13, field: "count", stored: 100, expected: 99))
        XCTAssertEqual(attachError(poolID: 14), .configMismatch(poolID: 14, field: "poolID", stored: 13, expected: 14))

        let b = pool.base
        let word = b.load(as: UInt32.self)
        b.storeBytes(of: word ^ 1, as: UInt32.self)
        let e = attachError()
        XCTAssertEqual(e, .badMagic(poolID: 13, offset: 0, found: word ^ 1))
        XCTAssertTrue("\(e!)".contains("bad control block magic"))
        b.storeBytes(of: word, as: UInt32.self)

        b.storeBytes(of: 2, toByteOffset: 4, as: UInt32.self)
        XCTAssertEqual(attachError(), .layoutVersionMismatch(poolID: 13, found: 2, expected: 1))
        b.storeBytes(of: 1, toByteOffset: 4, as: UInt32.self)

        b.storeBytes(of: 7, toByteOffset: PoolControl.ringHeaderOffset, as: UInt64.self) // producer head
        if case .corruptRing(_, let why)? = attachError() { XCTAssertTrue(why.contains("producer head 7")) } else {
            XCTFail("producer head != tail accepted")
        }
        b.storeBytes(of: 0, toByteOffset: PoolControl.ringHeaderOffset, as: UInt64.self)

        // A ring claiming more entries than were ever handed out.
        for off in [0, 64] { b.storeBytes(of: 50, toByteOffset: PoolControl.ringHeaderOffset + off, as: UInt64.self) }
        if case .corruptRing(_, let why)? = attachError() { XCTAssertTrue(why.contains("ever handed out")) } else {
            XCTFail("implausible ring accepted")
        }
        for off in [0, 64] { b.storeBytes(of: 0, toByteOffset: PoolControl.ringHeaderOffset + off, as: UInt64.self) }
        XCTAssertNil(attachError())
    }

    /// Hot upgrade attaches before the old process pauses: the layout is checked at once, the ring
    /// (which the old process may be moving) only by `checkRingQuiescent` after the pause.
    func testAttachInMotionDefersTheRingCheck() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 16)
        let region = try makeRegion(c)
        let pool = try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 15)
        _ = pool.alloc()
        let b = pool.base
        b.storeBytes(of: 7, toByteOffset: PoolControl.ringHeaderOffset, as: UInt64.self)   // an enqueue in flight
        let early = try MbufPool.attach(config: c, region: region, offset: 0, poolID: 15, checkRing: false)
        XCTAssertThrowsError(try early.checkRingQuiescent()) { e in XCTAssertTrue("\(e)".contains("producer head 7"), "\(e)") }
        b.storeBytes(of: 0, toByteOffset: PoolControl.ringHeaderOffset, as: UInt64.self)   // the enqueue done
        XCTAssertNoThrow(try early.checkRingQuiescent())
        XCTAssertThrowsError(try MbufPool.attach(config: MbufPoolConfig(count: 99, cacheSize: 16), region: region, offset: 0,
                                                 poolID: 15, checkRing: false), "the layout is still checked")
    }

    /// The same memfd mapped twice, at two addresses: a pool laid out through one mapping is
    /// attached and used through the other, with both views agreeing.
    func testPositionIndependenceAcrossTwoMappings() throws {
        let c = MbufPoolConfig(count: 200, cacheSize: 16)
        let offset = 8192
        let regionA = try makeRegion(c, offset: offset)
        let regionB = try MemoryRegion(name: "pools-test-b", fd: regionA.fd, fileOffset: 0, size: regionA.size,
                                       pageSize: .small4K, backing: .memfd, ownsFD: false)
        XCTAssertNotEqual(regionA.base, regionB.base)
        let a = try MbufPool.layOut(config: c, region: regionA, offset: offset, poolID: 21)
        let heldA = (0..<50).compactMap { _ in a.alloc() }
        heldA[0].dataLength = 5
        heldA[0].data.storeBytes(of: 0xC0FFEE, as: UInt32.self)

        let b = try MbufPool.attach(config: c, region: regionB, offset: offset, poolID: 21)
        XCTAssertEqual(b.availableCount, 150)
        let viaB = b.mbuf(at: heldA[0].index)!
        XCTAssertEqual(viaB.dataLength, 5)
        XCTAssertEqual(viaB.data.load(as: UInt32.self), 0xC0FFEE)
        XCTAssertNotEqual(viaB.header, heldA[0].header)

        // Free half through B by index, alloc through both: no index is handed out twice.
        for m in heldA[0..<25] { b.free(b.mbuf(at: m.index)!) }
        XCTAssertEqual(a.availableCount, 175)
        var seen = Set(heldA[25...].map(\.index))
        var flip = false
        while true {
            flip.toggle()
            guard let m = flip ? a.alloc() : b.alloc() else { break }
            XCTAssertTrue(seen.insert(m.index).inserted)
        }
        XCTAssertEqual(seen.count, 200)
        XCTAssertEqual(a.verifyImage(), [])
        XCTAssertEqual(b.verifyImage(), [])
    }

    func testVerifyImageFindsFlippedIdentityWords() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 0)
        let pool = try MbufPool.layOut(config: c, region: try makeRegion(c), offset: 0, poolID: 31)
        XCTAssertEqual(pool.verifyImage(), [])
        let m5 = pool.mbuf(at: 5)!
        m5.header.storeBytes(of: 5 ^ 0x100, toByteOffset: MbufLayout.index, as: UInt32.self)
        var problems = pool.verifyImage()
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems[0].contains("element 5") && problems[0].contains("index"), problems[0])
        m5.header.storeBytes(of: 5, toByteOffset: MbufLayout.index, as: UInt32.self)

        pool.mbuf(at: 6)!.header.storeBytes(of: 30, toByteOffset: MbufLayout.poolID, as: UInt16.self)
        pool.mbuf(at: 7)!.header.storeBytes(of: 1, toByteOffset: MbufLayout.bufferLength, as: UInt16.self)
        problems = pool.verifyImage()
        XCTAssertEqual(problems.count, 2)
        XCTAssertTrue(problems[0].contains("element 6: pool id"))
        XCTAssertTrue(problems[1].contains("element 7: bufferLength is 1"))

        for i in 20..<40 { pool.mbuf(at: UInt32(i))!.header.storeBytes(of: 0, toByteOffset: MbufLayout.magic, as: UInt32.self) }
        problems = pool.verifyImage()
        XCTAssertEqual(problems.count, 11)
        XCTAssertTrue(problems[10].contains("and 12 more problems"), problems[10])
    }
}
