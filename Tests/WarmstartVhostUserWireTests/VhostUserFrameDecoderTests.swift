import CWarmstartShim
import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUserWire

/// The vhost-user frame decoder, checked the way swift-nio's ByteToMessageDecoderVerifier checks a
/// decoder: one stream of frames, fed whole, one byte at a time, in random pieces and the way the
/// readers read (`bytesWanted` at a time), must give the same frames with the same descriptors;
/// garbage must give the right typed error and leave no descriptor open.
final class VhostUserFrameDecoderTests: XCTestCase {
    // MARK: the verifier

    /// One message of a test stream: its header, payload, and how many descriptors it carries.
    struct Message {
        var request: UInt32
        var flags: UInt32 = VhostUserHeader.version
        var payload: [UInt8] = []
        var fdCount = 0
        var header: VhostUserHeader { VhostUserHeader(request: request, flags: flags, size: UInt32(payload.count)) }
        var bytes: [UInt8] {
            var w = WireWriter()
            header.encode(into: &w)
            w.append(payload)
            return w.bytes
        }
    }

    /// How a feed cuts the stream: the length of the next piece, given where it starts and what the
    /// decoder wants. The verifier then shortens a piece the way Linux does (below).
    typealias Chunking = (_ offset: Int, _ bytesWanted: Int) -> Int

    /// A mixed stream: no payload, small payloads, descriptors with and without payload, the
    /// largest payload accepted, and descriptors on consecutive messages.
    static let stream: [Message] = [
        Message(request: VhostUserRequest.getFeatures.rawValue),
        Message(request: VhostUserRequest.setFeatures.rawValue, payload: (0..<8).map { UInt8($0) }),
        Message(request: VhostUserRequest.setMemTable.rawValue, payload: (0..<104).map { UInt8($0 & 0xFF) }, fdCount: 3),
        Message(request: VhostUserRequest.setLogFD.rawValue, fdCount: 1),
        Message(request: VhostUserRequest.setVringKick.rawValue, flags: VhostUserHeader.version | VhostUserHeader.needReplyFlag,
                payload: [0, 0, 0, 0, 0, 0, 0, 0], fdCount: 1),
        Message(request: VhostUserRequest.setVringCall.rawValue, payload: [1, 0, 0, 0, 0, 0, 0, 0], fdCount: 1),
        Message(request: VhostUserRequest.setConfig.rawValue, payload: (0..<Int(VhostUserHeader.maxPayloadSize)).map { UInt8(truncatingIfNeeded: $0 * 7) }),
        Message(request: 9999),   // unknown codes are the session's business, not the framing's
        Message(request: VhostUserRequest.addMemReg.rawValue, payload: [UInt8](repeating: 0xAB, count: 40), fdCount: VhostUserFrameDecoder.maxFDs),
        Message(request: VhostUserRequest.getVringBase.rawValue, payload: [1, 0, 0, 0, 0, 0, 0, 0]),
    ]

    /// Feeds `messages` (fresh eventfds for their descriptors) cut by `chunking`, and checks that
    /// the frames are the messages, each with its own descriptors, and that nothing leaks.
    func verify(_ messages: [Message], expectReply: Bool = false, _ name: String, chunking: Chunking,
                file: StaticString = #filePath, line: UInt = #line) {
        let before = openFDCount()
        var stream: [UInt8] = []
        var starts: [Int] = []
        var sent: [[Int32]] = []
        for m in messages {
            starts.append(stream.count)
            stream += m.bytes
            sent.append((0..<m.fdCount).map { _ in makeEventFD() })
        }
        var decoder = VhostUserFrameDecoder(expectReply: expectReply)
        var frames: [VhostUserFrame] = []
        var offset = 0
        var nextFDMessage = 0   // the first message whose descriptors are not fed yet
        do throws(VhostUserFrameError) {
            while offset < stream.count {
                var end = offset + min(stream.count - offset, max(1, chunking(offset, decoder.bytesWanted)))
                // Linux: a sender puts a message's descriptors on its first byte, and a stream
                // recvmsg stops right after the buffer that carried descriptors, so a read that
                // takes a message's first byte and its descriptors ends inside that message.
                var fds: [Int32] = []
                while nextFDMessage < messages.count && starts[nextFDMessage] < end {
                    let i = nextFDMessage
                    nextFDMessage += 1
                    guard starts[i] >= offset, !sent[i].isEmpty else { continue }
                    end = min(end, starts[i] + messages[i].bytes.count)
                    fds = sent[i]
                    break
                }
                try decoder.feed(Array(stream[offset..<end]), fds: fds, into: &frames)
                offset = end
            }
            try decoder.finish()
        } catch {
            XCTFail("\(name): \(error)", file: file, line: line)
        }
        XCTAssertTrue(decoder.isAtBoundary, "\(name)", file: file, line: line)
        XCTAssertEqual(frames.count, messages.count, "\(name): frames", file: file, line: line)
        for (i, (f, m)) in zip(frames, messages).enumerated() {
            XCTAssertEqual(f.header, m.header, "\(name): frame \(i) header", file: file, line: line)
            XCTAssertEqual(f.payload, m.payload, "\(name): frame \(i) payload", file: file, line: line)
            XCTAssertEqual(f.fds, sent[i], "\(name): frame \(i) descriptors", file: file, line: line)
        }
        for f in sent.joined() {
            XCTAssertTrue(isOpen(f), "\(name): a delivered descriptor was closed", file: file, line: line)
            close(f)
        }
        XCTAssertEqual(openFDCount(), before, "\(name): descriptors open before and after", file: file, line: line)
    }

    /// Every way of cutting `messages`, and 200 random ones.
    func verifyAllChunkings(_ messages: [Message], expectReply: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        verify(messages, expectReply: expectReply, "whole", chunking: { _, _ in .max }, file: file, line: line)
        verify(messages, expectReply: expectReply, "one byte at a time", chunking: { _, _ in 1 }, file: file, line: line)
        verify(messages, expectReply: expectReply, "as the readers read", chunking: { _, want in want }, file: file, line: line)
        verify(messages, expectReply: expectReply, "one byte short of what is wanted", chunking: { _, want in want - 1 }, file: file, line: line)
        verify(messages, expectReply: expectReply, "one byte past what is wanted", chunking: { _, want in want + 1 }, file: file, line: line)
        for seed in 1...200 as ClosedRange<UInt64> {
            var rng = SplitMix64(seed: seed)
            let limit = [3, 13, 40, 300, 5000][Int(seed % 5)]
            verify(messages, expectReply: expectReply, "random pieces (seed \(seed))",
                   chunking: { _, _ in Int(rng.next() % UInt64(limit)) + 1 }, file: file, line: line)
        }
    }

    func testSameFramesHoweverTheStreamIsCut() {
        verifyAllChunkings(Self.stream)
    }

    func testRepliesHoweverTheStreamIsCut() {
        let reply = VhostUserHeader.version | VhostUserHeader.replyFlag
        verifyAllChunkings([
            Message(request: VhostUserRequest.getFeatures.rawValue, flags: reply, payload: [1, 2, 3, 4, 5, 6, 7, 8]),
            Message(request: VhostUserRequest.getInflightFD.rawValue, flags: reply, payload: [UInt8](repeating: 0, count: 16), fdCount: 1),
            Message(request: VhostUserRequest.getVringBase.rawValue, flags: reply, payload: [0, 0, 0, 0, 9, 0, 0, 0]),
        ], expectReply: true)
    }

    /// A message's descriptors may come in several reads of it (a sender may split them): all of
    /// them are the frame's, in order.
    func testDescriptorsOfOneFrameOverSeveralReads() throws {
        let m = Message(request: VhostUserRequest.setMemTable.rawValue, payload: [UInt8](repeating: 1, count: 30))
        let a = (0..<2).map { _ in makeEventFD() }, b = [makeEventFD()], c = (0..<3).map { _ in makeEventFD() }
        var d = VhostUserFrameDecoder(expectReply: false)
        var frames: [VhostUserFrame] = []
        try d.feed(Array(m.bytes[0..<5]), fds: a, into: &frames)
        try d.feed(Array(m.bytes[5..<12]), into: &frames)
        try d.feed(Array(m.bytes[12..<20]), fds: b, into: &frames)
        XCTAssertTrue(frames.isEmpty)
        XCTAssertFalse(d.isAtBoundary)
        XCTAssertEqual(d.bufferedByteCount, 20)
        XCTAssertEqual(d.header, m.header)
        try d.feed(Array(m.bytes[20...]), fds: c, into: &frames)
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames.first?.fds, a + b + c)
        XCTAssertTrue(d.isAtBoundary)
        for f in a + b + c { XCTAssertTrue(isOpen(f)); close(f) }
    }

    /// `bytesWanted` stops at the header, then at the payload's end, so a reader never reads into
    /// the next message.
    func testBytesWantedStopsAtEachPart() throws {
        var d = VhostUserFrameDecoder(expectReply: false)
        var frames: [VhostUserFrame] = []
        XCTAssertEqual(d.bytesWanted, 12)
        let m = Message(request: VhostUserRequest.setFeatures.rawValue, payload: [UInt8](repeating: 0, count: 8))
        try d.feed(Array(m.bytes[0..<7]), into: &frames)
        XCTAssertEqual(d.bytesWanted, 5)
        try d.feed(Array(m.bytes[7..<12]), into: &frames)
        XCTAssertEqual(d.bytesWanted, 8)
        try d.feed(Array(m.bytes[12...]), into: &frames)
        XCTAssertEqual(d.bytesWanted, 12)
        XCTAssertEqual(frames.count, 1)
        // A header with no payload is a frame as soon as its 12th byte is in.
        try d.feed(Message(request: VhostUserRequest.getFeatures.rawValue).bytes, into: &frames)
        XCTAssertEqual(frames.count, 2)
        XCTAssertEqual(d.bytesWanted, 12)
    }

    // MARK: garbage

    /// Feeds `pieces` (bytes, descriptor count) and expects `error` by the end of them, or at
    /// `finish` when `atEnd`; every descriptor fed must be closed then, and none may leak.
    func expectError(_ expected: VhostUserFrameError, expectReply: Bool = false, _ pieces: [([UInt8], Int)], truncatedLast: Bool = false,
                     atEnd: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        let before = openFDCount()
        var fed: [Int32] = []
        var d = VhostUserFrameDecoder(expectReply: expectReply)
        var frames: [VhostUserFrame] = []
        var got: VhostUserFrameError?
        do throws(VhostUserFrameError) {
            for (i, (bytes, n)) in pieces.enumerated() {
                let fds = (0..<n).map { _ in makeEventFD() }
                fed += fds
                try d.feed(bytes, fds: fds, fdsTruncated: truncatedLast && i == pieces.count - 1, into: &frames)
            }
            XCTAssertTrue(atEnd, "no error before the end of the stream", file: file, line: line)
            try d.finish()
        } catch {
            got = error
        }
        XCTAssertEqual(got, expected, file: file, line: line)
        XCTAssertTrue(frames.isEmpty, "\(frames.count) frame(s)", file: file, line: line)
        XCTAssertTrue(d.isAtBoundary, "the partial frame is dropped", file: file, line: line)
        for f in fed { XCTAssertFalse(isOpen(f), "descriptor \(f) left open", file: file, line: line) }
        XCTAssertEqual(openFDCount(), before, "descriptors open before and after", file: file, line: line)
    }

    static func header(_ request: UInt32, flags: UInt32, size: UInt32) -> [UInt8] {
        var w = WireWriter()
        VhostUserHeader(request: request, flags: flags, size: size).encode(into: &w)
        return w.bytes
    }

    func testBadHeadersAreTypedErrorsAndCloseTheirDescriptors() {
        let kick = VhostUserRequest.setVringKick
        func headerError(_ reason: VhostUserError.Reason, _ code: UInt32 = kick.rawValue) -> VhostUserFrameError {
            .header(VhostUserError(code: code, request: VhostUserRequest(rawValue: code), reason: reason))
        }
        let badVersion = Self.header(kick.rawValue, flags: 2, size: 8)
        expectError(headerError(.badVersion(2)), [(badVersion, 1)])
        // One byte at a time, the descriptor with the first: closed when the 12th byte fails.
        expectError(headerError(.badVersion(2)), badVersion.enumerated().map { ([$1], $0 == 0 ? 1 : 0) })
        expectError(headerError(.badVersion(0)), [(Self.header(kick.rawValue, flags: 0, size: 8), 0)])
        expectError(headerError(.reservedFlags(0x100)), [(Self.header(kick.rawValue, flags: 0x101, size: 8) + [0, 0], 2)])
        expectError(headerError(.replyFlagOnRequest), [(Self.header(kick.rawValue, flags: 0x5, size: 8), 1)])
        expectError(headerError(.replyFlagMissing), expectReply: true, [(Self.header(kick.rawValue, flags: 0x1, size: 8), 0)])
        expectError(headerError(.reservedFlags(VhostUserHeader.needReplyFlag)), expectReply: true,
                    [(Self.header(kick.rawValue, flags: 0xD, size: 8), 0)])
        // Oversize: refused at the header, before a byte of the payload is buffered.
        expectError(headerError(.oversize(4097, max: 4096)), [(Self.header(kick.rawValue, flags: 1, size: 4097), 1)])
        expectError(headerError(.oversize(UInt32.max, max: 4096), 77), [(Self.header(77, flags: 1, size: .max) + [1, 2, 3], 3)])
    }

    func testDescriptorsWithoutBytes() {
        expectError(.fdsWithoutBytes(2), [([], 2)])
        // Also in the middle of a message: the partial frame's descriptors go too.
        let m = Message(request: VhostUserRequest.setLogFD.rawValue).bytes
        expectError(.fdsWithoutBytes(1), [(Array(m[0..<4]), 1), ([], 1)])
    }

    func testTooManyDescriptors() {
        let max = VhostUserFrameDecoder.maxFDs
        let m = Message(request: VhostUserRequest.setMemTable.rawValue, payload: [UInt8](repeating: 0, count: 8)).bytes
        // More than a message may carry, counted over all its reads.
        expectError(.tooManyFDs(max: max), [(Array(m[0..<3]), max - 1), (Array(m[3..<10]), 2)])
        expectError(.tooManyFDs(max: max), [(Array(m[0..<3]), 1), (Array(m[3...]), max)])
        expectError(.tooManyFDs(max: max), [(m, max + 1)])
        // The reader's ancillary buffer overflowed (it closed the surplus).
        expectError(.tooManyFDs(max: max), [(Array(m[0..<6]), 2), (Array(m[6...]), 1)], truncatedLast: true)
    }

    func testStreamEndingInsideAFrame() {
        let m = Message(request: VhostUserRequest.setVringCall.rawValue, payload: [1, 0, 0, 0, 0, 0, 0, 0]).bytes
        expectError(.truncated(have: 5, need: 12), [(Array(m[0..<5]), 1)], atEnd: true)
        expectError(.truncated(have: 12, need: 20), [(Array(m[0..<12]), 1)], atEnd: true)
        expectError(.truncated(have: 19, need: 20), [(Array(m[0..<1]), 1), (Array(m[1..<19]), 0)], atEnd: true)
    }

    /// Whole frames before a bad header in the same piece are handed out (their descriptors are
    /// the caller's); the bad one's are closed.
    func testFramesBeforeAnErrorInOnePiece() {
        let good = Message(request: VhostUserRequest.setLogFD.rawValue).bytes
        let bad = Self.header(VhostUserRequest.setVringKick.rawValue, flags: 3, size: 8)
        var d = VhostUserFrameDecoder(expectReply: false)
        var frames: [VhostUserFrame] = []
        let first = makeEventFD(), last = makeEventFD()
        do throws(VhostUserFrameError) {
            try d.feed(Array(good[0..<1]), fds: [first], into: &frames)
            try d.feed(Array(good[1...]) + good + bad, fds: [last], into: &frames)
            XCTFail("no error")
        } catch {
            XCTAssertEqual(error, .header(VhostUserError(request: .setVringKick, reason: .badVersion(3))))
        }
        XCTAssertEqual(frames.map(\.fds), [[first], []])
        XCTAssertTrue(isOpen(first))
        XCTAssertFalse(isOpen(last))
        close(first)
    }

    /// A decoder dropped with a partial frame closes its descriptors; `reset` does too.
    func testDroppedOrResetDecoderClosesItsDescriptors() throws {
        let m = Message(request: VhostUserRequest.setLogFD.rawValue, payload: [0]).bytes
        let a = makeEventFD(), b = makeEventFD()
        do {
            var d = VhostUserFrameDecoder(expectReply: false)
            var frames: [VhostUserFrame] = []
            try d.feed(Array(m[0..<3]), fds: [a], into: &frames)
            XCTAssertTrue(isOpen(a))
        }
        XCTAssertFalse(isOpen(a))
        var d = VhostUserFrameDecoder(expectReply: false)
        var frames: [VhostUserFrame] = []
        try d.feed(Array(m[0..<12]), fds: [b], into: &frames)
        d.reset()
        XCTAssertFalse(isOpen(b))
        XCTAssertTrue(d.isAtBoundary)
        try d.feed(m, into: &frames)
        XCTAssertEqual(frames.count, 1)
    }

    // MARK: through a socket

    /// VhostUserChannel over a socketpair, the sender writing each message in pieces (one byte at a
    /// time, then random sizes; its descriptors with the first piece): the same messages come out,
    /// each with its own descriptors. Then a message cut short by the peer's close.
    func testChannelReadsMessagesWrittenInPieces() throws {
        let before = openFDCount()
        guard let (a, b) = VhostUserChannel.socketPair() else { return XCTFail("socketpair") }
        let channel = VhostUserChannel(fd: b)
        let rounds = 3
        // A writer thread: one-byte sends fill the socket's buffer long before 4 KiB are through.
        let written = DispatchSemaphore(value: 0)
        let failures = LockedStrings()
        Thread {
            var rng = SplitMix64(seed: 13)
            for round in 0..<rounds {
                for m in Self.stream {
                    let fds = (0..<m.fdCount).map { _ in makeEventFD() }
                    let bytes = m.bytes
                    var at = 0
                    while at < bytes.count {
                        let n = round == 0 ? 1 : min(bytes.count - at, Int(rng.next() % 50) + 1)
                        let put = bytes.withUnsafeBytes { p in
                            fds.withUnsafeBufferPointer { f in
                                ws_send_with_fds(a, p.baseAddress! + at, n, at == 0 ? f.baseAddress : nil, at == 0 ? Int32(f.count) : 0)
                            }
                        }
                        if put != n { failures.append("round \(round): send returned \(put) for \(n)"); break }
                        at += n
                    }
                    for f in fds { close(f) }   // the peer has its own now
                }
            }
            let partial = Message(request: VhostUserRequest.setLogFD.rawValue).bytes
            let e = makeEventFD()
            _ = partial.withUnsafeBytes { p in withUnsafePointer(to: e) { ws_send_with_fds(a, p.baseAddress!, 5, $0, 1) } }
            close(e)
            close(a)
            written.signal()
        }.start()
        for round in 0..<rounds {
            for (i, m) in Self.stream.enumerated() {
                guard let f = try channel.receiveFrame() else { return XCTFail("round \(round): no frame \(i)") }
                XCTAssertEqual(f.header, m.header, "round \(round) frame \(i)")
                XCTAssertEqual(f.payload, m.payload, "round \(round) frame \(i)")
                XCTAssertEqual(f.fds.count, m.fdCount, "round \(round) frame \(i)")
                for fd in f.fds {
                    XCTAssertEqual(fileIdentity(fd)?.contains("eventfd"), true, "round \(round) frame \(i)")
                    close(fd)
                }
            }
        }
        // The stream ends 5 bytes into a message that brought a descriptor: the close is reported
        // and the descriptor does not stay behind.
        do {
            _ = try channel.receiveFrame()
            XCTFail("no error")
        } catch {
            XCTAssertEqual(error.reason, .connectionClosed)
        }
        XCTAssertEqual(written.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(failures.all, [])
        XCTAssertEqual(openFDCount(), before + 1, "the channel's socket, and nothing else")
        withExtendedLifetime(channel) {}
    }
}

/// Strings appended from another thread.
final class LockedStrings: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}

/// Descriptors open in this process.
func openFDCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// A small seeded generator (reproducible random pieces).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
