// Typed payloads (spec "Payload") and the message that carries one. Sizes are the C structs'
// sizes as QEMU and DPDK put them on the wire.

/// `struct vhost_vring_state`: index u32, num u32 (8 bytes).
public struct VringStatePayload: Sendable, Equatable {
    public static let size = 8
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
}

/// `struct vhost_vring_addr` (40 bytes). Note the wire order: descriptor, used, available.
public struct VringAddressPayload: Sendable, Equatable {
    public static let size = 40
    /// VHOST_VRING_F_LOG: log used-ring writes at `log` (dirty logging, not supported here).
    public static let flagLog: UInt32 = 1 << 0
    public var index: UInt32
    public var flags: UInt32
    public var descriptor: UInt64
    public var used: UInt64
    public var available: UInt64
    public var log: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64 = 0) {
        self.index = index; self.flags = flags; self.descriptor = descriptor
        self.used = used; self.available = available; self.log = log
    }
}

/// One memory region: guest address, size, user address, mmap offset (32 bytes).
public struct MemoryRegionPayload: Sendable, Equatable {
    public static let size = 32
    public var guestAddress: UInt64
    public var size: UInt64
    public var userAddress: UInt64
    public var mmapOffset: UInt64
    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress; self.size = size; self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }
}

/// `VhostUserLog`: size u64, offset u64 (16 bytes).
public struct LogPayload: Sendable, Equatable {
    public static let size = 16
    public var size: UInt64
    public var offset: UInt64
    public init(size: UInt64, offset: UInt64) { self.size = size; self.offset = offset }
}

/// `VhostUserInflight`: mmap_size u64, mmap_offset u64, num_queues u16, queue_size u16. The C
/// struct is not packed, so it is 24 bytes on the wire (4 bytes of tail padding).
public struct InflightPayload: Sendable, Equatable {
    public static let size = 24
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var numQueues: UInt16
    public var queueSize: UInt16
    public init(mmapSize: UInt64, mmapOffset: UInt64, numQueues: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize; self.mmapOffset = mmapOffset; self.numQueues = numQueues; self.queueSize = queueSize
    }
}

/// `VhostUserConfig`: offset u32, size u32, flags u32, payload[size] (size ≤ 256).
public struct ConfigPayload: Sendable, Equatable {
    public static let headerSize = 12
    public static let maxSize = 256
    /// flags: 0 = a driver write of writable fields, 1 = live migration (may write anything).
    public static let flagMigration: UInt32 = 1
    public var offset: UInt32
    public var size: UInt32
    public var flags: UInt32
    public var bytes: [UInt8]
    public init(offset: UInt32, size: UInt32, flags: UInt32 = 0, bytes: [UInt8]) {
        self.offset = offset; self.size = size; self.flags = flags; self.bytes = bytes
    }
}

/// The u64 of SET_VRING_KICK/CALL/ERR: bits 0-7 the vring index, bit 8 "no fd" (poll instead).
public struct VringFilePayload: Sendable, Equatable {
    public static let indexMask: UInt64 = 0xff
    public static let noFDFlag: UInt64 = 1 << 8
    public var index: UInt8
    public var noFD: Bool
    public init(index: UInt8, noFD: Bool) { self.index = index; self.noFD = noFD }
    public var u64: UInt64 { UInt64(index) | (noFD ? Self.noFDFlag : 0) }
}

public enum VhostUserPayload: Sendable, Equatable {
    case none
    case u64(UInt64)
    case vringState(VringStatePayload)
    case vringAddress(VringAddressPayload)
    /// SET_MEM_TABLE: num_regions u32, padding u32, then the regions.
    case memoryTable([MemoryRegionPayload])
    /// ADD_MEM_REG / REM_MEM_REG: padding u64, then one region.
    case memoryRegion(MemoryRegionPayload)
    case log(LogPayload)
    case inflight(InflightPayload)
    case config(ConfigPayload)

    public func encode(into w: inout WireWriter) {
        switch self {
        case .none: break
        case let .u64(v): w.u64(v)
        case let .vringState(s): w.u32(s.index); w.u32(s.num)
        case let .vringAddress(a):
            w.u32(a.index); w.u32(a.flags); w.u64(a.descriptor); w.u64(a.used); w.u64(a.available); w.u64(a.log)
        case let .memoryTable(regions):
            w.u32(UInt32(regions.count)); w.u32(0)
            for r in regions { Self.encode(r, into: &w) }
        case let .memoryRegion(r): w.u64(0); Self.encode(r, into: &w)
        case let .log(l): w.u64(l.size); w.u64(l.offset)
        case let .inflight(i): w.u64(i.mmapSize); w.u64(i.mmapOffset); w.u16(i.numQueues); w.u16(i.queueSize); w.zeros(4)
        case let .config(c): w.u32(c.offset); w.u32(c.size); w.u32(c.flags); w.append(c.bytes)
        }
    }

    static func encode(_ r: MemoryRegionPayload, into w: inout WireWriter) {
        w.u64(r.guestAddress); w.u64(r.size); w.u64(r.userAddress); w.u64(r.mmapOffset)
    }

    static func decodeRegion(_ r: inout WireReader) -> MemoryRegionPayload {
        MemoryRegionPayload(guestAddress: r.u64(), size: r.u64(), userAddress: r.u64(), mmapOffset: r.u64())
    }

    public var encodedSize: Int {
        var w = WireWriter()
        encode(into: &w)
        return w.bytes.count
    }
}

/// A whole message: header, typed payload, and the descriptors that came with it. The message owns
/// its fds until a consumer takes them; whoever drops a message unconsumed must call `closeFDs()`.
public struct VhostUserMessage: Sendable, Equatable {
    public var header: VhostUserHeader
    public var payload: VhostUserPayload
    public var fds: [Int32]

    public init(header: VhostUserHeader, payload: VhostUserPayload, fds: [Int32] = []) {
        self.header = header
        self.payload = payload
        self.fds = fds
    }

    /// A front-end request.
    public init(request: VhostUserRequest, payload: VhostUserPayload = .none, fds: [Int32] = [], needReply: Bool = false) {
        let flags = VhostUserHeader.version | (needReply ? VhostUserHeader.needReplyFlag : 0)
        self.init(header: VhostUserHeader(request: request.rawValue, flags: flags, size: UInt32(payload.encodedSize)),
                  payload: payload, fds: fds)
    }

    /// A back-end reply to `request`.
    public static func reply(to request: UInt32, payload: VhostUserPayload, fds: [Int32] = []) -> VhostUserMessage {
        VhostUserMessage(header: VhostUserHeader(request: request, flags: VhostUserHeader.version | VhostUserHeader.replyFlag,
                                                 size: UInt32(payload.encodedSize)),
                         payload: payload, fds: fds)
    }

    public var request: VhostUserRequest? { header.knownRequest }

    /// Header and payload bytes, ready to send (fds go beside them as SCM_RIGHTS).
    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: VhostUserHeader.byteCount + Int(header.size))
        var h = header
        h.size = UInt32(payload.encodedSize)
        h.encode(into: &w)
        payload.encode(into: &w)
        return w.bytes
    }

    public func closeFDs() { for fd in fds { closeFD(fd) } }
}
