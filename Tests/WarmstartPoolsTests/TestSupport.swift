import XCTest
import WarmstartMemory
@testable import WarmstartPools

/// A 4 KiB memfd region big enough for `config` at `offset` (plus `extra` bytes).
func makeRegion(_ config: MbufPoolConfig, offset: Int = 0, extra: Int = 0) throws -> MemoryRegion {
    let size = PageSize.small4K.roundUp(offset + MbufPoolConfig.bytesNeeded(config) + extra)!
    return try MemoryRegion.memfd(name: "pools-test", size: size, pageSize: .small4K)
}

/// Allocates until the pool says no; returns the indices in order.
func drain(_ pool: MbufPool) -> [UInt32] {
    var out: [UInt32] = []
    while let m = pool.alloc() { out.append(m.index) }
    return out
}

/// Asserts a header looks exactly like a fresh allocation.
func assertPristineHeader(_ m: Mbuf, pool: MbufPool, file: StaticString = #filePath, line: UInt = #line) {
    let c = pool.config
    XCTAssertEqual(Int(m.dataOffset), c.headroom, "dataOffset", file: file, line: line)
    XCTAssertEqual(m.dataLength, 0, "dataLength", file: file, line: line)
    XCTAssertEqual(m.packetLength, 0, "packetLength", file: file, line: line)
    XCTAssertEqual(m.segmentCount, 1, "segmentCount", file: file, line: line)
    XCTAssertEqual(m.port, 0, "port", file: file, line: line)
    XCTAssertEqual(m.refCount, 1, "refCount", file: file, line: line)
    XCTAssertEqual(m.poolID, pool.poolID, "poolID", file: file, line: line)
    XCTAssertEqual(m.nextIndex, MbufLayout.noNext, "next", file: file, line: line)
    XCTAssertEqual(m.offload, [], "offload", file: file, line: line)
    XCTAssertEqual(Int(m.bufferLength), c.bufferLength, "bufferLength", file: file, line: line)
    XCTAssertEqual(m.queue, 0, "queue", file: file, line: line)
    XCTAssertEqual(m.hash, 0, "hash", file: file, line: line)
    XCTAssertEqual(m.vnetHeader, VirtioNetHeader(), "vnet header", file: file, line: line)
    XCTAssertEqual(m.magic, MbufLayout.identityMagic, "magic", file: file, line: line)
    XCTAssertEqual(m.userData, 0, "userData", file: file, line: line)
}
