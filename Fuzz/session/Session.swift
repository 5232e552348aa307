@testable import WarmstartPorts
import CWarmstartShim
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
#if canImport(Glibc)
import Glibc
#endif

/// A vhost-user back-end session fed a sequence of front-end messages, as its I/O loop would feed
/// them: each 12-byte header through `VhostUserHeader.decode`, then `receive(header:payload:fds:)`
/// with synthesized descriptors. Every ring the session starts or updates is turned into device
/// queues the way the datapath does (VhostQueuePair) and run for one burst each way over the guest
/// memory, so the ring set-up and the positions it hands over are exercised too. Everything is
/// dropped after the input and no descriptor may stay open.
///
/// Input: records, each
///   request u8 | flags u8 | fds u8 | length u16 | payload (length bytes)
/// flags: bit 0 NEED_REPLY, bit 1 REPLY (invalid on a request), bit 2 wrong version, bit 3 header
/// size one more than the payload, bit 7 not a message: write the payload into guest memory at
/// offset `request | fds << 8`.
/// fds: low 4 bits the count (at most 9), high 4 bits the kind: 0 eventfds, 1 the guest memfd
/// (each a dup), 2 alternating memfd/eventfd, 3 /dev/null.
enum SessionHarness {
    /// The guest's memory: one memfd of a fixed size, mapped here too so it is cleared per input.
    static let memorySize = 64 << 10
    static let memfd: Int32 = {
        let region = try! MemoryRegion.memfd(name: "fuzz-guest", size: memorySize, pageSize: .small4K)
        let fd = dup(region.fd.rawValue)
        require(fd >= 0, "dup of the guest memfd")
        return fd
    }()
    static let guest: UnsafeMutableRawPointer = {
        let p = mmap(nil, memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)
        require(p != MAP_FAILED && p != nil, "mmap of the guest memfd")
        return p!
    }()
    static let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
    /// FUZZ_VERBOSE=1: print each message's outcome (for reading a reproducer).
    static let verbose = getenv("FUZZ_VERBOSE") != nil

    static func makeFD(kind: UInt8, _ k: Int) -> Int32 {
        switch kind {
        case 1: return dup(memfd)
        case 2: return k % 2 == 0 ? dup(memfd) : ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK)
        case 3: return open("/dev/null", O_RDWR | O_CLOEXEC)
        default: return ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK)
        }
    }

    static func run(_ data: UnsafePointer<UInt8>, _ n: Int) {
        _ = memfd; _ = guest; _ = FuzzPool.pool
        let fdCheck = FDLeakCheck()
        guest.initializeMemory(as: UInt8.self, repeating: 0, count: memorySize)
        do {
            var input = FuzzInput(data, n)
            let session = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(maxQueuePairs: 2))
            var setups: [Int: VringSetup] = [:]
            var records = 0
            while !input.isEmpty && records < 64 {
                records += 1
                let request = input.u8(), flags = input.u8(), fdSpec = input.u8()
                let payload = input.bytes(Int(input.u16() % 4200))
                if flags & 0x80 != 0 {
                    let offset = Int(UInt16(request) | UInt16(fdSpec) << 8)
                    let k = min(payload.count, memorySize - offset)
                    for i in 0..<max(0, k) { guest.storeBytes(of: payload[i], toByteOffset: offset + i, as: UInt8.self) }
                    continue
                }
                var hflags: UInt32 = flags & 4 != 0 ? 2 : VhostUserHeader.version
                if flags & 1 != 0 { hflags |= VhostUserHeader.needReplyFlag }
                if flags & 2 != 0 { hflags |= VhostUserHeader.replyFlag }
                var w = WireWriter()
                VhostUserHeader(request: UInt32(request), flags: hflags,
                                size: UInt32(payload.count + (flags & 8 != 0 ? 1 : 0))).encode(into: &w)
                let fds = (0..<min(Int(fdSpec & 15), 9)).map { makeFD(kind: fdSpec >> 4, $0) }
                let header: VhostUserHeader
                do {
                    header = try VhostUserHeader.decode(w.bytes, expectReply: false)
                } catch {
                    // The loop drops a connection whose header it cannot trust.
                    for fd in fds { close(fd) }
                    break
                }
                let outcome = session.receive(header: header, payload: payload, fds: fds)
                if verbose {
                    print("request \(request) \(header.knownRequest.map { "\($0)" } ?? "?") payload \(payload.count) fds \(fds.count):",
                          outcome.error.map { "\($0)" } ?? "ok", outcome.isFatal ? "(fatal)" : "", outcome.events)
                }
                if let reply = outcome.reply { _ = reply.payload }
                for event in outcome.events {
                    switch event {
                    case let .ringStarted(s), let .ringUpdated(s):
                        setups[s.index] = s
                        exercise(s)
                    case let .ringStopped(index, _):
                        setups[index] = nil
                    case .memoryTableReplaced, .deviceReset:
                        break
                    default:
                        break
                    }
                }
                if outcome.isFatal { break }
            }
            _ = session.startedRings
            setups = [:]
        }
        FuzzPool.verifyAllFree("vhost-user session")
        fdCheck.verify("vhost-user session")
    }

    /// The datapath's view of a started ring: device queues built as VhostQueuePair builds them,
    /// one burst each way.
    static func exercise(_ s: VringSetup) {
        // A ring handed to the datapath must start inside itself (issue 12 defect 1): a packed
        // position is a descriptor slot, and one past the ring makes the device write used
        // descriptors past it. (Split: any 16-bit index is legal; the slot is reduced mod size.)
        if s.layout == .packed && (Int(s.base.lastAvailIndex) >= s.size || Int(s.base.lastUsedIndex) >= s.size) {
            require(skipKnown, "vring \(s.index): packed ring of \(s.size) handed to the datapath at avail slot \(s.base.lastAvailIndex), used slot \(s.base.lastUsedIndex)")
            return
        }
        guard let device = try? VhostQueuePair.device(s, burst: 32, state: nil) else { return }
        let got = device.dequeueBurst(pool: FuzzPool.pool, into: out, maxCount: 32)
        for i in 0..<got { FuzzPool.pool.free(out[i]) }
        if let p = FuzzPool.packet(length: 60, seed: 1) {
            out[0] = p
            _ = device.enqueueBurst(pool: FuzzPool.pool, out, count: 1)
            FuzzPool.pool.free(p)
        }
        _ = device.needsCall()
    }
}
