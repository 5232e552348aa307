import CWarmstartShim
import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartEngine
import WarmstartTestSupport

/// A queue with traffic whenever it is polled (while `flowing`): each receive hands out one 64-byte
/// packet, each transmit takes and frees what it is given. Counts the polls.
final class FlowingQueue: BurstQueue, @unchecked Sendable {
    let polls = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let flowing = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    var errorCount: UInt64 { 0 }
    init(flowing on: Bool) {
        polls.initialize(to: 0)
        flowing.initialize(to: on ? 1 : 0)
    }
    deinit { polls.deallocate(); flowing.deallocate() }
    var pollCount: UInt64 { ws_load_acquire_u64(polls) }
    func setFlowing(_ on: Bool) { ws_store_release_u32(flowing, on ? 1 : 0) }

    func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        _ = ws_fetch_add_u64(polls, 1)
        guard ws_load_acquire_u32(flowing) != 0, let m = cache.alloc() else { return 0 }
        m.dataLength = 64
        m.packetLength = 64
        out[0] = m
        return 1
    }

    func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        for i in 0..<count { cache.free(pkts[i]) }
        return count
    }
}

/// What hot upgrade asks of the datapath: threads started parked that touch no queue until
/// resumed, a pause that forwards what is pending before parking, and the time stamps of the
/// blackout's two ends (taken only while a handoff records them).
final class DatapathPauseTests: XCTestCase {
    var pool: MbufPool!
    var region: MemoryRegion!

    override func setUpWithError() throws {
        let cfg = MbufPoolConfig(count: 1024, cacheSize: 32)
        region = try MemoryRegion.memfd(name: "dp-pause", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!, pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
    }

    func datapath() -> Datapath { Datapath(pool: pool, ports: ["p0"], options: .init(mode: .macswap, spinBeforeNap: 100)) }

    func waitFor(_ what: String, _ cond: () -> Bool) {
        let end = Date().addingTimeInterval(testDeadline)
        while !cond() && Date() < end { usleep(1000) }
        XCTAssertTrue(cond(), "timed out waiting for \(what)")
    }

    func testStartPausedTouchesNoQueueUntilResumed() {
        let dp = datapath()
        let q = FlowingQueue(flowing: true)
        dp.attach(slot: 0, queues: [q])
        dp.recordForwardTimes()
        dp.startPaused()
        defer { dp.stop() }
        let parked = dp.parkedAtNs
        XCTAssertNotNil(parked, "every thread is parked when startPaused returns")
        dp.expectResume()
        usleep(20_000)   // time enough to poll, had it been allowed to
        XCTAssertEqual(q.pollCount, 0, "a thread started paused never polls before the resume")
        XCTAssertNil(dp.firstForwardNs)
        XCTAssertNil(dp.unparkedAtNs, "not resumed yet")

        let resumeNs = ws_monotonic_ns()
        dp.resume()
        waitFor("the first burst after the resume") { dp.firstForwardNs != nil }
        let unparked = dp.unparkedAtNs, first = dp.firstForwardNs
        XCTAssertNotNil(unparked)
        XCTAssertGreaterThanOrEqual(unparked ?? 0, resumeNs)
        XCTAssertGreaterThanOrEqual(first ?? 0, unparked ?? .max, "the first burst comes after the thread left its park")
        XCTAssertGreaterThan(dp.stats()[0].total.rxPackets, 0)
    }

    func testPauseForwardsWhatIsPendingBeforeParkingThenPollsNothing() {
        let dp = datapath()
        let q = FlowingQueue(flowing: true)
        dp.attach(slot: 0, queues: [q])
        dp.start()
        defer { dp.stop() }
        dp.recordForwardTimes()
        waitFor("forwarding") { dp.lastForwardNs != nil }
        let requested = ws_monotonic_ns()
        dp.pause()
        guard let last = dp.lastForwardNs, let parked = dp.parkedAtNs else { return XCTFail("no stamps after the pause") }
        XCTAssertGreaterThan(last, requested, "the round after the pause request forwarded what was pending")
        XCTAssertGreaterThanOrEqual(parked, last, "parked after its last burst")
        let polls = q.pollCount
        usleep(20_000)
        XCTAssertEqual(q.pollCount, polls, "a paused thread polls nothing")
        XCTAssertEqual(pool.inUseCount, 0, "caches flushed, every mbuf back in the pool")
        dp.resume()
        waitFor("polling again") { q.pollCount > polls }
    }

    func testForwardTimesOnlyWhileRecordingAndNoneForAnIdleGuest() {
        let dp = datapath()
        let q = FlowingQueue(flowing: false)
        dp.attach(slot: 0, queues: [q])
        dp.start()
        defer { dp.stop() }
        waitFor("polling") { q.pollCount > 0 }
        dp.recordForwardTimes()
        dp.pause()
        XCTAssertNil(dp.lastForwardNs, "an idle guest: no burst, no stamp (the pause time is no stand-in)")
        dp.resume()

        q.setFlowing(true)
        waitFor("a stamped burst") { dp.lastForwardNs != nil }
        dp.stopRecordingForwardTimes()
        dp.pause()
        let stamped = dp.lastForwardNs
        dp.resume()
        let rx = dp.stats()[0].total.rxPackets
        waitFor("more traffic") { dp.stats()[0].total.rxPackets > rx + 100 }
        dp.pause()
        XCTAssertEqual(dp.lastForwardNs, stamped, "not recording: no clock read, no new stamp")
        dp.resume()
    }

    func testStartIsIdempotent() {
        let dp = datapath()
        dp.startPaused()
        dp.start()
        XCTAssertEqual(dp.lock.locked { dp.threads.count }, 1)
        dp.resume()
        dp.stop()
    }
}
