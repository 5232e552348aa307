import WarmstartMemory
import WarmstartPools
import WarmstartSpec
import WarmstartVirtio
#if canImport(Glibc)
import Glibc
#endif

/// The device side of a virtqueue (what the vhost-user back-end runs) over guest memory taken from
/// the input: the guest — rings, descriptors, indirect tables, buffers — is entirely the fuzzer's.
///
/// Input: a 16-byte header, then guest memory.
///   0 ring size selector | 1 features | 2 burst | 3-4 last avail | 5-6 last used | 7 wrap bits |
///   8-15 operations (one byte each: low 2 bits the kind, the rest its argument)
/// Guest memory is two 32 KiB regions at guest 0x10000 and 0x18000 (adjacent in guest space, apart
/// in host memory, so a buffer can straddle them); the input fills region A then region B. The
/// rings sit at the start of region A: descriptors, then the avail ring / driver event area, then
/// the used ring / device event area — so the first bytes of memory are the descriptor table.
enum DeviceRingHarness {
    static let guestA: UInt64 = 0x10000
    static let regionSize = 0x8000
    static var guestB: UInt64 { guestA + UInt64(regionSize) }
    // Separate heap blocks: ASan's redzones catch any access past either region.
    static let hostA = UnsafeMutableRawPointer.allocate(byteCount: regionSize, alignment: 4096)
    static let hostB = UnsafeMutableRawPointer.allocate(byteCount: regionSize, alignment: 4096)
    static let table = MemoryTable(entries: [
        .init(guestAddress: guestA, userAddress: guestA, size: UInt64(regionSize), hostAddress: UInt(bitPattern: hostA)),
        .init(guestAddress: guestB, userAddress: guestB, size: UInt64(regionSize), hostAddress: UInt(bitPattern: hostB)),
    ])
    static let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
    static let packets = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
    /// Frame lengths an enqueue operation picks from (its argument's low 4 bits).
    static let lengths = [0, 1, 14, 60, 64, 100, 1500, 1514, 2048, 2100, 4000, 9000, 65_000, 65_600, 12, 30]

    static func run(_ data: UnsafePointer<UInt8>, _ n: Int, layout: VirtqueueLayout) {
        var input = FuzzInput(data, n)
        let sizeSelector = Int(input.u8())
        let featureBits = input.u8()
        let burst = 1 + Int(input.u8() % 64)
        let state = VirtqueuePosition(lastAvailIndex: input.u16(), availWrapCounter: true,
                                      lastUsedIndex: input.u16(), usedWrapCounter: true)
        let wraps = input.u8()
        let ops = input.bytes(8)

        var features: VirtioFeatures = []
        if featureBits & 1 != 0 { features.insert(.version1) }
        if featureBits & 2 != 0 { features.insert(.mrgRxbuf) }
        if featureBits & 4 != 0 { features.insert(.ringIndirectDesc) }
        if featureBits & 8 != 0 { features.insert(.ringEventIdx) }
        if featureBits & 16 != 0 { features.insert(.inOrder) }
        if layout == .packed { features.insert(.ringPacked) }
        let options = VirtqueueOptions(features: features, burstSize: burst)

        hostA.initializeMemory(as: UInt8.self, repeating: 0, count: regionSize)
        hostB.initializeMemory(as: UInt8.self, repeating: 0, count: regionSize)
        let memory = input.rest()
        memory.withUnsafeBytes { m in
            let a = min(m.count, regionSize)
            if a > 0 { hostA.copyMemory(from: m.baseAddress!, byteCount: a) }
            let b = min(m.count - a, regionSize)
            if b > 0 { hostB.copyMemory(from: m.baseAddress! + a, byteCount: b) }
        }

        let device: VirtqueueDevice
        let size: Int
        switch layout {
        case .split:
            size = 1 << (sizeSelector % 9)   // 1...256
            let avail = guestA + UInt64(16 * size)
            let used = (avail + UInt64(SplitVirtqueue.availRingBytes(size: size, eventIndex: true)) + 3) & ~3
            guard let ring = try? SplitRing(size: size, memory: table, desc: guestA, avail: avail, used: used) else {
                fatalError("split ring of \(size) does not fit the fixture")
            }
            device = VirtqueueDevice(split: ring, memory: table, options: options)
        case .packed:
            size = 1 + sizeSelector   // 1...256, any size (packed rings need no power of two)
            let driverEvent = guestA + UInt64(16 * size)
            guard let ring = try? PackedRing(size: size, memory: table, desc: guestA, driverEvent: driverEvent,
                                             deviceEvent: driverEvent + 4) else {
                fatalError("packed ring of \(size) does not fit the fixture")
            }
            device = VirtqueueDevice(packed: ring, memory: table, options: options)
        }
        // Positions go through the checked entry point, as a handed-over or restarted ring does.
        var start = state
        start.availWrapCounter = wraps & 1 != 0
        start.usedWrapCounter = wraps & 2 != 0
        if layout == .packed, wraps & 4 == 0 {
            start.lastAvailIndex %= UInt16(size)
            start.lastUsedIndex %= UInt16(size)
        }
        _ = try? device.reposition(to: start)

        for op in ops {
            let arg = Int(op >> 2)
            switch op & 3 {
            case 0:
                // Guest TX: take what the guest made available, then free it.
                let got = device.dequeueBurst(pool: FuzzPool.pool, into: out, maxCount: 1 + arg % 64)
                require(got >= 0 && got <= burst, "dequeueBurst returned \(got) for a burst of \(burst)")
                for i in 0..<got { FuzzPool.pool.free(out[i]) }
            case 1:
                // Guest RX: copy packets into the guest's buffers; the caller keeps every mbuf.
                let count = 1 + (arg >> 4)
                var made = 0
                for k in 0..<count {
                    guard let p = FuzzPool.packet(length: lengths[(arg + k) & 15], seed: UInt8(truncatingIfNeeded: k)) else { break }
                    packets[made] = p
                    made += 1
                }
                let handled = device.enqueueBurst(pool: FuzzPool.pool, packets, count: made)
                require(handled >= 0 && handled <= made, "enqueueBurst handled \(handled) of \(made)")
                for i in 0..<made { FuzzPool.pool.free(packets[i]) }
            case 2:
                _ = device.needsCall()
                device.setNotifications(enabled: arg & 1 != 0)
            default:
                // The guest moves on between bursts: more available buffers (split: avail idx;
                // packed: flip a descriptor's avail/used bits for the current wrap).
                switch layout {
                case .split:
                    let p = hostA + 16 * size + 2
                    let idx = p.loadUnaligned(as: UInt16.self)
                    p.storeBytes(of: idx &+ UInt16(arg), as: UInt16.self)
                case .packed:
                    let slot = arg % size
                    let f = hostA.load(fromByteOffset: 16 * slot + 14, as: UInt16.self)
                    hostA.storeBytes(of: f ^ 0x8080, toByteOffset: 16 * slot + 14, as: UInt16.self)
                }
            }
        }
        _ = device.counters
        _ = device.state
        FuzzPool.verifyAllFree("\(layout) device ring")
    }
}
