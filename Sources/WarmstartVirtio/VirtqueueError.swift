// Errors of the ring layer: set-up errors (thrown), per-chain errors (counted, never thrown on the
// fast path) and the reasons a queue is marked broken.

import WarmstartSpec

/// A ring could not be set up. Each case names the area and the numbers involved.
public enum VirtqueueError: Error, Equatable, CustomStringConvertible {
    /// Split sizes are a power of two ≤ 32768 (§2.6); packed any size 1...32768 (§2.7).
    case invalidSize(Int, layout: VirtqueueLayout)
    /// `area` at `address` of `length` bytes does not lie inside one region of guest memory.
    case areaOutsideMemory(area: String, address: UInt64, length: UInt64)
    /// `address + length` overflows 64 bits.
    case areaOverflows(area: String, address: UInt64, length: UInt64)
    /// The area is not aligned as §2.6 / §2.7 require.
    case misaligned(area: String, address: UInt64, alignment: Int)
    /// A host buffer given to a driver queue is too small for the rings it has to hold.
    case bufferTooSmall(needed: Int, available: Int)
    /// A packed ring position (a descriptor slot) outside the ring.
    case positionOutsideRing(what: String, position: UInt16, size: Int)

    public var description: String {
        switch self {
        case let .invalidSize(n, layout):
            return layout == .split
                ? "invalid split queue size \(n): must be a power of two from 1 to 32768"
                : "invalid packed queue size \(n): must be from 1 to 32768"
        case let .areaOutsideMemory(area, a, l):
            return "\(area) at 0x\(String(a, radix: 16)) (\(l) bytes) is not inside guest memory"
        case let .areaOverflows(area, a, l):
            return "\(area) at 0x\(String(a, radix: 16)) + \(l) bytes overflows the address space"
        case let .misaligned(area, a, al):
            return "\(area) at 0x\(String(a, radix: 16)) is not \(al)-byte aligned"
        case let .bufferTooSmall(n, a):
            return "ring buffer too small: \(n) bytes needed, \(a) given"
        case let .positionOutsideRing(what, p, n):
            return "\(what) \(p) is outside the packed ring of \(n) descriptors"
        }
    }
}

/// Why one descriptor chain was refused. The packet is dropped, the chain returned with length 0
/// where the layout allows, and the matching counter incremented.
public enum ChainError: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// A head (split avail entry) or `next` index ≥ queue size.
    case indexOutOfRange = 0
    /// More descriptors than the queue (or indirect table) holds: a loop or an overlong chain.
    case chainTooLong
    /// A buffer (addr, len) not wholly inside guest memory.
    case addressOutsideMemory
    /// addr + len wraps around 2^64.
    case lengthOverflow
    /// INDIRECT set inside an indirect table (§2.6.5.3.1: the driver MUST NOT).
    case nestedIndirect
    /// Indirect table length zero or not a multiple of 16.
    case indirectBadLength
    /// Indirect table with more entries than the queue size.
    case indirectTooLarge
    /// INDIRECT and NEXT in the same descriptor (§2.6.5.3.1).
    case indirectWithNext
    /// INDIRECT used but VIRTIO_F_RING_INDIRECT_DESC not negotiated.
    case indirectNotNegotiated
    /// Indirect table not inside one region (it must be one contiguous host range).
    case indirectOutsideMemory
    /// Device-writable buffer in a chain the device must read (TX), or readable in RX.
    case wrongDirection
    /// Chain shorter than the virtio-net header.
    case headerTooShort
    /// RX chain (or merged chains) too small for the packet.
    case packetTooLarge
    /// Packed: buffer id ≥ queue size.
    case badBufferID
    /// More pieces than the per-queue scratch holds (a buffer cut across many regions).
    case tooFragmented
    /// Packet longer than 65535 + header (the mbuf chain length field and GSO limit).
    case packetTooLong
    /// A guest-TX virtio-net header the kernel would refuse on a tap device (unknown flags or
    /// gso_type, gso_size 0 or past the frame, hdr_len or csum_start + csum_offset past the frame),
    /// or a non-zero one when no offload was negotiated. See `virtioNetHeaderIsValid`.
    case badNetHeader

    public var description: String {
        switch self {
        case .indexOutOfRange: return "descriptor index out of range"
        case .chainTooLong: return "descriptor chain too long (loop?)"
        case .addressOutsideMemory: return "buffer outside guest memory"
        case .lengthOverflow: return "buffer address + length overflows"
        case .nestedIndirect: return "nested indirect descriptor"
        case .indirectBadLength: return "indirect table length zero or not a multiple of 16"
        case .indirectTooLarge: return "indirect table larger than the queue"
        case .indirectWithNext: return "indirect descriptor with NEXT"
        case .indirectNotNegotiated: return "indirect descriptor without the feature"
        case .indirectOutsideMemory: return "indirect table outside guest memory"
        case .wrongDirection: return "descriptor direction (readable/writable) wrong"
        case .headerTooShort: return "chain shorter than the virtio-net header"
        case .packetTooLarge: return "packet larger than the receive buffers"
        case .badBufferID: return "buffer id out of range"
        case .tooFragmented: return "buffer split into too many pieces"
        case .packetTooLong: return "packet longer than 64 KiB"
        case .badNetHeader: return "virtio-net header invalid (flags, gso_type, gso_size, hdr_len or checksum offsets)"
        }
    }
}

/// Why a queue stopped: the guest broke the ring protocol in a way that cannot be contained to
/// one chain. A broken queue handles nothing until it is set up again.
public enum BrokenReason: Sendable, Equatable, CustomStringConvertible {
    /// avail idx ran more than the queue size ahead of the last index the device consumed.
    case availIndexTooFarAhead(availIndex: UInt16, lastAvailIndex: UInt16)
    /// A packed chain never ends (NEXT on `size` descriptors): its slots cannot be skipped.
    case packedChainEndless(slot: Int)

    public var description: String {
        switch self {
        case let .availIndexTooFarAhead(a, l):
            return "avail idx \(a) is more than the queue size ahead of last avail idx \(l)"
        case let .packedChainEndless(slot):
            return "packed descriptor chain from slot \(slot) has NEXT on every descriptor of the ring"
        }
    }
}

/// Per-queue counters. Plain integers, read by the owner thread (or copied out for stats).
public struct VirtqueueCounters: Sendable, Equatable {
    public var packets: UInt64 = 0
    public var bytes: UInt64 = 0
    /// Packets dropped for any chain error.
    public var dropped: UInt64 = 0
    /// Packets not taken (dequeue) because the mbuf pool was empty.
    public var allocFailures: UInt64 = 0
    /// Calls the device decided to make (`needsCall` true).
    public var calls: UInt64 = 0
    /// Calls the call descriptor did not take (its counter full, or an error): dropped, not waited for.
    public var callsDropped: UInt64 = 0
    /// One counter per `ChainError`, indexed by raw value.
    public var errors: [UInt64] = Array(repeating: 0, count: ChainError.allCases.count)

    public init() {}
    public func count(_ e: ChainError) -> UInt64 { errors[e.rawValue] }
    public var totalErrors: UInt64 { errors.reduce(0, +) }
}
