import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartEngine
@testable import WarmstartPorts
import WarmstartTestSupport
import WarmstartSpec

/// `queues=N`: every queue pair carries traffic. The datapath deals a virtio-user port's pairs to
/// its polling threads as it does a vhost port's; frames the in-process back-end puts on pair i
/// come back (macswap) on pair i, counted per queue, byte for byte.
final class VirtioUserMultiQueueTests: XCTestCase {
    func testEveryQueuePairCarriesTrafficThroughTheDatapath() throws {
        let pairsWanted = 4, perQueue = 40
        for packed in [false, true] {
            let fe = try FrontendSide()
            let dp = Datapath(pool: fe.pool, ports: ["vu0"], options: .init(mode: .macswap, cores: [0, 1], spinBeforeNap: 100))
            let (port, be, n, pairs) = try connectVirtioUser(fe, VirtioUserConfig(packed: packed, queuePairs: pairsWanted),
                                                             backend: VhostUserBackendConfiguration(maxQueuePairs: pairsWanted))
            XCTAssertNotEqual(n.features & VirtioFeatures.mq.rawValue, 0, "MQ negotiated")
            XCTAssertEqual(pairs.map(\.index), Array(0..<pairsWanted))
            dp.attach(slot: 0, queues: pairs)
            // Two polling threads, the four pairs dealt round robin: each thread serves two.
            XCTAssertEqual(dp.lock.locked { dp.published.perThread.map { $0.map(\.queue.index) } }, [[0, 2], [1, 3]])
            dp.start()
            var sent: [[[UInt8]]] = Array(repeating: [], count: pairsWanted)
            for k in 0..<perQueue {
                for q in 0..<pairsWanted {
                    // The queue is in the payload, so a frame that came back on another pair is seen.
                    var f = testFrame(size: [64, 1518, 9000, 300][k % 4], seed: UInt8(truncatingIfNeeded: k))
                    f[14] = UInt8(q)
                    XCTAssertTrue(be.send(f, ring: 2 * q), "back-end delivered frame \(k) on pair \(q)")
                    sent[q].append(f)
                }
            }
            for q in 0..<pairsWanted {
                let back = be.receive(perQueue, ring: 2 * q + 1)
                XCTAssertEqual(back.count, perQueue, "pair \(q) reflected every frame (packed \(packed))")
                for (f, r) in zip(sent[q], back) {
                    let want = Array(f[6..<12]) + Array(f[0..<6]) + Array(f[12...])
                    XCTAssertTrue(sameFrame(r, want), "pair \(q): \(frameDiff(r, want))")
                }
            }
            dp.detach(slot: 0)
            dp.stop()
            let st = dp.stats()[0]
            XCTAssertEqual(st.queues.count, pairsWanted)
            for (q, c) in st.queues.enumerated() {
                XCTAssertEqual(c.rxPackets, UInt64(perQueue), "queue \(q) rx (packed \(packed))")
                XCTAssertEqual(c.txPackets, UInt64(perQueue), "queue \(q) tx (packed \(packed))")
            }
            XCTAssertEqual(st.total.errors, 0)
            port.teardown()
            XCTAssertEqual(fe.pool.inUseCount, 0, "no mbuf left behind (packed \(packed))")
        }
    }
}
