import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartPorts
import WarmstartTestSupport

/// A virtio-user back-end is given our memory (SET_MEM_TABLE, one fd per region) and may write any
/// byte of every file it gets: it must get packet memory and rings only, never the pool's control
/// block or free ring (issue 12, defect 5).
final class VirtioUserMemorySharingTests: XCTestCase {
    static func inode(_ fd: Int32) -> (UInt64, UInt64) {
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    func testBackendGetsNoFileHoldingThePoolMetadata() throws {
        let fe = try FrontendSide()
        let be = try InProcessBackend()
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: VirtioUserConfig(queueSize: 64), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        let (_, pairs) = try port.establish(fd: be.frontendFD)
        port.queues = pairs
        XCTAssertTrue(be.waitForRings(2))

        // What we advertised, and what the back-end mapped: no entry is the metadata's file, and
        // the packet region's entry is exactly the elements.
        let meta = Self.inode(fe.pool.metadataRegion.fd.rawValue)
        for e in VirtioUserPort.memoryTable(port.regions) {
            XCTAssertFalse(Self.inode(e.fd) == meta, "SET_MEM_TABLE lists the file of the pool's control block")
        }
        let mapped = be.session.memory!.regions
        XCTAssertEqual(mapped.count, 2)
        for m in mapped { XCTAssertFalse(Self.inode(m.fd) == meta, "the back-end mapped the pool's control block") }
        let packet = mapped.first { $0.region.guestAddress == fe.poolRegion.ioAddress }!
        XCTAssertEqual(packet.region.mmapOffset, UInt64(fe.poolRegion.fileOffset + fe.pool.elementRange.lowerBound))
        XCTAssertEqual(packet.region.size, UInt64(fe.pool.elementRange.count))
        XCTAssertFalse(fe.pool.base >= fe.poolRegion.base && fe.pool.base < fe.poolRegion.base + fe.poolRegion.size,
                       "the control block lies inside the shared packet region")

        // Traffic both ways still works.
        let cache = MbufCache(pool: fe.pool, size: 64)
        let f = testFrame(size: 128, seed: 7)
        var m = makeChain(fe.pool, f)!
        XCTAssertEqual(pairs[0].transmitBurst(&m, count: 1, cache: cache), 1)
        XCTAssertTrue(sameFrame(be.receive(1).first, f))
        let g = testFrame(size: 256, seed: 9)
        XCTAssertTrue(be.send(g))
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 8)
        defer { out.deallocate() }
        var n = 0
        let end = Date().addingTimeInterval(testDeadline)
        while n == 0 && Date() < end { n = pairs[0].receiveBurst(into: out, max: 8, cache: cache) }
        XCTAssertEqual(n, 1)
        if n == 1 {
            XCTAssertTrue(sameFrame(copyFrame(fe.pool, out[0]), g))
            cache.free(out[0])
        }
        cache.flush()

        // A hostile back-end writes every byte of every file it was given, from offset 0 to the
        // end (more than it was told to map). Once our port is gone, the pool is intact: its
        // control block still checks out and every mbuf can be had, each once.
        let fds = mapped.map { dup($0.fd) }
        port.teardown()
        let before = (fe.pool.ringCount, fe.pool.neverUsedCount)
        for fd in fds {
            defer { close(fd) }
            var st = stat()
            XCTAssertEqual(fstat(fd, &st), 0)
            let size = Int(st.st_size)
            let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
            XCTAssertNotEqual(p, MAP_FAILED)
            memset(p, 0xA5, size)
            munmap(p, size)
        }
        XCTAssertNoThrow(try MbufPool.attach(config: fe.pool.config, region: fe.poolRegion, offset: 0,
                                             metadata: fe.metadata, poolID: fe.pool.poolID))
        XCTAssertEqual(fe.pool.ringCount, before.0)
        XCTAssertEqual(fe.pool.neverUsedCount, before.1)
        var seen = Set<UInt32>()
        while let m = fe.pool.alloc() { XCTAssertTrue(seen.insert(m.index).inserted) }
        XCTAssertEqual(seen.count, fe.pool.config.count)
        XCTAssertEqual(fe.pool.corruptIndexCount, 0)
    }

    /// A pool whose control block sits in a region the port would share is refused up front.
    func testPortRefusesToShareThePoolMetadata() throws {
        let fe = try FrontendSide()
        let cfg = MbufPoolConfig(count: 256, cacheSize: 0)
        let region = try MemoryRegion.memfd(name: "inline-pool", size: MbufPoolConfig.bytesNeeded(cfg), pageSize: .small4K,
                                            ioAddress: 1 << 40)
        let inline = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 5)
        XCTAssertThrowsError(try VirtioUserPort(config: VirtioUserConfig(), regions: [region, fe.general], pool: inline, arena: fe.arena)) {
            XCTAssertTrue("\($0)".contains("control block"), "\($0)")
        }
        // Separate metadata, but its region listed among the shared ones.
        XCTAssertThrowsError(try VirtioUserPort(config: VirtioUserConfig(), regions: fe.regions + [fe.metadata], pool: fe.pool,
                                                arena: fe.arena)) {
            XCTAssertTrue("\($0)".contains("vu-pool-meta"), "\($0)")
        }
    }
}
