import CWarmstartShim
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUserWire

/// The header and the message validator, without a session: request codes, header flags and sizes,
/// whole-message decoding, and what the validator does with descriptors.
final class VhostUserHeaderValidatorTests: XCTestCase {
    func headerBytes(request: UInt32, flags: UInt32, size: UInt32) -> [UInt8] {
        var w = WireWriter()
        VhostUserHeader(request: request, flags: flags, size: size).encode(into: &w)
        return w.bytes
    }

    func testRequestCodesMatchTheSpec() {
        XCTAssertEqual(VhostUserRequest.getFeatures.rawValue, 1)
        XCTAssertEqual(VhostUserRequest.setMemTable.rawValue, 5)
        XCTAssertEqual(VhostUserRequest.getVringBase.rawValue, 11)
        XCTAssertEqual(VhostUserRequest.getProtocolFeatures.rawValue, 15)
        XCTAssertEqual(VhostUserRequest.setVringEnable.rawValue, 18)
        XCTAssertEqual(VhostUserRequest.getConfig.rawValue, 24)
        XCTAssertEqual(VhostUserRequest.resetDevice.rawValue, 34)
        XCTAssertEqual(VhostUserRequest.getMaxMemSlots.rawValue, 36)
        XCTAssertEqual(VhostUserRequest.addMemReg.rawValue, 37)
        XCTAssertEqual(VhostUserRequest.remMemReg.rawValue, 38)
        XCTAssertEqual(VhostUserRequest.setStatus.rawValue, 39)
        XCTAssertEqual(VhostUserRequest.getStatus.rawValue, 40)
    }

    func testHeaderBadVersionIsFatal() {
        XCTAssertThrowsError(try VhostUserHeader.decode(headerBytes(request: 1, flags: 0x2, size: 0), expectReply: false)) { e in
            let e = e as! VhostUserError
            XCTAssertEqual(e.reason, .badVersion(2))
            XCTAssertTrue(e.isFatal)
            XCTAssertTrue(e.description.contains("VHOST_USER_GET_FEATURES"))
        }
    }

    func testHeaderReservedBits() {
        XCTAssertThrowsError(try VhostUserHeader.decode(headerBytes(request: 1, flags: 0x1 | 0x100, size: 0), expectReply: false)) { e in
            XCTAssertEqual((e as! VhostUserError).reason, .reservedFlags(0x100))
        }
    }

    func testHeaderReplyBitOnRequestAndMissingOnReply() {
        XCTAssertThrowsError(try VhostUserHeader.decode(headerBytes(request: 1, flags: 0x5, size: 0), expectReply: false)) { e in
            XCTAssertEqual((e as! VhostUserError).reason, .replyFlagOnRequest)
        }
        XCTAssertThrowsError(try VhostUserHeader.decode(headerBytes(request: 1, flags: 0x1, size: 8), expectReply: true)) { e in
            XCTAssertEqual((e as! VhostUserError).reason, .replyFlagMissing)
        }
        XCTAssertNoThrow(try VhostUserHeader.decode(headerBytes(request: 1, flags: 0x5, size: 8), expectReply: true))
    }

    func testDecodeWholeMessageBytes() throws {
        let v = VhostUserMessageValidator(queueCount: 2)
        let m = msg(.setVringAddr, .vringAddress(VringAddressPayload(index: 1, descriptor: 0x1000, used: 0x3000, available: 0x2000)))
        let decoded = try v.decodeRequest(bytes: m.encoded(), fds: [])
        XCTAssertEqual(decoded.payload, m.payload)
        XCTAssertEqual(decoded.header, m.header)
        // Wire order is descriptor, used, available.
        XCTAssertEqual(Array(m.encoded()[12 + 16..<12 + 24]), [0, 0x30, 0, 0, 0, 0, 0, 0])
        let fd = makeEventFD()
        var bad = m.encoded()
        bad[4] = 0x02   // version 2
        XCTAssertThrowsError(try v.decodeRequest(bytes: bad, fds: [fd])) { e in XCTAssertTrue((e as! VhostUserError).isFatal) }
        XCTAssertFalse(isOpen(fd))
    }

    func testHeaderOversize() {
        XCTAssertThrowsError(try VhostUserHeader.decode(headerBytes(request: 5, flags: 1, size: 4097), expectReply: false)) { e in
            XCTAssertEqual((e as! VhostUserError).reason, .oversize(4097, max: 4096))
        }
    }

    func testRemMemRegToleratesAndClosesOneFD() {
        let v = VhostUserMessageValidator(queueCount: 2)
        let fd = makeEventFD()
        let m = msg(.remMemReg, .memoryRegion(MemoryRegionPayload(guestAddress: 0, size: 4096, userAddress: 0, mmapOffset: 0)), fds: [fd])
        let bytes = m.encoded()
        let decoded = try! v.decodeRequest(header: m.header, payload: Array(bytes[12...]), fds: [fd])
        XCTAssertEqual(decoded.fds, [])
        XCTAssertFalse(isOpen(fd))
    }
}

/// Every request code, one by one: wrong payload size refused; descriptors on a request that takes
/// none closed; a request that needs one refused without it; unsupported ones refused and their
/// descriptors closed.
final class VhostUserPerRequestValidationTests: XCTestCase {
    func validSize(_ kind: PayloadKind) -> Int {
        switch kind {
        case .none: return 0
        case .u64, .vringState: return 8
        case .vringAddress, .memoryRegion: return 40
        case .memoryTable: return 8
        case .log: return 16
        case .inflight: return 24
        case .config: return 12
        }
    }

    func testEveryRequest() {
        let v = VhostUserMessageValidator(queueCount: 2)
        for request in VhostUserRequest.allCases {
            func decode(_ size: Int, _ fds: [Int32]) -> Result<VhostUserMessage, VhostUserError> {
                let h = VhostUserHeader(request: request.rawValue, size: UInt32(size))
                return Result { () throws(VhostUserError) in try v.decodeRequest(header: h, payload: [UInt8](repeating: 0, count: size), fds: fds) }
            }
            guard let (kind, policy) = request.requestLayout else {
                let fd = makeEventFD()
                guard case let .failure(e) = decode(8, [fd]), case .unsupported = e.reason else {
                    XCTFail("\(request) should be unsupported"); continue
                }
                XCTAssertFalse(isOpen(fd), "\(request)")
                continue
            }
            let good = validSize(kind)
            // Wrong size: one byte more than the valid one.
            let fdW = makeEventFD()
            if case .success = decode(good + 1, [fdW]) { XCTFail("\(request): oversize payload accepted") }
            XCTAssertFalse(isOpen(fdW), "\(request): descriptor of a refused message must be closed")
            switch policy {
            case .none:
                let fd = makeEventFD()
                guard case let .failure(e) = decode(good, [fd]) else { XCTFail("\(request): fd accepted"); continue }
                XCTAssertEqual(e.reason, .unexpectedFDs(1), "\(request)")
                XCTAssertFalse(isOpen(fd), "\(request)")
                guard case let .success(m) = decode(good, []) else { XCTFail("\(request): valid message refused"); continue }
                XCTAssertEqual(m.request, request)
            case .one:
                guard case let .failure(e) = decode(good, []) else { XCTFail("\(request): missing fd accepted"); continue }
                XCTAssertEqual(e.reason, .fdCount(got: 0, expected: 1), "\(request)")
                let fd = makeEventFD()
                guard case let .success(m) = decode(good, [fd]) else { XCTFail("\(request): valid message refused"); continue }
                XCTAssertEqual(m.fds, [fd])
                m.closeFDs()
            case .perRegion:
                let fd = makeEventFD()
                guard case let .failure(e) = decode(good, [fd]) else { XCTFail("\(request): extra fd accepted"); continue }
                XCTAssertEqual(e.reason, .fdCount(got: 1, expected: 0))
                XCTAssertFalse(isOpen(fd))
            case .toleratedOne:
                let fd = makeEventFD()
                guard case let .success(m) = decode(good, [fd]) else { XCTFail("\(request)"); continue }
                XCTAssertEqual(m.fds, [])
                XCTAssertFalse(isOpen(fd))
            case .vringFile:
                guard case let .failure(e) = decode(good, []) else { XCTFail("\(request): missing fd accepted"); continue }
                XCTAssertEqual(e.reason, .fdCount(got: 0, expected: 1), "\(request)")
            }
        }
    }
}
