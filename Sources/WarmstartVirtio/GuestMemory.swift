import WarmstartMemory

/// A queue's private, flat copy of the guest memory table (guest-physical → host), so the fast
/// path walks a plain buffer (no Array, no ARC) while keeping `MemoryTable`'s rules: every range
/// is checked whole, with overflow-checked arithmetic, and a range may only be translated piece by
/// piece through `contiguous`. A new table (vhost-user SET_MEM_TABLE) means a new map.
public struct GuestMemoryMap {
    @usableFromInline struct Entry {
        @usableFromInline var guest: UInt64
        @usableFromInline var size: UInt64
        @usableFromInline var host: UInt
    }

    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    public let count: Int

    /// Copies `table`'s guest-address entries. Release with `deallocate()`.
    public init(table: MemoryTable) {
        let n = table.entries.count
        entries = .allocate(capacity: max(n, 1))
        for (i, e) in table.entries.enumerated() {
            entries[i] = Entry(guest: e.guestAddress, size: e.size, host: e.hostAddress)
        }
        count = n
    }

    public func deallocate() { entries.deallocate() }

    /// Host pointer for `[address, address + length)` when the whole range lies in one entry.
    /// `length` may be 0 (then `address` must still be inside an entry).
    @inlinable
    public func translate(_ address: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        var i = 0
        while i < count {
            let e = entries[i]
            if address >= e.guest {
                let off = address &- e.guest
                if off < e.size && length <= e.size &- off {
                    return UnsafeMutableRawPointer(bitPattern: e.host &+ UInt(off))
                }
            }
            i &+= 1
        }
        return nil
    }

    /// The host pointer for `address` and how many bytes (≤ `length`, ≥ 1) are mapped from there
    /// inside one entry; nil when `address` is not mapped.
    @inlinable
    public func contiguous(_ address: UInt64, _ length: UInt64) -> (UnsafeMutableRawPointer, UInt64)? {
        var i = 0
        while i < count {
            let e = entries[i]
            if address >= e.guest {
                let off = address &- e.guest
                if off < e.size {
                    let n = min(length, e.size &- off)
                    return (UnsafeMutableRawPointer(bitPattern: e.host &+ UInt(off))!, n)
                }
            }
            i &+= 1
        }
        return nil
    }

    /// The guest address of a host pointer inside one entry (used by the driver side, whose own
    /// buffers live in guest memory), or nil.
    public func guestAddress(of host: UnsafeRawPointer, length: Int = 1) -> UInt64? {
        let h = UInt(bitPattern: host)
        for i in 0..<count {
            let e = entries[i]
            if h >= e.host {
                let off = UInt64(h - e.host)
                if off < e.size && UInt64(length) <= e.size - off { return e.guest + off }
            }
        }
        return nil
    }
}

/// How a ring area's address is to be read: as guest-physical (virtio-user, tests) or as the
/// frontend's user address (vhost-user SET_VRING_ADDR, §"Ring addresses").
public enum RingAddressSpace: Sendable {
    case guest
    case user
}

extension MemoryTable {
    /// Translates a whole ring area, failing with a clear error (overflow, outside memory).
    func translateArea(_ area: String, _ address: UInt64, _ length: Int, _ space: RingAddressSpace,
                       alignment: Int) throws -> UnsafeMutableRawPointer {
        let len = UInt64(length)
        if address.addingReportingOverflow(len).overflow {
            throw VirtqueueError.areaOverflows(area: area, address: address, length: len)
        }
        if address & UInt64(alignment - 1) != 0 {
            throw VirtqueueError.misaligned(area: area, address: address, alignment: alignment)
        }
        let p: UnsafeMutableRawPointer?
        switch space {
        case .guest: p = translate(guest: address, length: len)
        case .user: p = translate(user: address, length: len)
        }
        guard let p else { throw VirtqueueError.areaOutsideMemory(area: area, address: address, length: len) }
        return p
    }
}
