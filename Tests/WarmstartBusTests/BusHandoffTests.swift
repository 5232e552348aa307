import XCTest
import Glibc
import Foundation
import CWarmstartShim
import WarmstartIO
@testable import WarmstartBus

/// Hot-upgrade pieces of the bus: release (no shutdown, no unlink), adoption of descriptors by a
/// second bus, and freezing/thawing accepts.
final class BusHandoffTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("bus-ho") }
    override func tearDown() { removeTree(dir) }

    private func makeBus(_ ports: [String]) throws -> (Bus, HandshakeDriver) {
        let bus = try Bus(ports: ports.map { try PortSpec.parse($0) }, bootOriginNs: ws_monotonic_ns())
        let driver = HandshakeDriver()
        bus.register(driver: driver, for: .vhostUser)
        return (bus, driver)
    }

    private func connectClient(_ path: String) throws -> Int32 {
        var client: Int32?
        let deadline = Date().addingTimeInterval(testDeadline)
        while client == nil && Date() < deadline { client = Peer.connect(path); if client == nil { usleep(1000) } }
        return try XCTUnwrap(client, "no socket at \(path)")
    }

    /// The old bus releases: the peer sees neither end-of-stream nor an error and the socket file
    /// stays; a new bus adopting (copies of) the descriptors serves the same connection; when the
    /// new bus stops, it removes the socket file it now owns.
    func testReleaseKeepsThePeerAndAdoptionServesIt() throws {
        let path = dir + "/a.sock"
        let (old, _) = try makeBus(["vhost-user:\(path),name=vm"])
        old.start()
        let client = try connectClient(path)
        defer { close(client) }
        XCTAssertTrue(Peer.handshake(client))
        XCTAssertTrue(old.waitFor("vm", .started))
        // What SCM_RIGHTS would give the new process: other descriptors for the same sockets.
        let (conn, listen) = old.sync { (dup(old.devices[0].fd), dup(old.devices[0].listeningFD)) }
        XCTAssertGreaterThanOrEqual(conn, 0); XCTAssertGreaterThanOrEqual(listen, 0)
        old.release()
        XCTAssertEqual(old.record("vm")?.state, .stopped)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "release must not unlink the path the new process serves")
        var p = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 100), 0, "release must not shut the shared socket down (revents \(p.revents))")

        let (new, driver) = try makeBus(["vhost-user:\(path),name=vm"])
        new.adopt(deviceAt: 0, connectionFD: conn, listeningFD: listen)
        new.start()
        XCTAssertTrue(new.waitFor("vm", .negotiating))
        XCTAssertTrue(Peer.handshake(client), "the adopted connection is served by the new bus")
        XCTAssertTrue(new.waitFor("vm", .started))
        XCTAssertEqual(driver.attaches, 1)
        new.stop()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the new bus owns the socket file now")
    }

    /// Frozen accepting leaves a connecting front-end in the backlog; thawing accepts it.
    func testFreezeAndThawAccepting() throws {
        let path = dir + "/b.sock"
        let (bus, _) = try makeBus(["vhost-user:\(path),name=vm"])
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitFor("vm", .probing))
        let deadline = Date().addingTimeInterval(testDeadline)
        while !FileManager.default.fileExists(atPath: path) && Date() < deadline { usleep(1000) }
        usleep(20_000)   // the accept is armed
        bus.sync { bus.freezeAccepting() }
        var settled = false
        while !settled && Date() < deadline { settled = bus.sync { bus.acceptingFrozenState().settled }; usleep(1000) }
        XCTAssertTrue(settled, "the cancelled accept completed")
        let client = try connectClient(path)
        defer { close(client) }
        usleep(100_000)
        XCTAssertEqual(bus.record("vm")?.state, .probing, "no accept while frozen")
        XCTAssertNil(bus.record("vm")?.reason, "a cancelled accept is not a failure")
        bus.sync { bus.thawAccepting() }
        XCTAssertTrue(Peer.handshake(client))
        XCTAssertTrue(bus.waitFor("vm", .started))
    }
}
