import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartDatapath
import WarmstartSpec

/// How long a wait for an event (a state reached, a frame arrived) may take: for a machine
/// loaded by parallel builds. Waits return as soon as their condition holds; checks that
/// something does *not* happen keep their short windows.
let testDeadline: Double = 60

/// Warmstart's side: a pool region and a general-purpose region (two memfds with I/O addresses
/// like LiveMemory's), the pool — its control block and ring in a third, private memfd, as
/// LiveMemory keeps them — and the ring arena.
final class FrontendSide {
    let poolRegion: MemoryRegion
    let general: MemoryRegion
    let metadata: MemoryRegion
    let pool: MbufPool
    let arena: RingArena
    /// What the port shares with the back-end (never `metadata`).
    var regions: [MemoryRegion] { [poolRegion, general] }

    init(mbufs: Int = 4096) throws {
        let cfg = MbufPoolConfig(count: mbufs, cacheSize: 64)
        let size = MbufPoolConfig.elementBytes(cfg)
        poolRegion = try MemoryRegion.memfd(name: "vu-pool", size: size, pageSize: .small4K, ioAddress: 1 << 32)
        general = try MemoryRegion.memfd(name: "vu-general", size: 1 << 20, pageSize: .small4K,
                                         ioAddress: (1 << 32) + UInt64(size))
        metadata = try MemoryRegion.memfd(name: "vu-pool-meta", size: MbufPoolConfig.metadataBytes(cfg), pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: poolRegion, offset: 0, metadata: metadata, poolID: 0)
        arena = RingArena(region: general)
    }
}

/// A vhost-user back-end in this process: the session served on a thread over one end of a
/// socket pair (or an accepted connection), device-side queues built from the rings it starts,
/// and a private pool to copy packets into and out of.
final class InProcessBackend: @unchecked Sendable {
    let session: VhostUserBackendSession
    let frontendFD: Int32
    let backendFD: Int32
    let lock = NSLock()
    var setups: [Int: VringSetup] = [:]
    var devices: [Int: VirtqueueDevice] = [:]
    var ended: VhostUserError?
    let poolRegion: MemoryRegion
    let pool: MbufPool

    /// `onMessage`: called on the serving thread after each message was handled (tests use it
    /// to play a back-end that behaves differently from ours).
    init(configuration: VhostUserBackendConfiguration = VhostUserBackendConfiguration(), connectedFD: Int32? = nil,
         onMessage: ((VhostUserFrame, VhostUserOutcome, VhostUserBackendSession) -> Void)? = nil) throws {
        session = VhostUserBackendSession(configuration: configuration)
        if let fd = connectedFD {
            backendFD = fd; frontendFD = -1
        } else {
            let (a, b) = VhostUserChannel.socketPair()!
            frontendFD = a; backendFD = b
        }
        let cfg = MbufPoolConfig(count: 2048, cacheSize: 0)
        poolRegion = try MemoryRegion.memfd(name: "be-pool", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!,
                                            pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: poolRegion, offset: 0, poolID: 1)
        let t = Thread { [self] in
            let end = session.serve(VhostUserChannel(fd: backendFD), onMessage: { frame, outcome in
                onMessage?(frame, outcome, self.session)
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
            self.lock.lock(); self.ended = end; self.lock.unlock()
        }
        // Not kept: the thread's closure holds this object, and a stored Thread would hold the
        // closure — a cycle that would keep the session (its mapped regions and eventfds) alive
        // for the rest of the test run.
        t.start()
    }

    /// Cuts the connection (the back-end "disappears").
    func disconnect() { shutdown(backendFD, Int32(SHUT_RDWR)) }

    /// Ends the serving thread and closes our end of the pair (test teardown).
    func stop() {
        disconnect()
        let end = Date().addingTimeInterval(testDeadline)
        while !hasEnded && Date() < end { usleep(1000) }
        if frontendFD >= 0 { close(frontendFD) }
    }

    var hasEnded: Bool { lock.lock(); defer { lock.unlock() }; return ended != nil }

    func waitForRings(_ n: Int, timeout: Double = testDeadline) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            lock.lock(); let c = setups.count; lock.unlock()
            if c >= n { return true }
            usleep(1000)
        }
        return false
    }

    /// The device side of vring `index` (0: our RX — the device enqueues; 1: our TX — it dequeues).
    func device(_ index: Int) -> VirtqueueDevice? {
        lock.lock(); defer { lock.unlock() }
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

    /// Frames the front-end transmitted (device dequeue on vring 1), up to `max`, polling up to `timeout`.
    func receive(_ count: Int, ring: Int = 1, timeout: Double = testDeadline) -> [[UInt8]] {
        var got: [[UInt8]] = []
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }
        let end = Date().addingTimeInterval(timeout)
        while got.count < count && Date() < end {
            guard let d = device(ring) else { usleep(1000); continue }
            let n = d.dequeueBurst(pool: pool, into: out, maxCount: 32)
            for k in 0..<n {
                got.append(copyFrame(pool, out[k]))
                pool.free(out[k])
            }
            if n == 0 { usleep(100) }
        }
        return got
    }

    /// Sends `frame` to the front-end (device enqueue on vring 0). Returns whether it was delivered.
    func send(_ frame: [UInt8], ring: Int = 0) -> Bool {
        guard let d = device(ring), let m = makeChain(pool, frame) else { return false }
        var mm = m
        let n = d.enqueueBurst(pool: pool, &mm, count: 1)
        pool.free(m)
        return n == 1 && d.counters.dropped == 0
    }
}

/// A unix stream socket listening on `path` (a stand-in back-end's listener), or -1.
func listenUnix(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard fd >= 0, bound == 0, listen(fd, 4) == 0 else { if fd >= 0 { close(fd) }; return -1 }
    return fd
}

/// A test frame: dst, src, type, then a pattern seeded by `seed`.
func testFrame(size: Int, seed: UInt8) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: size)
    let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x0B, 0x02, 0, 0, 0, 0, 0x0A, 0x08, 0x00]
    for i in 0..<min(size, 14) { f[i] = head[i] }
    if size > 14 { for i in 14..<size { f[i] = UInt8(truncatingIfNeeded: i &* 7 &+ Int(seed)) } }
    return f
}

/// `frame` as an mbuf chain from `pool` (segments of the pool's data room).
func makeChain(_ pool: MbufPool, _ frame: [UInt8]) -> Mbuf? {
    let room = pool.config.dataRoom
    var head: Mbuf?
    var off = 0
    repeat {
        guard let m = pool.alloc() else { if let h = head { pool.free(h) }; return nil }
        let n = min(room, frame.count - off)
        frame.withUnsafeBytes { m.data.copyMemory(from: $0.baseAddress! + off, byteCount: n) }
        m.dataLength = UInt16(n)
        m.packetLength = UInt32(n)
        if let h = head { _ = pool.append(m, to: h) } else { head = m }
        off += n
    } while off < frame.count
    return head
}

func copyFrame(_ pool: MbufPool, _ m: Mbuf) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(m.packetLength))
    let n = out.withUnsafeMutableBytes { pool.copyOut(m, to: $0.baseAddress!, max: $0.count) }
    return Array(out[0..<n])
}

func sameFrame(_ a: [UInt8]?, _ b: [UInt8]) -> Bool { a == b }

/// A short description of how two frames differ (never the whole frame).
func frameDiff(_ a: [UInt8]?, _ b: [UInt8]) -> String {
    guard let a else { return "no frame (expected \(b.count) B)" }
    if a.count != b.count { return "length \(a.count), expected \(b.count)" }
    if let i = a.indices.first(where: { a[$0] != b[$0] }) { return "first difference at byte \(i): \(a[i]) vs \(b[i])" }
    return "equal"
}

extension XCTestCase {
    /// A virtio-user port over `fe`'s memory, set up against an in-process back-end (stopped at
    /// teardown), its queue pairs published as the bus driver would.
    func connectVirtioUser(_ fe: FrontendSide, _ cfg: VirtioUserConfig,
                           backend: VhostUserBackendConfiguration = VhostUserBackendConfiguration(),
                           onMessage: ((VhostUserFrame, VhostUserOutcome, VhostUserBackendSession) -> Void)? = nil,
                           file: StaticString = #filePath, line: UInt = #line) throws
        -> (VirtioUserPort, InProcessBackend, VhostUserNegotiation, [VirtioUserQueuePair]) {
        let be = try InProcessBackend(configuration: backend, onMessage: onMessage)
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: cfg, regions: fe.regions, pool: fe.pool, arena: fe.arena)
        let (n, pairs) = try port.establish(fd: be.frontendFD)
        port.queues = pairs
        XCTAssertTrue(be.waitForRings(2 * cfg.queuePairs), "back-end did not start the rings", file: file, line: line)
        return (port, be, n, pairs)
    }

    /// Receives on `q` until `count` frames came or `timeout` passed.
    func receiveFrames(_ q: VirtioUserQueuePair, pool: MbufPool, cache: MbufCache, count: Int, timeout: Double = 5) -> [[UInt8]] {
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }
        var got: [[UInt8]] = []
        let end = Date().addingTimeInterval(timeout)
        while got.count < count && Date() < end {
            let n = q.receiveBurst(into: out, max: 32, cache: cache)
            for k in 0..<n {
                got.append(copyFrame(pool, out[k]))
                cache.free(out[k])
            }
            if n == 0 { usleep(100) }
        }
        return got
    }
}
