import WarmstartSpec
import WarmstartVhostUserWire

/// Everything the ring layer needs to build a queue for one started vring. The pointers stay
/// valid, and the eventfds open, as long as this struct (or a copy) is alive: it holds the
/// memory table and the descriptor objects by reference.
public struct VringSetup: @unchecked Sendable {
    public var index: Int
    /// Number of descriptors (queue size).
    public var size: Int
    public var layout: VirtqueueLayout
    /// Split: descriptor table. Packed: descriptor ring.
    public var descriptors: UnsafeMutableRawPointer
    /// Split: available ring. Packed: driver event suppression area.
    public var driverArea: UnsafeMutableRawPointer
    /// Split: used ring. Packed: device event suppression area.
    public var deviceArea: UnsafeMutableRawPointer
    public var base: VirtqueuePosition
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
    /// index) is checked like SET_VRING_BASE's (`VirtqueuePosition.problem`) before use. Nothing reads
    /// them yet: rings start from SET_VRING_BASE.
    public var inflightRegion: UnsafeMutableRawPointer? { inflight?.queueRegion(index) }
    public var kickFD: Int32? { kick?.fd }
    public var callFD: Int32? { call?.fd }
    public var errFD: Int32? { err?.fd }
    public var eventIndex: Bool { features & VirtioFeatures.ringEventIdx.rawValue != 0 }
    public var mergeableRxBuffers: Bool { features & VirtioFeatures.mrgRxbuf.rawValue != 0 }
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
    var base = VirtqueuePosition()
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
}
