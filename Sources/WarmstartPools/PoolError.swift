/// Everything that can go wrong while laying out, restoring, attaching or configuring a pool.
/// Each case names the pool or field and says why.
public enum PoolError: Error, CustomStringConvertible, Equatable {
    /// A config field is out of range.
    case invalidConfig(field: String, value: Int, reason: String)
    /// The pool does not fit in the region at that offset.
    case regionTooSmall(poolID: UInt16, needed: Int, offset: Int, regionSize: Int)
    /// The pool offset must be page aligned so the elements are page aligned.
    case misalignedOffset(poolID: UInt16, offset: Int, alignment: Int)
    /// The control block does not start with the pool magic: nothing was laid out here.
    case badMagic(poolID: UInt16, offset: Int, found: UInt32)
    /// The control block was written by another layout version.
    case layoutVersionMismatch(poolID: UInt16, found: UInt32, expected: UInt32)
    /// The control block describes another pool shape than the one asked for.
    case configMismatch(poolID: UInt16, field: String, stored: Int, expected: Int)
    /// The ring's heads and tails cannot describe a consistent free list.
    case corruptRing(poolID: UInt16, reason: String)

    public var description: String {
        switch self {
        case let .invalidConfig(field, value, reason):
            return "invalid mbuf pool config: \(field) = \(value): \(reason)"
        case let .regionTooSmall(id, needed, offset, size):
            return "mbuf pool \(id): region too small: needed \(needed) bytes at offset \(offset), "
                + "region has \(size) bytes"
        case let .misalignedOffset(id, offset, alignment):
            return "mbuf pool \(id): offset \(offset) is not a multiple of \(alignment) bytes"
        case let .badMagic(id, offset, found):
            return "mbuf pool \(id): bad control block magic at offset \(offset): found 0x"
                + String(found, radix: 16) + ", expected 0x" + String(PoolControl.magic, radix: 16)
                + " (\"WSPL\"); nothing usable was laid out here"
        case let .layoutVersionMismatch(id, found, expected):
            return "mbuf pool \(id): control block layout version \(found), this build uses \(expected)"
        case let .configMismatch(id, field, stored, expected):
            return "mbuf pool \(id): config mismatch: \(field) is \(stored) in shared memory, expected \(expected)"
        case let .corruptRing(id, reason):
            return "mbuf pool \(id): corrupt free ring: \(reason)"
        }
    }
}
