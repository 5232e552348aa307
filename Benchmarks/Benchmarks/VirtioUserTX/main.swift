// Instructions per packet of Warmstart's virtio-user generator and transmit path, with no peer
// process: the generator `warmstart bench` runs (Generator.round) sends into real rings laid out
// as VirtioUserPort lays them out, and a device stand-in in this process marks every buffer used
// between rounds. Every round is then a full burst, so an instruction count of `round` (callgrind
// --toggle-collect) divided by the frames sent is the per-packet cost, free of the idle polling a
// busy or descheduled back-end causes. scripts/callgrind-virtio-user.sh runs it.
//
//   VirtioUserTX [--layout split|packed] [--size BYTES] [--rounds N] [--queue-size N] [--burst N]
import CWarmstartShim
import Glibc
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVirtio
import WarmstartDatapath
@_spi(Benchmarks) import WarmstartRuntime

/// The device side of the transmit ring, reduced to what a polling back-end must do for the
/// driver: ask for no kicks, and return every available chain as used, in order.
struct InstantDevice {
    let q: DriverQueue
    var next = 0          // split: last avail idx seen; packed: next slot
    var wrap = true       // packed: the device's wrap counter
    init(_ q: DriverQueue) {
        self.q = q
        if let p = q.packed { PackedRing.storeEvent(p.deviceEvent, offWrap: 0, flags: PackedRing.eventFlagsDisable) }
        if let s = q.split { s.usedFlags = SplitRing.usedNoNotify }
    }
    mutating func complete() -> Int {
        var n = 0
        if let s = q.split {
            let avail = s.loadAvailIndex()
            var i = UInt16(truncatingIfNeeded: next)
            while i != avail {
                s.setUsedElement(i, id: UInt32(s.availEntry(i)), len: 0)
                i &+= 1
                n += 1
            }
            s.storeUsedIndex(i)
            next = Int(i)
        } else if let p = q.packed {
            while true {
                let f = p.loadFlags(next)
                guard PackedRing.isAvailable(f, wrap: wrap) else { break }
                let first = next, id = p.descriptor(next, flags: f).id
                var flags = f
                while true {   // skip the rest of the chain
                    next += 1
                    if next == p.size { next = 0; wrap.toggle() }
                    if flags & VirtqDescriptorFlags.next == 0 { break }
                    flags = p.loadFlags(next)
                }
                p.setUsedBody(first, id: id, len: 0)
                p.storeFlags(first, PackedRing.usedFlags(wrap: first < next ? wrap : !wrap))
                n += 1
            }
        }
        return n
    }
}

func run() throws {
    var options = BenchOptions()
    options.mode = .oneway
    options.backend = .dpdk
    var rounds = 20_000
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        guard let v = args.popFirst() else { fatalError("\(a) needs a value") }
        switch a {
        case "--layout": options.packed = v == "packed"
        case "--size": options.size = Int(v)!
        case "--rounds": rounds = Int(v)!
        case "--queue-size": options.queueSize = Int(v)!
        case "--burst": options.burst = Int(v)!
        default: fatalError("unknown option \(a)")
        }
    }

    // Memory as `warmstart bench` lays it out (4 KiB pages: page size changes no instruction count).
    let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfig(count: options.mbufs, cacheSize: 256)),
                                         hugepages: .off)
    let arena = RingArena(region: live.generalRegion!)
    // What DPDK's vhost back-end and our front-end agree on (VERSION_1, MRG_RXBUF, EVENT_IDX, INDIRECT_DESC).
    var features: VirtioFeatures = [.version1, .mergeableRxBuffers, .eventIndex, .indirectDescriptors]
    if options.packed { features.insert(.ringPacked) }
    let layout: VirtqueueLayout = options.packed ? .packed : .split
    let bytes = DriverQueue.ringBytes(layout: layout, size: options.queueSize)
    func ring() throws -> DriverQueue {
        let m = arena.allocate(bytes: bytes)!
        return try DriverQueue(layout: layout, size: options.queueSize, host: m.host, guest: m.guest, length: bytes,
                               options: VirtqueueOptions(features: features))
    }
    let rxq = try ring(), txq = try ring()
    let fds = (0..<4).map { _ in ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK) }
    let pair = VirtioUserQueuePair(index: 0, rx: rxq, tx: txq, pool: live.mbufPool,
                                   rxKickFD: fds[0], txKickFD: fds[1], rxCallFD: fds[2], txCallFD: fds[3])
    pair.fillReceiveRing()

    var device = InstantDevice(txq)
    let generator = Generator(options: options, pool: live.mbufPool, queue: pair)
    var completed = 0
    for r in 0..<rounds {
        _ = generator.round(now: UInt64(r))
        completed += device.complete()
    }
    print("VirtioUserTX: \(options.packed ? "packed" : "split") \(options.size) B, \(rounds) rounds, \(generator.txPackets) frames sent, \(completed) completed, queue errors \(pair.errorCount)")
}

try run()
