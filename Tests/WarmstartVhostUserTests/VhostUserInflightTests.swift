import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

final class VhostUserInflightTests: XCTestCase {
    let withInflight = VhostUserFeatures.protocolDefault | VhostUserFeatures.protocolOptIn

    func fileSize(_ fd: Int32) -> Int {
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        return Int(st.st_size)
    }

    func testRegionSizesFollowTheSpecLayout() {
        XCTAssertEqual(VhostUserInflightRegion.queueRegionSize(queueSize: 256, layout: .split), 4160)   // 16 + 16×256
        XCTAssertEqual(VhostUserInflightRegion.queueRegionSize(queueSize: 256, layout: .packed), 8256)  // 29 + 32×256 → 64
        XCTAssertEqual(VhostUserInflightRegion.queueRegionSize(queueSize: 1, layout: .split), 64)
    }

    func testNotOfferedByDefault() {
        let s = VhostUserBackendSession()
        XCTAssertEqual(s.send(msg(.getProtocolFeatures)).replyU64! & VhostUserProtocolFeature.inflightSHMFD.mask, 0)
        XCTAssertFalse(s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.inflightSHMFD.mask))).ok)
    }

    func testGetThenSetInflightAndRingsSeeTheirRegion() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(protocolFeatures: withInflight))
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(withInflight))).ok)
        XCTAssertTrue(s.send(msg(.setFeatures, .u64(VirtioFeatures([.version1, .protocolFeatures]).rawValue))).ok)
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        let g = s.send(msg(.getInflightFD, .inflight(InflightPayload(mmapSize: 0, mmapOffset: 0, numQueues: 2, queueSize: 256))))
        guard case let .inflight(p)? = g.reply?.payload, let lent = g.reply?.fds.first else { return XCTFail("\(String(describing: g.error))") }
        // The reply's descriptor is lent by the session (sending duplicates it into the peer): copy it as a send would.
        let fd = dup(lent)
        defer { close(fd) }
        XCTAssertEqual(p.mmapSize, 2 * 4160)
        XCTAssertEqual(p.numQueues, 2)
        XCTAssertEqual(fileSize(fd), 2 * 4160)
        // The front-end hands it back (e.g. after a back-end restart).
        XCTAssertTrue(s.send(msg(.setInflightFD, .inflight(p), fds: [dup(fd)])).ok)
        let o = configureRing(s, RingPlan(index: 1), mem: mem)
        guard let setup = o.started.first else { return XCTFail("\(String(describing: o.error))") }
        XCTAssertEqual(setup.inflightRegion, setup.inflight!.queueRegion(0)! + 4160)
        // Shared with the front-end's mapping of the same fd.
        let front = mmap(nil, 2 * 4160, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        XCTAssertNotEqual(front, MAP_FAILED)
        defer { munmap(front, 2 * 4160) }
        setup.inflightRegion!.storeBytes(of: 1, toByteOffset: 8, as: UInt16.self)   // version
        XCTAssertEqual(front.load(fromByteOffset: 4160 + 8, as: UInt16.self), 1)
    }

    func testSetInflightTooSmallOrTooManyQueuesRefused() {
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(protocolFeatures: withInflight))
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(withInflight))).ok)
        let mem = FrontendMemory(size: 8192)
        let fd = mem.dupFD()
        let small = s.send(msg(.setInflightFD, .inflight(InflightPayload(mmapSize: 4096, mmapOffset: 0, numQueues: 2, queueSize: 256)), fds: [fd]))
        if case .memory = small.error?.reason {} else { XCTFail("\(String(describing: small.error))") }
        XCTAssertFalse(isOpen(fd))
        let fd2 = mem.dupFD()
        let many = s.send(msg(.setInflightFD, .inflight(InflightPayload(mmapSize: 8192, mmapOffset: 0, numQueues: 3, queueSize: 1)), fds: [fd2]))
        XCTAssertEqual(many.error?.reason, .queueIndex(3, queues: 2))
        XCTAssertFalse(isOpen(fd2))
        // Beyond the file.
        let fd3 = mem.dupFD()
        XCTAssertFalse(s.send(msg(.setInflightFD, .inflight(InflightPayload(mmapSize: 8192, mmapOffset: 4096, numQueues: 1, queueSize: 1)), fds: [fd3])).ok)
        XCTAssertFalse(isOpen(fd3))
        XCTAssertNil(s.inflight)
    }
}
