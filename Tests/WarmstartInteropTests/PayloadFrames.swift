import Foundation
import WarmstartPools

/// Numbered, patterned frames for the payload checks, and their byte-for-byte check.
///
/// A frame of `size` bytes for (stream, run, seq):
///   0..<12   destination and source MAC (locally administered, the stream in the last byte)
///   12..<14  EtherType 0x88B5 (local experimental)
///   14..<30  tag: magic "WSPC", stream, 0, size (LE16), seq (LE32), run (LE32)
///   30..<size  a slice of a fixed pseudo-random table, starting at an offset derived from
///            (stream, seq), so every frame differs and a shifted, truncated or foreign buffer
///            shows as a difference — while the check is one memcmp against the table.
final class PayloadFrames {
    static let maxSize = 9216
    static let tagOffset = 14
    static let payloadOffset = 30
    static let magic: UInt32 = 0x4350_5357 // "WSPC" little-endian
    static let tableSpan = 1 << 16

    let table: UnsafeMutableRawPointer
    /// Scratch for building a frame and for copying a received chain out.
    let scratch: UnsafeMutableRawPointer
    /// The frame a received one is compared with.
    let expected: UnsafeMutableRawPointer

    init() {
        let bytes = Self.tableSpan + Self.maxSize
        table = .allocate(byteCount: bytes, alignment: 64)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<bytes {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            table.storeBytes(of: UInt8(truncatingIfNeeded: x >> 56), toByteOffset: i, as: UInt8.self)
        }
        scratch = .allocate(byteCount: Self.maxSize + 64, alignment: 64)
        expected = .allocate(byteCount: Self.maxSize, alignment: 64)
    }

    deinit {
        table.deallocate()
        scratch.deallocate()
        expected.deallocate()
    }

    static func patternOffset(stream: UInt8, seq: UInt32) -> Int {
        Int(((seq &* 2_654_435_761) ^ (UInt32(stream) &* 40503)) >> 16)
    }

    /// Writes frame (stream, run, seq) of `size` bytes at `p`.
    func write(_ p: UnsafeMutableRawPointer, stream: UInt8, run: UInt32, seq: UInt32, size: Int) {
        let off = Self.patternOffset(stream: stream, seq: seq)
        p.copyMemory(from: table + off, byteCount: size)
        let macs: [UInt8] = [0x02, 0x57, 0x53, 0, 0x0D, stream, 0x02, 0x57, 0x53, 0, 0x05, stream, 0x88, 0xB5]
        for (i, b) in macs.enumerated() { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
        let t = p + Self.tagOffset
        t.storeBytes(of: Self.magic.littleEndian, as: UInt32.self)
        t.storeBytes(of: stream, toByteOffset: 4, as: UInt8.self)
        t.storeBytes(of: UInt8(0), toByteOffset: 5, as: UInt8.self)
        t.storeBytes(of: UInt16(size).littleEndian, toByteOffset: 6, as: UInt16.self)
        t.storeBytes(of: seq.littleEndian, toByteOffset: 8, as: UInt32.self)
        t.storeBytes(of: run.littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    /// Frame (stream, run, seq) as an mbuf chain from `cache` (segments of the pool's data room),
    /// or nil when the pool is empty.
    func chain(_ pool: MbufPool, _ cache: MbufCache, stream: UInt8, run: UInt32, seq: UInt32, size: Int) -> Mbuf? {
        write(scratch, stream: stream, run: run, seq: seq, size: size)
        let room = pool.config.dataRoom
        var head: Mbuf?
        var off = 0
        repeat {
            guard let m = cache.alloc() else { if let h = head { cache.free(h) }; return nil }
            let n = min(room, size - off)
            m.data.copyMemory(from: scratch + off, byteCount: n)
            m.dataLength = UInt16(n)
            m.packetLength = UInt32(n)
            if let h = head { _ = pool.append(m, to: h) } else { head = m }
            off += n
        } while off < size
        return head
    }

    /// What a received frame says about itself.
    struct Tag: Equatable {
        var stream: UInt8
        var size: Int
        var seq: UInt32
        var run: UInt32
    }

    /// Reads the tag of the `length` bytes at `p`; nil when the frame is too short or has no magic.
    static func tag(_ p: UnsafeRawPointer, length: Int) -> Tag? {
        guard length >= payloadOffset else { return nil }
        let t = p + tagOffset
        guard UInt32(littleEndian: t.loadUnaligned(as: UInt32.self)) == magic else { return nil }
        return Tag(stream: t.load(fromByteOffset: 4, as: UInt8.self),
                   size: Int(UInt16(littleEndian: t.loadUnaligned(fromByteOffset: 6, as: UInt16.self))),
                   seq: UInt32(littleEndian: t.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                   run: UInt32(littleEndian: t.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
    }

    /// nil when the `length` bytes at `p` are exactly frame (stream, run, seq) of `size` bytes,
    /// else where and how they differ.
    func difference(_ p: UnsafeRawPointer, length: Int, stream: UInt8, run: UInt32, seq: UInt32, size: Int) -> String? {
        if length != size { return "length \(length), expected \(size)" }
        let full = expected
        write(full, stream: stream, run: run, seq: seq, size: size)
        if memcmp(p, full, size) == 0 { return nil }
        var i = 0
        while i < size && p.load(fromByteOffset: i, as: UInt8.self) == full.load(fromByteOffset: i, as: UInt8.self) { i += 1 }
        var j = size - 1
        while j > i && p.load(fromByteOffset: j, as: UInt8.self) == full.load(fromByteOffset: j, as: UInt8.self) { j -= 1 }
        return "bytes \(i)...\(j) differ (first: got 0x\(String(p.load(fromByteOffset: i, as: UInt8.self), radix: 16)), "
            + "expected 0x\(String(full.load(fromByteOffset: i, as: UInt8.self), radix: 16)))"
    }
}

/// One stream of traffic through testpmd: Warmstart sends numbered frames on one queue, and the
/// receiving side (`PayloadSide`) hands each frame of this stream to `check` — sequence (none
/// missing, duplicated or reordered), length, tag and every payload byte, and that the stream
/// keeps arriving on one queue.
final class PayloadStream {
    let id: UInt8
    let name: String
    // The phase running now.
    var run: UInt32 = 0
    var size = 0
    var target = 0
    var nextSend: UInt32 = 0
    var nextExpected: UInt32 = 0
    var phaseSent = 0
    var phaseReceived = 0
    /// The queue this stream's frames arrive on (the first one seen).
    var arrivalQueue: Int?
    // Totals over every phase (compared with testpmd's port counters).
    var sentPackets: UInt64 = 0
    var sentBytes: UInt64 = 0
    // This phase: frames that arrived as chains of more than one mbuf, the longest chain, and
    // what was wrong.
    var chainedFrames = 0
    var maxSegments = 0
    var problemCount = 0
    var problems: [String] = []

    init(id: UInt8, name: String) { self.id = id; self.name = name }

    var inFlight: Int { phaseSent - phaseReceived }
    var done: Bool { phaseReceived >= target }

    func begin(run: UInt32, size: Int, count: Int) {
        self.run = run; self.size = size; target = count
        nextSend = 0; nextExpected = 0; phaseSent = 0; phaseReceived = 0
        problemCount = 0; problems = []; chainedFrames = 0; maxSegments = 0
    }

    func problem(_ s: String) {
        problemCount += 1
        if problems.count < 8 { problems.append("\(name), \(size) B: \(s)") }
    }

    /// Builds up to `max` frames of the phase (at most `window` in flight) and hands them to
    /// `send`, which returns how many the queue took; the rest are freed and sent again later.
    func send(frames: PayloadFrames, pool: MbufPool, cache: MbufCache, out: UnsafeMutablePointer<Mbuf>,
              window: Int, max: Int, _ send: (UnsafeMutablePointer<Mbuf>, Int) -> Int) {
        let room = Swift.min(max, window - inFlight, target - phaseSent)
        guard room > 0 else { return }
        var k = 0
        while k < room, let m = frames.chain(pool, cache, stream: id, run: run, seq: nextSend + UInt32(k), size: size) {
            out[k] = m
            k += 1
        }
        guard k > 0 else { return }
        let taken = send(out, k)
        for i in taken..<k { cache.free(out[i]) }
        nextSend += UInt32(taken)
        phaseSent += taken
        sentPackets += UInt64(taken)
        sentBytes += UInt64(taken * size)
    }

    /// Checks one frame of this stream: `length` bytes in `frames.scratch`, arrived on `queue`
    /// as a chain of `segments`.
    func check(_ tag: PayloadFrames.Tag, length n: Int, segments: Int, queue: Int, frames: PayloadFrames) {
        guard tag.run == run else {
            return problem("a frame of run \(String(tag.run, radix: 16)) seq \(tag.seq) (\(n) B) in this phase")
        }
        if segments > 1 { chainedFrames += 1 }
        maxSegments = Swift.max(maxSegments, segments)
        if let q = arrivalQueue, q != queue { problem("seq \(tag.seq) arrived on queue \(queue), earlier ones on queue \(q)") }
        arrivalQueue = arrivalQueue ?? queue
        phaseReceived += 1
        if tag.seq != nextExpected {
            if tag.seq > nextExpected {
                problem("seq \(tag.seq) arrived where \(nextExpected) was due: \(tag.seq - nextExpected) missing")
            } else {
                problem("seq \(tag.seq) arrived again or out of order (next due \(nextExpected))")
            }
        }
        nextExpected = tag.seq &+ 1
        if let d = frames.difference(frames.scratch, length: n, stream: id, run: run, seq: tag.seq, size: size) {
            problem("seq \(tag.seq): \(d)")
        }
    }
}

/// One receiving side of Warmstart (its vhost-user back-end, or its virtio-user port): takes
/// every frame its queues deliver, checks the mbuf chain it came in, and hands it to its stream.
final class PayloadSide {
    let name: String
    var streams: [UInt8: PayloadStream] = [:]
    /// Frames and bytes received over every phase (compared with testpmd's port counters).
    var receivedPackets: UInt64 = 0
    var receivedBytes: UInt64 = 0
    /// Frames that belong to no stream of this side, and broken chains.
    var strayCount = 0
    var strays: [String] = []

    init(name: String, streams: [PayloadStream]) {
        self.name = name
        for s in streams { self.streams[s.id] = s }
    }

    func stray(_ s: String) {
        strayCount += 1
        if strays.count < 8 { strays.append("\(name): \(s)") }
    }

    /// Checks one received frame (the caller frees it).
    func receive(_ m: Mbuf, queue: Int, pool: MbufPool, frames: PayloadFrames) {
        // The chain itself: segment count and packet length agree with the segments.
        var segs = 1
        var total = Int(m.dataLength)
        var s = m
        while s.nextIndex != MbufLayout.noNext, let next = pool.nextSegment(of: s), segs <= 64 {
            s = next
            segs += 1
            total += Int(s.dataLength)
        }
        if segs != Int(m.segmentCount) || total != Int(m.packetLength) {
            stray("a chain of \(segs) segments / \(total) B says \(m.segmentCount) segments / \(m.packetLength) B")
        }
        let n = pool.copyOut(m, to: frames.scratch, max: PayloadFrames.maxSize + 64)
        receivedPackets += 1
        receivedBytes += UInt64(n)
        guard let tag = PayloadFrames.tag(frames.scratch, length: n) else {
            return stray("a frame of \(n) B without the test tag on queue \(queue)")
        }
        guard let stream = streams[tag.stream] else {
            return stray("a frame of stream \(tag.stream) seq \(tag.seq) (\(n) B) on queue \(queue)")
        }
        stream.check(tag, length: n, segments: segs, queue: queue, frames: frames)
    }
}
