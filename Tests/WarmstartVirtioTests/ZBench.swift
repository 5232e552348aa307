import XCTest
import CWarmstartShim
import WarmstartMemory
import WarmstartPools
@testable import WarmstartVirtio

// THROWAWAY benchmark (not committed).
final class ZBench: XCTestCase {
    func benchDequeue(_ layout: VirtqueueLayout, _ len: Int, bursts: Int) throws -> Double {
        let fx = try Fixture(layout: layout, size: 256, features: [.version1, .mergeableRxBuffers], poolCount: 2048)
        let cache = MbufCache(pool: fx.hostPool, size: 256)
        // 32 guest packets, header pre-written in headroom; their DriverBuffers precomputed.
        var bufs: [DriverBuffer] = []
        for i in 0..<32 {
            let m = fx.makeGuestPacket(length: len, seed: UInt8(i))
            VirtioNetHeader().store(to: m.data - 12)
            bufs.append(DriverBuffer(addr: fx.map.guestAddress(of: m.data - 12)!, len: UInt32(len + 12), writable: false))
        }
        var total: UInt64 = 0
        var packets = 0
        for b in 0..<(bursts + 100) {
            bufs.withUnsafeBufferPointer { p in for i in 0..<32 { fx.driver.add(p.baseAddress! + i, count: 1, token: UInt64(i) | 1 << 40) } }
            fx.driver.publish()
            let t0 = ws_monotonic_ns()
            let n = fx.device.dequeueBurst(pool: cache, into: fx.out, maxCount: 32)
            let t1 = ws_monotonic_ns()
            precondition(n == 32)
            if b >= 100 { total += t1 - t0; packets += n }
            cache.freeBulk(fx.out, count: n)
            _ = fx.driver.reap(fx.completions, max: 64)
        }
        return Double(total) / Double(packets)
    }

    func benchEnqueue(_ layout: VirtqueueLayout, _ len: Int, bursts: Int, mrg: Bool) throws -> Double {
        var f: VirtioFeatures = [.version1]
        if mrg { f.insert(.mergeableRxBuffers) }
        let fx = try Fixture(layout: layout, size: 256, features: f, poolCount: 2048)
        let pk = (0..<32).map { fx.makeHostPacket(length: len, seed: UInt8($0)) }
        var total: UInt64 = 0
        var packets = 0
        for b in 0..<(bursts + 100) {
            for i in 0..<32 { fx.driver.addRX(addr: fx.rxAddress(i, size: 2048), len: 2048, token: UInt64(i)) }
            fx.driver.publish()
            let t0 = ws_monotonic_ns()
            let n = pk.withUnsafeBufferPointer { fx.device.enqueueBurst(pool: fx.hostPool, $0.baseAddress!, count: 32) }
            let t1 = ws_monotonic_ns()
            precondition(n == 32)
            if b >= 100 { total += t1 - t0; packets += n }
            _ = fx.driver.reap(fx.completions, max: 64)
        }
        precondition(fx.device.counters.dropped == 0)
        return Double(total) / Double(packets)
    }

    func testBench() throws {
        let bursts = Int(getenv("WS_BURSTS").map { String(cString: $0) } ?? "100000") ?? 100000
        let only = getenv("WS_CASE").map { String(cString: $0) }
        for layout in [VirtqueueLayout.split, .packed] {
            for len in [64, 1518] {
                if let only, only != "\(layout)-\(len)" { continue }
                let d = try benchDequeue(layout, len, bursts: bursts)
                let e = try benchEnqueue(layout, len, bursts: bursts, mrg: false)
                let em = try benchEnqueue(layout, len, bursts: bursts, mrg: true)
                print("BENCH \(layout) \(len)B: dequeue \(String(format: "%.1f", d)) ns/pkt, enqueue \(String(format: "%.1f", e)) ns/pkt, enqueue(mrg) \(String(format: "%.1f", em)) ns/pkt")
            }
        }
    }
}
