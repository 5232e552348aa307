import CWarmstartShim
import Foundation
import XCTest
import WarmstartVhostUser
import WarmstartVirtio
import WarmstartSpec

/// An in-process guest for the runtime tests: Warmstart's own `VhostUserFrontend` over a unix
/// socket to the runtime's vhost-user port, with `DriverQueue`s in a memfd playing guest memory
/// (guest address = user address, as DPDK's virtio-user does).
final class TestGuest {
    static let memorySize = 4 << 20
    static let ringSize = 256
    static let bufferSize = 2048
    let memfd: Int32
    let base: UnsafeMutableRawPointer
    var user: UInt64 { UInt64(UInt(bitPattern: base)) }
    let frontend: VhostUserFrontend
    let packed: Bool
    var rx: DriverQueue!   // vring 0
    var tx: DriverQueue!   // vring 1
    let kicks: [Int32]
    let calls: [Int32]
    var txNext = 0
    let completions = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: TestGuest.ringSize)

    convenience init(socketPath: String, packed: Bool = false, mergeable: Bool = true) throws {
        try self.init(fd: try Self.connect(socketPath), packed: packed, mergeable: mergeable)
    }

    /// Over an already connected socket (the test listened and the back-end connected).
    init(fd: Int32, packed: Bool = false, mergeable: Bool = true) throws {
        memfd = ws_memfd_create("test-guest", WS_MFD_CLOEXEC)
        precondition(memfd >= 0 && ftruncate(memfd, off_t(Self.memorySize)) == 0)
        base = mmap(nil, Self.memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)!
        self.packed = packed
        kicks = [ws_eventfd(0, WS_EFD_CLOEXEC), ws_eventfd(0, WS_EFD_CLOEXEC)]
        calls = [ws_eventfd(0, WS_EFD_CLOEXEC), ws_eventfd(0, WS_EFD_CLOEXEC)]
        frontend = VhostUserFrontend(channel: VhostUserChannel(fd: fd, readsReplies: true),
                                     options: VhostUserFrontendOptions(packed: packed, mergeableRxBuffers: mergeable))
    }

    deinit {
        munmap(base, Self.memorySize)
        close(memfd)
        for f in kicks + calls { close(f) }
        completions.deallocate()
    }

    static func connect(_ path: String) throws -> Int32 {
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

    var region: FrontendMemoryRegion {
        FrontendMemoryRegion(fd: memfd, guestAddress: user, userAddress: user, size: UInt64(Self.memorySize))
    }

    /// Negotiates, sends the memory table, lays out and starts both rings (from `bases`).
    /// A fresh ring's base: index 0, and for packed rings both wrap counters 1 (virtio 1.2 §2.8.1),
    /// as DPDK's virtio-user sends it.
    var freshBase: UInt32 { packed ? 0x8000 : 0 }

    func bringUp(bases: (UInt32, UInt32)? = nil, fresh: Bool = true) throws {
        let n = try frontend.negotiate()
        try frontend.setMemoryTable([region])
        if fresh { try layOutRings(features: n.features) }
        try startRings(bases: bases ?? (freshBase, freshBase))
    }

    func layOutRings(features: UInt64) throws {
        let opts = VirtqueueOptions(features: VirtioFeatures(rawValue: features))
        let ringBytes = DriverQueue.ringBytes(layout: packed ? .packed : .split, size: Self.ringSize)
        rx = try DriverQueue(layout: packed ? .packed : .split, size: Self.ringSize, host: base, guest: user,
                             length: ringBytes, options: opts)
        tx = try DriverQueue(layout: packed ? .packed : .split, size: Self.ringSize, host: base + 65536, guest: user + 65536,
                             length: ringBytes, options: opts)
        // Every RX buffer posted up front: buffer i at 1 MiB + i × 2 KiB.
        for i in 0..<Self.ringSize { rx.addRX(addr: rxBuffer(i), len: UInt32(Self.bufferSize), token: UInt64(i)) }
        rx.publish()
    }

    func startRings(bases: (UInt32, UInt32)) throws {
        for (i, q) in [(0, rx!), (1, tx!)] {
            try frontend.startRing(FrontendRing(index: i, size: Self.ringSize, descriptorAddress: q.descAddress,
                                                driverAddress: q.driverAreaAddress, deviceAddress: q.deviceAreaAddress,
                                                base: i == 0 ? bases.0 : bases.1, kickFD: dup(kicks[i]), callFD: dup(calls[i])))
        }
    }

    func rxBuffer(_ i: Int) -> UInt64 { user + UInt64(1 << 20) + UInt64(i * Self.bufferSize) }
    func txBuffer(_ i: Int) -> UInt64 { user + UInt64(2 << 20) + UInt64(i * Self.bufferSize) }
    func host(_ guest: UInt64) -> UnsafeMutableRawPointer { base + Int(guest - user) }

    /// Transmits frames (a zero 12-byte virtio-net header in front of each, or `header`). Reclaims
    /// used TX buffers first. Returns how many were queued.
    @discardableResult
    func send(_ frames: [[UInt8]], header: [UInt8] = []) -> Int {
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
    func receive() -> [[UInt8]] {
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
    func receive(count: Int, timeout: Double = testDeadline) -> [[UInt8]] {
        var all: [[UInt8]] = []
        let deadline = Date().addingTimeInterval(timeout)
        while all.count < count && Date() < deadline {
            let got = receive()
            if got.isEmpty { usleep(1000) } else { all += got }
        }
        return all
    }
}

/// A frame with a recognisable payload: `tag` and the sequence number in every byte pattern.
func testFrame(tag: UInt8, seq: Int, length: Int = 128) -> [UInt8] {
    var f = [UInt8](repeating: 0, count: length)
    for i in 0..<6 { f[i] = 0x02; f[6 + i] = tag }
    f[12] = 0x08; f[13] = 0x00
    for i in 14..<length { f[i] = UInt8(truncatingIfNeeded: seq &* 31 &+ i &+ Int(tag)) }
    return f
}
