/// A fixed-size log-linear latency histogram (HDR-style: 16 sub-buckets per power of two, so
/// every value is kept to within 1/16 ≈ 6%). Recording is a few instructions and no allocation,
/// so it runs per packet on the generator's hot path.
public final class LatencyHistogram {
    static let subBits = 4
    static let buckets = 64 << subBits
    let counts: UnsafeMutablePointer<UInt64>
    public private(set) var total: UInt64 = 0

    public init() {
        counts = .allocate(capacity: Self.buckets)
        counts.initialize(repeating: 0, count: Self.buckets)
    }
    deinit { counts.deallocate() }

    @inline(__always)
    static func bucket(_ v: UInt64) -> Int {
        if v < 1 << subBits { return Int(v) }
        let exp = 63 - v.leadingZeroBitCount
        let sub = Int((v >> UInt64(exp - subBits)) & ((1 << UInt64(subBits)) - 1))
        return ((exp - subBits + 1) << subBits) + sub
    }

    /// Lowest value that falls into bucket `b`.
    static func lowerBound(_ b: Int) -> UInt64 {
        if b < 1 << subBits { return UInt64(b) }
        let exp = (b >> subBits) + subBits - 1
        let sub = UInt64(b & ((1 << subBits) - 1))
        return (1 << UInt64(exp)) | (sub << UInt64(exp - subBits))
    }

    @inline(__always)
    public func record(_ ns: UInt64, count: UInt64 = 1) {
        counts[Self.bucket(ns)] &+= count
        total &+= count
    }

    /// The value at quantile `q` (0...1), as the bucket's lower bound; nil when empty.
    public func quantile(_ q: Double) -> UInt64? {
        guard total > 0 else { return nil }
        let rank = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for b in 0..<Self.buckets {
            seen &+= counts[b]
            if seen >= max(rank, 1) { return Self.lowerBound(b) }
        }
        return nil
    }
}
