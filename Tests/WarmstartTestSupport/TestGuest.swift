import CWarmstartShim
import Foundation
import XCTest
import SystemPackage
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartSpec

/// The one in-process guest of the tests: Warmstart's own `VhostUserFrontend` over a unix socket
/// to a vhost-user back-end, with `DriverQueue`s (vring 0 RX, vring 1 TX) in a memfd playing
/// guest memory. The memfd is not sealed: a test may truncate it behind the back-end (a guest that
/// shrinks its memory).
///
/// Two ways to drive it:
/// - frames (`bringUp`, `send`, `receive`): guest address = user address, as DPDK's virtio-user
///   does; rings laid out with the negotiated features, kick and call eventfds per ring;
/// - sequenced traffic (`init(socket:)`, `connect`, `run`/`pump`): guest addresses at
///   `handoffGuestAddress` (not the user address: the back-end must translate), a pool of TX
///   packets carrying a sequence number at byte 14, 256 RX buffers kept posted, every packet that
///   came back recorded in `received`.
///
/// Guest memory (8 MiB): the TX packet pool from 0, the RX ring at 4 MiB and the TX ring 64 KiB
/// after it, RX buffer i at 5 MiB + i × 2 KiB, TX frame i at 6 MiB + i × 2 KiB.
public final class TestGuest: @unchecked Sendable {
    public static let memorySize = 8 << 20
    public static let ringSize = 256
    public static let bufferSize = 2048
    /// The guest address of the memory in the sequenced-traffic mode.
    public static let handoffGuestAddress: UInt64 = 0x1_0000_0000
    static let ringOffset = 4 << 20
    static let rxOffset = 5 << 20
    static let txOffset = 6 << 20

    /// The guest memory; its `ioAddress` is the guest address of its first byte.
    public let memory: MemoryRegion
    public var memfd: Int32 { memory.fd.rawValue }
    public var base: UnsafeMutableRawPointer { memory.base }
    /// The user (this process's) address of the guest memory.
    public var user: UInt64 { UInt64(UInt(bitPattern: memory.base)) }
    /// The guest address of the memory's first byte.
    public var guestBase: UInt64 { memory.ioAddress }
    public let frontend: VhostUserFrontend
    public let packed: Bool
    public private(set) var rx: DriverQueue!   // vring 0
    public private(set) var tx: DriverQueue!   // vring 1
    public private(set) var options: VirtqueueOptions
    public let kicks: [Int32]
    public let calls: [Int32]
    public let pool: MbufPool
    public let map: GuestMemoryMap
    var txNext = 0
    let scratch = UnsafeMutablePointer<DriverBuffer>.allocate(capacity: 8)
    let completions = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: 512)

    public convenience init(socketPath: String, packed: Bool = false, mergeable: Bool = true) throws {
        try self.init(fd: try Self.connect(socketPath), packed: packed, mergeable: mergeable)
    }

    /// Over an already connected socket (the test listened and the back-end connected), for frames.
    public convenience init(fd: Int32, packed: Bool = false, mergeable: Bool = true) throws {
        try self.init(fd: fd, packed: packed, frontendOptions: VhostUserFrontendOptions(packed: packed, mergeableRxBuffers: mergeable),
                      guestAddress: nil)
    }

    /// For sequenced traffic (the handoff tests): no mergeable RX buffers, no extra features, rings
    /// laid out now with VERSION_1 (and RING_PACKED) only.
    public convenience init(socket fd: Int32, packed: Bool = false) throws {
        try self.init(fd: fd, packed: packed,
                      frontendOptions: VhostUserFrontendOptions(packed: packed, mergeableRxBuffers: false, extraFeatures: 0),
                      guestAddress: Self.handoffGuestAddress)
        try layOutRings(options: VirtqueueOptions(features: packed ? [.version1, .ringPacked] : [.version1]), postRX: false)
    }

    /// `guestAddress` nil: guest address = user address.
    init(fd: Int32, packed: Bool, frontendOptions: VhostUserFrontendOptions, guestAddress: UInt64?) throws {
        // The name tests look for in /proc/self/fd ("memfd:warmstart:guest").
        let raw = ws_memfd_create("warmstart:guest", WS_MFD_CLOEXEC)
        precondition(raw >= 0 && ftruncate(raw, off_t(Self.memorySize)) == 0)
        memory = try MemoryRegion(name: "guest", fd: FileDescriptor(rawValue: raw), fileOffset: 0, size: Self.memorySize,
                                  pageSize: .small4K, backing: .memfd, ownsFD: true)
        memory.ioAddress = guestAddress ?? UInt64(UInt(bitPattern: memory.base))
        self.packed = packed
        options = VirtqueueOptions(features: packed ? [.version1, .ringPacked] : [.version1])
        kicks = [ws_eventfd(0, WS_EFD_CLOEXEC), ws_eventfd(0, WS_EFD_CLOEXEC)]
        calls = [ws_eventfd(0, WS_EFD_CLOEXEC), ws_eventfd(0, WS_EFD_CLOEXEC)]
        pool = try MbufPool.layOut(config: MbufPoolConfig(count: 1024, cacheSize: 0), region: memory, offset: 0, poolID: 9)
        map = GuestMemoryMap(table: MemoryTable(regions: [memory]))
        frontend = VhostUserFrontend(channel: VhostUserChannel(fd: fd, readsReplies: true), options: frontendOptions)
    }

    deinit {
        for f in kicks + calls { close(f) }
        map.deallocate()
        scratch.deallocate()
        completions.deallocate()
        stopping.deallocate()
    }

    public static func connect(_ path: String) throws -> Int32 {
        let deadline = Date().addingTimeInterval(testDeadline)
        while true {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc == 0 { return fd }
            close(fd)
            if Date() > deadline { throw NSError(domain: "TestGuest", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "connect \(path)"]) }
            usleep(10_000)
        }
    }

    /// The memory-table entry for the guest memory.
    public var region: FrontendMemoryRegion {
        FrontendMemoryRegion(fd: memfd, guestAddress: guestBase, userAddress: user, size: UInt64(Self.memorySize))
    }

    /// The user address of guest address `guest`.
    public func user(_ guest: UInt64) -> UInt64 { user + (guest - guestBase) }
    public func host(_ guest: UInt64) -> UnsafeMutableRawPointer { base + Int(guest - guestBase) }
    public func rxBuffer(_ i: Int) -> UInt64 { guestBase + UInt64(Self.rxOffset + i * Self.bufferSize) }
    public func txBuffer(_ i: Int) -> UInt64 { guestBase + UInt64(Self.txOffset + i * Self.bufferSize) }
    public func rxAddress(_ i: Int) -> UInt64 { rxBuffer(i) }

    // MARK: frames

    /// A fresh ring's base: index 0, and for packed rings both wrap counters 1 (virtio 1.2 §2.8.1),
    /// as DPDK's virtio-user sends it.
    public var freshBase: UInt32 { packed ? 0x8000 : 0 }

    /// Negotiates, sends the memory table, lays out and starts both rings (from `bases`).
    public func bringUp(bases: (UInt32, UInt32)? = nil, fresh: Bool = true) throws {
        let n = try frontend.negotiate()
        try frontend.setMemoryTable([region])
        if fresh { try layOutRings(features: n.features) }
        try startRings(bases: bases ?? (freshBase, freshBase))
    }

    public func layOutRings(features: UInt64) throws {
        try layOutRings(options: VirtqueueOptions(features: VirtioFeatures(rawValue: features)), postRX: true)
    }

    /// Both rings at their place in guest memory; with `postRX` every RX buffer posted up front.
    func layOutRings(options opts: VirtqueueOptions, postRX: Bool) throws {
        options = opts
        let layout: VirtqueueLayout = packed ? .packed : .split
        let ringBytes = DriverQueue.ringBytes(layout: layout, size: Self.ringSize)
        let r = Self.ringOffset
        rx = try DriverQueue(layout: layout, size: Self.ringSize, host: base + r, guest: guestBase + UInt64(r),
                             length: ringBytes, options: opts)
        tx = try DriverQueue(layout: layout, size: Self.ringSize, host: base + r + 65536, guest: guestBase + UInt64(r + 65536),
                             length: ringBytes, options: opts)
        if postRX { postAllRX() }
    }

    func postAllRX() {
        for i in 0..<Self.ringSize { rx.addRX(addr: rxBuffer(i), len: UInt32(Self.bufferSize), token: UInt64(i)) }
        rx.publish()
    }

    public func startRings(bases: (UInt32, UInt32)) throws {
        for (i, q) in [(0, rx!), (1, tx!)] {
            try frontend.startRing(FrontendRing(index: i, size: Self.ringSize, descriptorAddress: user(q.descAddress),
                                                driverAddress: user(q.driverAreaAddress), deviceAddress: user(q.deviceAreaAddress),
                                                base: i == 0 ? bases.0 : bases.1, kickFD: dup(kicks[i]), callFD: dup(calls[i])))
        }
    }

    /// Transmits frames (a zero 12-byte virtio-net header in front of each, or `header`). Reclaims
    /// used TX buffers first. Returns how many were queued.
    @discardableResult
    public func send(_ frames: [[UInt8]], header: [UInt8] = []) -> Int {
        _ = tx.reap(completions, max: Self.ringSize)
        var sent = 0
        for f in frames {
            let slot = txNext % Self.ringSize
            let addr = txBuffer(slot)
            let p = host(addr)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: 12)
            for (k, byte) in header.prefix(12).enumerated() { p.storeBytes(of: byte, toByteOffset: k, as: UInt8.self) }
            f.withUnsafeBytes { (p + 12).copyMemory(from: $0.baseAddress!, byteCount: f.count) }
            var b = DriverBuffer(addr: addr, len: UInt32(12 + f.count), writable: false)
            guard tx.add(&b, count: 1, token: UInt64(slot)) != nil else { break }
            txNext += 1
            sent += 1
        }
        tx.publish()
        return sent
    }

    /// Frames the device wrote into RX buffers (header stripped); reposts the buffers.
    public func receive() -> [[UInt8]] {
        let n = rx.reap(completions, max: Self.ringSize)
        var out: [[UInt8]] = []
        for c in UnsafeBufferPointer(start: completions, count: n) {
            let p = host(rxBuffer(Int(c.token)))
            out.append(Array(UnsafeRawBufferPointer(start: p + 12, count: Int(c.length) - 12)))
            rx.addRX(addr: rxBuffer(Int(c.token)), len: UInt32(Self.bufferSize), token: c.token)
        }
        if n > 0 { rx.publish() }
        return out
    }

    /// Receives until `count` frames arrived (at once) or the timeout.
    public func receive(count: Int, timeout: Double = testDeadline) -> [[UInt8]] {
        var all: [[UInt8]] = []
        let deadline = Date().addingTimeInterval(timeout)
        while all.count < count && Date() < deadline {
            let got = receive()
            if got.isEmpty { usleep(1000) } else { all += got }
        }
        return all
    }

    // MARK: sequenced traffic

    private(set) var nextSeq = 0
    public private(set) var received: [UInt32] = []
    public let lock = NSLock()
    public var receivedCount: Int { lock.lock(); defer { lock.unlock() }; return received.count }

    /// The standard front-end sequence, once: features, memory table, both rings (no kick or call
    /// eventfds: the back-end polls), every RX buffer posted.
    public func connect() throws {
        _ = try frontend.negotiate()
        try frontend.setMemoryTable([region])
        for (i, q) in [(0, rx!), (1, tx!)] {
            try frontend.startRing(FrontendRing(index: i, size: Self.ringSize, descriptorAddress: user(q.descAddress),
                                                driverAddress: user(q.driverAreaAddress), deviceAddress: user(q.deviceAreaAddress),
                                                // Packed rings start with both wrap counters at 1 (virtio 1.2 §2.8.1),
                                                // sent as QEMU does: bit 15 avail, bit 31 used.
                                                base: options.layout == .packed ? 0x8000_8000 : 0, kickFD: nil, callFD: nil))
        }
        postAllRX()
    }

    /// One round of the driver: reap TX, reap and re-post RX, send up to `window` packets in flight.
    public func pump(total: Int, window: Int = 128) {
        reapTX()
        let r = rx.reap(completions, max: 512)
        if r > 0 {
            lock.lock()
            for i in 0..<r {
                let c = completions[i]
                let p = map.translate(rxAddress(Int(c.token)), 12 + 64)!
                received.append(p.loadUnaligned(fromByteOffset: 12 + 14, as: UInt32.self))
                rx.addRX(addr: rxAddress(Int(c.token)), len: UInt32(Self.bufferSize), token: c.token)
            }
            lock.unlock()
            rx.publish()
        }
        var posted = 0
        while nextSeq < total && nextSeq - receivedCount < window, let m = pool.alloc() {
            // (nextSeq is written by the traffic thread only; stopSending reads it under the lock)
            let d = m.data
            for k in 0..<6 { d.storeBytes(of: 0x02, toByteOffset: k, as: UInt8.self); d.storeBytes(of: 0x04, toByteOffset: 6 + k, as: UInt8.self) }
            d.storeBytes(of: UInt16(0xB588), toByteOffset: 12, as: UInt16.self)
            d.storeBytes(of: UInt32(nextSeq), toByteOffset: 14, as: UInt32.self)
            for k in 18..<64 { d.storeBytes(of: UInt8(truncatingIfNeeded: k), toByteOffset: k, as: UInt8.self) }
            m.dataLength = 64
            m.packetLength = 64
            guard tx.addTX(m, pool: pool, memory: map, scratch: scratch, scratchCapacity: 8) != nil else { pool.free(m); break }
            lock.withLock { nextSeq += 1 }
            posted += 1
        }
        if posted > 0 { tx.publish() }
    }

    /// Takes the TX buffers the device has returned back into the pool.
    public func reapTX() {
        let n = tx.reap(completions, max: 512)
        for i in 0..<n { if let m = pool.mbuf(at: UInt32(completions[i].token)) { pool.free(m) } }
    }

    /// [stop sending, abandon], under `lock`.
    private let stopping: UnsafeMutablePointer<Bool> = {
        let p = UnsafeMutablePointer<Bool>.allocate(capacity: 2)
        p.initialize(repeating: false, count: 2)
        return p
    }()
    /// Packets sent so far (stable once `stopSending` was called and the traffic thread ended).
    public var sentCount: Int { lock.withLock { nextSeq } }
    public var isStopping: Bool { lock.withLock { stopping[0] } }

    public var isAbandoned: Bool { lock.withLock { stopping[1] } }

    /// Drives traffic on a thread until `stopSending` and everything sent came back (its TX
    /// buffers too), or `abandon`. `seconds` only bounds a test that forgot both: on a loaded
    /// machine the traffic a test waits for can take minutes, never a fixed time.
    public func run(seconds: Double = 600) -> Thread {
        stopping[0] = false
        stopping[1] = false
        let t = Thread { [self] in
            let end = Date().addingTimeInterval(seconds)
            while Date() < end && !isAbandoned {
                let stop = isStopping
                if stop && receivedCount >= sentCount { break }
                pump(total: stop ? 0 : Int.max)
            }
            // The device returns a TX buffer before the packet comes back on RX: every one sent
            // is in the used ring by now, and the last round may have reaped TX before it was.
            reapTX()
        }
        t.start()
        return t
    }

    /// Sends no new packet from now on; what is in flight still comes back.
    public func stopSending() {
        lock.withLock { stopping[0] = true }
    }

    /// Ends the traffic thread at once (tear-down of a test that failed half-way).
    public func abandon() {
        lock.withLock { stopping[0] = true; stopping[1] = true }
    }
}

/// A frame with a recognisable payload: `tag` and the sequence number in every byte pattern.
public func testFrame(tag: UInt8, seq: Int, length: Int = 128) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: length)
    for i in 0..<6 { f[i] = 0x02; f[6 + i] = tag }
    f[12] = 0x08; f[13] = 0x00
    for i in 14..<length { f[i] = UInt8(truncatingIfNeeded: seq &* 31 &+ i &+ Int(tag)) }
    return f
}
