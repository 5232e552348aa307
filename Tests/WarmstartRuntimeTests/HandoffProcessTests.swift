import CWarmstartShim
import Foundation
import XCTest
import Logging
import WarmstartVhostUser
import WarmstartTestSupport
@testable import WarmstartRuntime
@testable import WarmstartHandoff

/// Hot upgrade across real processes: this test process is the guest and the old backend, serving
/// handoffs on a unix control socket; the new backend is a child process (this test binary again,
/// running `testChildTakesOver` with its instructions in the environment). Descriptors and memory
/// really change process; kill -9 is a real SIGKILL of the child.
final class HandoffProcessTests: XCTestCase {
    static let childControl = "WS_HANDOFF_CHILD_CONTROL"
    static let childFault = "WARMSTART_HANDOFF_FAULT"
    static let childReport = "WS_HANDOFF_CHILD_REPORT"
    /// A path: the child holds its adopt step (the handoff stays running) until this file exists.
    static let childAdoptGate = "WS_HANDOFF_CHILD_ADOPT_GATE"
    static let childNextControl = "WS_HANDOFF_CHILD_NEXT_CONTROL"

    var guest: TestGuest!
    var backend: HandoffBackend!
    var controlPath = ""
    var listenFD: Int32 = -1
    var donor: HandoffDonor!
    var outcomes: [HandoffDonorOutcome] = []
    let outcomeLock = NSLock()

    /// The child: takes over from the control socket in the environment, forwards until the
    /// front-end closes the connection, then exits (never returning to XCTest).
    func testChildTakesOver() throws {
        guard let path = ProcessInfo.processInfo.environment[Self.childControl] else { return }   // not a child: nothing to do
        let env = ProcessInfo.processInfo.environment
        var pending: HandoffPendingBackend?
        var next: HandoffBackend?
        let gate = env[Self.childAdoptGate]
        let hooks = HandoffTakerHooks(
            adopt: {
                // A slow new binary: the handoff stays running until the test opens the gate.
                if let gate { waitUntil(timeout: 2 * testDeadline) { FileManager.default.fileExists(atPath: gate) } }
                pending = try HandoffPendingBackend($0)
            },
            activate: { next = try HandoffBackend(pending: pending!, live: $0); pending = nil },
            resume: { next!.resumeAfterTakeover() },
            firstPacketNs: { next?.firstPacketNs },
            abandon: { pending = nil; next = nil })
        // The blackout's second end is this process's first forwarded burst: wait for it as long
        // as a loaded machine needs (it comes at once when the guest is sending).
        let options = HandoffTakerOptions(trafficWaitMs: Int(testDeadline * 1000), fault: env[Self.childFault].flatMap(HandoffFault.init(parsing:)))
        do {
            let report = try HandoffTaker.takeover(path: path, hooks: hooks, options: options)
            if let out = env[Self.childReport] {
                try JSONEncoder().encode(report).write(to: URL(fileURLWithPath: out))
            }
        } catch {
            FileHandle.standardError.write(Data("child: \(error)\n".utf8))
            exit(3)
        }
        if let nextPath = env[Self.childNextControl] {
            // Serve the next upgrade in turn; exit once handed over.
            let donor = HandoffDonor(hooks: next!.donorHooks())
            let fd = Self.listen(nextPath)
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { continue }
                Thread {
                    if case .committed = donor.serve(HandoffChannel(fd: c)) {
                        unlink(nextPath)
                        exit(0)
                    }
                }.start()
            }
        }
        next!.waitUntilDisconnected()
        next!.releaseAll()
        exit(0)
    }

    /// A listening unix socket at `path` (mode 0600).
    static func listen(_ path: String) -> Int32 {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, c) in path.utf8.enumerated() { p[i] = c } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        precondition(rc == 0, "bind \(path): errno \(errno)")
        chmod(path, 0o600)
        Glibc.listen(fd, 4)
        return fd
    }

    override func setUpWithError() throws {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        let (g, b) = socketPair()
        backend = try HandoffBackend(connection: b)
        guest = try TestGuest(socket: g)
        try guest.connect()
        XCTAssertTrue(waitUntil { backend.pair != nil }, "rings did not start")
        // The old process's control socket, serving handoffs one connection at a time.
        controlPath = "/tmp/ws-handoff-test-\(getpid()).sock"
        let fd = Self.listen(controlPath)
        listenFD = fd
        // Step timeouts far above what a loaded machine needs (a child process starting, the
        // first one held at adopt while a second starts and is refused): these tests end steps
        // by killing the child, never by a timeout (HandoffTests covers those).
        donor = HandoffDonor(hooks: backend.donorHooks(), timeouts: HandoffTimeouts(stepMs: 120_000, mapMs: 120_000))
        let donor = donor!
        Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR { continue }; return }
                // Each connection on its own thread, as the runtime's control socket does: a second
                // takeover reaches the donor while the first runs, and is refused.
                Thread { [self] in
                    let o = donor.serve(HandoffChannel(fd: c))
                    outcomeLock.lock(); outcomes.append(o); outcomeLock.unlock()
                }.start()
            }
        }.start()
    }

    override func tearDown() {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        guest?.abandon()
        if listenFD >= 0 { shutdown(listenFD, Int32(SHUT_RDWR)); close(listenFD) }
        unlink(controlPath)
        backend?.releaseAll()
        backend = nil
        guest = nil
    }

    /// Starts this test binary as the new process.
    func spawnChild(fault: String? = nil, report: String? = nil, adoptGate: String? = nil, stderr: Pipe? = nil,
                    from control: String? = nil, serving next: String? = nil) throws -> Process {
        try ChildTest.start("WarmstartRuntimeTests.HandoffProcessTests/testChildTakesOver",
                            environment: [Self.childControl: control ?? controlPath, Self.childNextControl: next,
                                          Self.childFault: fault, Self.childReport: report, Self.childAdoptGate: adoptGate],
                            stderr: stderr, inheritStderr: true)
    }

    /// Waits until `count` packets came back; false (and a failure) if they did not in time.
    @discardableResult
    func waitFor(_ count: Int, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        let ok = waitUntil(interval: 500) { guest.receivedCount >= count }
        if !ok { XCTFail("only \(guest.receivedCount) of \(count) packets came back within \(testDeadline) s", file: file, line: line) }
        return ok
    }

    var outcomeCount: Int { outcomeLock.lock(); defer { outcomeLock.unlock() }; return outcomes.count }
    var lastOutcome: HandoffDonorOutcome? { outcomeLock.lock(); defer { outcomeLock.unlock() }; return outcomes.last }

    func testKillDashNineOfTheNewProcessAtEachStepLeavesTheOldOneForwarding() throws {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        let traffic = guest.run()
        let steps: [HandoffStepName] = [.hello, .transfer, .map, .quiesce, .commit]
        for (k, step) in steps.enumerated() {
            waitFor(guest.receivedCount + 20_000)
            let child = try spawnChild(fault: "kill:\(step.rawValue)")
            waitUntil { !child.isRunning }
            if child.isRunning { kill(child.processIdentifier, SIGKILL); XCTFail("\(step): child did not kill itself") }
            child.waitUntilExit()
            XCTAssertEqual(child.terminationReason, .uncaughtSignal, "\(step)")
            XCTAssertEqual(child.terminationStatus, SIGKILL, "\(step)")
            waitUntil { outcomeCount >= k + 1 }
            switch lastOutcome {
            case .committed?, nil: XCTFail("\(step): \(String(describing: lastOutcome))")
            case let .rolledBack(reason)?, let .refused(reason)?:
                XCTAssertTrue(reason.contains("closed the connection"), "\(step): \(reason)")
            }
            let before = backend.datapath.stats()[0].total.rxPackets
            XCTAssertTrue(waitUntil(interval: 500) { backend.datapath.stats()[0].total.rxPackets >= before + 1000 },
                          "\(step): old backend not forwarding")
        }
        finish(traffic)
    }

    func finish(_ traffic: Thread) {
        guest.stopSending()
        XCTAssertTrue(waitUntil { !traffic.isExecuting }, "packets still in flight after \(testDeadline) s")
        let total = guest.sentCount
        XCTAssertEqual(guest.receivedCount, total, "packets sent = packets received")
        XCTAssertTrue(guest.received.elementsEqual((0..<total).lazy.map { UInt32($0) }), "each packet exactly once, in order")
        print("traffic: \(total) packets sent, \(guest.receivedCount) received")
    }

    /// Descriptors of this process that point at `text` (a memfd name, "socket:").
    func openFDs(to text: String) -> Int { fdList().filter { $0.contains(text) }.count }

    func testUpgradeToANewProcessUnderTraffic() throws {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        let reportPath = "/tmp/ws-handoff-report-\(getpid()).json"
        defer { unlink(reportPath) }
        let traffic = guest.run()
        waitFor(50_000)
        XCTAssertEqual(openFDs(to: "memfd:warmstart:guest"), 2, "the guest's region and the backend session's mapping")
        let child = try spawnChild(report: reportPath)
        waitUntil { lastOutcome != nil }
        XCTAssertEqual(lastOutcome, .committed(newPid: child.processIdentifier))
        // The old process holds nothing of the backend any more: no pool memory, no connection.
        waitUntil { countMappings(containing: "memfd:warmstart:host") == 0 }
        XCTAssertEqual(countMappings(containing: "memfd:warmstart:host"), 0)
        XCTAssertEqual(openFDs(to: "memfd:warmstart:host"), 0)
        XCTAssertEqual(openFDs(to: "memfd:warmstart:guest"), 1, "only the guest's own region")
        waitFor(guest.receivedCount + 100_000)
        finish(traffic)
        waitUntil { FileManager.default.fileExists(atPath: reportPath) }
        // The same vhost-user connection, now served by the child: no reconnect, no renegotiation.
        XCTAssertEqual(try guest.frontend.getStatus(), 0)
        let report = try JSONDecoder().decode(HandoffReport.self, from: Data(contentsOf: URL(fileURLWithPath: reportPath)))
        print("process handoff: blackout \(report.blackoutMs ?? -1) ms; " + report.steps.map { "\($0.name) \(String(format: "%.3f", $0.ms)) ms" }.joined(separator: ", "))
        XCTAssertEqual(report.outcome, "committed")
        XCTAssertNotNil(report.blackoutMs, report.blackoutNote ?? "")
        // The front-end closes: the child exits cleanly.
        shutdown(guest.frontend.channel.fd, Int32(SHUT_RDWR))
        waitUntil { !child.isRunning }
        if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0)
        backend = nil
    }

    /// Two new processes at once: the second is refused with a message that says why, the first
    /// completes, and traffic never stops.
    func testSecondTakeoverProcessIsRefusedWhileOneRuns() throws {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        let traffic = guest.run()
        waitFor(20_000)
        let gate = "/tmp/ws-handoff-gate-\(getpid())"
        unlink(gate)
        defer { unlink(gate) }
        let first = try spawnChild(adoptGate: gate)
        XCTAssertTrue(waitUntil { donor.isBusy })
        let errors = Pipe()
        let second = try spawnChild(stderr: errors)
        second.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(second.terminationStatus, 3)
        XCTAssertTrue(message.contains("refused by the running process: a handoff is already running (to pid \(first.processIdentifier)"), message)
        print("second takeover: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        FileManager.default.createFile(atPath: gate, contents: nil)   // the first one goes on
        waitUntil { outcomeCount >= 2 }
        outcomeLock.lock(); let all = outcomes; outcomeLock.unlock()
        XCTAssertTrue(all.contains(.committed(newPid: first.processIdentifier)), "\(all)")
        waitFor(guest.receivedCount + 50_000)
        finish(traffic)
        shutdown(guest.frontend.channel.fd, Int32(SHUT_RDWR))
        waitUntil { !first.isRunning }
        if first.isRunning { kill(first.processIdentifier, SIGKILL) }
        first.waitUntilExit()
        XCTAssertEqual(first.terminationStatus, 0)
    }

    /// Ten upgrades in a row across real processes: each new process takes over from the previous
    /// one, then serves the next takeover itself. No packet is lost over the ten; every process
    /// holds the same descriptors and memory mappings as the one before it (nothing accumulates),
    /// and each old process exits cleanly once it has handed over.
    func testTenProcessUpgradesInARow() throws {
        guard ProcessInfo.processInfo.environment[Self.childControl] == nil else { return }
        let traffic = guest.run()
        waitFor(20_000)
        var previous: Process?
        var from = controlPath
        var held: [(fds: Int, maps: Int)] = []
        var blackouts: [Double] = []
        var children: [Process] = []
        defer { for c in children where c.isRunning { kill(c.processIdentifier, SIGKILL) } }
        for k in 0..<10 {
            let next = "/tmp/ws-handoff-chain-\(getpid())-\(k).sock"
            let report = "/tmp/ws-handoff-chain-\(getpid())-\(k).json"
            defer { unlink(report) }
            let child = try spawnChild(report: report, from: from, serving: next)
            children.append(child)
            waitUntil { FileManager.default.fileExists(atPath: report) && FileManager.default.fileExists(atPath: next) }
            guard FileManager.default.fileExists(atPath: report) else { return XCTFail("upgrade \(k) did not complete") }
            // The child writes the report in one go after the commit; read it once it decodes.
            var decoded: HandoffReport?
            waitUntil { decoded = try? JSONDecoder().decode(HandoffReport.self, from: Data(contentsOf: URL(fileURLWithPath: report))); return decoded != nil }
            guard let r = decoded else { return XCTFail("upgrade \(k): report \(report) unreadable") }
            blackouts.append(r.blackoutMs ?? .nan)
            if let previous {
                previous.waitUntilExit()
                XCTAssertEqual(previous.terminationStatus, 0, "upgrade \(k): the old process exits cleanly")
            }
            let pid = child.processIdentifier
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).map { f -> String in
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(f)")).map { "\(f)->\($0)" } ?? f
            }
            // What a handoff moves: memory (memfd) and sockets. Dispatch's own eventfd/epoll/timerfd
            // descriptors come and go with its worker threads and are not counted.
            let fds = names.filter { $0.contains("memfd:") || $0.contains("socket:") }.count
            if fds != held.first?.fds ?? fds { print("upgrade \(k): fds \(names.sorted())") }
            let maps = ((try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("memfd:") }.count
            held.append((fds, maps))
            waitFor(guest.receivedCount + 10_000)
            previous = child
            from = next
        }
        finish(traffic)
        print("ten process upgrades: blackout ms " + blackouts.map { String(format: "%.3f", $0) }.joined(separator: " "))
        print("ten process upgrades: per process memfd+socket fds \(held.map(\.fds)), memfd mappings \(held.map(\.maps))")
        XCTAssertEqual(Set(held.map(\.fds)).count, 1, "memory and socket descriptors per process: \(held.map(\.fds))")
        XCTAssertEqual(Set(held.map(\.maps)).count, 1, "memory mappings per process: \(held.map(\.maps))")
        XCTAssertEqual(countMappings(containing: "memfd:warmstart:host"), 0)
        // The last one serves the next upgrade and never exits by itself: stop it.
        shutdown(guest.frontend.channel.fd, Int32(SHUT_RDWR))
        kill(previous!.processIdentifier, SIGKILL)
        previous!.waitUntilExit()
        unlink(from)
    }
}

/// The runtime's JSON-lines control socket switching a connection to the handoff protocol.
final class HandoffControlServerTests: XCTestCase {
    func testHandoffThroughTheControlServerWhileStatsKeepsAnswering() throws {
        let (g, b) = socketPair()
        var backend: HandoffBackend? = try HandoffBackend(connection: b)
        let guest = try TestGuest(socket: g)
        try guest.connect()
        XCTAssertTrue(waitUntil { backend!.pair != nil }, "rings did not start")
        let path = "/tmp/ws-handoff-control-\(getpid()).sock"
        let server = try ControlServer(path: path, logger: Logger(label: "test"))
        defer { server.stop() }
        let donor = HandoffDonor(hooks: backend!.donorHooks())
        server.registerUpgrade("handoff") { fd in Thread { _ = donor.serve(HandoffChannel(fd: fd)) }.start() }
        server.start()
        XCTAssertTrue(server.commands.contains("handoff"))
        let traffic = guest.run()
        defer { guest.abandon() }
        XCTAssertTrue(waitUntil { guest.receivedCount >= 20_000 }, "traffic before the handoff")

        var pending: HandoffPendingBackend?
        var next: HandoffBackend?
        let hooks = HandoffTakerHooks(
            adopt: { pending = try HandoffPendingBackend($0); usleep(300_000) },   // slow: a second one arrives meanwhile
            activate: { next = try HandoffBackend(pending: pending!, live: $0) },
            resume: { next!.resumeAfterTakeover() },
            firstPacketNs: { next?.firstPacketNs })
        var report: HandoffReport?
        let t = Thread { report = try? HandoffTaker.takeover(channel: HandoffChannel.connectUpgrading(path: path), hooks: hooks) }
        t.start()
        XCTAssertTrue(waitUntil { donor.isBusy })
        // The control socket still answers, and a second handoff is refused with the reason.
        XCTAssertTrue(try ControlClient.request(path: path, ControlRequest(cmd: "ping")).contains("pong"))
        XCTAssertThrowsError(try HandoffTaker.takeover(channel: HandoffChannel.connectUpgrading(path: path),
                                                       hooks: HandoffTakerHooks(adopt: { _ in }, resume: {}))) { e in
            XCTAssertTrue("\(e)".contains("a handoff is already running"), "\(e)")
        }
        XCTAssertTrue(waitUntil { !t.isExecuting })
        XCTAssertEqual(report?.outcome, "committed")
        backend = next
        let more = guest.receivedCount + 20_000
        XCTAssertTrue(waitUntil { guest.receivedCount >= more }, "traffic after the handoff")
        guest.stopSending()
        XCTAssertTrue(waitUntil { !traffic.isExecuting })
        XCTAssertEqual(guest.receivedCount, guest.sentCount, "packets sent = packets received")
        backend?.releaseAll()
    }
}
