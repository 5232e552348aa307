import XCTest
import Glibc
import Foundation
import CWarmstartShim
import CWarmstartTestShim
import WarmstartIO
@testable import WarmstartBus

/// State machine of single ports: the happy paths and each failure.
final class BusStateTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir() }
    override func tearDown() { removeTree(dir) }

    private func makeBus(_ ports: [String], fallback: Bool = false) throws -> (Bus, HandshakeDriver) {
        let bus = try Bus(ports: ports.map { try PortSpec.parse($0) }, forceFallback: fallback,
                          bootOriginNs: ws_monotonic_ns())
        let driver = HandshakeDriver()
        for kind in [DeviceKind.vhostUser, .vhostUserClient, .virtioUser] { bus.register(driver: driver, for: kind) }
        return (bus, driver)
    }

    func testServerPortAcceptsAFrontendAndRecordsTimes() throws {
        for fallback in [false, true] {
            let path = dir + "/srv-\(fallback).sock"
            let (bus, _) = try makeBus(["vhost-user:\(path),name=vm1,mode=0660"], fallback: fallback)
            var states: [DeviceState] = []
            let statesLock = NSLock()
            bus.onStateChange { r in statesLock.withLock { states.append(r.state) } }
            var startedHook = 0
            bus.onDeviceStarted { d in XCTAssertGreaterThanOrEqual(d.fd, 0); startedHook += 1 }
            bus.start()
            XCTAssertTrue(bus.waitFor("vm1", .probing))
            // The socket exists only once the bus listens; a frontend connects right after.
            var client: Int32? = nil
            let deadline = Date().addingTimeInterval(testDeadline)
            while client == nil && Date() < deadline { client = Peer.connect(path); if client == nil { usleep(1000) } }
            let fd = try XCTUnwrap(client, "no socket at \(path)")
            defer { close(fd) }
            XCTAssertTrue(Peer.handshake(fd))
            XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
            let r = try XCTUnwrap(bus.record("vm1"))
            XCTAssertEqual(r.state, .started)
            XCTAssertNotNil(r.probeMs); XCTAssertNotNil(r.startMs); XCTAssertNotNil(r.readyAtMs)
            XCTAssertNil(r.reason)
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o660)
            bus.stop()
            XCTAssertEqual(statesLock.withLock { states },
                           [.probing, .negotiating, .ready, .started, .stopped], "backend \(bus.loop.backendName)")
            XCTAssertEqual(startedHook, 1)
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), "stop removes the socket file it created")
        }
    }

    func testStaleSocketIsReplacedAndLiveOneIsNot() throws {
        // Stale: a socket file nobody listens on any more.
        let stale = dir + "/stale.sock"
        let old = Peer.listen(stale)
        close(old)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stale))
        // Live: another process still accepts on it.
        let live = dir + "/live.sock"
        let owner = Peer.listen(live)
        defer { close(owner) }

        let (bus, _) = try makeBus(["vhost-user:\(stale)", "vhost-user:\(live)"])
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitFor("live.sock", .failed))
        XCTAssertEqual(bus.record("live.sock")?.reason, "\(live) is in use: another process accepts connections on it")
        let client = try XCTUnwrap(Peer.connectWhenListening(stale), "the stale socket was not replaced by a listening one")
        defer { close(client) }
        XCTAssertTrue(Peer.handshake(client))
        XCTAssertTrue(bus.waitFor("stale.sock", .started))
    }

    func testPathThatIsARegularFileFails() throws {
        let path = dir + "/notasocket"
        FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8))
        let (bus, _) = try makeBus(["vhost-user:\(path)"])
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        let r = try XCTUnwrap(bus.record("notasocket"))
        XCTAssertEqual(r.state, .failed)
        XCTAssertEqual(r.reason, "\(path) exists and is a regular file, not a socket; refusing to replace it")
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "keep me", "the file is untouched")
    }

    func testMissingDirectoryAndNotPermittedPathFail() throws {
        let (bus, _) = try makeBus(["vhost-user:\(dir)/nodir/p.sock", "vhost-user:/sys/ws-test.sock"])
        bus.start()
        defer { bus.stop() }
        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        XCTAssertEqual(bus.record("p.sock")?.state, .failed)
        XCTAssertEqual(bus.record("p.sock")?.reason,
                       "cannot create socket \(dir)/nodir/p.sock: directory \(dir)/nodir does not exist")
        XCTAssertEqual(bus.record("ws-test.sock")?.state, .failed)
        XCTAssertEqual(bus.record("ws-test.sock")?.reason,
                       "cannot create socket /sys/ws-test.sock: Operation not permitted (is /sys writable by this user?)")
    }

    /// Directory not writable by the user the bus runs as. Root ignores modes, so the loop
    /// thread is created with fsuid 65534 (threads inherit the creator's credentials).
    func testDirectoryNotWritableGivesPermissionDenied() throws {
        XCTAssertEqual(chmod(dir, 0o755), 0)
        let ro = dir + "/ro", priv = dir + "/private"
        XCTAssertEqual(mkdir(ro, 0o555), 0)
        XCTAssertEqual(mkdir(priv, 0o700), 0)
        let specs = [try PortSpec.parse("vhost-user:\(ro)/p.sock"), try PortSpec.parse("vhost-user:\(priv)/q.sock")]
        let bus = try Bus(ports: specs, bootOriginNs: ws_monotonic_ns())
        bus.register(driver: HandshakeDriver(), for: .vhostUser)
        let previous = ws_setfsuid(65534)
        bus.start()
        _ = ws_setfsuid(UInt32(previous))
        defer { bus.stop() }
        XCTAssertTrue(bus.waitUntilSettled(timeoutSeconds: testDeadline))
        XCTAssertEqual(bus.record("p.sock")?.state, .failed)
        XCTAssertEqual(bus.record("p.sock")?.reason,
                       "cannot create socket \(ro)/p.sock: Permission denied (is \(ro) writable by this user?)")
        XCTAssertEqual(bus.record("q.sock")?.state, .failed)
        XCTAssertEqual(bus.record("q.sock")?.reason, "cannot check socket path \(priv)/q.sock: Permission denied")
    }

    func testPeerClosingMidNegotiationGoesBackToProbing() throws {
        let path = dir + "/mid.sock"
        let (bus, driver) = try makeBus(["vhost-user:\(path)"])
        bus.start()
        defer { bus.stop() }
        // The socket file appears without a state change: poll for it.
        let deadline = Date().addingTimeInterval(testDeadline)
        while !FileManager.default.fileExists(atPath: path) && Date() < deadline { usleep(500) }
        // First frontend connects and leaves before saying anything.
        let quitter = try XCTUnwrap(Peer.connectWhenListening(path))
        XCTAssertTrue(bus.waitFor("mid.sock", .negotiating))
        close(quitter)
        XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .probing && $0[0].reconnects == 1 })
        XCTAssertEqual(bus.record("mid.sock")?.reason, "peer closed during negotiation")
        // The listening socket stays: the next frontend gets through.
        let good = try XCTUnwrap(Peer.connect(path))
        XCTAssertTrue(Peer.handshake(good))
        XCTAssertTrue(bus.waitFor("mid.sock", .started))
        XCTAssertEqual(driver.attaches, 2)
        let boot = try XCTUnwrap(bus.record("mid.sock"))
        XCTAssertNotNil(boot.probeMs); XCTAssertNotNil(boot.startMs)
        // The started front-end leaves: while the port waits for the next one, its record keeps
        // the timings of the cycle that started it (the boot report's bus-probe / device-start).
        close(good)
        XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .probing && $0[0].reconnects == 2 })
        let waiting = try XCTUnwrap(bus.record("mid.sock"))
        XCTAssertEqual(waiting.probeMs, boot.probeMs)
        XCTAssertEqual(waiting.startMs, boot.startMs)
        XCTAssertEqual(waiting.readyAtMs, boot.readyAtMs)
        bus.stop()
        XCTAssertEqual(bus.record("mid.sock")?.reason, "stopped while waiting for its peer again (peer closed the connection)")
    }

    func testStoppedAfterAPeerThatNeverGotItStartedIsStillProbing() throws {
        let path = dir + "/never.sock"
        let (bus, _) = try makeBus(["vhost-user:\(path)"])
        bus.start()
        let deadline = Date().addingTimeInterval(testDeadline)
        while !FileManager.default.fileExists(atPath: path) && Date() < deadline { usleep(500) }
        let quitter = try XCTUnwrap(Peer.connectWhenListening(path))
        XCTAssertTrue(bus.waitFor("never.sock", .negotiating))
        close(quitter)
        XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .probing && $0[0].reconnects == 1 })
        bus.stop()
        // It lost a peer, but it never ran: not "waiting for its peer again".
        XCTAssertEqual(bus.record("never.sock")?.reason, "stopped while probing: peer closed during negotiation")
    }

    func testClientReconnectsWithBackoffWhenFrontendAppearsAndWhenItRestarts() throws {
        for fallback in [false, true] {
            let path = dir + "/front-\(fallback).sock"
            let (bus, _) = try makeBus(["vhost-user-client:\(path),name=c"], fallback: fallback)
            let leftLock = NSLock()
            var left = 0
            bus.onDeviceLeftDatapath { d in XCTAssertGreaterThanOrEqual(d.fd, 0); leftLock.withLock { left += 1 } }
            bus.start()
            defer { bus.stop() }
            // No frontend yet: probing, retrying, with the reason saying so.
            XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].reason?.contains("retrying in") == true })
            XCTAssertEqual(bus.record("c")?.state, .probing)
            XCTAssertTrue(bus.record("c")?.reason?.hasPrefix("connect \(path): No such file or directory; retrying in") == true)

            let listener = Peer.listen(path)
            defer { close(listener); unlink(path) }
            let restart = DispatchSemaphore(value: 0)
            let frontend = Background {
                // First session: handshake, then the frontend drops the connection (restart).
                let first = accept(listener, nil, nil)
                Peer.handshake(first)
                restart.wait()
                close(first)
                // The bus comes back on its own and negotiates again.
                let second = accept(listener, nil, nil)
                Peer.handshake(second)
                restart.wait()
                close(second)
            }
            XCTAssertTrue(bus.waitFor("c", .started))
            XCTAssertEqual(bus.record("c")?.reconnects, 0)
            restart.signal()
            XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .started && $0[0].reconnects == 1 },
                          "\(bus.snapshot())")
            XCTAssertEqual(leftLock.withLock { left }, 1, "the datapath heard the device leave once")
            restart.signal()
            XCTAssertTrue(frontend.join())
        }
    }
}
