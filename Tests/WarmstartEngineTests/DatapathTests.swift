import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartEngine
import WarmstartTestSupport

/// A queue the test feeds and drains: receive hands out frames the test queued; transmit copies
/// each frame out (as a vhost enqueue would) and frees it.
final class TestQueue: BurstQueue, @unchecked Sendable {
    let lock = NSLock()
    var inbox: [[UInt8]] = []
    var outbox: [[UInt8]] = []
    var room = Int.max
    var errorCount: UInt64 { 0 }

    func push(_ frame: [UInt8]) { lock.lock(); inbox.append(frame); lock.unlock() }
    var sent: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return outbox }

    func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        lock.lock(); defer { lock.unlock() }
        var n = 0
        while n < max, !inbox.isEmpty, let m = cache.alloc() {
            let f = inbox.removeFirst()
            f.withUnsafeBytes { m.data.copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            m.dataLength = UInt16(f.count)
            m.packetLength = UInt32(f.count)
            out[n] = m
            n += 1
        }
        return n
    }

    func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        lock.lock(); defer { lock.unlock() }
        let take = min(count, room)
        for i in 0..<take {
            let m = pkts[i]
            outbox.append(Array(UnsafeRawBufferPointer(start: m.data, count: Int(m.dataLength))))
            cache.free(m)
        }
        if room != Int.max { room -= take }
        return take
    }
}

func frame(dst: [UInt8], src: [UInt8], payload: UInt8, length: Int = 64) -> [UInt8] {
    dst + src + [0x08, 0x00] + [UInt8](repeating: payload, count: length - 14)
}

final class DatapathTests: XCTestCase {
    var pool: MbufPool!
    var region: MemoryRegion!

    override func setUpWithError() throws {
        let cfg = MbufPoolConfig(count: 4096, cacheSize: 64)
        region = try MemoryRegion.memfd(name: "dp", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!, pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
    }

    func waitFor(_ what: String, timeout: Double = testDeadline, _ cond: () -> Bool) {
        let end = Date().addingTimeInterval(timeout)
        while !cond() && Date() < end { usleep(1000) }
        XCTAssertTrue(cond(), "timed out waiting for \(what)")
    }

    let macA: [UInt8] = [0x02, 0, 0, 0, 0, 0xA]
    let macB: [UInt8] = [0x02, 0, 0, 0, 0, 0xB]
    let macC: [UInt8] = [0x02, 0, 0, 0, 0, 0xC]
    let bcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    /// While a port leaves (its queues out of the plan, threads not yet past their last burst on
    /// them) its counters are still in `stats()`: a total never dips, and is counted once after.
    func testCountersDoNotDipWhileAPortLeaves() {
        let dp = Datapath(pool: pool, ports: ["p0"], options: .init(mode: .macswap, spinBeforeNap: 10))
        let q = TestQueue()
        dp.attach(slot: 0, queues: [q])
        dp.start()
        defer { dp.stop() }
        for i in 0..<50 { q.push(frame(dst: macB, src: macA, payload: UInt8(i))) }
        waitFor("50 frames reflected") { q.sent.count == 50 }
        XCTAssertEqual(dp.stats()[0].total.rxPackets, 50)
        // A parked thread does not acknowledge the plan without the queue: detach waits, and
        // meanwhile the queue is out of the slot but not folded into the history yet.
        dp.pause()
        let left = DispatchSemaphore(value: 0)
        Thread { dp.detach(slot: 0); left.signal() }.start()
        waitFor("queue out of the slot") { dp.lock.locked { dp.slots[0].isEmpty } }
        XCTAssertEqual(dp.stats()[0].total.rxPackets, 50, "counted while leaving")
        XCTAssertEqual(dp.stats()[0].queues.first?.txPackets, 50)
        dp.resume()
        XCTAssertEqual(left.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(dp.stats()[0].total.rxPackets, 50, "folded once")
        XCTAssertEqual(dp.stats()[0].queues.map(\.rxPackets), [50])
    }

    func testIOModePairsPortsLikeTestpmd() {
        let dp = Datapath(pool: pool, ports: ["p0", "p1", "p2"], options: .init(mode: .io, spinBeforeNap: 10))
        XCTAssertEqual(dp.ioPeer(of: 0), 1)
        XCTAssertEqual(dp.ioPeer(of: 1), 0)
        XCTAssertEqual(dp.ioPeer(of: 2), 2, "an odd last port is paired with itself")
        let q = (0..<3).map { _ in TestQueue() }
        for i in 0..<3 { dp.attach(slot: i, queues: [q[i]]) }
        dp.start()
        defer { dp.stop() }
        for i in 0..<100 { q[0].push(frame(dst: macB, src: macA, payload: UInt8(i))) }
        q[1].push(frame(dst: macA, src: macB, payload: 0xEE))
        q[2].push(frame(dst: macC, src: macC, payload: 0xCC))
        waitFor("forwarding") { q[1].sent.count == 100 && q[0].sent.count == 1 && q[2].sent.count == 1 }
        XCTAssertEqual(q[1].sent.map { $0[20] }, (0..<100).map { UInt8($0) }, "order and payload kept")
        XCTAssertEqual(q[2].sent.first?[20], 0xCC)
        let stats = dp.stats()
        XCTAssertEqual(stats[0].total.rxPackets, 100)
        XCTAssertEqual(stats[0].total.rxBytes, 6400)
        XCTAssertEqual(stats[1].total.txPackets, 100)
        XCTAssertEqual(stats[1].total.txBytes, 6400)
        XCTAssertNotNil(stats[0].firstPacketNs)
        XCTAssertEqual(pool.availableCount + 0, pool.config.count - 0 - pool.inUseCount)
    }

    func testDropsAreCountedWhenThePeerIsFullOrAbsent() {
        let dp = Datapath(pool: pool, ports: ["p0", "p1"], options: .init(mode: .io, spinBeforeNap: 10))
        let a = TestQueue(), b = TestQueue()
        b.room = 10
        dp.attach(slot: 0, queues: [a])
        dp.start()
        defer { dp.stop() }
        for i in 0..<5 { a.push(frame(dst: macB, src: macA, payload: UInt8(i))) }
        waitFor("drops with no peer") { dp.stats()[0].total.drops == 5 }
        dp.attach(slot: 1, queues: [b])
        for i in 0..<30 { a.push(frame(dst: macB, src: macA, payload: UInt8(i))) }
        waitFor("drops at a full peer") { dp.stats()[1].total.drops == 20 }
        XCTAssertEqual(b.sent.count, 10)
        dp.stop()
        // Every mbuf went back: nothing leaks on drop paths.
        XCTAssertEqual(pool.inUseCount, 0)
    }

    func testMacswapReflectsToTheSender() {
        let dp = Datapath(pool: pool, ports: ["p0"], options: .init(mode: .macswap, spinBeforeNap: 10))
        let a = TestQueue()
        dp.attach(slot: 0, queues: [a])
        dp.start()
        defer { dp.stop() }
        a.push(frame(dst: macB, src: macA, payload: 1))
        waitFor("reflection") { a.sent.count == 1 }
        XCTAssertEqual(Array(a.sent[0][0..<6]), macA)
        XCTAssertEqual(Array(a.sent[0][6..<12]), macB)
    }

    func testL2LearnsAndFloods() {
        let dp = Datapath(pool: pool, ports: ["p0", "p1", "p2"], options: .init(mode: .l2, spinBeforeNap: 10))
        let q = (0..<3).map { _ in TestQueue() }
        for i in 0..<3 { dp.attach(slot: i, queues: [q[i]]) }
        dp.start()
        defer { dp.stop() }
        // Unknown destination: flooded to both other ports.
        q[0].push(frame(dst: macB, src: macA, payload: 1))
        waitFor("flood") { q[1].sent.count == 1 && q[2].sent.count == 1 }
        // B answers from port 1: A was learned on port 0, so only port 0 gets it.
        q[1].push(frame(dst: macA, src: macB, payload: 2))
        waitFor("unicast") { q[0].sent.count == 1 }
        // Now B is known on port 1.
        q[2].push(frame(dst: macB, src: macC, payload: 3))
        waitFor("learned unicast") { q[1].sent.count == 2 }
        usleep(20_000)
        XCTAssertEqual(q[0].sent.count, 1)
        XCTAssertEqual(q[2].sent.count, 1)
        // Broadcast goes everywhere but back.
        q[0].push(frame(dst: bcast, src: macA, payload: 4))
        waitFor("broadcast") { q[1].sent.count == 3 && q[2].sent.count == 2 }
        dp.stop()
        XCTAssertEqual(pool.inUseCount, 0, "flooded copies share one mbuf by reference count, all freed")
    }

    func testPortsJoinAndLeaveWhileForwardingWithTwoThreads() {
        let dp = Datapath(pool: pool, ports: ["p0", "p1"], options: .init(mode: .io, cores: [-1, -1], spinBeforeNap: 10))
        dp.start()
        defer { dp.stop() }
        let a = TestQueue(), b = TestQueue()
        for round in 0..<20 {
            dp.attach(slot: 0, queues: [a])
            dp.attach(slot: 1, queues: [b])
            for i in 0..<10 { a.push(frame(dst: macB, src: macA, payload: UInt8(i))) }
            waitFor("round \(round)") { b.sent.count == (round + 1) * 10 }
            dp.detach(slot: 1)
            dp.detach(slot: 0)
        }
        XCTAssertEqual(dp.stats()[0].total.rxPackets, 200, "counters survive a port leaving")
        XCTAssertEqual(dp.stats()[1].total.txPackets, 200)
    }

    func testPauseQuiescesAtABurstBoundary() {
        let dp = Datapath(pool: pool, ports: ["p0", "p1"], options: .init(mode: .io, spinBeforeNap: 10))
        let a = TestQueue(), b = TestQueue()
        dp.attach(slot: 0, queues: [a])
        dp.attach(slot: 1, queues: [b])
        dp.start()
        defer { dp.stop() }
        dp.pause()
        a.push(frame(dst: macB, src: macA, payload: 9))
        usleep(30_000)
        XCTAssertEqual(b.sent.count, 0, "nothing moves while paused")
        XCTAssertEqual(pool.inUseCount, 0, "caches are flushed when parked")
        dp.resume()
        waitFor("resume") { b.sent.count == 1 }
    }

    func testMACTable() {
        let t = MACTable()
        macA.withUnsafeBytes { t.learn($0.baseAddress!, port: 3) }
        XCTAssertEqual(macA.withUnsafeBytes { t.lookup($0.baseAddress!) }, 3)
        XCTAssertNil(macB.withUnsafeBytes { t.lookup($0.baseAddress!) })
        bcast.withUnsafeBytes { t.learn($0.baseAddress!, port: 1) }
        XCTAssertNil(bcast.withUnsafeBytes { t.lookup($0.baseAddress!) }, "group addresses are never learned")
    }
}
