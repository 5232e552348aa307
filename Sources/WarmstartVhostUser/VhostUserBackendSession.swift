import Logging
import WarmstartMemory
import WarmstartSpec
import WarmstartVhostUserWire

/// What one back-end port offers and how big it is.
public struct VhostUserBackendConfiguration: Sendable {
    /// Queue pairs (GET_QUEUE_NUM answers this; vring indices go up to 2 × pairs − 1).
    public var maxQueuePairs: Int
    /// Per-port mask over `VhostUserFeatures.netDefault` (e.g. clear RING_PACKED or MRG_RXBUF).
    public var featureMask: UInt64
    public var protocolFeatures: UInt64
    /// GET_MAX_MEM_SLOTS. 509 is KVM's user memory slot count on x86 (KVM_USER_MEM_SLOTS), the
    /// most memory slots a QEMU/KVM guest can have; QEMU caps the value at its own limit anyway, so
    /// this back-end is never the one that stops memory hot plug. Translation cost grows with the
    /// regions actually present, not with this cap.
    public var maxMemorySlots: Int
    public var netConfig: VirtioNetConfig
    /// Features beyond the default set this port offers too (only `VhostUserFeatures.netOptIn`).
    public var optInFeatures: UInt64
    /// The most address space the front-end's memory table may take in this process: the sum over
    /// its regions of mmap offset + size (each region is mapped from file offset 0; rounding to the
    /// file's page size adds at most one page per region). A SET_MEM_TABLE or ADD_MEM_REG beyond it
    /// is refused before anything is mapped. Port spec key `max-memory=SIZE`.
    public var maxMemoryBytes: UInt64

    /// 1 TiB, 1/128 of x86-64's 128 TiB user address space: a hostile front-end (sparse memfds
    /// cost it nothing) can hold at most that much of this process's address space, so more than a
    /// hundred such sessions fit beside the pools. An honest guest maps up to about twice its RAM
    /// here (QEMU sends the RAM above 4 GiB as a region at an mmap offset of the same file, mapped
    /// from 0), so guests up to some 500 GiB need no setting; a larger one sets `max-memory`.
    public static let defaultMaxMemoryBytes: UInt64 = 1 << 40

    public init(maxQueuePairs: Int = 1, featureMask: UInt64 = ~0, protocolFeatures: UInt64 = VhostUserFeatures.protocolDefault,
                maxMemorySlots: Int = 509, netConfig: VirtioNetConfig = VirtioNetConfig(), optInFeatures: UInt64 = 0,
                maxMemoryBytes: UInt64 = VhostUserBackendConfiguration.defaultMaxMemoryBytes) {
        precondition(maxQueuePairs >= 1 && maxQueuePairs <= 128, "vring indices are 8 bits in SET_VRING_KICK/CALL/ERR")
        self.maxQueuePairs = maxQueuePairs
        self.featureMask = featureMask
        self.protocolFeatures = protocolFeatures & (VhostUserFeatures.protocolDefault | VhostUserFeatures.protocolOptIn)
        self.maxMemorySlots = maxMemorySlots
        self.netConfig = netConfig
        self.netConfig.maxVirtqueuePairs = UInt16(maxQueuePairs)
        self.optInFeatures = optInFeatures & VhostUserFeatures.netOptIn
        self.maxMemoryBytes = maxMemoryBytes
    }

    public var offeredFeatures: UInt64 { VhostUserFeatures.netDefault & featureMask | optInFeatures }
}

/// What the datapath must act on after a message.
public enum VhostUserEvent: @unchecked Sendable {
    case ownerSet
    case featuresAcked(UInt64)
    case protocolFeaturesAcked(UInt64)
    /// A new table is in place. The previous one stays mapped while any `VringSetup` holds it.
    case memoryTableReplaced(VhostUserGuestMemory)
    /// A ring became startable: build a queue from it.
    case ringStarted(VringSetup)
    /// A started ring's descriptors, addresses or memory changed: swap to this setup, keep the
    /// queue's own position.
    case ringUpdated(VringSetup)
    /// The ring must not be touched any more (GET_VRING_BASE, reset, or memory removed under it).
    case ringStopped(index: Int, base: VirtqueuePosition)
    case ringEnabled(index: Int, enabled: Bool)
    case statusChanged(UInt8)
    case mtuChanged(UInt16)
    /// SEND_RARP: broadcast a RARP / gratuitous packet for this MAC (migration finished).
    case rarpRequested(mac: [UInt8])
    case configChanged(VirtioNetConfig)
    case deviceReset
}

/// The result of handling one message: a reply to send (if any), the error (if the message was
/// refused), whether the connection must be dropped, and the datapath events. Descriptors in the
/// reply (GET_INFLIGHT_FD) are lent by the session: send them, do not close them.
public struct VhostUserOutcome: @unchecked Sendable {
    public var reply: VhostUserMessage?
    public var error: VhostUserError?
    public var isFatal: Bool
    public var events: [VhostUserEvent]
}

/// The back-end side of one vhost-user connection, as a state machine: messages in, replies and
/// events out. No socket inside — any I/O loop feeds it whole messages (`receive(header:payload:fds:)`
/// or, already validated, `handle(_:)`).
///
/// Ownership: every descriptor the session accepted (memory regions, kick/call/err) is held by a
/// reference-counted object, closed (and unmapped) when the last holder drops it. The session
/// drops its reference when the front-end replaces the thing, on reset, and in deinit; a
/// `VringSetup` the datapath still holds keeps what it points to alive. So the datapath never
/// writes to a closed (or reused) descriptor number or reads unmapped memory: it applies
/// `ringUpdated`/`ringStopped` between bursts and drops the old setup.
///
/// Not thread-safe: one control thread drives a session (the datapath reads only `VringSetup`s).
public final class VhostUserBackendSession {
    public let configuration: VhostUserBackendConfiguration
    public var validator: VhostUserMessageValidator
    public var logger: Logger?
    /// Asked on GET_VRING_BASE for a started ring: the datapath stops the ring and returns where it
    /// stopped. Without it the position the ring was started from is returned.
    public var ringPosition: ((Int) -> VirtqueuePosition?)?

    public internal(set) var ownerSet = false
    public internal(set) var ackedFeatures: UInt64?
    public internal(set) var ackedProtocolFeatures: UInt64 = 0
    public internal(set) var memory: VhostUserGuestMemory?
    public internal(set) var status: UInt8 = 0
    public internal(set) var netConfig: VirtioNetConfig
    public internal(set) var rarpMAC: [UInt8]?
    /// The inflight buffer (GET_INFLIGHT_FD / SET_INFLIGHT_FD), when negotiated.
    public internal(set) var inflight: VhostUserInflightRegion?
    /// Set by the SIGBUS handler when the front-end shrinks a file this session maps (memory
    /// regions, the inflight buffer); every mapping of the session registers with it.
    public let memoryFault = MappingFaultFlag()
    /// Descriptors a handler attaches to its reply.
    var replyFDs: [Int32] = []
    var vrings: [VringConfig]
    /// The datapath's current setups, by ring index (what `ringStarted`/`ringUpdated` last said).
    var setups: [Int: VringSetup] = [:]
    var memoryGeneration: UInt64 = 0

    public init(configuration: VhostUserBackendConfiguration = VhostUserBackendConfiguration(), logger: Logger? = nil) {
        self.configuration = configuration
        self.validator = VhostUserMessageValidator(queueCount: 2 * configuration.maxQueuePairs)
        self.logger = logger
        self.netConfig = configuration.netConfig
        self.vrings = Array(repeating: VringConfig(), count: 2 * configuration.maxQueuePairs)
    }

    deinit {
        for i in vrings.indices { vrings[i].closeAll() }
    }

    public var queueCount: Int { vrings.count }
    public var replyAckNegotiated: Bool { ackedProtocolFeatures & VhostUserProtocolFeature.replyAck.mask != 0 }
    public var layout: VirtqueueLayout {
        VirtqueueLayout(features: VirtioFeatures(rawValue: ackedFeatures ?? 0))
    }
    /// The setups of the rings that are started now.
    public var startedRings: [VringSetup] { setups.keys.sorted().compactMap { setups[$0] } }

    func protocolAcked(_ f: VhostUserProtocolFeature) -> Bool { ackedProtocolFeatures & f.mask != 0 }

    /// SET_LOG_BASE has a reply only with LOG_SHMFD (spec "Communication"); the rest is static.
    func hasExplicitReply(_ request: VhostUserRequest) -> Bool {
        request == .setLogBase ? protocolAcked(.logSHMFD) : request.hasExplicitReply
    }

    /// Validates and handles one framed message (header already validated by the reader).
    public func receive(header: VhostUserHeader, payload: [UInt8], fds: [Int32]) -> VhostUserOutcome {
        do {
            let message = try validator.decodeRequest(header: header, payload: payload, fds: fds)
            return handle(message)
        } catch {
            return failure(error, code: header.request, request: header.knownRequest, needReply: header.needsReply, events: [])
        }
    }

    /// Handles one validated request. Consumes its descriptors (kept or closed).
    public func handle(_ message: VhostUserMessage) -> VhostUserOutcome {
        guard let request = message.request else {
            message.closeFDs()
            return failure(VhostUserError(code: message.header.request, request: nil, reason: .unknownRequest),
                           code: message.header.request, request: nil, needReply: message.header.needsReply, events: [])
        }
        logger?.debug("vhost-user: \(request) size \(message.header.size) fds \(message.fds.count)")
        var fds = message.fds
        var events: [VhostUserEvent] = []
        do {
            replyFDs = []
            let replyPayload = try dispatch(request, message.payload, &fds, &events)
            for fd in fds { closeFD(fd) }
            if let replyPayload {
                defer { replyFDs = [] }
                return VhostUserOutcome(reply: .reply(to: request.rawValue, payload: replyPayload, fds: replyFDs),
                                        error: nil, isFatal: false, events: events)
            }
            // REPLY_ACK (spec "VHOST_USER_PROTOCOL_F_REPLY_ACK"): u64 0 on success.
            let ack = message.header.needsReply && replyAckNegotiated && !hasExplicitReply(request)
            return VhostUserOutcome(reply: ack ? .reply(to: request.rawValue, payload: .u64(0)) : nil,
                                    error: nil, isFatal: false, events: events)
        } catch {
            for fd in fds { closeFD(fd) }
            return failure(error, code: request.rawValue, request: request, needReply: message.header.needsReply, events: events)
        }
    }

    /// Turns an error into an outcome: a failure reply where the protocol has one, or a fatal
    /// outcome where the front-end waits for a reply that cannot express failure.
    func failure(_ error: VhostUserError, code: UInt32, request: VhostUserRequest?, needReply: Bool,
                 events: [VhostUserEvent]) -> VhostUserOutcome {
        logger?.warning("vhost-user: \(error)")
        if error.isFatal {
            return VhostUserOutcome(reply: nil, error: error, isFatal: true, events: events)
        }
        if request == .getConfig {
            // GET_CONFIG: "uses zero length of payload to indicate an error".
            return VhostUserOutcome(reply: .reply(to: code, payload: .none), error: error, isFatal: false, events: events)
        }
        if let request, hasExplicitReply(request) {
            // The front-end blocks on this reply and it has no failure encoding: drop the session.
            return VhostUserOutcome(reply: nil, error: error, isFatal: true, events: events)
        }
        let nack = needReply && replyAckNegotiated
        return VhostUserOutcome(reply: nack ? .reply(to: code, payload: .u64(1)) : nil, error: error, isFatal: false, events: events)
    }

    // MARK: rings

    /// Starts ring `i` if everything it needs is there (spec "Ring states": started on kick, and
    /// enabled by SET_VRING_ENABLE when PROTOCOL_FEATURES is negotiated).
    func tryStart(_ i: Int, _ events: inout [VhostUserEvent], request: VhostUserRequest) throws(VhostUserError) {
        let v = vrings[i]
        guard !v.started, v.num != nil, v.address != nil, v.kick.isSet, v.enabled,
              memory != nil, ackedFeatures != nil else { return }
        let setup = try makeSetup(i, request: request)
        vrings[i].started = true
        setups[i] = setup
        events.append(.ringStarted(setup))
        logger?.info("vhost-user: vring \(i) started (\(setup.layout), \(setup.size) descriptors)")
    }

    /// Re-announces a started ring after its descriptors, addresses or memory changed; stops it
    /// when its areas no longer translate.
    func refresh(_ i: Int, _ events: inout [VhostUserEvent], request: VhostUserRequest) throws(VhostUserError) {
        guard vrings[i].started, let old = setups[i] else { return }
        do {
            var setup = try makeSetup(i, request: request)
            setup.base = old.base
            setups[i] = setup
            events.append(.ringUpdated(setup))
        } catch {
            stop(i, &events)
            throw error
        }
    }

    /// Stops ring `i`; returns where it stopped (asked from the datapath when it can tell).
    @discardableResult
    func stop(_ i: Int, _ events: inout [VhostUserEvent]) -> VirtqueuePosition? {
        guard vrings[i].started, let setup = setups[i] else { return nil }
        let base = ringPosition?(i) ?? setup.base
        vrings[i].started = false
        setups[i] = nil
        vrings[i].base = base
        vrings[i].baseNum = nil
        events.append(.ringStopped(index: i, base: base))
        return base
    }

    func makeSetup(_ i: Int, request: VhostUserRequest) throws(VhostUserError) -> VringSetup {
        func fail(_ why: String) -> VhostUserError { VhostUserError(request: request, reason: .ring(index: i, why)) }
        let v = vrings[i]
        guard let num = v.num, let addr = v.address, let memory, let features = ackedFeatures else {
            throw fail("not configured")
        }
        // A size from outside (handoff import) was not checked by SET_VRING_NUM: 0 would trap below.
        guard num >= 1, num <= 32768 else { throw fail("size \(num) is not in 1...32768") }
        let layout = self.layout
        if layout == .split && num & (num - 1) != 0 {
            throw fail("split ring size \(num) is not a power of two")
        }
        let sizes = layout.areaSizes(size: Int(num), eventIndex: features & VirtioFeatures.ringEventIdx.rawValue != 0)
        let names = layout == .split ? ("descriptor table", "available ring", "used ring")
                                     : ("descriptor ring", "driver event area", "device event area")
        let aligns = layout.areaAlignments
        func area(_ name: String, _ address: UInt64, _ size: UInt64, _ align: UInt64) throws(VhostUserError) -> UnsafeMutableRawPointer {
            guard address % align == 0 else { throw fail("\(name) at user address 0x\(hex(address)) is not \(align)-byte aligned") }
            guard let p = memory.translate(user: address, length: size) else {
                throw fail("\(name) at user address 0x\(hex(address)) (\(size) bytes) is not inside one memory region")
            }
            return p
        }
        // Checked before any setup exists: nothing is written into the ring from a bad position.
        let base = try startPosition(i, raw: v.baseNum, size: num, request: request)
        let desc = try area(names.0, addr.descriptor, UInt64(sizes.descriptors), UInt64(aligns.descriptors))
        let driver = try area(names.1, addr.available, UInt64(sizes.driver), UInt64(aligns.driver))
        let device = try area(names.2, addr.used, UInt64(sizes.device), UInt64(aligns.device))
        return VringSetup(index: i, size: Int(num), layout: layout, descriptors: desc, driverArea: driver,
                          deviceArea: device, base: base, kick: v.kick.object, call: v.call.object, err: v.err.object,
                          enabled: v.enabled, features: features, memory: memory,
                          inflight: inflight.flatMap { $0.queueSize == Int(num) && $0.layout == layout ? $0 : nil })
    }

    /// The position ring `i` starts from: `raw` (SET_VRING_BASE's value) decoded for the acked
    /// layout, else where the ring last stopped; checked against `size` when it is known. Every
    /// position from outside (SET_VRING_BASE, handoff import) passes here before a ring starts.
    func startPosition(_ i: Int, raw: UInt32?, size: UInt32?, request: VhostUserRequest) throws(VhostUserError) -> VirtqueuePosition {
        let layout = self.layout
        let base: VirtqueuePosition
        if let raw {
            guard let b = VirtqueuePosition.decode(raw, layout: layout) else {
                throw VhostUserError(request: request, reason: .ring(index: i, "base \(raw) does not fit a split ring's 16-bit index"))
            }
            base = b
        } else {
            base = vrings[i].base
        }
        if let size, let why = base.problem(size: Int(size), layout: layout) {
            let what = raw.map { "base 0x\(hex(UInt64($0)))" } ?? "stored position"
            throw VhostUserError(request: request, reason: .ring(index: i, "\(what) refused: \(why)"))
        }
        return base
    }

    /// Puts a new memory table in place, then re-translates the started rings against it. The old
    /// table is released by this session here; it is unmapped once no `VringSetup` holds it.
    func replaceMemory(_ regions: [GuestRegionMapping], _ events: inout [VhostUserEvent], request: VhostUserRequest) throws(VhostUserError) {
        let new = try VhostUserGuestMemory(regions: regions, generation: memoryGeneration + 1, request: request)
        memoryGeneration += 1
        memory = new
        events.append(.memoryTableReplaced(new))
        var firstError: VhostUserError?
        for i in vrings.indices where vrings[i].started {
            do { try refresh(i, &events, request: request) } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
        try tryStartAll(&events, request: request)
    }

    /// Refuses a memory table whose mappings would cover more than `maxMemoryBytes` of address
    /// space. Checked before any region is mapped, so a refused table leaves the previous one as it was.
    func checkMemoryLimit(_ regions: [MemoryRegionPayload], request: VhostUserRequest) throws(VhostUserError) {
        var total: UInt64 = 0
        var overflow = false
        for r in regions {
            let (end, o1) = r.mmapOffset.addingReportingOverflow(r.size)
            let (sum, o2) = total.addingReportingOverflow(end)
            overflow = overflow || o1 || o2
            total = sum
        }
        let limit = configuration.maxMemoryBytes
        guard !overflow, total <= limit else {
            let amount = overflow ? "more than 2^64 bytes" : "0x\(hex(total)) bytes"
            throw VhostUserError(request: request, reason: .memory(
                "the memory table would map \(amount) (mmap offset + size over \(regions.count) regions), more than this "
                + "port's limit of 0x\(hex(limit)) bytes (the port key max-memory=SIZE raises it)"))
        }
    }

    /// Tries every ring, so one ring's error does not keep the others from starting; throws the first.
    func tryStartAll(_ events: inout [VhostUserEvent], request: VhostUserRequest) throws(VhostUserError) {
        var firstError: VhostUserError?
        for i in vrings.indices {
            do { try tryStart(i, &events, request: request) } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }

    /// RESET_DEVICE: every ring stopped and forgotten, memory released, features un-acked; the
    /// owner and protocol features stay (spec: "The back-end retains ownership of the device").
    func resetDevice(_ events: inout [VhostUserEvent]) {
        for i in vrings.indices {
            stop(i, &events)
            vrings[i].closeAll()
            vrings[i] = VringConfig()
        }
        memory = nil
        inflight = nil
        ackedFeatures = nil
        status = 0
        netConfig = configuration.netConfig
        events.append(.deviceReset)
    }
}
