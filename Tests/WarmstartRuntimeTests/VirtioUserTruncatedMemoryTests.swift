import CWarmstartShim
import Foundation
import XCTest
import WarmstartBus
import WarmstartDatapath
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartRuntime
import WarmstartSpec

/// Issue 12, defect 3, the virtio-user side: the pool lives in a snapshot file (/dev/shm, no
/// hugepages: the README's main job), which cannot be sealed, and a virtio-user port hands the
/// file's fd to its back-end peer in SET_MEM_TABLE. A peer that truncates it killed Warmstart
/// with SIGBUS at the next touch of the pool (this test process crashed with signal 7). Now the
/// virtio-user port fails with the reason and the vhost-user port keeps forwarding.
final class VirtioUserTruncatedMemoryTests: XCTestCase {
    var dir = ""
    var snapshot = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/ws-vutrunc-XXXXXX".utf8CString)
        dir = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        snapshot = "/dev/shm/ws-vutrunc-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).snap"
    }

    override func tearDown() {
        unlink(snapshot)
        try? FileManager.default.removeItem(atPath: dir)
    }

    func testBackEndPeerTruncatesTheSnapshotFileWhileTrafficRuns() throws {
        let rec = PhaseRecorder(clock: BootClock(environment: [:]))
        let opts = MemoryOptions(snapshot: SnapshotConfig(pool: MbufPoolConfig(count: 4096, cacheSize: 64)), hugepages: .off,
                                 snapshotPath: snapshot, createIfMissing: true)
        let (live, _) = try MemoryBoot.boot(opts, recorder: rec) { XCTFail("boot warning: \($0)") }
        XCTAssertEqual(live.origin, .restoredResident)
        XCTAssertTrue(live.sharedRegions.contains { $0.peerCanShrink }, "the pool should be in the (unsealable) snapshot file")

        let peer = try HostileBackEnd(path: dir + "/peer.sock")
        defer { peer.stop() }
        let ports = [try PortSpec.parse("vhost-user:\(dir)/a.sock,name=a"),
                     try PortSpec.parse("virtio-user:\(dir)/peer.sock,name=fe,backoff-min-ms=5,backoff-max-ms=50")]
        let rt = try Runtime(options: RuntimeOptions(ports: ports, forward: .macswap, cores: 1), memory: live, recorder: rec)
        rt.enableVirtioUserPorts()
        try rt.start()
        defer { rt.stop() }
        let guest = try TestGuest(socketPath: dir + "/a.sock")
        try guest.bringUp()
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .started && $0[1].state == .started },
                      "\(rt.bus.snapshot())")
        XCTAssertTrue(peer.waitForRings(2), "the peer did not start both rings")

        // Both ports forward: the guest's frames come back, and so do the peer's (through our
        // virtio-user port, zero copy in the snapshot file's memory).
        XCTAssertEqual(echo(guest, tag: 0xA, from: 0, count: 32), 32)
        XCTAssertEqual(peer.send((0..<16).map { testFrame(tag: 0xB, seq: $0) }), 16)
        XCTAssertEqual(peer.receive(16).count, 16, "the virtio-user port forwards before the truncation")

        // The peer truncates the file it received, with frames on the way both ways; the guest's
        // traffic makes Warmstart touch the pool at once (before the guard: SIGBUS here).
        XCTAssertEqual(peer.send((16..<48).map { testFrame(tag: 0xB, seq: $0) }), 32)
        XCTAssertFalse(peer.receivedFDs.isEmpty)
        for fd in peer.receivedFDs { XCTAssertEqual(ftruncate(fd, 0), 0) }
        peer.quiet()   // its own mapping of our memory is gone too: it touches it no more
        guest.send((100..<164).map { testFrame(tag: 0xA, seq: $0) })

        let failed = rt.bus.wait(timeoutSeconds: testDeadline) { rs in
            rs[1].state == .failed && (rs[1].reason ?? "").contains("truncated")
        }
        XCTAssertTrue(failed, "the virtio-user port did not go down: \(rt.bus.snapshot())")
        let reason = rt.bus.snapshot()[1].reason ?? ""
        XCTAssertTrue(reason.hasPrefix("back-end peer truncated the shared packet memory 'mbufs'")
                      || reason.hasPrefix("back-end peer truncated the shared ring memory 'general'"), reason)
        XCTAssertTrue(reason.contains("SIGBUS at 0x"), reason)
        XCTAssertTrue(reason.contains("restart Warmstart"), reason)
        XCTAssertEqual(rt.stats().ports.first { $0.name == "fe" }?.reason, reason, "stats say why the port is down")

        // The vhost-user port keeps forwarding over the (now anonymous, zeroed) pool memory,
        // frames intact: every mbuf header is written anew when allocated.
        _ = guest.receive(count: 64, timeout: 1)   // whatever of the burst in flight made it
        let frames = (200..<250).map { testFrame(tag: 0xA, seq: $0) }
        XCTAssertEqual(guest.send(frames), 50)
        let back = guest.receive(count: 50)
        XCTAssertEqual(back.count, 50, "port a forwards after the peer's truncation")
        XCTAssertEqual(back.map { Array($0[12...]) }, frames.map { Array($0[12...]) }, "frames come back whole")
        XCTAssertEqual(rt.bus.snapshot()[0].state, .started)
        XCTAssertEqual(live.mbufPool.badFreeCount, 0, "wiped mbufs are counted as lost, not as bad frees")
        XCTAssertEqual(live.mbufPool.doubleFreeCount, 0)
    }

    func echo(_ g: TestGuest, tag: UInt8, from: Int, count: Int) -> Int {
        XCTAssertEqual(g.send((from..<(from + count)).map { testFrame(tag: tag, seq: $0) }), count)
        return g.receive(count: count).count
    }
}

/// A vhost-user back-end peer in this process (Warmstart's own session code, served on a thread):
/// it keeps a copy of every memory fd the front-end sends so the test can truncate them, and
/// drives the rings with a private pool.
final class HostileBackEnd: @unchecked Sendable {
    let listenFD: Int32
    let path: String
    let lock = NSLock()
    private var fds: [Int32] = []
    private var setups: [Int: VringSetup] = [:]
    private var devices: [Int: VirtqueueDevice] = [:]
    private var connFD: Int32 = -1
    private var silent = false
    let poolRegion: MemoryRegion
    let pool: MbufPool

    init(path: String) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0, listen(fd, 4) == 0 else {
            if fd >= 0 { close(fd) }
            throw NSError(domain: "HostileBackEnd", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "listen \(path)"])
        }
        listenFD = fd
        let cfg = MbufPoolConfig(count: 1024, cacheSize: 0)
        poolRegion = try MemoryRegion.memfd(name: "peer-pool", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!,
                                            pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: poolRegion, offset: 0, poolID: 1)
        // One connection: the one the port makes (it does not come back once its memory is lost).
        Thread { [self] in
            let c = accept(listenFD, nil, nil)
            guard c >= 0 else { return }
            lock.lock(); connFD = c; lock.unlock()
            let session = VhostUserBackendSession(configuration: VhostUserBackendConfiguration())
            let channel = VhostUserChannel(fd: c, ownsFD: false)
            _ = session.serve(channel, onMessage: { frame, _ in
                guard frame.header.knownRequest == .setMemTable else { return }
                self.lock.lock()
                self.fds += frame.fds.map { dup($0) }
                self.lock.unlock()
            }, onEvents: { events in
                self.lock.lock()
                for e in events {
                    switch e {
                    case let .ringStarted(s), let .ringUpdated(s): self.setups[s.index] = s; self.devices[s.index] = nil
                    case let .ringStopped(i, _): self.setups[i] = nil; self.devices[i] = nil
                    default: break
                    }
                }
                self.lock.unlock()
            })
            lock.lock(); close(c); connFD = -1; lock.unlock()
        }.start()
    }

    var receivedFDs: [Int32] { lock.lock(); defer { lock.unlock() }; return fds }

    func waitForRings(_ n: Int) -> Bool {
        let end = Date().addingTimeInterval(testDeadline)
        while Date() < end {
            lock.lock(); let c = setups.count; lock.unlock()
            if c >= n { return true }
            usleep(1000)
        }
        return false
    }

    /// Stops touching the rings and buffers (they are in the memory it truncated).
    func quiet() { lock.lock(); silent = true; devices = [:]; lock.unlock() }

    func device(_ index: Int) -> VirtqueueDevice? {
        lock.lock(); defer { lock.unlock() }
        if silent { return nil }
        if let d = devices[index] { return d }
        guard let s = setups[index] else { return nil }
        let options = VirtqueueOptions(features: VirtioFeatures(rawValue: s.features))
        let state = s.base
        let d: VirtqueueDevice
        if s.layout == .packed {
            d = try! VirtqueueDevice(packed: try! PackedRing(size: s.size, desc: s.descriptors, driverEvent: s.driverArea,
                                                        deviceEvent: s.deviceArea), memory: s.memory.table, options: options, state: state)
        } else {
            d = VirtqueueDevice(split: try! SplitRing(size: s.size, desc: s.descriptors, avail: s.driverArea, used: s.deviceArea),
                                memory: s.memory.table, options: options, state: state)
        }
        devices[index] = d
        return d
    }

    /// Frames into the front-end's receive ring (vring 0); how many it took.
    func send(_ frames: [[UInt8]]) -> Int {
        guard let d = device(0) else { return 0 }
        var sent = 0
        for f in frames {
            guard var m = pool.alloc() else { break }
            f.withUnsafeBytes { m.data.copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            m.dataLength = UInt16(f.count)
            m.packetLength = UInt32(f.count)
            sent += d.enqueueBurst(pool: pool, &m, count: 1)
            pool.free(m)
        }
        return sent
    }

    /// Frames the front-end transmitted (vring 1), up to `count`.
    func receive(_ count: Int) -> [[UInt8]] {
        var got: [[UInt8]] = []
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }
        let end = Date().addingTimeInterval(testDeadline)
        while got.count < count && Date() < end {
            guard let d = device(1) else { usleep(1000); continue }
            let n = d.dequeueBurst(pool: pool, into: out, maxCount: 32)
            for k in 0..<n {
                got.append(Array(UnsafeRawBufferPointer(start: out[k].data, count: Int(out[k].dataLength))))
                pool.free(out[k])
            }
            if n == 0 { usleep(100) }
        }
        return got
    }

    func stop() {
        Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        lock.lock()
        if connFD >= 0 { Glibc.shutdown(connFD, Int32(SHUT_RDWR)) }
        for fd in fds { close(fd) }
        fds = []
        lock.unlock()
        unlink(path)
    }
}
