import CWarmstartShim
import WarmstartMemory
import WarmstartSpec

/// One 16-byte packed descriptor (§2.7 `struct pvirtq_desc`).
@frozen
public struct PackedDescriptor: Equatable, Sendable {
    public var addr: UInt64
    public var len: UInt32
    public var id: UInt16
    public var flags: UInt16
    @inlinable public init(addr: UInt64, len: UInt32, id: UInt16, flags: UInt16) {
        self.addr = addr; self.len = len; self.id = id; self.flags = flags
    }
}

/// A packed virtqueue (§2.7) over raw host pointers. Area sizes, alignments and event flags:
/// `PackedVirtqueue` (WarmstartSpec).
///
///     descriptor ring          16 × size   align 16   {addr u64, len u32, id u16, flags u16}
///     driver event suppression 4 bytes     align 4    {desc (off_wrap) u16, flags u16}  written by the driver
///     device event suppression 4 bytes     align 4    written by the device
///
/// A descriptor is available when its AVAIL bit equals the driver's wrap counter and its USED bit
/// does not; used when both equal the device's wrap counter (§2.7.1). The first descriptor's
/// flags are read with acquire and written with release, after the rest of the descriptor.
@frozen
public struct PackedRing {
    public let size: Int
    public let desc: UnsafeMutableRawPointer
    public let driverEvent: UnsafeMutableRawPointer
    public let deviceEvent: UnsafeMutableRawPointer

    public init(size: Int, desc: UnsafeMutableRawPointer, driverEvent: UnsafeMutableRawPointer,
                deviceEvent: UnsafeMutableRawPointer) throws {
        guard PackedVirtqueue.isValidSize(size) else { throw VirtqueueError.invalidSize(size, layout: .packed) }
        for (name, p, a) in [("descriptor ring", desc, 16), ("driver event area", driverEvent, 4),
                             ("device event area", deviceEvent, 4)]
        where UInt(bitPattern: p) % UInt(a) != 0 {
            throw VirtqueueError.misaligned(area: name, address: UInt64(UInt(bitPattern: p)), alignment: a)
        }
        self.size = size
        self.desc = desc
        self.driverEvent = driverEvent
        self.deviceEvent = deviceEvent
    }

    /// Translates each area's whole length through `memory` (guest-physical or user addresses).
    public init(size: Int, memory: MemoryTable, desc: UInt64, driverEvent: UInt64, deviceEvent: UInt64,
                addressSpace: RingAddressSpace = .guest) throws {
        guard PackedVirtqueue.isValidSize(size) else { throw VirtqueueError.invalidSize(size, layout: .packed) }
        let d = try memory.translateArea("descriptor ring", desc, PackedVirtqueue.descriptorRingBytes(size: size), addressSpace, alignment: 16)
        let dr = try memory.translateArea("driver event area", driverEvent, 4, addressSpace, alignment: 4)
        let dv = try memory.translateArea("device event area", deviceEvent, 4, addressSpace, alignment: 4)
        try self.init(size: size, desc: d, driverEvent: dr, deviceEvent: dv)
    }

    // MARK: descriptors

    @inlinable func flagsPointer(_ i: Int) -> UnsafeMutablePointer<UInt16> {
        (desc + 16 &* i + 14).assumingMemoryBound(to: UInt16.self)
    }
    /// The flags of slot `i`, read with acquire (the rest of the descriptor is read after).
    @inlinable public func loadFlags(_ i: Int) -> UInt16 { UInt16(littleEndian: ws_load_acquire_u16(flagsPointer(i))) }
    /// Publishes slot `i` by writing its flags with release (after addr/len/id).
    @inlinable public func storeFlags(_ i: Int, _ f: UInt16) { ws_store_release_u16(flagsPointer(i), f.littleEndian) }

    /// Reads addr, len, id of slot `i` (flags as given: already read with acquire).
    @inlinable public func descriptor(_ i: Int, flags: UInt16) -> PackedDescriptor {
        let p = desc + 16 &* i
        return PackedDescriptor(addr: UInt64(littleEndian: p.load(as: UInt64.self)),
                                len: UInt32(littleEndian: p.load(fromByteOffset: 8, as: UInt32.self)),
                                id: UInt16(littleEndian: p.load(fromByteOffset: 12, as: UInt16.self)),
                                flags: flags)
    }
    @inlinable public func descriptor(_ i: Int) -> PackedDescriptor { descriptor(i, flags: loadFlags(i)) }

    /// Writes addr, len, id of slot `i`, leaving flags alone.
    @inlinable public func setBody(_ i: Int, addr: UInt64, len: UInt32, id: UInt16) {
        let p = desc + 16 &* i
        p.storeBytes(of: addr.littleEndian, as: UInt64.self)
        p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
    }
    /// Writes len and id of a used descriptor (the device writes id and len; addr is not used).
    @inlinable public func setUsedBody(_ i: Int, id: UInt16, len: UInt32) {
        let p = desc + 16 &* i
        p.storeBytes(of: len.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: id.littleEndian, toByteOffset: 12, as: UInt16.self)
    }

    /// AVAIL/USED bits a driver writes to make a descriptor available with wrap counter `w`.
    @inlinable public static func availFlags(wrap w: Bool) -> UInt16 {
        w ? VirtqDescriptorFlags.avail : VirtqDescriptorFlags.used
    }
    /// AVAIL/USED bits a device writes to mark a descriptor used with wrap counter `w`.
    @inlinable public static func usedFlags(wrap w: Bool) -> UInt16 {
        w ? (VirtqDescriptorFlags.avail | VirtqDescriptorFlags.used) : 0
    }
    @inlinable public static func isAvailable(_ f: UInt16, wrap w: Bool) -> Bool {
        ((f & VirtqDescriptorFlags.avail) != 0) == w && ((f & VirtqDescriptorFlags.used) != 0) != w
    }
    @inlinable public static func isUsed(_ f: UInt16, wrap w: Bool) -> Bool {
        ((f & VirtqDescriptorFlags.avail) != 0) == w && ((f & VirtqDescriptorFlags.used) != 0) == w
    }

    // MARK: event suppression (§2.7.10)

    /// (off_wrap, flags) of an event suppression area, read after a full fence by the caller.
    @inlinable public static func loadEvent(_ p: UnsafeMutableRawPointer) -> (offWrap: UInt16, flags: UInt16) {
        (UInt16(littleEndian: ws_load_relaxed_u16(p.assumingMemoryBound(to: UInt16.self))),
         UInt16(littleEndian: ws_load_relaxed_u16((p + 2).assumingMemoryBound(to: UInt16.self))))
    }
    @inlinable public static func storeEvent(_ p: UnsafeMutableRawPointer, offWrap: UInt16, flags: UInt16) {
        ws_store_relaxed_u16(p.assumingMemoryBound(to: UInt16.self), offWrap.littleEndian)
        ws_store_release_u16((p + 2).assumingMemoryBound(to: UInt16.self), flags.littleEndian)
    }
}
