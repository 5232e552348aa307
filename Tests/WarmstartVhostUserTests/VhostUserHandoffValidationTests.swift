import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire

/// Issue 12, defect 6: an imported session state is checked like the vhost-user messages that built
/// it. A bad one is refused with an error naming the field; nothing traps, nothing is taken.
final class VhostUserHandoffValidationTests: XCTestCase {
    /// A configured split session with ring 0 started, exported with duplicated descriptors.
    func exported() -> (VhostUserSessionState, [Int32], FrontendMemory) {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(pairs: 1, mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0, offset: 0), mem: mem).started.count, 1)
        var table: [Int32] = []
        let state = try! s.exportHandoffState(register: { fd, _ in table.append(dup(fd)); return table.count - 1 })
        return (state, table, mem)
    }

    func refused(_ edit: (inout VhostUserSessionState) -> Void, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        var (state, table, mem) = exported()
        _ = mem
        defer { for fd in table { close(fd) } }
        edit(&state)
        var taken = 0
        XCTAssertThrowsError(try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(),
                                                                          take: { i throws(VhostUserError) in taken += 1; return dup(table[i]) }),
                             file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(expected), "\(e)", file: file, line: line)
        }
        XCTAssertEqual(taken, 0, "refused before any descriptor was taken", file: file, line: line)
    }

    /// A started vring of size 0 trapped in the split ring's power-of-two arithmetic (num - 1).
    func testVringSizeZeroIsRefused() {
        refused({ $0.vrings[0].size = 0 }, "size 0 is not in 1...32768")
    }

    func testAbsurdFieldsAreRefused() {
        refused({ $0.vrings[0].size = 65536 }, "size 65536")
        refused({ $0.vrings[0].size = 24 }, "not a power of two")
        refused({ $0.vrings[1].index = 0 }, "described twice")
        refused({ $0.vrings[1].index = 7 }, "vring index 7")
        refused({ $0.rarpMAC = [1, 2, 3] }, "RARP MAC")
        refused({ $0.vrings[0].addressFlags = 0x80 }, "address flags")
        refused({ $0.vrings[0].usedAddress = nil }, "2 of its 3 ring addresses")
        refused({ $0.vrings[0].call = VhostUserEventFDSlotState(kind: .fd, fd: $0.memory![0].fd) }, "used twice")
        refused({ $0.vrings[0].err = VhostUserEventFDSlotState(kind: .polling, fd: 3) }, "names a descriptor")
        refused({ $0.memory![0].size = 0 }, "has size 0")
        refused({ $0.memory![0].mmapOffset = UInt64.max - 10 }, "overflows")
        refused({ $0.inflight = VhostUserInflightState(fd: 99, mmapSize: 1 << 20, mmapOffset: 0, numQueues: 300, queueSize: 256) },
                "inflight buffer for 300 queues")
        refused({ $0.inflight = VhostUserInflightState(fd: 99, mmapSize: 1 << 20, mmapOffset: 0, numQueues: 1, queueSize: 0) },
                "inflight queue size 0")
    }

    /// The untouched state still imports.
    func testValidStateImports() throws {
        let (state, table, mem) = exported()
        _ = mem
        let (_, rings) = try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(),
                                                                        take: { i throws(VhostUserError) in table[i] })
        XCTAssertEqual(rings.map(\.index), [0])
    }
}
