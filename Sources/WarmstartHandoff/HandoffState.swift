#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import WarmstartEngine
import WarmstartMemory
import WarmstartPools
import WarmstartSpec
import WarmstartVhostUser
import WarmstartVhostUserWire

// The state document: everything the new process needs besides the descriptors, which it names by
// index into `fds` (the descriptor index: what each one is). Memory is described by region (one fd
// each, never one per page) and pools by where they sit in a region, so the new process maps the
// live pools themselves — not a snapshot — and adopts them with their ring state.

public struct HandoffConfiguration: Codable, Sendable, Equatable {
    /// The old process's command line, for the log and for a new binary that wants to compare.
    public var arguments: [String]
    /// Named settings (forward mode, cores, burst, …) the runtime chooses to pass on.
    public var values: [String: String]
    public init(arguments: [String] = [], values: [String: String] = [:]) { self.arguments = arguments; self.values = values }
}

extension HandoffConfiguration {
    /// The names of the settings a runtime passes on (read back by the new process, checked by
    /// `HandoffState.validate`).
    public enum Keys {
        public static let ports = "ports"
        public static let forward = "forward"
        public static let cores = "cores"
        public static let txSize = "tx-size"
        public static let controlFD = "control-fd"
        public static let controlPath = "control-path"
    }
}

public struct HandoffRegionState: Codable, Sendable, Equatable {
    public var name: String
    public var fd: Int
    public var size: Int
    public var fileOffset: Int
    public var ioAddress: UInt64
    public var pageSize: Int
    public var backing: String
}

public struct HandoffPoolState: Codable, Sendable, Equatable {
    public var config: MbufPoolConfig
    /// Index into `regions`: the elements (an inline pool: everything).
    public var region: Int
    public var offset: Int
    public var poolID: UInt16
    /// Index into `regions` of the private region that holds the control block and free ring, and
    /// where in it; nil for an inline pool (a donor older than snapshot format 1.1).
    public var metadataRegion: Int? = nil
    public var metadataOffset: Int? = nil
}

public struct HandoffPortState: Codable, Sendable, Equatable {
    public var name: String
    /// "vhost-user", "tap", … (the port spec's kind).
    public var kind: String
    /// Socket path (vhost-user) or interface name (TAP).
    public var path: String?
    /// vhost-user server mode: the listening socket, so later front-ends can still connect.
    public var listenFD: Int?
    /// The connected vhost-user socket.
    public var connectionFD: Int?
    public var session: VhostUserSessionState?
    public var tapFDs: [Int]?
    /// 1.1: the port's counters so far (the new process continues them).
    public var counters: QueueCounters?
    public init(name: String, kind: String, path: String? = nil, listenFD: Int? = nil, connectionFD: Int? = nil,
                session: VhostUserSessionState? = nil, tapFDs: [Int]? = nil, counters: QueueCounters? = nil) {
        self.name = name; self.kind = kind; self.path = path; self.listenFD = listenFD; self.connectionFD = connectionFD
        self.session = session; self.tapFDs = tapFDs; self.counters = counters
    }
}

public struct HandoffState: Codable, Sendable, Equatable {
    public var version: HandoffVersion
    public var donorPid: Int32
    /// CLOCK_MONOTONIC (system-wide, so comparable across processes) when the state was described
    /// (control plane frozen, datapath still forwarding).
    public var describedAtNs: UInt64
    public var configuration: HandoffConfiguration
    /// The descriptor index: entry i says what descriptor i is.
    public var fds: [String]
    public var regions: [HandoffRegionState]
    public var pools: [HandoffPoolState]
    public var ports: [HandoffPortState]
}

/// Where one ring stands after the pause.
public struct HandoffRingPosition: Codable, Sendable, Equatable {
    public var port: String
    public var index: Int
    public var lastAvailIndex: UInt16
    public var availWrapCounter: Bool
    public var lastUsedIndex: UInt16
    public var usedWrapCounter: Bool
    public init(port: String, index: Int, base b: VirtqueuePosition) {
        self.port = port; self.index = index
        lastAvailIndex = b.lastAvailIndex; availWrapCounter = b.availWrapCounter
        lastUsedIndex = b.lastUsedIndex; usedWrapCounter = b.usedWrapCounter
    }
    public var base: VirtqueuePosition {
        VirtqueuePosition(lastAvailIndex: lastAvailIndex, availWrapCounter: availWrapCounter,
                          lastUsedIndex: lastUsedIndex, usedWrapCounter: usedWrapCounter)
    }
}

/// What changes while the old process forwards and so crosses only once its datapath is paused:
/// ring positions, counters, and the time of the pause.
public struct HandoffLive: Codable, Sendable, Equatable {
    /// When the positions had been read (the message goes out right after).
    public var quiescedAtNs: UInt64
    /// 1.2: when the first polling thread parked (from then on a queue is not polled).
    public var pausedAtNs: UInt64?
    /// The last burst forwarded since the handoff began; nil when none was (an idle guest: no
    /// blackout can be measured).
    public var lastForwardNs: UInt64?
    public var rings: [HandoffRingPosition]
    public var counters: [String: QueueCounters]
    public init(quiescedAtNs: UInt64 = 0, pausedAtNs: UInt64? = nil, lastForwardNs: UInt64? = nil, rings: [HandoffRingPosition] = [],
                counters: [String: QueueCounters] = [:]) {
        self.quiescedAtNs = quiescedAtNs; self.pausedAtNs = pausedAtNs; self.lastForwardNs = lastForwardNs
        self.rings = rings; self.counters = counters
    }
    /// The positions of `port`'s rings, by ring index.
    public func positions(of port: String) -> [Int: VirtqueuePosition] {
        Dictionary(rings.filter { $0.port == port }.map { ($0.index, $0.base) }, uniquingKeysWith: { _, b in b })
    }
}

/// Builds the state on the donor side: registers descriptors (lent, not duplicated) and describes
/// regions, pools and ports.
public struct HandoffStateBuilder {
    public var state: HandoffState
    public private(set) var fds: [Int32] = []

    public init(configuration: HandoffConfiguration, describedAtNs: UInt64) {
        state = HandoffState(version: .current, donorPid: getpid(), describedAtNs: describedAtNs,
                             configuration: configuration, fds: [], regions: [], pools: [], ports: [])
    }

    /// Adds a descriptor to the index; returns its index.
    public mutating func register(_ fd: Int32, _ what: String) -> Int {
        fds.append(fd)
        state.fds.append(what)
        return fds.count - 1
    }

    /// Adds a memory region (the live one: same fd, same offset, same I/O address).
    @discardableResult
    public mutating func addRegion(_ r: MemoryRegion) -> Int {
        let i = register(r.fd.rawValue, "memory region '\(r.name)'")
        state.regions.append(HandoffRegionState(name: r.name, fd: i, size: r.size, fileOffset: r.fileOffset, ioAddress: r.ioAddress,
                                                pageSize: r.pageSize.bytes, backing: r.backing.rawValue))
        return state.regions.count - 1
    }

    /// Adds a pool; its region must have been added (matched by identity).
    public mutating func addPool(_ p: MbufPool, regions: [MemoryRegion]) throws(HandoffError) {
        guard let k = regions.firstIndex(where: { $0 === p.region }) else {
            throw HandoffError(.transfer, .poolRegionNotHandedOver(poolID: p.poolID))
        }
        var pool = HandoffPoolState(config: p.config, region: k, offset: p.offset, poolID: p.poolID)
        if p.hasSeparateMetadata {
            guard let m = regions.firstIndex(where: { $0 === p.metadataRegion }) else {
                throw HandoffError(.transfer, .poolMetadataNotHandedOver(poolID: p.poolID))
            }
            pool.metadataRegion = m
            pool.metadataOffset = p.metadataOffset
        }
        state.pools.append(pool)
    }

    /// Adds a vhost-user port: its sockets and its session. Ring positions here are provisional
    /// (the datapath still runs); the final ones cross in `HandoffLive`.
    public mutating func addVhostUserPort(name: String, path: String?, listenFD: Int32?, connectionFD: Int32?,
                                          session: VhostUserBackendSession?, positions: (Int) -> VirtqueuePosition? = { _ in nil },
                                          counters: QueueCounters? = nil) {
        let l = listenFD.map { register($0, "port '\(name)' listening socket") }
        let c = connectionFD.map { register($0, "port '\(name)' vhost-user connection") }
        let s = session.map { session in
            // register never throws: the closure form is for other callers.
            try! session.exportHandoffState(register: { fd, what in self.register(fd, "port '\(name)' \(what)") },
                                            position: positions)
        }
        state.ports.append(HandoffPortState(name: name, kind: "vhost-user", path: path, listenFD: l, connectionFD: c,
                                            session: s, counters: counters))
    }

    public mutating func addTapPort(name: String, interface: String, fds tapFDs: [Int32], counters: QueueCounters? = nil) {
        let idx = tapFDs.enumerated().map { register($0.element, "port '\(name)' TAP queue \($0.offset)") }
        state.ports.append(HandoffPortState(name: name, kind: "tap", path: interface, tapFDs: idx, counters: counters))
    }
}

/// The received descriptors on the taker side. Each is taken once (ownership moves to whoever
/// takes it); whatever nobody took is closed when the table goes, so a failed or partial adoption
/// leaks nothing.
public final class HandoffFDTable: @unchecked Sendable {
    public let names: [String]
    private var fds: [Int32]

    public init(fds: [Int32], names: [String]) { self.fds = fds; self.names = names }
    deinit { for f in fds where f >= 0 { _ = close(f) } }

    public var count: Int { fds.count }
    public var untaken: Int { fds.filter { $0 >= 0 }.count }

    public func take(_ i: Int, step: HandoffStepName = .map) throws(HandoffError) -> Int32 {
        guard i >= 0, i < fds.count else { throw HandoffError(step, .descriptorIndex(i, tableSize: fds.count)) }
        let f = fds[i]
        guard f >= 0 else { throw HandoffError(step, .descriptorTaken(i, name: names[i])) }
        fds[i] = -1
        return f
    }
}

/// What the taker received: the state and its descriptors, with helpers that adopt them.
public final class HandoffReceived: @unchecked Sendable {
    public let state: HandoffState
    public let fds: HandoffFDTable
    init(state: HandoffState, fds: HandoffFDTable) { self.state = state; self.fds = fds }

    /// Maps every region from its passed descriptor (done while the old process still forwards:
    /// mapping is the slow part, and the pages are shared, not copied). Not MAP_POPULATE: filling
    /// every page table entry took milliseconds of kernel time that starved a guest sharing the
    /// CPU just before the pause (measured); the first bursts fault in the few pages they touch.
    public func mapRegions() throws(HandoffError) -> [MemoryRegion] {
        var regions: [MemoryRegion] = []
        for (k, r) in state.regions.enumerated() {
            guard let ps = PageSize(bytes: r.pageSize), let backing = MemoryBacking(rawValue: r.backing) else {
                throw HandoffError(.map, .regionFormat(index: k, name: r.name, pageSize: r.pageSize, backing: r.backing))
            }
            let fd = try fds.take(r.fd)
            do {
                regions.append(try MemoryRegion(name: r.name, fd: FileDescriptor(rawValue: fd), fileOffset: r.fileOffset, size: r.size,
                                                pageSize: ps, backing: backing, ioAddress: r.ioAddress, ownsFD: true))
            } catch {
                throw HandoffError(.map, .regionMap(index: k, name: r.name, size: r.size, pageSize: ps, cause: "\(error)"))
            }
        }
        return regions
    }

    /// Attaches every pool with its live ring state. Only once the old datapath is paused (its
    /// caches flushed): `MbufPool.attach` checks the control block and refuses a pool in motion.
    /// With `inMotion` (before the pause) the ring is left unchecked: call `checkPoolRings` once
    /// the old process has paused.
    public func attachPools(in regions: [MemoryRegion], inMotion: Bool = false) throws(HandoffError) -> [MbufPool] {
        let step: HandoffStepName = inMotion ? .map : .commit
        var pools: [MbufPool] = []
        for p in state.pools {
            guard p.region >= 0, p.region < regions.count else { throw HandoffError(step, .poolRegion(poolID: p.poolID, region: p.region)) }
            var metadata: MemoryRegion?
            if let m = p.metadataRegion {
                guard m >= 0, m < regions.count, m != p.region, p.metadataOffset != nil else {
                    throw HandoffError(step, .poolMetadataRegion(poolID: p.poolID, region: m, offset: p.metadataOffset))
                }
                metadata = regions[m]
            }
            do {
                pools.append(try MbufPool.attach(config: p.config, region: regions[p.region], offset: p.offset,
                                                 metadata: metadata, metadataOffset: p.metadataOffset ?? 0, poolID: p.poolID,
                                                 checkRing: !inMotion))
            } catch {
                throw HandoffError(step, .poolAdoption(poolID: p.poolID, cause: "\(error)"))
            }
        }
        return pools
    }

    /// After the pause: every pool attached `inMotion` has a quiescent, plausible ring.
    public func checkPoolRings(_ pools: [MbufPool]) throws(HandoffError) {
        for p in pools {
            do { try p.checkRingQuiescent() } catch { throw HandoffError(.commit, .poolAdoption(poolID: p.poolID, cause: "\(error)")) }
        }
    }

    /// Rebuilds a vhost-user port's session (memory re-mapped from the passed fds, rings at the
    /// handed-over positions) and takes its socket descriptors.
    public func adoptVhostUserPort(_ port: HandoffPortState, configuration: VhostUserBackendConfiguration)
        throws(HandoffError) -> (session: VhostUserBackendSession?, rings: [VringSetup], listenFD: Int32?, connectionFD: Int32?) {
        let listen = try port.listenFD.map { i throws(HandoffError) in try fds.take(i) }
        let conn = try port.connectionFD.map { i throws(HandoffError) in try fds.take(i) }
        guard let st = port.session else { return (nil, [], listen, conn) }
        do throws(VhostUserError) {
            let table = fds
            let (s, rings) = try VhostUserBackendSession.importHandoffState(st, configuration: configuration, take: { i throws(VhostUserError) in
                do { return try table.take(i) } catch {
                    throw VhostUserError(request: nil, reason: .invalid("\(error)"))
                }
            })
            return (s, rings, listen, conn)
        } catch {
            if let listen { _ = close(listen) }
            if let conn { _ = close(conn) }
            throw HandoffError(.map, .vhostUserPort(name: port.name, error))
        }
    }
}

extension HandoffReceived {
    /// Takes a TAP port's queue descriptors (each still attached to its interface: the kernel
    /// keeps the interface, its addresses and its queued packets).
    public func adoptTapPort(_ port: HandoffPortState) throws(HandoffError) -> [Int32] {
        var taken: [Int32] = []
        do {
            for i in port.tapFDs ?? [] { taken.append(try fds.take(i)) }
        } catch {
            for f in taken { _ = close(f) }
            throw error
        }
        return taken
    }
}

enum HandoffJSON {
    static func encode<T: Encodable>(_ v: T, step: HandoffStepName) throws(HandoffError) -> [UInt8] {
        do {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            return Array(try e.encode(v))
        } catch {
            throw HandoffError(step, .encoding(document: "\(T.self)", cause: "\(error)"))
        }
    }

    static func decode<T: Decodable>(_ t: T.Type, _ bytes: [UInt8], step: HandoffStepName) throws(HandoffError) -> T {
        do { return try JSONDecoder().decode(t, from: Data(bytes)) } catch {
            throw HandoffError(step, .decoding(document: "\(T.self)", cause: "\(error)"))
        }
    }
}
