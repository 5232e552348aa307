import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartEngine
@testable import WarmstartPorts
import WarmstartTestSupport

/// `--forward txonly`: a polling thread is a traffic source on every queue it polls (the back-end
/// half of the sink-direction bench). Frames have the configured size (chains above the data
/// room), the header template and increasing sequence numbers; frames a full ring does not take
/// are counted as drops; what arrives is counted and freed.
final class TxOnlyTests: XCTestCase {
    func testSourceSendsFramesOfTheConfiguredSize() throws {
        for size in [64, 1518, 9000] {
            let fe = try FrontendSide()
            let dp = Datapath(pool: fe.pool, ports: ["vu0"], options: .init(mode: .txonly, spinBeforeNap: 100, txSize: size))
            let (port, be, _, pairs) = try connectVirtioUser(fe, VirtioUserConfig(queueSize: 64))
            dp.attach(slot: 0, queues: pairs)
            dp.start()
            let got = be.receive(200)
            // Something arriving is counted as received and freed (a source does not forward it).
            XCTAssertTrue(be.send(testFrame(size: 300, seed: 1)))
            let deadline = Date().addingTimeInterval(5)
            while dp.stats()[0].total.rxPackets == 0 && Date() < deadline { usleep(1000) }
            dp.detach(slot: 0)
            dp.stop()
            XCTAssertGreaterThanOrEqual(got.count, 200, "\(size) B frames arrived")
            var seqs: [UInt64] = []
            for f in got {
                XCTAssertEqual(f.count, size)
                XCTAssertEqual(Array(f[0..<14]), [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5])
                seqs.append(f.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: TxOnlySource.seqOffset, as: UInt64.self) })
            }
            XCTAssertEqual(seqs, seqs.sorted(), "sequence numbers increase (\(size) B)")
            XCTAssertEqual(Set(seqs).count, seqs.count)
            let st = dp.stats()[0].total
            XCTAssertEqual(st.rxPackets, 1)
            XCTAssertGreaterThanOrEqual(st.txPackets, UInt64(got.count))
            // The back-end stopped taking frames after 200 (the 64-entry ring filled up): the rest
            // of each burst was dropped and counted.
            XCTAssertGreaterThan(st.drops, 0)
            XCTAssertEqual(st.txBytes, st.txPackets * UInt64(size))
            port.teardown()
            XCTAssertEqual(fe.pool.inUseCount, 0, "dropped frames went back to the pool (\(size) B)")
        }
    }
}
