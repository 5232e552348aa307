/// Split or packed virtqueue (virtio 1.2 §2.7 / §2.8), from the acked VIRTIO_F_RING_PACKED.
public enum VringLayout: String, Sendable {
    case split, packed
}

/// A ring's position, as SET_VRING_BASE sets it and GET_VRING_BASE returns it.
///
/// Encoding of the 32-bit `num` (spec, SET_VRING_BASE / GET_VRING_BASE):
/// - split: the next available-ring index to process (16 bits; the used index is read from the
///   used ring in guest memory);
/// - packed: bits 0-14 next available descriptor index, bit 15 driver (avail) wrap counter,
///   bits 16-30 next used descriptor index, bit 31 device (used) wrap counter.
///   Front-ends that only fill the low 16 bits (DPDK virtio-user) stopped the ring with used ==
///   avail, so when the high half is zero the used position is taken equal to the avail one.
public struct VringBase: Sendable, Equatable {
    public var lastAvailIndex: UInt16
    public var availWrapCounter: Bool
    public var lastUsedIndex: UInt16
    public var usedWrapCounter: Bool

    public init(lastAvailIndex: UInt16 = 0, availWrapCounter: Bool = true,
                lastUsedIndex: UInt16 = 0, usedWrapCounter: Bool = true) {
        self.lastAvailIndex = lastAvailIndex
        self.availWrapCounter = availWrapCounter
        self.lastUsedIndex = lastUsedIndex
        self.usedWrapCounter = usedWrapCounter
    }

    public static func decode(_ num: UInt32, layout: VringLayout) -> VringBase? {
        switch layout {
        case .split:
            guard num <= 0xffff else { return nil }
            return VringBase(lastAvailIndex: UInt16(num), availWrapCounter: true,
                             lastUsedIndex: UInt16(num), usedWrapCounter: true)
        case .packed:
            let avail = UInt16(num & 0x7fff), availWrap = num & (1 << 15) != 0
            let high = num >> 16
            if high == 0 {
                return VringBase(lastAvailIndex: avail, availWrapCounter: availWrap,
                                 lastUsedIndex: avail, usedWrapCounter: availWrap)
            }
            return VringBase(lastAvailIndex: avail, availWrapCounter: availWrap,
                             lastUsedIndex: UInt16(high & 0x7fff), usedWrapCounter: high & (1 << 15) != 0)
        }
    }

    /// Why this position cannot be used on a ring of `size` descriptors, or nil when it can.
    /// Split: any 16-bit avail/used index is legal (free-running; the ring walkers reduce it to a
    /// slot with `index & (size - 1)`). Packed: both positions are descriptor slots and must lie
    /// inside the ring (virtio 1.2 §2.8.1), or used descriptors would be written past its end.
    public func problem(size: Int, layout: VringLayout) -> String? {
        guard size >= 1 else { return "ring size \(size) is not in 1...32768" }
        switch layout {
        case .split:
            return nil
        case .packed:
            if Int(lastAvailIndex) >= size {
                return "packed ring position: next avail slot \(lastAvailIndex) is outside a ring of \(size) descriptors"
            }
            if Int(lastUsedIndex) >= size {
                return "packed ring position: next used slot \(lastUsedIndex) is outside a ring of \(size) descriptors"
            }
            return nil
        }
    }

    public func encode(layout: VringLayout) -> UInt32 {
        switch layout {
        case .split:
            return UInt32(lastAvailIndex)
        case .packed:
            let avail = UInt32(lastAvailIndex & 0x7fff) | (availWrapCounter ? 1 << 15 : 0)
            let used = UInt32(lastUsedIndex & 0x7fff) | (usedWrapCounter ? 1 << 15 : 0)
            return avail | used << 16
        }
    }
}

/// Everything the ring layer needs to build a queue for one started vring. The pointers stay
/// valid, and the eventfds open, as long as this struct (or a copy) is alive: it holds the
/// memory table and the descriptor objects by reference.
public struct VringSetup: @unchecked Sendable {
    public var index: Int
    /// Number of descriptors (queue size).
    public var size: Int
    public var layout: VringLayout
    /// Split: descriptor table. Packed: descriptor ring.
    public var descriptors: UnsafeMutableRawPointer
    /// Split: available ring. Packed: driver event suppression area.
    public var driverArea: UnsafeMutableRawPointer
    /// Split: used ring. Packed: device event suppression area.
    public var deviceArea: UnsafeMutableRawPointer
    public var base: VringBase
    /// nil: the front-end sent NOFD — poll the ring instead of waiting for kicks.
    public var kick: VhostUserEventFD?
    /// nil: no call descriptor (NOFD or not sent) — the front-end polls.
    public var call: VhostUserEventFD?
    public var err: VhostUserEventFD?
    public var enabled: Bool
    /// The acked virtio feature bits (EVENT_IDX, MRG_RXBUF, ... decide the datapath's behaviour).
    public var features: UInt64
    public var memory: VhostUserGuestMemory
    /// The inflight buffer (INFLIGHT_SHMFD), when it covers this ring; see `inflightRegion`.
    public var inflight: VhostUserInflightRegion?

    /// This ring's QueueRegionSplit / QueueRegionPacked in the inflight buffer. Its contents are the
    /// front-end's (shared memory): a position read from it (last_avail_idx, used_idx, a descriptor
    /// index) is checked like SET_VRING_BASE's (`VringBase.problem`) before use. Nothing reads
    /// them yet: rings start from SET_VRING_BASE.
    public var inflightRegion: UnsafeMutableRawPointer? { inflight?.queueRegion(index) }
    public var kickFD: Int32? { kick?.fd }
    public var callFD: Int32? { call?.fd }
    public var errFD: Int32? { err?.fd }
    public var eventIndex: Bool { features & VirtioNetFeature.ringEventIdx.mask != 0 }
    public var mergeableRxBuffers: Bool { features & VirtioNetFeature.mrgRxbuf.mask != 0 }
}

/// An eventfd (kick, call or err) received from the front-end, closed when the last holder lets
/// go — the same handshake as for memory: the session drops its reference when the front-end
/// replaces the descriptor, and a datapath still holding the previous `VringSetup` keeps the old
/// descriptor open (and its number not reused) until it switches to the new setup.
public final class VhostUserEventFD: @unchecked Sendable {
    public let fd: Int32
    public init(_ fd: Int32) { self.fd = fd }
    deinit { closeFD(fd) }
}

/// A descriptor slot: never set, NOFD (polling), or a received descriptor.
enum EventFDSlot {
    case unset
    case polling
    case fd(VhostUserEventFD)

    var object: VhostUserEventFD? { if case let .fd(f) = self { return f } else { return nil } }
    var isSet: Bool { if case .unset = self { return false } else { return true } }
}

/// Per-vring state the session accumulates from SET_VRING_* messages.
struct VringConfig {
    var num: UInt32?
    var address: VringAddressPayload?
    /// The position to start from: `baseNum` as SET_VRING_BASE sent it (decoded when the ring
    /// starts, when the layout is known), else `base` (where the ring last stopped).
    var base = VringBase()
    var baseNum: UInt32?
    var kick = EventFDSlot.unset
    var call = EventFDSlot.unset
    var err = EventFDSlot.unset
    var enabled = false
    var started = false

    mutating func closeAll() {
        kick = .unset
        call = .unset
        err = .unset
    }

    /// Byte sizes of the three areas (virtio 1.2 §2.7.5-2.7.8 split, §2.8.10 packed).
    static func areaSizes(num: Int, layout: VringLayout, eventIdx: Bool) -> (desc: UInt64, driver: UInt64, device: UInt64) {
        let n = UInt64(num)
        switch layout {
        case .split:
            let extra: UInt64 = eventIdx ? 2 : 0   // used_event / avail_event
            return (16 * n, 4 + 2 * n + extra, 4 + 8 * n + extra)
        case .packed:
            return (16 * n, 4, 4)
        }
    }
}
