import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
import WarmstartSpec

final class VhostUserSessionTests: XCTestCase {
    func testOverlappingRegionsRefused() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = VhostUserBackendSession()
        let a = MemoryRegionPayload(guestAddress: 0, size: 0x80000, userAddress: mem.user, mmapOffset: 0)
        let b = MemoryRegionPayload(guestAddress: 0x40000, size: 0x80000, userAddress: mem.user + 0x80000, mmapOffset: 0x80000)
        let fds = [mem.dupFD(), mem.dupFD()]
        let o = s.send(msg(.setMemTable, .memoryTable([a, b]), fds: fds))
        XCTAssertEqual(o.error?.reason, .memory("memory regions overlap in guest address space"))
        XCTAssertNil(s.memory)
        XCTAssertFalse(isOpen(fds[0]))
        XCTAssertFalse(isOpen(fds[1]))
        // Same in user address space.
        let c = MemoryRegionPayload(guestAddress: 0x100000, size: 0x80000, userAddress: mem.user + 0x40000, mmapOffset: 0)
        XCTAssertFalse(s.send(msg(.setMemTable, .memoryTable([a, c]), fds: [mem.dupFD(), mem.dupFD()])).ok)
    }

    func testRegionOverflowRefused() {
        let mem = FrontendMemory(size: 1 << 16)
        let s = VhostUserBackendSession()
        let cases = [
            MemoryRegionPayload(guestAddress: 0, size: 0x1000, userAddress: 0, mmapOffset: UInt64.max - 0x10),
            MemoryRegionPayload(guestAddress: UInt64.max - 0x10, size: 0x1000, userAddress: 0, mmapOffset: 0),
            MemoryRegionPayload(guestAddress: 0, size: 0x1000, userAddress: UInt64.max, mmapOffset: 0),
            MemoryRegionPayload(guestAddress: 0, size: 0, userAddress: 0, mmapOffset: 0),
        ]
        for r in cases {
            let fd = mem.dupFD()
            let o = s.send(msg(.setMemTable, .memoryTable([r]), fds: [fd]))
            if case .memory = o.error?.reason {} else { XCTFail("\(r): \(String(describing: o.error))") }
            XCTAssertFalse(isOpen(fd))
        }
    }

    func testTooSmallFileFailsCleanly() {
        let mem = FrontendMemory(size: 4096)
        let s = VhostUserBackendSession()
        let before = countMappings(ofInode: mem.inode)
        let fd = mem.dupFD()
        let o = s.send(msg(.setMemTable, .memoryTable([mem.region(size: 8192)]), fds: [fd]))
        XCTAssertNotNil(o.error)
        XCTAssertTrue(o.error!.description.contains("the file has"), o.error!.description)
        XCTAssertFalse(isOpen(fd))
        XCTAssertEqual(countMappings(ofInode: mem.inode), before)
        // offset + size past the end too.
        XCTAssertFalse(s.send(msg(.setMemTable, .memoryTable([mem.region(offset: 4096, size: 4096)]), fds: [mem.dupFD()])).ok)
    }

    func testRepeatedSetMemTableLeaksNothing() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = VhostUserBackendSession()
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        // Descriptors and mappings of the front-end memory only (see `descriptors(referringTo:)`).
        let file: Set = [fileIdentity(mem.fd)!]
        let fdsBefore = descriptors(referringTo: file).count, mapsBefore = countMappings(ofInode: mem.inode)
        XCTAssertEqual(fdsBefore, 2, "the test's and the session's")
        for k in 0..<100 {
            let r1 = MemoryRegionPayload(guestAddress: 0, size: 0x80000, userAddress: mem.user, mmapOffset: 0)
            let r2 = MemoryRegionPayload(guestAddress: 0x100000, size: 0x80000, userAddress: mem.user + 0x80000, mmapOffset: 0x80000)
            let o = s.send(msg(.setMemTable, .memoryTable(k % 2 == 0 ? [r1, r2] : [mem.region()]), fds: k % 2 == 0 ? [mem.dupFD(), mem.dupFD()] : [mem.dupFD()]))
            XCTAssertTrue(o.ok, "\(String(describing: o.error))")
        }
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        XCTAssertEqual(descriptors(referringTo: file).count, fdsBefore)
        XCTAssertEqual(countMappings(ofInode: mem.inode), mapsBefore)
        XCTAssertEqual(s.memory?.generation, 102)
    }

    func testOldMemoryStaysMappedWhileASetupHoldsIt() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        var setup: VringSetup? = configureRing(s, RingPlan(index: 0), mem: mem).started.first
        XCTAssertNotNil(setup)
        weak var oldMemory = setup?.memory
        let oldBase = setup!.memory.regions[0].mapBase
        // Replace the table: the session's ring is re-announced on the new table...
        var r: VhostUserOutcome? = s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()]))
        XCTAssertTrue(r!.ok)
        XCTAssertTrue(r!.events.contains { if case .ringUpdated = $0 { return true } else { return false } })
        r = nil
        // ...while the old setup still holds the old mapping, which stays mapped and readable.
        XCTAssertNotNil(oldMemory)
        XCTAssertEqual(msync(oldBase, 4096, MS_ASYNC), 0)
        mem.base.storeBytes(of: 0xAB, toByteOffset: 0, as: UInt8.self)
        XCTAssertEqual(setup!.descriptors.load(as: UInt8.self), 0xAB)
        XCTAssertNotEqual(setup!.memory.generation, s.memory!.generation)
        // The datapath lets go: the old table is unmapped.
        setup = nil
        XCTAssertNil(oldMemory)
        XCTAssertEqual(msync(oldBase, 4096, MS_ASYNC), -1, "old mapping must be gone")
    }

    func testRingStartsWithHostPointersIntoFrontendMemory() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        let plan = RingPlan(index: 1, size: 256, offset: 0x10000)
        let pre = configureRing(s, plan, mem: mem, enable: false)
        XCTAssertTrue(pre.started.isEmpty, "not enabled yet (PROTOCOL_FEATURES negotiated)")
        let o = s.send(msg(.setVringEnable, .vringState(VringStatePayload(index: 1, num: 1))))
        guard let setup = o.started.first else { return XCTFail("no start: \(String(describing: o.error))") }
        XCTAssertEqual(setup.index, 1)
        XCTAssertEqual(setup.size, 256)
        XCTAssertEqual(setup.layout, .split)
        XCTAssertTrue(setup.eventIndex)
        // The backend's mapping is a different virtual address, same pages.
        mem.base.storeBytes(of: 0x1234_5678, toByteOffset: 0x10000 + 0x4000, as: UInt32.self)
        XCTAssertEqual(setup.driverArea.load(as: UInt32.self), 0x1234_5678)
        mem.base.storeBytes(of: 0x42, toByteOffset: 0x10000 + 0x8000, as: UInt8.self)
        XCTAssertEqual(setup.deviceArea.load(as: UInt8.self), 0x42)
        XCTAssertNotNil(setup.kickFD)
        XCTAssertNotNil(setup.callFD)
    }

    func testRingOutsideMemoryIsAClearError() {
        let mem = FrontendMemory(size: 0x10000)
        let s = configuredSession(mem: mem)
        // used ring at +0x8000 with 4096 entries needs 32 KiB + 6: runs past the 64 KiB region.
        let o = configureRing(s, RingPlan(index: 0, size: 4096, offset: 0), mem: mem)
        XCTAssertNotNil(o.error)
        XCTAssertTrue(o.error!.description.contains("vring 0"), o.error!.description)
        XCTAssertTrue(o.error!.description.contains("not inside one memory region"), o.error!.description)
        XCTAssertTrue(s.startedRings.isEmpty)
    }

    func testReplacingKickAndCallClosesOldOnes() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        let kick1 = makeEventFD(), call1 = makeEventFD()
        configureRing(s, RingPlan(index: 0), mem: mem, kick: kick1, call: call1)
        XCTAssertTrue(isOpen(kick1) && isOpen(call1))
        let kick2 = makeEventFD(), call2 = makeEventFD()
        XCTAssertTrue(s.send(msg(.setVringKick, .u64(0), fds: [kick2])).ok)
        XCTAssertFalse(isOpen(kick1))
        let o2 = s.send(msg(.setVringCall, .u64(0), fds: [call2]))
        XCTAssertFalse(isOpen(call1))
        guard case let .ringUpdated(u)? = o2.events.last else { return XCTFail("no update") }
        XCTAssertEqual(u.callFD, call2)
        XCTAssertEqual(u.kickFD, kick2)
        // Call NOFD: polling; the previous one is closed once no setup holds it.
        XCTAssertTrue(s.send(msg(.setVringCall, .u64(VringFilePayload.noFDFlag))).ok)
        XCTAssertNil(s.startedRings.first?.callFD)
        XCTAssertTrue(isOpen(call2), "the datapath's setup `u` still holds it")
        withExtendedLifetime(o2) {}
        _ = consume u
    }

    func testDatapathHoldingASetupKeepsTheOldCallFDOpen() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        let call1 = makeEventFD()
        var held: VringSetup? = configureRing(s, RingPlan(index: 0), mem: mem, call: call1).started.first
        XCTAssertEqual(held?.callFD, call1)
        XCTAssertTrue(s.send(msg(.setVringCall, .u64(0), fds: [makeEventFD()])).ok)
        XCTAssertTrue(isOpen(call1), "still held by the datapath's setup")
        held = nil
        XCTAssertFalse(isOpen(call1))
    }

    func testVringBaseRoundTripSplit() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertTrue(s.send(msg(.setVringBase, .vringState(VringStatePayload(index: 0, num: 0xfffe)))).ok)
        XCTAssertFalse(s.send(msg(.setVringBase, .vringState(VringStatePayload(index: 0, num: 0x10000)))).ok)
        let o = configureRing(s, RingPlan(index: 0), mem: mem, base: 0x1234)
        XCTAssertEqual(o.started.first?.base.lastAvailIndex, 0x1234)
        let g = s.send(msg(.getVringBase, .vringState(VringStatePayload(index: 0, num: 0))))
        XCTAssertEqual(g.reply?.payload, .vringState(VringStatePayload(index: 0, num: 0x1234)))
        XCTAssertEqual(g.stopped, [0])
        XCTAssertTrue(s.startedRings.isEmpty)
    }

    func testVringBasePackedEncodingAndDatapathPosition() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(packed: true, mem: mem)
        // avail 5 wrap 1, used 3 wrap 0
        let num: UInt32 = 5 | 1 << 15 | 3 << 16
        let o = configureRing(s, RingPlan(index: 0, size: 100), mem: mem, base: num)
        guard let setup = o.started.first else { return XCTFail("\(String(describing: o.error))") }
        XCTAssertEqual(setup.layout, .packed)
        XCTAssertEqual(setup.size, 100, "packed rings need not be a power of two")
        XCTAssertEqual(setup.base, VirtqueuePosition(lastAvailIndex: 5, availWrapCounter: true, lastUsedIndex: 3, usedWrapCounter: false))
        // The datapath reports where it stopped.
        s.ringPosition = { i in
            XCTAssertEqual(i, 0)
            return VirtqueuePosition(lastAvailIndex: 42, availWrapCounter: false, lastUsedIndex: 40, usedWrapCounter: true)
        }
        let g = s.send(msg(.getVringBase, .vringState(VringStatePayload(index: 0, num: 0))))
        XCTAssertEqual(g.reply?.payload, .vringState(VringStatePayload(index: 0, num: 42 | (40 | 1 << 15) << 16)))
        // Stopped: a second GET_VRING_BASE returns the same position and stops nothing.
        let g2 = s.send(msg(.getVringBase, .vringState(VringStatePayload(index: 0, num: 0))))
        XCTAssertEqual(g2.reply?.payload, g.reply?.payload)
        XCTAssertTrue(g2.stopped.isEmpty)
    }

    func testSplitRingSizeMustBePowerOfTwo() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertFalse(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 100)))).ok)
        XCTAssertFalse(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 65536)))).ok)
        XCTAssertTrue(s.send(msg(.setVringNum, .vringState(VringStatePayload(index: 0, num: 32768)))).ok)
    }

    func testHotPlugAddAndRemoveRegion() {
        let mem = FrontendMemory(size: 1 << 20)
        let extra = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertEqual(s.send(msg(.getMaxMemSlots)).replyU64, 509)
        let files: Set = [fileIdentity(mem.fd)!, fileIdentity(extra.fd)!]
        func mappings() -> Int { countMappings(ofInode: mem.inode) + countMappings(ofInode: extra.inode) }
        let fdsBefore = descriptors(referringTo: files), mapsBefore = mappings()
        let r = extra.region(guest: 0x4000_0000)
        XCTAssertTrue(s.send(msg(.addMemReg, .memoryRegion(r), fds: [extra.dupFD()])).ok)
        XCTAssertEqual(s.memory?.regions.count, 2)
        extra.base.storeBytes(of: 0x77, toByteOffset: 0x100, as: UInt8.self)
        XCTAssertEqual(s.memory?.translate(guest: 0x4000_0100, length: 1)?.load(as: UInt8.self), 0x77)
        // Overlap with the existing region is refused and leaks nothing.
        let fd = extra.dupFD()
        XCTAssertFalse(s.send(msg(.addMemReg, .memoryRegion(extra.region(guest: 0x80000)), fds: [fd])).ok)
        XCTAssertFalse(isOpen(fd))
        // Remove needs guest, user address and size to match.
        XCTAssertFalse(s.send(msg(.remMemReg, .memoryRegion(extra.region(guest: 0x5000_0000)))).ok)
        XCTAssertTrue(s.send(msg(.remMemReg, .memoryRegion(r))).ok)
        XCTAssertEqual(s.memory?.regions.count, 1)
        XCTAssertNil(s.memory?.translate(guest: 0x4000_0100, length: 1))
        XCTAssertEqual(descriptors(referringTo: files), fdsBefore)
        XCTAssertEqual(mappings(), mapsBefore)
    }

    func testRemovingTheRegionUnderAStartedRingStopsIt() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0), mem: mem).started.count, 1)
        let o = s.send(msg(.remMemReg, .memoryRegion(mem.region())))
        XCTAssertEqual(o.stopped, [0])
        XCTAssertNotNil(o.error)
    }

    func testResetDeviceStopsRingsAndClosesEverything() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        let kick = makeEventFD(), call = makeEventFD()
        configureRing(s, RingPlan(index: 0), mem: mem, kick: kick, call: call)
        let o = s.send(msg(.resetDevice))
        XCTAssertTrue(o.ok)
        XCTAssertEqual(o.stopped, [0])
        XCTAssertFalse(isOpen(kick))
        XCTAssertFalse(isOpen(call))
        XCTAssertNil(s.memory)
        XCTAssertNil(s.ackedFeatures)
        XCTAssertTrue(s.ownerSet)
    }

    func testStatusMtuRarp() {
        let s = VhostUserBackendSession()
        XCTAssertFalse(s.send(msg(.setStatus, .u64(15))).ok, "STATUS not negotiated")
        _ = s.send(msg(.setProtocolFeatures, .u64(VhostUserFeatures.protocolDefault)))
        XCTAssertTrue(s.send(msg(.setStatus, .u64(15))).ok)
        XCTAssertEqual(s.send(msg(.getStatus)).replyU64, 15)
        XCTAssertFalse(s.send(msg(.setStatus, .u64(0x100))).ok)
        XCTAssertTrue(s.send(msg(.netSetMTU, .u64(9000))).ok)
        XCTAssertEqual(s.netConfig.mtu, 9000)
        XCTAssertFalse(s.send(msg(.netSetMTU, .u64(67))).ok)
        let o = s.send(msg(.sendRARP, .u64(0x0000_5544_3322_1102)))
        XCTAssertEqual(s.rarpMAC, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55])
        XCTAssertTrue(o.events.contains { if case .rarpRequested = $0 { return true } else { return false } })
    }

    func testLoggingIsRefusedNotSilentlyAccepted() {
        let s = VhostUserBackendSession()
        let fd = makeEventFD()
        let o = s.send(msg(.setLogBase, .log(LogPayload(size: 4096, offset: 0)), fds: [fd]))
        if case .notNegotiated = o.error?.reason {} else { XCTFail("\(String(describing: o.error))") }
        XCTAssertFalse(isOpen(fd))
        XCTAssertFalse(o.isFatal)
        _ = s.send(msg(.setProtocolFeatures, .u64(VhostUserProtocolFeature.replyAck.mask)))
        let o2 = s.send(msg(.setLogFD, fds: [makeEventFD()], needReply: true))
        XCTAssertEqual(o2.replyU64, 1)
        let o3 = s.send(msg(.setLogBase, .log(LogPayload(size: 4096, offset: 0)), fds: [makeEventFD()], needReply: true))
        XCTAssertEqual(o3.replyU64, 1, "without LOG_SHMFD, SET_LOG_BASE has no explicit reply: REPLY_ACK answers")
        XCTAssertFalse(o3.isFatal)
        XCTAssertEqual(s.send(msg(.getFeatures)).replyU64! & VirtioFeatures.logAll.rawValue, 0, "LOG_ALL is not offered")
    }
}
