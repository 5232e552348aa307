import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartEngine
@testable import WarmstartPorts
import WarmstartTestSupport

/// Issue 12: the pool's last element, its header rewritten by a virtio-user back-end (data offset
/// and length 0xFFFF), through the paths that read and write at its data: macswap and the
/// writev of a TAP queue (here into a datagram socket). Both reach about 128 KiB past the end of
/// the pool's mapping; with the regions' trailing guard that is scratch memory of ours, never a
/// fault. Run in a child process (this test binary again) so a crash fails the test.
final class HostileMbufHeaderDatapathTests: XCTestCase {
    static let childVariable = "WS_HOSTILE_MBUF_DATAPATH_CHILD"

    func testLastElementWithMaximalOffsetAndLengthThroughMacswapAndTap() throws {
        if ProcessInfo.processInfo.environment[Self.childVariable] == "1" {
            try hostileLastElement()
            // The child's verdict as its exit status (42: ran through, every assertion held).
            exit((testRun?.totalFailureCount ?? 1) == 0 ? 42 : 43)
        }
        let child = try ChildTest.run("WarmstartPortsTests.HostileMbufHeaderDatapathTests/testLastElementWithMaximalOffsetAndLengthThroughMacswapAndTap",
                                      environment: [Self.childVariable: "1"], quiet: true)
        XCTAssertFalse(child.timedOut)
        XCTAssertEqual(child.reason, .exit, "the child died of signal \(child.status)")
        XCTAssertEqual(child.status, 42, "the child's assertions failed (43) or it ran no scenario")
    }

    func hostileLastElement() throws {
        let cfg = MbufPoolConfig(count: 64, cacheSize: 0)
        let region = try MemoryRegion.memfd(name: "hostile", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!,
                                            pageSize: .small4K)
        let pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
        let cache = MbufCache(pool: pool)
        var taken: [Mbuf] = []
        while let m = cache.alloc() { taken.append(m) }
        let m = try XCTUnwrap(taken.first { $0.index == UInt32(cfg.count - 1) })
        XCTAssertLessThan(region.base + region.size - m.header, 4096 + MbufLayout.headerSize)
        m.dataOffset = 0xFFFF
        m.dataLength = 0xFFFF
        m.packetLength = 0xFFFF_FFFF

        swapMACs(m)
        swapMACs(m)

        var sv: [Int32] = [-1, -1]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0, &sv), 0)
        defer { close(sv[0]); close(sv[1]) }
        var big: Int32 = 1 << 20
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, socklen_t(MemoryLayout<Int32>.size))
        let q = TapQueue(fd: sv[0], name: "dgram")
        var p = m
        XCTAssertEqual(q.transmitBurst(&p, count: 1, cache: cache), 1)
        XCTAssertEqual(q.errorCount, 0)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 1 << 17, alignment: 8)
        defer { buf.deallocate() }
        XCTAssertEqual(recv(sv[1], buf, 1 << 17, 0), VirtioNetHeader.size + 0xFFFF, "the whole 'frame' went out, read from mapped memory")
        for t in taken where t.index != m.index { cache.free(t) }
    }
}
