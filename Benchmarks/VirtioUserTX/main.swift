// Instructions per packet of Warmstart's virtio-user generator, transmit and receive paths, with
// no peer process: the generator `warmstart bench` runs (Generator.round) sends into real rings
// laid out as VirtioUserPort lays them out, and a device stand-in in this process marks every
// buffer used between rounds (with --loopback it first copies each frame's header and first 64
// bytes into one of our receive buffers, as a reflecting back-end would). Every round is then a
// full burst, so an instruction count of `round` (callgrind --toggle-collect) divided by the
// frames sent is the per-packet cost, free of the idle polling a busy or descheduled back-end
// causes. scripts/callgrind-virtio-user.sh runs it.
//
//   VirtioUserTX [--layout split|packed] [--size BYTES] [--rounds N] [--queue-size N] [--burst N]
//                [--loopback]
import CWarmstartShim
import Glibc
import WarmstartMemory
import WarmstartPools
import WarmstartSnapshot
import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartPorts
@_spi(Benchmarks) import WarmstartBench
import WarmstartSpec

/// One ring's device side, reduced to what a polling back-end does for the driver: ask for no
/// kicks, take the available chains in order, mark them used in order.
struct DeviceRing {
    let q: DriverQueue
    var next = 0, wrap = true       // next available: split avail index / packed slot and wrap counter
    var used = 0, usedWrap = true   // next used: split used index / packed slot and wrap counter

    init(_ q: DriverQueue) {
        self.q = q
        if let p = q.packed { PackedRing.storeEvent(p.deviceEvent, offWrap: 0, flags: PackedVirtqueue.eventFlagsDisable) }
        if let s = q.split { s.usedFlags = SplitVirtqueue.usedNoNotify }
    }

    /// The next available chain: its id, its first buffer, and how many descriptors it holds.
    mutating func take() -> (id: UInt16, addr: UInt64, len: UInt32, descriptors: Int)? {
        if let s = q.split {
            let i = UInt16(truncatingIfNeeded: next)
            guard i != s.loadAvailIndex() else { return nil }
            let head = s.availEntry(i)
            let d = s.descriptor(Int(head))
            var count = 1, f = d.flags, at = Int(head)
            while f & VirtqDescriptorFlags.next != 0 {
                at = Int(s.descriptor(at).next)
                f = s.descriptor(at).flags
                count += 1
            }
            next += 1
            return (head, d.addr, d.len, count)
        }
        let p = q.packed!
        let f = p.loadFlags(next)
        guard PackedRing.isAvailable(f, wrap: wrap) else { return nil }
        let d = p.descriptor(next, flags: f)
        var count = 0, flags = f
        while true {
            count += 1
            next += 1
            if next == p.size { next = 0; wrap.toggle() }
            if flags & VirtqDescriptorFlags.next == 0 { break }
            flags = p.loadFlags(next)
        }
        return (d.id, d.addr, d.len, count)
    }

    /// Marks chain `id` used, `len` bytes written (split: visible at `flush()`).
    mutating func giveBack(_ id: UInt16, len: UInt32, descriptors: Int) {
        if let s = q.split {
            s.setUsedElement(UInt16(truncatingIfNeeded: used), id: UInt32(id), len: len)
            used += 1
            return
        }
        let p = q.packed!
        p.setUsedBody(used, id: id, len: len)
        p.storeFlags(used, PackedRing.usedFlags(wrap: usedWrap))
        used += descriptors
        if used >= p.size { used -= p.size; usedWrap.toggle() }
    }

    func flush() {
        if let s = q.split { s.storeUsedIndex(UInt16(truncatingIfNeeded: used)) }
    }
}

func run() throws {
    var options = BenchOptions()
    options.mode = .oneway
    options.backend = .dpdk
    var rounds = 20_000
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        if a == "--loopback" { options.mode = .loopback; continue }
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
    var features: VirtioFeatures = [.version1, .mrgRxbuf, .ringEventIdx, .ringIndirectDesc]
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
    let region = live.mbufPool.region
    func host(_ guest: UInt64) -> UnsafeMutableRawPointer { region.base + Int(guest - region.ioAddress) }

    var tx = DeviceRing(txq), rx = DeviceRing(rxq)
    let generator = Generator(options: options, pool: live.mbufPool, queue: pair)
    var completed = 0, reflected = 0
    for r in 0..<rounds {
        _ = generator.round(now: UInt64(r))
        while let c = tx.take() {
            if options.mode == .loopback, c.descriptors == 1, let b = rx.take() {
                // Header and the first 64 bytes, as the frame's length: what the generator reads.
                let n = min(Int(c.len), Int(b.len))
                host(b.addr).copyMemory(from: host(c.addr), byteCount: min(n, 12 + 64))
                host(b.addr).storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
                rx.giveBack(b.id, len: UInt32(n), descriptors: 1)
                reflected += 1
            }
            tx.giveBack(c.id, len: 0, descriptors: c.descriptors)
            completed += 1
        }
        tx.flush()
        rx.flush()
    }
    print("VirtioUserTX: \(options.packed ? "packed" : "split") \(options.size) B, \(rounds) rounds, \(generator.txPackets) frames sent, \(completed) completed, \(generator.rxPackets) received of \(reflected) reflected, queue errors \(pair.errorCount)")
}

try run()
