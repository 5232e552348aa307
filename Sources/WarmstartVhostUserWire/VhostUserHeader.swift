// The 12-byte message header (spec "Message Specification" → "Header"):
//   request u32 | flags u32 | size u32
// flags: bits 0-1 version (0x1), bit 2 REPLY (set on every back-end reply), bit 3 NEED_REPLY
// (REPLY_ACK). All other bits are reserved; a header with any of them set is refused, as is a
// header whose size is beyond the largest payload this implementation accepts.

public struct VhostUserHeader: Sendable, Equatable {
    public static let byteCount = 12
    public static let version: UInt32 = 0x1
    public static let versionMask: UInt32 = 0x3
    public static let replyFlag: UInt32 = 1 << 2
    public static let needReplyFlag: UInt32 = 1 << 3
    /// Every bit the spec does not define.
    public static let reservedMask: UInt32 = ~(versionMask | replyFlag | needReplyFlag)
    /// The largest payload accepted from a peer. The largest message the spec defines is a memory
    /// table (8 + 8×32 bytes) or a config access (12 + 256); 4096 leaves room and bounds the read.
    public static let maxPayloadSize: UInt32 = 4096

    /// The raw request code (kept raw: an unknown code is an error for the session, not a parse error).
    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32 = VhostUserHeader.version, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public var isReply: Bool { flags & Self.replyFlag != 0 }
    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }
    public var knownRequest: VhostUserRequest? { VhostUserRequest(rawValue: request) }

    public func encode(into w: inout WireWriter) {
        w.u32(request)
        w.u32(flags)
        w.u32(size)
    }

    /// Parses and validates a header. Every failure here is fatal for the connection: once a header
    /// cannot be trusted, the byte stream is out of sync.
    /// - Parameter expectReply: true on the front-end side (reading replies), false on the back-end.
    public static func decode(_ bytes: [UInt8], expectReply: Bool) throws(VhostUserError) -> VhostUserHeader {
        guard bytes.count >= byteCount else {
            throw VhostUserError(request: nil, reason: .shortHeader(bytes.count))
        }
        var r = WireReader(bytes)
        let h = VhostUserHeader(request: r.u32(), flags: r.u32(), size: r.u32())
        try h.validate(expectReply: expectReply)
        return h
    }

    public func validate(expectReply: Bool) throws(VhostUserError) {
        let req = knownRequest
        if flags & Self.versionMask != Self.version {
            throw VhostUserError(code: request, request: req, reason: .badVersion(flags & Self.versionMask))
        }
        if flags & Self.reservedMask != 0 {
            throw VhostUserError(code: request, request: req, reason: .reservedFlags(flags & Self.reservedMask))
        }
        if isReply != expectReply {
            throw VhostUserError(code: request, request: req, reason: expectReply ? .replyFlagMissing : .replyFlagOnRequest)
        }
        if expectReply && needsReply {
            throw VhostUserError(code: request, request: req, reason: .reservedFlags(Self.needReplyFlag))
        }
        if size > Self.maxPayloadSize {
            throw VhostUserError(code: request, request: req, reason: .oversize(size, max: Self.maxPayloadSize))
        }
    }
}

/// Little-endian writer (vhost-user is "machine native byte order"; Warmstart runs on
/// little-endian machines only, and says so by encoding little-endian explicitly).
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
}

/// Little-endian reader. Callers check the total size first (exact payload sizes are validated per
/// request), so reads past the end return zero instead of trapping.
public struct WireReader: Sendable {
    let bytes: [UInt8]
    public private(set) var offset = 0
    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    mutating func take(_ n: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<n where offset + i < bytes.count {
            v |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        offset += n
        return v
    }
    public mutating func u8() -> UInt8 { UInt8(truncatingIfNeeded: take(1)) }
    public mutating func u16() -> UInt16 { UInt16(truncatingIfNeeded: take(2)) }
    public mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: take(4)) }
    public mutating func u64() -> UInt64 { take(8) }
    public mutating func skip(_ n: Int) { offset += n }
    public mutating func rest(_ n: Int) -> [UInt8] {
        let end = min(bytes.count, offset + n)
        let out = offset < end ? Array(bytes[offset..<end]) : []
        offset += n
        return out
    }
}
