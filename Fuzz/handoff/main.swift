// Fuzz target: the hot-upgrade handoff decoders (WarmstartHandoff HandoffWire.swift framing,
// HandoffState.swift documents and adoption, HandoffLiveWire.swift binary positions), i.e. what
// the taker reads from a donor it must not trust.
//
// Input: selector u8, then
//   0: a byte stream as the donor would send it on the control socket: frames are read with
//      HandoffChannel.receive and each is decoded as its type says;
//   1: a state document (JSON), adopted as the taker adopts one;
//   2: a binary `quiesced` message for the ports p0, p1, p2.
// Adoption maps regions and rebuilds vhost-user sessions from synthesized descriptors (a 64 KiB
// memfd for memory and inflight names, eventfds for the rest); started rings are turned into
// device queues as the datapath does and run for one burst.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
@testable import WarmstartPorts
import CWarmstartShim
import WarmstartMemory
import WarmstartPools
@testable import WarmstartHandoff
import WarmstartVhostUser
import WarmstartVirtio

let memorySize = 64 << 10
let memfd: Int32 = {
    let region = try! MemoryRegion.memfd(name: "fuzz-handoff", size: memorySize, pageSize: .small4K)
    return dup(region.fd.rawValue)
}()
let guest: UnsafeMutableRawPointer = mmap(nil, memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)!
let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 64)
let livePorts = ["p0", "p1", "p2"]

func adopt(_ state: HandoffState) {
    let names = Array(state.fds.prefix(64))
    let fds = names.map { name -> Int32 in
        name.contains("memory") || name.contains("inflight") ? dup(memfd) : ws_eventfd(0, WS_EFD_CLOEXEC | WS_EFD_NONBLOCK)
    }
    let received = HandoffReceived(state: state, fds: HandoffFDTable(fds: fds, names: names))
    if let regions = try? received.mapRegions() { _ = regions.map { $0.size } }
    for port in state.ports {
        switch port.kind {
        case "vhost-user":
            let pairs = min(max(port.session?.maxQueuePairs ?? 1, 1), 8)
            guard let (session, rings, listen, conn) = try? received.adoptVhostUserPort(
                port, configuration: VhostUserBackendConfiguration(maxQueuePairs: pairs)) else { continue }
            if let listen { close(listen) }
            if let conn { close(conn) }
            for s in rings { exercise(s) }
            if let session {
                _ = session.startedRings
                _ = try? session.exportHandoffState(register: { _, _ in 0 })
            }
        case "tap":
            if let taken = try? received.adoptTapPort(port) { for f in taken { close(f) } }
        default:
            break
        }
    }
}

func exercise(_ s: VringSetup) {
    // As in the session target: a packed ring reaches the datapath at a slot inside it (issue 12
    // defect 1, "the same value arriving by handoff import").
    if s.layout == .packed && (Int(s.base.lastAvailIndex) >= s.size || Int(s.base.lastUsedIndex) >= s.size) {
        require(skipKnown, "vring \(s.index): packed ring of \(s.size) imported at avail slot \(s.base.lastAvailIndex), used slot \(s.base.lastUsedIndex)")
        return
    }
    guard let device = try? VhostQueuePair.device(s, burst: 32, state: nil) else { return }
    let got = device.dequeueBurst(pool: FuzzPool.pool, into: out, maxCount: 32)
    for i in 0..<got { FuzzPool.pool.free(out[i]) }
    _ = device.needsCall()
}

func decodeLive(_ bytes: [UInt8]) {
    guard let live = try? HandoffLive(binary: bytes, ports: livePorts) else { return }
    for p in livePorts { _ = live.positions(of: p) }
    // What the codec reads it must write and read back unchanged.
    guard let again = try? live.binaryEncoded(ports: livePorts),
          let back = try? HandoffLive(binary: again, ports: livePorts), back == live else {
        fatalError("quiesced message does not round-trip")
    }
}

func frames(_ bytes: [UInt8]) {
    var sv: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else {
        fatalError("socketpair: errno \(errno)")
    }
    var size = Int32(1 << 20)
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    let wrote = bytes.withUnsafeBytes { send(sv[0], $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    require(wrote == bytes.count, "socket buffer too small for the input")
    shutdown(sv[0], Int32(SHUT_WR))
    let channel = HandoffChannel(fd: sv[1])
    var state: HandoffState?
    for _ in 0..<16 {
        guard let f = try? channel.receive(step: .transfer, timeoutMs: 100) else { break }
        switch f.type {
        case .hello, .welcome: _ = try? HandoffJSON.decode(HandoffHello.self, f.payload, step: .hello)
        case .refused: _ = try? HandoffJSON.decode(HandoffRefusal.self, f.payload, step: .hello)
        case .abort: _ = try? HandoffJSON.decode(HandoffAbort.self, f.payload, step: .hello)
        case .fds: _ = try? HandoffJSON.decode(HandoffFDBatch.self, f.payload, step: .transfer)
        case .state:
            state = try? HandoffJSON.decode(HandoffState.self, f.payload, step: .transfer)
            if let state { adopt(state) }
        case .quiesced:
            if let state, let live = try? HandoffLive(binary: f.payload, ports: state.ports.map(\.name)) {
                _ = live.rings.count
            } else {
                decodeLive(f.payload)
            }
        case .prepare, .ready, .commit, .resumed, .mapped:
            break
        }
        for d in f.fds { close(d) }
    }
    close(sv[0])
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ n: Int) -> CInt {
    _ = guest; _ = FuzzPool.pool
    let check = FDLeakCheck()
    guest.initializeMemory(as: UInt8.self, repeating: 0, count: memorySize)
    var input = FuzzInput(data, n)
    let selector = input.u8() % 3
    let rest = input.rest()
    switch selector {
    case 0: frames(rest)
    case 1: if let s = try? HandoffJSON.decode(HandoffState.self, rest, step: .transfer) { adopt(s) }
    default: decodeLive(rest)
    }
    FuzzPool.verifyAllFree("handoff")
    check.verify("handoff")
    return 0
}
