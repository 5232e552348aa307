/// A translation table from addresses a peer uses (I/O or guest-physical addresses, and for
/// vhost-user the frontend's user addresses) to host addresses in this process.
///
/// Every lookup checks the whole range `[address, address + length)` with overflow-checked
/// arithmetic: a range that starts in one region and runs past its end is refused, never
/// translated by its start alone (the classic vhost bug).
public struct MemoryTable: Sendable {
    public struct Entry: Sendable, Equatable {
        /// Guest-physical / I/O address of the first byte.
        public var guestAddress: UInt64
        /// The frontend's own virtual address of the first byte (vhost-user `user_addr`).
        public var userAddress: UInt64
        public var size: UInt64
        /// Host address of the first byte, as an integer (the table is plain data).
        public var hostAddress: UInt

        public init(guestAddress: UInt64, userAddress: UInt64, size: UInt64, hostAddress: UInt) {
            self.guestAddress = guestAddress
            self.userAddress = userAddress
            self.size = size
            self.hostAddress = hostAddress
        }
    }

    public private(set) var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    public init(regions: [MemoryRegion]) {
        self.entries = regions.map {
            Entry(guestAddress: $0.ioAddress, userAddress: UInt64(UInt(bitPattern: $0.base)),
                  size: UInt64($0.size), hostAddress: UInt(bitPattern: $0.base))
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    /// Entries overlap if any two guest ranges intersect; a table with overlaps is refused by its users.
    public var hasOverlaps: Bool {
        let sorted = entries.sorted { $0.guestAddress < $1.guestAddress }
        for i in sorted.indices.dropFirst() {
            let prev = sorted[i - 1]
            let (end, o) = prev.guestAddress.addingReportingOverflow(prev.size)
            if o || end > sorted[i].guestAddress { return true }
        }
        return false
    }

    public mutating func add(_ e: Entry) { entries.append(e) }

    public mutating func remove(guestAddress: UInt64, size: UInt64) -> Entry? {
        guard let i = entries.firstIndex(where: { $0.guestAddress == guestAddress && $0.size == size }) else { return nil }
        return entries.remove(at: i)
    }

    /// Host pointer for guest range `[address, address+length)`, or nil if any byte of it lies
    /// outside one single entry.
    @inlinable
    public func translate(guest address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for e in entries {
            if let p = Self.inside(e, e.guestAddress, address, length) { return p }
        }
        return nil
    }

    /// Host pointer for a range in the frontend's user address space (vring addresses).
    @inlinable
    public func translate(user address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for e in entries {
            if let p = Self.inside(e, e.userAddress, address, length) { return p }
        }
        return nil
    }

    /// How many contiguous bytes, up to `length`, are mapped from `address` inside one entry.
    /// Used to walk a buffer that spans two regions piece by piece.
    @inlinable
    public func contiguous(guest address: UInt64, length: UInt64) -> (UnsafeMutableRawPointer, UInt64)? {
        for e in entries where address >= e.guestAddress {
            let off = address &- e.guestAddress
            if off < e.size {
                let n = min(length, e.size - off)
                return (UnsafeMutableRawPointer(bitPattern: e.hostAddress &+ UInt(off))!, n)
            }
        }
        return nil
    }

    @inlinable
    static func inside(_ e: Entry, _ start: UInt64, _ address: UInt64, _ length: UInt64) -> UnsafeMutableRawPointer? {
        guard address >= start else { return nil }
        let off = address &- start
        guard off < e.size, length <= e.size &- off else { return nil }
        return UnsafeMutableRawPointer(bitPattern: e.hostAddress &+ UInt(off))
    }
}
