import WarmstartMemory
import WarmstartVhostUserWire
#if canImport(Glibc)
import Glibc
#endif

/// A handoff failure: the step and what went wrong, in words an operator can act on.
public struct HandoffError: Error, Sendable, Equatable, CustomStringConvertible {
    public var step: HandoffStepName
    public var reason: HandoffFailure
    public init(_ step: HandoffStepName, _ reason: HandoffFailure) { self.step = step; self.reason = reason }
    public var description: String { "handoff failed at step '\(step.rawValue)': \(reason)" }
}

/// The system call a handoff made that failed (with the errno in `HandoffFailure.system`).
public enum HandoffSystemCall: Sendable, Equatable {
    case socket
    case connect(path: String)
    /// Sending the `{"cmd":"handoff"}` upgrade request on the control socket at `path`.
    case upgradeRequest(path: String)
    case sendmsg(HandoffMessageType)
    case recvmsg
}

/// Who injected a fault (tests and drills: `HandoffFault`).
public enum HandoffInjected: Sendable, Equatable {
    case crash, failure
}

/// What went wrong in a handoff. Every case names one kind of failure; `category` groups them.
/// Lower layers' errors that are not typed for us are carried in their own words (`cause`).
public indirect enum HandoffFailure: Sendable, Equatable, CustomStringConvertible {
    // MARK: wire and framing
    /// The frame's magic is not "WSHO": the peer speaks something else entirely.
    case notHandoffProtocol(magic: UInt32)
    case unknownMessageType(UInt16)
    case reservedFlags(HandoffMessageType, UInt16)
    /// Descriptors ride only on `fds` frames.
    case descriptorsOnFrame(HandoffMessageType, count: Int)
    case payloadTooLarge(HandoffMessageType, bytes: Int)
    case descriptorsClaimed(HandoffMessageType, count: Int)
    case descriptorCount(HandoffMessageType, got: Int, announced: Int)
    /// The kernel truncated the descriptors of one read.
    case descriptorsTruncated
    case unexpectedMessage(expected: HandoffMessageType, got: HandoffMessageType)
    case descriptorBatch(first: Int)
    /// The control socket's JSON answer to the upgrade request has no end.
    case upgradeAnswerTooLong
    /// A binary `quiesced` payload that does not follow its layout; `field` names where.
    case malformedQuiesced(field: String, problem: String)

    // MARK: peer credentials
    case noPeerCredentials
    case untrustedPeer(PeerCredentials)

    // MARK: version and protocol
    /// The control socket knows no `handoff` command (an older binary).
    case handoffUnsupported(String)
    case versionMismatch(peerPid: Int32, peer: HandoffVersion)
    case stateVersion(HandoffVersion)

    // MARK: documents
    case encoding(document: String, cause: String)
    case decoding(document: String, cause: String)
    /// The state document breaks a rule (`HandoffState.validate`); `field` is its path in the document.
    case invalidState(field: String, problem: String)

    // MARK: descriptors, regions, pools, ports
    case descriptorIndex(Int, tableSize: Int)
    case descriptorTaken(Int, name: String)
    case regionFormat(index: Int, name: String, pageSize: Int, backing: String)
    case regionMap(index: Int, name: String, size: Int, pageSize: PageSize, cause: String)
    case poolRegionNotHandedOver(poolID: UInt16)
    case poolMetadataNotHandedOver(poolID: UInt16)
    case poolRegion(poolID: UInt16, region: Int)
    case poolMetadataRegion(poolID: UInt16, region: Int, offset: Int?)
    case poolAdoption(poolID: UInt16, cause: String)
    case vhostUserPort(name: String, VhostUserError)
    case quiescedPortUnknown(String)
    case quiescedTooLarge(rings: Int, counters: Int)
    case quiescedRingIndex(Int)

    // MARK: timeouts
    case timedOut(ms: Int)

    // MARK: the peer gone, refusing or aborting
    case peerClosed
    case peerClosedWhileSending(HandoffMessageType)
    case peerAborted(step: String?, reason: String?)
    /// A `refused` message on the handoff connection.
    case peerRefused(String?)
    /// A JSON `{"ok":false}` answer to the upgrade request.
    case upgradeRefused(String)
    /// `inner`, with the reason of the abort the running process sent first.
    case peerSaid(HandoffFailure, String)

    // MARK: local failures
    case system(HandoffSystemCall, errno: Int32)
    case socketPath(String)
    case tooManyDescriptors(Int)
    case injected(HandoffInjected)
    /// The donor's hooks (the runtime) failed, in their own words.
    case freezing(cause: String)
    case describing(cause: String)
    case quiescing(cause: String)
    /// The taker's hooks (the runtime) failed, in their own words.
    case adoption(cause: String)
    case activation(cause: String)
    case resumption(cause: String)

    /// The groups the cases fall in. Every case is named: a new one must be placed here.
    public enum Category: Sendable, Equatable {
        case wire, peerCredentials, version, document, resources, timeout, peerGone, local
    }

    public var category: Category {
        switch self {
        case .notHandoffProtocol, .unknownMessageType, .reservedFlags, .descriptorsOnFrame, .payloadTooLarge,
             .descriptorsClaimed, .descriptorCount, .descriptorsTruncated, .unexpectedMessage, .descriptorBatch,
             .upgradeAnswerTooLong, .malformedQuiesced:
            return .wire
        case .noPeerCredentials, .untrustedPeer:
            return .peerCredentials
        case .handoffUnsupported, .versionMismatch, .stateVersion:
            return .version
        case .encoding, .decoding, .invalidState:
            return .document
        case .descriptorIndex, .descriptorTaken, .regionFormat, .regionMap, .poolRegionNotHandedOver,
             .poolMetadataNotHandedOver, .poolRegion, .poolMetadataRegion, .poolAdoption, .vhostUserPort,
             .quiescedPortUnknown, .quiescedTooLarge, .quiescedRingIndex:
            return .resources
        case .timedOut:
            return .timeout
        case .peerClosed, .peerClosedWhileSending, .peerAborted, .peerRefused, .upgradeRefused:
            return .peerGone
        case let .peerSaid(inner, _):
            return inner.category
        case .system, .socketPath, .tooManyDescriptors, .injected, .freezing, .describing, .quiescing, .adoption, .activation,
             .resumption:
            return .local
        }
    }

    public var description: String {
        func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }
        func strerror(_ e: Int32) -> String { String(cString: Glibc.strerror(e)) }
        switch self {
        case let .notHandoffProtocol(magic):
            return "the peer does not speak the handoff protocol (magic \(hex(magic)), expected \(hex(HandoffChannel.magic)))"
        case let .unknownMessageType(t): return "unknown message type \(t)"
        case let .reservedFlags(t, f): return "\(t) message has reserved flags \(hex(f)) set"
        case let .descriptorsOnFrame(t, n): return "\(t) message carries \(n) descriptors; only fds frames may"
        case let .payloadTooLarge(t, n): return "\(t) message of \(n) bytes is larger than \(HandoffChannel.maxPayload)"
        case let .descriptorsClaimed(t, n): return "\(t) message claims \(n) descriptors"
        case let .descriptorCount(t, got, announced): return "\(t) message carried \(got) descriptors, \(announced) announced"
        case .descriptorsTruncated: return "more descriptors than one frame may carry"
        case let .unexpectedMessage(expected, got): return "expected \(expected), got \(got)"
        case let .descriptorBatch(first): return "descriptor batch at \(first) does not match the state's descriptor index"
        case .upgradeAnswerTooLong: return "the control socket's answer is too long"
        case let .malformedQuiesced(_, problem): return "malformed quiesced message: \(problem)"
        case .noPeerCredentials: return "the kernel gave no credentials for the peer of the handoff connection"
        case let .untrustedPeer(peer): return "refusing the handoff: \(peer.refusal ?? "peer \(peer) is not trusted")"
        case let .handoffUnsupported(why): return "the running process does not support handoff (an older binary?): \(why)"
        case let .versionMismatch(pid, v):
            return "the running process (pid \(pid)) speaks handoff \(v); this binary reads majors "
                + HandoffVersion.readableMajors.map(String.init).joined(separator: ", ")
        case let .stateVersion(v): return "cannot read state version \(v)"
        case let .encoding(document, cause): return "cannot encode \(document): \(cause)"
        case let .decoding(document, cause): return "cannot read the \(document) document: \(cause)"
        case let .invalidState(field, problem): return "the handed-over state is invalid: \(problem) (field \(field))"
        case let .descriptorIndex(i, n): return "descriptor index \(i) is outside the table of \(n)"
        case let .descriptorTaken(i, name): return "descriptor \(i) (\(name)) is used twice"
        case let .regionFormat(k, name, ps, backing): return "region \(k) '\(name)': unknown page size \(ps) or backing '\(backing)'"
        case let .regionMap(k, name, size, ps, cause): return "cannot map region \(k) '\(name)' (\(size) bytes, \(ps) pages): \(cause)"
        case let .poolRegionNotHandedOver(id): return "pool \(id) lives in a region that is not handed over"
        case let .poolMetadataNotHandedOver(id): return "pool \(id) keeps its control block in a region that is not handed over"
        case let .poolRegion(id, r): return "pool \(id) names region \(r)"
        case let .poolMetadataRegion(id, m, o): return "pool \(id) names metadata region \(m) at offset \(o.map { "\($0)" } ?? "none")"
        case let .poolAdoption(id, cause): return "cannot adopt pool \(id): \(cause)"
        case let .vhostUserPort(name, e): return "port '\(name)': \(e)"
        case let .quiescedPortUnknown(name): return "port '\(name)' is not in the state document"
        case let .quiescedTooLarge(rings, counters): return "\(rings) rings and \(counters) counters do not fit the quiesced message"
        case let .quiescedRingIndex(i): return "ring index \(i) out of range"
        case let .timedOut(ms): return "timed out after \(ms) ms waiting for the peer"
        case .peerClosed: return "the peer closed the connection (it exited or crashed)"
        case let .peerClosedWhileSending(t): return "sending \(t): the peer closed the connection"
        case let .peerAborted(step, reason): return "the peer aborted at step '\(step ?? "?")': \(reason ?? "no reason given")"
        case let .peerRefused(reason): return "refused by the running process: \(reason ?? "no reason given")"
        case let .upgradeRefused(why): return "the running process refused the handoff: \(why)"
        case let .peerSaid(inner, why): return "\(inner); the running process said: \(why)"
        case let .system(call, e):
            switch call {
            case .socket: return "socket(AF_UNIX): errno \(e)"
            case let .connect(path): return "cannot connect to the running process's control socket \(path): \(strerror(e))"
            case let .upgradeRequest(path): return "cannot send the handoff request on \(path): \(strerror(e))"
            case let .sendmsg(t): return "sending \(t): sendmsg: \(strerror(e))"
            case .recvmsg: return "recvmsg: \(strerror(e))"
            }
        case let .socketPath(path): return "control socket path '\(path)' is empty or too long"
        case let .tooManyDescriptors(n): return "internal: \(n) descriptors in one frame"
        case let .injected(what):
            switch what {
            case .crash: return "injected crash"
            case .failure: return "injected failure"
            }
        case let .freezing(cause): return "cannot freeze the control plane: \(cause)"
        case let .describing(cause): return "cannot describe this process's state: \(cause)"
        case let .quiescing(cause): return "cannot quiesce: \(cause)"
        case let .adoption(cause): return cause
        case let .activation(cause): return "cannot apply the final ring positions: \(cause)"
        case let .resumption(cause): return "after the commit, cannot start forwarding: \(cause)"
        }
    }
}
