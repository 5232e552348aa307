import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

/// A memfd mapped in the test process, playing the front-end's memory.
final class FrontendMemory {
    let fd: Int32
    let size: Int
    let base: UnsafeMutableRawPointer
    var user: UInt64 { UInt64(UInt(bitPattern: base)) }

    init(size: Int) {
        fd = ws_memfd_create("vhost-test", WS_MFD_CLOEXEC)
        precondition(fd >= 0)
        precondition(ftruncate(fd, off_t(size)) == 0)
        self.size = size
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        precondition(p != MAP_FAILED)
        base = p
    }

    deinit {
        munmap(base, size)
        close(fd)
    }

    /// A fresh descriptor for a message (the receiver owns and closes what it gets).
    func dupFD() -> Int32 { dup(fd) }

    /// The memfd's inode: its mappings in /proc/self/maps carry it.
    var inode: UInt64 {
        var st = stat()
        precondition(fstat(fd, &st) == 0)
        return UInt64(st.st_ino)
    }

    func region(guest: UInt64 = 0, offset: UInt64 = 0, size: UInt64? = nil) -> MemoryRegionPayload {
        MemoryRegionPayload(guestAddress: guest, size: size ?? UInt64(self.size), userAddress: user + offset, mmapOffset: offset)
    }
}

/// This process's open descriptors that refer to one of the files `identities` (`fileIdentity`).
///
/// Leak checks count these rather than every open descriptor: a test shares the process with
/// descriptors that other tests' threads and Foundation (its Process manager closes a child's
/// termination socket on its own thread, after `waitUntilExit` returned) open and close at any
/// moment — and with nearly two hundred that earlier tests leave open — so a count of all of them
/// is not a property of the test.
func descriptors(referringTo identities: Set<String>) -> [Int32] {
    let fds = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap { Int32($0) }
    return fds.filter { fileIdentity($0).map(identities.contains) ?? false }.sorted()
}

/// This process's mappings of the file with inode `inode` (the fifth column of /proc/self/maps).
func countMappings(ofInode inode: UInt64) -> Int {
    let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
    return maps.split(separator: "\n").filter { line in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        return f.count >= 5 && f[4] == "\(inode)"
    }.count
}


extension VhostUserBackendSession {
    /// Sends `m` through the same path as the wire: encode, then validate and handle.
    @discardableResult
    func send(_ m: VhostUserMessage) -> VhostUserOutcome {
        let bytes = m.encoded()
        let header = try! VhostUserHeader.decode(Array(bytes[0..<12]), expectReply: false)
        return receive(header: header, payload: Array(bytes[12...]), fds: m.fds)
    }

    func sendRaw(request: UInt32, flags: UInt32 = 1, payload: [UInt8], fds: [Int32] = []) -> VhostUserOutcome {
        receive(header: VhostUserHeader(request: request, flags: flags, size: UInt32(payload.count)), payload: payload, fds: fds)
    }
}

extension VhostUserOutcome {
    var ok: Bool { error == nil && !isFatal }
    var replyU64: UInt64? { if case let .u64(v)? = reply?.payload { return v } else { return nil } }
    var started: [VringSetup] { events.compactMap { if case let .ringStarted(s) = $0 { return s } else { return nil } } }
    var stopped: [Int] { events.compactMap { if case let .ringStopped(i, _) = $0 { return i } else { return nil } } }
}

/// Ring layout inside a FrontendMemory: desc at 0, avail at 0x4000, used at 0x8000 (offsets).
struct RingPlan {
    var index: Int
    var size: Int = 256
    var offset: UInt64 = 0
    func addr(_ mem: FrontendMemory) -> VringAddressPayload {
        VringAddressPayload(index: UInt32(index), descriptor: mem.user + offset, used: mem.user + offset + 0x8000,
                            available: mem.user + offset + 0x4000)
    }
}

/// A session with features acked (optionally protocol features and packed), memory set.
func configuredSession(packed: Bool = false, proto: UInt64 = VhostUserFeatures.protocolDefault,
                       pairs: Int = 1, mem: FrontendMemory) -> VhostUserBackendSession {
    let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(maxQueuePairs: pairs))
    XCTAssertTrue(s.send(msg(.setOwner)).ok)
    var f = VirtioFeatures([.version1, .protocolFeatures, .ringEventIdx, .mrgRxbuf]).rawValue
    if packed { f |= VirtioFeatures.ringPacked.rawValue }
    XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(proto))).ok)
    XCTAssertTrue(s.send(msg(.setFeatures, .u64(f))).ok)
    XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
    return s
}

/// Configures ring `plan` fully; returns the outcome of the last message.
@discardableResult
func configureRing(_ s: VhostUserBackendSession, _ plan: RingPlan, mem: FrontendMemory, base: UInt32 = 0,
                   kick: Int32? = nil, call: Int32? = nil, enable: Bool = true) -> VhostUserOutcome {
    let i = UInt32(plan.index)
    XCTAssertTrue(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: i, num: UInt32(plan.size))))).ok)
    XCTAssertTrue(s.send(msg(.setVringBase, .vringState(VringStatePayload(index: i, num: base)))).ok)
    XCTAssertTrue(s.send(msg(.setVringAddr, .vringAddress(plan.addr(mem)))).ok)
    XCTAssertTrue(s.send(msg(.setVringCall, .u64(UInt64(i)), fds: [call ?? makeEventFD()])).ok)
    let k = s.send(msg(.setVringKick, .u64(UInt64(i)), fds: [kick ?? makeEventFD()]))
    if !enable { return k }
    return s.send(msg(.setVringEnable, .vringState(VringStatePayload(index: i, num: 1))))
}
