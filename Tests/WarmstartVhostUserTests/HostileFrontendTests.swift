import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
import WarmstartBus
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire
@testable import WarmstartVirtio
import WarmstartSpec

/// A front-end that lies (issue 12): ring positions outside the ring (defect 1), descriptors that
/// are not eventfds or that cannot take a signal (defect 2), memory tables that would take the
/// process's address space (defect 9). Each is refused with an error reply, the session keeps what
/// it had, and nothing is written, blocked on or leaked.
final class HostileFrontendTests: XCTestCase {
    // MARK: defect 1: ring positions

    func vringState(_ i: Int, _ num: UInt32) -> VhostUserPayload { .vringState(VringStatePayload(index: UInt32(i), num: num)) }

    /// The rest of a ring's set-up after NUM and BASE: address, call, kick, enable.
    func finishRing(_ s: VhostUserBackendSession, _ plan: RingPlan, mem: FrontendMemory) -> VhostUserOutcome {
        XCTAssertTrue(s.send(msg(.setVringAddr, .vringAddress(plan.addr(mem)))).ok)
        XCTAssertTrue(s.send(msg(.setVringCall, .u64(UInt64(plan.index)), fds: [makeEventFD()])).ok)
        XCTAssertTrue(s.send(msg(.setVringKick, .u64(UInt64(plan.index)), fds: [makeEventFD()])).ok)
        return s.send(msg(.setVringEnable, vringState(plan.index, 1), needReply: true))
    }

    func testPackedBaseOutsideTheRingIsNackedAndNothingIsWritten() {
        let mem = FrontendMemory(size: 1 << 20)
        // The guest's memory as the front-end filled it: any byte the back-end writes shows.
        memset(mem.base, 0xA5, mem.size)
        let s = configuredSession(packed: true, mem: mem)
        XCTAssertTrue(s.send(msg(.setVringNum, vringState(0, 256))).ok)
        // 0x7fff: avail slot 32767 (wrap bit clear) of a 256-descriptor ring; the used half is
        // taken equal (DPDK's encoding), so used descriptors would go 512 KiB past the ring.
        let o = s.send(msg(.setVringBase, vringState(0, 0x7fff), needReply: true))
        XCTAssertEqual(o.replyU64, 1, "REPLY_ACK nack")
        guard case let .ring(index, why)? = o.error?.reason else { return XCTFail("\(String(describing: o.error))") }
        XCTAssertEqual(index, 0)
        XCTAssertTrue(why.contains("next avail slot 32767 is outside a ring of 256 descriptors"), why)
        XCTAssertFalse(o.isFatal)
        // The refused base was not kept: the ring starts from its previous position (0).
        let started = finishRing(s, RingPlan(index: 0), mem: mem).started
        XCTAssertEqual(started.first?.base, VirtqueuePosition())
        XCTAssertTrue((0..<mem.size).allSatisfy { mem.base.load(fromByteOffset: $0, as: UInt8.self) == 0xA5 },
                      "the back-end wrote into guest memory")
        // A used position outside the ring (high half) is refused the same way.
        let s2 = configuredSession(packed: true, mem: mem)
        XCTAssertTrue(s2.send(msg(.setVringNum, vringState(0, 256))).ok)
        let o2 = s2.send(msg(.setVringBase, vringState(0, 5 | (300 << 16)), needReply: true))
        XCTAssertEqual(o2.replyU64, 1)
        XCTAssertTrue(o2.error?.description.contains("next used slot 300") ?? false, "\(String(describing: o2.error))")
    }

    func testBaseSentBeforeTheLayoutIsKnownIsCheckedWhenTheRingStarts() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = VhostUserBackendSession()
        XCTAssertTrue(s.send(msg(.setOwner)).ok)
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(VhostUserFeatures.protocolDefault))).ok)
        // Before SET_FEATURES the layout is unknown: the base is kept raw.
        XCTAssertTrue(s.send(msg(.setVringNum, vringState(0, 256))).ok)
        XCTAssertTrue(s.send(msg(.setVringBase, vringState(0, 0x7fff), needReply: true)).ok)
        let f = VirtioFeatures([.version1, .protocolFeatures, .ringPacked]).rawValue
        XCTAssertTrue(s.send(msg(.setFeatures, .u64(f))).ok)
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        let o = finishRing(s, RingPlan(index: 0), mem: mem)
        XCTAssertTrue(o.started.isEmpty, "a ring with a base outside it must not start")
        XCTAssertEqual(o.replyU64, 1)
        XCTAssertTrue(o.error?.description.contains("base 0x7fff refused") ?? false, "\(String(describing: o.error))")
        XCTAssertTrue(s.startedRings.isEmpty)
    }

    func testShrinkingAPackedRingBelowItsBaseIsRefused() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(packed: true, mem: mem)
        XCTAssertTrue(s.send(msg(.setVringNum, vringState(0, 256))).ok)
        XCTAssertTrue(s.send(msg(.setVringBase, vringState(0, 200))).ok)
        let o = s.send(msg(.setVringNum, vringState(0, 128), needReply: true))
        XCTAssertEqual(o.replyU64, 1)
        XCTAssertTrue(o.error?.description.contains("next avail slot 200 is outside a ring of 128") ?? false, "\(String(describing: o.error))")
        // The size stayed 256: the ring starts there, at 200.
        let started = finishRing(s, RingPlan(index: 0), mem: mem).started
        XCTAssertEqual(started.first?.size, 256)
        XCTAssertEqual(started.first?.base.lastAvailIndex, 200)
    }

    func testSplitBaseMayBeAnySixteenBitValue() {
        let mem = FrontendMemory(size: 1 << 20)
        for base: UInt32 in [0, 255, 256, 0x7fff, 0xffff] {
            let s = configuredSession(mem: mem)
            XCTAssertTrue(s.send(msg(.setVringNum, vringState(0, 256))).ok)
            XCTAssertTrue(s.send(msg(.setVringBase, vringState(0, base), needReply: true)).ok, "base \(base)")
            let started = finishRing(s, RingPlan(index: 0), mem: mem).started
            XCTAssertEqual(started.first?.base.lastAvailIndex, UInt16(base))
        }
        // Beyond 16 bits is not an index at all.
        let s = configuredSession(mem: mem)
        XCTAssertEqual(s.send(msg(.setVringBase, vringState(0, 0x10000), needReply: true)).replyU64, 1)
    }

    /// The split walkers reduce the free-running index to a slot: a device started at 0xffff on a
    /// ring of 8 takes the buffer the driver put in slot 7, then the one in slot 0.
    func testSplitWalkersReduceAFreeRunningIndex() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertTrue(s.send(msg(.setVringNum, vringState(1, 8))).ok)
        XCTAssertTrue(s.send(msg(.setVringBase, vringState(1, 0xffff))).ok)
        guard let setup = finishRing(s, RingPlan(index: 1, size: 8), mem: mem).started.first else { return XCTFail("not started") }
        let ring = try SplitRing(size: 8, desc: setup.descriptors, avail: setup.driverArea, used: setup.deviceArea)
        let device = VirtqueueDevice(split: ring, memory: setup.memory.table, options: VirtqueueOptions(features: VirtioFeatures(rawValue: setup.features)),
                                     state: VirtqueuePosition(lastAvailIndex: 0xffff, lastUsedIndex: 0xffff))
        XCTAssertEqual(device.lastAvailIndex, 0xffff)
        // Slot 0xffff & 7 == 7 holds head 3; what it points at does not matter here, only that the
        // used entry lands inside the ring (slot 7), never at 0xffff × 8 bytes.
        ring.setAvailEntry(0xffff, 3)
        ring.setDescriptor(3, SplitDescriptor(addr: 0x40000, len: 64, flags: 0, next: 0))   // guest 0 = mem offset 0
        ring.storeAvailIndex(0)
        ring.storeUsedIndex(0xffff)
        let pool = try TestPool()
        XCTAssertEqual(device.dequeueBurst(pool: pool.pool, into: pool.out, maxCount: 4), 1)
        pool.pool.free(pool.out[0])
        XCTAssertEqual(ring.loadUsedIndex(), 0)
        XCTAssertEqual(ring.usedElement(7).id, 3)
        XCTAssertEqual(device.lastAvailIndex, 0)
    }

    func testVirtqueueDeviceRefusesAPackedStartOutsideTheRing() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(packed: true, mem: mem)
        guard let setup = configureRing(s, RingPlan(index: 0), mem: mem).started.first else { return XCTFail("not started") }
        let ring = try PackedRing(size: setup.size, desc: setup.descriptors, driverEvent: setup.driverArea, deviceEvent: setup.deviceArea)
        let options = VirtqueueOptions(features: VirtioFeatures(rawValue: setup.features))
        XCTAssertThrowsError(try VirtqueueDevice(packed: ring, memory: setup.memory.table, options: options,
                                                 state: VirtqueuePosition(lastAvailIndex: 0x7fff, lastUsedIndex: 0x7fff))) { e in
            XCTAssertEqual("\(e)", "last avail slot 32767 is outside the packed ring of 256 descriptors")
        }
        XCTAssertThrowsError(try VirtqueueDevice(packed: ring, memory: setup.memory.table, options: options,
                                                 state: VirtqueuePosition(lastAvailIndex: 0, lastUsedIndex: 256)))
        XCTAssertNoThrow(try VirtqueueDevice(packed: ring, memory: setup.memory.table, options: options,
                                             state: VirtqueuePosition(lastAvailIndex: 255, availWrapCounter: false, lastUsedIndex: 255)))
    }

    // MARK: defect 1: positions and sizes arriving by handoff

    func export(_ s: VhostUserBackendSession) -> (VhostUserSessionState, [Int32]) {
        var table: [Int32] = []
        let state = try! s.exportHandoffState(register: { fd, _ in table.append(dup(fd)); return table.count - 1 })
        return (state, table)
    }

    func importing(_ state: VhostUserSessionState, _ table: [Int32]) -> VhostUserError? {
        do {
            _ = try VhostUserBackendSession.importHandoffState(state, configuration: VhostUserBackendConfiguration(),
                                                               take: { i throws(VhostUserError) in table[i] })
            return nil
        } catch {
            return error
        }
    }

    func testHandoffImportRefusesAPositionOutsideTheRing() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(packed: true, mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0), mem: mem).started.count, 1)
        var (state, table) = export(s)
        state.vrings[0].lastUsedIndex = 0x7fff
        let e = importing(state, table)
        XCTAssertTrue(e?.description.contains("next used slot 32767 is outside a ring of 256 descriptors") ?? false, "\(String(describing: e))")
        XCTAssertTrue(table.allSatisfy { !isOpen($0) }, "a refused import closes what it took")

        // A raw base not yet applied is checked too (when the ring starts).
        var (state2, table2) = export(s)
        state2.vrings[0].baseNum = 0x7fff
        state2.vrings[0].started = false
        if let (imported, _) = try? VhostUserBackendSession.importHandoffState(state2, configuration: VhostUserBackendConfiguration(),
                                                                                 take: { i throws(VhostUserError) in table2[i] }) {
            XCTAssertTrue(imported.startedRings.isEmpty)
            var events: [VhostUserEvent] = []
            XCTAssertThrowsError(try imported.tryStart(0, &events, request: .setVringEnable))
            XCTAssertTrue(events.isEmpty)
        } else {
            XCTFail("a stopped ring with a raw base imports; the base is checked when it starts")
        }
    }

    func testHandoffImportRefusesARingOfSizeZero() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0), mem: mem).started.count, 1)
        for bad: UInt32 in [0, 32769] {
            var (state, table) = export(s)
            state.vrings[0].size = bad
            let e = importing(state, table)
            XCTAssertTrue(e?.description.contains("size \(bad) is not in 1...32768") ?? false, "\(String(describing: e))")
        }
    }

    func testHandoffPositionsAreCheckedBeforeAnyIsApplied() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(packed: true, mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0), mem: mem).started.count, 1)
        XCTAssertEqual(configureRing(s, RingPlan(index: 1, offset: 0x20000), mem: mem).started.count, 1)
        let good = VirtqueuePosition(lastAvailIndex: 9, availWrapCounter: false, lastUsedIndex: 8, usedWrapCounter: false)
        let bad = VirtqueuePosition(lastAvailIndex: 0x7fff, lastUsedIndex: 0)
        let before = s.startedRings.map(\.base)
        XCTAssertThrowsError(try s.applyHandoffPositions([0: good, 1: bad]))
        XCTAssertEqual(s.startedRings.map(\.base), before, "a refused set moves no ring")
        XCTAssertEqual(try s.applyHandoffPositions([0: good]).first?.base, good)
    }

    // MARK: defect 2: kick / call / err descriptors

    func testPipeWithoutReaderIsRefusedAsCallFD() {
        ignoreBrokenPipeSignals()
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        var p: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&p), 0)
        close(p[0])   // no reader
        let o = s.send(msg(.setVringCall, .u64(0), fds: [p[1]], needReply: true))
        XCTAssertEqual(o.replyU64, 1, "REPLY_ACK nack")
        XCTAssertTrue(o.error?.description.contains("call descriptor is pipe:[") ?? false, "\(String(describing: o.error))")
        XCTAssertTrue(o.error?.description.contains("not an eventfd") ?? false)
        XCTAssertFalse(isOpen(p[1]), "a refused descriptor is closed")
        // Written anyway (what the polling thread did before): EPIPE, not death by SIGPIPE.
        var q: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&q), 0)
        close(q[0])
        // (Non-blocking, as an accepted descriptor is: a blocking one is refused before the write.)
        XCTAssertEqual(fcntl(q[1], F_SETFL, fcntl(q[1], F_GETFL) | O_NONBLOCK), 0)
        XCTAssertFalse(virtqSignal(q[1]))
        XCTAssertEqual(errno, EPIPE)
        close(q[1])
    }

    func testSocketAndFilesAreRefusedAsKickCallOrErr() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        for request in [VhostUserRequest.setVringKick, .setVringCall, .setVringErr] {
            var sv: [Int32] = [0, 0]
            XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv), 0)
            close(sv[1])   // no peer
            let o = s.send(msg(request, .u64(0), fds: [sv[0]], needReply: true))
            XCTAssertEqual(o.replyU64, 1, "\(request)")
            XCTAssertTrue(o.error?.description.contains("socket:[") ?? false, "\(String(describing: o.error))")
            XCTAssertFalse(isOpen(sv[0]))
            // A memfd (a file) is no eventfd either.
            let m = mem.dupFD()
            XCTAssertEqual(s.send(msg(request, .u64(0), fds: [m], needReply: true)).replyU64, 1, "\(request)")
            XCTAssertFalse(isOpen(m))
        }
        XCTAssertTrue(s.startedRings.isEmpty)
        // An eventfd is taken, and made non-blocking.
        let e = makeEventFD()
        XCTAssertEqual(fcntl(e, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertTrue(s.send(msg(.setVringCall, .u64(0), fds: [e], needReply: true)).ok)
        XCTAssertNotEqual(fcntl(e, F_GETFL) & O_NONBLOCK, 0)
    }

    func testEventFDAtItsMaximumDoesNotBlockThePollingThread() throws {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        // A blocking eventfd whose counter the front-end left one short of overflow.
        let call = makeEventFD()
        var max: UInt64 = 0xffff_ffff_ffff_fffe
        XCTAssertEqual(withUnsafeBytes(of: &max) { write(call, $0.baseAddress, 8) }, 8)
        guard let setup = configureRing(s, RingPlan(index: 0, size: 8), mem: mem, call: call).started.first else {
            return XCTFail("not started")
        }
        let fd = try XCTUnwrap(setup.callFD)
        // Made non-blocking when it was accepted; without that the write below would never return.
        guard fcntl(fd, F_GETFL) & O_NONBLOCK != 0 else { return XCTFail("the call eventfd is still blocking") }
        let ring = try SplitRing(size: 8, desc: setup.descriptors, avail: setup.driverArea, used: setup.deviceArea)
        let device = VirtqueueDevice(split: ring, memory: setup.memory.table,
                                     options: VirtqueueOptions(features: VirtioFeatures(rawValue: setup.features).subtracting(.ringEventIdx)))
        device.lastUsedIndex = 1   // one used entry published since the last call decision
        XCTAssertTrue(device.signal(callFD: fd), "the driver wants a call")
        XCTAssertEqual(device.counters.calls, 1)
        XCTAssertEqual(device.counters.callsDropped, 1, "the signal the full counter could not take is counted")
        // The counter is untouched and still wakes the front-end.
        var value: UInt64 = 0
        XCTAssertEqual(withUnsafeMutableBytes(of: &value) { read(fd, $0.baseAddress, 8) }, 8)
        XCTAssertEqual(value, max)
    }

    // MARK: defect 9: address space

    /// A memfd of `size` bytes that costs nothing (no page is touched).
    func sparseMemfd(_ size: UInt64) -> Int32 {
        let fd = ws_memfd_create("hostile-sparse", WS_MFD_CLOEXEC)
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
        return fd
    }

    func inode(_ fd: Int32) -> UInt64 {
        var st = stat()
        precondition(fstat(fd, &st) == 0)
        return UInt64(st.st_ino)
    }

    func testMemoryTableBeyondTheLimitIsRefusedBeforeMapping() {
        let mem = FrontendMemory(size: 1 << 20)
        let limit: UInt64 = 1 << 30
        let s = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(maxMemoryBytes: limit))
        XCTAssertTrue(s.send(msg(.setOwner)).ok)
        XCTAssertTrue(s.send(msg(.setProtocolFeatures, .u64(VhostUserFeatures.protocolDefault))).ok)
        XCTAssertTrue(s.send(msg(.setMemTable, .memoryTable([mem.region()]), fds: [mem.dupFD()])).ok)
        let before = s.memory
        let huge = sparseMemfd(2 << 30)
        defer { close(huge) }
        let fd = dup(huge)
        let region = MemoryRegionPayload(guestAddress: 1 << 32, size: 2 << 30, userAddress: 1 << 40, mmapOffset: 0)
        let o = s.send(msg(.setMemTable, .memoryTable([mem.region(), region]), fds: [mem.dupFD(), fd], needReply: true))
        XCTAssertEqual(o.replyU64, 1)
        XCTAssertTrue(o.error?.description.contains("more than this port's limit of 0x40000000 bytes") ?? false, "\(String(describing: o.error))")
        XCTAssertTrue(s.memory === before, "the previous table stays in place")
        XCTAssertEqual(countMappings(ofInode: inode(huge)), 0, "nothing of the refused table was mapped")
        XCTAssertFalse(isOpen(fd))
        // ADD_MEM_REG counts what is already mapped.
        let fd2 = dup(huge)
        let one = MemoryRegionPayload(guestAddress: 1 << 32, size: limit, userAddress: 1 << 40, mmapOffset: 0)
        let a = s.send(msg(.addMemReg, .memoryRegion(one), fds: [fd2], needReply: true))
        XCTAssertEqual(a.replyU64, 1)
        XCTAssertTrue(s.memory === before)
        XCTAssertEqual(countMappings(ofInode: inode(huge)), 0)
        XCTAssertFalse(isOpen(fd2))
        // Within the limit it is taken.
        let fits = MemoryRegionPayload(guestAddress: 1 << 32, size: limit - UInt64(mem.size), userAddress: 1 << 40, mmapOffset: 0)
        XCTAssertTrue(s.send(msg(.addMemReg, .memoryRegion(fits), fds: [dup(huge)], needReply: true)).ok)
        XCTAssertEqual(s.memory?.regions.count, 2)
    }

    func testDefaultLimitStopsAPeerFromTakingTheAddressSpace() {
        let s = VhostUserBackendSession()
        XCTAssertEqual(s.configuration.maxMemoryBytes, 1 << 40)
        // 4 TiB in one sparse file (one peer held 128 TiB in such files before the limit).
        let huge = sparseMemfd(4 << 40)
        defer { close(huge) }
        let region = MemoryRegionPayload(guestAddress: 0, size: 4 << 40, userAddress: 0, mmapOffset: 0)
        let o = s.send(msg(.setMemTable, .memoryTable([region]), fds: [dup(huge)]))
        XCTAssertNotNil(o.error)
        XCTAssertNil(s.memory)
        XCTAssertEqual(countMappings(ofInode: inode(huge)), 0)
        // Offsets that overflow when summed are refused, not wrapped.
        let many = (0..<4).map { k in
            MemoryRegionPayload(guestAddress: UInt64(k) << 30, size: 1 << 20, userAddress: UInt64(k) << 30, mmapOffset: 1 << 62)
        }
        let o2 = s.send(msg(.setMemTable, .memoryTable(many), fds: (0..<4).map { _ in dup(huge) }))
        XCTAssertTrue(o2.error?.description.contains("more than 2^64 bytes") ?? false, "\(String(describing: o2.error))")
    }

    func testFailureMidwayThroughSetMemTableLeavesThePreviousTable() {
        let mem = FrontendMemory(size: 1 << 20)
        let s = configuredSession(mem: mem)
        XCTAssertEqual(configureRing(s, RingPlan(index: 0), mem: mem).started.count, 1)
        let before = s.memory
        let generation = s.memory?.generation
        let other = FrontendMemory(size: 1 << 20)
        let mapsBefore = countMappings(ofInode: other.inode)
        let fds = [other.dupFD(), other.dupFD(), other.dupFD()]
        // The first region maps, the second is larger than its file: the whole table is refused.
        let regions = [other.region(guest: 0, size: 1 << 19),
                       MemoryRegionPayload(guestAddress: 1 << 30, size: 1 << 21, userAddress: 1 << 40, mmapOffset: 0),
                       MemoryRegionPayload(guestAddress: 1 << 31, size: 4096, userAddress: 1 << 41, mmapOffset: 0)]
        let o = s.send(msg(.setMemTable, .memoryTable(regions), fds: fds, needReply: true))
        XCTAssertNotNil(o.error)
        XCTAssertTrue(s.memory === before)
        XCTAssertEqual(s.memory?.generation, generation)
        XCTAssertEqual(s.startedRings.count, 1, "the running ring is not stopped by a refused table")
        XCTAssertTrue(o.events.isEmpty)
        XCTAssertEqual(countMappings(ofInode: other.inode), mapsBefore, "the region mapped before the failure is unmapped")
        XCTAssertTrue(fds.allSatisfy { !isOpen($0) })
    }

    func testPortSpecMaxMemoryKey() throws {
        let spec = try PortSpec.parse("vhost-user:/tmp/x.sock,max-memory=64G")
        XCTAssertEqual(spec.maxMemoryBytes, 64 << 30)
        XCTAssertEqual(try PortSpec.parse("vhost-user-client:/tmp/x.sock,max-memory=4096").maxMemoryBytes, 4096)
        XCTAssertNil(try PortSpec.parse("vhost-user:/tmp/x.sock").maxMemoryBytes)
        for bad in ["0", "-1", "12X", "G", "99999999999T", ""] {
            XCTAssertThrowsError(try PortSpec.parse("vhost-user:/tmp/x.sock,max-memory=\(bad)"), bad)
        }
        XCTAssertThrowsError(try PortSpec.parse("tap:tap0,max-memory=1G"))
    }
}

/// A small mbuf pool for the walker tests.
final class TestPool {
    let region: MemoryRegion
    let pool: MbufPool
    let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)

    init() throws {
        let config = MbufPoolConfig(count: 64)
        region = try MemoryRegion.memfd(name: "hostile-pool", size: (MbufPoolConfig.bytesNeeded(config) + 4095) & ~4095, pageSize: .small4K)
        pool = try MbufPool.layOut(config: config, region: region, offset: 0, poolID: 7)
    }

    deinit { out.deallocate() }
}
