import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartHandoff

/// A pool whose control block and ring live in a private region (issue 12) crosses a handoff with
/// that region: the new process attaches it with its live ring, and still shares only the packet
/// regions. A state from an older donor (no metadata fields) still attaches its inline pool.
final class HandoffPoolMetadataTests: XCTestCase {
    func testSeparateMetadataCrossesAHandoff() throws {
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 256, cacheSize: 0)), hugepages: .off)
        let held = (0..<40).compactMap { _ in live.mbufPool.alloc() }
        for m in held[0..<10] { live.mbufPool.free(m) }
        var b = HandoffStateBuilder(configuration: HandoffConfiguration(), describedAtNs: 0)
        for r in live.regions { b.addRegion(r) }
        for p in live.pools { try b.addPool(p, regions: live.regions) }
        XCTAssertEqual(b.state.pools[0].metadataRegion, 2)
        let decoded = try JSONDecoder().decode(HandoffState.self, from: JSONEncoder().encode(b.state))
        let received = HandoffReceived(state: decoded, fds: HandoffFDTable(fds: b.fds.map { dup($0) }, names: decoded.fds))
        let regions = try received.mapRegions()
        let pools = try received.attachPools(in: regions)
        let taken = LiveMemory.handedOver(regions: regions, pools: pools)
        XCTAssertTrue(taken.mbufPool.hasSeparateMetadata)
        XCTAssertEqual(taken.sharedRegions.map(\.name), ["mbufs", "general"])
        XCTAssertEqual(taken.mbufPool.ringCount, 10)
        XCTAssertEqual(taken.mbufPool.availableCount, 256 - 30)
        let stillHeld = Set(held[10...].map(\.index))
        var got = Set<UInt32>()
        while let m = taken.mbufPool.alloc() { got.insert(m.index) }
        XCTAssertEqual(got.count, 226)
        XCTAssertTrue(got.isDisjoint(with: stillHeld))
    }

    func testStateWithoutMetadataFieldsAttachesAnInlinePool() throws {
        let cfg = MbufPoolConfig(count: 64, cacheSize: 0)
        let region = try MemoryRegion.memfd(name: "mbufs", size: MbufPoolConfig.bytesNeeded(cfg), pageSize: .small4K)
        let pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
        var b = HandoffStateBuilder(configuration: HandoffConfiguration(), describedAtNs: 0)
        b.addRegion(region)
        try b.addPool(pool, regions: [region])
        var json = String(decoding: try JSONEncoder().encode(b.state), as: UTF8.self)
        XCTAssertFalse(json.contains("metadataRegion"), "an inline pool is described as before")
        json = json.replacingOccurrences(of: "\"metadataOffset\":null,", with: "")
        let decoded = try JSONDecoder().decode(HandoffState.self, from: Data(json.utf8))
        let received = HandoffReceived(state: decoded, fds: HandoffFDTable(fds: b.fds.map { dup($0) }, names: decoded.fds))
        let pools = try received.attachPools(in: try received.mapRegions())
        XCTAssertFalse(pools[0].hasSeparateMetadata)
        XCTAssertEqual(pools[0].availableCount, 64)
    }
}
