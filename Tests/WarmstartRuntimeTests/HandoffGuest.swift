import CWarmstartShim
import Foundation
import WarmstartMemory
import WarmstartPools
import WarmstartSpec
import WarmstartVhostUser
import WarmstartVirtio

/// The guest side: a split RX ring (vring 0) and TX ring (vring 1) in guest memory, a pool of TX
/// packets there, 256 RX buffers kept posted. Packets carry a sequence number at byte 14.
final class HandoffGuest: @unchecked Sendable {
    static let io: UInt64 = 0x1_0000_0000
    static let ringOffset = 4 << 20
    static let rxOffset = 5 << 20
    static let rxBuffer = 2048
    let region: MemoryRegion
    let pool: MbufPool
    let map: GuestMemoryMap
    let rx: DriverQueue
    let tx: DriverQueue
    let frontend: VhostUserFrontend
    let options: VirtqueueOptions
    let scratch = UnsafeMutablePointer<DriverBuffer>.allocate(capacity: 8)
    let completions = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: 512)
    private(set) var nextSeq = 0
    private(set) var received: [UInt32] = []
    let lock = NSLock()
    var receivedCount: Int { lock.lock(); defer { lock.unlock() }; return received.count }

    init(socket fd: Int32, packed: Bool = false) throws {
        options = VirtqueueOptions(features: packed ? [.version1, .ringPacked] : [.version1])
        let layout: VirtqueueLayout = packed ? .packed : .split
        region = try MemoryRegion.memfd(name: "guest", size: 8 << 20, pageSize: .small4K, ioAddress: Self.io)
        pool = try MbufPool.layOut(config: MbufPoolConfig(count: 1024, cacheSize: 0), region: region, offset: 0, poolID: 9)
        map = GuestMemoryMap(table: MemoryTable(regions: [region]))
        let r = Self.ringOffset
        rx = try DriverQueue(layout: layout, size: 256, host: region.base + r, guest: Self.io + UInt64(r), length: 64 << 10, options: options)
        tx = try DriverQueue(layout: layout, size: 256, host: region.base + r + (64 << 10), guest: Self.io + UInt64(r + (64 << 10)),
                             length: 64 << 10, options: options)
        frontend = VhostUserFrontend(channel: VhostUserChannel(fd: fd, readsReplies: true),
                                     options: VhostUserFrontendOptions(packed: packed, mergeableRxBuffers: false, extraFeatures: 0))
    }

    deinit { map.deallocate(); scratch.deallocate(); completions.deallocate(); stopping.deallocate() }

    func user(_ guest: UInt64) -> UInt64 { UInt64(UInt(bitPattern: region.base)) + (guest - Self.io) }
    func rxAddress(_ i: Int) -> UInt64 { Self.io + UInt64(Self.rxOffset + i * Self.rxBuffer) }

    /// The standard front-end sequence, once: features, memory table, both rings.
    func connect() throws {
        _ = try frontend.negotiate()
        try frontend.setMemoryTable([FrontendMemoryRegion(fd: region.fd.rawValue, guestAddress: Self.io,
                                                          userAddress: user(Self.io), size: UInt64(region.size))])
        for (i, q) in [(0, rx), (1, tx)] {
            try frontend.startRing(FrontendRing(index: i, size: 256, descriptorAddress: user(q.descAddress),
                                                driverAddress: user(q.driverAreaAddress), deviceAddress: user(q.deviceAreaAddress),
                                                // Packed rings start with both wrap counters at 1 (virtio 1.2 §2.8.1),
                                                // sent as QEMU does: bit 15 avail, bit 31 used.
                                                base: options.layout == .packed ? 0x8000_8000 : 0, kickFD: nil, callFD: nil))
        }
        for i in 0..<256 { rx.addRX(addr: rxAddress(i), len: UInt32(Self.rxBuffer), token: UInt64(i)) }
        rx.publish()
    }

    /// One round of the driver: reap TX, reap and re-post RX, send up to `window` packets in flight.
    func pump(total: Int, window: Int = 128) {
        reapTX()
        let r = rx.reap(completions, max: 512)
        if r > 0 {
            lock.lock()
            for i in 0..<r {
                let c = completions[i]
                let p = map.translate(rxAddress(Int(c.token)), 12 + 64)!
                received.append(p.loadUnaligned(fromByteOffset: 12 + 14, as: UInt32.self))
                rx.addRX(addr: rxAddress(Int(c.token)), len: UInt32(Self.rxBuffer), token: c.token)
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
    func reapTX() {
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
    var sentCount: Int { lock.withLock { nextSeq } }
    var isStopping: Bool { lock.withLock { stopping[0] } }

    var isAbandoned: Bool { lock.withLock { stopping[1] } }

    /// Drives traffic on a thread until `stopSending` and everything sent came back (its TX
    /// buffers too), or `abandon`. `seconds` only bounds a test that forgot both: on a loaded
    /// machine the traffic a test waits for can take minutes, never a fixed time.
    func run(seconds: Double = 600) -> Thread {
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
    func stopSending() {
        lock.withLock { stopping[0] = true }
    }

    /// Ends the traffic thread at once (tear-down of a test that failed half-way).
    func abandon() {
        lock.withLock { stopping[0] = true; stopping[1] = true }
    }
}
