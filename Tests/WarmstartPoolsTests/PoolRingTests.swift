import XCTest
import Foundation
@testable import WarmstartPools

/// A stand-alone ring in 64-byte aligned heap memory.
final class RingBox: @unchecked Sendable {
    let memory: UnsafeMutableRawPointer
    let ring: PoolRing
    init(capacity: Int, mode: PoolRing.Mode) {
        memory = .allocate(byteCount: PoolRing.bytesNeeded(capacity: capacity), alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0xEE, count: PoolRing.bytesNeeded(capacity: capacity))
        ring = PoolRing(memory: memory, capacity: capacity, mode: mode)
        ring.reset()
    }
    deinit { memory.deallocate() }
}

/// Runs `body(i)` on `n` threads at once and waits for all of them.
func runThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        let t = Thread {
            body(i)
            group.leave()
        }
        t.start()
    }
    group.wait()
}

final class PoolRingTests: XCTestCase {
    func testBulkIsAllOrNothingAndBurstTakesWhatFits() {
        for mode in [PoolRing.Mode.mpmc, .spsc, .mpsc, .spmc] {
            let box = RingBox(capacity: 8, mode: mode)
            let r = box.ring
            var input: [UInt32] = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
            var output = [UInt32](repeating: 0, count: 10)
            XCTAssertEqual(r.count, 0)
            XCTAssertFalse(r.enqueueBulk(&input, count: 9), "\(mode)")
            XCTAssertEqual(r.count, 0)
            XCTAssertTrue(r.enqueueBulk(&input, count: 5))
            XCTAssertEqual(r.count, 5)
            XCTAssertEqual(r.freeCount, 3)
            XCTAssertEqual(input.withUnsafeBufferPointer { r.enqueueBurst($0.baseAddress! + 5, count: 5) }, 3)
            XCTAssertEqual(r.count, 8)
            XCTAssertFalse(r.dequeueBulk(&output, count: 9))
            XCTAssertTrue(r.dequeueBulk(&output, count: 3))
            XCTAssertEqual(Array(output[0..<3]), [10, 11, 12])
            XCTAssertEqual(r.dequeueBurst(&output, max: 10), 5)
            XCTAssertEqual(Array(output[0..<5]), [13, 14, 15, 16, 17])
            XCTAssertEqual(r.dequeueBurst(&output, max: 10), 0)
            XCTAssertFalse(r.dequeueBulk(&output, count: 1))
        }
    }

    func testWrapsAroundManyTimes() {
        let box = RingBox(capacity: 16, mode: .spsc)
        var next: UInt32 = 0, expect: UInt32 = 0
        var buf = [UInt32](repeating: 0, count: 16)
        for round in 0..<10_000 {
            let n = round % 13 + 1
            for i in 0..<n { buf[i] = next &+ UInt32(i) }
            let put = box.ring.enqueueBurst(&buf, count: n)
            next &+= UInt32(put)
            let got = box.ring.dequeueBurst(&buf, max: (round * 7) % 16 + 1)
            for i in 0..<got {
                XCTAssertEqual(buf[i], expect)
                expect &+= 1
            }
        }
        let rest = box.ring.dequeueBurst(&buf, max: 16)
        for i in 0..<rest { XCTAssertEqual(buf[i], expect &+ UInt32(i)) }
        XCTAssertEqual(expect &+ UInt32(rest), next)
    }

    /// One producer thread, one consumer thread: the consumer sees exactly the produced sequence.
    func testSingleProducerSingleConsumerAcrossThreads() {
        let box = RingBox(capacity: 64, mode: .spsc)
        let total: UInt32 = 300_000
        let errors = ManagedCounter()
        runThreads(2) { role in
            var buf = [UInt32](repeating: 0, count: 32)
            if role == 0 {
                var next: UInt32 = 0
                while next < total {
                    let n = Int(min(UInt32(1 + next % 31), total - next))
                    for i in 0..<n { buf[i] = next + UInt32(i) }
                    let put = box.ring.enqueueBurst(&buf, count: n)
                    next += UInt32(put)
                }
            } else {
                var expect: UInt32 = 0
                while expect < total {
                    let got = box.ring.dequeueBurst(&buf, max: 32)
                    for i in 0..<got where buf[i] != expect + UInt32(i) { errors.add() }
                    expect += UInt32(got)
                }
            }
        }
        XCTAssertEqual(errors.value, 0)
        XCTAssertEqual(box.ring.count, 0)
    }

    /// Two producers and two consumers: every value comes out exactly once.
    func testMultiProducerMultiConsumerAcrossThreads() {
        let box = RingBox(capacity: 128, mode: .mpmc)
        let perProducer = 200_000
        let seen = UnsafeMutablePointer<UInt8>.allocate(capacity: 2 * perProducer)
        seen.initialize(repeating: 0, count: 2 * perProducer)
        defer { seen.deallocate() }
        let consumed = ManagedCounter(), duplicates = ManagedCounter()
        let seenAddress = UInt(bitPattern: seen)
        runThreads(4) { role in
            let seen = UnsafeMutablePointer<UInt8>(bitPattern: seenAddress)!
            var buf = [UInt32](repeating: 0, count: 16)
            if role < 2 {
                var next = 0
                while next < perProducer {
                    let n = min(1 + next % 16, perProducer - next)
                    for i in 0..<n { buf[i] = UInt32(role * perProducer + next + i) }
                    if box.ring.enqueueBulk(&buf, count: n) { next += n } else { sched_yield() }
                }
            } else {
                while consumed.value < 2 * perProducer {
                    let got = box.ring.dequeueBurst(&buf, max: 1 + role * 5)
                    if got == 0 { sched_yield(); continue }
                    for i in 0..<got {
                        if seen[Int(buf[i])] != 0 { duplicates.add() }
                        seen[Int(buf[i])] = 1
                    }
                    consumed.add(got)
                }
            }
        }
        XCTAssertEqual(duplicates.value, 0)
        XCTAssertEqual(consumed.value, 2 * perProducer)
        XCTAssertEqual((0..<(2 * perProducer)).filter { seen[$0] == 0 }.count, 0)
    }
}

/// A lock-protected counter for test threads.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ k: Int = 1) { lock.lock(); n += k; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
