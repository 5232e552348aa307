import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
import WarmstartMemory
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

/// Issue 12, defect 3, at the session: every mapping of front-end memory (SET_MEM_TABLE,
/// ADD_MEM_REG, SET_INFLIGHT_FD) is guarded, a truncation sets the session's flag with a reason
/// naming the mapping, and the buffer we create for GET_INFLIGHT_FD cannot be shrunk at all.
final class VhostUserShrinkingMemoryTests: XCTestCase {
    let withInflight = VhostUserFeatures.protocolDefault | VhostUserFeatures.protocolOptIn

    func inflightSession() -> VhostUserBackendSession {
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(protocolFeatures: withInflight))
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(withInflight))).ok)
        XCTAssertTrue(s.send(msg(.setFeatures, .u64(VirtioFeatures([.version1, .protocolFeatures]).rawValue))).ok)
        return s
    }

    func testTruncatedMemoryRegionMarksTheSession() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let before = MappingFaultGuard.registered
        var s: VhostUserBackendSession? = inflightSession()
        XCTAssertTrue(s!.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        XCTAssertEqual(MappingFaultGuard.registered, before + 1)
        let host = try XCTUnwrap(s!.memory?.translate(guest: 0x8000, length: 8))
        XCTAssertEqual(ftruncate(mem.fd, 0x4000), 0)
        XCTAssertEqual(host.load(as: UInt64.self), 0, "a read past the new end of the file reads zeros")
        XCTAssertTrue(s!.memoryFault.isSet)
        let reason = s!.memoryFault.reason(peer: "front-end") ?? ""
        XCTAssertTrue(reason.contains("front-end truncated its memory region at guest 0x0 "), reason)
        XCTAssertTrue(reason.contains("0x8000 bytes into the mapping"), reason)
        s = nil
        XCTAssertEqual(MappingFaultGuard.registered, before, "unregistered when the session lets the region go")
    }

    func testTruncatedInflightBufferMarksTheSession() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let s = inflightSession()
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        let buffer = FrontendMemory(size: 2 * 4160)
        let p = InflightPayload(mmapSize: 2 * 4160, mmapOffset: 0, numQueues: 2, queueSize: 256)
        XCTAssertTrue(s.send(msg(.setInflightFD, .inflight(p), fds: [buffer.dupFD()])).ok)
        let region = try XCTUnwrap(s.inflight?.queueRegion(1))
        XCTAssertEqual(ftruncate(buffer.fd, 0), 0)
        XCTAssertEqual(region.load(fromByteOffset: 8, as: UInt16.self), 0)
        let reason = s.memoryFault.reason(peer: "front-end") ?? ""
        XCTAssertTrue(reason.contains("front-end truncated its inflight buffer"), reason)
    }

    /// GET_INFLIGHT_FD: the buffer we create and lend to the front-end is sealed against shrinking.
    func testOurInflightBufferIsSealed() throws {
        let s = inflightSession()
        let g = s.send(msg(.getInflightFD, .inflight(InflightPayload(mmapSize: 0, mmapOffset: 0, numQueues: 2, queueSize: 256))))
        let fd = try XCTUnwrap(g.reply?.fds.first)
        XCTAssertNotEqual(ws_file_seals(fd) & WS_F_SEAL_SHRINK, 0)
        XCTAssertEqual(ftruncate(fd, 0), -1)
        XCTAssertEqual(errno, EPERM)
        XCTAssertTrue(s.inflight?.guarded.sealedAgainstShrink ?? false)
    }
    /// Hot upgrade: the regions a new process receives by handoff are guarded under the new
    /// session's flag.
    func testRegionsReceivedByHandoffAreGuarded() throws {
        let mem = FrontendMemory(size: 1 << 20)
        var old: VhostUserBackendSession? = configuredSession(pairs: 1, mem: mem)
        var table: [Int32] = []
        let state = try old!.exportHandoffState(register: { fd, _ in
            table.append(dup(fd))
            return table.count - 1
        }, position: { _ in nil })
        old = nil
        let (new, _) = try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(),
                                                                      take: { i throws(VhostUserError) in table[i] })
        let host = try XCTUnwrap(new.memory?.translate(guest: 0x10000, length: 8))
        XCTAssertEqual(ftruncate(mem.fd, 0), 0)
        XCTAssertEqual(host.load(as: UInt64.self), 0)
        XCTAssertTrue(new.memoryFault.reason(peer: "front-end")?.contains("memory region at guest 0x0") ?? false,
                      "\(String(describing: new.memoryFault.reason(peer: "front-end")))")
    }
}
