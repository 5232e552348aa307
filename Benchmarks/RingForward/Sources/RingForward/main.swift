// Device-side cost of forwarding, on one thread, with no second CPU in the way: Warmstart's own
// driver (DriverQueue, the virtio-user side) plays the guest and posts 32 TX frames; the device
// (VirtqueueDevice, the vhost-user side) dequeues them, swaps MACs, enqueues them into the guest's
// RX ring and frees the mbufs; the guest reaps both rings and reposts. Prints the device's time per
// frame; its instruction count per frame comes from callgrind (stable on a noisy machine):
//
//   swift build -c release --product RingForward
//   valgrind --tool=callgrind --toggle-collect='*deviceStep*' .build/release/RingForward packed 64 20000
//   (Ir of the run / (20000 × 32) frames)
//
// Usage: RingForward [split|packed] [frame bytes] [iterations]
import Foundation
import WarmstartMemory
import WarmstartPools
import WarmstartSpec
import WarmstartVirtio
import WarmstartVirtioDriver

// Same-thread device-side cost: guest (DriverQueue) posts 32 TX frames; the device dequeues,
// swaps MACs, enqueues into the guest's RX ring, frees; the guest reaps both and reposts.
let args = CommandLine.arguments
let packed = args.count > 1 ? args[1] == "packed" : true
let size = args.count > 2 ? Int(args[2])! : 64
let iters = args.count > 3 ? Int(args[3])! : 200_000

let guestA: UInt64 = 0x1000_0000
let regionSize = 16 << 20
let regionA = try MemoryRegion.memfd(name: "A", size: regionSize, pageSize: .small4K, ioAddress: guestA, populate: true)
let regionB = try MemoryRegion.memfd(name: "B", size: regionSize, pageSize: .small4K, ioAddress: guestA + UInt64(regionSize), populate: true)
let table = MemoryTable(regions: [regionA, regionB])
let map = GuestMemoryMap(table: table)
let guestPool = try MbufPool.layOut(config: MbufPoolConfig(count: 2048), region: regionA, offset: 0, poolID: 1)
let hc = MbufPoolConfig(count: 4096)
let hostRegion = try MemoryRegion.memfd(name: "host", size: (MbufPoolConfig.bytesNeeded(hc) + 4095) & ~4095, pageSize: .small4K, populate: true)
let hostPool = try MbufPool.layOut(config: hc, region: hostRegion, offset: 0, poolID: 2)
let cache = MbufCache(pool: hostPool, size: 512)

var feats: VirtioFeatures = [.version1, .mrgRxbuf]
if packed { feats.insert(.ringPacked) }
let options = VirtqueueOptions(features: feats, burstSize: 32)
let qsize = 256
func makeQueue(_ off: Int) throws -> (DriverQueue, VirtqueueDevice) {
    let d = try DriverQueue(layout: packed ? .packed : .split, size: qsize, host: regionB.base + off,
                            guest: guestA + UInt64(regionSize) + UInt64(off), length: 256 << 10, options: options)
    if packed {
        let r = try PackedRing(size: qsize, memory: table, desc: d.descAddress, driverEvent: d.driverAreaAddress, deviceEvent: d.deviceAreaAddress)
        return (d, VirtqueueDevice(packed: r, memory: table, options: options))
    } else {
        let r = try SplitRing(size: qsize, memory: table, desc: d.descAddress, avail: d.driverAreaAddress, used: d.deviceAreaAddress)
        return (d, VirtqueueDevice(split: r, memory: table, options: options))
    }
}
let (txDrv, txDev) = try makeQueue(0)
let (rxDrv, rxDev) = try makeQueue(512 << 10)
let scratch = UnsafeMutablePointer<DriverBuffer>.allocate(capacity: 64)
let comps = UnsafeMutablePointer<DriverCompletion>.allocate(capacity: 1024)
let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)

// 32 TX frames in guest pool, reused.
var txm: [Mbuf] = []
for i in 0..<32 {
    let m = guestPool.alloc()!
    for k in 0..<size { m.data.storeBytes(of: UInt8(truncatingIfNeeded: k &+ i), toByteOffset: k, as: UInt8.self) }
    m.dataLength = UInt16(size); m.packetLength = UInt32(size)
    txm.append(m)
}
// RX buffers: 2 KiB each from region B at 2 MiB.
let rxBase = guestA + UInt64(regionSize) + UInt64(2 << 20)
for i in 0..<qsize { _ = rxDrv.addRX(addr: rxBase + UInt64(i * 2048), len: 2048, token: UInt64(i)) }
rxDrv.publish()

@inline(never) func deviceStep() -> Int {
    let n = txDev.dequeueBurst(pool: cache, into: out, maxCount: 32)
    for i in 0..<n {
        let p = out[i].data
        let a = p.load(as: UInt64.self), b = p.load(fromByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: p.load(fromByteOffset: 6, as: UInt64.self), as: UInt64.self) // rough swap
        p.storeBytes(of: a, toByteOffset: 6, as: UInt64.self)
        _ = b
    }
    var done = 0
    while done < n {
        let k = rxDev.enqueueBurst(pool: cache, out + done, count: n - done)
        if k == 0 { break }
        done += k
    }
    if done > 0 { _ = rxDev.needsCall(); cache.freeBulk(out, count: done) }
    if n > 0 { _ = txDev.needsCall() }
    for i in done..<n { cache.free(out[i]) }
    return n
}

var devNs: UInt64 = 0
var total = 0
let t0 = DispatchTime.now().uptimeNanoseconds
for _ in 0..<iters {
    for m in txm { _ = txDrv.addTX(m, pool: guestPool, memory: map, scratch: scratch, scratchCapacity: 64) }
    txDrv.publish()
    let a = DispatchTime.now().uptimeNanoseconds
    total += deviceStep()
    devNs += DispatchTime.now().uptimeNanoseconds - a
    _ = txDrv.reap(comps, max: 1024)
    let r = rxDrv.reap(comps, max: 1024)
    for i in 0..<r { _ = rxDrv.addRX(addr: rxBase + comps[i].token * 2048, len: 2048, token: comps[i].token) }
    rxDrv.publish()
}
let t1 = DispatchTime.now().uptimeNanoseconds
print(String(format: "%@ %d B: %d frames, device %.2f ns/frame, whole loop %.2f ns/frame, rx drops %d, tx drops %d",
             packed ? "packed" : "split", size, total, Double(devNs) / Double(total), Double(t1 - t0) / Double(total),
             Int(rxDev.counters.dropped), Int(txDev.counters.dropped)))
