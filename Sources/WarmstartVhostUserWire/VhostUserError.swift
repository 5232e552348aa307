/// An error in a vhost-user exchange: which request (when known) and why, in words a log reader can
/// act on. `isFatal` says whether the connection can go on (see `VhostUserError.Reason.isFatal`).
public struct VhostUserError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The raw request code, also when it is not a known one.
    public var code: UInt32?
    public var request: VhostUserRequest?
    public var reason: Reason

    public init(code: UInt32? = nil, request: VhostUserRequest?, reason: Reason) {
        self.code = code ?? request?.rawValue
        self.request = request
        self.reason = reason
    }

    public enum Reason: Sendable, Equatable, CustomStringConvertible {
        // header: the stream is out of sync, fatal
        case shortHeader(Int)
        case badVersion(UInt32)
        case reservedFlags(UInt32)
        case replyFlagOnRequest
        case replyFlagMissing
        case oversize(UInt32, max: UInt32)
        case connectionClosed
        case io(String, errno: Int32)
        case fdsTruncated
        // payload and fds
        case unknownRequest
        case unsupported(String)
        case payloadSize(got: Int, expected: String)
        case unexpectedFDs(Int)
        case fdCount(got: Int, expected: Int)
        case reservedBits(String, UInt64)
        case queueIndex(UInt64, queues: Int)
        case tooManyRegions(Int, max: Int)
        case invalid(String)
        case notNegotiated(String)
        case memory(String)
        case ring(index: Int, String)
        /// A reply that did not match what the front-end asked.
        case unexpectedReply(String)
        /// The back-end answered a REPLY_ACK request with a failure.
        case peerFailed(UInt64)
        case missingFeatures([String])

        public var description: String {
            switch self {
            case let .shortHeader(n): return "header is \(n) bytes, needs 12"
            case let .badVersion(v): return "flags version is \(v), must be 1"
            case let .reservedFlags(m): return "reserved flag bits 0x\(String(m, radix: 16)) are set"
            case .replyFlagOnRequest: return "REPLY flag set on a request"
            case .replyFlagMissing: return "REPLY flag missing on a reply"
            case let .oversize(s, max): return "payload size \(s) exceeds the maximum \(max)"
            case .connectionClosed: return "the peer closed the connection"
            case let .io(op, e): return "\(op) failed: errno \(e)"
            case .fdsTruncated: return "more file descriptors arrived than a message may carry; they were closed"
            case .unknownRequest: return "unknown request code"
            case let .unsupported(why): return "not supported: \(why)"
            case let .payloadSize(got, expected): return "payload is \(got) bytes, expected \(expected)"
            case let .unexpectedFDs(n): return "\(n) file descriptor(s) sent with a request that takes none; closed"
            case let .fdCount(got, expected): return "got \(got) file descriptor(s), expected \(expected)"
            case let .reservedBits(field, v): return "\(field) has undefined bits set (0x\(String(v, radix: 16)))"
            case let .queueIndex(i, q): return "queue index \(i) out of range (the device has \(q) queues)"
            case let .tooManyRegions(n, max): return "\(n) memory regions, at most \(max) allowed"
            case let .invalid(why): return why
            case let .notNegotiated(what): return "\(what) was not negotiated"
            case let .memory(why): return why
            case let .ring(i, why): return "vring \(i): \(why)"
            case let .unexpectedReply(why): return "unexpected reply: \(why)"
            case let .peerFailed(v): return "the back-end reported failure (\(v))"
            case let .missingFeatures(names): return "the back-end does not offer required features: \(names.joined(separator: ", "))"
            }
        }

        /// Header-level and transport errors leave the stream unusable; everything else is about one
        /// well-framed message and the session goes on. Every case is named: a new one must be
        /// classified here, not fall through.
        public var isFatal: Bool {
            switch self {
            case .shortHeader, .badVersion, .reservedFlags, .replyFlagOnRequest, .replyFlagMissing,
                 .oversize, .connectionClosed, .io, .fdsTruncated:
                return true
            case .unknownRequest, .unsupported, .payloadSize, .unexpectedFDs, .fdCount, .reservedBits, .queueIndex,
                 .tooManyRegions, .invalid, .notNegotiated, .memory, .ring, .unexpectedReply, .peerFailed, .missingFeatures:
                return false
            }
        }
    }

    public var isFatal: Bool { reason.isFatal }

    public var description: String {
        let name = request.map { "\($0)" } ?? code.map { "request \($0)" } ?? "vhost-user"
        return "\(name): \(reason)"
    }
}
