import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

final class VhostUserHandshakeTests: XCTestCase {
    /// Runs `frontend` on a thread against a backend session served on this thread.
    func runHandshake(packed: Bool, pairs: Int = 1, mrg: Bool = true, frontendProtocol: UInt64? = nil,
                      backendConfig: VhostUserBackendConfiguration? = nil,
                      frontend body: @escaping (VhostUserFrontend, FrontendMemory) throws -> Void)
        -> (session: VhostUserBackendSession, events: [VhostUserEvent], log: [String], frontendError: Error?, end: VhostUserError) {
        let (a, b) = VhostUserChannel.socketPair()!
        let mem = FrontendMemory(size: 2 << 20)
        final class Box: @unchecked Sendable { var error: Error? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let ch = VhostUserChannel(fd: a, readsReplies: true)
            var options = VhostUserFrontendOptions(packed: packed, queuePairs: pairs, mergeableRxBuffers: mrg)
            if let p = frontendProtocol { options.wantedProtocolFeatures = p }
            let fe = VhostUserFrontend(channel: ch, options: options)
            do { try body(fe, mem) } catch { box.error = error }
            _ = ch   // closes the socket when the thread ends: the backend sees end of stream
            done.signal()
        }
        thread.start()
        let session = VhostUserBackendSession(configuration: backendConfig ?? VhostUserBackendConfiguration(maxQueuePairs: pairs))
        var events: [VhostUserEvent] = []
        var log: [String] = []
        let end = session.serve(VhostUserChannel(fd: b), onMessage: { frame, outcome in
            let name = frame.header.knownRequest.map { "\($0)" } ?? "\(frame.header.request)"
            log.append(outcome.error.map { "\(name) -> \($0)" } ?? name)
        }, onEvents: { events += $0 })
        done.wait()
        return (session, events, log, box.error, end)
    }

    func ring(_ mem: FrontendMemory, index: Int, packed: Bool) -> FrontendRing {
        let off = UInt64(index) * 0x20000
        return FrontendRing(index: index, size: 256, descriptorAddress: mem.user + off, driverAddress: mem.user + off + 0x8000,
                            deviceAddress: mem.user + off + 0x10000, base: packed ? 1 << 15 : 0,
                            kickFD: makeEventFD(), callFD: makeEventFD())
    }

    func handshake(packed: Bool) {
        var stoppedBase: UInt32?
        var negotiated: VhostUserNegotiation?
        var memUser: UInt64 = 0
        let r = runHandshake(packed: packed) { fe, mem in
            memUser = mem.user
            negotiated = try fe.negotiate()
            try fe.setMemoryTable([FrontendMemoryRegion(fd: mem.fd, guestAddress: 0, userAddress: mem.user, size: UInt64(mem.size))])
            for i in 0..<2 {
                let rg = self.ring(mem, index: i, packed: packed)
                try fe.startRing(rg)
                close(rg.kickFD!); close(rg.callFD!)   // the backend holds its own copies
            }
            try fe.setStatus(0xF)
            XCTAssertEqual(try fe.getStatus(), 0xF)
            let cfg = try fe.getConfig(offset: 0, size: 12)
            XCTAssertEqual(cfg.count, 12)
            stoppedBase = try fe.stopRing(1)
        }
        XCTAssertNil(r.frontendError, "\(String(describing: r.frontendError))")
        XCTAssertEqual(r.end.reason, .connectionClosed)
        let n = negotiated!
        XCTAssertEqual(n.features & VirtioFeatures.ringPacked.rawValue != 0, packed)
        XCTAssertNotEqual(n.features & VirtioFeatures.version1.rawValue, 0)
        XCTAssertNotEqual(n.features & VirtioFeatures.mrgRxbuf.rawValue, 0)
        XCTAssertNotEqual(n.protocolFeatures & VhostUserProtocolFeature.replyAck.mask, 0)
        XCTAssertEqual(n.maxQueuePairs, 1)
        XCTAssertEqual(n.maxMemorySlots, 509)
        XCTAssertTrue(r.log.allSatisfy { !$0.contains("->") }, "errors: \(r.log)")
        XCTAssertEqual(Array(r.log.prefix(3)), ["VHOST_USER_SET_OWNER", "VHOST_USER_GET_FEATURES", "VHOST_USER_GET_PROTOCOL_FEATURES"])
        let started = r.events.compactMap { e -> VringSetup? in if case let .ringStarted(s) = e { return s } else { return nil } }
        XCTAssertEqual(started.map(\.index), [0, 1])
        for s in started {
            XCTAssertEqual(s.layout, packed ? .packed : .split)
            XCTAssertEqual(s.size, 256)
            XCTAssertTrue(s.mergeableRxBuffers)
            // Host pointers are in the backend's mapping of the frontend's memfd: same pages.
            let off = s.memory.regions[0].host
            XCTAssertEqual(s.descriptors - off, s.index * 0x20000)
            XCTAssertEqual(s.driverArea - off, s.index * 0x20000 + 0x8000)
            XCTAssertEqual(s.deviceArea - off, s.index * 0x20000 + 0x10000)
            XCTAssertEqual(s.memory.table.entries[0].userAddress, memUser)
            if packed { XCTAssertTrue(s.base.availWrapCounter) }
        }
        XCTAssertEqual(stoppedBase, packed ? 1 << 15 | 1 << 31 : 0)
        XCTAssertTrue(r.events.contains { if case .ringStopped(1, _) = $0 { return true } else { return false } })
        XCTAssertEqual(r.session.status, 0xF)
    }

    func testFullHandshakeSplit() { handshake(packed: false) }
    func testFullHandshakePacked() { handshake(packed: true) }

    func testFrontendNamesMissingRequiredFeatures() {
        let cfg = VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.version1.rawValue)
        let r = runHandshake(packed: false, backendConfig: cfg) { fe, _ in _ = try fe.negotiate() }
        guard let e = r.frontendError as? VhostUserError else { return XCTFail("expected an error") }
        XCTAssertEqual(e.reason, .missingFeatures(["version1"]))
    }

    func testFrontendSeesReplyAckFailure() {
        let r = runHandshake(packed: false) { fe, mem in
            _ = try fe.negotiate()
            // A ring with size 100 on a split ring is refused: REPLY_ACK brings the failure back.
            var rg = self.ring(mem, index: 0, packed: false)
            rg.size = 100
            try fe.startRing(rg)
        }
        guard let e = r.frontendError as? VhostUserError else { return XCTFail("expected an error") }
        XCTAssertEqual(e.reason, .peerFailed(1))
        XCTAssertEqual(e.request, .setVringNum)
    }

    func testHotPlugOverTheWire() {
        let extra = FrontendMemory(size: 1 << 20)
        let r = runHandshake(packed: false) { fe, mem in
            _ = try fe.negotiate()
            try fe.setMemoryTable([FrontendMemoryRegion(fd: mem.fd, guestAddress: 0, userAddress: mem.user, size: UInt64(mem.size))])
            let region = FrontendMemoryRegion(fd: extra.fd, guestAddress: 0x1_0000_0000, userAddress: extra.user, size: UInt64(extra.size))
            try fe.addMemoryRegion(region)
            try fe.removeMemoryRegion(region)
            try fe.addMemoryRegion(region)
        }
        XCTAssertNil(r.frontendError)
        XCTAssertEqual(r.session.memory?.regions.count, 2)
    }

    func testInflightBufferOverTheWire() {
        let all = VhostUserFeatures.protocolDefault | VhostUserFeatures.protocolOptIn
        var size = -1
        var payload: InflightPayload?
        let r = runHandshake(packed: true, frontendProtocol: all,
                             backendConfig: VhostUserBackendConfiguration(protocolFeatures: all)) { fe, _ in
            _ = try fe.negotiate()
            let (p, fd) = try fe.getInflightFD(numQueues: 2, queueSize: 256)
            var st = stat()
            _ = fstat(fd, &st)
            size = Int(st.st_size)
            payload = p
            try fe.setInflightFD(p, fd: fd)
            close(fd)
        }
        XCTAssertNil(r.frontendError, "\(String(describing: r.frontendError))")
        XCTAssertEqual(payload?.mmapSize, 2 * 8256)
        XCTAssertEqual(size, 2 * 8256)
        XCTAssertEqual(r.session.inflight?.layout, .packed)
    }

    func testChannelShortReadsAndNonBlocking() throws {
        let (a, b) = VhostUserChannel.socketPair()!
        defer { close(a) }
        _ = fcntl(b, F_SETFL, fcntl(b, F_GETFL) | O_NONBLOCK)
        let ch = VhostUserChannel(fd: b)
        XCTAssertNil(try ch.receiveFrame())
        let fd = makeEventFD()
        let m = msg(.setVringCall, .u64(1), fds: [fd])
        let bytes = m.encoded()
        // The fd rides on the first 5 bytes; the rest arrives in two more pieces.
        XCTAssertEqual(ws_send_with_fds(a, bytes, 5, [fd], 1), 5)
        XCTAssertNil(try ch.receiveFrame())
        _ = bytes[5...].withUnsafeBytes { send(a, $0.baseAddress!, 9, 0) }
        XCTAssertNil(try ch.receiveFrame())
        _ = bytes[14...].withUnsafeBytes { send(a, $0.baseAddress!, bytes.count - 14, 0) }
        let f = try XCTUnwrap(try ch.receiveFrame())
        XCTAssertEqual(f.header.request, VhostUserRequest.setVringCall.rawValue)
        XCTAssertEqual(f.fds.count, 1)
        let s = VhostUserBackendSession()
        XCTAssertTrue(s.receive(header: f.header, payload: f.payload, fds: f.fds).ok)
        close(fd)
        // A bad header through the channel is fatal and drops its fds.
        let fd2 = makeEventFD()
        let file: Set = [fileIdentity(fd2)!]
        var w = WireWriter()
        VhostUserHeader(request: 1, flags: 0x3, size: 0).encode(into: &w)
        XCTAssertEqual(ws_send_with_fds(a, w.bytes, 12, [fd2], 1), 12)
        XCTAssertThrowsError(try ch.receiveFrame()) { e in XCTAssertTrue((e as! VhostUserError).isFatal) }
        // Only ours is left (kept open until now: a closed eventfd's id can be given to a new one).
        XCTAssertEqual(descriptors(referringTo: file), [fd2], "the descriptor that came with the bad header is closed")
        close(fd2)
    }
}
