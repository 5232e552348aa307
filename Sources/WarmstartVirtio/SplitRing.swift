import CWarmstartShim
import WarmstartMemory
import WarmstartSpec

/// One 16-byte descriptor of a split ring or an indirect table (§2.6.5 `struct virtq_desc`).
@frozen
public struct SplitDescriptor: Equatable, Sendable {
    public var addr: UInt64
    public var len: UInt32
    public var flags: UInt16
    public var next: UInt16
    @inlinable public init(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
        self.addr = addr; self.len = len; self.flags = flags; self.next = next
    }
}

/// A split virtqueue (§2.6) over raw host pointers into memory shared with the other side. Area
/// sizes, alignments and flags: `SplitVirtqueue` (WarmstartSpec).
///
///     descriptor table  16 × size          align 16   {addr u64, len u32, flags u16, next u16}
///     avail ring        6 + 2 × size       align 2    {flags, idx, ring[size], used_event}
///     used ring         6 + 8 × size       align 4    {flags, idx, ring[size]{id u32, len u32}, avail_event}
///
/// All fields are little-endian. Indices read from the other side are read once (no double fetch);
/// `idx` fields are read with acquire and written with release.
@frozen
public struct SplitRing {
    public let size: Int
    public let mask: UInt16
    public let desc: UnsafeMutableRawPointer
    public let avail: UnsafeMutableRawPointer
    public let used: UnsafeMutableRawPointer

    /// Wraps already-translated host pointers. Checks the size and the alignment of each area.
    public init(size: Int, desc: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer,
                used: UnsafeMutableRawPointer) throws {
        guard SplitVirtqueue.isValidSize(size) else { throw VirtqueueError.invalidSize(size, layout: .split) }
        for (name, p, a) in [("descriptor table", desc, 16), ("avail ring", avail, 2), ("used ring", used, 4)]
        where UInt(bitPattern: p) % UInt(a) != 0 {
            throw VirtqueueError.misaligned(area: name, address: UInt64(UInt(bitPattern: p)), alignment: a)
        }
        self.size = size
        self.mask = UInt16(truncatingIfNeeded: size - 1)
        self.desc = desc
        self.avail = avail
        self.used = used
    }

    /// Translates each area's whole length through `memory` (guest-physical or user addresses).
    public init(size: Int, memory: MemoryTable, desc: UInt64, avail: UInt64, used: UInt64,
                addressSpace: RingAddressSpace = .guest) throws {
        guard SplitVirtqueue.isValidSize(size) else { throw VirtqueueError.invalidSize(size, layout: .split) }
        let d = try memory.translateArea("descriptor table", desc, SplitVirtqueue.descriptorTableBytes(size: size), addressSpace, alignment: 16)
        let a = try memory.translateArea("avail ring", avail, SplitVirtqueue.availRingBytes(size: size, eventIndex: true), addressSpace, alignment: 2)
        let u = try memory.translateArea("used ring", used, SplitVirtqueue.usedRingBytes(size: size, eventIndex: true), addressSpace, alignment: 4)
        try self.init(size: size, desc: d, avail: a, used: u)
    }

    // MARK: descriptors

    @inlinable public func descriptor(_ i: Int) -> SplitDescriptor {
        Self.loadDescriptor(desc + 16 &* i)
    }

    @inlinable public func setDescriptor(_ i: Int, _ d: SplitDescriptor) {
        Self.storeDescriptor(desc + 16 &* i, d)
    }

    /// Unaligned loads: indirect tables sit wherever the guest put them.
    @inlinable static func loadDescriptor(_ p: UnsafeRawPointer) -> SplitDescriptor {
        SplitDescriptor(addr: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                        len: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                        flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                        next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }

    @inlinable public static func storeDescriptor(_ p: UnsafeMutableRawPointer, _ d: SplitDescriptor) {
        p.storeBytes(of: d.addr.littleEndian, as: UInt64.self)
        p.storeBytes(of: d.len.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: d.flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: d.next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    // MARK: avail ring (§2.6.6) — written by the driver

    @inlinable var availFlagsPointer: UnsafeMutablePointer<UInt16> { avail.assumingMemoryBound(to: UInt16.self) }
    @inlinable var availIdxPointer: UnsafeMutablePointer<UInt16> { (avail + 2).assumingMemoryBound(to: UInt16.self) }
    @inlinable var usedEventPointer: UnsafeMutablePointer<UInt16> { (avail + 4 + 2 &* size).assumingMemoryBound(to: UInt16.self) }

    @inlinable public var availFlags: UInt16 {
        get { UInt16(littleEndian: ws_load_relaxed_u16(availFlagsPointer)) }
        nonmutating set { ws_store_relaxed_u16(availFlagsPointer, newValue.littleEndian) }
    }
    /// avail->idx read with acquire: entries and descriptors read after it are the driver's.
    @inlinable public func loadAvailIndex() -> UInt16 { UInt16(littleEndian: ws_load_acquire_u16(availIdxPointer)) }
    /// avail->idx published with release after the entries (driver side).
    @inlinable public func storeAvailIndex(_ v: UInt16) { ws_store_release_u16(availIdxPointer, v.littleEndian) }
    @inlinable public func availEntry(_ slot: UInt16) -> UInt16 {
        UInt16(littleEndian: (avail + 4).load(fromByteOffset: Int(slot & mask) &* 2, as: UInt16.self))
    }
    @inlinable public func setAvailEntry(_ slot: UInt16, _ head: UInt16) {
        (avail + 4).storeBytes(of: head.littleEndian, toByteOffset: Int(slot & mask) &* 2, as: UInt16.self)
    }
    /// used_event (§2.6.7.2): the driver wants a used-buffer notification when used idx passes it.
    @inlinable public var usedEvent: UInt16 {
        get { UInt16(littleEndian: ws_load_relaxed_u16(usedEventPointer)) }
        nonmutating set { ws_store_relaxed_u16(usedEventPointer, newValue.littleEndian) }
    }

    // MARK: used ring (§2.6.8) — written by the device

    @inlinable var usedFlagsPointer: UnsafeMutablePointer<UInt16> { used.assumingMemoryBound(to: UInt16.self) }
    @inlinable var usedIdxPointer: UnsafeMutablePointer<UInt16> { (used + 2).assumingMemoryBound(to: UInt16.self) }
    @inlinable var availEventPointer: UnsafeMutablePointer<UInt16> { (used + 4 + 8 &* size).assumingMemoryBound(to: UInt16.self) }

    @inlinable public var usedFlags: UInt16 {
        get { UInt16(littleEndian: ws_load_relaxed_u16(usedFlagsPointer)) }
        nonmutating set { ws_store_relaxed_u16(usedFlagsPointer, newValue.littleEndian) }
    }
    @inlinable public func loadUsedIndex() -> UInt16 { UInt16(littleEndian: ws_load_acquire_u16(usedIdxPointer)) }
    /// used->idx published with release after the used elements.
    @inlinable public func storeUsedIndex(_ v: UInt16) { ws_store_release_u16(usedIdxPointer, v.littleEndian) }
    @inlinable public func setUsedElement(_ slot: UInt16, id: UInt32, len: UInt32) {
        let p = used + 4 + Int(slot & mask) &* 8
        p.storeBytes(of: id.littleEndian, as: UInt32.self)
        p.storeBytes(of: len.littleEndian, toByteOffset: 4, as: UInt32.self)
    }
    @inlinable public func usedElement(_ slot: UInt16) -> (id: UInt32, len: UInt32) {
        let p = used + 4 + Int(slot & mask) &* 8
        return (UInt32(littleEndian: p.load(as: UInt32.self)),
                UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self)))
    }
    /// avail_event (§2.6.8.2): the device wants a kick when avail idx passes it.
    @inlinable public var availEvent: UInt16 {
        get { UInt16(littleEndian: ws_load_relaxed_u16(availEventPointer)) }
        nonmutating set { ws_store_relaxed_u16(availEventPointer, newValue.littleEndian) }
    }
}
