import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// One framed message as read from the socket: a validated header, its payload bytes, and the
/// descriptors that came with it (owned by the receiver). Parsing it is a separate step
/// (`VhostUserMessageValidator.decodeRequest` or `VhostUserBackendSession.receive`), so an I/O
/// loop that reads on its own can feed the same code.
public struct VhostUserFrame: Sendable {
    public var header: VhostUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]
}

/// A vhost-user connection over a connected AF_UNIX stream socket.
///
/// Blocking or not follows the descriptor's O_NONBLOCK: on a non-blocking socket `receiveFrame`
/// returns nil when a message is not complete yet and keeps what it has read for the next call.
/// Descriptors arrive with the first bytes of a message (the header's recvmsg); they are collected
/// from every recvmsg of the message, so a short read cannot lose them.
public final class VhostUserChannel {
    public let fd: Int32
    private let ownsFD: Bool
    /// true on the front-end side: incoming messages are replies.
    public let readsReplies: Bool

    private var headerBytes: [UInt8] = []
    private var header: VhostUserHeader?
    private var payload: [UInt8] = []
    private var pendingFDs: [Int32] = []
    /// The most descriptors one message may carry (the shim's SCM_RIGHTS buffer).
    public static let maxFDs = 16

    public init(fd: Int32, ownsFD: Bool = true, readsReplies: Bool = false) {
        self.fd = fd
        self.ownsFD = ownsFD
        self.readsReplies = readsReplies
    }

    deinit {
        for f in pendingFDs { closeFD(f) }
        if ownsFD { closeFD(fd) }
    }

    /// Reads the next message. Returns nil only on a non-blocking socket with nothing complete.
    /// Throws `.connectionClosed` at end of stream and fatal errors for a bad header (the stream
    /// cannot be resynchronised after one).
    public func receiveFrame() throws(VhostUserError) -> VhostUserFrame? {
        while true {
            if let h = header {
                if payload.count == Int(h.size) {
                    let frame = VhostUserFrame(header: h, payload: payload, fds: pendingFDs)
                    header = nil
                    headerBytes = []
                    payload = []
                    pendingFDs = []
                    return frame
                }
                guard let chunk = try read(max: Int(h.size) - payload.count) else { return nil }
                payload.append(contentsOf: chunk)
            } else {
                guard let chunk = try read(max: VhostUserHeader.byteCount - headerBytes.count) else { return nil }
                headerBytes.append(contentsOf: chunk)
                if headerBytes.count == VhostUserHeader.byteCount {
                    do {
                        header = try VhostUserHeader.decode(headerBytes, expectReply: readsReplies)
                    } catch {
                        dropPending()
                        throw error
                    }
                    payload.reserveCapacity(Int(header!.size))
                }
            }
        }
    }

    /// One recvmsg of at most `max` bytes (never past the current message); nil on EAGAIN.
    private func read(max: Int) throws(VhostUserError) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: max)
        var fds = [Int32](repeating: -1, count: Self.maxFDs)
        var nfds: Int32 = 0
        var truncated: Int32 = 0
        let n = buf.withUnsafeMutableBytes { b in
            fds.withUnsafeMutableBufferPointer { f in
                ws_recv_with_fds(fd, b.baseAddress, max, f.baseAddress, Int32(Self.maxFDs), &nfds, &truncated)
            }
        }
        pendingFDs.append(contentsOf: fds[0..<Int(nfds)])
        if n < 0 {
            if -n == EAGAIN || -n == EWOULDBLOCK { return nil }
            dropPending()
            // A peer that closes with our reply unread resets the connection: same as a close.
            if -n == ECONNRESET { throw VhostUserError(request: header?.knownRequest, reason: .connectionClosed) }
            throw VhostUserError(request: header?.knownRequest, reason: .io("recvmsg", errno: Int32(-n)))
        }
        if truncated != 0 {
            dropPending()
            throw VhostUserError(request: header?.knownRequest, reason: .fdsTruncated)
        }
        if n == 0 {
            dropPending()
            throw VhostUserError(request: header?.knownRequest, reason: .connectionClosed)
        }
        return Array(buf[0..<n])
    }

    private func dropPending() {
        for f in pendingFDs { closeFD(f) }
        pendingFDs = []
        headerBytes = []
        payload = []
        header = nil
    }

    /// Sends a message and its descriptors (the descriptors stay owned by the caller: the kernel
    /// duplicates them into the peer). Short writes are continued; on a non-blocking socket a
    /// full buffer is waited out with poll, since a message must not be left half-written.
    public func send(_ message: VhostUserMessage) throws(VhostUserError) {
        let bytes = message.encoded()
        var sent = 0
        var fds = message.fds
        guard fds.count <= Self.maxFDs else {
            throw VhostUserError(request: message.request, reason: .fdCount(got: fds.count, expected: Self.maxFDs))
        }
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { b in
                fds.withUnsafeBufferPointer { f in
                    ws_send_with_fds(fd, b.baseAddress! + sent, bytes.count - sent, f.baseAddress, Int32(f.count))
                }
            }
            if n < 0 {
                if -n == EAGAIN || -n == EWOULDBLOCK {
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, -1)
                    continue
                }
                if -n == EPIPE || -n == ECONNRESET {
                    throw VhostUserError(request: message.request, reason: .connectionClosed)
                }
                throw VhostUserError(request: message.request, reason: .io("sendmsg", errno: Int32(-n)))
            }
            sent += n
            fds = []   // the descriptors went with the first bytes
        }
    }

    /// Reads one request and validates it against `validator` (front-end → back-end direction).
    public func receiveRequest(_ validator: VhostUserMessageValidator) throws(VhostUserError) -> VhostUserMessage? {
        guard let f = try receiveFrame() else { return nil }
        return try validator.decodeRequest(header: f.header, payload: f.payload, fds: f.fds)
    }

    /// Makes a connected pair (tests, and in-process front-end/back-end).
    public static func socketPair() -> (Int32, Int32)? {
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else { return nil }
        return (sv[0], sv[1])
    }
}
