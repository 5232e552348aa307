import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartSpec

/// Guest memory for the mock driver: two memfd regions at adjacent guest addresses (so a buffer
/// can span them), the rings and RX buffers in region B, the driver's TX mbuf pool in region A;
/// the device's mbuf pool in a separate host-only region.
final class Fixture {
    static let guestA: UInt64 = 0x1000_0000
    static let regionSize = 4 << 20
    static var guestB: UInt64 { guestA + UInt64(regionSize) }
    static let ringOffset = 512 << 10  // rings in region B from here
    static let rxOffset = 1 << 20       // RX buffers in region B from here
    static let tableOffset = 3 << 20    // indirect tables in region B from here

    let regionA: MemoryRegion
    let regionB: MemoryRegion
    let hostRegion: MemoryRegion
    let table: MemoryTable
    let map: GuestMemoryMap
    let guestPool: MbufPool
    let hostPool: MbufPool
    let driver: DriverQueue
    let device: VirtqueueDevice
    let options: VirtqueueOptions
    let scratch = UnsafeMutablePointer<DriverBuffer>.allocate(capacity: 64)
    let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 256)
    let completions = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: 4096)

    init(layout: VirtqueueLayout, size: Int = 256, features: VirtioFeatures = [.version1, .ringIndirectDesc],
         burst: Int = 32, poolCount: Int = 1024, offloads: Bool = true) throws {
        var f = features
        if layout == .packed { f.insert(.ringPacked) }
        // The guest negotiated the transmit offloads (as QEMU's does with the default offer), so
        // tests may send checksum and GSO headers; `offloads: false` tests the plain case.
        if offloads { f.formUnion(VirtioFeatures(rawValue: 1 | 0xF << 11 | 1 << 56)) }  // CSUM, HOST_TSO4/6/ECN/UFO, HOST_USO
        options = VirtqueueOptions(features: f, burstSize: burst)
        regionA = try MemoryRegion.memfd(name: "guestA", size: Self.regionSize, pageSize: .small4K, ioAddress: Self.guestA)
        regionB = try MemoryRegion.memfd(name: "guestB", size: Self.regionSize, pageSize: .small4K, ioAddress: Self.guestB)
        table = MemoryTable(regions: [regionA, regionB])
        map = GuestMemoryMap(table: table)
        guestPool = try MbufPool.layOut(config: MbufPoolConfig(count: 1024), region: regionA, offset: 0, poolID: 1)
        let hc = MbufPoolConfig(count: poolCount)
        let hostBytes = (MbufPoolConfig.bytesNeeded(hc) + 4095) & ~4095
        hostRegion = try MemoryRegion.memfd(name: "host", size: hostBytes, pageSize: .small4K)
        hostPool = try MbufPool.layOut(config: hc, region: hostRegion, offset: 0, poolID: 2)
        driver = try DriverQueue(layout: layout, size: size, host: regionB.base + Self.ringOffset,
                                 guest: Self.guestB + UInt64(Self.ringOffset), length: 512 << 10, options: options)
        switch layout {
        case .split:
            let ring = try SplitRing(size: size, memory: table, desc: driver.descAddress,
                                     avail: driver.driverAreaAddress, used: driver.deviceAreaAddress)
            device = VirtqueueDevice(split: ring, memory: table, options: options)
        case .packed:
            let ring = try PackedRing(size: size, memory: table, desc: driver.descAddress,
                                      driverEvent: driver.driverAreaAddress, deviceEvent: driver.deviceAreaAddress)
            device = VirtqueueDevice(packed: ring, memory: table, options: options)
        }
    }

    deinit {
        map.deallocate()
        scratch.deallocate()
        out.deallocate()
        completions.deallocate()
    }

    func host(_ guest: UInt64, _ length: Int = 1) -> UnsafeMutableRawPointer {
        table.translate(guest: guest, length: UInt64(length))!
    }

    /// A packet of `length` bytes in the driver's pool (chained at 2048 B), byte i = seed &+ i.
    func makeGuestPacket(length: Int, seed: UInt8, header: VirtioNetHeader? = nil) -> Mbuf {
        makePacket(pool: guestPool, length: length, seed: seed, header: header)
    }

    func makeHostPacket(length: Int, seed: UInt8, header: VirtioNetHeader? = nil) -> Mbuf {
        makePacket(pool: hostPool, length: length, seed: seed, header: header)
    }

    func makePacket(pool: MbufPool, length: Int, seed: UInt8, header: VirtioNetHeader?) -> Mbuf {
        let head = pool.alloc()!
        var seg = head
        var left = length
        var i = 0
        var segs: UInt16 = 1
        while true {
            let n = min(left, seg.tailroom)
            for k in 0..<n { seg.data.storeBytes(of: seed &+ UInt8(truncatingIfNeeded: i + k), toByteOffset: k, as: UInt8.self) }
            seg.dataLength = UInt16(n)
            i += n
            left -= n
            if left == 0 { break }
            let next = pool.alloc()!
            seg.nextIndex = next.index
            seg = next
            segs += 1
        }
        head.packetLength = UInt32(length)
        head.segmentCount = segs
        if let header {
            head.vnetHeader = header
            head.offload = .vnetHeaderValid
        }
        return head
    }

    /// The bytes of an mbuf chain.
    func bytes(of m: Mbuf, pool: MbufPool) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: Int(m.packetLength))
        let n = r.withUnsafeMutableBytes { pool.copyOut(m, to: $0.baseAddress!, max: $0.count) }
        XCTAssertEqual(n, Int(m.packetLength))
        return r
    }

    static func expected(length: Int, seed: UInt8) -> [UInt8] {
        (0..<length).map { seed &+ UInt8(truncatingIfNeeded: $0) }
    }

    /// Posts a TX packet through the driver (header in headroom).
    @discardableResult
    func postTX(length: Int, seed: UInt8, header: VirtioNetHeader? = nil) -> UInt16? {
        let m = makeGuestPacket(length: length, seed: seed, header: header)
        return driver.addTX(m, pool: guestPool, memory: map, scratch: scratch, scratchCapacity: 64)
    }

    /// Reaps completions; TX tokens are guest-pool mbuf indices, freed here.
    func reapTX() -> [DriverCompletion] {
        let n = driver.reap(completions, max: 4096)
        var r: [DriverCompletion] = []
        for i in 0..<n {
            let c = completions[i]
            r.append(c)
            if c.token < 1 << 32, let m = guestPool.mbuf(at: UInt32(c.token)) { guestPool.free(m) }
        }
        return r
    }

    /// Guest address of RX buffer `i` (`size` bytes each, from rxOffset in region B).
    func rxAddress(_ i: Int, size: Int) -> UInt64 { Self.guestB + UInt64(Self.rxOffset + i * size) }

    func dequeue(max: Int = 32) -> [Mbuf] {
        let n = device.dequeueBurst(pool: hostPool, into: out, maxCount: max)
        return (0..<n).map { out[$0] }
    }
}
