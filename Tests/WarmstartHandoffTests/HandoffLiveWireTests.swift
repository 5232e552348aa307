import Foundation
import XCTest
import WarmstartEngine
import WarmstartVhostUser
@testable import WarmstartHandoff
import WarmstartSpec

/// The one document that crosses inside the blackout (`quiesced`, binary from 1.2), and the
/// blackout figure the new process computes from it.
final class HandoffLiveWireTests: XCTestCase {
    let ports = ["vm0", "vm1"]

    func sample() -> HandoffLive {
        var c = QueueCounters()
        c.rxPackets = 1 << 40; c.rxBytes = 3; c.txPackets = 4; c.txBytes = 5; c.drops = 6; c.errors = 7
        return HandoffLive(quiescedAtNs: 1_000_500, pausedAtNs: 1_000_200, lastForwardNs: 1_000_000,
                           rings: [HandoffRingPosition(port: "vm1", index: 3, base: VirtqueuePosition(lastAvailIndex: 65535, availWrapCounter: false,
                                                                                                 lastUsedIndex: 7, usedWrapCounter: true)),
                                   HandoffRingPosition(port: "vm0", index: 0, base: VirtqueuePosition(lastAvailIndex: 1, lastUsedIndex: 1))],
                           counters: ["vm1": c, "vm0": QueueCounters()])
    }

    func testBinaryRoundTripsAndIsSmall() throws {
        let live = sample()
        let bytes = try live.binaryEncoded(ports: ports)
        XCTAssertEqual(bytes.count, 32 + 2 * 12 + 2 * 56)
        XCTAssertEqual(try HandoffLive(binary: bytes, ports: ports), live)
        // An idle guest: no last-forward time, and it stays absent (not 0).
        var idle = live
        idle.lastForwardNs = nil
        idle.pausedAtNs = nil
        XCTAssertEqual(try HandoffLive(binary: idle.binaryEncoded(ports: ports), ports: ports), idle)
    }

    func testMalformedPayloadsAreNamedErrors() throws {
        let good = try sample().binaryEncoded(ports: ports)
        func reason(_ b: [UInt8], ports: [String]? = nil) -> String {
            do { _ = try HandoffLive(binary: b, ports: ports ?? self.ports); return "accepted" } catch { return error.reason.description }
        }
        XCTAssertTrue(reason(Array(good.prefix(10))).contains("shorter than its 32-byte header"), reason(Array(good.prefix(10))))
        XCTAssertTrue(reason(good + [0]).contains("expected \(good.count)"), reason(good + [0]))
        var b = good
        b[32] = 9   // ring 0's port index
        XCTAssertTrue(reason(b).contains("ring 0 names port 9 of 2"), reason(b))
        b = good
        b[32 + 8] = 2   // ring 0's avail wrap counter
        XCTAssertTrue(reason(b).contains("ring 0 avail wrap counter is 2"), reason(b))
        b = good
        b[28] = 1   // reserved header word
        XCTAssertTrue(reason(b).contains("reserved header field"), reason(b))
        b = good
        b[32 + 24 + 56] = 0   // the second counter entry names port 0 again (sorted: vm0, vm1)
        XCTAssertTrue(reason(b).contains("two counter entries"), reason(b))
        XCTAssertTrue(reason(good, ports: ["vm0"]).contains("names port 1 of 1"))
        XCTAssertThrowsError(try HandoffLive(rings: [HandoffRingPosition(port: "other", index: 0, base: VirtqueuePosition())]).binaryEncoded(ports: ports))
    }

    func testVersionsAgreeOnTheEncoding() {
        XCTAssertTrue(HandoffVersion.current.hasBinaryLive)
        XCTAssertFalse(HandoffVersion(major: 1, minor: 1).hasBinaryLive, "a 1.1 peer gets and sends JSON")
    }

    /// The parts add up to the blackout; the old process's idle time before its pause and the
    /// new one's before its first burst are told apart from the time nobody polled.
    func testBlackoutPartsAddUp() throws {
        let live = HandoffLive(quiescedAtNs: 1_300_000, pausedAtNs: 1_250_000, lastForwardNs: 1_000_000)
        let b = HandoffTaker.blackout(live: live, quiescedInNs: 1_400_000, readyOutNs: 1_450_000, commitInNs: 1_470_000,
                                      pollingSinceNs: 1_480_000, firstNs: 1_600_000, trafficWaitMs: 1000)
        XCTAssertEqual(b.ms ?? 0, 0.6, accuracy: 1e-9)
        XCTAssertEqual(b.parts.map(\.name), ["old-idle", "pause", "quiesced-message", "activate", "commit-message", "unpark", "new-idle"])
        XCTAssertEqual(b.parts.map(\.ms), [0.25, 0.05, 0.1, 0.05, 0.02, 0.01, 0.12].map { $0 }, "\(b.parts)")
        XCTAssertEqual(b.parts.reduce(0) { $0 + $1.ms }, b.ms ?? 0, accuracy: 1e-9)
        XCTAssertEqual(b.notPollingMs ?? 0, 0.23, accuracy: 1e-9, "paused → polling again")
        XCTAssertNil(b.note)
    }

    func testNoFigureForAnIdleGuest() {
        let idleOld = HandoffTaker.blackout(live: HandoffLive(quiescedAtNs: 5, pausedAtNs: 4, lastForwardNs: nil), quiescedInNs: 6, readyOutNs: 7,
                                            commitInNs: 8, pollingSinceNs: 9, firstNs: 10, trafficWaitMs: 1000)
        XCTAssertNil(idleOld.ms)
        XCTAssertEqual(idleOld.note, "the old process forwarded nothing since the handoff began (idle guest)")
        let idleNew = HandoffTaker.blackout(live: HandoffLive(quiescedAtNs: 5, pausedAtNs: 4, lastForwardNs: 3), quiescedInNs: 6, readyOutNs: 7,
                                            commitInNs: 8, pollingSinceNs: 9, firstNs: nil, trafficWaitMs: 250)
        XCTAssertNil(idleNew.ms)
        XCTAssertEqual(idleNew.note, "this process forwarded nothing within 250 ms of resuming (idle guest)")
    }
}
