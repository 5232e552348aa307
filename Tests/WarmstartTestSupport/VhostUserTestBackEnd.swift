import Foundation
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
import WarmstartSpec

/// The one vhost-user back-end peer of the tests (for Warmstart's virtio-user port): Warmstart's
/// own session served on a thread — over one end of a socket pair, an accepted connection, or the
/// one connection it accepts on a listening path — with device-side queues built from the rings it
/// starts and a private pool to copy packets into and out of. It keeps a copy of every memory fd
/// the front-end sends (`receivedFDs`), so a test can truncate them, and can go `quiet` (touch the
/// rings no more, as a peer whose mapping of them is gone).
public final class InProcessBackend: @unchecked Sendable {
    public let session: VhostUserBackendSession
    /// Our end of the socket pair (-1 over an accepted connection or a listening path).
    public let frontendFD: Int32
    /// The served connection's fd (-1 on a listening path until the front-end connected).
    public private(set) var backendFD: Int32
    public let lock = NSLock()
    public internal(set) var setups: [Int: VringSetup] = [:]
    var devices: [Int: VirtqueueDevice] = [:]
    public private(set) var ended: VhostUserError?
    private var fds: [Int32] = []
    /// Whether SET_MEM_TABLE's fds are copied into `fds` (the listening peer's, for truncation).
    private let keepsMemoryFDs: Bool
    private var silent = false
    private let listenFD: Int32
    private let listenPath: String?
    public let poolRegion: MemoryRegion
    public let pool: MbufPool

    /// `onMessage`: called on the serving thread after each message was handled (tests use it
    /// to play a back-end that behaves differently from ours).
    public init(configuration: VhostUserBackendConfiguration = VhostUserBackendConfiguration(), connectedFD: Int32? = nil,
                poolCount: Int = 2048,
                onMessage: ((VhostUserFrame, VhostUserOutcome, VhostUserBackendSession) -> Void)? = nil) throws {
        session = VhostUserBackendSession(configuration: configuration)
        keepsMemoryFDs = false
        listenFD = -1
        listenPath = nil
        if let fd = connectedFD {
            backendFD = fd; frontendFD = -1
        } else {
            let (a, b) = VhostUserChannel.socketPair()!
            frontendFD = a; backendFD = b
        }
        (poolRegion, pool) = try Self.makePool(count: poolCount)
        let fd = backendFD
        Thread { [self] in serve(VhostUserChannel(fd: fd), onMessage: onMessage) }.start()
        // Not kept: the thread's closure holds this object, and a stored Thread would hold the
        // closure — a cycle that would keep the session (its mapped regions and eventfds) alive
        // for the rest of the test run.
    }

    /// Listens on `path` and serves the one connection the front-end makes there (a port that
    /// lost its memory does not come back).
    public init(listeningOn path: String, configuration: VhostUserBackendConfiguration = VhostUserBackendConfiguration(),
                poolCount: Int = 1024) throws {
        session = VhostUserBackendSession(configuration: configuration)
        keepsMemoryFDs = true
        let l = listenUnix(path)
        guard l >= 0 else {
            throw NSError(domain: "InProcessBackend", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "listen \(path)"])
        }
        listenFD = l
        listenPath = path
        frontendFD = -1
        backendFD = -1
        (poolRegion, pool) = try Self.makePool(count: poolCount)
        Thread { [self] in
            let c = accept(listenFD, nil, nil)
            guard c >= 0 else { return }
            lock.lock(); backendFD = c; lock.unlock()
            serve(VhostUserChannel(fd: c, ownsFD: false), onMessage: nil)
            lock.lock(); close(c); backendFD = -1; lock.unlock()
        }.start()
    }

    static func makePool(count: Int) throws -> (MemoryRegion, MbufPool) {
        let cfg = MbufPoolConfig(count: count, cacheSize: 0)
        let region = try MemoryRegion.memfd(name: "be-pool", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!,
                                            pageSize: .small4K)
        return (region, try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 1))
    }

    private func serve(_ channel: VhostUserChannel,
                       onMessage: ((VhostUserFrame, VhostUserOutcome, VhostUserBackendSession) -> Void)?) {
        let end = session.serve(channel, onMessage: { frame, outcome in
            if self.keepsMemoryFDs && frame.header.knownRequest == .setMemTable {
                self.lock.lock()
                self.fds += frame.fds.map { dup($0) }
                self.lock.unlock()
            }
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
        lock.lock(); ended = end; lock.unlock()
    }

    /// Copies of the memory fds the front-end sent (a listening peer's; closed by `stop`).
    public var receivedFDs: [Int32] { lock.lock(); defer { lock.unlock() }; return fds }

    /// Cuts the connection (the back-end "disappears").
    public func disconnect() {
        lock.lock(); let fd = backendFD; lock.unlock()
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Ends the serving thread and closes our end of the pair (test teardown); a listening peer's
    /// listener, connection and fd copies.
    public func stop() {
        if let listenPath {
            shutdown(listenFD, Int32(SHUT_RDWR))
            close(listenFD)
            disconnect()
            lock.lock()
            for fd in fds { close(fd) }
            fds = []
            lock.unlock()
            unlink(listenPath)
            return
        }
        disconnect()
        let end = Date().addingTimeInterval(testDeadline)
        while !hasEnded && Date() < end { usleep(1000) }
        if frontendFD >= 0 { close(frontendFD) }
    }

    public var hasEnded: Bool { lock.lock(); defer { lock.unlock() }; return ended != nil }

    public func waitForRings(_ n: Int, timeout: Double = testDeadline) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            lock.lock(); let c = setups.count; lock.unlock()
            if c >= n { return true }
            usleep(1000)
        }
        return false
    }

    /// Stops touching the rings and buffers (they are in memory it truncated).
    public func quiet() { lock.lock(); silent = true; devices = [:]; lock.unlock() }

    /// The device side of vring `index` (0: the front-end's RX — the device enqueues; 1: its TX —
    /// it dequeues); nil before the ring started or once `quiet`.
    public func device(_ index: Int) -> VirtqueueDevice? {
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

    /// Frames the front-end transmitted (device dequeue on vring 1), up to `count`, polling up to `timeout`.
    public func receive(_ count: Int, ring: Int = 1, timeout: Double = testDeadline) -> [[UInt8]] {
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
    public func send(_ frame: [UInt8], ring: Int = 0) -> Bool {
        guard let d = device(ring), let m = makeChain(pool, frame) else { return false }
        var mm = m
        let n = d.enqueueBurst(pool: pool, &mm, count: 1)
        pool.free(m)
        return n == 1 && d.counters.dropped == 0
    }

    /// Frames into the front-end's receive ring (vring 0), one mbuf each; how many it took.
    public func send(_ frames: [[UInt8]]) -> Int {
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
}

/// A test frame: dst, src, type, then a pattern seeded by `seed`.
public func testFrame(size: Int, seed: UInt8) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: size)
    let head: [UInt8] = [0x02, 0, 0, 0, 0, 0x0B, 0x02, 0, 0, 0, 0, 0x0A, 0x08, 0x00]
    for i in 0..<min(size, 14) { f[i] = head[i] }
    if size > 14 { for i in 14..<size { f[i] = UInt8(truncatingIfNeeded: i &* 7 &+ Int(seed)) } }
    return f
}

/// `frame` as an mbuf chain from `pool` (segments of the pool's data room).
public func makeChain(_ pool: MbufPool, _ frame: [UInt8]) -> Mbuf? {
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

/// The bytes of the mbuf chain `m`.
public func copyFrame(_ pool: MbufPool, _ m: Mbuf) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Int(m.packetLength))
    let n = out.withUnsafeMutableBytes { pool.copyOut(m, to: $0.baseAddress!, max: $0.count) }
    return Array(out[0..<n])
}

public func sameFrame(_ a: [UInt8]?, _ b: [UInt8]) -> Bool { a == b }

/// A short description of how two frames differ (never the whole frame).
public func frameDiff(_ a: [UInt8]?, _ b: [UInt8]) -> String {
    guard let a else { return "no frame (expected \(b.count) B)" }
    if a.count != b.count { return "length \(a.count), expected \(b.count)" }
    if let i = a.indices.first(where: { a[$0] != b[$0] }) { return "first difference at byte \(i): \(a[i]) vs \(b[i])" }
    return "equal"
}
