import CWarmstartShim
import WarmstartPools
import WarmstartSpec
import WarmstartVirtio

/// One buffer a driver posts: guest address, length, and whether the device may write it.
@frozen
public struct DriverBuffer: Sendable, Equatable {
    public var addr: UInt64
    public var len: UInt32
    public var writable: Bool
    @inlinable public init(addr: UInt64, len: UInt32, writable: Bool) {
        self.addr = addr; self.len = len; self.writable = writable
    }
}

/// The driver's private record of one posted chain (never in shared memory): the caller's token,
/// how many descriptors it holds, its last descriptor (split: where the free list continues) and
/// whether it is in flight (a device returning an id twice, or one never posted, frees nothing).
@frozen @usableFromInline
struct DriverChain {
    @usableFromInline var token: UInt64
    @usableFromInline var length: UInt16
    @usableFromInline var tail: UInt16
    @usableFromInline var inUse: Bool
    @inlinable init(token: UInt64, length: UInt16, tail: UInt16, inUse: Bool) {
        self.token = token; self.length = length; self.tail = tail; self.inUse = inUse
    }
    /// A one-descriptor chain in flight whose token is the mbuf header `header` (the transmit
    /// fast path).
    @inlinable init(single header: UnsafeMutableRawPointer, tail: Int) {
        self.init(token: UInt64(UInt(bitPattern: header)), length: 1, tail: UInt16(truncatingIfNeeded: tail), inUse: true)
    }
}

/// A completed buffer: the token given when it was posted and the used length.
@frozen
public struct DriverCompletion: Sendable, Equatable {
    public var token: UInt64
    public var length: UInt32
    /// The id the device returned (head index / buffer id).
    public var id: UInt16
}

/// The driver side of one virtqueue (§2.6.13 "supplying buffers", §2.6.14
/// "receiving used buffers"): what a virtio-user frontend and the in-process mock driver run.
/// Rings are laid out inside a host buffer the caller owns, whose guest address is given, so a
/// frontend can place them in its own shared regions.
///
/// Driver bookkeeping (free descriptors, chain lengths, tokens) lives in private memory, never in
/// the rings: a device that scribbles on the rings cannot corrupt it.
public final class DriverQueue {
    public let layout: VirtqueueLayout
    public let size: Int
    public let options: VirtqueueOptions
    public let split: SplitRing?
    public let packed: PackedRing?
    /// Guest addresses of the three areas (split: desc/avail/used; packed: desc/driver/device event).
    public let descAddress: UInt64
    public let driverAreaAddress: UInt64
    public let deviceAreaAddress: UInt64

    /// Mutable state behind a pointer (no dynamic exclusivity checks; see VirtqueueDevice.State).
    /// Usable from inlinable code: the burst paths (DriverQueue+Burst.swift) run inlined in the
    /// caller's loop, with this state in registers for the whole burst.
    @usableFromInline struct State {
        // Split.
        @usableFromInline var freeHead = 0
        @usableFromInline var availShadow: UInt16 = 0
        var kickedAvail: UInt16 = 0
        @usableFromInline var lastUsedSeen: UInt16 = 0
        // Packed.
        @usableFromInline var nextAvail = 0
        @usableFromInline var availWrap = true
        @usableFromInline var nextUsed = 0
        @usableFromInline var usedWrap = true
        var kickedSlot = 0
        var kickedWrap = true
        @usableFromInline var freeIDCount = 0
        /// First descriptor of the batch not yet published: its flags are written by `publish()`.
        @usableFromInline var pendingSlot = -1
        @usableFromInline var pendingFlags: UInt16 = 0
        // Both.
        @usableFromInline var numFree = 0
        init() {}
    }
    @usableFromInline let st: UnsafeMutablePointer<State>
    var freeHead: Int { get { st.pointee.freeHead } set { st.pointee.freeHead = newValue } }
    var availShadow: UInt16 { get { st.pointee.availShadow } set { st.pointee.availShadow = newValue } }
    var kickedAvail: UInt16 { get { st.pointee.kickedAvail } set { st.pointee.kickedAvail = newValue } }
    var lastUsedSeen: UInt16 { get { st.pointee.lastUsedSeen } set { st.pointee.lastUsedSeen = newValue } }
    var nextAvail: Int { get { st.pointee.nextAvail } set { st.pointee.nextAvail = newValue } }
    var availWrap: Bool { get { st.pointee.availWrap } set { st.pointee.availWrap = newValue } }
    var nextUsed: Int { get { st.pointee.nextUsed } set { st.pointee.nextUsed = newValue } }
    var usedWrap: Bool { get { st.pointee.usedWrap } set { st.pointee.usedWrap = newValue } }
    var kickedSlot: Int { get { st.pointee.kickedSlot } set { st.pointee.kickedSlot = newValue } }
    var kickedWrap: Bool { get { st.pointee.kickedWrap } set { st.pointee.kickedWrap = newValue } }
    var freeIDCount: Int { get { st.pointee.freeIDCount } set { st.pointee.freeIDCount = newValue } }
    var pendingSlot: Int { get { st.pointee.pendingSlot } set { st.pointee.pendingSlot = newValue } }
    var pendingFlags: UInt16 { get { st.pointee.pendingFlags } set { st.pointee.pendingFlags = newValue } }
    /// Descriptors (split) / ring slots (packed) free for new chains.
    public internal(set) var numFree: Int {
        @inlinable get { st.pointee.numFree }
        set { st.pointee.numFree = newValue }
    }
    /// Split: private "next" links of the free descriptor list.
    @usableFromInline let shadowNext: UnsafeMutablePointer<UInt16>
    /// Packed: a stack of free buffer ids.
    @usableFromInline let freeIDs: UnsafeMutablePointer<UInt16>
    /// Each posted chain by head index (split) / buffer id (packed).
    @usableFromInline let chains: UnsafeMutablePointer<DriverChain>

    /// Bytes the rings of `layout` and `size` need (areas 16/2/4-aligned, 16-byte aligned start).
    public static func ringBytes(layout: VirtqueueLayout, size: Int) -> Int {
        switch layout {
        case .split:
            let availEnd = SplitVirtqueue.descriptorTableBytes(size: size) + SplitVirtqueue.availRingBytes(size: size, eventIndex: true)
            let usedOffset = (availEnd + 3) & ~3
            return usedOffset + SplitVirtqueue.usedRingBytes(size: size, eventIndex: true)
        case .packed:
            return PackedVirtqueue.descriptorRingBytes(size: size) + 2 * PackedVirtqueue.eventSuppressionBytes
        }
    }

    /// Lays the rings out at `host` (guest address `guest`), zeroed.
    public init(layout: VirtqueueLayout, size: Int, host: UnsafeMutableRawPointer, guest: UInt64,
                length: Int, options: VirtqueueOptions) throws {
        let need = Self.ringBytes(layout: layout, size: size)
        guard layout == .split ? SplitVirtqueue.isValidSize(size) : PackedVirtqueue.isValidSize(size) else {
            throw VirtqueueError.invalidSize(size, layout: layout)
        }
        guard length >= need else { throw VirtqueueError.bufferTooSmall(needed: need, available: length) }
        guard guest & 15 == 0, UInt(bitPattern: host) & 15 == 0 else {
            throw VirtqueueError.misaligned(area: "ring buffer", address: guest, alignment: 16)
        }
        host.initializeMemory(as: UInt8.self, repeating: 0, count: need)
        self.layout = layout
        self.size = size
        self.options = options
        let d = 16 * size
        switch layout {
        case .split:
            let usedOffset = (d + SplitVirtqueue.availRingBytes(size: size, eventIndex: true) + 3) & ~3
            split = try SplitRing(size: size, desc: host, avail: host + d, used: host + usedOffset)
            packed = nil
            descAddress = guest
            driverAreaAddress = guest + UInt64(d)
            deviceAreaAddress = guest + UInt64(usedOffset)
        case .packed:
            packed = try PackedRing(size: size, desc: host, driverEvent: host + d, deviceEvent: host + d + 4)
            split = nil
            descAddress = guest
            driverAreaAddress = guest + UInt64(d)
            deviceAreaAddress = guest + UInt64(d + 4)
        }
        st = .allocate(capacity: 1)
        var initial = State()
        initial.numFree = size
        initial.freeIDCount = size
        st.initialize(to: initial)
        shadowNext = .allocate(capacity: size)
        for i in 0..<size { shadowNext[i] = UInt16(truncatingIfNeeded: i + 1) }
        freeIDs = .allocate(capacity: size)
        for i in 0..<size { freeIDs[i] = UInt16(truncatingIfNeeded: size - 1 - i) }
        chains = .allocate(capacity: size)
        chains.initialize(repeating: DriverChain(token: 0, length: 0, tail: 0, inUse: false), count: size)
    }

    deinit {
        st.deallocate(); shadowNext.deallocate(); freeIDs.deallocate(); chains.deallocate()
    }

    // MARK: supplying buffers

    /// Adds one chain of `count` buffers (readable ones first). Returns the head index (split) or
    /// buffer id (packed), or nil when the ring has no room. Visible to the device after `publish()`.
    @discardableResult
    public func add(_ buffers: UnsafePointer<DriverBuffer>, count: Int, token: UInt64) -> UInt16? {
        guard count > 0, count <= numFree, layout == .split || freeIDCount > 0 else { return nil }
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            let head = freeHead
            var i = head
            for k in 0..<count {
                let b = buffers[k]
                var flags: UInt16 = b.writable ? VirtqDescriptorFlags.write : 0
                let next = Int(shadowNext[i])
                if k < count - 1 { flags |= VirtqDescriptorFlags.next }
                ring.setDescriptor(i, SplitDescriptor(addr: b.addr, len: b.len, flags: flags,
                                                      next: k < count - 1 ? UInt16(truncatingIfNeeded: next) : 0))
                if k < count - 1 { i = next }
            }
            freeHead = Int(shadowNext[i])
            numFree -= count
            finishSplit(ring, head: head, tail: i, count: count, token: token)
            return UInt16(truncatingIfNeeded: head)
        case .packed:
            let ring = packed.unsafelyUnwrapped
            freeIDCount -= 1
            let id = freeIDs[freeIDCount]
            for k in 0..<count {
                let b = buffers[k]
                var flags: UInt16 = (b.writable ? VirtqDescriptorFlags.write : 0) | PackedRing.availFlags(wrap: availWrap)
                if k < count - 1 { flags |= VirtqDescriptorFlags.next }
                ring.setBody(nextAvail, addr: b.addr, len: b.len, id: id)
                placePacked(ring, flags)
            }
            numFree -= count
            chains[Int(id)] = DriverChain(token: token, length: UInt16(truncatingIfNeeded: count), tail: 0, inUse: true)
            return id
        }
    }

    /// Adds one chain made of a single indirect descriptor pointing at `table` (guest `tableGuest`,
    /// room for `count` 16-byte entries), which this call fills (§2.6.5.3 / §2.7.7).
    @discardableResult
    public func addIndirect(_ buffers: UnsafePointer<DriverBuffer>, count: Int, token: UInt64,
                            table: UnsafeMutableRawPointer, tableGuest: UInt64) -> UInt16? {
        guard count > 0, numFree >= 1, layout == .split || freeIDCount > 0 else { return nil }
        for k in 0..<count {
            let b = buffers[k]
            let w: UInt16 = b.writable ? VirtqDescriptorFlags.write : 0
            let p = table + 16 * k
            if layout == .split {
                let f = w | (k < count - 1 ? VirtqDescriptorFlags.next : 0)
                SplitRing.storeDescriptor(p, SplitDescriptor(addr: b.addr, len: b.len, flags: f,
                                                             next: UInt16(truncatingIfNeeded: k + 1)))
            } else {
                p.storeBytes(of: b.addr.littleEndian, as: UInt64.self)
                p.storeBytes(of: b.len.littleEndian, toByteOffset: 8, as: UInt32.self)
                p.storeBytes(of: UInt16(0), toByteOffset: 12, as: UInt16.self)
                p.storeBytes(of: w.littleEndian, toByteOffset: 14, as: UInt16.self)
            }
        }
        let len = UInt32(16 * count)
        switch layout {
        case .split:
            let ring = split.unsafelyUnwrapped
            let head = freeHead
            ring.setDescriptor(head, SplitDescriptor(addr: tableGuest, len: len, flags: VirtqDescriptorFlags.indirect, next: 0))
            freeHead = Int(shadowNext[head])
            numFree -= 1
            finishSplit(ring, head: head, tail: head, count: 1, token: token)
            return UInt16(truncatingIfNeeded: head)
        case .packed:
            let ring = packed.unsafelyUnwrapped
            freeIDCount -= 1
            let id = freeIDs[freeIDCount]
            ring.setBody(nextAvail, addr: tableGuest, len: len, id: id)
            placePacked(ring, VirtqDescriptorFlags.indirect | PackedRing.availFlags(wrap: availWrap))
            numFree -= 1
            chains[Int(id)] = DriverChain(token: token, length: 1, tail: 0, inUse: true)
            return id
        }
    }

    func finishSplit(_ ring: SplitRing, head: Int, tail: Int, count: Int, token: UInt64) {
        chains[head] = DriverChain(token: token, length: UInt16(truncatingIfNeeded: count),
                                   tail: UInt16(truncatingIfNeeded: tail), inUse: true)
        ring.setAvailEntry(availShadow, UInt16(truncatingIfNeeded: head))
        availShadow &+= 1
    }

    /// Writes the flags of the descriptor at `nextAvail` — except the first one of a batch, kept
    /// for `publish()` — and advances (§2.7: the first descriptor of a batch is made available last).
    @inline(__always)
    func placePacked(_ ring: PackedRing, _ flags: UInt16) {
        if pendingSlot < 0 {
            pendingSlot = nextAvail
            pendingFlags = flags
        } else {
            ring.storeFlags(nextAvail, flags)
        }
        nextAvail += 1
        if nextAvail == size { nextAvail = 0; availWrap.toggle() }
    }

    /// Makes everything added since the last publish visible to the device (release store of
    /// avail idx, or of the first pending packed descriptor's flags).
    public func publish() {
        switch layout {
        case .split: split.unsafelyUnwrapped.storeAvailIndex(availShadow)
        case .packed:
            if pendingSlot >= 0 {
                packed.unsafelyUnwrapped.storeFlags(pendingSlot, pendingFlags)
                pendingSlot = -1
            }
        }
    }
}
