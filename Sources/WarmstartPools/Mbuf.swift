import CWarmstartShim

/// The byte layout of a packet buffer in shared memory. Offsets are explicit so the layout is the
/// same in every build and every process (snapshot files and hot upgrade depend on it).
///
///     +--------------------+-----------+-------------------------+
///     | header (64 B)      | headroom  | data room               |
///     +--------------------+-----------+-------------------------+
///     ^ element start      ^ buffer start (header + 64)
///
/// The header is one cache line and is written whole when the buffer is allocated, so nothing a
/// previous run left in it is ever trusted. Segments chain by element index, never by pointer.
public enum MbufLayout {
    public static let headerSize = 64
    public static let defaultHeadroom = 128
    public static let defaultDataRoom = 2048
    public static let noNext: UInt32 = 0xFFFF_FFFF

    // Field offsets inside the header.
    public static let dataOffset = 0        // UInt16: start of data, from buffer start
    public static let dataLength = 2        // UInt16: bytes of data in this segment
    public static let packetLength = 4      // UInt32: bytes in the whole chain (first segment)
    public static let segmentCount = 8      // UInt16: segments in the chain (first segment)
    public static let port = 10             // UInt16: input port
    public static let refCount = 12         // UInt16
    public static let poolID = 14           // UInt16: identity, written at lay-out and at alloc
    public static let next = 16             // UInt32: element index of the next segment, or noNext
    public static let index = 20            // UInt32: this element's index (identity)
    public static let offloadFlags = 24     // UInt64: MbufOffload bits
    public static let bufferLength = 32     // UInt16: headroom + data room
    public static let queue = 34            // UInt16: input queue
    public static let hash = 36             // UInt32: flow hash / user data
    // virtio-net header fields (virtio 1.1 §5.1.6), carried from port to port.
    public static let vnetFlags = 40        // UInt8
    public static let vnetGSOType = 41      // UInt8
    public static let vnetHeaderLength = 42 // UInt16
    public static let vnetGSOSize = 44      // UInt16
    public static let vnetCsumStart = 46    // UInt16
    public static let vnetCsumOffset = 48   // UInt16
    public static let vnetNumBuffers = 50   // UInt16
    public static let magic = 52            // UInt32: identity magic
    public static let identityMagic: UInt32 = 0x5753_4D42 // "WSMB"
    // 56..63 free for the application.
    public static let userData = 56         // UInt64
}

/// Offload flags carried with a packet. The flags are inlinable constants: a `static let` read
/// from another module is a call to its lazy-initialisation addressor, per packet on a hot path.
@frozen
public struct MbufOffload: OptionSet, Sendable {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The virtio-net header fields are meaningful (NEEDS_CSUM, GSO, ...).
    @inlinable public static var vnetHeaderValid: MbufOffload { MbufOffload(rawValue: 1 << 0) }
    /// Checksum still to be computed from csumStart at csumOffset (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    @inlinable public static var needsChecksum: MbufOffload { MbufOffload(rawValue: 1 << 1) }
    /// Checksum known good (VIRTIO_NET_HDR_F_DATA_VALID).
    @inlinable public static var dataValid: MbufOffload { MbufOffload(rawValue: 1 << 2) }
    /// A large frame to be segmented (gsoType/gsoSize describe how).
    @inlinable public static var gso: MbufOffload { MbufOffload(rawValue: 1 << 3) }
}

/// A handle on one packet buffer: a raw pointer to its header. Copying the handle copies the
/// pointer only; there is no ARC and no allocation.
@frozen
public struct Mbuf: Equatable, Hashable {
    public let header: UnsafeMutableRawPointer

    @inlinable public init(header: UnsafeMutableRawPointer) { self.header = header }

    @inlinable var h: UnsafeMutableRawPointer { header }

    @inlinable public var dataOffset: UInt16 {
        get { h.load(fromByteOffset: MbufLayout.dataOffset, as: UInt16.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.dataOffset, as: UInt16.self) }
    }
    @inlinable public var dataLength: UInt16 {
        get { h.load(fromByteOffset: MbufLayout.dataLength, as: UInt16.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.dataLength, as: UInt16.self) }
    }
    @inlinable public var packetLength: UInt32 {
        get { h.load(fromByteOffset: MbufLayout.packetLength, as: UInt32.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.packetLength, as: UInt32.self) }
    }
    @inlinable public var segmentCount: UInt16 {
        get { h.load(fromByteOffset: MbufLayout.segmentCount, as: UInt16.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.segmentCount, as: UInt16.self) }
    }
    @inlinable public var port: UInt16 {
        get { h.load(fromByteOffset: MbufLayout.port, as: UInt16.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.port, as: UInt16.self) }
    }
    @inlinable public var queue: UInt16 {
        get { h.load(fromByteOffset: MbufLayout.queue, as: UInt16.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.queue, as: UInt16.self) }
    }
    @inlinable public var refCount: UInt16 {
        get { ws_load_relaxed_u16(h.advanced(by: MbufLayout.refCount).assumingMemoryBound(to: UInt16.self)) }
        nonmutating set { ws_store_relaxed_u16(h.advanced(by: MbufLayout.refCount).assumingMemoryBound(to: UInt16.self), newValue) }
    }
    @inlinable public var poolID: UInt16 { h.load(fromByteOffset: MbufLayout.poolID, as: UInt16.self) }
    @inlinable public var index: UInt32 { h.load(fromByteOffset: MbufLayout.index, as: UInt32.self) }
    /// Element index of the next segment, or `MbufLayout.noNext`.
    @inlinable public var nextIndex: UInt32 {
        get { h.load(fromByteOffset: MbufLayout.next, as: UInt32.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.next, as: UInt32.self) }
    }
    @inlinable public var offload: MbufOffload {
        get { MbufOffload(rawValue: h.load(fromByteOffset: MbufLayout.offloadFlags, as: UInt64.self)) }
        nonmutating set { h.storeBytes(of: newValue.rawValue, toByteOffset: MbufLayout.offloadFlags, as: UInt64.self) }
    }
    @inlinable public var bufferLength: UInt16 { h.load(fromByteOffset: MbufLayout.bufferLength, as: UInt16.self) }
    @inlinable public var hash: UInt32 {
        get { h.load(fromByteOffset: MbufLayout.hash, as: UInt32.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.hash, as: UInt32.self) }
    }
    @inlinable public var userData: UInt64 {
        get { h.load(fromByteOffset: MbufLayout.userData, as: UInt64.self) }
        nonmutating set { h.storeBytes(of: newValue, toByteOffset: MbufLayout.userData, as: UInt64.self) }
    }

    /// The virtio-net header carried with the packet (12 bytes, virtio 1.x layout).
    @inlinable public var vnetHeader: VirtioNetHeader {
        get { VirtioNetHeader(loadingFrom: h + MbufLayout.vnetFlags) }
        nonmutating set { newValue.store(to: h + MbufLayout.vnetFlags) }
    }

    /// Start of the buffer (headroom included).
    @inlinable public var buffer: UnsafeMutableRawPointer { h + MbufLayout.headerSize }
    /// Start of this segment's data.
    @inlinable public var data: UnsafeMutableRawPointer { h + MbufLayout.headerSize + Int(dataOffset) }
    /// Bytes free after the data in this segment.
    @inlinable public var tailroom: Int { Int(bufferLength) - Int(dataOffset) - Int(dataLength) }
    @inlinable public var headroom: Int { Int(dataOffset) }
}

/// struct virtio_net_hdr_v1 (virtio 1.1 §5.1.6): 12 bytes, little-endian.
@frozen
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 12
    public static let flagNeedsCsum: UInt8 = 1
    public static let flagDataValid: UInt8 = 2
    public static let flagRSCInfo: UInt8 = 4
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var csumStart: UInt16 = 0
    public var csumOffset: UInt16 = 0
    public var numBuffers: UInt16 = 0

    @inlinable public init() {}

    @inlinable public init(loadingFrom p: UnsafeRawPointer) {
        flags = p.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        csumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        csumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        numBuffers = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
    }

    @inlinable public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: csumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: csumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
        p.storeBytes(of: numBuffers.littleEndian, toByteOffset: 10, as: UInt16.self)
    }
}

extension Mbuf {
    /// Writes the whole 64-byte header as a freshly allocated single-segment mbuf: data at the
    /// headroom, lengths 0, one segment, no next, refCount 1, identity words, offload and vnet
    /// fields 0, user data 0. Eight 8-byte stores, so nothing an earlier run left is kept.
    @inlinable @inline(__always)
    public func reset(index: UInt32, poolID: UInt16, headroom: UInt16, bufferLength: UInt16) {
        #if _endian(little)
        let h = header
        // Bytes 0..<8: dataOffset, dataLength 0, packetLength 0.
        h.storeBytes(of: UInt64(headroom), toByteOffset: 0, as: UInt64.self)
        // 8..<16: segmentCount 1, port 0, refCount 1, poolID.
        h.storeBytes(of: 1 | (1 << 32) | (UInt64(poolID) << 48), toByteOffset: 8, as: UInt64.self)
        // 16..<24: next = noNext, index.
        h.storeBytes(of: UInt64(MbufLayout.noNext) | (UInt64(index) << 32), toByteOffset: 16, as: UInt64.self)
        // 24..<32: offload flags.
        h.storeBytes(of: 0, toByteOffset: 24, as: UInt64.self)
        // 32..<40: bufferLength, queue 0, hash 0.
        h.storeBytes(of: UInt64(bufferLength), toByteOffset: 32, as: UInt64.self)
        // 40..<48: vnet flags, gsoType, headerLength, gsoSize, csumStart.
        h.storeBytes(of: 0, toByteOffset: 40, as: UInt64.self)
        // 48..<56: vnet csumOffset, numBuffers, magic.
        h.storeBytes(of: UInt64(MbufLayout.identityMagic) << 32, toByteOffset: 48, as: UInt64.self)
        // 56..<64: user data.
        h.storeBytes(of: 0, toByteOffset: 56, as: UInt64.self)
        #else
        header.initializeMemory(as: UInt8.self, repeating: 0, count: MbufLayout.headerSize)
        dataOffset = headroom
        segmentCount = 1
        refCount = 1
        nextIndex = MbufLayout.noNext
        writeIdentity(index: index, poolID: poolID, bufferLength: bufferLength)
        #endif
    }

    /// Writes only the identity words (index, poolID, bufferLength, magic): the pool's lay-out
    /// step, which must not touch anything else.
    @inlinable @inline(__always)
    public func writeIdentity(index: UInt32, poolID: UInt16, bufferLength: UInt16) {
        header.storeBytes(of: index, toByteOffset: MbufLayout.index, as: UInt32.self)
        header.storeBytes(of: poolID, toByteOffset: MbufLayout.poolID, as: UInt16.self)
        header.storeBytes(of: bufferLength, toByteOffset: MbufLayout.bufferLength, as: UInt16.self)
        header.storeBytes(of: MbufLayout.identityMagic, toByteOffset: MbufLayout.magic, as: UInt32.self)
    }

    /// Takes `n` more references atomically (rte_mbuf_refcnt_update): the segment goes back to its
    /// pool only when every holder has freed it.
    @inlinable public func addReference(_ n: UInt16 = 1) {
        _ = ws_fetch_add_u16((header + MbufLayout.refCount).assumingMemoryBound(to: UInt16.self), n)
    }

    /// The identity magic word ("WSMB" when the header belongs to a pool).
    @inlinable public var magic: UInt32 { header.load(fromByteOffset: MbufLayout.magic, as: UInt32.self) }
}
