// Layered validation of a well-framed request, in the order rust-vmm's vhost crate checks (header
// first — see VhostUserHeader.validate — then payload size, then file descriptors, then fields):
//  1. the request code is known and implemented;
//  2. the payload has exactly the size of the request's payload type (variable ones bounded);
//  3. descriptors come only with requests that carry them (spec "Communication" lists them), in
//     the number the request takes; any other descriptor is closed at once;
//  4. field checks that need no session state: vring index < number of queues (compared as the
//     full 32-bit value, never truncated), NOFD bit vs. descriptor, undefined bits zero.
// On any failure every descriptor of the message is closed before the error is returned.

/// How many descriptors a request takes.
enum FDPolicy {
    case none
    case one
    /// One per memory region (SET_MEM_TABLE).
    case perRegion
    /// REM_MEM_REG: none, but the spec lets a back-end accept one and close it unused.
    case toleratedOne
    /// SET_VRING_KICK/CALL/ERR: one, unless the NOFD bit is set.
    case vringFile
}

enum PayloadKind {
    case none, u64, vringState, vringAddress, memoryTable, memoryRegion, log, inflight, config
}

extension VhostUserRequest {
    /// Request payload type and descriptors, per the spec's `:request payload:` lines.
    var requestLayout: (PayloadKind, FDPolicy)? {
        switch self {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum,
             .resetDevice, .getMaxMemSlots, .getStatus:
            return (.none, .none)
        case .setFeatures, .setProtocolFeatures, .sendRARP, .netSetMTU, .setStatus:
            return (.u64, .none)
        case .setMemTable: return (.memoryTable, .perRegion)
        case .setLogBase: return (.log, .one)
        case .setLogFD, .setBackendReqFD: return (.none, .one)
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable, .setVringEndian, .vringKick:
            return (.vringState, .none)
        case .setVringAddr: return (.vringAddress, .none)
        case .setVringKick, .setVringCall, .setVringErr: return (.u64, .vringFile)
        case .getConfig, .setConfig: return (.config, .none)
        case .getInflightFD: return (.inflight, .none)
        case .setInflightFD: return (.inflight, .one)
        case .addMemReg: return (.memoryRegion, .one)
        case .remMemReg: return (.memoryRegion, .toleratedOne)
        case .iotlbMsg, .createCryptoSession, .closeCryptoSession, .postcopyAdvise, .postcopyListen,
             .postcopyEnd, .gpuSetSocket, .getSharedObject, .setDeviceStateFD, .checkDeviceState:
            return nil
        }
    }
}

public struct VhostUserMessageValidator: Sendable {
    /// VHOST_MEMORY_BASELINE_NREGIONS: the most regions one SET_MEM_TABLE carries (QEMU's limit,
    /// and one fd each: 8 fds fit in one SCM_RIGHTS message everywhere).
    public static let maxMemTableRegions = 8

    /// Number of virtqueues (2 × queue pairs); every vring index must be below it.
    public var queueCount: Int

    public init(queueCount: Int) { self.queueCount = queueCount }

    /// Decodes and validates a request whose header already passed `VhostUserHeader.validate`.
    /// Takes ownership of `fds`: they are in the returned message, or closed.
    public func decodeRequest(header: VhostUserHeader, payload bytes: [UInt8], fds: [Int32]) throws(VhostUserError) -> VhostUserMessage {
        var ok = false
        defer { if !ok { for fd in fds { closeFD(fd) } } }
        let message = try decode(header: header, bytes: bytes, fds: fds)
        ok = true
        return message
    }

    /// Parses one whole request — header and payload bytes as they came off the wire — plus its
    /// descriptors: the entry point for an I/O loop that does its own reading. Header errors are
    /// fatal (`error.isFatal`); the descriptors are in the message or closed.
    public func decodeRequest(bytes: [UInt8], fds: [Int32]) throws(VhostUserError) -> VhostUserMessage {
        let header: VhostUserHeader
        do {
            header = try VhostUserHeader.decode(bytes, expectReply: false)
        } catch {
            for fd in fds { closeFD(fd) }
            throw error
        }
        return try decodeRequest(header: header, payload: Array(bytes.dropFirst(VhostUserHeader.byteCount)), fds: fds)
    }

    private func decode(header: VhostUserHeader, bytes: [UInt8], fds: [Int32]) throws(VhostUserError) -> VhostUserMessage {
        guard let request = header.knownRequest else {
            throw VhostUserError(code: header.request, request: nil, reason: .unknownRequest)
        }
        func fail(_ reason: VhostUserError.Reason) -> VhostUserError { VhostUserError(request: request, reason: reason) }
        guard let (kind, fdPolicy) = request.requestLayout else {
            throw fail(.unsupported("this back-end does not implement \(request)"))
        }
        guard bytes.count == Int(header.size) else {
            throw fail(.payloadSize(got: bytes.count, expected: "\(header.size) (the header's size)"))
        }
        let payload = try Self.decodePayload(kind, bytes, request: request)

        // Descriptors.
        var kept = fds
        switch fdPolicy {
        case .none:
            if !fds.isEmpty { throw fail(.unexpectedFDs(fds.count)) }
        case .one:
            if fds.count != 1 { throw fail(.fdCount(got: fds.count, expected: 1)) }
        case .perRegion:
            guard case let .memoryTable(regions) = payload else { break }
            if fds.count != regions.count { throw fail(.fdCount(got: fds.count, expected: regions.count)) }
        case .toleratedOne:
            if fds.count > 1 { throw fail(.fdCount(got: fds.count, expected: 0)) }
            for fd in fds { closeFD(fd) }   // "the back-end MUST close it without using it otherwise"
            kept = []
        case .vringFile:
            guard case let .u64(v) = payload else { break }
            let undefined = v & ~(VringFilePayload.indexMask | VringFilePayload.noFDFlag)
            if undefined != 0 { throw fail(.reservedBits("vring file u64", undefined)) }
            if v & VringFilePayload.noFDFlag != 0 {
                if !fds.isEmpty { throw fail(.invalid("NOFD bit set but \(fds.count) file descriptor(s) sent")) }
            } else if fds.count != 1 {
                throw fail(.fdCount(got: fds.count, expected: 1))
            }
            try checkIndex(UInt64(v & VringFilePayload.indexMask), request)
        }

        // Vring indices: compared in full width, so 0x10000 + 1 is out of range, not queue 1.
        switch payload {
        case let .vringState(s): try checkIndex(UInt64(s.index), request)
        case let .vringAddress(a): try checkIndex(UInt64(a.index), request)
        default: break
        }
        return VhostUserMessage(header: header, payload: payload, fds: kept)
    }

    private func checkIndex(_ index: UInt64, _ request: VhostUserRequest) throws(VhostUserError) {
        if index >= UInt64(queueCount) {
            throw VhostUserError(request: request, reason: .queueIndex(index, queues: queueCount))
        }
    }

    static func decodePayload(_ kind: PayloadKind, _ bytes: [UInt8], request: VhostUserRequest) throws(VhostUserError) -> VhostUserPayload {
        func exact(_ n: Int) throws(VhostUserError) {
            if bytes.count != n { throw VhostUserError(request: request, reason: .payloadSize(got: bytes.count, expected: "\(n)")) }
        }
        var r = WireReader(bytes)
        switch kind {
        case .none:
            try exact(0)
            return .none
        case .u64:
            try exact(8)
            return .u64(r.u64())
        case .vringState:
            try exact(VringStatePayload.size)
            return .vringState(VringStatePayload(index: r.u32(), num: r.u32()))
        case .vringAddress:
            try exact(VringAddressPayload.size)
            return .vringAddress(VringAddressPayload(index: r.u32(), flags: r.u32(), descriptor: r.u64(),
                                                     used: r.u64(), available: r.u64(), log: r.u64()))
        case .memoryTable:
            // num u32 + padding u32 + num × region; QEMU and DPDK send exactly that many regions.
            guard bytes.count >= 8 else {
                throw VhostUserError(request: request, reason: .payloadSize(got: bytes.count, expected: "at least 8"))
            }
            let n = Int(r.u32())
            r.skip(4)
            guard n <= maxMemTableRegions else {
                throw VhostUserError(request: request, reason: .tooManyRegions(n, max: maxMemTableRegions))
            }
            try exact(8 + n * MemoryRegionPayload.size)
            return .memoryTable((0..<n).map { _ in VhostUserPayload.decodeRegion(&r) })
        case .memoryRegion:
            try exact(8 + MemoryRegionPayload.size)
            r.skip(8)
            return .memoryRegion(VhostUserPayload.decodeRegion(&r))
        case .log:
            try exact(LogPayload.size)
            return .log(LogPayload(size: r.u64(), offset: r.u64()))
        case .inflight:
            try exact(InflightPayload.size)
            return .inflight(InflightPayload(mmapSize: r.u64(), mmapOffset: r.u64(), numQueues: r.u16(), queueSize: r.u16()))
        case .config:
            guard bytes.count >= ConfigPayload.headerSize else {
                throw VhostUserError(request: request, reason: .payloadSize(got: bytes.count, expected: "at least 12"))
            }
            let offset = r.u32(), size = r.u32(), flags = r.u32()
            guard size <= UInt32(ConfigPayload.maxSize) else {
                throw VhostUserError(request: request, reason: .invalid("config size \(size) exceeds \(ConfigPayload.maxSize)"))
            }
            try exact(ConfigPayload.headerSize + Int(size))
            return .config(ConfigPayload(offset: offset, size: size, flags: flags, bytes: r.rest(Int(size))))
        }
    }

    /// Decodes a back-end reply to `request` (front-end side). Replies carry no descriptors here.
    public static func decodeReply(header: VhostUserHeader, payload bytes: [UInt8], fds: [Int32],
                                   to request: VhostUserRequest) throws(VhostUserError) -> VhostUserMessage {
        // GET_INFLIGHT_FD's reply carries the buffer's descriptor; no other reply carries any.
        let fdsAllowed = request == .getInflightFD ? 1 : 0
        var ok = false
        defer { if !ok { for fd in fds { closeFD(fd) } } }
        guard header.request == request.rawValue else {
            throw VhostUserError(request: request, reason: .unexpectedReply("reply is for request \(header.request)"))
        }
        guard fds.count == fdsAllowed else { throw VhostUserError(request: request, reason: .fdCount(got: fds.count, expected: fdsAllowed)) }
        let kind: PayloadKind
        switch request {
        case .getVringBase: kind = .vringState
        case .getConfig: kind = .config
        case .getInflightFD: kind = .inflight
        default: kind = .u64
        }
        let payload: VhostUserPayload
        if request == .getConfig && bytes.isEmpty {
            // A zero-length GET_CONFIG reply is the spec's error indication.
            throw VhostUserError(request: request, reason: .peerFailed(1))
        }
        payload = try decodePayload(kind, bytes, request: request)
        ok = true
        return VhostUserMessage(header: header, payload: payload, fds: fds)
    }
}
