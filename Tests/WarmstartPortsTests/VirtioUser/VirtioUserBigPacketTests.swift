import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartPorts
import WarmstartTestSupport
import WarmstartSpec

/// Receive without MRG_RXBUF ("big packets"): each receive buffer is a descriptor chain of as many
/// mbufs as the largest frame the negotiated features allow needs, and frames come back as mbuf
/// chains, byte for byte — against Warmstart's own back-end, split and packed.
final class VirtioUserBigPacketTests: XCTestCase {
    func testLargestFrameFollowsTheNegotiatedFeatures() {
        let tso = VirtioFeatures([.guestTSO4]).rawValue
        XCTAssertEqual(VirtioUserConfig.largestReceivedFrame(features: 0, mtu: nil), 1514)
        XCTAssertEqual(VirtioUserConfig.largestReceivedFrame(features: 0, mtu: 9000), 1514, "MTU only when F_MTU is negotiated")
        XCTAssertEqual(VirtioUserConfig.largestReceivedFrame(features: VirtioFeatures.mtu.rawValue, mtu: 9000), 9014)
        for f in [VirtioFeatures.guestTSO4, .guestTSO6, .guestUFO] {
            XCTAssertEqual(VirtioUserConfig.largestReceivedFrame(features: f.rawValue | VirtioFeatures.mtu.rawValue, mtu: 9000), 65550,
                           VirtioFeatures.names(f.rawValue).joined())
        }
        XCTAssertEqual(VirtioUserConfig.largestReceivedFrame(features: tso, mtu: nil), 65550)
    }

    func testSegmentsPerReceiveBuffer() throws {
        let fe = try FrontendSide()
        func segs(_ f: UInt64, _ mtu: Int?) throws -> Int {
            try VirtioUserPort.receiveSegments(features: f, mtu: mtu, pool: fe.pool, headerSize: 12, queueSize: 256)
        }
        // The first mbuf holds 2048 frame bytes, every further one 2060 (header room + data room).
        XCTAssertEqual(try segs(VirtioFeatures.mrgRxbuf.rawValue | VirtioFeatures.mtu.rawValue, 9000), 1, "MRG_RXBUF: one mbuf, frames spread")
        XCTAssertEqual(try segs(0, nil), 1, "12 + 1514 fits one mbuf")
        XCTAssertEqual(try segs(VirtioFeatures.mtu.rawValue, 2034), 1, "2048-byte frames fit the first mbuf")
        XCTAssertEqual(try segs(VirtioFeatures.mtu.rawValue, 2035), 2, "2049-byte frames do not")
        XCTAssertEqual(try segs(VirtioFeatures.mtu.rawValue, 9000), 5, "9014 B: 2048 in the first mbuf, 6966 in 4 more")
        XCTAssertEqual(try segs(VirtioFeatures.guestTSO6.rawValue, nil), 32, "65550 B: 2048 + 31 × 2060")
        XCTAssertThrowsError(try VirtioUserPort.receiveSegments(features: VirtioFeatures.guestTSO4.rawValue, mtu: nil, pool: fe.pool,
                                                                headerSize: 12, queueSize: 16)) { e in
            XCTAssertTrue("\(e)".contains("65550-byte frames") && "\(e)".contains("33 descriptors") && "\(e)".contains("mrg=1"), "\(e)")
        }
    }

    func testJumboFramesWithoutMergeableBuffers() throws {
        for packed in [false, true] {
            let fe = try FrontendSide()
            let (port, be, n, pairs) = try connectVirtioUser(fe, VirtioUserConfig(packed: packed, mergeable: false, mtu: 9000))
            XCTAssertEqual(n.features & VirtioFeatures.mrgRxbuf.rawValue, 0)
            XCTAssertNotEqual(n.features & VirtioFeatures.mtu.rawValue, 0, "F_MTU negotiated with mtu=")
            XCTAssertEqual(be.session.netConfig.mtu, 9000, "NET_SET_MTU told the back-end")
            XCTAssertEqual(port.receiveSegments, 5)
            let q = pairs[0]
            XCTAssertEqual(q.rx.inFlightCount, 256 / 6, "the receive ring holds chains of 6 descriptors (header + 5 mbufs)")
            let cache = MbufCache(pool: fe.pool, size: 64)
            // Back-end → front-end, each size several times (the ring wraps: 42 chains posted).
            let sizes = (0..<120).map { [9000, 64, 1514, 2049, 4120, 8999, 6000][$0 % 7] }
            for (k, size) in sizes.enumerated() {
                let f = testFrame(size: size, seed: UInt8(truncatingIfNeeded: k))
                XCTAssertTrue(be.send(f), "back-end delivered \(size) B (packed \(packed))")
                let got = receiveFrames(q, pool: fe.pool, cache: cache, count: 1)
                XCTAssertEqual(got.count, 1, "\(size) B frame received (packed \(packed))")
                XCTAssertTrue(sameFrame(got.first, f), "\(size) B: \(frameDiff(got.first, f))")
            }
            XCTAssertEqual(q.errorCount, 0)
            // Front-end → back-end still works (9000 B as chained descriptors).
            let f = testFrame(size: 9000, seed: 77)
            var m = makeChain(fe.pool, f)!
            XCTAssertEqual(q.transmitBurst(&m, count: 1, cache: cache), 1)
            XCTAssertTrue(sameFrame(be.receive(1).first, f))
            XCTAssertEqual(q.transmitBurst(&m, count: 0, cache: cache), 0, "reaps the sent chain")
            cache.flush()
            // Everything not posted is back; the posted chains come back at teardown.
            XCTAssertEqual(q.tx.inFlightCount, 0)
            XCTAssertEqual(fe.pool.inUseCount, q.rx.inFlightCount * 5)
            port.teardown()
            XCTAssertEqual(fe.pool.inUseCount, 0, "teardown freed every chain whole (packed \(packed))")
        }
    }

    func testFrameTooLargeForTheChainIsDroppedByTheDevice() throws {
        // Without mtu= the buffers hold 1514-byte frames: a 9000-byte frame has no room, the
        // device drops it (and counts it), the next frame still arrives.
        let fe = try FrontendSide()
        let (_, be, _, pairs) = try connectVirtioUser(fe, VirtioUserConfig(mergeable: false))
        XCTAssertEqual(pairs[0].rxSegments, 1)
        XCTAssertFalse(be.send(testFrame(size: 9000, seed: 1)), "no room for 9000 B in a 1514 B buffer")
        XCTAssertEqual(be.device(0)?.counters.dropped, 1)
        let small = testFrame(size: 1514, seed: 2)
        _ = be.send(small)
        XCTAssertEqual(be.device(0)?.counters.dropped, 1, "the 1514 B frame was delivered")
        let cache = MbufCache(pool: fe.pool, size: 0)
        let got = receiveFrames(pairs[0], pool: fe.pool, cache: cache, count: 1)
        XCTAssertTrue(sameFrame(got.first, small), frameDiff(got.first, small))
    }

    func testMTURequiredWhenAsked() throws {
        let fe = try FrontendSide()
        let be = try InProcessBackend(configuration: VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.mtu.rawValue))
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: VirtioUserConfig(mergeable: false, mtu: 9000), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        XCTAssertThrowsError(try port.establish(fd: be.frontendFD)) { e in
            guard case let VirtioUserError.missingFeatures(names) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(names, ["mtu"])
        }
    }
}
