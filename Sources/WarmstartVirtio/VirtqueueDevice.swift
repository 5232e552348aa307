import CWarmstartShim
import WarmstartMemory
import WarmstartPools
import WarmstartSpec

/// One piece of a guest buffer that is contiguous in host memory.
@usableFromInline struct Segment {
    var host: UnsafeMutableRawPointer
    var length: Int
}

/// One walked chain: what to return in the used ring and where its pieces are in the scratch.
@usableFromInline struct ChainInfo {
    var id: UInt16 = 0
    /// Descriptors it occupies in a packed ring (slots to skip); 1 for split.
    var descriptorCount: UInt16 = 0
    var segmentStart: Int32 = 0
    var segmentEnd: Int32 = 0
    /// Total bytes the chain's buffers hold.
    var capacity: Int = 0
    /// Bytes the device wrote (used len).
    var usedLength: UInt32 = 0
    /// `ChainError.rawValue`, or -1.
    var error: Int8 = -1
}

/// The device side of one virtqueue: what the vhost-user backend runs (§2.6.8 split used ring,
/// §2.7.1 packed used descriptors, §5.1.6 virtio-net). The layout is fixed at set-up; every guest-supplied index,
/// address and length is checked before use, and a bad chain costs only that chain.
///
/// Single-threaded: one queue is owned by one polling thread.
public final class VirtqueueDevice {
    public let layout: VirtqueueLayout
    public let size: Int
    public let options: VirtqueueOptions
    public let netHeaderSize: Int
    @usableFromInline let split: SplitRing?
    @usableFromInline let packed: PackedRing?
    @usableFromInline let memory: GuestMemoryMap

    /// The mutable per-queue state lives behind a pointer allocated at set-up, not in stored
    /// `var`s: a class's stored vars pay a dynamic exclusivity check on every access, which on
    /// this path cost more than the ring work (measured). Only the owner thread touches it.
    @usableFromInline struct State {
        var lastAvail: UInt16
        var lastUsed: UInt16
        var availWrap: Bool
        var usedWrap: Bool
        var signalledUsed: UInt16
        var signalledWrap: Bool
        var notifications: Bool = true
        var broken: Bool = false
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        var dropped: UInt64 = 0
        var allocFailures: UInt64 = 0
        var calls: UInt64 = 0
        var callsDropped: UInt64 = 0
        /// A call write slept until the watchdog interrupted it: the front-end made the call
        /// descriptor blocking and filled it. Calls to it are dropped (counted) without writing.
        var callStuck: Bool = false
    }
    @usableFromInline let st: UnsafeMutablePointer<State>
    @usableFromInline let errorCounts: UnsafeMutablePointer<UInt64>

    /// Split: next avail ring index to read. Packed: next descriptor slot to read.
    public internal(set) var lastAvailIndex: UInt16 {
        get { st.pointee.lastAvail } set { st.pointee.lastAvail = newValue }
    }
    /// Split: used idx shadow. Packed: next descriptor slot to write as used.
    public internal(set) var lastUsedIndex: UInt16 {
        get { st.pointee.lastUsed } set { st.pointee.lastUsed = newValue }
    }
    public internal(set) var availWrapCounter: Bool {
        get { st.pointee.availWrap } set { st.pointee.availWrap = newValue }
    }
    public internal(set) var usedWrapCounter: Bool {
        get { st.pointee.usedWrap } set { st.pointee.usedWrap = newValue }
    }
    /// Set when the guest broke the ring in a way one dropped chain cannot contain.
    public internal(set) var brokenReason: BrokenReason?
    public var isBroken: Bool { st.pointee.broken }
    /// Whether a call write to this ring's call descriptor hung and was interrupted (see
    /// `signal(callFD:)`); from then on its calls are counted in `callsDropped`, not written.
    /// Read by the control plane once no thread polls the ring (or racily, for a log line).
    public var callDescriptorStuck: Bool { st.pointee.callStuck }
    /// A copy of the counters.
    public var counters: VirtqueueCounters {
        var c = VirtqueueCounters()
        c.packets = st.pointee.packets
        c.bytes = st.pointee.bytes
        c.dropped = st.pointee.dropped
        c.allocFailures = st.pointee.allocFailures
        c.calls = st.pointee.calls
        c.callsDropped = st.pointee.callsDropped
        for i in 0..<c.errors.count { c.errors[i] = errorCounts[i] }
        return c
    }

    /// Used index (split) / slot+wrap (packed) at the last call decision, for event idx (§2.6.8.3).
    var signalledUsed: UInt16 {
        get { st.pointee.signalledUsed } set { st.pointee.signalledUsed = newValue }
    }
    var signalledUsedWrap: Bool {
        get { st.pointee.signalledWrap } set { st.pointee.signalledWrap = newValue }
    }
    /// Whether the device asks for kicks (false while polling).
    public internal(set) var notificationsEnabled: Bool {
        get { st.pointee.notifications } set { st.pointee.notifications = newValue }
    }

    // Scratch, allocated once here: no allocation on the fast path.
    @usableFromInline let segments: UnsafeMutablePointer<Segment>
    @usableFromInline let segmentCapacity: Int
    @usableFromInline let chains: UnsafeMutablePointer<ChainInfo>
    @usableFromInline let chainCapacity: Int
    /// Per packet of an enqueue burst: index of its first chain in `chains`, and the chain count.
    @usableFromInline let packetChains: UnsafeMutablePointer<(first: Int32, count: Int32)>
    @usableFromInline let mbufs: UnsafeMutablePointer<Mbuf>

    public var state: VirtqueuePosition {
        VirtqueuePosition(lastAvailIndex: lastAvailIndex, availWrapCounter: availWrapCounter,
                          lastUsedIndex: lastUsedIndex, usedWrapCounter: usedWrapCounter)
    }

    /// A device queue over a split ring.
    public convenience init(split ring: SplitRing, memory: MemoryTable, options: VirtqueueOptions,
                            state: VirtqueuePosition = VirtqueuePosition()) {
        self.init(layout: .split, split: ring, packed: nil, size: ring.size, memory: memory, options: options, state: state)
    }

    /// A device queue over a packed ring, at its first slot.
    public convenience init(packed ring: PackedRing, memory: MemoryTable, options: VirtqueueOptions) {
        self.init(layout: .packed, split: nil, packed: ring, size: ring.size, memory: memory, options: options,
                  state: VirtqueuePosition())
    }

    /// A device queue over a packed ring, starting at `state`: its slots must lie inside the ring
    /// (a position from outside, e.g. 0x7fff, would have used descriptors written past its end).
    public convenience init(packed ring: PackedRing, memory: MemoryTable, options: VirtqueueOptions,
                            state: VirtqueuePosition) throws(VirtqueueError) {
        try Self.checkPosition(state, layout: .packed, size: ring.size)
        self.init(layout: .packed, split: nil, packed: ring, size: ring.size, memory: memory, options: options, state: state)
    }

    /// Split: any 16-bit index is legal (free-running; the walkers reduce it with `& mask`).
    /// Packed: both positions are descriptor slots, < size.
    static func checkPosition(_ state: VirtqueuePosition, layout: VirtqueueLayout, size: Int) throws(VirtqueueError) {
        guard layout == .packed else { return }
        guard Int(state.lastAvailIndex) < size else {
            throw .positionOutsideRing(what: "last avail slot", position: state.lastAvailIndex, size: size)
        }
        guard Int(state.lastUsedIndex) < size else {
            throw .positionOutsideRing(what: "last used slot", position: state.lastUsedIndex, size: size)
        }
    }

    init(layout: VirtqueueLayout, split: SplitRing?, packed: PackedRing?, size: Int, memory: MemoryTable,
         options: VirtqueueOptions, state: VirtqueuePosition) {
        self.layout = layout
        self.split = split
        self.packed = packed
        self.size = size
        self.options = options
        self.netHeaderSize = options.netHeaderSize
        self.memory = GuestMemoryMap(table: memory)
        st = .allocate(capacity: 1)
        st.initialize(to: State(lastAvail: state.lastAvailIndex, lastUsed: state.lastUsedIndex,
                                availWrap: state.availWrapCounter, usedWrap: state.usedWrapCounter,
                                signalledUsed: state.lastUsedIndex, signalledWrap: state.usedWrapCounter))
        errorCounts = .allocate(capacity: ChainError.allCases.count)
        errorCounts.initialize(repeating: 0, count: ChainError.allCases.count)
        // A chain has at most `size` descriptors (or indirect entries); allow each a few pieces.
        segmentCapacity = max(1024, min(4 * size, 16384))
        segments = .allocate(capacity: segmentCapacity)
        chainCapacity = max(size, options.burstSize)
        chains = .allocate(capacity: chainCapacity)
        chains.initialize(repeating: ChainInfo(), count: chainCapacity)
        packetChains = .allocate(capacity: options.burstSize)
        mbufs = .allocate(capacity: options.burstSize)
    }

    /// Moves the queue to `state` (hot upgrade: a queue built before the previous owner paused
    /// takes up where that one stopped). Only while no thread polls the queue; no allocation. A
    /// packed ring's positions are descriptor slots and must lie inside the ring.
    public func reposition(to state: VirtqueuePosition) throws(VirtqueueError) {
        try Self.checkPosition(state, layout: layout, size: size)
        st.pointee.lastAvail = state.lastAvailIndex
        st.pointee.lastUsed = state.lastUsedIndex
        st.pointee.availWrap = state.availWrapCounter
        st.pointee.usedWrap = state.usedWrapCounter
        st.pointee.signalledUsed = state.lastUsedIndex
        st.pointee.signalledWrap = state.usedWrapCounter
    }

    deinit {
        st.deallocate()
        errorCounts.deallocate()
        segments.deallocate()
        chains.deallocate()
        packetChains.deallocate()
        mbufs.deallocate()
        memory.deallocate()
    }

    @usableFromInline func count(_ e: ChainError) {
        errorCounts[e.rawValue] &+= 1
        st.pointee.dropped &+= 1
    }

    func markBroken(_ r: BrokenReason) {
        if !st.pointee.broken { brokenReason = r; st.pointee.broken = true }
    }
}
