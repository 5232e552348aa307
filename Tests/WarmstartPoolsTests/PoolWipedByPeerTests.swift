import CWarmstartShim
import SystemPackage
import XCTest
import WarmstartMemory
@testable import WarmstartPools

/// Issue 12, defect 3: a peer we lent the pool's file truncates it; the SIGBUS guard replaces the
/// region with zero pages. The pool must go on: its metadata is private, every header is written
/// anew at allocation, and mbufs that were in flight (their headers now zeros) are counted as lost
/// when freed — before, such a free was a bad free that trapped (assertionFailure) in debug builds.
final class PoolWipedByPeerTests: XCTestCase {
    func testFreesOfWipedMbufsAreCountedAsLostAndThePoolGoesOn() throws {
        let cfg = MbufPoolConfig(count: 256, cacheSize: 16)
        // Packet memory on a file that cannot be sealed (a memfd without MFD_ALLOW_SEALING stands
        // in for a snapshot file); metadata in a sealed memfd, as LiveMemory keeps it.
        let raw = ws_memfd_create("pool-wiped-test", WS_MFD_CLOEXEC)
        XCTAssertGreaterThanOrEqual(raw, 0)
        let size = PageSize.small4K.roundUp(MbufPoolConfig.elementBytes(cfg))!
        XCTAssertEqual(ftruncate(raw, off_t(size)), 0)
        let packets = try MemoryRegion(name: "mbufs", fd: FileDescriptor(rawValue: raw), fileOffset: 0, size: size,
                                       pageSize: .small4K, backing: .file, ownsFD: true)
        let meta = try MemoryRegion.memfd(name: "pool-meta", size: MbufPoolConfig.metadataBytes(cfg), pageSize: .small4K)
        let pool = try MbufPool.layOut(config: cfg, region: packets, offset: 0, metadata: meta, poolID: 0)

        XCTAssertTrue(packets.peerCanShrink)
        XCTAssertFalse(meta.peerCanShrink, "our memfds are sealed")
        XCTAssertNil(try MemoryRegion.guardAgainstPeerShrink([meta]) { $0.name }, "nothing to guard")
        let flag = try XCTUnwrap(try MemoryRegion.guardAgainstPeerShrink([packets, meta]) { "shared packet memory '\($0.name)'" })
        XCTAssertTrue(try MemoryRegion.guardAgainstPeerShrink([packets]) { $0.name } === flag, "one flag per region set")

        // In flight: a single mbuf, a two-segment chain, one more freed through a cache.
        let single = try XCTUnwrap(pool.alloc())
        let head = try XCTUnwrap(pool.alloc()), tail = try XCTUnwrap(pool.alloc())
        XCTAssertTrue(pool.append(tail, to: head))
        let cached = try XCTUnwrap(pool.alloc())
        XCTAssertFalse(packets.lostToPeer)

        XCTAssertEqual(ftruncate(raw, 0), 0)
        // The next touch faults; the guard maps zero pages over the region and sets the flag.
        XCTAssertEqual(single.magic, 0, "the header reads zeros now")
        XCTAssertTrue(flag.isSet)
        XCTAssertTrue(packets.lostToPeer)
        XCTAssertTrue((flag.reason(peer: "back-end peer", whose: "the") ?? "").hasPrefix("back-end peer truncated the shared packet memory 'mbufs'"))

        pool.free(single)
        pool.free(head)
        let cache = MbufCache(pool: pool)
        cache.free(cached)
        cache.flush()
        XCTAssertEqual(pool.lostCount, 3, "single, the chain's head (its tail is unreachable) and the cached one")
        XCTAssertEqual(pool.badFreeCount, 0)
        XCTAssertEqual(pool.doubleFreeCount, 0)

        // Everything not in flight still allocates, with a pristine header and usable data.
        var got: [Mbuf] = []
        while let m = pool.alloc() {
            assertPristineHeader(m, pool: pool)
            m.data.storeBytes(of: 0xABCD, as: UInt16.self)
            XCTAssertEqual(m.data.load(as: UInt16.self), 0xABCD)
            got.append(m)
        }
        XCTAssertEqual(got.count, cfg.count - 4, "the four in flight are lost, the rest are there")
        for m in got { pool.free(m) }
        XCTAssertEqual(pool.badFreeCount, 0)
        XCTAssertEqual(pool.availableCount, cfg.count - 4)
    }
}
