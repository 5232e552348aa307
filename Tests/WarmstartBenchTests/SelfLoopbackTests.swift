import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartBench
@testable import WarmstartRuntime

/// The self-contained loopback: the runtime's vhost-user back-end and Warmstart's virtio-user
/// front-end in one process. Frames go round, every counter agrees, the socket is removed.
final class SelfLoopbackTests: XCTestCase {
    func testLoopbackForwardsAndCleansUp() throws {
        for packed in [false, true] {
            let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 8192, cacheSize: 64)), hugepages: .off)
            let rec = PhaseRecorder(clock: BootClock(environment: [:]))
            let r = try SelfLoopback.run(memory: live, recorder: rec, duration: 0.5, size: 64, packed: packed)
            XCTAssertGreaterThan(r.traffic.rxPackets, 0, "frames came back (packed \(packed))")
            XCTAssertEqual(r.traffic.layout, packed ? "packed" : "split")
            let port = r.runtime.stats().ports[0]
            XCTAssertEqual(port.total.rxPackets, r.traffic.txPackets, "the back-end saw every frame we sent")
            XCTAssertEqual(port.total.txPackets, r.traffic.rxPackets, "and we got back every frame it sent")
            XCTAssertNotNil(r.traffic.latencyP50Us)
            XCTAssertTrue(rec.phases.contains { $0.name == "device-start" })
            // Its own directory: other runs on the machine (or one that crashed) may hold theirs.
            XCTAssertTrue(r.directory.hasPrefix("/tmp/warmstart-loop-"), r.directory)
            XCTAssertFalse(FileManager.default.fileExists(atPath: r.directory), "temp directory \(r.directory) removed")
        }
    }
}
