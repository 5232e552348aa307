// Hot upgrade: a backend session leaves one process and resumes in another without the front-end
// noticing. Everything the front-end negotiated (features, protocol features, memory table, ring
// addresses, eventfds, status, config) is exported as plain values plus the descriptors the session
// owns; the new process maps the same memory from the passed descriptors and rebuilds its rings at
// the handed-over positions. No vhost-user message is exchanged: no renegotiation, no reconnect.
//
// Descriptors are named by an index into a table the caller keeps (the handoff protocol passes the
// table with SCM_RIGHTS). Export lends the session's descriptors (they stay owned by the session);
// import takes ownership of what it asks for.

import Logging
import WarmstartSpec
import WarmstartVhostUserWire

/// An eventfd slot as exported: never set, NOFD (polling), or the descriptor at `fd`.
public struct VhostUserEventFDSlotState: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case unset, polling, fd }
    public var kind: Kind
    public var fd: Int?
    public init(kind: Kind, fd: Int? = nil) { self.kind = kind; self.fd = fd }
}

/// One front-end memory region: where the descriptor is in the table, and the SET_MEM_TABLE entry.
public struct VhostUserRegionState: Codable, Sendable, Equatable {
    public var fd: Int
    public var guestAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
}

/// One vring as the session knows it, plus where the datapath stopped it.
public struct VhostUserVringState: Codable, Sendable, Equatable {
    public var index: Int
    public var size: UInt32?
    /// User addresses in the front-end's address space (SET_VRING_ADDR), never host pointers.
    public var descriptorAddress: UInt64?
    public var availableAddress: UInt64?
    public var usedAddress: UInt64?
    public var addressFlags: UInt32
    /// SET_VRING_BASE value not yet applied (ring not started since).
    public var baseNum: UInt32?
    /// Next avail / used positions and wrap counters: for a started ring, where the datapath's queue
    /// stood when it was quiesced; else where the ring last stopped.
    public var lastAvailIndex: UInt16
    public var availWrapCounter: Bool
    public var lastUsedIndex: UInt16
    public var usedWrapCounter: Bool
    public var kick: VhostUserEventFDSlotState
    public var call: VhostUserEventFDSlotState
    public var err: VhostUserEventFDSlotState
    public var enabled: Bool
    public var started: Bool

    public var base: VirtqueuePosition {
        VirtqueuePosition(lastAvailIndex: lastAvailIndex, availWrapCounter: availWrapCounter,
                          lastUsedIndex: lastUsedIndex, usedWrapCounter: usedWrapCounter)
    }
}

public struct VhostUserInflightState: Codable, Sendable, Equatable {
    public var fd: Int
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var numQueues: UInt16
    public var queueSize: UInt16
}

/// Everything needed to resume a session in another process.
public struct VhostUserSessionState: Codable, Sendable, Equatable {
    public var maxQueuePairs: Int
    public var ownerSet: Bool
    public var ackedFeatures: UInt64?
    public var ackedProtocolFeatures: UInt64
    public var status: UInt8
    /// The virtio-net config space bytes (mac, status, max pairs, mtu).
    public var netConfig: [UInt8]
    public var rarpMAC: [UInt8]?
    public var memoryGeneration: UInt64
    /// nil: no memory table yet.
    public var memory: [VhostUserRegionState]?
    public var vrings: [VhostUserVringState]
    public var inflight: VhostUserInflightState?

    /// Descriptors the state refers to (memory, eventfds, inflight), for leak checks and counts.
    public var descriptorCount: Int {
        (memory?.count ?? 0) + (inflight == nil ? 0 : 1)
            + vrings.reduce(0) { $0 + [$1.kick, $1.call, $1.err].filter { $0.kind == .fd }.count }
    }
}

extension VhostUserBackendSession {
    /// Exports the session. `register(fd, what)` puts one of the session's descriptors in the
    /// caller's table and returns its index (the descriptor stays the session's: lend, not give).
    /// `position(i)` is where the datapath stopped ring `i` (its queue's state at the quiesce); nil
    /// falls back to `ringPosition`, then to the position the ring was started from.
    public func exportHandoffState(register: (Int32, String) throws -> Int,
                                   position: (Int) -> VirtqueuePosition? = { _ in nil }) throws -> VhostUserSessionState {
        var memoryState: [VhostUserRegionState]?
        if let memory {
            memoryState = try memory.regions.enumerated().map { k, r in
                VhostUserRegionState(fd: try register(r.fd, "guest memory region \(k)"), guestAddress: r.region.guestAddress,
                                     size: r.region.size, userAddress: r.region.userAddress, mmapOffset: r.region.mmapOffset)
            }
        }
        func slot(_ s: EventFDSlot, _ what: String) throws -> VhostUserEventFDSlotState {
            switch s {
            case .unset: return .init(kind: .unset)
            case .polling: return .init(kind: .polling)
            case let .fd(f): return .init(kind: .fd, fd: try register(f.fd, what))
            }
        }
        var rings: [VhostUserVringState] = []
        for (i, v) in vrings.enumerated() {
            var base = v.base
            if v.started {
                base = position(i) ?? ringPosition?(i) ?? setups[i]?.base ?? v.base
            }
            rings.append(VhostUserVringState(
                index: i, size: v.num, descriptorAddress: v.address?.descriptor, availableAddress: v.address?.available,
                usedAddress: v.address?.used, addressFlags: v.address?.flags ?? 0, baseNum: v.started ? nil : v.baseNum,
                lastAvailIndex: base.lastAvailIndex, availWrapCounter: base.availWrapCounter,
                lastUsedIndex: base.lastUsedIndex, usedWrapCounter: base.usedWrapCounter,
                kick: try slot(v.kick, "vring \(i) kick"), call: try slot(v.call, "vring \(i) call"),
                err: try slot(v.err, "vring \(i) err"), enabled: v.enabled, started: v.started))
        }
        var inflightState: VhostUserInflightState?
        if let inflight {
            inflightState = VhostUserInflightState(fd: try register(inflight.fd, "inflight buffer"), mmapSize: inflight.mmapSize,
                                                   mmapOffset: inflight.mmapOffset, numQueues: UInt16(inflight.numQueues),
                                                   queueSize: UInt16(inflight.queueSize))
        }
        return VhostUserSessionState(maxQueuePairs: configuration.maxQueuePairs, ownerSet: ownerSet, ackedFeatures: ackedFeatures,
                                     ackedProtocolFeatures: ackedProtocolFeatures, status: status, netConfig: netConfig.bytes,
                                     rarpMAC: rarpMAC, memoryGeneration: memoryGeneration, memory: memoryState,
                                     vrings: rings, inflight: inflightState)
    }

    /// Rebuilds a session from `state` in this process. `take(index)` hands over the descriptor at
    /// that index of the caller's table (ownership passes to the session, also when import fails:
    /// what was taken is closed). Memory is mapped from the passed descriptors, so the front-end's
    /// pages are shared, not copied; started rings are rebuilt at the handed-over positions and
    /// returned, ready for the datapath. Refuses a state this binary cannot serve (queue count,
    /// features it no longer offers) with an error that says which.
    public static func importHandoffState(_ state: VhostUserSessionState, configuration: VhostUserBackendConfiguration,
                                          take: (Int) throws(VhostUserError) -> Int32,
                                          logger: Logger? = nil) throws(VhostUserError) -> (VhostUserBackendSession, [VringSetup]) {
        func fail(_ why: String) -> VhostUserError { VhostUserError(request: nil, reason: .invalid("handoff: " + why)) }
        // Every field as its vhost-user message would be checked, before anything is taken.
        try state.validate(configuration: configuration)
        guard state.maxQueuePairs == configuration.maxQueuePairs else {
            throw fail("the session has \(state.maxQueuePairs) queue pairs, this port is configured for \(configuration.maxQueuePairs)")
        }
        guard state.vrings.count == 2 * configuration.maxQueuePairs else {
            throw fail("\(state.vrings.count) vrings for \(configuration.maxQueuePairs) queue pairs")
        }
        if let acked = state.ackedFeatures, acked & ~configuration.offeredFeatures != 0 {
            throw fail("the front-end acked features this binary does not offer: "
                       + VirtioFeatures.names(acked & ~configuration.offeredFeatures).joined(separator: ", "))
        }
        guard state.ackedProtocolFeatures & ~configuration.protocolFeatures == 0 else {
            throw fail("the front-end acked protocol features this binary does not offer (0x\(hex(state.ackedProtocolFeatures & ~configuration.protocolFeatures)))")
        }
        guard state.netConfig.count == VirtioNetConfig.size else { throw fail("config space is \(state.netConfig.count) bytes") }
        let s = VhostUserBackendSession(configuration: configuration, logger: logger)
        s.ownerSet = state.ownerSet
        s.ackedFeatures = state.ackedFeatures
        s.ackedProtocolFeatures = state.ackedProtocolFeatures
        s.status = state.status
        s.netConfig = VirtioNetConfig(bytes: state.netConfig)
        s.rarpMAC = state.rarpMAC
        s.memoryGeneration = state.memoryGeneration
        // Take every descriptor first, so a failure part-way closes them all (the session's deinit
        // and the mappings' deinit close what they hold; `loose` closes the rest).
        var loose: [Int32] = []
        defer { for fd in loose { closeFD(fd) } }
        if let regions = state.memory {
            var mapped: [GuestRegionMapping] = []
            for r in regions { loose.append(try take(r.fd)) }
            try s.checkMemoryLimit(regions.map { MemoryRegionPayload(guestAddress: $0.guestAddress, size: $0.size,
                                                                     userAddress: $0.userAddress, mmapOffset: $0.mmapOffset) },
                                   request: .setMemTable)
            let fds = loose
            for (k, r) in regions.enumerated() {
                let payload = MemoryRegionPayload(guestAddress: r.guestAddress, size: r.size, userAddress: r.userAddress,
                                                  mmapOffset: r.mmapOffset)
                loose[k] = -1   // GuestRegionMapping owns it from here, on failure too
                mapped.append(try GuestRegionMapping(region: payload, fd: fds[k], request: .setMemTable, fault: s.memoryFault))
            }
            loose = []
            s.memory = try VhostUserGuestMemory(regions: mapped, generation: state.memoryGeneration, request: .setMemTable)
        }
        func slot(_ st: VhostUserEventFDSlotState) throws(VhostUserError) -> EventFDSlot {
            switch st.kind {
            case .unset: return .unset
            case .polling: return .polling
            case .fd:
                guard let i = st.fd else { throw fail("an eventfd slot has no descriptor index") }
                let object = VhostUserEventFD(try take(i))   // owned from here: closed on refusal too
                if let why = eventFDProblem(object.fd) { throw fail("an eventfd slot's descriptor \(why)") }
                return .fd(object)
            }
        }
        for v in state.vrings {
            guard v.index >= 0, v.index < s.vrings.count else { throw fail("vring index \(v.index) out of range") }
            // The checks SET_VRING_NUM applies; positions are checked against the size by
            // makeSetup (started rings, below) and when a ring starts later.
            if let n = v.size, n < 1 || n > 32768 { throw fail("vring \(v.index) size \(n) is not in 1...32768") }
            var c = VringConfig()
            c.num = v.size
            if let d = v.descriptorAddress, let a = v.availableAddress, let u = v.usedAddress {
                c.address = VringAddressPayload(index: UInt32(v.index), flags: v.addressFlags, descriptor: d, used: u, available: a)
            }
            c.base = v.base
            c.baseNum = v.baseNum
            c.kick = try slot(v.kick)
            c.call = try slot(v.call)
            c.err = try slot(v.err)
            c.enabled = v.enabled
            s.vrings[v.index] = c
        }
        if let inf = state.inflight {
            let fd = try take(inf.fd)
            s.inflight = try VhostUserInflightRegion(fd: fd, payload: InflightPayload(mmapSize: inf.mmapSize, mmapOffset: inf.mmapOffset,
                                                                                    numQueues: inf.numQueues, queueSize: inf.queueSize),
                                                     layout: s.layout, request: .setInflightFD, fault: s.memoryFault)
        }
        var started: [VringSetup] = []
        for v in state.vrings where v.started {
            // makeSetup re-translates every area against the re-mapped memory: a ring that does not
            // fit is refused here, not found later by the datapath.
            let setup = try s.makeSetup(v.index, request: .setVringAddr)
            s.vrings[v.index].started = true
            s.setups[v.index] = setup
            started.append(setup)
        }
        return (s, started)
    }

    /// Moves the started rings to the positions the old datapath stopped at (they were imported
    /// with provisional ones while it still ran) and returns the updated setups, by ring index.
    public func applyHandoffPositions(_ positions: [Int: VirtqueuePosition]) throws(VhostUserError) -> [VringSetup] {
        // All checked before any is applied: a refused set leaves every ring where it was.
        for (i, base) in positions {
            guard let setup = setups[i] else {
                throw VhostUserError(request: nil, reason: .ring(index: i, "handoff: a position for a ring that is not started"))
            }
            if let why = base.problem(size: setup.size, layout: setup.layout) {
                throw VhostUserError(request: nil, reason: .ring(index: i, "handoff: \(why)"))
            }
        }
        for (i, base) in positions { setups[i]?.base = base }
        return startedRings
    }
}
