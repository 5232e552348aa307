import Foundation
import XCTest
import WarmstartTestSupport
import WarmstartBus
@testable import WarmstartEngine
@testable import WarmstartPorts
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
@testable import WarmstartRuntime
@testable import WarmstartBench

/// Warmstart's virtio-user front-end against DPDK's vhost back-end (dpdk-testpmd net_vhost,
/// --forward-mode=macswap): split and packed rings, both socket directions, 64 to 9000 B frames.
/// Every frame comes back with its MACs swapped and every other byte unchanged; counts agree.
/// Skips (with the reason) when testpmd or free hugepages are missing. testpmd is stopped by pid
/// and its hugepage files and runtime directory are removed.
final class VirtioUserDPDKInteropTests: XCTestCase {
    static let sizes = [64, 1518, 9000]
    static let framesPerSize = 64

    func testSplitBackendListens() throws { try runCase(packed: false, frontendListens: false) }
    func testSplitFrontendListens() throws { try runCase(packed: false, frontendListens: true) }
    func testPackedBackendListens() throws { try runCase(packed: true, frontendListens: false) }
    func testPackedFrontendListens() throws { try runCase(packed: true, frontendListens: true) }
    /// Without MRG_RXBUF: 9000 B frames land in receive buffers that are 5-descriptor chains.
    func testSplitJumboWithoutMergeable() throws { try runCase(packed: false, frontendListens: false, options: ",mrg=0,mtu=9000", segments: 5) }
    func testPackedJumboWithoutMergeable() throws { try runCase(packed: true, frontendListens: false, options: ",mrg=0,mtu=9000", segments: 5) }

    func frame(size: Int, seq: Int) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: size)
        let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5]
        for i in 0..<14 { f[i] = head[i] }
        for i in 14..<size { f[i] = UInt8(truncatingIfNeeded: i &* 31 &+ seq &* 7) }
        withUnsafeBytes(of: UInt32(seq).littleEndian) { for k in 0..<4 { f[14 + k] = $0[k] } }
        return f
    }

    func runCase(packed: Bool, frontendListens: Bool, options: String = "", segments: Int = 1) throws {
        if let why = TestpmdHarness.unavailableReason(hugepages: 64) { throw XCTSkip(why) }
        let tag = "\(packed ? "p" : "s")\(frontendListens ? "l" : "c")\(segments)"
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 8192, cacheSize: 64)), hugepages: .auto)
        let pmd = try TestpmdVhost(tag: tag, client: frontendListens, forward: "macswap")
        defer { pmd.stop(keepLog: (testRun?.failureCount ?? 0) > 0) }
        let (bus, started) = startPort(pmd, live: live, options: ",packed=\(packed ? 1 : 0)" + options + (frontendListens ? ",server=1" : ""))
        defer { bus.stop() }
        guard let port = started else { return }
        let dir = pmd.dir
        XCTAssertEqual(port.negotiation!.features & (1 << 34) != 0, packed)
        XCTAssertEqual(port.receiveSegments, segments, "mbufs per receive buffer")
        let q = port.queues[0]
        let pool = live.mbufPool
        let cache = MbufCache(pool: pool, size: 64)
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
        defer { out.deallocate() }

        var expected: [Int: [UInt8]] = [:]
        var sent = 0, received = 0, mismatches: [String] = []
        var seq = 0
        let deadline = Date().addingTimeInterval(20)
        func drain() {
            let n = q.receiveBurst(into: out, max: 64, cache: cache)
            for k in 0..<n {
                var r = [UInt8](repeating: 0, count: Int(out[k].packetLength))
                let c = r.withUnsafeMutableBytes { pool.copyOut(out[k], to: $0.baseAddress!, max: $0.count) }
                cache.free(out[k])
                received += 1
                guard c >= 18 else { mismatches.append("runt of \(c) B"); continue }
                let s = Int(UInt32(r[14]) | UInt32(r[15]) << 8 | UInt32(r[16]) << 16 | UInt32(r[17]) << 24)
                guard let f = expected.removeValue(forKey: s) else { mismatches.append("unexpected frame seq \(s)"); continue }
                let want = Array(f[6..<12]) + Array(f[0..<6]) + Array(f[12...])
                if r != want { mismatches.append("seq \(s) (\(f.count) B): got \(r.count) B, first difference at \(zip(r, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(r.count, want.count))") }
            }
        }
        XCTAssertTrue(linkUp(q, pool: pool, cache: cache, probe: frame(size: 64, seq: 0xFFFF), until: deadline),
                      "no frame came back from testpmd")
        for size in Self.sizes {
            var left = Self.framesPerSize
            while left > 0 && Date() < deadline {
                let burst = min(16, left)
                var k = 0
                while k < burst {
                    let f = frame(size: size, seq: seq)
                    guard let m = makeChain(pool, f) else { break }
                    out[k] = m
                    expected[seq] = f
                    seq += 1
                    k += 1
                }
                var done = 0
                while done < k && Date() < deadline {
                    done += q.transmitBurst(out + done, count: k - done, cache: cache)
                    drain()
                }
                sent += done
                left -= done
                // One burst in flight at a time: a back-end finding no receive buffer drops (as a
                // NIC would); 16 frames of 9000 B need 80 of the 256 buffers.
                while received < sent && Date() < deadline { drain() }
            }
        }
        while received < sent && Date() < deadline { drain(); usleep(100) }
        print("vuser-interop \(tag): sent \(sent) received \(received) tx in flight \(q.tx.inFlightCount) rx posted \(q.rx.inFlightCount) kicks \(q.kickCount)")
        XCTAssertEqual(sent, Self.sizes.count * Self.framesPerSize)
        XCTAssertEqual(received, sent, "every frame came back (testpmd log \(dir)/testpmd.log)")
        XCTAssertEqual(mismatches.prefix(5), [], "\(mismatches.count) frames differ")
        XCTAssertEqual(q.errorCount, 0)
        XCTAssertTrue(pmd.child.isRunning, "testpmd still running: \(pmd.logTail(500))")
    }
}

extension VirtioUserDPDKInteropTests {
    func testSplitTwoQueuePairs() throws { try runMultiQueue(packed: false) }
    func testPackedTwoQueuePairs() throws { try runMultiQueue(packed: true) }

    /// `queues=2` against testpmd `net_vhost0,queues=2 --rxq=2 --txq=2` (macswap: what arrives on
    /// its rx queue i leaves on its tx queue i): frames sent on each of our pairs come back on
    /// the same pair, counted per pair, byte for byte.
    func runMultiQueue(packed: Bool) throws {
        if let why = TestpmdHarness.unavailableReason(hugepages: 64) { throw XCTSkip(why) }
        let tag = "mq\(packed ? "p" : "s")"
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 8192, cacheSize: 64)), hugepages: .auto)
        let pmd = try TestpmdVhost(tag: tag, forward: "macswap", queues: 2)
        defer { pmd.stop(keepLog: (testRun?.failureCount ?? 0) > 0) }
        let (bus, started) = startPort(pmd, live: live, options: ",packed=\(packed ? 1 : 0),queues=2")
        defer { bus.stop() }
        guard let port = started else { return }
        let dir = pmd.dir
        XCTAssertEqual(port.queues.count, 2)
        XCTAssertGreaterThanOrEqual(port.negotiation?.maxQueuePairs ?? 0, 2, "DPDK answers GET_QUEUE_NUM with its maximum (128)")
        let pool = live.mbufPool
        let cache = MbufCache(pool: pool, size: 64)
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
        defer { out.deallocate() }
        // Frame: queue in byte 18, sequence in 14..<18.
        func make(_ q: Int, _ seq: Int, _ size: Int) -> [UInt8] {
            var f = frame(size: size, seq: seq)
            f[18] = UInt8(q)
            return f
        }
        var counts = [0, 0], wrongQueue = 0, mismatches: [String] = []
        var expected: [Int: [UInt8]] = [:]
        func drain(_ q: Int) {
            let n = port.queues[q].receiveBurst(into: out, max: 64, cache: cache)
            for k in 0..<n {
                var r = [UInt8](repeating: 0, count: Int(out[k].packetLength))
                _ = r.withUnsafeMutableBytes { pool.copyOut(out[k], to: $0.baseAddress!, max: $0.count) }
                cache.free(out[k])
                guard r.count >= 19 else { mismatches.append("runt \(r.count) B"); continue }
                if Int(r[18]) != q { wrongQueue += 1; continue }
                let seq = Int(UInt32(r[14]) | UInt32(r[15]) << 8 | UInt32(r[16]) << 16 | UInt32(r[17]) << 24)
                if seq >= 0xFFFF { continue } // link probe
                counts[q] += 1
                guard let f = expected.removeValue(forKey: seq) else { mismatches.append("unexpected seq \(seq) on pair \(q)"); continue }
                let want = Array(f[6..<12]) + Array(f[0..<6]) + Array(f[12...])
                if r != want { mismatches.append("seq \(seq) on pair \(q) differs") }
            }
        }
        // Link up on both pairs first (testpmd forwards once its port is up).
        let deadline = Date().addingTimeInterval(20)
        for q in 0..<2 {
            XCTAssertTrue(linkUp(port.queues[q], pool: pool, cache: cache, probe: make(q, 0xFFFF + q, 64), until: deadline),
                          "pair \(q): no frame came back from testpmd")
        }
        var seq = 0
        let perQueue = 96
        for round in 0..<(perQueue / 16) {
            for q in 0..<2 {
                var k = 0
                while k < 16 {
                    let f = make(q, seq, [64, 1518, 9000][round % 3])
                    guard let m = makeChain(pool, f) else { break }
                    out[k] = m
                    expected[seq] = f
                    seq += 1
                    k += 1
                }
                var done = 0
                while done < k && Date() < deadline {
                    done += port.queues[q].transmitBurst(out + done, count: k - done, cache: cache)
                    drain(q)
                }
            }
            while counts.reduce(0, +) < seq && Date() < deadline { drain(0); drain(1) }
        }
        print("vuser-interop \(tag): per pair \(counts), sent \(seq), wrong pair \(wrongQueue)")
        XCTAssertEqual(counts, [perQueue, perQueue], "every frame came back on its own pair (testpmd log \(dir)/testpmd.log)")
        XCTAssertEqual(wrongQueue, 0)
        XCTAssertEqual(mismatches.prefix(5), [], "\(mismatches.count) frames differ")
        XCTAssertEqual(port.queues.map(\.errorCount), [0, 0])
    }
}

extension VirtioUserDPDKInteropTests {
    /// `warmstart run --port virtio-user:SOCK,queues=2,mac=… --cores 2` against testpmd generating
    /// on both of its queues (txonly): the runtime's two polling threads each serve one of the
    /// port's pairs, both count received frames, and the counters carry the port's MAC.
    func testRuntimeServesEveryQueuePairOnItsOwnThread() throws {
        if let why = TestpmdHarness.unavailableReason(hugepages: 64) { throw XCTSkip(why) }
        let tag = "mqrt"
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 16384, cacheSize: 256)), hugepages: .auto)
        let pmd = try TestpmdVhost(tag: tag, forward: "txonly", queues: 2, extra: ["--txpkts=64"])
        defer { pmd.stop(keepLog: (testRun?.failureCount ?? 0) > 0) }
        let dir = pmd.dir
        let spec = try PortSpec.parse("virtio-user:\(pmd.sock),queues=2,mac=02:00:00:00:0a:02,backoff-min-ms=5,name=vu")
        let rec = PhaseRecorder(clock: BootClock(environment: [:]))
        let runtime = try Runtime(options: RuntimeOptions(ports: [spec], forward: .macswap, cores: 2), memory: live, recorder: rec)
        runtime.enableVirtioUserPorts()
        try runtime.start()
        defer { runtime.stop() }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let q = runtime.stats().ports[0].queues
            if q.count == 2 && q.allSatisfy({ $0.rxPackets > 1000 }) { break }
            usleep(20_000)
        }
        let st = runtime.stats().ports[0]
        print("vuser-interop \(tag): per queue rx \(st.queues.map(\.rxPackets)), state \(st.state)")
        XCTAssertEqual(st.state, "started", "\(st.reason ?? ""); testpmd log \(dir)/testpmd.log")
        XCTAssertEqual(st.queues.count, 2)
        for (i, q) in st.queues.enumerated() { XCTAssertGreaterThan(q.rxPackets, 1000, "queue \(i) received") }
        XCTAssertEqual(st.mac, "02:00:00:00:0a:02")
        XCTAssertTrue(runtime.stats().renderText().contains("mac 02:00:00:00:0a:02"))
        // One pair per polling thread.
        let plan = runtime.datapath.lock.locked { runtime.datapath.published.perThread.map { $0.map(\.queue.index) } }
        XCTAssertEqual(plan, [[0], [1]])
    }
}

/// testpmd's `net_vhost` as a child process for one test (Docs/USAGE.md), started by the
/// harness: its own directory and file prefix. `stop` stops it by pid and removes its hugepage
/// files, runtime directory and socket, and its log unless asked to keep it (a failed test names it).
final class TestpmdVhost {
    let harness: TestpmdHarness
    let sock: String
    let child: Process
    var dir: String { harness.dir }

    init(tag: String, client: Bool = false, forward: String, queues: Int = 1, extra: [String] = []) throws {
        harness = try TestpmdHarness(name: tag, prefixBase: "ws-vuser", needsWarmstart: false, hugepages: 64)
        sock = harness.dir + "/vhost.sock"
        child = try harness.startVhost(socket: sock, client: client, forward: forward, queues: queues, extra: extra)
    }

    func logTail(_ bytes: Int = 2000) -> String { harness.logTail(bytes: bytes) }

    func stop(keepLog: Bool) {
        harness.stop(child)
        harness.cleanup(keepLogs: keepLog)
    }
}

extension XCTestCase {
    /// A bus with one `virtio-user:SOCK` port (plus `options`) against `pmd`, started; the port,
    /// or nil after recording why it did not start. The caller stops the bus.
    func startPort(_ pmd: TestpmdVhost, live: LiveMemory, options: String,
                   file: StaticString = #filePath, line: UInt = #line) -> (Bus, VirtioUserPort?) {
        let bus = try! Bus(ports: [try! PortSpec.parse("virtio-user:\(pmd.sock)" + options + (options.contains("server=1") ? "" : ",backoff-min-ms=5"))])
        bus.register(driver: VirtioUserDriver(regions: live.sharedRegions, pool: live.mbufPool, arena: RingArena(region: live.generalRegion!)),
                     for: .virtioUser)
        bus.start()
        guard bus.wait(timeoutSeconds: 20, until: { $0[0].state == .started || $0[0].state == .failed }),
              bus.snapshot()[0].state == .started else {
            XCTFail("port did not start: \(bus.snapshot()[0]); testpmd log \(pmd.dir)/testpmd.log:\n\(pmd.logTail())",
                    file: file, line: line)
            return (bus, nil)
        }
        return (bus, bus.devices[0].driverContext as? VirtioUserPort)
    }

    /// testpmd forwards only once its port is up (in client mode after our DRIVER_OK): sends
    /// `probe` until a frame comes back on `q`, then drains what is still on its way.
    func linkUp(_ q: VirtioUserQueuePair, pool: MbufPool, cache: MbufCache, probe: [UInt8], until deadline: Date) -> Bool {
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
        defer { out.deallocate() }
        var up = false
        while !up && Date() < deadline {
            if let m = makeChain(pool, probe) {
                out[0] = m
                if q.transmitBurst(out, count: 1, cache: cache) == 0 { cache.free(m) }
            }
            usleep(10_000)
            let n = q.receiveBurst(into: out, max: 64, cache: cache)
            for k in 0..<n { cache.free(out[k]) }
            up = n > 0
        }
        usleep(20_000)
        for _ in 0..<4 { let n = q.receiveBurst(into: out, max: 64, cache: cache); for k in 0..<n { cache.free(out[k]) } }
        return up
    }
}
