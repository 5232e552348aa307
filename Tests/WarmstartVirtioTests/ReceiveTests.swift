import XCTest
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio
import WarmstartVirtioDriver
import WarmstartSpec

/// Device enqueue → guest RX, both layouts, with and without mergeable buffers.
final class ReceiveTests: XCTestCase {
    /// Posts `count` RX buffers of `size` bytes; token = buffer number.
    func postRX(_ fx: Fixture, count: Int, size: Int, from: Int = 0) {
        for i in from..<(from + count) {
            XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(i, size: size), len: UInt32(size), token: UInt64(i)))
        }
        fx.driver.publish()
    }

    func enqueue(_ fx: Fixture, _ packets: [Mbuf]) -> Int {
        packets.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: $0.count) }
    }

    func reap(_ fx: Fixture) -> [DriverCompletion] {
        let n = fx.driver.reap(fx.completions, max: 4096)
        return (0..<n).map { fx.completions[$0] }
    }

    func checkNoMerge(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        let size = 10_000
        postRX(fx, count: 8, size: size)
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.flagDataValid
        h.gsoType = VirtioNetHeader.gsoTCPv6
        h.gsoSize = 1440
        let lengths = [64, 1518, 9000]
        let pk = lengths.enumerated().map { fx.makeHostPacket(length: $1, seed: UInt8($0 * 5), header: $0 == 2 ? h : nil) }
        XCTAssertEqual(enqueue(fx, pk), 3)
        let done = reap(fx)
        XCTAssertEqual(done.count, 3)
        for (i, c) in done.enumerated() {
            XCTAssertEqual(Int(c.token), i)
            XCTAssertEqual(Int(c.length), 12 + lengths[i])
            let p = fx.host(fx.rxAddress(i, size: size), size)
            var want = i == 2 ? h : VirtioNetHeader()
            want.numBuffers = 1
            XCTAssertEqual(VirtioNetHeader(loadingFrom: p), want)
            XCTAssertEqual(Array(UnsafeRawBufferPointer(start: p + 12, count: lengths[i])),
                           Fixture.expected(length: lengths[i], seed: UInt8(i * 5)))
        }
        pk.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.device.counters.packets, 3)
        XCTAssertEqual(fx.device.counters.dropped, 0)
    }

    func testRXSplit() throws { try checkNoMerge(.split) }
    func testRXPacked() throws { try checkNoMerge(.packed) }

    /// Without MRG_RXBUF a packet that does not fit one buffer is dropped, the buffer returned
    /// with length 0, and the next packet takes the next buffer.
    func checkTooLarge(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout)
        postRX(fx, count: 4, size: 2048)
        let pk = [fx.makeHostPacket(length: 9000, seed: 1), fx.makeHostPacket(length: 100, seed: 2)]
        XCTAssertEqual(enqueue(fx, pk), 2)
        let done = reap(fx)
        XCTAssertEqual(done.map { $0.length }, [0, 112])
        XCTAssertEqual(fx.device.counters.count(.packetTooLarge), 1)
        XCTAssertEqual(fx.device.counters.dropped, 1)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: fx.host(fx.rxAddress(1, size: 2048)) + 12, count: 100)),
                       Fixture.expected(length: 100, seed: 2))
        pk.forEach { fx.hostPool.free($0) }
    }

    func testTooLargeSplit() throws { try checkTooLarge(.split) }
    func testTooLargePacked() throws { try checkTooLarge(.packed) }

    /// MRG_RXBUF: 9000 B into 2048 B buffers takes 5 buffers, num_buffers = 5.
    func checkMergeable(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, features: [.version1, .mrgRxbuf])
        postRX(fx, count: 12, size: 2048)
        let pk = [fx.makeHostPacket(length: 9000, seed: 9), fx.makeHostPacket(length: 64, seed: 3),
                  fx.makeHostPacket(length: 2036, seed: 4), fx.makeHostPacket(length: 2037, seed: 5)]
        XCTAssertEqual(enqueue(fx, pk), 4)
        let done = reap(fx)
        XCTAssertEqual(done.map { Int($0.token) }, Array(0..<9))
        XCTAssertEqual(done.map { $0.length }, [2048, 2048, 2048, 2048, 820, 76, 2048, 2048, 1])
        // Reassemble packet 0 from its five buffers.
        var bytes: [UInt8] = []
        for i in 0..<5 {
            let p = fx.host(fx.rxAddress(i, size: 2048), 2048)
            bytes += Array(UnsafeRawBufferPointer(start: p, count: Int(done[i].length)))
        }
        XCTAssertEqual(VirtioNetHeader(loadingFrom: bytes).numBuffers, 5)
        XCTAssertEqual(Array(bytes[12...]), Fixture.expected(length: 9000, seed: 9))
        XCTAssertEqual(VirtioNetHeader(loadingFrom: fx.host(fx.rxAddress(5, size: 2048))).numBuffers, 1)
        XCTAssertEqual(VirtioNetHeader(loadingFrom: fx.host(fx.rxAddress(7, size: 2048))).numBuffers, 2)
        XCTAssertEqual(fx.device.counters.packets, 4)
        pk.forEach { fx.hostPool.free($0) }
    }

    func testMergeableSplit() throws { try checkMergeable(.split) }
    func testMergeablePacked() throws { try checkMergeable(.packed) }

    /// No buffers: nothing handled; a packet needing more buffers than posted waits whole.
    func checkNoRoom(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, features: [.version1, .mrgRxbuf])
        let pk = [fx.makeHostPacket(length: 100, seed: 1), fx.makeHostPacket(length: 9000, seed: 2)]
        XCTAssertEqual(enqueue(fx, pk), 0)
        postRX(fx, count: 3, size: 2048)
        XCTAssertEqual(enqueue(fx, pk), 1) // the 9000 B packet needs 5 buffers, only 2 left
        XCTAssertEqual(reap(fx).count, 1)
        postRX(fx, count: 3, size: 2048, from: 3)
        XCTAssertEqual(enqueue(fx, Array(pk[1...])), 1)
        let done = reap(fx)
        XCTAssertEqual(done.map { Int($0.token) }, [1, 2, 3, 4, 5])
        XCTAssertEqual(fx.device.counters.dropped, 0)
        pk.forEach { fx.hostPool.free($0) }
    }

    func testNoRoomSplit() throws { try checkNoRoom(.split) }
    func testNoRoomPacked() throws { try checkNoRoom(.packed) }

    /// Ten times the ring through RX, buffers recycled as they complete.
    func checkWrap(_ layout: VirtqueueLayout) throws {
        let size = 64
        let fx = try Fixture(layout: layout, size: size, features: [.version1, .mrgRxbuf])
        postRX(fx, count: size, size: 2048)
        var sent = 0
        var got = 0
        var flips = 0
        var lastWrap = fx.device.usedWrapCounter
        let pk = fx.makeHostPacket(length: 3000, seed: 0) // 2 buffers each
        let small = fx.makeHostPacket(length: 200, seed: 7)
        while got < 10 * size {
            let batch = [pk, small, pk]
            let n = enqueue(fx, batch)
            sent += n
            for c in reap(fx) {
                got += 1
                XCTAssertEqual(c.length == 0, false)
                XCTAssertNotNil(fx.driver.addRX(addr: fx.rxAddress(Int(c.token), size: 2048), len: 2048, token: c.token))
            }
            fx.driver.publish()
            if fx.device.usedWrapCounter != lastWrap { flips += 1; lastWrap = fx.device.usedWrapCounter }
        }
        if layout == .packed { XCTAssertGreaterThanOrEqual(flips, 9) }
        XCTAssertEqual(fx.device.counters.dropped, 0)
        XCTAssertEqual(fx.device.counters.packets, UInt64(sent))
        fx.hostPool.free(pk)
        fx.hostPool.free(small)
    }

    func testRXWrapSplit() throws { try checkWrap(.split) }
    func testRXWrapPacked() throws { try checkWrap(.packed) }
}

/// The driver's mbuf RX helpers: guest-pool mbufs posted as receive buffers, completed into
/// packets (a mergeable packet chained from its num_buffers buffers).
final class DriverReceiveTests: XCTestCase {
    func checkMbufRX(_ layout: VirtqueueLayout) throws {
        let fx = try Fixture(layout: layout, features: [.version1, .mrgRxbuf])
        var posted: [Mbuf] = []
        for _ in 0..<8 {
            let m = fx.guestPool.alloc()!
            XCTAssertNotNil(fx.driver.addRX(m, memory: fx.map))
            posted.append(m)
        }
        fx.driver.publish()
        var h = VirtioNetHeader()
        h.flags = VirtioNetHeader.flagDataValid
        let pk = [fx.makeHostPacket(length: 9000, seed: 4, header: h), fx.makeHostPacket(length: 60, seed: 5)]
        XCTAssertEqual(pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 2) }, 2)
        let n = fx.driver.reap(fx.completions, max: 16)
        let done = (0..<n).map { fx.completions[$0] }
        // Packet 1: head + (num_buffers - 1) continuation buffers, chained.
        let head = fx.guestPool.mbuf(at: UInt32(done[0].token))!
        let nb = fx.driver.finishRX(head, usedLength: done[0].length)
        XCTAssertEqual(nb, 5)
        for k in 1..<Int(nb!) {
            let seg = fx.guestPool.mbuf(at: UInt32(done[k].token))!
            XCTAssertEqual(fx.driver.finishRX(seg, usedLength: done[k].length, first: false), 0)
            XCTAssertTrue(fx.guestPool.append(seg, to: head))
        }
        XCTAssertEqual(Int(head.packetLength), 9000)
        XCTAssertEqual(fx.bytes(of: head, pool: fx.guestPool), Fixture.expected(length: 9000, seed: 4))
        XCTAssertTrue(head.offload.contains(.dataValid))
        // Packet 2: one buffer.
        let second = fx.guestPool.mbuf(at: UInt32(done[Int(nb!)].token))!
        XCTAssertEqual(fx.driver.finishRX(second, usedLength: done[Int(nb!)].length), 1)
        XCTAssertEqual(fx.bytes(of: second, pool: fx.guestPool), Fixture.expected(length: 60, seed: 5))
        fx.guestPool.free(head)
        fx.guestPool.free(second)
        posted[(Int(nb!) + 1)...].forEach { fx.guestPool.free($0) }
        pk.forEach { fx.hostPool.free($0) }
        XCTAssertEqual(fx.guestPool.inUseCount, 0)
    }

    func testMbufRXSplit() throws { try checkMbufRX(.split) }
    func testMbufRXPacked() throws { try checkMbufRX(.packed) }
}
