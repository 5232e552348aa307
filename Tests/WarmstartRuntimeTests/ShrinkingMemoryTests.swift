import Foundation
import XCTest
import WarmstartBus
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartTestSupport
@testable import WarmstartRuntime

/// Issue 12, defect 3: a front-end that truncates its memory file while the rings run. Before the
/// fault guard the back-end (this test process) died of SIGBUS. Now only that session is closed,
/// the port says why and waits for a new front-end, and the other port keeps forwarding.
final class ShrinkingMemoryTests: XCTestCase {
    var dir: String!
    var runtime: Runtime?

    override func setUpWithError() throws {
        dir = "/tmp/ws-shrink-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        runtime?.stop()
        runtime = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start(ports: [String]) throws -> Runtime {
        let rt = try startTestRuntime(ports: ports, forward: .macswap)
        runtime = rt
        return rt
    }

    func waitState(_ rt: Runtime, _ name: String, _ s: DeviceState) -> Bool {
        rt.bus.wait(timeoutSeconds: testDeadline) { $0.first { $0.name == name }?.state == s }
    }

    /// One round trip of `count` frames through the macswap port of guest `g`.
    func echo(_ g: TestGuest, tag: UInt8, from: Int, count: Int) -> Int {
        let frames = (from..<(from + count)).map { testFrame(tag: tag, seq: $0) }
        XCTAssertEqual(g.send(frames), count)
        return g.receive(count: count).count
    }

    func testFrontEndTruncatesItsMemoryWhileTrafficRuns() throws {
        for packed in [false, true] {
            let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a", "vhost-user:\(dir!)/b.sock,name=b"])
            var a: TestGuest? = try TestGuest(socketPath: "\(dir!)/a.sock", packed: packed)
            let b = try TestGuest(socketPath: "\(dir!)/b.sock", packed: packed)
            try a!.bringUp()
            try b.bringUp()
            XCTAssertTrue(waitState(rt, "a", .started) && waitState(rt, "b", .started), "\(rt.bus.snapshot())")
            XCTAssertEqual(echo(a!, tag: 0xA, from: 0, count: 32), 32)
            XCTAssertEqual(echo(b, tag: 0xB, from: 0, count: 32), 32)

            // Frames in flight on A, then its front-end shrinks the memory file to nothing. The
            // back-end polls A's rings (in A's memory) at once: without the guard, SIGBUS here.
            let aUser = a!.user
            a!.send((0..<64).map { testFrame(tag: 0xA, seq: $0) })
            XCTAssertEqual(ftruncate(a!.memfd, 0), 0)
            // From here on the test must not touch A's memory itself (its own mapping is not guarded).

            let closed = rt.bus.wait(timeoutSeconds: testDeadline) { rs in
                guard let r = rs.first(where: { $0.name == "a" }) else { return false }
                return r.state == .probing && (r.reason ?? "").contains("truncated")
            }
            XCTAssertTrue(closed, "port a did not drop the session: \(rt.bus.snapshot())")
            let reason = rt.bus.snapshot().first { $0.name == "a" }?.reason ?? ""
            XCTAssertTrue(reason.contains("front-end truncated its memory region at guest 0x\(String(aUser, radix: 16))"), reason)
            XCTAssertTrue(reason.contains("SIGBUS at 0x"), reason)
            let stats = rt.stats().ports.first { $0.name == "a" }
            XCTAssertEqual(stats?.reason, reason, "stats report why the port is waiting")

            // B kept forwarding: its counters still grow.
            let bBefore = rt.stats().ports[1].total.rxPackets
            XCTAssertEqual(echo(b, tag: 0xB, from: 100, count: 50), 50, "port b forwards after a's fault (packed \(packed))")
            let deadline = Date().addingTimeInterval(testDeadline)
            while rt.stats().ports[1].total.rxPackets < bBefore + 50 && Date() < deadline { usleep(1000) }
            XCTAssertGreaterThanOrEqual(rt.stats().ports[1].total.rxPackets, bBefore + 50)

            // The port waits for a new front-end, which works.
            a = nil
            let a2 = try TestGuest(socketPath: "\(dir!)/a.sock", packed: packed)
            try a2.bringUp()
            XCTAssertTrue(waitState(rt, "a", .started), "\(rt.bus.snapshot())")
            XCTAssertEqual(echo(a2, tag: 0xC, from: 0, count: 20), 20, "a new front-end on port a forwards")
            XCTAssertNil(rt.bus.snapshot().first { $0.name == "a" }?.reason)
            rt.stop()
            runtime = nil
        }
    }
}
