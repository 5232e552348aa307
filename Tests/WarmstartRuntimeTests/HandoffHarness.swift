import CWarmstartShim
import Foundation
import XCTest
import WarmstartEngine
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
import WarmstartTestSupport
@testable import WarmstartRuntime
@testable import WarmstartHandoff
import WarmstartSpec

// Two "processes" in one: a guest (TestGuest, from WarmstartTestSupport: virtio driver rings in its own memfd, a
// VhostUserFrontend on a socket) and backends (a session, a Datapath with polling threads, a vhost queue pair as a
// BurstQueue). A handoff moves everything from one backend object to a new one over a real socket
// with real SCM_RIGHTS: the new backend maps the memory from the passed descriptors, never shares
// the old one's objects.

func countOpenFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
func countMappings(containing text: String? = nil) -> Int {
    (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8))?.split(separator: "\n")
        .filter { text == nil || $0.contains(text!) }.count ?? -1
}

/// Bytes mapped by the lines of /proc/self/maps that contain `text`: unlike a count of lines, the
/// total does not move when the kernel merges adjacent mappings of one file or splits one.
func mappedBytes(containing text: String) -> UInt64 {
    ((try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8))?.split(separator: "\n") ?? [])
        .filter { $0.contains(text) }
        .reduce(0) { sum, line in
            let range = line.prefix { $0 != " " }.split(separator: "-").compactMap { UInt64($0, radix: 16) }
            return range.count == 2 && range[1] > range[0] ? sum + (range[1] - range[0]) : sum
        }
}

func fdList() -> [String] {
    (0..<256).compactMap { f -> String? in
        var b = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(f)", &b, 255)
        return n > 0 ? "\(f)->\(String(cString: b))" : nil
    }
}

func socketPair() -> (Int32, Int32) { VhostUserChannel.socketPair()! }

/// The device side of one vhost-user queue pair: dequeue from the guest's TX ring, enqueue into
/// its RX ring. Holds the setups (and so the memory and eventfds) it runs on.
final class HandoffQueuePair: BurstQueue, @unchecked Sendable {
    let setups: [VringSetup]
    let toGuest: VirtqueueDevice     // vring 0
    let fromGuest: VirtqueueDevice   // vring 1

    init(_ ring0: VringSetup, _ ring1: VringSetup) throws {
        func device(_ s: VringSetup) throws -> VirtqueueDevice {
            let options = VirtqueueOptions(features: VirtioFeatures(rawValue: s.features))
            let state = s.base
            switch s.layout {
            case .split:
                let ring = try SplitRing(size: s.size, desc: s.descriptors, avail: s.driverArea, used: s.deviceArea)
                return VirtqueueDevice(split: ring, memory: s.memory.table, options: options, state: state)
            case .packed:
                let ring = try PackedRing(size: s.size, desc: s.descriptors, driverEvent: s.driverArea, deviceEvent: s.deviceArea)
                return try VirtqueueDevice(packed: ring, memory: s.memory.table, options: options, state: state)
            }
        }
        setups = [ring0, ring1]
        toGuest = try device(ring0)
        fromGuest = try device(ring1)
    }

    var errorCount: UInt64 { 0 }
    func receiveBurst(into out: UnsafeMutablePointer<Mbuf>, max: Int, cache: MbufCache) -> Int {
        fromGuest.dequeueBurst(pool: cache, into: out, maxCount: max)
    }
    func transmitBurst(_ pkts: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        let n = toGuest.enqueueBurst(pool: cache, pkts, count: count)
        for i in 0..<n { cache.free(pkts[i]) }
        return n
    }

    /// Where ring `i` stands now (the datapath must be quiesced).
    func position(_ i: Int) -> VirtqueuePosition {
        let s = (i == 0 ? toGuest : fromGuest).state
        return VirtqueuePosition(lastAvailIndex: s.lastAvailIndex, availWrapCounter: s.availWrapCounter,
                                 lastUsedIndex: s.lastUsedIndex, usedWrapCounter: s.usedWrapCounter)
    }
}

/// Serves a session's vhost-user messages on a thread until stopped at a message boundary (the
/// quiesce: the socket is left unread, so its next message waits for whichever process owns it).
final class HandoffControlLoop: @unchecked Sendable {
    let channel: VhostUserChannel
    let session: VhostUserBackendSession
    let onEvents: ([VhostUserEvent]) -> Void
    private let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private let finished = DispatchSemaphore(value: 0)

    init(fd: Int32, session: VhostUserBackendSession, onEvents: @escaping ([VhostUserEvent]) -> Void) {
        channel = VhostUserChannel(fd: fd, ownsFD: false)
        self.session = session
        self.onEvents = onEvents
        stopFlag.initialize(to: 0)
        Thread { [self] in
            while ws_load_acquire_u32(stopFlag) == 0 {
                var p = pollfd(fd: channel.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 5) > 0 else { continue }
                guard let f = try? channel.receiveFrame() else { break }
                let o = session.receive(header: f.header, payload: f.payload, fds: f.fds)
                if !o.events.isEmpty { onEvents(o.events) }
                if let r = o.reply { try? channel.send(r) }
            }
            finished.signal()
        }.start()
    }

    deinit { stopFlag.deallocate() }

    func stop() {
        ws_store_release_u32(stopFlag, 1)
        finished.wait()
        finished.signal()
    }

    /// Returns when the loop ended by itself (the front-end closed the connection).
    func waitUntilFinished() {
        finished.wait()
        finished.signal()
    }
}

/// One backend "process": memory and pool, a session on a connection, a datapath.
final class HandoffBackend: @unchecked Sendable {
    // Dropped by `releaseAll`: after the commit the old process holds nothing.
    private(set) var region: MemoryRegion!
    private(set) var pool: MbufPool!
    private(set) var datapath: Datapath!
    var session: VhostUserBackendSession?
    var connFD: Int32
    var pair: HandoffQueuePair?
    var loop: HandoffControlLoop?
    var started: [Int: VringSetup] = [:]
    static let dpOptions = Datapath.Options(mode: .macswap, spinBeforeNap: 2000, napMicroseconds: 20)

    /// A first boot: fresh memory, a session waiting for the front-end's messages.
    init(connection fd: Int32) throws {
        let cfg = MbufPoolConfig(count: 2048, cacheSize: 64)
        region = try MemoryRegion.memfd(name: "host", size: PageSize.small4K.roundUp(MbufPoolConfig.bytesNeeded(cfg))!, pageSize: .small4K,
                                        ioAddress: 1 << 32)
        pool = try MbufPool.layOut(config: cfg, region: region, offset: 0, poolID: 0)
        datapath = Datapath(pool: pool, ports: ["vhost0"], options: Self.dpOptions)
        connFD = fd
        session = VhostUserBackendSession()
        // Every forwarded burst is stamped for the backend's whole life, not from the freeze as
        // the runtime does (it reads no clock otherwise): the blackout's first end is then the
        // last burst before the pause even when a loaded machine kept the guest thread from
        // sending in the few milliseconds between freeze and pause (the report then had no
        // blackout: "the old process forwarded nothing since the handoff began").
        datapath.recordForwardTimes()
        datapath.start()
        startLoop()
    }

    /// A takeover, second half (after the old datapath paused): pools attached with their live
    /// state, rings at the final positions, a datapath ready to start.
    init(pending p: HandoffPendingBackend, live: HandoffLive) throws {
        region = p.regions[0]
        pool = try p.received.attachPools(in: p.regions)[0]
        datapath = Datapath(pool: pool, ports: ["vhost0"], options: Self.dpOptions)
        session = p.session
        connFD = p.connFD
        p.connFD = -1
        for s in try p.session?.applyHandoffPositions(live.positions(of: "vhost0")) ?? [] { started[s.index] = s }
        if let r0 = started[0], let r1 = started[1] {
            pair = try HandoffQueuePair(r0, r1)
            adoptedPositions = [pair!.position(0), pair!.position(1)]
            datapath.attach(slot: 0, queues: [pair!])   // no thread runs yet: returns at once
        }
    }

    /// Where the taken-over rings started (read before any polling thread runs them).
    var adoptedPositions: [VirtqueuePosition] = []

    deinit { if connFD >= 0 { close(connFD) } }

    func startLoop() {
        guard let session else { return }
        loop = HandoffControlLoop(fd: connFD, session: session) { [weak self] events in self?.handle(events) }
    }

    func handle(_ events: [VhostUserEvent]) {
        if ProcessInfo.processInfo.environment["WS_HANDOFF_DEBUG"] != nil { print("backend events: \(events)") }
        for e in events {
            switch e {
            case let .ringStarted(s):
                started[s.index] = s
            case let .ringUpdated(s):
                // New memory table or addresses under a running ring (DPDK re-sends its table once
                // its mbuf pool exists): rebuild the pair on the new setups, at the same positions.
                var u = s
                if let pair {
                    datapath.detach(slot: 0)
                    u.base = pair.position(s.index)
                    for i in 0..<2 where i != s.index { started[i]?.base = pair.position(i) }
                    self.pair = nil
                }
                started[s.index] = u
            default:
                break
            }
        }
        if pair == nil, let r0 = started[0], let r1 = started[1] {
            pair = try! HandoffQueuePair(r0, r1)
            datapath.attach(slot: 0, queues: [pair!])
        }
    }

    /// The first burst forwarded since this backend started (the blackout's second end).
    var firstPacketNs: UInt64? { datapath?.firstForwardNs }

    /// The old process's side of the handoff.
    func donorHooks() -> HandoffDonorHooks {
        HandoffDonorHooks(
            freeze: { [self] in
                loop?.stop()
                loop = nil
            },
            export: { [self] b in
                b.addRegion(region)
                try b.addPool(pool, regions: [region])
                b.addVhostUserPort(name: "vhost0", path: nil, listenFD: nil, connectionFD: connFD, session: session,
                                   counters: datapath.stats()[0].total)
            },
            quiesce: { [self] in
                datapath.pause()
                var live = HandoffLive(lastForwardNs: datapath.lastForwardNs, counters: ["vhost0": datapath.stats()[0].total])
                if let pair { live.rings = (0..<2).map { HandoffRingPosition(port: "vhost0", index: $0, base: pair.position($0)) } }
                return live
            },
            resume: { [self] _ in
                datapath.resume()
                if loop == nil { startLoop() }
            },
            release: { [self] in releaseAll() })
    }

    /// Returns when the front-end has closed the vhost-user connection.
    func waitUntilDisconnected() { loop?.waitUntilFinished() }

    /// After the commit: hold nothing.
    func releaseAll() {
        loop?.stop()
        loop = nil
        datapath?.stop()
        datapath?.detach(slot: 0)
        datapath = nil
        pool = nil
        region = nil
        pair = nil
        started = [:]
        session = nil
        if connFD >= 0 { close(connFD) }
        connFD = -1
    }

    /// The new process after the commit: forward and serve the connection.
    func resumeAfterTakeover() {
        datapath.recordForwardTimes()   // the blackout's second end; and this backend's own stamps
        datapath.start()
        startLoop()
    }
}

/// A takeover, first half (the old process still forwards): memory mapped from the passed
/// descriptors, the session rebuilt, the connection taken.
final class HandoffPendingBackend: @unchecked Sendable {
    let received: HandoffReceived
    let regions: [MemoryRegion]
    let session: VhostUserBackendSession?
    var connFD: Int32

    init(_ received: HandoffReceived) throws {
        self.received = received
        regions = try received.mapRegions()
        let a = try received.adoptVhostUserPort(received.state.ports[0], configuration: VhostUserBackendConfiguration())
        session = a.session
        connFD = a.connectionFD ?? -1
    }

    deinit { if connFD >= 0 { close(connFD) } }
}

/// Runs a full handoff from `old` to a new backend over a fresh socket pair; returns the new
/// backend (nil when it failed), the report or error, and the donor's outcome.
func handOff(from old: HandoffBackend, fault: HandoffFault? = nil, timeouts: HandoffTimeouts = HandoffTimeouts(),
             adoptDelay: useconds_t = 0, log: @escaping (String) -> Void = { _ in })
    -> (HandoffBackend?, Result<HandoffReport, HandoffError>, HandoffDonorOutcome) {
    let (d, t) = socketPair()
    let donor = HandoffDonor(hooks: old.donorHooks(), timeouts: timeouts, log: log)
    var outcome: HandoffDonorOutcome?
    let done = DispatchSemaphore(value: 0)
    Thread {
        outcome = donor.serve(HandoffChannel(fd: d))
        done.signal()
    }.start()
    var pending: HandoffPendingBackend?
    var next: HandoffBackend?
    let hooks = HandoffTakerHooks(
        adopt: { r in
            if adoptDelay > 0 { usleep(adoptDelay) }
            pending = try HandoffPendingBackend(r)
        },
        activate: { live in
            next = try HandoffBackend(pending: pending!, live: live)
            pending = nil
        },
        resume: { next!.resumeAfterTakeover() },
        firstPacketNs: { next?.firstPacketNs },
        abandon: { pending = nil; next = nil })
    let result = Result { () throws(HandoffError) in
        try HandoffTaker.takeover(channel: HandoffChannel(fd: t), hooks: hooks,
                                  options: HandoffTakerOptions(timeouts: timeouts, trafficWaitMs: Int(testDeadline * 1000), oldExitWaitMs: 2000,
                                                               fault: fault))
    }
    done.wait()
    return (next, result, outcome!)
}
