import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// A vhost-user connection over a connected AF_UNIX stream socket.
///
/// Blocking or not follows the descriptor's O_NONBLOCK: on a non-blocking socket `receiveFrame`
/// returns nil when a message is not complete yet and keeps what it has read for the next call.
/// Framing is `VhostUserFrameDecoder`'s: each recvmsg reads no further than the part of the
/// message in progress, and the descriptors of every recvmsg of a message stay with it, so a short
/// read cannot lose them.
public final class VhostUserChannel {
    public let fd: Int32
    private let ownsFD: Bool
    /// true on the front-end side: incoming messages are replies.
    public let readsReplies: Bool

    /// The partial message (its descriptors are closed with it).
    private var decoder: VhostUserFrameDecoder
    /// One read's bytes and descriptors, reused.
    private var readBuffer: [UInt8]
    private var readFDs: [Int32]
    private var frames: [VhostUserFrame] = []
    /// The most descriptors `send` passes with one message (the shim's SCM_RIGHTS buffer). A
    /// received message may carry `VhostUserFrameDecoder.maxFDs`.
    public static let maxFDs = 16

    public init(fd: Int32, ownsFD: Bool = true, readsReplies: Bool = false) {
        self.fd = fd
        self.ownsFD = ownsFD
        self.readsReplies = readsReplies
        decoder = VhostUserFrameDecoder(expectReply: readsReplies)
        readBuffer = [UInt8](repeating: 0, count: VhostUserHeader.byteCount + Int(VhostUserHeader.maxPayloadSize))
        readFDs = [Int32](repeating: -1, count: VhostUserFrameDecoder.maxFDs)
        frames.reserveCapacity(1)
    }

    deinit {
        if ownsFD { closeFD(fd) }
    }

    /// Reads the next message. Returns nil only on a non-blocking socket with nothing complete.
    /// Throws `.connectionClosed` at end of stream and fatal errors for a bad header (the stream
    /// cannot be resynchronised after one).
    public func receiveFrame() throws(VhostUserError) -> VhostUserFrame? {
        while true {
            // Never past the part in progress, so one read holds bytes of one message only.
            let want = decoder.bytesWanted
            var nfds: Int32 = 0
            var truncated: Int32 = 0
            let n = readBuffer.withUnsafeMutableBytes { b in
                readFDs.withUnsafeMutableBufferPointer { f in
                    ws_recv_with_fds(fd, b.baseAddress, want, f.baseAddress, Int32(f.count), &nfds, &truncated)
                }
            }
            let got = nfds > 0 ? Array(readFDs[0..<Int(nfds)]) : []
            let request = decoder.header?.knownRequest
            if n < 0 {
                if -n == EAGAIN || -n == EWOULDBLOCK { return nil }
                decoder.reset()
                // A peer that closes with our reply unread resets the connection: same as a close.
                if -n == ECONNRESET { throw VhostUserError(request: request, reason: .connectionClosed) }
                throw VhostUserError(request: request, reason: .io("recvmsg", errno: Int32(-n)))
            }
            if n == 0 && truncated == 0 {
                for f in got { closeFD(f) }
                decoder.reset()
                throw VhostUserError(request: request, reason: .connectionClosed)
            }
            frames.removeAll(keepingCapacity: true)
            var failure: VhostUserFrameError?
            readBuffer.withUnsafeBytes { b in
                do throws(VhostUserFrameError) {
                    try decoder.feed(UnsafeRawBufferPointer(rebasing: b[0..<n]), fds: got, fdsTruncated: truncated != 0, into: &frames)
                } catch {
                    failure = error
                }
            }
            if let error = failure {
                switch error {
                case let .header(e): throw e
                case .tooManyFDs, .fdsWithoutBytes: throw VhostUserError(request: request, reason: .fdsTruncated)
                case .truncated: throw VhostUserError(request: request, reason: .connectionClosed)
                }
            }
            if let frame = frames.first {
                frames.removeAll(keepingCapacity: true)
                return frame
            }
        }
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
