import CWarmstartShim
import Foundation
import XCTest
import WarmstartBus
import WarmstartVhostUserWire
@testable import WarmstartRuntime
import WarmstartTestSupport

/// The back-end port's reads go through VhostUserFrameDecoder: a front-end that writes its
/// messages one byte at a time is served as one that writes them whole (descriptors included), and
/// a bad header or too many descriptors drop that session with the reason.
final class VhostPortFramingTests: XCTestCase {
    var dir: String!
    var runtime: Runtime?

    override func setUpWithError() throws {
        dir = "/tmp/ws-framing-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        runtime?.stop()
        runtime = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Writes `bytes` one byte at a time; `fds` go with the first (the kernel passes copies).
    func drip(_ fd: Int32, _ bytes: [UInt8], fds: [Int32] = []) {
        for i in bytes.indices {
            let n = bytes.withUnsafeBytes { b in
                fds.withUnsafeBufferPointer { f in
                    ws_send_with_fds(fd, b.baseAddress! + i, 1, i == 0 ? f.baseAddress : nil, i == 0 ? Int32(f.count) : 0)
                }
            }
            XCTAssertEqual(n, 1, "byte \(i)")
        }
    }

    func drip(_ fd: Int32, _ m: VhostUserMessage) { drip(fd, m.encoded(), fds: m.fds) }

    func waitForReason(_ rt: Runtime, _ text: String) -> String {
        _ = rt.bus.wait(timeoutSeconds: testDeadline) { rs in (rs.first { $0.name == "a" }?.reason ?? "").contains(text) }
        return rt.bus.snapshot().first { $0.name == "a" }?.reason ?? ""
    }

    func testMessagesWrittenOneByteAtATime() throws {
        let rt = try startTestRuntime(ports: ["vhost-user:\(dir!)/a.sock,name=a"])
        runtime = rt
        let fd = try TestGuest.connect("\(dir!)/a.sock")
        let replies = VhostUserChannel(fd: fd, readsReplies: true)
        func reply(_ request: VhostUserRequest) throws -> UInt64 {
            let f = try XCTUnwrap(try replies.receiveFrame())
            XCTAssertEqual(f.header.request, request.rawValue)
            XCTAssertEqual(f.payload.count, 8)
            var r = WireReader(f.payload)
            return r.u64()
        }
        drip(fd, VhostUserMessage(request: .getFeatures))
        let offered = try reply(.getFeatures)
        let version1: UInt64 = 1 << 32, protocolFeatures: UInt64 = 1 << 30, replyAck: UInt64 = 1 << 3
        XCTAssertNotEqual(offered & protocolFeatures, 0)
        drip(fd, VhostUserMessage(request: .setOwner))
        drip(fd, VhostUserMessage(request: .getProtocolFeatures))
        XCTAssertNotEqual(try reply(.getProtocolFeatures) & replyAck, 0)
        drip(fd, VhostUserMessage(request: .setProtocolFeatures, payload: .u64(replyAck)))
        drip(fd, VhostUserMessage(request: .setFeatures, payload: .u64(version1 | protocolFeatures)))
        // The memory table's descriptor went with its first byte, eleven reads before its last: the
        // back-end maps it and acknowledges.
        let memfd = ws_memfd_create("framing-test", WS_MFD_CLOEXEC)
        defer { close(memfd) }
        XCTAssertEqual(ftruncate(memfd, 1 << 20), 0)
        drip(fd, VhostUserMessage(request: .setMemTable, payload: .memoryTable([
            MemoryRegionPayload(guestAddress: 0, size: 1 << 20, userAddress: 0x7f00_0000_0000, mmapOffset: 0)]),
            fds: [memfd], needReply: true))
        XCTAssertEqual(try reply(.setMemTable), 0, "SET_MEM_TABLE refused")
        drip(fd, VhostUserMessage(request: .getFeatures))
        XCTAssertEqual(try reply(.getFeatures), offered)
        XCTAssertNotEqual(rt.bus.snapshot().first { $0.name == "a" }?.state, .probing, "the session was dropped")
    }

    func testBadHeaderWrittenOneByteAtATimeDropsTheSession() throws {
        let rt = try startTestRuntime(ports: ["vhost-user:\(dir!)/a.sock,name=a"])
        runtime = rt
        let fd = try TestGuest.connect("\(dir!)/a.sock")
        defer { close(fd) }
        var w = WireWriter()
        VhostUserHeader(request: VhostUserRequest.setVringKick.rawValue, flags: 2, size: 8).encode(into: &w)
        let e = ws_eventfd(0, WS_EFD_CLOEXEC)
        defer { close(e) }
        drip(fd, w.bytes + [0, 0, 0, 0, 0, 0, 0, 0], fds: [e])
        let reason = waitForReason(rt, "invalid message header")
        XCTAssertTrue(reason.contains("protocol error: invalid message header: VHOST_USER_SET_VRING_KICK: flags version is 2, must be 1"), reason)
    }

    func testTooManyDescriptorsOverTwoReadsDropTheSession() throws {
        let rt = try startTestRuntime(ports: ["vhost-user:\(dir!)/a.sock,name=a"])
        runtime = rt
        let fd = try TestGuest.connect("\(dir!)/a.sock")
        defer { close(fd) }
        let mine = (0..<9).map { _ in ws_eventfd(0, WS_EFD_CLOEXEC) }
        defer { for f in mine { close(f) } }
        // Each send within the limit, together one more than a message may carry. Two sends, not a
        // drip: the back-end drops the session as soon as it reads the second one's descriptors,
        // and a byte written after that fails (EPIPE), sooner or later depending on the load.
        let bytes = VhostUserMessage(request: .setLogFD).encoded()
        for (part, fds) in [(Array(bytes[0..<6]), Array(mine[0..<5])), (Array(bytes[6...]), Array(mine[5...]))] {
            let n = part.withUnsafeBytes { b in fds.withUnsafeBufferPointer { ws_send_with_fds(fd, b.baseAddress!, b.count, $0.baseAddress, Int32($0.count)) } }
            XCTAssertEqual(n, part.count)
        }
        let reason = waitForReason(rt, "descriptors")
        XCTAssertTrue(reason.contains("protocol error: a message carried more than 8 descriptors"), reason)
    }
}
