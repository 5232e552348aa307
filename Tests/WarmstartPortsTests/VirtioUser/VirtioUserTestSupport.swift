import Foundation
import XCTest
import WarmstartMemory
import WarmstartPools
import WarmstartVhostUser
import WarmstartVhostUserWire
import WarmstartVirtio
@testable import WarmstartPorts
import WarmstartTestSupport

/// Warmstart's side: a pool region and a general-purpose region (two memfds with I/O addresses
/// like LiveMemory's), the pool — its control block and ring in a third, private memfd, as
/// LiveMemory keeps them — and the ring arena.
final class FrontendSide {
    let poolRegion: MemoryRegion
    let general: MemoryRegion
    let metadata: MemoryRegion
    let pool: MbufPool
    let arena: RingArena
    /// What the port shares with the back-end (never `metadata`).
    var regions: [MemoryRegion] { [poolRegion, general] }

    init(mbufs: Int = 4096) throws {
        let cfg = MbufPoolConfig(count: mbufs, cacheSize: 64)
        let size = MbufPoolConfig.elementBytes(cfg)
        poolRegion = try MemoryRegion.memfd(name: "vu-pool", size: size, pageSize: .small4K, ioAddress: 1 << 32)
        general = try MemoryRegion.memfd(name: "vu-general", size: 1 << 20, pageSize: .small4K,
                                         ioAddress: (1 << 32) + UInt64(size))
        metadata = try MemoryRegion.memfd(name: "vu-pool-meta", size: MbufPoolConfig.metadataBytes(cfg), pageSize: .small4K)
        pool = try MbufPool.layOut(config: cfg, region: poolRegion, offset: 0, metadata: metadata, poolID: 0)
        arena = RingArena(region: general)
    }
}

extension XCTestCase {
    /// A virtio-user port over `fe`'s memory, set up against an in-process back-end (stopped at
    /// teardown), its queue pairs published as the bus driver would.
    func connectVirtioUser(_ fe: FrontendSide, _ cfg: VirtioUserConfig,
                           backend: VhostUserBackendConfiguration = VhostUserBackendConfiguration(),
                           onMessage: ((VhostUserFrame, VhostUserOutcome, VhostUserBackendSession) -> Void)? = nil,
                           file: StaticString = #filePath, line: UInt = #line) throws
        -> (VirtioUserPort, InProcessBackend, VhostUserNegotiation, [VirtioUserQueuePair]) {
        let be = try InProcessBackend(configuration: backend, onMessage: onMessage)
        addTeardownBlock { [weak be] in be?.stop() }
        let port = try VirtioUserPort(config: cfg, regions: fe.regions, pool: fe.pool, arena: fe.arena)
        let (n, pairs) = try port.establish(fd: be.frontendFD)
        port.queues = pairs
        XCTAssertTrue(be.waitForRings(2 * cfg.queuePairs), "back-end did not start the rings", file: file, line: line)
        return (port, be, n, pairs)
    }

    /// Receives on `q` until `count` frames came or `timeout` passed.
    func receiveFrames(_ q: VirtioUserQueuePair, pool: MbufPool, cache: MbufCache, count: Int, timeout: Double = 5) -> [[UInt8]] {
        let out = UnsafeMutablePointer<Mbuf>.allocate(capacity: 32)
        defer { out.deallocate() }
        var got: [[UInt8]] = []
        let end = Date().addingTimeInterval(timeout)
        while got.count < count && Date() < end {
            let n = q.receiveBurst(into: out, max: 32, cache: cache)
            for k in 0..<n {
                got.append(copyFrame(pool, out[k]))
                cache.free(out[k])
            }
            if n == 0 { usleep(100) }
        }
        return got
    }
}
