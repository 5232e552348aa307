import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

// The handoff wire format: framed messages over a unix stream socket (the control socket), each
//
//   magic u32 "WSHO" | type u16 | flags u16 (0) | payload length u32 | fd count u32 | payload
//
// little-endian, 16-byte header. Descriptors ride with SCM_RIGHTS on the first sendmsg of their
// frame, at most 16 per frame (the shim's control buffer); larger sets go as several `fds` frames.
// Payloads are small JSON documents (control plane: readability and forward compatibility matter
// more than bytes). The header is binary so that a peer speaking something else entirely (an old
// binary without handoff, a stats client) is told apart from a version mismatch before any JSON.

/// A protocol version. The major changes when an old reader could not use the new state; the minor
/// when fields are added that a reader of the same major may ignore. A binary reads every state of
/// its major and of the majors in `HandoffVersion.readableMajors` (the previous one, after a bump).
public struct HandoffVersion: Codable, Sendable, Equatable, CustomStringConvertible {
    public var major: UInt16
    public var minor: UInt16
    public init(major: UInt16, minor: UInt16) { self.major = major; self.minor = minor }

    /// 1.0: configuration, regions, pools, ports with vhost-user sessions and TAP fds.
    /// 1.1: per-port counters and the donor's last-forward time (both optional: 1.0 states lack them).
    /// 1.2: the `quiesced` message is binary (HandoffLiveWire.swift) when both sides speak 1.2.
    public static let current = HandoffVersion(major: 1, minor: 2)
    /// Majors whose state this binary can read (the current one; add the previous one on a bump and
    /// keep its decoder).
    public static let readableMajors: [UInt16] = [1]

    public var description: String { "\(major).\(minor)" }
    public func canRead(_ other: HandoffVersion) -> Bool { Self.readableMajors.contains(other.major) }
    /// Whether a process speaking this version sends and reads the binary `quiesced` message.
    public var hasBinaryLive: Bool { (major, minor) >= (1, 2) }
}

public enum HandoffMessageType: UInt16, Sendable, CustomStringConvertible {
    /// new → old: {version, pid}
    case hello = 1
    /// old → new: {version, pid}
    case welcome = 2
    /// old → new: {reason}; the connection is closed after it.
    case refused = 3
    /// new → old: freeze the control plane (forwarding goes on) and send everything.
    case prepare = 4
    /// old → new: `HandoffLive` — the datapath is paused at a burst boundary; ring positions
    /// (binary from 1.2, JSON before).
    case quiesced = 5
    /// old → new: the state document (JSON), then its descriptors in `fds` frames.
    case state = 6
    /// old → new: {first, names}, with the descriptors attached.
    case fds = 7
    /// new → old: the final positions are applied; waiting for commit.
    case ready = 8
    /// old → new: the commit point. The old process has stopped for good; the new one owns all.
    case commit = 9
    /// new → old: forwarding again.
    case resumed = 10
    /// either way: {step, reason}; before commit the old process resumes.
    case abort = 11
    /// new → old: everything is mapped; pause now.
    case mapped = 12

    public var description: String {
        switch self {
        case .hello: "hello"; case .welcome: "welcome"; case .refused: "refused"; case .prepare: "prepare"
        case .quiesced: "quiesced"; case .state: "state"; case .fds: "fds"; case .ready: "ready"
        case .commit: "commit"; case .resumed: "resumed"; case .abort: "abort"; case .mapped: "mapped"
        }
    }
}

/// The steps of a handoff, in order, as timed and reported.
///
/// The order keeps the blackout short: everything slow (describing, passing descriptors, mapping
/// memory, rebuilding sessions) happens while the old process still forwards, with only its control
/// plane frozen (vhost-user messages wait in their sockets). The datapath pauses at `quiesce`, after
/// `map`, and only ring positions and counters cross after that.
public enum HandoffStepName: String, CaseIterable, Sendable, Codable {
    case hello, transfer, map, quiesce, commit, resume
    case oldExit = "old-exit"
}

public struct HandoffFrame {
    public var type: HandoffMessageType
    public var payload: [UInt8]
    public var fds: [Int32]
}

/// One end of a handoff connection. Blocking with a deadline per receive (poll(2) before each
/// read), so a peer that hangs is a timeout, not a hang. Owns its socket.
public final class HandoffChannel {
    public static let magic: UInt32 = 0x4F48_5357   // "WSHO" in little-endian byte order
    public static let headerSize = 16
    public static let maxFDsPerFrame = 16
    public static let maxPayload = 16 << 20
    public let fd: Int32
    /// Descriptors received with a frame that could not be completed: closed on deinit.
    private var stray: [Int32] = []

    public init(fd: Int32) { self.fd = fd }
    deinit {
        for f in stray { _ = close(f) }
        _ = close(fd)
    }

    /// Connects to the control socket at `path`.
    public static func connect(path: String) throws(HandoffError) -> HandoffChannel {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HandoffError(.hello, .system(.socket, errno: errno)) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            _ = close(fd)
            throw HandoffError(.hello, .socketPath(path))
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) } }
        guard rc == 0 else {
            let e = errno
            _ = close(fd)
            throw HandoffError(.hello, .system(.connect(path: path), errno: e))
        }
        let ch = HandoffChannel(fd: fd)
        // The process that will hand us memory and descriptors must be who the path says: ask
        // the kernel, not the process.
        _ = try ch.trustedPeer(step: .hello)
        return ch
    }

    /// Connects to a control socket that speaks JSON lines (`{"cmd":...}` → `{"ok":...}`), asks it
    /// to switch this connection to the handoff protocol with `{"cmd":"handoff"}`, and returns the
    /// channel once it agreed. The answer is read byte by byte so nothing of the binary protocol
    /// that follows is consumed. A server without the command is named as an old binary.
    public static func connectUpgrading(path: String, command: String = "handoff", timeoutMs: Int = 5000) throws(HandoffError) -> HandoffChannel {
        let ch = try connect(path: path)
        let line = Array("{\"cmd\":\"\(command)\"}\n".utf8)
        guard line.withUnsafeBytes({ Glibc.send(ch.fd, $0.baseAddress, line.count, Int32(MSG_NOSIGNAL)) }) == line.count else {
            throw HandoffError(.hello, .system(.upgradeRequest(path: path), errno: errno))
        }
        var answer: [UInt8] = []
        var fds: [Int32] = []
        let deadline = ws_monotonic_ns() &+ UInt64(timeoutMs) * 1_000_000
        while answer.last != 0x0A {
            guard answer.count < 65536 else { throw HandoffError(.hello, .upgradeAnswerTooLong) }
            answer += try ch.read(1, into: &fds, deadline: deadline, step: .hello, timeoutMs: timeoutMs)
        }
        for f in fds { _ = close(f) }
        struct Answer: Decodable { var ok: Bool; var error: String? }
        let a = try HandoffJSON.decode(Answer.self, Array(answer.dropLast()), step: .hello)
        guard a.ok else {
            let why = a.error ?? "no reason given"
            if why.contains("unknown command") {
                throw HandoffError(.hello, .handoffUnsupported(why))
            }
            throw HandoffError(.hello, .upgradeRefused(why))
        }
        return ch
    }

    /// The peer's pid and uid from the kernel (SO_PEERCRED), refused unless it runs as this
    /// process's uid or as root. Both sides of a handoff learn each other this way; the pid in a
    /// `hello` or `welcome` message is only the peer's say-so.
    public func trustedPeer(step: HandoffStepName) throws(HandoffError) -> PeerCredentials {
        guard let peer = PeerCredentials.of(fd) else {
            throw HandoffError(step, .noPeerCredentials)
        }
        guard peer.isTrusted else { throw HandoffError(step, .untrustedPeer(peer)) }
        return peer
    }

    // MARK: sending

    public func send(_ type: HandoffMessageType, _ payload: [UInt8] = [], fds: [Int32] = [], step: HandoffStepName) throws(HandoffError) {
        guard fds.count <= Self.maxFDsPerFrame else { throw HandoffError(step, .tooManyDescriptors(fds.count)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.headerSize + payload.count)
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        func put16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        put32(Self.magic); put16(type.rawValue); put16(0); put32(UInt32(payload.count)); put32(UInt32(fds.count))
        bytes.append(contentsOf: payload)
        var sent = 0
        var pending = fds
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { b in
                pending.withUnsafeBufferPointer { f in
                    ws_send_with_fds(fd, b.baseAddress! + sent, bytes.count - sent, f.baseAddress, Int32(f.count))
                }
            }
            if n < 0 {
                if -n == EAGAIN { var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0); _ = poll(&p, 1, 100); continue }
                if -n == EPIPE || -n == ECONNRESET { throw HandoffError(step, .peerClosedWhileSending(type)) }
                throw HandoffError(step, .system(.sendmsg(type), errno: Int32(-n)))
            }
            sent += n
            pending = []   // the descriptors went with the first bytes
        }
    }

    /// Sends `fds` (lent: the kernel duplicates them into the peer) in frames of at most 16, each
    /// with the names of what it carries.
    public func sendFDs(_ fds: [Int32], names: [String], step: HandoffStepName) throws(HandoffError) {
        var first = 0
        while first < fds.count {
            let end = min(first + Self.maxFDsPerFrame, fds.count)
            let doc = HandoffFDBatch(first: first, names: Array(names[first..<end]))
            try send(.fds, try HandoffJSON.encode(doc, step: step), fds: Array(fds[first..<end]), step: step)
            first = end
        }
    }

    // MARK: receiving

    /// Reads one frame, waiting at most `timeoutMs` for it to complete. A peer that closes (or
    /// dies: the kernel closes its end) is an error naming the step.
    public func receive(step: HandoffStepName, timeoutMs: Int) throws(HandoffError) -> HandoffFrame {
        let deadline = ws_monotonic_ns() &+ UInt64(max(0, timeoutMs)) * 1_000_000
        var fds: [Int32] = []
        var ok = false
        defer { if !ok { for f in fds { _ = close(f) } } }
        let header = try read(Self.headerSize, into: &fds, deadline: deadline, step: step, timeoutMs: timeoutMs)
        func u32(_ o: Int) -> UInt32 { UInt32(header[o]) | UInt32(header[o + 1]) << 8 | UInt32(header[o + 2]) << 16 | UInt32(header[o + 3]) << 24 }
        let magic = u32(0)
        guard magic == Self.magic else {
            throw HandoffError(step, .notHandoffProtocol(magic: magic))
        }
        let rawType = UInt16(header[4]) | UInt16(header[5]) << 8
        guard let type = HandoffMessageType(rawValue: rawType) else { throw HandoffError(step, .unknownMessageType(rawType)) }
        let flags = UInt16(header[6]) | UInt16(header[7]) << 8
        guard flags == 0 else { throw HandoffError(step, .reservedFlags(type, flags)) }
        let length = Int(u32(8)), fdCount = Int(u32(12))
        // Descriptors ride only on `fds` frames, where the index says what each one is.
        guard fdCount == 0 || type == .fds else { throw HandoffError(step, .descriptorsOnFrame(type, count: fdCount)) }
        guard length <= Self.maxPayload else { throw HandoffError(step, .payloadTooLarge(type, bytes: length)) }
        guard fdCount <= Self.maxFDsPerFrame else { throw HandoffError(step, .descriptorsClaimed(type, count: fdCount)) }
        let payload = length == 0 ? [] : try read(length, into: &fds, deadline: deadline, step: step, timeoutMs: timeoutMs)
        guard fds.count == fdCount else {
            throw HandoffError(step, .descriptorCount(type, got: fds.count, announced: fdCount))
        }
        ok = true
        return HandoffFrame(type: type, payload: payload, fds: fds)
    }

    /// Receives a frame and requires `type`; an `abort` or `refused` from the peer becomes the error.
    public func expect(_ type: HandoffMessageType, step: HandoffStepName, timeoutMs: Int) throws(HandoffError) -> HandoffFrame {
        let f = try receive(step: step, timeoutMs: timeoutMs)
        if f.type == type { return f }
        for d in f.fds { _ = close(d) }
        switch f.type {
        case .abort:
            let a = try? HandoffJSON.decode(HandoffAbort.self, f.payload, step: step)
            throw HandoffError(step, .peerAborted(step: a?.step, reason: a?.reason))
        case .refused:
            let r = try? HandoffJSON.decode(HandoffRefusal.self, f.payload, step: step)
            throw HandoffError(step, .peerRefused(r?.reason))
        default:
            throw HandoffError(step, .unexpectedMessage(expected: type, got: f.type))
        }
    }

    /// The reason of an `abort` the peer already sent (it is read from the socket buffer even when
    /// the peer has closed since), or nil.
    public func pendingAbortReason() -> String? {
        guard let f = try? receive(step: .hello, timeoutMs: 50) else { return nil }
        for d in f.fds { _ = close(d) }
        guard f.type == .abort, let a = try? HandoffJSON.decode(HandoffAbort.self, f.payload, step: .hello) else { return nil }
        return "aborted at step '\(a.step)': \(a.reason)"
    }

    /// Receives `count` descriptors sent by `sendFDs` and checks their names against `names`.
    public func receiveFDs(names: [String], step: HandoffStepName, timeoutMs: Int) throws(HandoffError) -> [Int32] {
        var got: [Int32] = []
        var ok = false
        defer { if !ok { for f in got { _ = close(f) } } }
        while got.count < names.count {
            let f = try expect(.fds, step: step, timeoutMs: timeoutMs)
            got.append(contentsOf: f.fds)
            let batch = try HandoffJSON.decode(HandoffFDBatch.self, f.payload, step: step)
            guard batch.first == got.count - f.fds.count, batch.names.count == f.fds.count,
                  batch.names == Array(names[batch.first..<min(names.count, batch.first + batch.names.count)]) else {
                throw HandoffError(step, .descriptorBatch(first: batch.first))
            }
        }
        ok = true
        return got
    }

    fileprivate func read(_ count: Int, into fds: inout [Int32], deadline: UInt64, step: HandoffStepName,
                      timeoutMs: Int) throws(HandoffError) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var have = 0
        var got = [Int32](repeating: -1, count: Self.maxFDsPerFrame)
        while have < count {
            let now = ws_monotonic_ns()
            guard now < deadline else { throw HandoffError(step, .timedOut(ms: timeoutMs)) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(min(UInt64(Int32.max), (deadline - now + 999_999) / 1_000_000))
            let r = poll(&p, 1, left)
            if r < 0 && errno == EINTR { continue }
            if r == 0 { continue }
            var nfds: Int32 = 0, truncated: Int32 = 0
            let n = buf.withUnsafeMutableBytes { b in
                got.withUnsafeMutableBufferPointer { f in
                    ws_recv_with_fds(fd, b.baseAddress! + have, count - have, f.baseAddress, Int32(Self.maxFDsPerFrame), &nfds, &truncated)
                }
            }
            fds.append(contentsOf: got[0..<Int(nfds)])
            if n < 0 {
                if -n == EAGAIN { continue }
                if -n == ECONNRESET { throw HandoffError(step, .peerClosed) }
                throw HandoffError(step, .system(.recvmsg, errno: Int32(-n)))
            }
            if truncated != 0 { throw HandoffError(step, .descriptorsTruncated) }
            if n == 0 { throw HandoffError(step, .peerClosed) }
            have += n
        }
        return buf
    }
}

// Small payload documents.
struct HandoffHello: Codable { var version: HandoffVersion; var pid: Int32 }
struct HandoffRefusal: Codable { var reason: String }
struct HandoffAbort: Codable { var step: String; var reason: String }
struct HandoffFDBatch: Codable { var first: Int; var names: [String] }
