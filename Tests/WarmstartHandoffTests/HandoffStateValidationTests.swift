import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartHandoff

/// Issue 12, defect 6: the handed-over state document is checked whole before anything in it is
/// used; each absurd field is refused by name.
final class HandoffStateValidationTests: XCTestCase {
    func sample() -> HandoffState {
        HandoffState(version: .current, donorPid: 1, describedAtNs: 0,
                     configuration: HandoffConfiguration(values: [HandoffConfiguration.Keys.cores: "2", HandoffConfiguration.Keys.txSize: "64",
                                                                  HandoffConfiguration.Keys.controlFD: "4"]),
                     fds: ["memory region 'pool'", "port 'a' listening socket", "port 'a' vhost-user connection", "port 't' TAP queue 0",
                           "control socket"],
                     regions: [HandoffRegionState(name: "pool", fd: 0, size: 8 << 20, fileOffset: 0, ioAddress: 0, pageSize: 4096,
                                                  backing: MemoryBacking.memfd.rawValue)],
                     pools: [HandoffPoolState(config: MbufPoolConfig(count: 1024), region: 0, offset: 0, poolID: 1)],
                     ports: [HandoffPortState(name: "a", kind: "vhost-user", path: "/tmp/a.sock", listenFD: 1, connectionFD: 2),
                             HandoffPortState(name: "t", kind: "tap", path: "tap0", tapFDs: [3])])
    }

    func refused(_ edit: (inout HandoffState) -> Void, _ expected: String, line: UInt = #line) {
        var s = sample()
        edit(&s)
        XCTAssertThrowsError(try s.validate(), line: line) { e in
            XCTAssertTrue("\(e)".contains(expected), "\(e)", line: line)
            XCTAssertEqual((e as? HandoffError)?.step, .transfer, line: line)
        }
    }

    func testSampleIsValid() {
        XCTAssertNoThrow(try sample().validate())
    }

    func testTheRefusalNamesTheField() {
        var s = sample()
        s.ports[1].tapFDs = [0]
        XCTAssertThrowsError(try s.validate()) { e in
            guard case let .invalidState(field, _)? = (e as? HandoffError)?.reason else { return XCTFail("\(e)") }
            XCTAssertEqual(field, "ports[1].tapFDs[0]")
            XCTAssertTrue("\(e)".contains("(field ports[1].tapFDs[0])"), "\(e)")
        }
    }

    func testAbsurdCountsAndIndicesAreRefused() {
        refused({ $0.fds = Array(repeating: "x", count: 100_000) }, "100000 descriptors")
        refused({ $0.regions = Array(repeating: $0.regions[0], count: 1000) }, "1000 memory regions")
        refused({ $0.regions[0].fd = 9 }, "descriptor index 9 is outside the table of 5")
        refused({ $0.regions[0].fd = -1 }, "descriptor index -1")
        refused({ $0.ports[1].tapFDs = [0] }, "descriptor index 0 is used twice")
        refused({ $0.ports[1].tapFDs = [] }, "0 TAP queues")
        refused({ $0.regions[0].size = 0 }, "size 0")
        refused({ $0.regions[0].fileOffset = Int.max }, "overflows")
        refused({ $0.regions[0].pageSize = 12345 }, "unknown page size")
        refused({ $0.regions[0].backing = "floppy" }, "unknown backing")
        refused({ $0.pools[0].region = 3 }, "names region 3")
        refused({ $0.pools[0].offset = 9 << 20 }, "outside its region")
        refused({ $0.pools[0].metadataRegion = 0; $0.pools[0].metadataOffset = 0 }, "names metadata region 0")
        refused({ $0.pools[0].metadataRegion = 7; $0.pools[0].metadataOffset = 0 }, "names metadata region 7")
        refused({ $0.pools[0].metadataRegion = 0 }, "without the other")
        refused({ $0.ports[1].name = "a" }, "appears twice")
        refused({ $0.ports[0].name = "" }, "empty")
        refused({ $0.ports[0].name = "a\u{1b}[2J" }, "control characters")
        refused({ $0.ports[0].kind = "floppy" }, "unknown kind")
        refused({ $0.ports[1].connectionFD = 4 }, "a TAP port with vhost-user descriptors")
        refused({ $0.configuration.values[HandoffConfiguration.Keys.cores] = "0" }, "cores '0'")
        refused({ $0.configuration.values[HandoffConfiguration.Keys.cores] = "99999999" }, "cores '99999999'")
        refused({ $0.configuration.values[HandoffConfiguration.Keys.txSize] = "-1" }, "tx-size '-1'")
        refused({ $0.configuration.values[HandoffConfiguration.Keys.controlFD] = "2" }, "descriptor index 2 is used twice")
    }
}
