import XCTest
import Foundation
@testable import WarmstartPools

final class MbufPoolConfigTests: XCTestCase {
    func testDefaultsAndElementSize() throws {
        let c = MbufPoolConfig(count: 1000)
        XCTAssertEqual(c.headroom, 128)
        XCTAssertEqual(c.dataRoom, 2048)
        XCTAssertEqual(c.cacheSize, 256)
        XCTAssertEqual(c.elementSize, 2240)
        XCTAssertEqual(c.bufferLength, 2176)
        XCTAssertEqual(c.ringCapacity, 1024)
        XCTAssertNoThrow(try c.validate())
        // Rounded up to a cache line.
        XCTAssertEqual(MbufPoolConfig(count: 1, headroom: 0, dataRoom: 1).elementSize, 128)
        XCTAssertEqual(MbufPoolConfig(count: 1, headroom: 0, dataRoom: 64).elementSize, 128)
        XCTAssertEqual(MbufPoolConfig(count: 1, headroom: 0, dataRoom: 65).elementSize, 192)
    }

    func testRingCapacityIsNextPowerOfTwo() {
        XCTAssertEqual(MbufPoolConfig(count: 1).ringCapacity, 1)
        XCTAssertEqual(MbufPoolConfig(count: 2).ringCapacity, 2)
        XCTAssertEqual(MbufPoolConfig(count: 3).ringCapacity, 4)
        XCTAssertEqual(MbufPoolConfig(count: 1024).ringCapacity, 1024)
        XCTAssertEqual(MbufPoolConfig(count: 1025).ringCapacity, 2048)
        XCTAssertEqual(MbufPoolConfig(count: 1_000_000).ringCapacity, 1 << 20)
    }

    func testBytesNeeded() {
        // 448 control + 1024 × 4 ring = 4544 → elements at 8192; 1000 × 2240 after that, page rounded.
        let c = MbufPoolConfig(count: 1000)
        let g = PoolControl.Geometry(c)
        XCTAssertEqual(g.ringOffset, 448)
        XCTAssertEqual(g.ringOffset % 64, 0)
        XCTAssertEqual(g.elementsOffset, 8192)
        XCTAssertEqual(MbufPoolConfig.bytesNeeded(c), (8192 + 2_240_000 + 4095) / 4096 * 4096)
        // Small pool: control block and ring share the first page.
        let small = MbufPoolConfig(count: 8, headroom: 0, dataRoom: 64)
        XCTAssertEqual(PoolControl.Geometry(small).elementsOffset, 4096)
        XCTAssertEqual(MbufPoolConfig.bytesNeeded(small), 8192)
        for n in [1, 7, 100, 4097, 65_536, 1_000_000] {
            let cfg = MbufPoolConfig(count: n, dataRoom: 1500)
            let geo = PoolControl.Geometry(cfg)
            XCTAssertEqual(geo.elementsOffset % 4096, 0)
            XCTAssertGreaterThanOrEqual(geo.elementsOffset, geo.ringOffset + cfg.ringCapacity * 4)
            XCTAssertEqual(MbufPoolConfig.bytesNeeded(cfg) % 4096, 0)
            XCTAssertGreaterThanOrEqual(MbufPoolConfig.bytesNeeded(cfg), geo.elementsOffset + n * cfg.elementSize)
        }
    }

    func testValidationNamesTheField() {
        func message(_ c: MbufPoolConfig) -> String {
            do { try c.validate(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message(MbufPoolConfig(count: 0)).contains("count = 0"))
        XCTAssertTrue(message(MbufPoolConfig(count: Int(UInt32.max))).contains("count"))
        XCTAssertEqual(message(MbufPoolConfig(count: Int(UInt32.max) - 1)), "")
        XCTAssertTrue(message(MbufPoolConfig(count: 1, headroom: -1)).contains("headroom = -1"))
        XCTAssertTrue(message(MbufPoolConfig(count: 1, dataRoom: 0)).contains("dataRoom = 0"))
        XCTAssertTrue(message(MbufPoolConfig(count: 1, headroom: 1000, dataRoom: 64_536))
            .contains("headroom + dataRoom = 65536"))
        XCTAssertEqual(message(MbufPoolConfig(count: 1, headroom: 1000, dataRoom: 64_535)), "")
        XCTAssertTrue(message(MbufPoolConfig(count: 1, cacheSize: 513)).contains("cacheSize = 513"))
        XCTAssertTrue(message(MbufPoolConfig(count: 1, cacheSize: -1)).contains("cacheSize"))
        XCTAssertEqual(message(MbufPoolConfig(count: 1, cacheSize: 512)), "")
    }

    func testCodableRoundTrip() throws {
        let c = MbufPoolConfig(count: 4096, headroom: 64, dataRoom: 9000, cacheSize: 128)
        let data = try JSONEncoder().encode(c)
        XCTAssertEqual(try JSONDecoder().decode(MbufPoolConfig.self, from: data), c)
    }

    func testPlacementErrors() throws {
        let c = MbufPoolConfig(count: 100, cacheSize: 8)
        let region = try makeRegion(c)
        XCTAssertThrowsError(try MbufPool.layOut(config: c, region: region, offset: 4096, poolID: 3)) { error in
            XCTAssertEqual(error as? PoolError, .regionTooSmall(poolID: 3, needed: MbufPoolConfig.bytesNeeded(c),
                                                                offset: 4096, regionSize: region.size))
            XCTAssertTrue("\(error)".contains("needed \(MbufPoolConfig.bytesNeeded(c)) bytes at offset 4096"))
            XCTAssertTrue("\(error)".contains("region has \(region.size) bytes"))
        }
        XCTAssertThrowsError(try MbufPool.layOut(config: c, region: region, offset: 64, poolID: 3)) { error in
            XCTAssertEqual(error as? PoolError, .misalignedOffset(poolID: 3, offset: 64, alignment: 4096))
        }
        XCTAssertThrowsError(try MbufPool.restore(config: MbufPoolConfig(count: 0), region: region, offset: 0,
                                                  poolID: 3))
        XCTAssertNoThrow(try MbufPool.layOut(config: c, region: region, offset: 0, poolID: 3))
    }
}
