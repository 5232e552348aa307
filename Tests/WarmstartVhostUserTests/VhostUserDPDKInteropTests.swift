import Foundation
import XCTest
@testable import WarmstartVhostUser

/// Runs the back-end session on a real listening socket against DPDK's virtio-user front-end
/// (dpdk-testpmd, package dpdk-dev) and checks the handshake completes: both rings of the queue
/// pair start, and testpmd's GET_VRING_BASE at shutdown stops them.
/// Opt-in (needs hugepages and dpdk-testpmd): WARMSTART_DPDK_INTEROP=1 swift test --filter VhostUserDPDKInteropTests
/// Knobs: WARMSTART_DPDK_PACKED=1 for the packed ring, WARMSTART_DPDK_QUEUES=N queue pairs,
/// WARMSTART_TESTPMD=path.
final class VhostUserDPDKInteropTests: XCTestCase {
    func testHandshakeWithTestpmdVirtioUser() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["WARMSTART_DPDK_INTEROP"] == "1" else {
            throw XCTSkip("set WARMSTART_DPDK_INTEROP=1 to run against dpdk-testpmd")
        }
        let testpmd = env["WARMSTART_TESTPMD"] ?? "/usr/bin/dpdk-testpmd"
        guard FileManager.default.isExecutableFile(atPath: testpmd) else { throw XCTSkip("\(testpmd) not found (apt-get install dpdk-dev)") }
        let packed = env["WARMSTART_DPDK_PACKED"] == "1"
        let pairs = Int(env["WARMSTART_DPDK_QUEUES"] ?? "1") ?? 1
        let path = "/tmp/warmstart-vhost-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }

        // Listen first: virtio-user (server=0) connects to us.
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer { close(listener) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.utf8.enumerated() { p[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0, "bind \(path): errno \(errno)")
        XCTAssertEqual(listen(listener, 1), 0)

        let prefix = "ws-vhost-\(getpid())"
        // testpmd leaves its hugepage files and runtime directory behind when it is killed; they
        // hold hugepages until removed, so remove ours (after the process is gone).
        defer {
            if let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/hugepages") {
                for n in names where n.hasPrefix(prefix + "map_") { try? FileManager.default.removeItem(atPath: "/dev/hugepages/" + n) }
            }
            try? FileManager.default.removeItem(atPath: "/var/run/dpdk/" + prefix)
        }
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: testpmd)
        proc.arguments = ["-l", "0,1", "--main-lcore", "0", "--no-pci", "--single-file-segments", "-m", "256",
                          "--file-prefix", prefix,
                          "--vdev", "net_virtio_user0,path=\(path),queues=\(pairs),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=1",
                          "--", "--forward-mode=io", "--stats-period", "1", "--nb-cores=1", "--txq=\(pairs)", "--rxq=\(pairs)"]
        let logURL = URL(fileURLWithPath: "/tmp/warmstart-vhost-testpmd-\(getpid()).log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: logURL)
        proc.standardOutput = logHandle
        proc.standardError = logHandle
        try proc.run()
        let pid = proc.processIdentifier
        defer {
            if proc.isRunning { kill(pid, SIGKILL) }
            proc.waitUntilExit()
        }
        // Watchdog: never let testpmd outlive the test.
        let watchdog = DispatchWorkItem { if proc.isRunning { kill(pid, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
        defer { watchdog.cancel() }

        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 30_000) == 1 else {
            XCTFail("testpmd did not connect; its log: \(logURL.path)")
            return
        }
        let conn = accept(listener, nil, nil)
        XCTAssertGreaterThanOrEqual(conn, 0)

        let session = VhostUserBackendSession(configuration: VhostUserBackendConfiguration(maxQueuePairs: pairs))
        var started = Set<Int>(), stopped = Set<Int>()
        var errors: [String] = []
        var interrupted = false
        let end = session.serve(VhostUserChannel(fd: conn), onMessage: { frame, outcome in
            let name = frame.header.knownRequest.map { "\($0)" } ?? "request \(frame.header.request)"
            print("vhost-user <- \(name) size=\(frame.header.size) fds=\(frame.fds.count)"
                  + (outcome.reply != nil ? " (replied)" : "") + (outcome.error.map { " ERROR \($0)" } ?? ""))
            if let e = outcome.error { errors.append("\(e)") }
        }, onEvents: { events in
            for e in events {
                switch e {
                case let .ringStarted(s):
                    print("vhost-user: ring \(s.index) started: \(s.layout) size \(s.size) kick \(s.kickFD ?? -1) call \(s.callFD ?? -1)")
                    started.insert(s.index)
                case let .ringStopped(i, base):
                    print("vhost-user: ring \(i) stopped at \(base)")
                    stopped.insert(i)
                default:
                    break
                }
            }
            if started.count == 2 * pairs && !interrupted {
                interrupted = true
                kill(pid, SIGINT)   // testpmd stops its port: GET_VRING_BASE for each ring, then closes
            }
        })
        print("vhost-user: session ended: \(end)")
        XCTAssertEqual(started, Set(0..<2 * pairs), "testpmd log: \(logURL.path)")
        XCTAssertEqual(stopped, Set(0..<2 * pairs))
        XCTAssertEqual(errors, [])
        XCTAssertEqual(session.layout, packed ? .packed : .split)
        if testRun?.failureCount == 0 { try? FileManager.default.removeItem(at: logURL) }
    }
}
