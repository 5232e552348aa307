import Foundation
import XCTest
import WarmstartBus
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVirtio
@testable import WarmstartEngine
@testable import WarmstartPorts
import WarmstartTestSupport
import WarmstartSpec

/// Warmstart as the driver (virtio-user) of an in-process vhost-user back-end: negotiation,
/// the memory table, ring set-up, and traffic both ways for both ring layouts.
final class VirtioUserTests: XCTestCase {
    func connect(_ fe: FrontendSide, _ cfg: VirtioUserConfig,
                 backend: VhostUserBackendConfiguration = VhostUserBackendConfiguration()) throws
        -> (VirtioUserPort, InProcessBackend, VhostUserNegotiation, [VirtioUserQueuePair]) {
        let be = try InProcessBackend(configuration: backend)
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: cfg, regions: fe.regions, pool: fe.pool, arena: fe.arena)
        let (n, pairs) = try port.establish(fd: be.frontendFD)
        port.queues = pairs
        XCTAssertTrue(be.waitForRings(2 * cfg.queuePairs), "back-end did not start the rings")
        return (port, be, n, pairs)
    }

    // MARK: negotiation

    func testNegotiatesRequestedFeatureSubset() throws {
        let fe = try FrontendSide()
        for (packed, mrg) in [(false, false), (false, true), (true, false), (true, true)] {
            let (port, be, n, _) = try connect(fe, VirtioUserConfig(packed: packed, mergeable: mrg, queueSize: 64))
            XCTAssertNotEqual(n.features & VirtioFeatures.version1.rawValue, 0)
            XCTAssertEqual(n.features & VirtioFeatures.ringPacked.rawValue != 0, packed)
            XCTAssertEqual(n.features & VirtioFeatures.mrgRxbuf.rawValue != 0, mrg)
            XCTAssertEqual(be.session.ackedFeatures, n.features)
            XCTAssertEqual(be.session.layout, packed ? .packed : .split)
            port.teardown()
        }
    }

    func testMissingFeaturesAreNamed() throws {
        let fe = try FrontendSide()
        let noPacked = VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.ringPacked.rawValue)
        let be = try InProcessBackend(configuration: noPacked)
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: VirtioUserConfig(packed: true), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        XCTAssertThrowsError(try port.establish(fd: be.frontendFD)) { e in
            guard case let VirtioUserError.missingFeatures(names) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(names, ["ringPacked"])
            XCTAssertTrue((e as! VirtioUserError).isPermanent)
            XCTAssertTrue("\(e)".contains("ringPacked"), "\(e)")
        }
        let noV1 = try InProcessBackend(configuration: VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.version1.rawValue))
        addTeardownBlock { [weak noV1] in noV1?.stop() }
        let port2 = try VirtioUserPort(config: VirtioUserConfig(), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        XCTAssertThrowsError(try port2.establish(fd: noV1.frontendFD)) { e in
            guard case let VirtioUserError.missingFeatures(names) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(names, ["version1"])
        }
    }

    func testMergeableRefusedByBackendFallsBackToSingleBuffers() throws {
        let fe = try FrontendSide()
        let (_, be, n, pairs) = try connect(fe, VirtioUserConfig(mergeable: true),
                                            backend: VhostUserBackendConfiguration(featureMask: ~VirtioFeatures.mrgRxbuf.rawValue))
        XCTAssertEqual(n.features & VirtioFeatures.mrgRxbuf.rawValue, 0)
        XCTAssertFalse(pairs[0].rx.options.mergeableRxBuffers)
        try roundTrip(fe, be, pairs[0], sizes: [64, 1518])
    }

    func testMultiQueueNeedsBackendQueues() throws {
        let fe = try FrontendSide()
        let be = try InProcessBackend(configuration: VhostUserBackendConfiguration(maxQueuePairs: 1))
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: VirtioUserConfig(queuePairs: 2), regions: fe.regions, pool: fe.pool, arena: fe.arena)
        XCTAssertThrowsError(try port.establish(fd: be.frontendFD)) { e in
            XCTAssertTrue("\(e)".contains("queue pairs"), "\(e)")
        }
        let (_, be2, n, pairs) = try connect(fe, VirtioUserConfig(queuePairs: 2),
                                             backend: VhostUserBackendConfiguration(maxQueuePairs: 2))
        XCTAssertEqual(pairs.count, 2)
        XCTAssertEqual(n.maxQueuePairs, 2)
        XCTAssertTrue(be2.waitForRings(4))
    }

    // MARK: memory table and rings

    func testMemoryTableIsOurRegions() throws {
        let fe = try FrontendSide()
        let (_, be, _, _) = try connect(fe, VirtioUserConfig())
        let mapped = be.session.memory!.regions
        XCTAssertEqual(mapped.count, fe.regions.count, "one entry per region")
        for (r, m) in zip(fe.regions, mapped) {
            XCTAssertEqual(m.region.guestAddress, r.ioAddress)
            XCTAssertEqual(m.region.userAddress, UInt64(UInt(bitPattern: r.base)))
            XCTAssertEqual(m.region.mmapOffset, UInt64(r.fileOffset))
            XCTAssertEqual(m.region.size, UInt64(r.size))
            var a = stat(), b = stat()
            XCTAssertEqual(fstat(m.fd, &a), 0); XCTAssertEqual(fstat(r.fd.rawValue, &b), 0)
            XCTAssertEqual(a.st_ino, b.st_ino, "the back-end got our region's fd")
            // Same memory: a byte written by us is seen by the back-end.
            r.base.storeBytes(of: 0xA5, toByteOffset: 100, as: UInt8.self)
            XCTAssertEqual(m.host.load(fromByteOffset: 100, as: UInt8.self), 0xA5)
        }
    }

    func testRingsLieInTheGeneralRegionForBothLayouts() throws {
        for packed in [false, true] {
            let fe = try FrontendSide()
            let (_, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: packed, queueSize: 128))
            let g = fe.general
            for (i, dq) in [pairs[0].rx, pairs[0].tx].enumerated() {
                XCTAssertEqual(dq.layout, packed ? .packed : .split)
                XCTAssertEqual(dq.size, 128)
                XCTAssertTrue(dq.descAddress >= g.ioAddress && dq.deviceAreaAddress < g.ioAddress + UInt64(g.size))
                let s = be.setups[i]!
                XCTAssertEqual(s.size, 128)
                XCTAssertEqual(s.descriptors, be.session.memory!.translate(guest: dq.descAddress, length: 16))
                XCTAssertEqual(s.driverArea, be.session.memory!.translate(guest: dq.driverAreaAddress, length: 4))
                XCTAssertEqual(s.deviceArea, be.session.memory!.translate(guest: dq.deviceAreaAddress, length: 4))
            }
            XCTAssertEqual(pairs[0].rx.numFree, 0, "receive ring filled at set-up")
        }
    }

    // MARK: traffic

    func roundTrip(_ fe: FrontendSide, _ be: InProcessBackend, _ q: VirtioUserQueuePair, sizes: [Int],
                   file: StaticString = #filePath, line: UInt = #line) throws {
        let cache = MbufCache(pool: fe.pool, size: 64)
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }
        for (k, size) in sizes.enumerated() {
            // Frontend → back-end.
            let f = testFrame(size: size, seed: UInt8(truncatingIfNeeded: k))
            var m = makeChain(fe.pool, f)!
            XCTAssertEqual(q.transmitBurst(&m, count: 1, cache: cache), 1, "tx \(size)", file: file, line: line)
            let got = be.receive(1)
            XCTAssertEqual(got.count, 1, "back-end got the \(size) B frame", file: file, line: line)
            XCTAssertTrue(sameFrame(got.first, f), "\(size) B payload intact: \(frameDiff(got.first, f))", file: file, line: line)
            // Back-end → frontend.
            let g = testFrame(size: size, seed: UInt8(truncatingIfNeeded: 100 + k))
            XCTAssertTrue(be.send(g), "back-end delivered \(size) B", file: file, line: line)
            var n = 0
            let end = Date().addingTimeInterval(testDeadline)
            while n == 0 && Date() < end { n = q.receiveBurst(into: out, max: 32, cache: cache) }
            XCTAssertEqual(n, 1, "frontend received \(size) B", file: file, line: line)
            if n == 1 {
                let r = copyFrame(fe.pool, out[0])
                XCTAssertTrue(sameFrame(r, g), "\(size) B payload intact: \(frameDiff(r, g))", file: file, line: line)
                cache.free(out[0])
            }
        }
        // Completed TX buffers come back at the next transmit burst.
        _ = q.transmitBurst(out, count: 0, cache: cache)
        XCTAssertEqual(q.tx.inFlightCount, 0, file: file, line: line)
        XCTAssertEqual(q.errorCount, 0, file: file, line: line)
        cache.flush()
    }

    func testTrafficSplit() throws {
        let fe = try FrontendSide()
        let (_, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: false))
        try roundTrip(fe, be, pairs[0], sizes: [64, 1518, 9000, 64, 9000])
    }

    func testTrafficPacked() throws {
        let fe = try FrontendSide()
        let (_, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: true))
        try roundTrip(fe, be, pairs[0], sizes: [64, 1518, 9000, 64, 9000])
    }

    func testManyFramesWrapTheRings() throws {
        for packed in [false, true] {
            let fe = try FrontendSide()
            let (port, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: packed, queueSize: 64))
            try roundTrip(fe, be, pairs[0], sizes: (0..<200).map { [64, 1518, 300][$0 % 3] })
            // Everything but the posted receive buffers is back in the pool; teardown returns those too.
            port.teardown()
            XCTAssertEqual(fe.pool.inUseCount, 0, "no mbuf leaked (packed \(packed))")
        }
    }

    /// One transmit burst mixing single-segment frames (the burst path) and chains (the general
    /// path, one at a time) keeps their order and every payload; a frame in memory the back-end
    /// cannot see stops the burst there and counts an error.
    func testBurstMixesSinglesAndChains() throws {
        for packed in [false, true] {
            let fe = try FrontendSide()
            let (port, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: packed, queueSize: 64))
            let q = pairs[0]
            let cache = MbufCache(pool: fe.pool, size: 64)
            let sizes = [64, 9000, 60, 1518, 3000, 64, 64, 2048, 128, 5000, 64, 1000]
            let frames = sizes.enumerated().map { testFrame(size: $1, seed: UInt8($0 * 3)) }
            let pkts = UnsafeMutablePointer<Mbuf>.allocate(capacity: sizes.count)
            defer { pkts.deallocate() }
            for (k, f) in frames.enumerated() { pkts[k] = makeChain(fe.pool, f)! }
            XCTAssertEqual(q.transmitBurst(pkts, count: sizes.count, cache: cache), sizes.count)
            let got = be.receive(sizes.count)
            XCTAssertEqual(got.count, sizes.count, "packed \(packed)")
            for k in 0..<min(got.count, sizes.count) {
                XCTAssertTrue(sameFrame(got[k], frames[k]), "frame \(k) (\(sizes[k]) B, packed \(packed)): \(frameDiff(got[k], frames[k]))")
            }
            let other = try MemoryRegion.memfd(name: "not-shared", size: 1 << 20, pageSize: .small4K)
            let otherPool = try MbufPool.layOut(config: MbufPoolConfig(count: 64, cacheSize: 0), region: other, offset: 0, poolID: 9)
            pkts[0] = makeChain(fe.pool, frames[0])!
            pkts[1] = makeChain(otherPool, frames[0])!
            pkts[2] = makeChain(fe.pool, frames[0])!
            XCTAssertEqual(q.transmitBurst(pkts, count: 3, cache: cache), 1, "stops at the frame outside the pool")
            XCTAssertEqual(q.errorCount, 1)
            XCTAssertEqual(be.receive(1).count, 1)
            otherPool.free(pkts[1])
            fe.pool.free(pkts[2])
            _ = q.transmitBurst(pkts, count: 0, cache: cache)
            XCTAssertEqual(q.tx.inFlightCount, 0, "every sent frame reaped")
            cache.flush()
            port.teardown()
            XCTAssertEqual(fe.pool.inUseCount, 0, "no mbuf leaked (packed \(packed))")
        }
    }

    // MARK: bus driver and reconnect

    func testBusDriverReconnectsAfterBackendDisappears() throws {
        let fe = try FrontendSide()
        let path = "/tmp/ws-vuser-test-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let listener = listenUnix(path)
        defer { close(listener) }
        XCTAssertGreaterThanOrEqual(listener, 0, "listening on \(path)")

        let bus = try Bus(ports: [try PortSpec.parse("virtio-user:\(path),packed=1,backoff-min-ms=10")])
        bus.register(driver: VirtioUserDriver(regions: fe.regions, pool: fe.pool, arena: fe.arena), for: .virtioUser)
        bus.start()
        defer { bus.stop() }

        var backends: [InProcessBackend] = []
        for round in 0..<2 {
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            XCTAssertEqual(poll(&pfd, 1, Int32(testDeadline * 1000)), 1, "frontend connected (round \(round))")
            let be = try InProcessBackend(connectedFD: accept(listener, nil, nil))
            backends.append(be)
            addTeardownBlock { [weak be] in be?.stop() }
            XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state == .started }, "\(bus.snapshot())")
            XCTAssertTrue(be.waitForRings(2))
            let port = bus.devices[0].driverContext as! VirtioUserPort
            XCTAssertEqual(port.connections, round + 1)
            let q = port.queues[0]
            let cache = MbufCache(pool: fe.pool, size: 0)
            var m = makeChain(fe.pool, testFrame(size: 1518, seed: 9))!
            XCTAssertEqual(q.transmitBurst(&m, count: 1, cache: cache), 1)
            let got = be.receive(1).first
            XCTAssertTrue(sameFrame(got, testFrame(size: 1518, seed: 9)), frameDiff(got, testFrame(size: 1518, seed: 9)))
            be.disconnect()
            XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].reconnects == round + 1 }, "\(bus.snapshot())")
            let rec = bus.snapshot()[0]
            XCTAssertTrue(rec.reason?.contains("closed the connection") ?? false, "\(rec)")
        }
        // The frontend is reconnecting; all posted buffers of the dropped connections went back.
        XCTAssertTrue(bus.wait(timeoutSeconds: testDeadline) { $0[0].state != .started })
        XCTAssertEqual(fe.pool.inUseCount, 0, "teardown reclaimed every posted mbuf")
    }

    // MARK: in the datapath

    func testDatapathMacswapOverVirtioUser() throws {
        for packed in [false, true] {
            let fe = try FrontendSide()
            let dp = Datapath(pool: fe.pool, ports: ["vu0"], options: .init(mode: .macswap, spinBeforeNap: 100))
            let (port, be, _, pairs) = try connect(fe, VirtioUserConfig(packed: packed))
            dp.attach(slot: 0, queues: pairs)
            dp.start()
            var sent: [[UInt8]] = []
            for (k, size) in [64, 1518, 9000, 64, 1518].enumerated() {
                let f = testFrame(size: size, seed: UInt8(k))
                XCTAssertTrue(be.send(f))
                sent.append(f)
            }
            let back = be.receive(sent.count)
            XCTAssertEqual(back.count, sent.count, "macswap reflected every frame (packed \(packed))")
            for (f, r) in zip(sent, back) {
                let want = Array(f[6..<12]) + Array(f[0..<6]) + Array(f[12...])
                XCTAssertTrue(sameFrame(r, want), frameDiff(r, want))
            }
            dp.detach(slot: 0)
            dp.stop()
            let st = dp.stats()[0].total
            XCTAssertEqual(st.rxPackets, UInt64(sent.count))
            XCTAssertEqual(st.txPackets, UInt64(sent.count))
            port.teardown()
        }
    }
}
