import CWarmstartShim
import Foundation
import XCTest
import WarmstartBus
import WarmstartPorts
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUser
import WarmstartVirtio
import WarmstartTestSupport
@testable import WarmstartRuntime
import WarmstartSpec

/// Issue 12, defect 3, the virtio-user side: the pool lives in a snapshot file (/dev/shm, no
/// hugepages: the README's main job), which cannot be sealed, and a virtio-user port hands the
/// file's fd to its back-end peer in SET_MEM_TABLE. A peer that truncates it killed Warmstart
/// with SIGBUS at the next touch of the pool (this test process crashed with signal 7). Now the
/// virtio-user port fails with the reason and the vhost-user port keeps forwarding.
final class VirtioUserTruncatedMemoryTests: XCTestCase {
    var dir = ""
    var snapshot = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/ws-vutrunc-XXXXXX".utf8CString)
        dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        snapshot = "/dev/shm/ws-vutrunc-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).snap"
    }

    override func tearDown() {
        unlink(snapshot)
        try? FileManager.default.removeItem(atPath: dir)
    }

    func testBackEndPeerTruncatesTheSnapshotFileWhileTrafficRuns() throws {
        let rec = PhaseRecorder(clock: BootClock(environment: [:]))
        let opts = MemoryOptions(snapshot: SnapshotConfig(pool: MbufPoolConfig(count: 4096, cacheSize: 64)), hugepages: .off,
                                 snapshotPath: snapshot, createIfMissing: true)
        let (live, _) = try MemoryBoot.boot(opts, recorder: rec) { XCTFail("boot warning: \($0)") }
        XCTAssertEqual(live.origin, .restoredResident)
        XCTAssertTrue(live.sharedRegions.contains { $0.peerCanShrink }, "the pool should be in the (unsealable) snapshot file")

        let peer = try InProcessBackend(listeningOn: dir + "/peer.sock")
        defer { peer.stop() }
        let ports = [try PortSpec.parse("vhost-user:\(dir)/a.sock,name=a"),
                     try PortSpec.parse("virtio-user:\(dir)/peer.sock,name=fe,backoff-min-ms=5,backoff-max-ms=50")]
        let rt = try Runtime(options: RuntimeOptions(ports: ports, forward: .macswap, cores: 1), memory: live, recorder: rec)
        rt.enableVirtioUserPorts()
        try rt.start()
        defer { rt.stop() }
        let guest = try TestGuest(socketPath: dir + "/a.sock")
        try guest.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .started && $0[1].state == .started },
                      "\(rt.bus.snapshot())")
        XCTAssertTrue(peer.waitForRings(2), "the peer did not start both rings")

        // Both ports forward: the guest's frames come back, and so do the peer's (through our
        // virtio-user port, zero copy in the snapshot file's memory).
        XCTAssertEqual(echo(guest, tag: 0xA, from: 0, count: 32), 32)
        XCTAssertEqual(peer.send((0..<16).map { testFrame(tag: 0xB, seq: $0) }), 16)
        XCTAssertEqual(peer.receive(16).count, 16, "the virtio-user port forwards before the truncation")

        // The peer truncates the file it received, with frames on the way both ways; the guest's
        // traffic makes Warmstart touch the pool at once (before the guard: SIGBUS here).
        XCTAssertEqual(peer.send((16..<48).map { testFrame(tag: 0xB, seq: $0) }), 32)
        XCTAssertFalse(peer.receivedFDs.isEmpty)
        for fd in peer.receivedFDs { XCTAssertEqual(ftruncate(fd, 0), 0) }
        peer.quiet()   // its own mapping of our memory is gone too: it touches it no more
        guest.send((100..<164).map { testFrame(tag: 0xA, seq: $0) })

        let failed = rt.bus.wait(timeoutSeconds: testDeadline) { rs in
            rs[1].state == .failed && (rs[1].reason ?? "").contains("truncated")
        }
        XCTAssertTrue(failed, "the virtio-user port did not go down: \(rt.bus.snapshot())")
        let reason = rt.bus.snapshot()[1].reason ?? ""
        XCTAssertTrue(reason.hasPrefix("back-end peer truncated the shared packet memory 'mbufs'")
                      || reason.hasPrefix("back-end peer truncated the shared ring memory 'general'"), reason)
        XCTAssertTrue(reason.contains("SIGBUS at 0x"), reason)
        XCTAssertTrue(reason.contains("restart Warmstart"), reason)
        XCTAssertEqual(rt.stats().ports.first { $0.name == "fe" }?.reason, reason, "stats say why the port is down")

        // The vhost-user port keeps forwarding over the (now anonymous, zeroed) pool memory,
        // frames intact: every mbuf header is written anew when allocated.
        _ = guest.receive(count: 64, timeout: 1)   // whatever of the burst in flight made it
        let frames = (200..<250).map { testFrame(tag: 0xA, seq: $0) }
        XCTAssertEqual(guest.send(frames), 50)
        let back = guest.receive(count: 50)
        XCTAssertEqual(back.count, 50, "port a forwards after the peer's truncation")
        XCTAssertEqual(back.map { Array($0[12...]) }, frames.map { Array($0[12...]) }, "frames come back whole")
        XCTAssertEqual(rt.bus.snapshot()[0].state, .started)
        XCTAssertEqual(live.mbufPool.badFreeCount, 0, "wiped mbufs are counted as lost, not as bad frees")
        XCTAssertEqual(live.mbufPool.doubleFreeCount, 0)
    }

    func echo(_ g: TestGuest, tag: UInt8, from: Int, count: Int) -> Int {
        XCTAssertEqual(g.send((from..<(from + count)).map { testFrame(tag: tag, seq: $0) }), count)
        return g.receive(count: count).count
    }
}
