import CWarmstartShim
import WarmstartPools

/// The frames a txonly polling thread sends (testpmd's txonly, for the sink-direction bench):
/// Ethernet II to the broadcast address from 02:00:00:00:00:01, EtherType 0x88B5 (local
/// experimental), then a 64-bit sequence number and the send time (monotonic ns, one clock read per
/// burst) — the same offsets as `warmstart bench`'s generator writes. Only the first 64 bytes are
/// written, as testpmd writes only its headers; frames longer than the data room are chains.
public final class TxOnlySource {
    public static let minFrame = 60
    public static let maxFrame = 9216
    public static let seqOffset = 14
    public static let stampOffset = 22

    let pool: MbufPool
    let size: Int
    let room: Int
    let template: UnsafeMutableRawPointer
    /// Sequence numbers: the stream (polling thread) in the top byte, so two threads' frames differ.
    var seq: UInt64

    public init(pool: MbufPool, size: Int, stream: UInt8 = 0) {
        self.pool = pool
        self.size = Swift.max(Self.minFrame, Swift.min(size, Self.maxFrame))
        room = pool.config.dataRoom
        template = .allocate(byteCount: 64, alignment: 64)
        let head: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5]
        for i in 0..<64 { template.storeBytes(of: i < 14 ? head[i] : UInt8(truncatingIfNeeded: i), toByteOffset: i, as: UInt8.self) }
        seq = UInt64(stream) << 56
    }

    deinit { template.deallocate() }

    /// Builds up to `count` frames into `out` from `cache`; returns how many (0 when out of mbufs).
    @inline(__always)
    func fill(_ out: UnsafeMutablePointer<Mbuf>, count: Int, cache: MbufCache) -> Int {
        guard cache.allocBulk(out, count: count) else { return 0 }
        let now = ws_monotonic_ns()
        var made = 0
        for i in 0..<count {
            let m = out[i]
            if build(m, cache: cache) {
                m.data.storeBytes(of: seq, toByteOffset: Self.seqOffset, as: UInt64.self)
                m.data.storeBytes(of: now, toByteOffset: Self.stampOffset, as: UInt64.self)
                seq &+= 1
                out[made] = m
                made += 1
            } else {
                cache.free(m)
            }
        }
        return made
    }

    @inline(__always)
    func build(_ m: Mbuf, cache: MbufCache) -> Bool {
        let first = Swift.min(size, room)
        m.data.copyMemory(from: template, byteCount: Swift.min(first, 64))
        m.dataLength = UInt16(truncatingIfNeeded: first)
        m.packetLength = UInt32(truncatingIfNeeded: first)
        var off = first
        while off < size {
            guard let s = cache.alloc() else { return false }
            let n = Swift.min(room, size - off)
            s.dataLength = UInt16(truncatingIfNeeded: n)
            s.packetLength = UInt32(truncatingIfNeeded: n)
            _ = pool.append(s, to: m)
            off += n
        }
        return true
    }
}
