/// The pool's element array as plain values (address, stride, bounds, identity), copied into
/// locals on the hot paths so loops do not reload them from the pool object after every store
/// through a raw pointer.
@frozen @usableFromInline
struct PoolElements {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let stride: Int
    @usableFromInline let count: UInt32
    @usableFromInline let poolID: UInt16
    @usableFromInline let headroom: UInt16
    @usableFromInline let bufferLength: UInt16

    @usableFromInline
    init(base: UnsafeMutableRawPointer, stride: Int, count: UInt32, poolID: UInt16, headroom: UInt16,
         bufferLength: UInt16) {
        self.base = base
        self.stride = stride
        self.count = count
        self.poolID = poolID
        self.headroom = headroom
        self.bufferLength = bufferLength
    }

    /// The element at `index`, without a bounds check.
    @inlinable @inline(__always)
    func element(_ index: UInt32) -> Mbuf { Mbuf(header: base + Int(index) &* stride) }

    /// The element at `index` after a reset of its whole header (see `Mbuf.reset`), done as four
    /// 16-byte stores of which only one depends on the index.
    @inlinable @inline(__always)
    func initialize(_ index: UInt32) -> Mbuf {
        let h = base + Int(index) &* stride
        #if _endian(little)
        // 0..<16: dataOffset = headroom, dataLength 0, packetLength 0 | segmentCount 1, port 0,
        //         refCount 1, poolID.
        h.storeBytes(of: SIMD2<UInt64>(UInt64(headroom), 1 | (1 << 32) | (UInt64(poolID) << 48)),
                     toByteOffset: 0, as: SIMD2<UInt64>.self)
        // 16..<32: next = noNext, index | offload flags 0.
        h.storeBytes(of: SIMD2<UInt64>(UInt64(MbufLayout.noNext) | (UInt64(index) << 32), 0),
                     toByteOffset: 16, as: SIMD2<UInt64>.self)
        // 32..<48: bufferLength, queue 0, hash 0 | vnet flags, gsoType, headerLength, gsoSize, csumStart 0.
        h.storeBytes(of: SIMD2<UInt64>(UInt64(bufferLength), 0), toByteOffset: 32, as: SIMD2<UInt64>.self)
        // 48..<64: vnet csumOffset 0, numBuffers 0, magic | user data 0.
        h.storeBytes(of: SIMD2<UInt64>(UInt64(MbufLayout.identityMagic) << 32, 0), toByteOffset: 48,
                     as: SIMD2<UInt64>.self)
        return Mbuf(header: h)
        #else
        let m = Mbuf(header: h)
        m.reset(index: index, poolID: poolID, headroom: headroom, bufferLength: bufferLength)
        return m
        #endif
    }

    /// Checks a segment being freed and, when it held the last reference, marks it free.
    /// Returns `release` (put it back), `shared` (refCount > 1: drop a reference atomically, see
    /// MbufPool.dropSharedReference), `badIdentity` or `doubleFree`. Like DPDK, the refCount 1
    /// case uses no atomic read-modify-write: two threads freeing the same mbuf at once is a race
    /// the check may miss; a later second free is caught.
    @inlinable @inline(__always)
    func prefree(_ m: Mbuf) -> FreeVerdict {
        let h = m.header
        let index = h.load(fromByteOffset: MbufLayout.index, as: UInt32.self)
        guard index < count, base + Int(index) &* stride == h,
              h.load(fromByteOffset: MbufLayout.poolID, as: UInt16.self) == poolID,
              h.load(fromByteOffset: MbufLayout.magic, as: UInt32.self) == MbufLayout.identityMagic else {
            return .badIdentity
        }
        let rc = m.refCount
        if rc == 1 {
            m.refCount = 0
            return .release
        }
        return rc == 0 ? .doubleFree : .shared
    }
}

@usableFromInline
enum FreeVerdict {
    case release, shared, badIdentity, doubleFree
}
