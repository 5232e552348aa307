// Framing (spec "Message Specification"): every message is a 12-byte header, then `size` bytes of
// payload; the descriptors of a message travel as SCM_RIGHTS ancillary data with its bytes. A
// stream socket hands the bytes over in pieces of any size, so a reader needs a small state
// machine: this one, shared by the blocking channel (VhostUserChannel) and the back-end port's
// io_uring loop (WarmstartPorts' VhostUserConnection).

/// One framed message as read from the socket: a validated header, its payload bytes, and the
/// descriptors that came with it (owned by the receiver). Parsing it is a separate step
/// (`VhostUserMessageValidator.decodeRequest` or `VhostUserBackendSession.receive`), so an I/O
/// loop that reads on its own can feed the same code.
public struct VhostUserFrame: Sendable {
    public var header: VhostUserHeader
    public var payload: [UInt8]
    public var fds: [Int32]
}

/// Why a byte stream stopped being a vhost-user message stream. Every case is fatal for the
/// connection: after it nothing says where the next message starts.
public enum VhostUserFrameError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The header failed `VhostUserHeader.validate` (version, reserved flags, the REPLY flag for
    /// this direction, size over `VhostUserHeader.maxPayloadSize`).
    case header(VhostUserError)
    /// More descriptors arrived for one message than a message may carry (`max`), counting every
    /// read of the message, or the reader's ancillary buffer overflowed (the surplus was closed).
    case tooManyFDs(max: Int)
    /// Descriptors handed in with no bytes: they belong to no message.
    case fdsWithoutBytes(Int)
    /// The stream ended inside a message: `have` of its `need` bytes had arrived (`need` is 12
    /// while the header is incomplete).
    case truncated(have: Int, need: Int)

    public var description: String {
        switch self {
        case let .header(e): return "invalid message header: \(e)"
        case let .tooManyFDs(max): return "a message carried more than \(max) descriptors"
        case let .fdsWithoutBytes(n): return "\(n) descriptor(s) arrived without message bytes; closed"
        case let .truncated(have, need): return "the stream ended inside a message (\(have) of \(need) bytes)"
        }
    }
}

/// Turns a vhost-user byte stream, fed in pieces of any size together with the descriptors that
/// came with them, into whole frames: a validated header, its payload, and its descriptors.
///
/// - Descriptors fed with a piece belong to the frame that holds the piece's last byte. That is
///   where Linux puts them: a sender attaches them to the first byte of a message (one sendmsg per
///   message), and a stream recvmsg stops right after the first buffer that carried descriptors,
///   so the read that brings them ends inside their message. Both readers here also read no
///   further than `bytesWanted` (the end of the header or payload in progress), so a read never
///   holds bytes of two frames.
/// - Bounded: it holds at most one partial frame (12 + `VhostUserHeader.maxPayloadSize` bytes and
///   `maxFDs` descriptors); complete frames go straight to the caller.
/// - It owns the descriptors of the partial frame: on every error, on `reset`, on `finish` and when
///   it is dropped they are closed, as are the ones fed with the piece that failed. A frame handed
///   out owns its own.
/// - No allocation per byte: the header goes into a buffer reserved once, and each payload buffer
///   is allocated once, at its header, with the size the header announces.
public struct VhostUserFrameDecoder: ~Copyable {
    /// The most descriptors one message may carry: VHOST_MEMORY_BASELINE_NREGIONS, the largest
    /// count a request takes (SET_MEM_TABLE, one per region), and what the back-end port's reads
    /// have always accepted (`IOLoop.maxMessageFDs`).
    public static let maxFDs = 8

    /// true on the front-end side: every frame must be a reply.
    public let expectReply: Bool
    public let maxFDs: Int

    private var headerBytes: [UInt8]
    /// The validated header of the frame in progress, once all 12 bytes are in.
    public private(set) var header: VhostUserHeader?
    private var payload: [UInt8] = []
    private var fds: [Int32] = []

    public init(expectReply: Bool, maxFDs: Int = VhostUserFrameDecoder.maxFDs) {
        self.expectReply = expectReply
        self.maxFDs = maxFDs
        headerBytes = []
        headerBytes.reserveCapacity(VhostUserHeader.byteCount)
    }

    deinit {
        for f in fds { closeFD(f) }
    }

    /// Nothing of a frame is held: no byte, no descriptor.
    public var isAtBoundary: Bool { header == nil && headerBytes.isEmpty && fds.isEmpty }

    /// Bytes buffered for the frame in progress (header and payload).
    public var bufferedByteCount: Int { header == nil ? headerBytes.count : VhostUserHeader.byteCount + payload.count }

    /// How many bytes complete the part in progress (the header, or the payload once the header is
    /// in); always at least 1. A reader that reads no more than this never reads past a frame.
    public var bytesWanted: Int {
        if let h = header { return Int(h.size) - payload.count }
        return VhostUserHeader.byteCount - headerBytes.count
    }

    /// Feeds one piece of the stream and the descriptors that came with it; appends every frame the
    /// piece completes to `frames`, in stream order.
    ///
    /// - Parameter fdsTruncated: the reader's ancillary buffer overflowed (MSG_CTRUNC, or more
    ///   than it could take; the surplus is closed already): always an error.
    /// - Throws: on a bad header, too many descriptors, or descriptors without bytes. The partial
    ///   frame and `fds` are closed, the decoder is back at a boundary; frames completed earlier in
    ///   the piece are in `frames` already (the caller owns their descriptors).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, fds incoming: [Int32] = [], fdsTruncated: Bool = false,
                              into frames: inout [VhostUserFrame]) throws(VhostUserFrameError) {
        if fdsTruncated { throw fail(.tooManyFDs(max: maxFDs), closing: incoming) }
        if bytes.isEmpty {
            if incoming.isEmpty { return }
            throw fail(.fdsWithoutBytes(incoming.count), closing: incoming)
        }
        var at = 0
        while at < bytes.count {
            let take = min(bytesWanted, bytes.count - at)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + take)])
            at += take
            if let h = header {
                payload.append(contentsOf: piece)
                if payload.count == Int(h.size) {
                    frames.append(try complete(h, lastPiece: at == bytes.count, incoming))
                }
            } else {
                headerBytes.append(contentsOf: piece)
                guard headerBytes.count == VhostUserHeader.byteCount else { continue }
                let h: VhostUserHeader
                do throws(VhostUserError) {
                    h = try VhostUserHeader.decode(headerBytes, expectReply: expectReply)
                } catch {
                    throw fail(.header(error), closing: incoming)
                }
                header = h
                if h.size == 0 {
                    frames.append(try complete(h, lastPiece: at == bytes.count, incoming))
                } else {
                    payload.reserveCapacity(Int(h.size))
                }
            }
        }
        // The piece ended inside a frame: its descriptors are that frame's. (When it ended at a
        // frame's end, `complete` took them.)
        if !isAtBoundary { try adopt(incoming) }
    }

    /// `feed` for bytes in an array (the io_uring loop's reads).
    public mutating func feed(_ bytes: [UInt8], fds incoming: [Int32] = [], fdsTruncated: Bool = false,
                              into frames: inout [VhostUserFrame]) throws(VhostUserFrameError) {
        var failure: VhostUserFrameError?
        bytes.withUnsafeBytes { raw in
            do throws(VhostUserFrameError) {
                try self.feed(raw, fds: incoming, fdsTruncated: fdsTruncated, into: &frames)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// The stream ended (the peer closed it). At a boundary that is a clean end; inside a frame it
    /// is `.truncated`, and the partial frame's descriptors are closed.
    public mutating func finish() throws(VhostUserFrameError) {
        guard !isAtBoundary else { return }
        let need = header.map { VhostUserHeader.byteCount + Int($0.size) } ?? VhostUserHeader.byteCount
        throw fail(.truncated(have: bufferedByteCount, need: need), closing: [])
    }

    /// Drops the partial frame and closes its descriptors.
    public mutating func reset() {
        for f in fds { closeFD(f) }
        fds.removeAll()
        headerBytes.removeAll(keepingCapacity: true)
        payload = []
        header = nil
    }

    // MARK: -

    private mutating func complete(_ h: VhostUserHeader, lastPiece: Bool, _ incoming: [Int32]) throws(VhostUserFrameError) -> VhostUserFrame {
        if lastPiece { try adopt(incoming) }
        let frame = VhostUserFrame(header: h, payload: payload, fds: fds)
        payload = []
        fds = []
        headerBytes.removeAll(keepingCapacity: true)
        header = nil
        return frame
    }

    /// Takes `incoming` for the frame in progress, within `maxFDs` for the whole frame.
    private mutating func adopt(_ incoming: [Int32]) throws(VhostUserFrameError) {
        guard !incoming.isEmpty else { return }
        guard fds.count + incoming.count <= maxFDs else { throw fail(.tooManyFDs(max: maxFDs), closing: incoming) }
        fds.append(contentsOf: incoming)
    }

    private mutating func fail(_ error: VhostUserFrameError, closing incoming: [Int32]) -> VhostUserFrameError {
        for f in incoming { closeFD(f) }
        reset()
        return error
    }
}
