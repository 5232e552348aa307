import CWarmstartShim
import WarmstartBus
import WarmstartEngine
import WarmstartMemory
import WarmstartPools
import WarmstartSpec
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
import WarmstartVirtioDriver
#if canImport(Glibc)
import Glibc
#endif

/// What a `virtio-user:PATH[,packed=0|1][,queues=N][,mrg=0|1][,server=1][,size=N][,mac=...][,mtu=N]`
/// port asks the back-end for.
public struct VirtioUserConfig: Sendable, Equatable {
    /// The port's name, for errors.
    public var name: String
    public var packed: Bool
    public var queuePairs: Int
    public var mergeable: Bool
    /// Descriptors per ring (a power of two for split rings; DPDK's virtio-user default is 256).
    public var queueSize: Int
    /// `mac=`: the port's MAC address. nil: the back-end's (when it has one in its config space),
    /// else a random locally administered one.
    public var mac: [UInt8]?
    /// `mtu=`: the port's MTU, told to the back-end (VIRTIO_NET_F_MTU, required then, and
    /// NET_SET_MTU); without MRG_RXBUF it sizes the receive buffers. nil: 1500, F_MTU not asked.
    public var mtu: Int?

    public init(name: String = "virtio-user", packed: Bool = false, queuePairs: Int = 1, mergeable: Bool = true,
                queueSize: Int = 256, mac: [UInt8]? = nil, mtu: Int? = nil) {
        self.name = name
        self.packed = packed; self.queuePairs = queuePairs; self.mergeable = mergeable
        self.queueSize = queueSize; self.mac = mac; self.mtu = mtu
    }

    /// From a port spec; `mac=` and `mtu=` are checked again (a spec need not come from `parse`),
    /// errors name the port and the value.
    public init(spec: PortSpec) throws(VirtioUserError) {
        func flag(_ k: String, _ d: Bool) -> Bool { spec.option(k).map { $0 == "1" || $0 == "on" } ?? d }
        var mac: [UInt8]?
        if let text = spec.option("mac") {
            if let why = PortSpec.macProblem(text) { throw .badConfig(.mac(port: spec.name, value: text, problem: why)) }
            mac = PortSpec.parseMAC(text)
        }
        var mtu: Int?
        if let text = spec.option("mtu") {
            guard let m = Int(text), m >= 68, m <= 65535 else {
                throw .badConfig(.mtu(port: spec.name, value: text))
            }
            mtu = m
        }
        self.init(name: spec.name, packed: flag("packed", false), queuePairs: spec.option("queues").flatMap { Int($0) } ?? 1,
                  mergeable: flag("mrg", true), queueSize: spec.option("size").flatMap { Int($0) } ?? 256,
                  mac: mac, mtu: mtu)
    }

    public static func parseMAC(_ s: String) -> [UInt8]? { PortSpec.parseMAC(s) }

    /// A random locally administered unicast address (as DPDK's rte_eth_random_addr).
    public static func randomMAC() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var mac = (0..<6).map { _ in UInt8.random(in: 0...255, using: &g) }
        mac[0] = (mac[0] & 0xFE) | 0x02
        return mac
    }

    /// The largest frame (L2, no header) the negotiated `features` let the device deliver in one
    /// receive buffer when MRG_RXBUF is off, as Linux virtio-net sizes its "big packets": 65550
    /// with GUEST_TSO4/TSO6/UFO (a 64 KiB GSO frame), the MTU plus the Ethernet header when
    /// VIRTIO_NET_F_MTU is negotiated, else 1514.
    public static func largestReceivedFrame(features: UInt64, mtu: Int?) -> Int {
        if features & VirtioFeatures([.guestTSO4, .guestTSO6, .guestUFO]).rawValue != 0 { return 65550 }
        if features & VirtioFeatures.mtu.rawValue != 0, let mtu { return mtu + 14 }
        return 1514
    }
}

/// A virtio-user port: its configuration, the ring memory it keeps for its whole life (carved once
/// from the general-purpose region, reused on every reconnect), and the queue pairs of the current
/// connection. Lives in `Device.driverContext`.
public final class VirtioUserPort: @unchecked Sendable {
    public let config: VirtioUserConfig
    public let regions: [MemoryRegion]
    public let pool: MbufPool
    /// Per vring: host pointer, guest (I/O) address, length.
    let ringMemory: [(host: UnsafeMutableRawPointer, guest: UInt64, length: Int)]
    /// Serialises set-up and teardown (a set-up thread of a dropped connection may still run).
    let setupLock = SetupMutex()
    /// Queue pairs of the live connection (empty when not connected). Loop thread.
    public internal(set) var queues: [VirtioUserQueuePair] = []
    public internal(set) var negotiation: VhostUserNegotiation?
    /// How many connections were set up (1 + reconnects that got through negotiation).
    public internal(set) var connections = 0
    /// Descriptors (mbufs) per posted receive buffer on the live connection: 1, or more without
    /// MRG_RXBUF when the largest frame does not fit one mbuf.
    public internal(set) var receiveSegments = 1
    private let macLock = PThreadMutex()
    private var currentMAC: [UInt8]
    /// Set when a file behind memory we lend the back-end shrank (the peer truncated it: a snapshot
    /// file on hugetlbfs or /dev/shm cannot be sealed) and the SIGBUS guard replaced that region
    /// with zero pages. Shared by every port over the same regions; nil when every region is
    /// sealed against shrinking. Each queue pair's `memoryFault`.
    public let memoryFault: MappingFaultFlag?

    /// Why the port cannot run (any thread): a region it shares was truncated; nil while intact.
    public var memoryLostReason: String? {
        memoryFault?.reason(peer: "back-end peer", whose: "the").map {
            "\($0); the port stays down: this memory can no longer be shared (restart Warmstart)"
        }
    }

    /// The port's MAC address (any thread): `mac=`, else the back-end's once it told us, else the
    /// random one chosen when the port was made (kept across reconnects).
    public var mac: [UInt8] { macLock.locked { currentMAC } }

    /// Carves the rings out of `arena` (sized for either layout, so `packed=` may change freely).
    public init(config: VirtioUserConfig, regions: [MemoryRegion], pool: MbufPool, arena: RingArena) throws(VirtioUserError) {
        guard config.queueSize >= 2, config.queueSize <= 32768, config.queueSize & (config.queueSize - 1) == 0 else {
            throw .badConfig(.queueSize(config.queueSize))
        }
        guard config.queuePairs >= 1, config.queuePairs <= 128 else {
            throw .badConfig(.queuePairs(config.queuePairs))
        }
        // The back-end maps every region we list, from offset 0 of its fd, and may write any byte
        // of it: the pool's control block and free ring must be in none of them (issue 12).
        let metadata = pool.metadataRegion
        guard pool.hasSeparateMetadata,
              !regions.contains(where: { $0 === metadata || ($0.fd.rawValue == metadata.fd.rawValue) }) else {
            throw .badConfig(.sharedPoolMetadata(poolID: pool.poolID, region: metadata.name))
        }
        // The back-end gets every region's fd. Our memfds are sealed against shrinking; a snapshot
        // file is not, and a peer that truncates it would fault us (SIGBUS) at the next touch of
        // the pool: guard those, so that costs only the ports sharing the memory (issue 12).
        do throws(MappingFaultGuardError) {
            memoryFault = try MemoryRegion.guardAgainstPeerShrink(regions) { r in
                if r === pool.region { return "shared packet memory '\(r.name)'" }
                if r === arena.region { return "shared ring memory '\(r.name)'" }
                return "shared memory '\(r.name)'"
            }
        } catch {
            throw .badConfig(.shrinkGuard(port: config.name, error))
        }
        self.config = config
        self.regions = regions
        self.pool = pool
        currentMAC = config.mac ?? VirtioUserConfig.randomMAC()
        let bytes = max(DriverQueue.ringBytes(layout: .split, size: config.queueSize),
                        DriverQueue.ringBytes(layout: .packed, size: config.queueSize))
        var rings: [(UnsafeMutableRawPointer, UInt64, Int)] = []
        for _ in 0..<(2 * config.queuePairs) {
            guard let a = arena.allocate(bytes: bytes, alignment: 4096) else {
                throw .badConfig(.ringArena(rings: 2 * config.queuePairs, bytes: bytes, left: arena.remaining))
            }
            rings.append((a.host, a.guest, bytes))
        }
        ringMemory = rings.map { (host: $0.0, guest: $0.1, length: $0.2) }
    }

    /// The SET_MEM_TABLE entries: one per region, its own fd and mmap offset, its I/O address as
    /// the guest address and our mapping as the user address (vhost-user "memory regions").
    /// Packet memory and rings only: `init` refused a region holding the pool's metadata.
    public static func memoryTable(_ regions: [MemoryRegion]) -> [FrontendMemoryRegion] {
        regions.map {
            FrontendMemoryRegion(fd: $0.fd.rawValue, mmapOffset: UInt64($0.fileOffset), guestAddress: $0.ioAddress,
                                 userAddress: UInt64(UInt(bitPattern: $0.base)), size: UInt64($0.size))
        }
    }

    /// The frontend sequence over connected socket `fd` (blocking; any thread): negotiate, share
    /// our memory, lay out and start every ring, fill the receive rings, DRIVER_OK. Returns the
    /// queue pairs; the caller publishes them (`queues`) on its own thread.
    public func establish(fd: Int32) throws(VirtioUserError) -> (VhostUserNegotiation, [VirtioUserQueuePair]) {
        setupLock.lock(); defer { setupLock.unlock() }
        if let why = memoryLostReason { throw .sharedMemoryLost(why) }
        let channel = VhostUserChannel(fd: fd, ownsFD: false, readsReplies: true)
        // MAC is asked for so a back-end with an address in its config space can say it (or take
        // ours); MTU only with mtu=, and then required: the user asked for that MTU.
        var extra = VirtioFeatures([.ringEventIdx, .ringIndirectDesc, .mac]).rawValue
        if config.mtu != nil { extra |= VirtioFeatures.mtu.rawValue }
        var options = VhostUserFrontendOptions(packed: config.packed, queuePairs: config.queuePairs,
                                               mergeableRxBuffers: config.mergeable, extraFeatures: extra)
        if config.mtu != nil { options.requiredFeatures |= VirtioFeatures.mtu.rawValue }
        let fe = VhostUserFrontend(channel: channel, options: options)
        let n: VhostUserNegotiation
        let mac: [UInt8]
        do { n = try fe.negotiate() } catch { throw .from(error) }
        mac = try agreeOnMAC(fe, n)
        if let mtu = config.mtu, n.protocolFeatures & VhostUserProtocolFeature.netMTU.mask != 0 {
            do { try fe.setMTU(mtu) } catch { throw .from(error) }
        }
        let table = Self.memoryTable(regions)
        let slots = n.maxMemorySlots ?? 8
        guard table.count <= slots else {
            throw .badConfig(.memorySlots(regions: table.count, slots: slots))
        }
        do { try fe.setMemoryTable(table) } catch { throw .from(error) }
        let ringOptions = VirtqueueOptions(features: VirtioFeatures(rawValue: n.features))
        let layout = ringOptions.layout
        let segments = try Self.receiveSegments(features: n.features, mtu: config.mtu, pool: pool,
                                                headerSize: ringOptions.netHeaderSize, queueSize: config.queueSize)
        // A fresh ring starts at index 0; packed rings also start with both wrap counters set
        // (§2.7.1), which SET_VRING_BASE carries in bit 15 (vhost-user "Ring states").
        var pairs: [VirtioUserQueuePair] = []
        do throws(VirtioUserError) {
            for i in 0..<config.queuePairs {
                var q: [DriverQueue] = []
                var kicks: [Int32] = [], calls: [Int32] = []
                for r in [2 * i, 2 * i + 1] {
                    let mem = ringMemory[r]
                    do {
                        q.append(try DriverQueue(layout: layout, size: config.queueSize, host: mem.host, guest: mem.guest,
                                                 length: mem.length, options: ringOptions))
                    } catch {
                        throw .badConfig(.ringSetup(error))
                    }
                    kicks.append(ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK))
                    calls.append(ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK))
                }
                let pair = VirtioUserQueuePair(index: i, rx: q[0], tx: q[1], pool: pool, rxKickFD: kicks[0], txKickFD: kicks[1],
                                               rxCallFD: calls[0], txCallFD: calls[1], rxSegments: segments,
                                               memoryFault: memoryFault)
                pairs.append(pair)
                guard !kicks.contains(-1), !calls.contains(-1) else {
                    throw .system("eventfd", errno)
                }
                pair.fillReceiveRing()
                for (k, dq) in q.enumerated() {
                    let r = 2 * i + k
                    let host = UInt64(UInt(bitPattern: ringMemory[r].host))
                    let d = UInt64(dq.driverAreaAddress - dq.descAddress), v = UInt64(dq.deviceAreaAddress - dq.descAddress)
                    let ring = FrontendRing(index: r, size: config.queueSize, descriptorAddress: host,
                                            driverAddress: host + d, deviceAddress: host + v,
                                            base: VirtqueuePosition().encode(layout: layout),
                                            kickFD: kicks[k], callFD: calls[k])
                    do { try fe.startRing(ring) } catch { throw .from(error) }
                }
            }
            // §3.1.1 driver initialisation ends with DRIVER_OK; a back-end that negotiated STATUS
            // (DPDK) starts its rings only then.
            if n.protocolFeatures & VhostUserProtocolFeature.status.mask != 0 {
                do { try fe.setStatus(0x0F) } catch { throw .from(error) }   // ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
            }
        } catch {
            for p in pairs { p.reclaim() }
            throw error
        }
        // Truncated while we set up (filling the receive rings touched it): nothing of it is shared.
        if let why = memoryLostReason {
            for p in pairs { p.reclaim() }
            throw .sharedMemoryLost(why)
        }
        macLock.locked { currentMAC = mac }
        receiveSegments = segments
        return (n, pairs)
    }

    /// The MAC the port uses on this connection. With VHOST_USER_PROTOCOL_F_CONFIG and
    /// VIRTIO_NET_F_MAC the back-end has an address in its config space (§5.1.4): `mac=` is
    /// written there (SET_CONFIG) and read back — a back-end that refuses it or keeps another
    /// address is an error, never silently contradicted; without `mac=` the back-end's address is
    /// taken (as DPDK's virtio-user does) unless it cannot be read or is not a unicast address.
    /// Otherwise: `mac=` or the port's random address.
    func agreeOnMAC(_ fe: VhostUserFrontend, _ n: VhostUserNegotiation) throws(VirtioUserError) -> [UInt8] {
        let own = mac
        guard n.protocolFeatures & VhostUserProtocolFeature.config.mask != 0,
              n.features & VirtioFeatures.mac.rawValue != 0 else { return own }
        guard let wanted = config.mac else {
            guard let got = try? fe.getConfig(offset: 0, size: 6) else { return own }
            return PortSpec.macProblem(PortSpec.formatMAC(got)) == nil ? got : own
        }
        let text = PortSpec.formatMAC(wanted)
        do { try fe.setConfig(offset: 0, bytes: wanted) } catch {
            // A REPLY_ACK failure is the back-end's answer to this address; anything else is the
            // connection's problem.
            if case .peerFailed = error.reason { throw .badConfig(.macRefused(port: config.name, mac: text)) }
            throw .from(error)
        }
        let got: [UInt8]
        do { got = try fe.getConfig(offset: 0, size: 6) } catch { throw .from(error) }
        guard got == wanted else {
            throw .badConfig(.macKept(port: config.name, wanted: text, kept: PortSpec.formatMAC(got)))
        }
        return wanted
    }

    /// Mbufs per posted receive buffer: 1 with MRG_RXBUF (a frame spreads over as many buffers as
    /// it needs, §5.1.6.4) or when the largest frame the features allow
    /// (`VirtioUserConfig.largestReceivedFrame`) fits one data room; else the first mbuf's data
    /// room plus as many further mbufs (header room + data room each) as the rest needs. The chain
    /// has one descriptor more than mbufs: the header has its own (VirtioUserBigPackets.swift).
    static func receiveSegments(features: UInt64, mtu: Int?, pool: MbufPool, headerSize: Int,
                                queueSize: Int) throws(VirtioUserError) -> Int {
        if features & VirtioFeatures.mrgRxbuf.rawValue != 0 { return 1 }
        let frame = VirtioUserConfig.largestReceivedFrame(features: features, mtu: mtu)
        let room = pool.config.dataRoom
        if frame <= room { return 1 }
        let per = room + headerSize
        let segments = 1 + (frame - room + per - 1) / per
        let limit = min(VirtioUserQueuePair.scratchCapacity, queueSize)
        guard segments + 1 <= limit else {
            throw .badConfig(.receiveChain(frame: frame, mbufs: segments, dataRoom: room, limit: limit))
        }
        return segments
    }

    /// Drops the current connection's queue pairs, giving every posted mbuf back to the pool.
    /// Only after the datapath has stopped polling them.
    public func teardown() {
        setupLock.lock(); defer { setupLock.unlock() }
        for q in queues { q.reclaim() }
        queues = []
        negotiation = nil
    }
}

/// A plain pthread mutex with lock/unlock (set-up holds it across throwing calls).
final class SetupMutex: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(m, nil) }
    deinit { pthread_mutex_destroy(m); m.deallocate() }
    func lock() { pthread_mutex_lock(m) }
    func unlock() { pthread_mutex_unlock(m) }
}
