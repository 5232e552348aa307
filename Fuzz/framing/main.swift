// Fuzz target: the vhost-user frame decoder (WarmstartVhostUser VhostUserFrameDecoder), fed one
// stream cut three ways: as the readers read (`bytesWanted` at a time, the reference), in pieces
// the input chooses, and one byte at a time.
//
// Input: config u8 (bit 0: the front-end side, reading replies), chunk count u8, that many chunk
// sizes u16 (0: what the decoder wants; used in turn), then records until the input ends or a
// record with tag & 3 == 3:
//   tag & 3 == 0, a message: request u8 | flags u8 | length u16 | [size u32 when tag & 4] | payload
//     flags: low 4 bits are the header's flags (version, REPLY, NEED_REPLY) as is, bit 4 also sets
//     reserved bit 4 + (flags >> 5); the header's size is the length unless tag & 4 gives one.
//   tag & 3 == 1, raw bytes: length u8 | bytes
//   tag & 3 == 2, descriptors without bytes (a feed of none)
// tag bits 3-6: descriptors sent with the record (eventfds, at most 10), bit 7: the reader's
// ancillary buffer overflowed on it. A record with descriptors is one sendmsg: the piece that
// takes its first byte ends inside it (Linux's recvmsg stops after a buffer with descriptors).
//
// Properties: every frame has its header's size of payload and a header that validates; the
// decoder never holds more than one message (12 + 4096 bytes, maxFDs descriptors); after an error
// it holds nothing; every cutting gives the same frames (headers and payloads) and the same error
// unless one of them stopped at a descriptor-count error (where descriptors land depends on where
// a read ends); when every record with descriptors is exactly one frame, also the same descriptors
// on the same frames; and no descriptor stays open.
#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import WarmstartVhostUserWire

struct Unit {
    var start: Int
    var end: Int
    var fdCount: Int
    var overflow: Bool
    var isEvent: Bool { start == end }
}

struct Decoded {
    var frames: [(VhostUserHeader, [UInt8], [Int])] = []   // descriptors as (unit << 8 | k) labels
    var error: VhostUserFrameError?
}

enum FramingHarness {
    static let maxStream = 8 << 10
    static let maxTotalFDs = 48
    /// FUZZ_VERBOSE=1: print what each cutting gave (for reading a reproducer).
    static let verbose = getenv("FUZZ_VERBOSE") != nil

    static func run(_ data: UnsafePointer<UInt8>, _ n: Int) {
        let fdCheck = FDLeakCheck()
        var input = FuzzInput(data, n)
        let expectReply = input.u8() & 1 != 0
        let chunks = (0..<Int(input.u8())).map { _ in Int(input.u16()) }
        var stream: [UInt8] = []
        var units: [Unit] = []
        var totalFDs = 0
        while !input.isEmpty && stream.count < maxStream {
            let tag = input.u8()
            let start = stream.count
            switch tag & 3 {
            case 0:
                let request = input.u8(), flags = input.u8()
                let length = Int(input.u16() % 4200)
                var hflags = UInt32(flags & 0x0F)
                if flags & 0x10 != 0 { hflags |= 1 << (4 + UInt32(flags >> 5)) }
                let size = tag & 4 != 0 ? input.u32() : UInt32(length)
                var w = WireWriter()
                VhostUserHeader(request: UInt32(request), flags: hflags, size: size).encode(into: &w)
                var payload = input.bytes(length)
                payload += [UInt8](repeating: 0, count: length - payload.count)
                stream += w.bytes + payload
            case 1:
                stream += input.bytes(Int(input.u8()))
            case 2:
                break
            default:
                input = FuzzInput(data, 0)   // stop
                continue
            }
            var fdCount = min(Int(tag >> 3) & 15, 10, maxTotalFDs - totalFDs)
            if tag & 3 == 2 { fdCount = max(fdCount, 1) }
            totalFDs += fdCount
            let overflow = tag & 0x80 != 0 && stream.count > start
            if fdCount > 0 || overflow {
                units.append(Unit(start: start, end: stream.count, fdCount: fdCount, overflow: overflow))
            }
        }

        let reference = decode(stream, units, expectReply: expectReply) { _ in 0 }
        var turn = 0
        let chosen = decode(stream, units, expectReply: expectReply) { _ in
            defer { turn += 1 }
            return chunks.isEmpty ? Int.max : chunks[turn % chunks.count]
        }
        let bytewise = decode(stream, units, expectReply: expectReply) { _ in 1 }

        // With every record that brings descriptors exactly one frame (and no overflow), descriptors
        // land on the same frames whatever the cutting.
        var boundaries: [Int: Int] = [:]   // frame start → frame end, as the reference framed it
        var at = 0
        for f in reference.frames {
            boundaries[at] = at + VhostUserHeader.byteCount + Int(f.0.size)
            at += VhostUserHeader.byteCount + Int(f.0.size)
        }
        let aligned = units.allSatisfy { u in u.isEvent || (!u.overflow && boundaries[u.start] == u.end) }
        if verbose {
            for (name, d) in [("as read", reference), ("chosen", chosen), ("bytewise", bytewise)] {
                print("\(name): \(d.frames.count) frames \(d.frames.map { "\($0.0.request)/\($0.1.count)b/\($0.2.count)fd" }),",
                      d.error.map { "\($0)" } ?? "clean end", aligned ? "(descriptors compared)" : "")
            }
        }
        for (name, other) in [("chosen pieces", chosen), ("one byte at a time", bytewise)] {
            compare(reference, other, name, fds: aligned)
        }
        fdCheck.verify("vhost-user framing")
    }

    /// Feeds `stream` cut by `size` (0: `bytesWanted`) with fresh descriptors for `units`; checks
    /// the decoder's bounds after every feed; closes every descriptor it delivered.
    static func decode(_ stream: [UInt8], _ units: [Unit], expectReply: Bool, size: (Int) -> Int) -> Decoded {
        var result = Decoded()
        var decoder = VhostUserFrameDecoder(expectReply: expectReply)
        var frames: [VhostUserFrame] = []
        var labels: [Int32: Int] = [:]
        var offset = 0
        var next = 0
        func fds(_ u: Int) -> [Int32] {
            (0..<units[u].fdCount).map { k in
                let fd = ws_eventfd(0, WS_EFD_CLOEXEC)
                require(fd >= 0, "eventfd")
                labels[fd] = u << 8 | k
                return fd
            }
        }
        stream.withUnsafeBytes { raw in
            do throws(VhostUserFrameError) {
                while true {
                    while next < units.count && units[next].isEvent && units[next].start == offset {
                        try decoder.feed(UnsafeRawBufferPointer(start: nil, count: 0), fds: fds(next), into: &frames)
                        next += 1
                    }
                    if offset == stream.count { break }
                    let want = size(decoder.bytesWanted)
                    var end = offset + min(stream.count - offset, want == 0 ? decoder.bytesWanted : want)
                    var carried: [Int32] = []
                    var overflow = false
                    if next < units.count && units[next].start < end {
                        if units[next].isEvent {
                            end = units[next].start
                        } else {
                            end = min(end, units[next].end)
                            carried = fds(next)
                            overflow = units[next].overflow
                            next += 1
                        }
                    }
                    try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[offset..<end]), fds: carried,
                                     fdsTruncated: overflow, into: &frames)
                    offset = end
                    checkBounds(decoder)
                }
                try decoder.finish()
            } catch {
                result.error = error
                require(decoder.isAtBoundary, "the decoder holds part of a frame after \(error)")
            }
        }
        for f in frames {
            require(f.payload.count == Int(f.header.size), "a frame of \(f.payload.count) bytes under a header of \(f.header.size)")
            do throws(VhostUserError) {
                try f.header.validate(expectReply: expectReply)
            } catch {
                fatalError("a frame whose header does not validate: \(error)")
            }
            require(f.fds.count <= VhostUserFrameDecoder.maxFDs, "a frame with \(f.fds.count) descriptors")
            for fd in f.fds {
                require(fcntl(fd, F_GETFD) != -1, "a frame's descriptor \(fd) is closed")
                close(fd)
            }
            result.frames.append((f.header, f.payload, f.fds.map { labels[$0] ?? -1 }))
        }
        return result
    }

    static func checkBounds(_ d: borrowing VhostUserFrameDecoder) {
        require(d.bufferedByteCount <= VhostUserHeader.byteCount + Int(VhostUserHeader.maxPayloadSize),
                "the decoder holds \(d.bufferedByteCount) bytes")
        require(d.bytesWanted >= 1 && d.bytesWanted <= Int(VhostUserHeader.maxPayloadSize), "bytesWanted \(d.bytesWanted)")
    }

    static func isFDCount(_ e: VhostUserFrameError?) -> Bool {
        guard let e else { return false }
        switch e {
        case .tooManyFDs: return true
        case .header, .fdsWithoutBytes, .truncated: return false
        }
    }

    static func compare(_ a: Decoded, _ b: Decoded, _ name: String, fds: Bool) {
        let n = min(a.frames.count, b.frames.count)
        for i in 0..<n {
            require(a.frames[i].0 == b.frames[i].0 && a.frames[i].1 == b.frames[i].1, "\(name): frame \(i) differs")
            if fds { require(a.frames[i].2 == b.frames[i].2, "\(name): frame \(i) has descriptors \(b.frames[i].2), not \(a.frames[i].2)") }
        }
        guard fds || !(isFDCount(a.error) || isFDCount(b.error)) else { return }
        require(a.frames.count == b.frames.count, "\(name): \(b.frames.count) frames, not \(a.frames.count)")
        require(a.error == b.error, "\(name): \(b.error.map { "\($0)" } ?? "no error"), not \(a.error.map { "\($0)" } ?? "no error")")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    FramingHarness.run(data, n)
    return 0
}
