import WarmstartSpec
import WarmstartVhostUserWire

/// What the front-end asks for.
public struct VhostUserFrontendOptions: Sendable {
    public var packed: Bool
    public var queuePairs: Int
    public var mergeableRxBuffers: Bool
    /// Features to ack when offered (the intersection with the offer is acked).
    public var wantedFeatures: UInt64
    /// Features without which the front-end refuses the back-end (error names them).
    public var requiredFeatures: UInt64
    public var wantedProtocolFeatures: UInt64

    public init(packed: Bool = false, queuePairs: Int = 1, mergeableRxBuffers: Bool = true,
                extraFeatures: UInt64 = VirtioFeatures([.ringEventIdx, .ringIndirectDesc]).rawValue,
                wantedProtocolFeatures: UInt64 = VhostUserProtocolFeature.mask([.mq, .replyAck, .config, .status, .configureMemSlots, .netMTU, .rarp, .resetDevice])) {
        self.packed = packed
        self.queuePairs = queuePairs
        self.mergeableRxBuffers = mergeableRxBuffers
        var wanted = VirtioFeatures.version1.rawValue | extraFeatures
        var required = VirtioFeatures.version1.rawValue
        if packed { wanted |= VirtioFeatures.ringPacked.rawValue; required |= VirtioFeatures.ringPacked.rawValue }
        if mergeableRxBuffers { wanted |= VirtioFeatures.mrgRxbuf.rawValue }
        if queuePairs > 1 { wanted |= VirtioFeatures.mq.rawValue; required |= VirtioFeatures.mq.rawValue }
        self.wantedFeatures = wanted
        self.requiredFeatures = required
        self.wantedProtocolFeatures = wantedProtocolFeatures
    }
}

/// A region of the front-end's memory, shared by descriptor.
public struct FrontendMemoryRegion: Sendable, Equatable {
    public var fd: Int32
    public var mmapOffset: UInt64
    public var guestAddress: UInt64
    public var userAddress: UInt64
    public var size: UInt64
    public init(fd: Int32, mmapOffset: UInt64 = 0, guestAddress: UInt64, userAddress: UInt64, size: UInt64) {
        self.fd = fd; self.mmapOffset = mmapOffset; self.guestAddress = guestAddress
        self.userAddress = userAddress; self.size = size
    }
    var payload: MemoryRegionPayload {
        MemoryRegionPayload(guestAddress: guestAddress, size: size, userAddress: userAddress, mmapOffset: mmapOffset)
    }
}

/// One ring as the front-end describes it (user addresses in the front-end's address space).
public struct FrontendRing: Sendable {
    public var index: Int
    public var size: Int
    public var descriptorAddress: UInt64
    /// Split: available ring. Packed: driver event area.
    public var driverAddress: UInt64
    /// Split: used ring. Packed: device event area.
    public var deviceAddress: UInt64
    /// SET_VRING_BASE `num` (see `VirtqueuePosition.encode`).
    public var base: UInt32
    public var kickFD: Int32?
    public var callFD: Int32?
    public init(index: Int, size: Int, descriptorAddress: UInt64, driverAddress: UInt64, deviceAddress: UInt64,
                base: UInt32 = 0, kickFD: Int32?, callFD: Int32?) {
        self.index = index; self.size = size; self.descriptorAddress = descriptorAddress
        self.driverAddress = driverAddress; self.deviceAddress = deviceAddress; self.base = base
        self.kickFD = kickFD; self.callFD = callFD
    }
}

public struct VhostUserNegotiation: Sendable, Equatable {
    public var offeredFeatures: UInt64
    public var features: UInt64
    public var protocolFeatures: UInt64
    public var maxQueuePairs: Int?
    public var maxMemorySlots: Int?
}

/// The front-end side (what QEMU or DPDK's virtio-user do): drives a back-end over a channel
/// through the standard sequence. Blocking; one request at a time.
public final class VhostUserFrontend {
    public let channel: VhostUserChannel
    public let options: VhostUserFrontendOptions
    public private(set) var negotiation: VhostUserNegotiation?

    public init(channel: VhostUserChannel, options: VhostUserFrontendOptions) {
        self.channel = channel
        self.options = options
    }

    var replyAck: Bool { (negotiation?.protocolFeatures ?? 0) & VhostUserProtocolFeature.replyAck.mask != 0 }

    /// SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
    /// SET_FEATURES.
    public func negotiate() throws(VhostUserError) -> VhostUserNegotiation {
        try send(.setOwner)
        let offered = try u64(call(.getFeatures), .getFeatures)
        let missing = options.requiredFeatures & ~offered
        guard missing == 0 else {
            throw VhostUserError(request: .getFeatures, reason: .missingFeatures(VirtioFeatures.names(missing)))
        }
        var n = VhostUserNegotiation(offeredFeatures: offered, features: offered & options.wantedFeatures,
                                     protocolFeatures: 0, maxQueuePairs: nil, maxMemorySlots: nil)
        if offered & VirtioFeatures.protocolFeatures.rawValue != 0 {
            n.features |= VirtioFeatures.protocolFeatures.rawValue
            let proto = try u64(call(.getProtocolFeatures), .getProtocolFeatures)
            n.protocolFeatures = proto & options.wantedProtocolFeatures
            try send(.setProtocolFeatures, .u64(n.protocolFeatures))
            negotiation = n   // REPLY_ACK applies from here on
            if n.protocolFeatures & VhostUserProtocolFeature.mq.mask != 0 {
                let q = Int(try u64(call(.getQueueNum), .getQueueNum))
                n.maxQueuePairs = q
                guard q >= options.queuePairs else {
                    throw VhostUserError(request: .getQueueNum, reason: .invalid("back-end has \(q) queue pairs, \(options.queuePairs) wanted"))
                }
            }
            if n.protocolFeatures & VhostUserProtocolFeature.configureMemSlots.mask != 0 {
                n.maxMemorySlots = Int(try u64(call(.getMaxMemSlots), .getMaxMemSlots))
            }
        } else if options.queuePairs > 1 {
            throw VhostUserError(request: .getFeatures, reason: .missingFeatures(["PROTOCOL_FEATURES (needed for more than one queue pair)"]))
        }
        negotiation = n
        try send(.setFeatures, .u64(n.features))
        return n
    }

    public func setMemoryTable(_ regions: [FrontendMemoryRegion]) throws(VhostUserError) {
        try send(.setMemTable, .memoryTable(regions.map(\.payload)), fds: regions.map(\.fd))
    }

    public func addMemoryRegion(_ r: FrontendMemoryRegion) throws(VhostUserError) {
        try send(.addMemReg, .memoryRegion(r.payload), fds: [r.fd])
    }

    public func removeMemoryRegion(_ r: FrontendMemoryRegion) throws(VhostUserError) {
        try send(.remMemReg, .memoryRegion(r.payload))
    }

    /// SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL, and
    /// SET_VRING_ENABLE when protocol features were negotiated.
    public func startRing(_ r: FrontendRing) throws(VhostUserError) {
        let i = UInt32(r.index)
        try send(.setVringNum, .vringState(VringStatePayload(index: i, num: UInt32(r.size))))
        try send(.setVringBase, .vringState(VringStatePayload(index: i, num: r.base)))
        try send(.setVringAddr, .vringAddress(VringAddressPayload(index: i, descriptor: r.descriptorAddress,
                                                                  used: r.deviceAddress, available: r.driverAddress)))
        try send(.setVringKick, .u64(VringFilePayload(index: UInt8(r.index), noFD: r.kickFD == nil).u64), fds: r.kickFD.map { [$0] } ?? [])
        try send(.setVringCall, .u64(VringFilePayload(index: UInt8(r.index), noFD: r.callFD == nil).u64), fds: r.callFD.map { [$0] } ?? [])
        if (negotiation?.features ?? 0) & VirtioFeatures.protocolFeatures.rawValue != 0 {
            try send(.setVringEnable, .vringState(VringStatePayload(index: i, num: 1)))
        }
    }

    /// GET_VRING_BASE: stops the ring in the back-end and returns its position.
    public func stopRing(_ index: Int) throws(VhostUserError) -> UInt32 {
        let reply = try call(.getVringBase, .vringState(VringStatePayload(index: UInt32(index), num: 0)))
        guard case let .vringState(s) = reply.payload, s.index == UInt32(index) else {
            throw VhostUserError(request: .getVringBase, reason: .unexpectedReply("wrong ring in reply"))
        }
        return s.num
    }

    public func setStatus(_ status: UInt8) throws(VhostUserError) { try send(.setStatus, .u64(UInt64(status))) }
    public func getStatus() throws(VhostUserError) -> UInt8 { UInt8(truncatingIfNeeded: try u64(call(.getStatus), .getStatus)) }

    public func getConfig(offset: UInt32, size: UInt32) throws(VhostUserError) -> [UInt8] {
        let reply = try call(.getConfig, .config(ConfigPayload(offset: offset, size: size, bytes: [UInt8](repeating: 0, count: Int(size)))))
        guard case let .config(c) = reply.payload, c.offset == offset, c.size == size else {
            throw VhostUserError(request: .getConfig, reason: .unexpectedReply("config reply does not match the request"))
        }
        return c.bytes
    }

    /// SET_CONFIG: a driver write of `bytes` at `offset` of the device configuration space
    /// (virtio-net: only the MAC is writable by a driver, §5.1.4).
    public func setConfig(offset: UInt32, bytes: [UInt8]) throws(VhostUserError) {
        try send(.setConfig, .config(ConfigPayload(offset: offset, size: UInt32(bytes.count), bytes: bytes)))
    }

    /// NET_SET_MTU: tells the back-end the MTU the driver uses (with VIRTIO_NET_F_MTU and the
    /// NET_MTU protocol feature, as QEMU does for `host_mtu`).
    public func setMTU(_ mtu: Int) throws(VhostUserError) { try send(.netSetMTU, .u64(UInt64(mtu))) }

    /// GET_INFLIGHT_FD: the back-end's inflight buffer for `numQueues` queues of `queueSize`;
    /// the returned descriptor is the caller's.
    public func getInflightFD(numQueues: Int, queueSize: Int) throws(VhostUserError) -> (InflightPayload, Int32) {
        let reply = try call(.getInflightFD, .inflight(InflightPayload(mmapSize: 0, mmapOffset: 0,
                                                                          numQueues: UInt16(numQueues), queueSize: UInt16(queueSize))))
        guard case let .inflight(p) = reply.payload, let fd = reply.fds.first else {
            reply.closeFDs()
            throw VhostUserError(request: .getInflightFD, reason: .unexpectedReply("no inflight description"))
        }
        return (p, fd)
    }

    /// SET_INFLIGHT_FD: hands a (previously obtained) inflight buffer back to a back-end.
    public func setInflightFD(_ p: InflightPayload, fd: Int32) throws(VhostUserError) {
        try send(.setInflightFD, .inflight(p), fds: [fd])
    }

    // MARK: plumbing

    /// Sends a request without an explicit reply; with REPLY_ACK, waits for the ack and throws on
    /// a failure ack.
    public func send(_ request: VhostUserRequest, _ payload: VhostUserPayload = .none, fds: [Int32] = []) throws(VhostUserError) {
        let ack = replyAck && !request.hasExplicitReply
        try channel.send(VhostUserMessage(request: request, payload: payload, fds: fds, needReply: ack))
        if ack {
            let v = try u64(readReply(request), request)
            if v != 0 { throw VhostUserError(request: request, reason: .peerFailed(v)) }
        }
    }

    /// Sends a request that has an explicit reply and returns the reply.
    public func call(_ request: VhostUserRequest, _ payload: VhostUserPayload = .none) throws(VhostUserError) -> VhostUserMessage {
        try channel.send(VhostUserMessage(request: request, payload: payload))
        return try readReply(request)
    }

    func readReply(_ request: VhostUserRequest) throws(VhostUserError) -> VhostUserMessage {
        var frame: VhostUserFrame?
        while frame == nil { frame = try channel.receiveFrame() }
        return try VhostUserMessageValidator.decodeReply(header: frame!.header, payload: frame!.payload,
                                                         fds: frame!.fds, to: request)
    }

    func u64(_ m: VhostUserMessage, _ request: VhostUserRequest) throws(VhostUserError) -> UInt64 {
        guard case let .u64(v) = m.payload else {
            throw VhostUserError(request: request, reason: .unexpectedReply("expected a u64"))
        }
        return v
    }
}
