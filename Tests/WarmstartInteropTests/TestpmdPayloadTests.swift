import Foundation
import XCTest
import WarmstartBus
import WarmstartEngine
import WarmstartPorts
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUser
import WarmstartVirtio
import WarmstartTestSupport
import WarmstartSpec

/// Payload checks with DPDK's testpmd in the middle (issue 5 §6): one testpmd, unchanged, with two
/// ports forwarding io between them —
///
///   port 0 `net_virtio_user0` = the front-end of Warmstart's vhost-user back-end port (socket A),
///   port 1 `net_vhost0`       = a DPDK back-end that Warmstart's virtio-user port connects to (B).
///
/// Warmstart runs in this process (a Bus with both ports, the real drivers; the test polls their
/// queue pairs itself instead of a Datapath thread) and drives both directions at once:
///
///   to-backend:  Warmstart virtio-user TX → net_vhost RX → io → net_virtio_user TX → Warmstart
///                vhost-user dequeue (the guest's TX ring)
///   to-frontend: Warmstart vhost-user enqueue (the guest's RX ring) → net_virtio_user RX → io →
///                net_vhost TX → Warmstart virtio-user RX
///
/// Every frame is numbered and patterned (`PayloadFrames`); the receiving side checks each one
/// byte for byte, and that none is missing, duplicated or reordered on its queue. Afterwards
/// testpmd's port counters must equal what Warmstart sent and received on each side (no drop
/// anywhere), the queues report no error, and every mbuf is back in the pool.
///
/// The matrix: split and packed rings × testpmd's `mrg_rxbuf=1|0` × `in_order=0|1` (VIRTIO_F_IN_ORDER,
/// see the in-order cases) × 64, 1518 and 9000 B, and two queue pairs once (packed, mergeable,
/// `in_order=0`): about 1.7 s a case on a quiet machine. Warmstart's virtio-user port takes the
/// same ring layout and always negotiates MRG_RXBUF with net_vhost (its receive buffers are 2 KiB
/// mbufs: a 9000 B frame needs five).
/// What the 9000 B frames exercise:
///   - mrg_rxbuf=1: testpmd has 2 KiB mbufs (`--max-pkt-len=9600`, Rx scatter on port 0 only:
///     net_vhost has no scatter offload). Warmstart's back-end enqueues a 5-segment chain over
///     five merged guest buffers (num_buffers 5), testpmd's virtio-user reassembles a chain and
///     sends it as a multi-segment frame through an indirect table (INDIRECT_DESC is negotiated)
///     — on the split ring with `in_order=1` as a plain chain (header, then one descriptor per
///     segment: DPDK's in-order TX never uses indirect tables) — which Warmstart's back-end
///     dequeues into a chain. (Packed-ring tables from DPDK carry WRITE on their header entry:
///     see TransmitTests.testPackedIndirectTXTableWithDPDKFlags.)
///   - mrg_rxbuf=0: testpmd has 10 KiB mbufs (`--mbuf-size=10240`), so every guest buffer holds a
///     whole frame: Warmstart's back-end gathers a 5-segment chain into one descriptor, and
///     dequeues a single 9012 B descriptor (header pushed in front of the data) into a chain.
///   - Warmstart's virtio-user transmits 5 descriptors per frame (header+first segment, then one
///     per segment) and receives 5 merged buffers from net_vhost in both settings.
/// 64 B and 1518 B frames fit one buffer everywhere (1518 B with mrg_rxbuf=0 goes into 10 KiB
/// buffers).
///
/// No check depends on speed: waits end on events (probes back, every frame checked), with
/// deadlines for a loaded machine.
///
/// Skips (with the reason) without testpmd, root or free hugepages. testpmd runs under
/// `setpriv --pdeathsig KILL` and is killed by pid; its hugepage files, runtime directory and
/// the sockets are removed whatever the outcome (WARMSTART_KEEP_LOGS=1 keeps the logs in
/// /tmp/ws-payload-PID-CASE). WARMSTART_PAYLOAD_FRAMES=N changes the frames per stream and size.
final class TestpmdPayloadTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var packed: Bool
        var mergeable: Bool
        var inOrder = false
        var queues = 1
        var description: String {
            "\(packed ? "packed" : "split") mrg_rxbuf=\(mergeable ? 1 : 0) in_order=\(inOrder ? 1 : 0)" + (queues > 1 ? " queues=\(queues)" : "")
        }
        var tag: String { "\(packed ? "p" : "s")\(mergeable ? 1 : 0)\(inOrder ? "o" : "")q\(queues)" }
    }

    /// No frame arriving for this long means frames were lost (the sender keeps at most a window
    /// in flight); long, because a loaded machine can starve testpmd's forwarding core for seconds.
    static let stallSeconds: Double = 30

    static let sizes = [64, 1518, 9000]
    /// Frames per stream and size (debug build, quiet machine: well under a second each).
    static func frameCount(_ size: Int) -> Int {
        if let s = ProcessInfo.processInfo.environment["WARMSTART_PAYLOAD_FRAMES"], let n = Int(s) { return n }
        return size > 2048 ? 600 : 2000
    }
    /// Frames in flight per stream: inside every ring on the way with room to spare (256
    /// descriptors, up to 31 of our receive buffers waiting for a refill batch; a 9000 B frame
    /// takes five 2 KiB buffers), so a lost frame is a bug, never a full ring. As large as that
    /// allows: on a loaded machine the time goes in round trips through testpmd.
    static func window(_ size: Int) -> Int { size > 2048 ? 32 : 128 }

    func testSplitMergeable() throws { try run(Case(packed: false, mergeable: true)) }
    func testSplitNotMergeable() throws { try run(Case(packed: false, mergeable: false)) }
    func testPackedMergeable() throws { try run(Case(packed: true, mergeable: true)) }
    func testPackedNotMergeable() throws { try run(Case(packed: true, mergeable: false)) }
    /// Two queue pairs on every port: testpmd forwards queue i to queue i, each of the four
    /// streams keeps its order on its own queue.
    func testPackedMergeableTwoQueues() throws { try run(Case(packed: true, mergeable: true, queues: 2)) }

    // VIRTIO_F_IN_ORDER (testpmd's default, `in_order=1`). DPDK's virtio-user then takes its
    // in-order paths: split TX (`virtio_xmit_pkts_inorder`: one descriptor per frame when the
    // header fits the headroom, else header + one per segment, never indirect) and split RX
    // (`virtio_recv_pkts_inorder`, which finds each buffer by its used-ring position, so ours
    // must be returned in ring order); packed TX reclaims a whole batch from one used descriptor
    // — what Warmstart's `publishPackedUsedInOrder` writes for each guest-TX burst.
    func testSplitMergeableInOrder() throws { try run(Case(packed: false, mergeable: true, inOrder: true)) }
    func testSplitNotMergeableInOrder() throws { try run(Case(packed: false, mergeable: false, inOrder: true)) }
    func testPackedMergeableInOrder() throws { try run(Case(packed: true, mergeable: true, inOrder: true)) }
    func testPackedNotMergeableInOrder() throws { try run(Case(packed: true, mergeable: false, inOrder: true)) }

    /// The back-end port's queue pairs as `onQueuesChanged` reports them (loop thread).
    final class BackendQueues: @unchecked Sendable {
        let lock = NSLock()
        private var current: [VhostQueuePair] = []
        private var changes = 0
        func set(_ p: [VhostQueuePair]) { lock.lock(); current = p; changes += 1; lock.unlock() }
        var state: (pairs: [VhostQueuePair], changes: Int) { lock.lock(); defer { lock.unlock() }; return (current, changes) }
    }

    func run(_ c: Case) throws {
        let h = try TestpmdHarness(name: "payload-\(c.tag)", prefixBase: "ws-payload", needsWarmstart: false)
        let wsSocket = "\(h.dir)/warmstart-vhost.sock", dpdkSocket = "\(h.dir)/dpdk-vhost.sock"
        let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: 16384, cacheSize: 64)), hugepages: .auto)
        let pool = live.mbufPool
        let bus = try Bus(ports: [
            try PortSpec.parse("vhost-user:\(wsSocket),name=be,queues=\(c.queues)"),
            try PortSpec.parse("virtio-user:\(dpdkSocket),name=fe,packed=\(c.packed ? 1 : 0),mrg=1,queues=\(c.queues),"
                               + "backoff-min-ms=5,backoff-max-ms=50"),
        ])
        // The back-end driver attaches its queue pairs to a Datapath slot; this one never starts
        // polling threads: the test polls the pairs itself.
        let datapath = Datapath(pool: pool, ports: bus.devices.map(\.name))
        let backend = VhostUserBackendPort(datapath: datapath)
        let beQueues = BackendQueues()
        backend.onQueuesChanged = { _, pairs in beQueues.set(pairs) }
        backend.register(on: bus)
        VirtioUserDriver(regions: live.sharedRegions, pool: pool, arena: RingArena(region: live.generalRegion!)).register(on: bus)
        bus.start()
        var tp: TestpmdConsole?
        defer {
            // testpmd first (it stops its rings on our back-end like a guest shutting down), then
            // our ports; the harness kills anything left by pid and removes its files.
            tp?.quit()
            bus.stop()
            h.cleanup()
        }
        _ = waitUntil(timeout: TestpmdHarness.deadline, interval: 5000) { FileManager.default.fileExists(atPath: wsSocket) }
        tp = try h.startTestpmdBridge(frontendOf: wsSocket, backendAt: dpdkSocket, packed: c.packed,
                                      mergeable: c.mergeable, inOrder: c.inOrder, queues: c.queues)
        let started = bus.wait(timeoutSeconds: TestpmdHarness.deadline) { $0.allSatisfy { $0.state == .started } }
                      && beQueues.state.pairs.count == c.queues
        let beq = beQueues.state.pairs.sorted { $0.pairIndex < $1.pairIndex }
        guard started, let fe = bus.devices[1].driverContext as? VirtioUserPort, fe.queues.count == c.queues else {
            return XCTFail("\(c): ports did not start: \(bus.snapshot()), back-end pairs \(beq.count); "
                           + "testpmd log \(h.log("testpmd")):\n\(tp!.tail)")
        }
        let feq = fe.queues
        let changesAtStart = beQueues.state.changes
        // Both sides negotiated what the case asks for.
        XCTAssertEqual(beq[0].rxSetup.layout, c.packed ? .packed : .split, "\(c)")
        XCTAssertEqual(beq[0].rxSetup.mergeableRxBuffers, c.mergeable, "\(c): testpmd's mrg_rxbuf")
        for q in beq {
            XCTAssertEqual(q.rxSetup.features & VirtioFeatures.inOrder.rawValue != 0, c.inOrder, "\(c): testpmd's in_order")
            XCTAssertEqual(q.guestTX.options.inOrder, c.inOrder, "\(c): the guest-TX queue's in-order path")
        }
        XCTAssertEqual(fe.negotiation!.features & VirtioFeatures.ringPacked.rawValue != 0, c.packed, "\(c)")
        XCTAssertNotEqual(fe.negotiation!.features & VirtioFeatures.mrgRxbuf.rawValue, 0, "\(c): net_vhost grants MRG_RXBUF")
        print("payload \(c): testpmd's virtio-user negotiated \(VirtioFeatures.names(beq[0].rxSetup.features).joined(separator: " "))")

        let cache = MbufCache(pool: pool, size: 64)
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
        defer { out.deallocate() }
        let frames = PayloadFrames()
        // Stream 0x1q: our virtio-user queue q → testpmd → our back-end; 0x2q the other way.
        let toBackend = (0..<c.queues).map { PayloadStream(id: UInt8(0x10 + $0), name: "virtio-user q\($0) → testpmd → vhost-user") }
        let toFrontend = (0..<c.queues).map { PayloadStream(id: UInt8(0x20 + $0), name: "vhost-user q\($0) → testpmd → virtio-user") }
        let atBackend = PayloadSide(name: "vhost-user back-end", streams: toBackend)
        let atFrontend = PayloadSide(name: "virtio-user", streams: toFrontend)
        let all = toBackend + toFrontend

        // Warm-up: testpmd forwards to net_vhost only once its vring is enabled, a moment after
        // our port started. Probe both ways on every queue until a frame came through each side.
        let probeToBackend = PayloadStream(id: 0x7E, name: "probe to the back-end")
        let probeToFrontend = PayloadStream(id: 0x7F, name: "probe to the front-end")
        probeToBackend.begin(run: 0xFFFF_FFFF, size: 64, count: .max)
        probeToFrontend.begin(run: 0xFFFF_FFFF, size: 64, count: .max)
        var through = (toBackend: 0, toFrontend: 0)
        func drainProbes() {
            through.toBackend += beq.reduce(0) { $0 + drain($1, cache, out) }
            through.toFrontend += feq.reduce(0) { $0 + drain($1, cache, out) }
        }
        let warm = waitUntil(timeout: TestpmdHarness.deadline, interval: 5000) {
            for q in 0..<c.queues {
                probeToBackend.send(frames: frames, pool: pool, cache: cache, out: out, window: .max, max: 1) { feq[q].transmitBurst($0, count: $1, cache: cache) }
                probeToFrontend.send(frames: frames, pool: pool, cache: cache, out: out, window: .max, max: 1) { beq[q].transmitBurst($0, count: $1, cache: cache) }
            }
            drainProbes()
            return through.toBackend > 0 && through.toFrontend > 0
        }
        guard warm else {
            return XCTFail("\(c): no probe came through testpmd (\(through)); log \(h.log("testpmd")):\n\(tp!.tail)")
        }
        // Then let every probe finish, whatever the machine's load: testpmd has received each one
        // we sent (a ring loses nothing) and we have received every one it transmitted (it drops
        // what it cannot transmit: probes sent before net_vhost's vring was enabled) — the same
        // answer twice in a row, so none sits between testpmd's receive and its transmit.
        // Counters from here on are differences from these: `clear port stats all` races with the
        // forwarding core (DPDK's virtio PMD adds its burst count, 0 included, on every poll), so
        // a clear can be undone by the next poll.
        var base0: [String: UInt64] = [:], base1: [String: UInt64] = [:]
        var settledOnce = false
        let settled = try waitUntil(timeout: TestpmdHarness.deadline, interval: 5000) {
            drainProbes()
            let s0 = try tp!.nicStats(port: 0), s1 = try tp!.nicStats(port: 1)
            let done = s1["RX-packets"] == probeToBackend.sentPackets && s0["RX-packets"] == probeToFrontend.sentPackets
                && s0["TX-packets"] == UInt64(through.toBackend) && s1["TX-packets"] == UInt64(through.toFrontend)
            let twice = done && settledOnce && s0 == base0 && s1 == base1
            (settledOnce, base0, base1) = (done, s0, s1)
            return twice
        }
        guard settled else {
            return XCTFail("\(c): probes still in flight: sent \(probeToBackend.sentPackets) → back-end, \(probeToFrontend.sentPackets) → "
                           + "front-end, received \(through); testpmd port 0 \(base0), port 1 \(base1)")
        }

        for size in Self.sizes {
            let count = Self.frameCount(size)
            let run = UInt32(size) << 8 | (c.inOrder ? 16 : 0) | UInt32(c.queues) << 2 | (c.packed ? 2 : 0) | (c.mergeable ? 1 : 0)
            for s in all { s.begin(run: run, size: size, count: count) }
            let window = Self.window(size)
            let t0 = Date()
            var lastProgress = Date(), lastReceived = 0, stalled = false
            while !all.allSatisfy(\.done) {
                for q in 0..<c.queues {
                    toBackend[q].send(frames: frames, pool: pool, cache: cache, out: out, window: window, max: 32) {
                        feq[q].transmitBurst($0, count: $1, cache: cache)
                    }
                    toFrontend[q].send(frames: frames, pool: pool, cache: cache, out: out, window: window, max: 32) {
                        beq[q].transmitBurst($0, count: $1, cache: cache)
                    }
                }
                for q in 0..<c.queues {
                    receive(beq[q], queue: q, into: atBackend, pool, cache, frames, out)
                    receive(feq[q], queue: q, into: atFrontend, pool, cache, frames, out)
                }
                let received = all.reduce(0) { $0 + $1.phaseReceived }
                if received != lastReceived {
                    lastReceived = received
                    lastProgress = Date()
                } else if Date().timeIntervalSince(lastProgress) > Self.stallSeconds {
                    stalled = true
                    break
                } else {
                    // Nothing arrived: give the CPU to testpmd's forwarding core (this machine
                    // has two CPUs, shared with builds) instead of spinning.
                    usleep(20)
                }
            }
            let secs = String(format: "%.2f", Date().timeIntervalSince(t0))
            for s in all {
                print("payload \(c) \(size) B \(s.name): \(s.phaseReceived)/\(count) checked, \(s.chainedFrames) arrived chained "
                      + "(up to \(s.maxSegments) segments), \(secs) s")
                XCTAssertEqual(s.phaseReceived, count,
                               "\(c) \(size) B \(s.name): \(s.phaseSent) sent, \(s.inFlight) never arrived, next due seq \(s.nextExpected)"
                               + (stalled ? "; stalled (nothing arrived for \(Self.stallSeconds) s); testpmd's last lines:\n\(tp!.tail)" : ""))
            }
            let problems = all.flatMap(\.problems), problemCount = all.reduce(0) { $0 + $1.problemCount }
            XCTAssertEqual(problemCount, 0, "\(c) \(size) B: \(problemCount) bad frames:\n" + problems.joined(separator: "\n"))
            if stalled { break }
        }
        XCTAssertEqual(atBackend.strayCount + atFrontend.strayCount, 0, (atBackend.strays + atFrontend.strays).joined(separator: "\n"))

        // Counts on both sides: what Warmstart sent is what testpmd received on that port, what
        // testpmd transmitted on the other port is what Warmstart received — nothing dropped.
        func delta(_ now: [String: UInt64], _ base: [String: UInt64]) -> [String: UInt64] {
            now.reduce(into: [:]) { $0[$1.key] = $1.value &- (base[$1.key] ?? 0) }
        }
        let p0 = delta(try tp!.nicStats(port: 0), base0), p1 = delta(try tp!.nicStats(port: 1), base1)
        let label = "\(c): testpmd port 0 \(p0), port 1 \(p1)"
        let sent = (toBackend: toBackend.reduce((UInt64(0), UInt64(0))) { ($0.0 + $1.sentPackets, $0.1 + $1.sentBytes) },
                    toFrontend: toFrontend.reduce((UInt64(0), UInt64(0))) { ($0.0 + $1.sentPackets, $0.1 + $1.sentBytes) })
        XCTAssertEqual(p1["RX-packets"], sent.toBackend.0, "net_vhost received what our virtio-user sent: \(label)")
        XCTAssertEqual(p1["RX-bytes"], sent.toBackend.1, label)
        XCTAssertEqual(p0["TX-packets"], atBackend.receivedPackets, "our back-end received what net_virtio_user sent: \(label)")
        XCTAssertEqual(p0["TX-bytes"], atBackend.receivedBytes, label)
        XCTAssertEqual(p0["RX-packets"], sent.toFrontend.0, "net_virtio_user received what our back-end sent: \(label)")
        XCTAssertEqual(p0["RX-bytes"], sent.toFrontend.1, label)
        XCTAssertEqual(p1["TX-packets"], atFrontend.receivedPackets, "our virtio-user received what net_vhost sent: \(label)")
        XCTAssertEqual(p1["TX-bytes"], atFrontend.receivedBytes, label)
        for (port, s) in [(0, p0), (1, p1)] {
            for k in ["RX-missed", "RX-errors", "RX-nombuf", "TX-errors"] {
                XCTAssertEqual(s[k], 0, "testpmd port \(port) \(k): \(label)")
            }
        }
        for q in beq {
            XCTAssertEqual(q.errorCount, 0, "\(c): back-end queue pair \(q.pairIndex) errors: guest TX \(Self.errors(q.guestTX.counters)), "
                           + "guest RX \(Self.errors(q.guestRX.counters))")
            XCTAssertNil(q.brokenReason, "\(c)")
        }
        for q in feq { XCTAssertEqual(q.errorCount, 0, "\(c): virtio-user queue pair \(q.index) errors") }
        XCTAssertEqual(beQueues.state.changes, changesAtStart, "\(c): the back-end's queue pairs were rebuilt during the run")
        XCTAssertEqual(fe.connections, 1, "\(c): virtio-user reconnected during the run")

        // Shut down and account for every mbuf.
        tp!.quit()
        tp = nil
        bus.stop()
        cache.flush()
        XCTAssertEqual(pool.inUseCount, 0, "\(c): every mbuf is back in the pool")
        XCTAssertEqual(pool.doubleFreeCount + pool.badFreeCount, 0, "\(c)")
    }

    /// The nonzero chain-error counters, by name.
    static func errors(_ c: VirtqueueCounters) -> String {
        let named = ChainError.allCases.filter { c.count($0) > 0 }.map { "\($0): \(c.count($0))" }
        return named.isEmpty ? "none" : named.joined(separator: ", ")
    }

    /// Receives and frees whatever `q` has (warm-up).
    func drain(_ q: BurstQueue, _ cache: MbufCache, _ out: UnsafeMutablePointer<Mbuf>) -> Int {
        let n = q.receiveBurst(into: out, max: 32, cache: cache)
        for k in 0..<n { cache.free(out[k]) }
        return n
    }

    func receive(_ q: BurstQueue, queue: Int, into side: PayloadSide, _ pool: MbufPool, _ cache: MbufCache,
                 _ frames: PayloadFrames, _ out: UnsafeMutablePointer<Mbuf>) {
        let n = q.receiveBurst(into: out + 32, max: 32, cache: cache)
        for k in 0..<n {
            side.receive(out[32 + k], queue: queue, pool: pool, frames: frames)
            cache.free(out[32 + k])
        }
    }
}

extension TestpmdHarness {
    /// testpmd with two ports forwarding io between them: port 0 the virtio-user front-end of the
    /// back-end listening at `frontendOf`, port 1 a vhost back-end listening at `backendAt`.
    /// Returns once forwarding runs.
    func startTestpmdBridge(frontendOf: String, backendAt: String, packed: Bool, mergeable: Bool, inOrder: Bool,
                            queues: Int = 1) throws -> TestpmdConsole {
        var args = ealArguments(mainLcore: 1) + [
                    "--vdev", "net_virtio_user0,path=\(frontendOf),queues=\(queues),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=\(mergeable ? 1 : 0),in_order=\(inOrder ? 1 : 0),queue_size=256",
                    "--vdev", "net_vhost0,iface=\(backendAt),queues=\(queues)",
                    "--", "-i", "--nb-cores=1", "--rxq=\(queues)", "--txq=\(queues)", "--disable-device-start", "--max-pkt-len=9600"]
        // Without mergeable buffers every virtio-user receive buffer must hold a whole frame.
        args += mergeable ? ["--total-num-mbufs=8192"] : ["--mbuf-size=10240", "--total-num-mbufs=4096"]
        let stdin = Pipe()
        // stdbuf: answers must reach the log file at once; setpriv: testpmd dies with this process.
        let p = try spawn("/usr/bin/stdbuf", ["-oL", "-eL", testpmdPath] + args, log: "testpmd", stdin: stdin, dieWithParent: true)
        let t = TestpmdConsole(process: p, stdin: stdin.fileHandleForWriting, logPath: log("testpmd"))
        try t.waitFor("testpmd>", timeout: TestpmdHarness.deadline)
        // 2 KiB mbufs take 9000 B frames as chains: Rx scatter on the virtio-user port (net_vhost
        // has no such offload and chains on its own).
        if mergeable { t.send("port config 0 rx_offload scatter on") }
        t.send("port start all")
        t.send("set fwd io")
        t.send("start")
        try t.waitFor("io packet forwarding - ports=2", timeout: TestpmdHarness.deadline)
        return t
    }
}

extension TestpmdConsole {
    var tail: String { output.split(separator: "\n").suffix(20).joined(separator: "\n") }
}
