import Foundation
import XCTest
import CWarmstartShim
import WarmstartBus
import WarmstartEngine
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartBench
@testable import WarmstartRuntime

/// A back-end that goes away in the middle of `warmstart bench`: the bus tears the port down (its
/// posted mbufs go back to the pool) only after the generator or sink has stopped touching the
/// queues; the run ends with the reason, and no mbuf is freed twice or left behind.
final class BenchTeardownTests: XCTestCase {
    func testBackendGoingAwayMidRunIsCleanForEveryMode() throws {
        for (mode, forward) in [(BenchOptions.Mode.loopback, ForwardMode.macswap), (.oneway, .macswap), (.sink, .txonly)] {
            for packed in [false, true] {
                let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 16384, cacheSize: 64)), hugepages: .off)
                var template = Array("/tmp/ws-bench-gone-XXXXXX".utf8CString)
                let dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
                defer { rmdir(dir) }
                let sock = dir + "/be.sock"
                let runtime = try Runtime(options: RuntimeOptions(ports: [try PortSpec.parse("vhost-user:\(sock)")], forward: forward, cores: 1),
                                          memory: live, recorder: PhaseRecorder(clock: BootClock(environment: [:])))
                try runtime.start()
                var o = BenchOptions()
                o.mode = mode
                o.packed = packed
                o.duration = 10
                o.size = 1518
                o.cpu = Runtime.cpus(forThreads: 1)[0] == 0 ? 1 : 0
                // The back-end leaves a moment after traffic started.
                let gone = DispatchSemaphore(value: 0)
                Thread {
                    let deadline = Date().addingTimeInterval(10)
                    while (runtime.stats().ports.first?.total).map({ $0.rxPackets + $0.txPackets }) ?? 0 < 1000 && Date() < deadline { usleep(1000) }
                    runtime.stop()
                    gone.signal()
                }.start()
                let t0 = ws_monotonic_ns()
                XCTAssertThrowsError(try Bench.drive(memory: live, socket: sock, options: o, startNs: t0)) { e in
                    XCTAssertTrue("\(e)".contains("went away"), "\(mode) packed \(packed): \(e)")
                }
                XCTAssertLessThan(Double(ws_monotonic_ns() - t0) / 1e9, 8, "the run ended when the back-end left, not at its duration")
                gone.wait()
                unlink(sock)
                let pool = live.mbufPool
                XCTAssertEqual(pool.doubleFreeCount, 0, "\(mode) packed \(packed)")
                XCTAssertEqual(pool.badFreeCount, 0, "\(mode) packed \(packed)")
                XCTAssertEqual(pool.inUseCount, 0, "every mbuf back in the pool (\(mode) packed \(packed))")
            }
        }
    }
}

/// The lease between the bench's polling loop and the bus's teardown.
final class QueueLeaseTests: XCTestCase {
    func testRevokeWaitsUntilTheHolderLetsGo() {
        let lease = QueueLease()
        XCTAssertTrue(lease.acquire())
        XCTAssertFalse(lease.revoked)
        let done = DispatchSemaphore(value: 0)
        Thread { lease.revoke(); done.signal() }.start()
        let deadline = Date().addingTimeInterval(5)
        while !lease.revoked && Date() < deadline { usleep(100) }
        XCTAssertTrue(lease.revoked, "the holder sees the revocation at its next burst")
        XCTAssertEqual(done.wait(timeout: .now() + 0.2), .timedOut, "revoke does not return while the queues are held")
        lease.release()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertFalse(lease.acquire(), "no new hold once revoked")
    }

    func testRevokeWithoutHolderReturns() {
        let lease = QueueLease()
        lease.revoke()
        XCTAssertTrue(lease.revoked)
        XCTAssertFalse(lease.acquire())
    }
}
