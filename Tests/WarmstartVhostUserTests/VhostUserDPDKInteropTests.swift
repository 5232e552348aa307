import Foundation
import XCTest
import WarmstartTestSupport
@testable import WarmstartVhostUser
@testable import WarmstartVhostUserWire

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
        let harness = try TestpmdHarness(name: "handshake", prefixBase: "ws-vhost", needsWarmstart: false)
        defer { harness.cleanup(keepLogs: (testRun?.failureCount ?? 0) > 0) }
        let packed = env["WARMSTART_DPDK_PACKED"] == "1"
        let pairs = Int(env["WARMSTART_DPDK_QUEUES"] ?? "1") ?? 1
        let path = harness.dir + "/vhost.sock"

        // Listen first: virtio-user (server=0) connects to us.
        let listener = listenUnix(path, backlog: 1)
        XCTAssertGreaterThanOrEqual(listener, 0, "listen \(path): errno \(errno)")
        defer { close(listener) }

        let proc = try harness.startTestpmd(vdevs: ["net_virtio_user0,path=\(path),queues=\(pairs),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=1"],
                                            appArgs: ["--forward-mode=io", "--stats-period", "1", "--nb-cores=1", "--txq=\(pairs)", "--rxq=\(pairs)"])
        let pid = proc.processIdentifier
        let logPath = harness.log("testpmd")
        // Watchdog: never let testpmd outlive the test.
        let watchdog = DispatchWorkItem { if proc.isRunning { kill(pid, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
        defer { watchdog.cancel() }

        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 30_000) == 1 else {
            XCTFail("testpmd did not connect; its log: \(logPath)")
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
        XCTAssertEqual(started, Set(0..<2 * pairs), "testpmd log: \(logPath)")
        XCTAssertEqual(stopped, Set(0..<2 * pairs))
        XCTAssertEqual(errors, [])
        XCTAssertEqual(session.layout, packed ? .packed : .split)
    }
}
