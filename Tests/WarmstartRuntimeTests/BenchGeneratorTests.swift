import XCTest
import CWarmstartShim
import WarmstartPorts
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVirtio
import WarmstartVirtioDriver
@_spi(Benchmarks) @testable import WarmstartBench
@testable import WarmstartRuntime
import WarmstartSpec

/// The generator's rounds (what `warmstart bench` sends) read back by the device side of the
/// transmit ring in this process: the frame size asked for, the Ethernet header, and on one frame
/// in 8 its sequence number and its round's time stamp (zeros on the others); single-segment
/// frames and chains. Recycled buffers are scribbled over between rounds: a buffer is written
/// only when it does not hold the template, so the test checks that garbage never leaks out.
/// A generator's queue pair over Warmstart's own memory, the device side of both its rings and a
/// device-side pool: what the tests below drive.
struct GeneratorRig {
    let live: LiveMemory
    let q: VirtioUserQueuePair
    let rxDevice: VirtqueueDevice
    let txDevice: VirtqueueDevice
    let hostPool: MbufPool
    let fds: [Int32]

    init(packed: Bool) throws {
        live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 4096, cacheSize: 256)), hugepages: .off)
        let arena = RingArena(region: live.generalRegion!)
        var features: VirtioFeatures = [.version1, .mrgRxbuf, .ringEventIdx]
        if packed { features.insert(.ringPacked) }
        let options = VirtqueueOptions(features: features)
        let layout: VirtqueueLayout = packed ? .packed : .split
        let bytes = DriverQueue.ringBytes(layout: layout, size: 256)
        var rings: [DriverQueue] = []
        for _ in 0..<2 {
            let m = try XCTUnwrap(arena.allocate(bytes: bytes))
            rings.append(try DriverQueue(layout: layout, size: 256, host: m.host, guest: m.guest, length: bytes, options: options))
        }
        fds = (0..<4).map { _ in ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK) }
        q = VirtioUserQueuePair(index: 0, rx: rings[0], tx: rings[1], pool: live.mbufPool,
                                rxKickFD: fds[0], txKickFD: fds[1], rxCallFD: fds[2], txCallFD: fds[3])
        let table = live.table
        func device(_ r: DriverQueue) -> VirtqueueDevice {
            if let s = r.split { return VirtqueueDevice(split: s, memory: table, options: options) }
            return VirtqueueDevice(packed: r.packed!, memory: table, options: options)
        }
        rxDevice = device(rings[0])
        txDevice = device(rings[1])
        let hostConfig = MbufPoolConfig(count: 512, cacheSize: 0)
        let hostRegion = try MemoryRegion.memfd(name: "device", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(hostConfig))!,
                                                pageSize: .small4K)
        hostPool = try MbufPool.layOut(config: hostConfig, region: hostRegion, offset: 0, poolID: 7)
    }

    func close() { for fd in fds { Glibc.close(fd) } }
}

final class BenchGeneratorTests: XCTestCase {
    func check(packed: Bool, size: Int) throws {
        let rig = try GeneratorRig(packed: packed)
        defer { rig.close() }
        let live = rig.live, q = rig.q, device = rig.txDevice, hostPool = rig.hostPool
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }

        var o = BenchOptions()
        o.packed = packed
        o.size = size
        o.mode = .oneway
        let gen = Generator(options: o, pool: live.mbufPool, queue: q)
        // Frames the ring could not take stay at the front of the next burst with their old
        // stamp; new ones fill the burst up with the new round's: the send time per sequence.
        var stampOf: [UInt64: UInt64] = [:]
        var built: UInt64 = 0, have = 0, seq: UInt64 = 0
        for round in 0..<20 {
            let now = 1_000_000 + UInt64(round) * 7
            for _ in have..<32 { stampOf[built] = now; built += 1 }
            let sent = gen.round(now: now)
            XCTAssertGreaterThan(sent, 0, "round \(round)")
            have = 32 - sent
            var got = 0
            while true {
                let n = device.dequeueBurst(pool: hostPool, into: out, maxCount: 32)
                if n == 0 { break }
                got += n
                for k in 0..<n {
                    var frame = [UInt8](repeating: 0, count: size + 1)
                    let len = frame.withUnsafeMutableBytes { hostPool.copyOut(out[k], to: $0.baseAddress!, max: $0.count) }
                    XCTAssertEqual(len, size)
                    XCTAssertEqual(Array(frame[0..<6]), [0x02, 0, 0, 0, 0, 0x02], "destination")
                    XCTAssertEqual(Array(frame[12..<14]), [0x88, 0xB5], "EtherType")
                    let sampled = seq % Generator.stampEvery == 0
                    frame.withUnsafeBytes {
                        XCTAssertEqual($0.loadUnaligned(fromByteOffset: Bench.seqOffset, as: UInt64.self), sampled ? seq : 0)
                        XCTAssertEqual($0.loadUnaligned(fromByteOffset: Bench.stampOffset, as: UInt64.self),
                                       sampled ? stampOf[seq, default: 1] : 0, "frame \(seq)")
                    }
                    XCTAssertEqual(Array(frame[30..<64]), (30..<64).map { UInt8($0) }, "frame \(seq) past the stamp")
                    seq += 1
                    hostPool.free(out[k])
                }
            }
            XCTAssertEqual(got, sent, "round \(round): the device got what the queue took")
            if round % 3 == 1 && have == 0 {
                // Garbage where every free buffer's first 64 data bytes go (nothing unsent is
                // held: the device took every frame).
                let pool = live.mbufPool
                for i in 0..<UInt32(pool.config.count) {
                    let m = try XCTUnwrap(pool.mbuf(at: i))
                    (m.header + MbufLayout.headerSize + pool.config.headroom - 12)
                        .initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: round), count: 12 + 64)
                }
            }
        }
        XCTAssertEqual(gen.txPackets, seq)
        XCTAssertGreaterThanOrEqual(seq, 20 * (size <= 2048 ? 32 : 10))
        XCTAssertEqual(q.errorCount, 0)
        XCTAssertEqual(hostPool.inUseCount, 0)
    }

    /// Loopback keeps at most `inflight` frames on their way: a device that takes every frame and
    /// returns none gets exactly the window, then nothing; each frame it returns lets one more go.
    func checkWindow(packed: Bool) throws {
        let rig = try GeneratorRig(packed: packed)
        defer { rig.close() }
        let live = rig.live, q = rig.q, txDevice = rig.txDevice, rxDevice = rig.rxDevice, hostPool = rig.hostPool
        q.fillReceiveRing()
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
        defer { out.deallocate() }
        var held: [Mbuf] = []
        func take() {
            while true {
                let n = txDevice.dequeueBurst(pool: hostPool, into: out, maxCount: 32)
                if n == 0 { break }
                for k in 0..<n { held.append(out[k]) }
            }
        }

        var o = BenchOptions()
        o.packed = packed
        o.mode = .loopback
        o.inflight = 40
        let gen = Generator(options: o, pool: live.mbufPool, queue: q)
        var sent = 0
        for _ in 0..<10 { sent += gen.round(now: 1_000_000); take() }
        XCTAssertEqual(sent, 40, "the window, then nothing while none come back")
        XCTAssertEqual(held.count, 40)
        // Return 15: exactly 15 more may go.
        for k in 0..<15 { out[k] = held[k] }
        XCTAssertEqual(rxDevice.enqueueBurst(pool: hostPool, out, count: 15), 15)
        for k in 0..<15 { hostPool.free(held[k]) }
        held.removeFirst(15)
        for _ in 0..<10 { sent += gen.round(now: 1_000_000); take() }
        XCTAssertEqual(gen.rxPackets, 15)
        XCTAssertEqual(sent, 55)
        XCTAssertEqual(gen.txPackets, 55)
        XCTAssertEqual(held.count, 40)
        for m in held { hostPool.free(m) }
        XCTAssertEqual(q.errorCount, 0)
    }

    func testSplitLoopbackWindow() throws { try checkWindow(packed: false) }
    func testPackedLoopbackWindow() throws { try checkWindow(packed: true) }

    func testSplitSingleSegment() throws { try check(packed: false, size: 64) }
    func testPackedSingleSegment() throws { try check(packed: true, size: 1518) }
    func testSplitChains() throws { try check(packed: false, size: 3000) }
    func testPackedChains() throws { try check(packed: true, size: 5000) }
}
