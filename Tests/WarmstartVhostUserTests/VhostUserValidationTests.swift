import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

final class VhostUserValidationTests: XCTestCase {
    func testWrongPayloadSizes() {
        let s = VhostUserBackendSession()
        for (req, size) in [(VhostUserRequest.setFeatures, 4), (.setFeatures, 12), (.getFeatures, 8),
                            (.setVringNum, 12), (.setVringAddr, 32), (.addMemReg, 32), (.setOwner, 1)] {
            let o = s.sendRaw(request: req.rawValue, payload: [UInt8](repeating: 0, count: size))
            XCTAssertFalse(o.ok, "\(req) with \(size) bytes")
            if case .payloadSize = o.error?.reason {} else { XCTFail("\(req): \(String(describing: o.error))") }
        }
    }

    func testMemTableSizeMustMatchRegionCount() {
        let s = VhostUserBackendSession()
        var w = WireWriter()
        w.u32(2); w.u32(0); w.zeros(32)   // claims 2 regions, carries 1
        let o = s.sendRaw(request: 5, payload: w.bytes, fds: [makeEventFD(), makeEventFD()])
        XCTAssertEqual(o.error?.reason, .payloadSize(got: 40, expected: "72"))
        var w2 = WireWriter()
        w2.u32(9); w2.u32(0); w2.zeros(9 * 32)
        XCTAssertEqual(s.sendRaw(request: 5, payload: w2.bytes).error?.reason, .tooManyRegions(9, max: 8))
    }

    func testFDsOnRequestThatTakesNoneAreClosed() {
        let s = VhostUserBackendSession()
        let fd = makeEventFD()
        XCTAssertTrue(isOpen(fd))
        let o = s.send(msg(.setFeatures, .u64(VirtioFeatures.version1.rawValue), fds: [fd]))
        XCTAssertEqual(o.error?.reason, .unexpectedFDs(1))
        XCTAssertFalse(isOpen(fd), "the stray descriptor must be closed at once")
        let fd2 = makeEventFD()
        _ = s.send(msg(.getFeatures, fds: [fd2]))
        XCTAssertFalse(isOpen(fd2))
    }

    func testVringFileMissingFD() {
        let s = VhostUserBackendSession()
        XCTAssertEqual(s.send(msg(.setVringKick, .u64(0))).error?.reason, .fdCount(got: 0, expected: 1))
        XCTAssertEqual(s.send(msg(.setVringCall, .u64(1))).error?.reason, .fdCount(got: 0, expected: 1))
    }

    func testVringFileNOFDWithFD() {
        let s = VhostUserBackendSession()
        let fd = makeEventFD()
        let o = s.send(msg(.setVringKick, .u64(VringFilePayload.noFDFlag), fds: [fd]))
        XCTAssertFalse(o.ok)
        XCTAssertFalse(isOpen(fd))
        // NOFD alone is fine (polling).
        XCTAssertTrue(s.send(msg(.setVringKick, .u64(VringFilePayload.noFDFlag))).ok)
        // Undefined bits are refused.
        XCTAssertEqual(s.send(msg(.setVringCall, .u64(1 << 9 | VringFilePayload.noFDFlag))).error?.reason,
                       .reservedBits("vring file u64", 1 << 9))
    }

    func testQueueIndexOutOfRange() {
        let s = VhostUserBackendSession()   // one pair: rings 0 and 1
        XCTAssertTrue(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 1, num: 256)))).ok)
        XCTAssertEqual(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 2, num: 256)))).error?.reason,
                       .queueIndex(2, queues: 2))
        // 0x10000 + 1 must not be truncated to ring 1.
        XCTAssertEqual(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0x10001, num: 256)))).error?.reason,
                       .queueIndex(0x10001, queues: 2))
        XCTAssertEqual(s.send(msg(.setVringAddr, .vringAddress(VringAddressPayload(index: 0x10000, descriptor: 0, used: 0, available: 0)))).error?.reason,
                       .queueIndex(0x10000, queues: 2))
        let fd = makeEventFD()
        XCTAssertEqual(s.send(msg(.setVringKick, .u64(5), fds: [fd])).error?.reason, .queueIndex(5, queues: 2))
        XCTAssertFalse(isOpen(fd))
        // GET_VRING_BASE has an explicit reply that cannot express failure: fatal.
        XCTAssertTrue(s.send(msg(.getVringBase, .vringState(VringStatePayload(index: 7, num: 0)))).isFatal)
    }

    func testUnknownAndUnsupportedRequests() {
        let s = VhostUserBackendSession()
        _ = s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.replyAck.mask)))
        let o = s.sendRaw(request: 999, flags: 1 | VhostUserHeader.needReplyFlag, payload: [])
        XCTAssertEqual(o.error?.reason, .unknownRequest)
        XCTAssertEqual(o.replyU64, 1)
        XCTAssertFalse(o.isFatal)
        let fd = makeEventFD()
        let o2 = s.sendRaw(request: VhostUserRequest.gpuSetSocket.rawValue, payload: [], fds: [fd])
        if case .unsupported = o2.error?.reason {} else { XCTFail("\(String(describing: o2.error))") }
        XCTAssertFalse(isOpen(fd))
    }

    func testSetFeaturesWithUnofferedBitsFails() {
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.ringPacked.rawValue))
        let o = s.send(msg(.setFeatures, .u64(VirtioFeatures([.version1, .ringPacked]).rawValue)))
        XCTAssertFalse(o.ok)
        XCTAssertTrue(o.error!.description.contains("ringPacked"), o.error!.description)
        XCTAssertNil(s.ackedFeatures)
        XCTAssertFalse(s.send(msg(.setFeatures, .u64(VirtioFeatures.logAll.rawValue))).ok)
        XCTAssertTrue(s.send(msg(.setFeatures, .u64(VirtioFeatures.version1.rawValue))).ok)
        XCTAssertEqual(s.send(msg(.getFeatures)).replyU64, VhostUserFeatures.netDefault & ~VirtioFeatures.ringPacked.rawValue)
        XCTAssertFalse(s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.logSHMFD.mask))).ok)
    }

    /// IN_ORDER is offered (the rings use buffers in the order they are made available; packed
    /// guest TX is reported one used descriptor per burst) and can be acked like any other bit.
    func testInOrderOfferedAndAcked() {
        let s = VhostUserBackendSession()
        let offer = s.send(msg(.getFeatures)).replyU64 ?? 0
        XCTAssertNotEqual(offer & VirtioFeatures.inOrder.rawValue, 0)
        let ack = VirtioFeatures([.version1, .ringPacked, .inOrder]).rawValue
        XCTAssertTrue(s.send(msg(.setFeatures, .u64(ack))).ok)
        XCTAssertEqual(s.ackedFeatures, ack)
    }

    func testReplyAck() {
        let s = VhostUserBackendSession()
        // Before REPLY_ACK is negotiated NEED_REPLY gets no reply.
        XCTAssertNil(s.send(msg(.setOwner, needReply: true)).reply)
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.replyAck.mask))).ok)
        let good = s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 256)), needReply: true))
        XCTAssertEqual(good.replyU64, 0)
        XCTAssertTrue(good.reply!.header.isReply)
        XCTAssertEqual(good.reply!.header.request, VhostUserRequest.setVringNum.rawValue)
        let bad = s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 0)), needReply: true))
        XCTAssertEqual(bad.replyU64, 1)
        XCTAssertNotNil(bad.error)
        XCTAssertNil(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 256)))).reply)
        // A request with an explicit reply answers with its own payload.
        XCTAssertEqual(s.send(msg(.getQueueNum, needReply: true)).replyU64, 1)
    }

    func testGetConfigBounds() {
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(
            maxQueuePairs: 2, netConfig: VirtioNetConfig(mac: [2, 1, 2, 3, 4, 5], mtu: 9000)))
        // Not negotiated: zero-length reply is the spec's error.
        let pre = s.send(msg(.getConfig, .config(ConfigPayload(offset: 0, size: 6, bytes: [0, 0, 0, 0, 0, 0]))))
        XCTAssertEqual(pre.reply?.header.size, 0)
        _ = s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.config.mask)))
        let o = s.send(msg(.getConfig, .config(ConfigPayload(offset: 0, size: 12, bytes: [UInt8](repeating: 0, count: 12)))))
        guard case let .config(c)? = o.reply?.payload else { return XCTFail("no config reply") }
        XCTAssertEqual(Array(c.bytes[0..<6]), [2, 1, 2, 3, 4, 5])
        XCTAssertEqual(VirtioNetConfig(bytes: c.bytes).maxVirtqueuePairs, 2)
        XCTAssertEqual(VirtioNetConfig(bytes: c.bytes).mtu, 9000)
        for (off, size) in [(UInt32(0), UInt32(13)), (12, 1), (11, 2), (UInt32.max, 2)] {
            let r = s.send(msg(.getConfig, .config(ConfigPayload(offset: off, size: size, bytes: [UInt8](repeating: 0, count: Int(size))))))
            XCTAssertEqual(r.reply?.header.size, 0, "offset \(off) size \(size)")
            XCTAssertNotNil(r.error)
        }
        // Config payload size must match the declared size.
        var w = WireWriter()
        w.u32(0); w.u32(6); w.u32(0); w.zeros(4)
        XCTAssertEqual(s.sendRaw(request: 24, payload: w.bytes).error?.reason, .payloadSize(got: 16, expected: "18"))
        // SET_CONFIG: the driver may write the MAC, not the MTU; migration may write anything.
        XCTAssertTrue(s.send(msg(.setConfig, .config(ConfigPayload(offset: 0, size: 6, bytes: [2, 9, 9, 9, 9, 9])))).ok)
        XCTAssertEqual(s.netConfig.mac, [2, 9, 9, 9, 9, 9])
        XCTAssertFalse(s.send(msg(.setConfig, .config(ConfigPayload(offset: 10, size: 2, bytes: [0, 4])))).ok)
        XCTAssertTrue(s.send(msg(.setConfig, .config(ConfigPayload(offset: 10, size: 2, flags: 1, bytes: [0, 4])))).ok)
        XCTAssertEqual(s.netConfig.mtu, 1024)
    }
}
