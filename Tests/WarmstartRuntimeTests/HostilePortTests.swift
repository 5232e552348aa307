import CWarmstartShim
import Foundation
import Logging
import XCTest
import WarmstartBus
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartTestSupport
@testable import WarmstartRuntime

/// A hostile front-end against a running back-end port (issue 12): it cycles through a packed ring
/// position outside the ring, a pipe and a socket as call descriptors, a memory table beyond the
/// port's max-memory, eventfds at their maximum counter, invalid virtio-net headers and a memory
/// file truncated under running rings, reconnecting after each. The process
/// lives (SIGPIPE would kill the test process), the other port keeps forwarding after every
/// attempt, and the descriptor count comes back to where it was.
final class HostilePortTests: XCTestCase {
    var dir: String!
    var runtime: Runtime?

    override func setUpWithError() throws {
        dir = "/tmp/ws-hostile-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        runtime?.stop()
        runtime = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func openDescriptorCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
    }

    /// One hostile connection; returns what the back-end refused (nil when it took everything).
    enum Attack: CaseIterable { case packedBase, pipeCall, socketCall, hugeMemory, saturatedCall, badNetHeader, truncatedMemory }

    func attack(_ kind: Attack, path: String) throws -> VhostUserError? {
        let g = try TestGuest(socketPath: path, packed: kind == .packedBase)
        let n = try g.frontend.negotiate()
        // Descriptors this side opened: sending one passes a copy, so they are all closed here.
        var mine: [Int32] = []
        defer { for fd in mine { close(fd) } }
        func keep(_ fd: Int32) -> Int32 { mine.append(fd); return fd }
        func ring(_ i: Int, base: UInt32, call: Int32) -> FrontendRing {
            let q = i == 0 ? g.rx! : g.tx!
            return FrontendRing(index: i, size: TestGuest.ringSize, descriptorAddress: q.descAddress, driverAddress: q.driverAreaAddress,
                                deviceAddress: q.deviceAreaAddress, base: base, kickFD: g.kicks[i], callFD: call)
        }
        do {
            switch kind {
            case .packedBase:
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                try g.frontend.startRing(ring(0, base: 0x7fff, call: g.calls[0]))
            case .pipeCall:
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                var p: [Int32] = [0, 0]
                XCTAssertEqual(pipe(&p), 0)
                close(p[0])
                try g.frontend.startRing(ring(0, base: 0, call: keep(p[1])))
            case .socketCall:
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                var sv: [Int32] = [0, 0]
                XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv), 0)
                close(sv[1])
                try g.frontend.startRing(ring(0, base: 0, call: keep(sv[0])))
            case .hugeMemory:
                let fd = keep(ws_memfd_create("hostile-huge", WS_MFD_CLOEXEC))
                XCTAssertEqual(ftruncate(fd, off_t(4) << 30), 0)
                try g.frontend.setMemoryTable([FrontendMemoryRegion(fd: fd, guestAddress: 0, userAddress: 1 << 44, size: 4 << 30)])
            case .saturatedCall:
                for c in g.calls {
                    var max: UInt64 = 0xffff_ffff_ffff_fffe
                    XCTAssertEqual(withUnsafeBytes(of: &max) { write(c, $0.baseAddress, 8) }, 8)
                }
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                try g.frontend.startRing(ring(0, base: 0, call: g.calls[0]))
                try g.frontend.startRing(ring(1, base: 0, call: g.calls[1]))
                // Frames come back (macswap) into the guest's RX ring: the back-end's calls find
                // the counter full. The guest never reads its call eventfd.
                XCTAssertEqual(g.send((0..<32).map { testFrame(tag: 9, seq: $0) }), 32)
                XCTAssertEqual(g.receive(count: 32).count, 32)
            case .badNetHeader:
                // NEEDS_CSUM with the checksum field past the frame, and an unknown gso_type: the
                // kernel refuses both from a tap write; neither may reach another port or TAP.
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                try g.frontend.startRing(ring(0, base: 0, call: g.calls[0]))
                try g.frontend.startRing(ring(1, base: 0, call: g.calls[1]))
                let before = runtime!.stats().ports[0].total.errors
                XCTAssertEqual(g.send((0..<16).map { testFrame(tag: 7, seq: $0) }, header: [1, 0, 0, 0, 0, 0, 0xf0, 0xff, 0x10, 0]), 16)
                XCTAssertEqual(g.send((16..<32).map { testFrame(tag: 7, seq: $0) }, header: [0, 0x55, 0, 0, 0, 0, 0, 0, 0, 0]), 16)
                let deadline = Date().addingTimeInterval(testDeadline)
                while runtime!.stats().ports[0].total.errors < before + 32 && Date() < deadline { usleep(1000) }
                XCTAssertGreaterThanOrEqual(runtime!.stats().ports[0].total.errors, before + 32, "bad headers counted")
                XCTAssertEqual(g.receive().count, 0, "a frame with a bad virtio-net header was forwarded")
            case .truncatedMemory:
                // Rings running with frames in flight, then the memory file shrinks to nothing:
                // without the fault guard the back-end (this process) dies of SIGBUS. The session
                // is dropped with the reason; this side never touches that memory again.
                try g.frontend.setMemoryTable([g.region])
                try g.layOutRings(features: n.features)
                try g.frontend.startRing(ring(0, base: 0, call: g.calls[0]))
                try g.frontend.startRing(ring(1, base: 0, call: g.calls[1]))
                XCTAssertEqual(g.send((0..<32).map { testFrame(tag: 5, seq: $0) }), 32)
                XCTAssertEqual(ftruncate(g.memfd, 0), 0)
                XCTAssertTrue(runtime!.bus.wait(timeoutSeconds: testDeadline) { rs in
                    (rs.first { $0.name == "a" }?.reason ?? "").contains("truncated")
                }, "the truncated session was not dropped: \(runtime!.bus.snapshot())")
            }
        } catch let e as VhostUserError {
            return e
        }
        return nil
    }

    func testHostileFrontEndCyclingThroughDefectsLeavesTheBackEndServing() throws {
        let rt = try startTestRuntime(ports: ["vhost-user:\(dir!)/a.sock,name=a,max-memory=1G", "vhost-user:\(dir!)/b.sock,name=b"],
                                      forward: .macswap)
        runtime = rt
        let good = try TestGuest(socketPath: "\(dir!)/b.sock")
        try good.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0.first { $0.name == "b" }?.state == .started })
        var seq = 0
        func goodPortForwards() {
            let frames = (0..<16).map { testFrame(tag: 0xB, seq: seq + $0) }
            seq += 16
            XCTAssertEqual(good.send(frames), 16)
            XCTAssertEqual(good.receive(count: 16).count, 16, "the good port stopped forwarding")
        }

        var connections = 0
        var descriptorsAfterFirstRound = 0
        for round in 0..<3 {
            for kind in Attack.allCases {
                let refused = try attack(kind, path: "\(dir!)/a.sock")
                connections += 1
                switch kind {
                case .packedBase, .pipeCall, .socketCall, .hugeMemory:
                    if case .peerFailed? = refused?.reason {} else { XCTFail("\(kind): expected a nack, got \(String(describing: refused))") }
                case .saturatedCall, .badNetHeader, .truncatedMemory:
                    XCTAssertNil(refused)
                }
                // The hostile connection is gone; the port waits for the next front-end.
                XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { r in
                    r.first { $0.name == "a" }.map { $0.reconnects == connections && $0.state != .started } ?? false
                }, "\(kind): \(rt.bus.snapshot())")
                goodPortForwards()
            }
            if round == 0 { descriptorsAfterFirstRound = openDescriptorCount() }
        }
        // Not more than after the first round (which may open what the port keeps for good). Not
        // "equal": descriptors earlier tests left to other threads may close meanwhile.
        XCTAssertLessThanOrEqual(openDescriptorCount(), descriptorsAfterFirstRound, "descriptors leaked per hostile connection")
        // The calls the saturated eventfds could not take were counted (errors of port a).
        XCTAssertGreaterThan(rt.stats().ports[0].total.errors, 0)
    }

    // MARK: a call descriptor made blocking again (issue 12 defect 2, the shared file description)

    static let blockingCallChild = "WS_HOSTILE_BLOCKING_CALL_CHILD"

    /// The front-end shares the open file description of its call eventfd with us, so after the
    /// back-end made it non-blocking it can clear O_NONBLOCK on its own copy and fill the counter:
    /// the back-end's next call write would then sleep for good, and with it the polling thread
    /// and every port it serves. Run in a child process (a hang must cost a kill, not the test
    /// run): the parent waits for it with a deadline and kills it by pid.
    func testFrontEndThatMakesItsCallDescriptorBlockingCannotStallThePollingThread() throws {
        guard ProcessInfo.processInfo.environment[Self.blockingCallChild] == nil else { return }
        try runInChild("testChildFrontEndMakesItsCallDescriptorBlocking")
    }

    /// Runs test `name` of this class in a child process (this test binary, with
    /// `blockingCallChild` set in its environment), killed by pid if it has not ended in 45 s.
    func runInChild(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try ChildTest.run("WarmstartRuntimeTests.HostilePortTests/\(name)", environment: [Self.blockingCallChild: "1"],
                                  deadline: 45, captureOutput: true)
        if r.timedOut { return XCTFail("\(name) hung (killed after 45 s):\n\(r.output.suffix(4000))", file: file, line: line) }
        XCTAssertEqual(r.reason, .exit, r.output, file: file, line: line)
        XCTAssertEqual(r.status, 0, "the child failed:\n\(r.output.suffix(4000))", file: file, line: line)
        XCTAssertTrue(r.passed(name), "the child did not run \(name):\n\(r.output.suffix(4000))", file: file, line: line)
    }

    /// The virtio-user side: the back-end peer holds the same open file as the kick eventfd we
    /// gave it, so it can make it blocking and fill it; our kick from the polling thread must not
    /// sleep for good. The scenario runs in a child (see `runInChild`).
    func testBackEndThatMakesItsKickDescriptorBlockingCannotStallTheKick() throws {
        guard ProcessInfo.processInfo.environment[Self.blockingCallChild] == nil else { return }
        try runInChild("testChildBackEndMakesItsKickDescriptorBlocking")
    }

    /// The child of the test above: this thread stands for a polling thread (registered with the
    /// write watchdog, as every polling thread is), the ring's device side is in this process.
    func testChildBackEndMakesItsKickDescriptorBlocking() throws {
        guard ProcessInfo.processInfo.environment[Self.blockingCallChild] != nil else { return }
        XCTAssertEqual(ws_write_guard_register(), 0)
        defer { ws_write_guard_unregister() }
        let rig = try GeneratorRig(packed: false)
        defer { rig.close() }
        let q = rig.q, pool = rig.live.mbufPool
        let cache = MbufCache(pool: pool)
        defer { cache.flush() }
        let kick = q.txKickFD
        // The peer's copy is the same open file: it clears O_NONBLOCK and fills the counter.
        XCTAssertEqual(fcntl(kick, F_SETFL, fcntl(kick, F_GETFL) & ~O_NONBLOCK), 0)
        var max: UInt64 = 0xffff_ffff_ffff_fffe
        XCTAssertEqual(withUnsafeBytes(of: &max) { write(kick, $0.baseAddress, 8) }, 8)
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 4)
        defer { out.deallocate() }
        func send() -> Int {
            for k in 0..<4 { out[k] = makeChain(pool, testFrame(tag: 7, seq: k))! }
            return q.transmitBurst(out, count: 4, cache: cache)
        }
        let interruptsBefore = ws_write_guard_interrupts()
        XCTAssertEqual(send(), 4)   // the device asked for a kick (avail_event 0): the descriptor is found blocking
        XCTAssertEqual(q.kickCount, 1)
        XCTAssertEqual(q.droppedKicks, 1, "the kick that could not be delivered is counted")
        XCTAssertEqual(q.errorCount, 1)
        XCTAssertTrue(q.kickDescriptorStuck)
        XCTAssertEqual(ws_write_guard_interrupts(), interruptsBefore, "refused before writing: no write slept")
        // The device asks for the next kick: it is dropped without a write (counted).
        let done = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { done.deallocate() }
        XCTAssertEqual(rig.txDevice.dequeueBurst(pool: rig.hostPool, into: done, maxCount: 32), 4)
        for k in 0..<4 { rig.hostPool.free(done[k]) }
        rig.txDevice.setNotifications(enabled: true)
        XCTAssertEqual(send(), 4)
        XCTAssertEqual(q.kickCount, 2)
        XCTAssertEqual(q.droppedKicks, 2)
        XCTAssertEqual(q.errorCount, 2)
        // The counter is as the peer left it: nothing more was written.
        XCTAssertEqual(fcntl(kick, F_SETFL, fcntl(kick, F_GETFL) | O_NONBLOCK), 0)
        var value: UInt64 = 0
        XCTAssertEqual(withUnsafeMutableBytes(of: &value) { read(kick, $0.baseAddress, 8) }, 8)
        XCTAssertEqual(value, max)
    }

    /// The child of the test above (does nothing unless started by it).
    func testChildFrontEndMakesItsCallDescriptorBlocking() throws {
        guard ProcessInfo.processInfo.environment[Self.blockingCallChild] != nil else { return }
        // One core (startTestRuntime's): both ports are served by the same polling thread.
        let rt = try startTestRuntime(ports: ["vhost-user:\(dir!)/a.sock,name=a", "vhost-user:\(dir!)/b.sock,name=b"], forward: .macswap)
        runtime = rt
        let good = try TestGuest(socketPath: "\(dir!)/b.sock")
        try good.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0.first { $0.name == "b" }?.state == .started })
        var seq = 0
        func goodPortForwards() -> Bool {
            let frames = (0..<16).map { testFrame(tag: 0xB, seq: seq + $0) }
            seq += 16
            XCTAssertEqual(good.send(frames), 16)
            let back = good.receive(count: 16, timeout: 10).count
            XCTAssertEqual(back, 16, "the good port stopped forwarding")
            return back == 16
        }
        guard goodPortForwards() else { return }

        var hostile: TestGuest? = try TestGuest(socketPath: "\(dir!)/a.sock")
        try hostile!.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0.first { $0.name == "a" }?.state == .started })
        // The back-end made the call eventfds non-blocking when it took them; the front-end's
        // copies are the same open files: it makes them blocking again and fills them. (Before the
        // fix the next call write slept for good, and with it the thread serving port b too.)
        for c in hostile!.calls {
            let flags = fcntl(c, F_GETFL)
            XCTAssertNotEqual(flags & O_NONBLOCK, 0, "the back-end made the call descriptor non-blocking")
            XCTAssertEqual(fcntl(c, F_SETFL, flags & ~O_NONBLOCK), 0)
            var max: UInt64 = 0xffff_ffff_ffff_fffe
            XCTAssertEqual(withUnsafeBytes(of: &max) { write(c, $0.baseAddress, 8) }, 8)
        }
        let interruptsBefore = ws_write_guard_interrupts()
        // Frames come back (macswap) into the hostile guest's RX ring, and its TX buffers are
        // returned: the back-end's calls find a blocking descriptor at its maximum.
        XCTAssertEqual(hostile!.send((0..<32).map { testFrame(tag: 9, seq: $0) }), 32)
        XCTAssertEqual(hostile!.receive(count: 32, timeout: 10).count, 32)
        // The other port, on the same polling thread, keeps forwarding.
        for _ in 0..<4 { guard goodPortForwards() else { return } }
        // The blocking descriptor was refused before any write (none slept, so the watchdog had
        // nothing to interrupt); the dropped calls were counted (port a's errors).
        XCTAssertEqual(ws_write_guard_interrupts(), interruptsBefore)
        XCTAssertGreaterThan(rt.stats().ports[0].total.errors, 0)

        // The session ends (the queues come off the polling thread: the pause handshake
        // completes), and a new front-end on the same port is served.
        hostile = nil
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { r in
            r.first { $0.name == "a" }.map { $0.reconnects == 1 && $0.state != .started } ?? false
        }, "\(rt.bus.snapshot())")
        let next = try TestGuest(socketPath: "\(dir!)/a.sock")
        try next.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0.first { $0.name == "a" }?.state == .started })
        XCTAssertEqual(next.send((0..<16).map { testFrame(tag: 0xA, seq: $0) }), 16)
        XCTAssertEqual(next.receive(count: 16, timeout: 10).count, 16, "the new front-end is not served")
        XCTAssertTrue(goodPortForwards())
        rt.stop()
        runtime = nil
    }
}
