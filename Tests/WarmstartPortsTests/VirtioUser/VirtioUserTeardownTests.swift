import Foundation
import XCTest
import WarmstartBus
import WarmstartMemory
import WarmstartPools
@testable import WarmstartPorts
import WarmstartTestSupport

/// Teardown order for a port whose queues are polled by the caller (no datapath): the driver's
/// `beforeTeardown` runs while the queues are still live — mbufs still posted — and their
/// reclaim comes only after it returned.
final class VirtioUserTeardownTests: XCTestCase {
    func testBeforeTeardownRunsWhileTheQueuesAreStillPosted() throws {
        let fe = try FrontendSide()
        let path = "/tmp/ws-vuser-teardown-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let listener = listenUnix(path)
        defer { close(listener) }
        XCTAssertGreaterThanOrEqual(listener, 0, "listening on \(path)")
        let bus = try Bus(ports: [try PortSpec.parse("virtio-user:\(path),backoff-min-ms=10")])
        let driver = VirtioUserDriver(regions: fe.regions, pool: fe.pool, arena: fe.arena)
        let seen = NSLock()
        var postedAtHook: [Int] = []
        driver.beforeTeardown = { d in
            let p = d.driverContext as! VirtioUserPort
            seen.lock(); postedAtHook.append(p.queues[0].rx.inFlightCount); seen.unlock()
        }
        bus.register(driver: driver, for: .virtioUser)
        bus.start()
        defer { bus.stop() }
        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1)
        let be = try InProcessBackend(connectedFD: accept(listener, nil, nil))
        addTeardownBlock { [weak be] in be?.stop() }
        XCTAssertTrue(bus.wait(timeoutSeconds: 5) { $0[0].state == .started })
        XCTAssertGreaterThan(fe.pool.inUseCount, 0, "receive ring filled")
        be.disconnect()
        XCTAssertTrue(bus.wait(timeoutSeconds: 5) { $0[0].reconnects == 1 })
        seen.lock(); let hook = postedAtHook; seen.unlock()
        XCTAssertEqual(hook, [256], "called once, with every receive buffer still posted")
        XCTAssertEqual(fe.pool.inUseCount, 0, "reclaimed after the hook")
    }
}
