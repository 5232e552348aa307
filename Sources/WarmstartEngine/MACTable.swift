import CWarmstartShim
import WarmstartPools

/// The l2 forwarding engine's MAC table: learned source MAC → port, open addressing in one flat
/// allocation. Entries are one 64-bit word (48-bit MAC, 16-bit port + 1), written with relaxed
/// atomics: a polling thread may read a slightly stale port, never a torn one.
public final class MACTable: @unchecked Sendable {
    public static let capacity = 4096
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>
    @usableFromInline static let mask = capacity - 1
    @usableFromInline static let probes = 8

    public init() {
        slots = .allocate(capacity: Self.capacity)
        slots.initialize(repeating: 0, count: Self.capacity)
    }
    deinit { slots.deallocate() }

    @inlinable static func key(_ p: UnsafeRawPointer) -> UInt64 {
        UInt64(p.loadUnaligned(as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
    }

    @inlinable static func hash(_ k: UInt64) -> Int { Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 52) & mask }

    /// Learns `mac` (6 bytes at p) on `port`; a full neighbourhood overwrites its first slot.
    @inlinable public func learn(_ p: UnsafeRawPointer, port: Int) {
        let k = Self.key(p)
        if k & 1 != 0 { return } // never learn group addresses
        let entry = k | UInt64(port + 1) << 48
        var i = Self.hash(k)
        for _ in 0..<Self.probes {
            let cur = ws_load_relaxed_u64(slots + i)
            if cur == entry { return }
            if cur == 0 || cur & 0xFFFF_FFFF_FFFF == k {
                ws_store_relaxed_u64(slots + i, entry)
                return
            }
            i = (i + 1) & Self.mask
        }
        ws_store_relaxed_u64(slots + Self.hash(k), entry)
    }

    /// The port `mac` was learned on, or nil (unknown or group address: flood).
    @inlinable public func lookup(_ p: UnsafeRawPointer) -> Int? {
        let k = Self.key(p)
        if k & 1 != 0 { return nil }
        var i = Self.hash(k)
        for _ in 0..<Self.probes {
            let cur = ws_load_relaxed_u64(slots + i)
            if cur == 0 { return nil }
            if cur & 0xFFFF_FFFF_FFFF == k { return Int(cur >> 48) - 1 }
            i = (i + 1) & Self.mask
        }
        return nil
    }
}

/// Swaps the destination and source MAC addresses of a frame in place.
@inlinable
public func swapMACs(_ m: Mbuf) {
    guard m.dataLength >= 12 else { return }
    let p = m.data
    let d0 = p.loadUnaligned(as: UInt32.self), d1 = p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
    let s0 = p.loadUnaligned(fromByteOffset: 6, as: UInt32.self), s1 = p.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
    p.storeBytes(of: s0, as: UInt32.self)
    p.storeBytes(of: s1, toByteOffset: 4, as: UInt16.self)
    p.storeBytes(of: d0, toByteOffset: 6, as: UInt32.self)
    p.storeBytes(of: d1, toByteOffset: 10, as: UInt16.self)
}
