import Foundation
import Logging
import XCTest
import WarmstartBus
import WarmstartPools
import WarmstartEngine
import WarmstartSnapshot
import WarmstartVhostUser
import WarmstartTestSupport
@testable import WarmstartRuntime

/// The vhost-user back-end port and the runtime, driven by in-process guests (`TestGuest`):
/// forwarding between two ports with payloads compared byte for byte, and the state transitions
/// (peer gone mid-negotiation, GET_VRING_BASE stop and restart, memory table replaced while
/// forwarding).
/// A started runtime over a small cold pool without hugepages, one polling core, with `ports`
/// (`--port` specs): the in-process rig of the port tests here and of the hostile-peer tests.
func startTestRuntime(ports: [String], forward: ForwardMode = .io, controlPath: String? = nil) throws -> Runtime {
    let live = try LiveMemory.coldLayout(SnapshotConfig(pool: MbufPoolConfigForTests.small), hugepages: .off)
    let specs = try ports.map { try PortSpec.parse($0) }
    let rt = try Runtime(options: RuntimeOptions(ports: specs, forward: forward, cores: 1, deviceWaitSeconds: 1, controlPath: controlPath),
                         memory: live, recorder: PhaseRecorder(clock: BootClock(environment: [:])))
    try rt.start()
    return rt
}

final class VhostPortTests: XCTestCase {
    var dir: String!
    var runtime: Runtime?

    override func setUpWithError() throws {
        dir = "/tmp/ws-vport-rt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        runtime?.stop()
        runtime = nil
        try? FileManager.default.removeItem(atPath: dir)
    }

    func start(ports: [String], forward: ForwardMode = .io, control: Bool = false) throws -> Runtime {
        let rt = try startTestRuntime(ports: ports, forward: forward, controlPath: control ? "\(dir!)/control" : nil)
        runtime = rt
        return rt
    }

    /// Counters are bumped right after a burst is handed over, so the guest can see packets a
    /// moment before the counters do.
    func waitCounters(_ rt: Runtime, port: Int, timeout: Double = testDeadline, _ cond: (QueueCounters) -> Bool) -> QueueCounters {
        let deadline = Date().addingTimeInterval(timeout)
        var c = rt.stats().ports[port].total
        while !cond(c) && Date() < deadline { usleep(1000); c = rt.stats().ports[port].total }
        return c
    }

    func state(_ rt: Runtime, _ name: String) -> DeviceRecord? { rt.bus.snapshot().first { $0.name == name } }

    func waitState(_ rt: Runtime, _ name: String, _ s: DeviceState, timeout: Double = testDeadline) -> Bool {
        rt.bus.wait(timeoutSeconds: timeout) { $0.first { $0.name == name }?.state == s }
    }

    /// Two ports, io forwarding: what guest A sends arrives at guest B intact and in order, and back.
    func testTwoPortsForwardIOBetweenInProcessGuests() throws {
        for packed in [false, true] {
            let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a", "vhost-user:\(dir!)/b.sock,name=b"])
            let a = try TestGuest(socketPath: "\(dir!)/a.sock", packed: packed)
            let b = try TestGuest(socketPath: "\(dir!)/b.sock", packed: packed)
            try a.bringUp()
            try b.bringUp()
            XCTAssertTrue(waitState(rt, "a", .started) && waitState(rt, "b", .started), "\(rt.bus.snapshot())")
            let ab = (0..<200).map { testFrame(tag: 0xA, seq: $0, length: 60 + $0 * 7) }
            let ba = (0..<100).map { testFrame(tag: 0xB, seq: $0, length: 1514 - $0) }
            var got: [[UInt8]] = []
            for chunk in stride(from: 0, to: ab.count, by: 50) {
                XCTAssertEqual(a.send(Array(ab[chunk..<min(chunk + 50, ab.count)])), min(50, ab.count - chunk))
                got += b.receive(count: min(chunk + 50, ab.count) - got.count)
            }
            XCTAssertEqual(got, ab, "A → B payloads (packed \(packed))")
            XCTAssertEqual(b.send(ba), ba.count)
            XCTAssertEqual(a.receive(count: ba.count), ba, "B → A payloads (packed \(packed))")
            let p0 = waitCounters(rt, port: 0) { $0.rxPackets == 200 && $0.txPackets == 100 }
            let p1 = waitCounters(rt, port: 1) { $0.rxPackets == 100 && $0.txPackets == 200 }
            XCTAssertEqual(p0.rxPackets, 200)
            XCTAssertEqual(p1.txPackets, 200)
            XCTAssertEqual(p1.rxPackets, 100)
            XCTAssertEqual(p0.txPackets, 100)
            XCTAssertEqual(p0.rxBytes, UInt64(ab.reduce(0) { $0 + $1.count }))
            rt.stop()
            runtime = nil
        }
    }

    /// The front-end goes away in the middle of negotiation: the port drops the session and
    /// accepts the next front-end, which then forwards.
    func testPeerClosesMidNegotiationThenNextPeerWorks() throws {
        let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a"], forward: .macswap)
        do {
            let g = try TestGuest(socketPath: "\(dir!)/a.sock")
            _ = try g.frontend.negotiate()
            XCTAssertTrue(waitState(rt, "a", .negotiating))
        } // the channel closes its socket here
        XCTAssertTrue(rt.bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .probing && $0[0].reconnects == 1 }, "\(rt.bus.snapshot())")
        let g = try TestGuest(socketPath: "\(dir!)/a.sock")
        try g.bringUp()
        XCTAssertTrue(waitState(rt, "a", .started))
        let frames = (0..<10).map { testFrame(tag: 1, seq: $0) }
        g.send(frames)
        let back = g.receive(count: 10)
        XCTAssertEqual(back.count, 10)
        // macswap: the MACs are swapped, the rest is untouched.
        XCTAssertEqual(back.map { Array($0[12...]) }, frames.map { Array($0[12...]) })
        XCTAssertEqual(back.first.map { Array($0[0..<6]) }, frames.first.map { Array($0[6..<12]) })
    }

    /// GET_VRING_BASE stops the rings (the device leaves the datapath and is `negotiating`), the
    /// bases answered are where the queues stood, and restarting from them resumes forwarding.
    func testGetVringBaseStopsThenRestartResumes() throws {
        for packed in [false, true] {
            let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a"], forward: .macswap)
            let g = try TestGuest(socketPath: "\(dir!)/a.sock", packed: packed)
            try g.bringUp()
            XCTAssertTrue(waitState(rt, "a", .started))
            g.send((0..<40).map { testFrame(tag: 2, seq: $0) })
            XCTAssertEqual(g.receive(count: 40).count, 40)
            let rxBase = try g.frontend.stopRing(0)
            let txBase = try g.frontend.stopRing(1)
            XCTAssertTrue(waitState(rt, "a", .negotiating), "\(rt.bus.snapshot())")
            if packed {
                // Slot 40, wrap counters still 1, in both halves of each ring.
                XCTAssertEqual(txBase, 0x8028_8028)
                XCTAssertEqual(rxBase, 0x8028_8028)
            } else {
                XCTAssertEqual(txBase, 40, "the TX ring consumed 40 chains")
                XCTAssertEqual(rxBase, 40, "the RX ring filled 40 buffers")
            }
            try g.startRings(bases: (rxBase, txBase))
            XCTAssertTrue(waitState(rt, "a", .started))
            g.send((40..<80).map { testFrame(tag: 2, seq: $0) })
            XCTAssertEqual(g.receive(count: 40).count, 40, "forwarding resumed (packed \(packed))")
            XCTAssertEqual(waitCounters(rt, port: 0) { $0.rxPackets == 80 }.rxPackets, 80)
            rt.stop()
            runtime = nil
        }
    }

    /// Only the RX ring is stopped and restarted: the TX ring, which kept running, resumes at
    /// its own position (no chain taken twice, none skipped).
    func testHalfAPairStoppedAndRestarted() throws {
        let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a"], forward: .macswap)
        let g = try TestGuest(socketPath: "\(dir!)/a.sock")
        try g.bringUp()
        XCTAssertTrue(waitState(rt, "a", .started))
        g.send((0..<20).map { testFrame(tag: 7, seq: $0) })
        XCTAssertEqual(g.receive(count: 20).count, 20)
        let rxBase = try g.frontend.stopRing(0)
        XCTAssertTrue(waitState(rt, "a", .negotiating))
        try g.frontend.startRing(FrontendRing(index: 0, size: TestGuest.ringSize, descriptorAddress: g.rx.descAddress,
                                              driverAddress: g.rx.driverAreaAddress, deviceAddress: g.rx.deviceAreaAddress,
                                              base: rxBase, kickFD: dup(g.kicks[0]), callFD: dup(g.calls[0])))
        XCTAssertTrue(waitState(rt, "a", .started))
        let frames = (20..<50).map { testFrame(tag: 7, seq: $0) }
        g.send(frames)
        let back = g.receive(count: 30)
        XCTAssertEqual(back.map { Array($0[12...]) }, frames.map { Array($0[12...]) }, "each frame once, in order")
        XCTAssertEqual(waitCounters(rt, port: 0) { $0.rxPackets == 50 }.rxPackets, 50)
    }

    /// SET_MEM_TABLE again while packets flow: the port rebuilds its queues under the new
    /// mapping at the positions they had; nothing is lost or repeated.
    func testMemoryTableReplacedWhileForwarding() throws {
        let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a"], forward: .macswap)
        let g = try TestGuest(socketPath: "\(dir!)/a.sock")
        try g.bringUp()
        XCTAssertTrue(waitState(rt, "a", .started))
        var received = 0
        for round in 0..<5 {
            g.send((0..<30).map { testFrame(tag: 3, seq: round * 30 + $0) })
            // Replace the table mid-flight (same memory, a fresh descriptor: a new mapping).
            try g.frontend.setMemoryTable([FrontendMemoryRegion(fd: dup(g.memfd), guestAddress: g.user, userAddress: g.user,
                                                                size: UInt64(TestGuest.memorySize))])
            received += g.receive(count: 30).count
        }
        XCTAssertEqual(received, 150)
        XCTAssertEqual(state(rt, "a")?.state, .started)
        let s = waitCounters(rt, port: 0) { $0.txPackets == 150 }
        XCTAssertEqual(s.rxPackets, 150, "\(rt.stats())")
        XCTAssertEqual(s.txPackets, 150)
        XCTAssertEqual(s.errors, 0)
    }

    /// One port keeps sending (io towards B) while B's rings stop and restart 20 times: A's
    /// packets are forwarded while B is there and dropped (counted) while it is not; nothing
    /// crashes, and every packet A sent is accounted for.
    func testPortChurnWhileThePeerPortForwards() throws {
        let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a", "vhost-user:\(dir!)/b.sock,name=b"])
        let a = try TestGuest(socketPath: "\(dir!)/a.sock")
        let b = try TestGuest(socketPath: "\(dir!)/b.sock")
        try a.bringUp()
        try b.bringUp()
        XCTAssertTrue(waitState(rt, "a", .started) && waitState(rt, "b", .started))
        var sent = 0, received = 0
        for round in 0..<20 {
            sent += a.send((0..<16).map { testFrame(tag: 5, seq: round * 16 + $0) })
            received += b.receive().count
            let rxBase = try b.frontend.stopRing(0)
            let txBase = try b.frontend.stopRing(1)
            sent += a.send((0..<16).map { testFrame(tag: 6, seq: round * 16 + $0) })
            usleep(2000)
            try b.startRings(bases: (rxBase, txBase))
            received += b.receive().count
        }
        // Every frame A sent is taken, and forwarded or dropped — io: with B absent A drops
        // (counted on A); with B present but full, B drops. Both ports read together.
        var pa = rt.stats().ports[0].total, pb = rt.stats().ports[1].total
        let settled = waitUntil {
            let s = rt.stats().ports
            (pa, pb) = (s[0].total, s[1].total)
            return pa.rxPackets >= UInt64(sent) && pb.txPackets + pb.drops + pa.drops >= UInt64(sent)
        }
        XCTAssertTrue(settled, "A \(pa) B \(pb), \(sent) sent")
        XCTAssertEqual(pa.rxPackets, UInt64(sent))
        XCTAssertEqual(pb.txPackets + pb.drops + pa.drops, UInt64(sent), "forwarded or dropped: A \(pa) B \(pb)")
        XCTAssertGreaterThan(pb.txPackets, 0)
        // What B's counters call forwarded is in its RX ring (counted after the hand-over).
        received += b.receive(count: Int(pb.txPackets) - received).count
        XCTAssertEqual(pb.txPackets, UInt64(received), "B got what was forwarded")
        XCTAssertEqual(b.receive(), [], "and nothing more")
        XCTAssertEqual(state(rt, "b")?.state, .started)
    }

    /// vhost-user-client: the runtime connects to a front-end that listens (QEMU server=on), and
    /// forwards once the guest brought its rings up.
    func testClientPortConnectsToAListeningFrontend() throws {
        let path = "\(dir!)/frontend.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        let rt = try start(ports: ["vhost-user-client:\(path),name=c"], forward: .macswap)
        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, Int32(testDeadline * 1000)), 1, "the runtime connects")
        let g = try TestGuest(fd: accept(listener, nil, nil))
        try g.bringUp()
        XCTAssertTrue(waitState(rt, "c", .started))
        let frames = (0..<10).map { testFrame(tag: 9, seq: $0) }
        g.send(frames)
        XCTAssertEqual(g.receive(count: 10).map { Array($0[12...]) }, frames.map { Array($0[12...]) })
    }

    /// The control socket answers stats as one JSON line; unknown commands get an error line.
    func testControlSocketStats() throws {
        let rt = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a"], control: true)
        var st = stat()
        XCTAssertEqual(lstat("\(dir!)/control", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        let line = try ControlClient.request(path: "\(dir!)/control", ControlRequest(cmd: "stats"))
        XCTAssertTrue(line.hasPrefix(#"{"ok":true,"cmd":"stats","result":{"#), line)
        XCTAssertTrue(line.contains(#""name":"a""#), line)
        let bad = try ControlClient.request(path: "\(dir!)/control", ControlRequest(cmd: "nope"))
        XCTAssertTrue(bad.contains(#""ok":false"#) && bad.contains("unknown command 'nope'"), bad)
        // A second server on the same live path is refused; a regular file is never replaced.
        XCTAssertThrowsError(try ControlServer(path: "\(dir!)/control", logger: Logger(label: "t")))
        FileManager.default.createFile(atPath: "\(dir!)/file", contents: Data("x".utf8))
        XCTAssertThrowsError(try ControlServer(path: "\(dir!)/file", logger: Logger(label: "t"))) { e in
            XCTAssertTrue("\(e)".contains("not a socket"), "\(e)")
        }
        rt.stop()
        runtime = nil
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir!)/control"), "the socket file is removed at stop")
    }

    /// features=0x... masks what the port offers: without bit 34 a packed-only front-end is refused.
    func testFeatureMaskPerPort() throws {
        let mask = ~(UInt64(1) << 34)
        _ = try start(ports: ["vhost-user:\(dir!)/a.sock,name=a,features=0x\(String(mask, radix: 16))"])
        let g = try TestGuest(socketPath: "\(dir!)/a.sock", packed: true)
        XCTAssertThrowsError(try g.frontend.negotiate()) { e in
            XCTAssertTrue("\(e)".lowercased().contains("packed"), "\(e)")
        }
        // The port's own reading of the mask: WarmstartPortsTests (VhostUserPortConfigurationTests).
    }
}

enum MbufPoolConfigForTests {
    static var small: MbufPoolConfig { MbufPoolConfig(count: 4096, cacheSize: 64) }
}
