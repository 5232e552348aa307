import WarmstartMemory
import WarmstartVhostUserWire
#if canImport(Glibc)
import Glibc
#endif

/// Why a virtio-user port could not (or can no longer) talk to its back-end.
public enum VirtioUserError: Error, CustomStringConvertible, Sendable {
    /// The back-end lacks features we require; permanent (reconnecting will not help).
    case missingFeatures([String])
    /// The back-end went away (closed the connection, or the socket failed); the bus reconnects.
    case backendGone(VhostUserError)
    /// The back-end answered outside the protocol; the bus reconnects.
    case protocolError(VhostUserError)
    /// The port's configuration cannot work (with this back-end); permanent.
    case badConfig(VirtioUserConfigProblem)
    case system(String, Int32)
    /// A file behind memory the port shares was truncated (see `VirtioUserPort.memoryFault`);
    /// permanent: the memory is no longer the file's, so no back-end can share it again.
    case sharedMemoryLost(String)

    /// Sorts a vhost-user failure by what it means for the port. Every reason is named: a new
    /// one must be placed here, not fall through.
    static func from(_ e: VhostUserError) -> VirtioUserError {
        switch e.reason {
        case let .missingFeatures(names):
            return .missingFeatures(names)
        case .connectionClosed, .io:
            return .backendGone(e)
        case .shortHeader, .badVersion, .reservedFlags, .replyFlagOnRequest, .replyFlagMissing, .oversize, .fdsTruncated,
             .unknownRequest, .unsupported, .payloadSize, .unexpectedFDs, .fdCount, .reservedBits, .queueIndex,
             .tooManyRegions, .invalid, .notNegotiated, .memory, .ring, .unexpectedReply, .peerFailed:
            return .protocolError(e)
        }
    }

    public var isPermanent: Bool {
        switch self {
        case .missingFeatures, .badConfig, .sharedMemoryLost: return true
        case .backendGone, .protocolError, .system: return false
        }
    }

    public var description: String {
        switch self {
        case let .missingFeatures(n): return "the vhost-user back-end does not offer required features: \(n.joined(separator: ", "))"
        case let .backendGone(e): return "the vhost-user back-end went away: \(e)"
        case let .protocolError(e): return "vhost-user protocol error: \(e)"
        case let .badConfig(p): return "\(p)"
        case let .sharedMemoryLost(w): return w
        case let .system(call, e): return "\(call) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// What in a virtio-user port's configuration cannot work, naming the setting and its value.
public enum VirtioUserConfigProblem: Sendable, CustomStringConvertible {
    /// `mac=` is not a unicast address; `problem` is `PortSpec.macProblem`'s.
    case mac(port: String, value: String, problem: String)
    case mtu(port: String, value: String)
    case queueSize(Int)
    case queuePairs(Int)
    /// The pool's control block and free ring would be shared with the back-end (issue 12).
    case sharedPoolMetadata(poolID: UInt16, region: String)
    /// The SIGBUS guard for the shared regions could not be set up.
    case shrinkGuard(port: String, MappingFaultGuardError)
    case ringArena(rings: Int, bytes: Int, left: Int)
    case memorySlots(regions: Int, slots: Int)
    /// A driver ring could not be laid out in its memory (DriverQueue's error).
    case ringSetup(any Error)
    /// The back-end failed SET_CONFIG for `mac=`.
    case macRefused(port: String, mac: String)
    /// The back-end took SET_CONFIG but keeps another address.
    case macKept(port: String, wanted: String, kept: String)
    /// Without MRG_RXBUF, the largest frame needs a longer receive chain than the ring allows.
    case receiveChain(frame: Int, mbufs: Int, dataRoom: Int, limit: Int)

    public var description: String {
        switch self {
        case let .mac(port, value, problem): return "port \(port): mac '\(value)' \(problem)"
        case let .mtu(port, value): return "port \(port): mtu '\(value)' must be an integer from 68 to 65535"
        case let .queueSize(n): return "queue size \(n) is not a power of two between 2 and 32768"
        case let .queuePairs(n): return "queues=\(n) is outside 1...128"
        case let .sharedPoolMetadata(id, region):
            return "mbuf pool \(id): its control block and free ring are in region '\(region)', "
                + "which would be shared with the vhost-user back-end; give the port the packet regions only "
                + "(LiveMemory.sharedRegions) and a pool with separate metadata"
        case let .shrinkGuard(port, e): return "port \(port): \(e)"
        case let .ringArena(rings, bytes, left):
            return "the general-purpose region has no room for \(rings) rings of \(bytes) bytes (\(left) left)"
        case let .memorySlots(regions, slots): return "\(regions) memory regions but the back-end takes \(slots)"
        case let .ringSetup(e): return "ring set-up: \(e)"
        case let .macRefused(port, mac): return "port \(port): the back-end refused mac=\(mac) (SET_CONFIG failed)"
        case let .macKept(port, wanted, kept): return "port \(port): mac=\(wanted) but the back-end keeps \(kept) in its config space"
        case let .receiveChain(frame, mbufs, room, limit):
            return "receive buffers for \(frame)-byte frames take \(mbufs) mbufs of \(room) bytes (\(mbufs + 1) descriptors): "
                + "more than \(limit) (use mrg=1 or a larger --data-room)"
        }
    }
}
