import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

/// Session export/import as hot upgrade uses it: the descriptors are duplicated as SCM_RIGHTS would
/// (the receiver gets new numbers for the same files), the old session is dropped, and the new one
/// must serve the same front-end memory and rings at the handed-over positions.
final class VhostUserHandoffTests: XCTestCase {
    /// Exports `s`, duplicating every lent descriptor into a table, as the handoff does.
    func transfer(_ s: VhostUserBackendSession, positions: [Int: VirtqueuePosition] = [:]) -> (VhostUserSessionState, [Int32]) {
        var table: [Int32] = []
        let state = try! s.exportHandoffState(register: { fd, _ in
            table.append(dup(fd))
            return table.count - 1
        }, position: { positions[$0] })
        return (state, table)
    }

    func take(_ table: [Int32]) -> (Int) throws(VhostUserError) -> Int32 {
        { i throws(VhostUserError) in table[i] }
    }

    func testSplitSessionResumesWithoutRenegotiation() throws {
        let mem = FrontendMemory(size: 1 << 20)
        var old: VhostUserBackendSession? = configuredSession(pairs: 1, mem: mem)
        XCTAssertEqual(configureRing(old!, RingPlan(index: 0, offset: 0), mem: mem).started.count, 1)
        XCTAssertEqual(configureRing(old!, RingPlan(index: 1, offset: 0x20000), mem: mem).started.count, 1)
        XCTAssertTrue(old!.send(msg(.setStatus, .u64(0x0f))).ok)
        let moved = VirtqueuePosition(lastAvailIndex: 1234, availWrapCounter: true, lastUsedIndex: 1234, usedWrapCounter: true)
        let (state, table) = transfer(old!, positions: [1: moved])
        XCTAssertEqual(state.memory?.count, 1)
        XCTAssertEqual(state.descriptorCount, table.count)
        XCTAssertEqual(state.vrings[1].lastAvailIndex, 1234)
        XCTAssertTrue(state.vrings.allSatisfy(\.started))

        // Round trip through JSON, as the wire does.
        let decoded = try JSONDecoder().decode(VhostUserSessionState.self, from: JSONEncoder().encode(state))
        XCTAssertEqual(decoded, state)
        let features = old!.ackedFeatures
        old = nil   // the old process lets go: its fds close, its mappings go

        let (new, rings) = try VhostUserBackendSession.importHandoffState(decoded, configuration: VhostUserBackendConfiguration(), take: take(table))
        XCTAssertEqual(new.ackedFeatures, features)
        XCTAssertEqual(new.status, 0x0f)
        XCTAssertEqual(new.memory?.generation, state.memoryGeneration)
        XCTAssertEqual(rings.map(\.index), [0, 1])
        XCTAssertEqual(rings[1].base, moved)
        XCTAssertEqual(rings[0].base, VirtqueuePosition())
        // Same pages: the front-end writes, the new mapping sees it.
        mem.base.storeBytes(of: 0xBEEF, toByteOffset: 0x20000 + 0x4000 + 2, as: UInt16.self)
        XCTAssertEqual(rings[1].driverArea.load(fromByteOffset: 2, as: UInt16.self), 0xBEEF)
        XCTAssertNotNil(rings[0].kickFD)
        XCTAssertTrue(rings.allSatisfy { isOpen($0.callFD!) })
        // The new session keeps serving the same connection: GET_VRING_BASE answers the position.
        let o = new.send(msg(.getVringBase, .vringState(VringStatePayload(index: 1, num: 0))))
        guard case let .vringState(v)? = o.reply?.payload else { return XCTFail("no reply") }
        XCTAssertEqual(v.num, 1234)
    }

    func testPackedWrapCountersSurvive() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let old = configuredSession(packed: true, mem: mem)
        XCTAssertEqual(configureRing(old, RingPlan(index: 0), mem: mem).started.first?.layout, .packed)
        let pos = VirtqueuePosition(lastAvailIndex: 17, availWrapCounter: false, lastUsedIndex: 15, usedWrapCounter: true)
        let (state, table) = transfer(old, positions: [0: pos])
        let (new, rings) = try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(), take: take(table))
        XCTAssertEqual(new.layout, .packed)
        XCTAssertEqual(rings.first?.base, pos)
        XCTAssertEqual(state.vrings[1].started, false)
    }

    /// The files a session configured by `configureRing` for `rings` holds: the front-end memory
    /// and each ring's call and kick eventfds (their identities), with the eventfds to pass.
    func ringFiles(_ rings: Int, mem: FrontendMemory) -> (identities: Set<String>, kicks: [Int32], calls: [Int32]) {
        let kicks = (0..<rings).map { _ in makeEventFD() }, calls = (0..<rings).map { _ in makeEventFD() }
        let ids = ([mem.fd] + kicks + calls).compactMap(fileIdentity)
        XCTAssertEqual(Set(ids).count, 1 + 2 * rings, "every file has its own identity: \(ids)")
        return (Set(ids), kicks, calls)
    }

    func testFeaturesTheNewBinaryDoesNotOfferAreRefusedAndNothingLeaks() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let old = configuredSession(mem: mem)
        let files = ringFiles(1, mem: mem)
        configureRing(old, RingPlan(index: 0), mem: mem, kick: files.kicks[0], call: files.calls[0])
        // All an import is handed are descriptors of these files: a leak is a descriptor of one of
        // them, or a mapping of the memory, beyond what the session and the test hold.
        let fdsBefore = descriptors(referringTo: files.identities), mapsBefore = countMappings(ofInode: mem.inode)
        XCTAssertEqual(fdsBefore.count, 4, "the test's memory, the session's memory, kick and call: \(fdsBefore)")
        let (state, table) = transfer(old)
        let narrow = VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.mrgRxbuf.rawValue)
        XCTAssertThrowsError(try VhostUserBackendSession.importHandoffState(state, configuration: narrow, take: take(table))) { e in
            XCTAssertTrue("\(e)".contains("mrgRxbuf"), "\(e)")
        }
        // Refused before taking anything: the caller still owns (and closes) every descriptor.
        for fd in table { XCTAssertEqual(close(fd), 0, "descriptor \(fd) was still the caller's") }
        // A failure after some descriptors were taken: a region that runs past its file.
        var bad = state
        bad.memory![0].size = 2 << 20
        let (_, table2) = transfer(old)
        XCTAssertThrowsError(try VhostUserBackendSession.importHandoffState(bad, configuration: VhostUserBackendConfiguration(), take: take(table2)))
        XCTAssertFalse(isOpen(table2[bad.memory![0].fd]), "the region fd was taken and must be closed on failure")
        for (i, fd) in table2.enumerated() where i != bad.memory![0].fd {
            XCTAssertEqual(close(fd), 0, "descriptor \(fd) was not taken: still the caller's")
        }
        XCTAssertEqual(descriptors(referringTo: files.identities), fdsBefore, "descriptors of the handed-over files")
        XCTAssertEqual(countMappings(ofInode: mem.inode), mapsBefore, "mappings of the front-end memory")
    }

    func testTenTransfersLeakNothing() throws {
        let mem = FrontendMemory(size: 1 << 20)
        var s = configuredSession(mem: mem)
        let files = ringFiles(2, mem: mem)
        configureRing(s, RingPlan(index: 0), mem: mem, kick: files.kicks[0], call: files.calls[0])
        configureRing(s, RingPlan(index: 1, offset: 0x20000), mem: mem, kick: files.kicks[1], call: files.calls[1])
        let fdsBefore = descriptors(referringTo: files.identities).count, mapsBefore = countMappings(ofInode: mem.inode)
        XCTAssertEqual(fdsBefore, 6, "the test's memory, the session's memory, two kicks and two calls")
        for k in 0..<10 {
            let (state, table) = transfer(s, positions: [0: VirtqueuePosition(lastAvailIndex: UInt16(k), lastUsedIndex: UInt16(k))])
            s = try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(), take: take(table)).0
        }
        // The session now holds the tenth generation of descriptors (other numbers, same files).
        XCTAssertEqual(descriptors(referringTo: files.identities).count, fdsBefore, "descriptors of the session's files")
        XCTAssertEqual(countMappings(ofInode: mem.inode), mapsBefore, "mappings of the front-end memory")
        XCTAssertEqual(s.startedRings.first?.base.lastAvailIndex, 9)
    }
}
