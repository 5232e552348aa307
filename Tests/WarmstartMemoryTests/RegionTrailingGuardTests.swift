import Foundation
import XCTest
import SystemPackage
@testable import WarmstartMemory

/// Issue 12: pool elements live in regions a virtio-user back-end shares and may rewrite. Every
/// address formed from an mbuf header is the element's start + 64 + a 16-bit offset + a 16-bit
/// length, so every region must be followed, at adjacent addresses, by private anonymous memory
/// of ours covering that reach from its last byte: a hostile header then reads or writes scratch,
/// never faults and never touches another mapping of the process. Before the guard the address
/// right after a region was unmapped or another mapping (another region, a library, a heap).
final class RegionTrailingGuardTests: XCTestCase {
    /// The furthest byte past an element's start that a header can name: 64 + 65535 + 65535.
    static let reach = 64 + 0xFFFF + 0xFFFF

    struct Mapping { let start: UInt; let end: UInt; let perms: String; let inode: String; let path: String }

    static func mappings() throws -> [Mapping] {
        // Read whole with read(2): a /proc file reports size 0.
        let fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 5 else { return nil }
            let r = f[0].split(separator: "-")
            guard r.count == 2, let s = UInt(r[0], radix: 16), let e = UInt(r[1], radix: 16) else { return nil }
            return Mapping(start: s, end: e, perms: String(f[1]), inode: String(f[4]),
                           path: f.count > 5 ? f[5...].joined(separator: " ") : "")
        }
    }

    func assertGuarded(_ region: MemoryRegion, file: StaticString = #filePath, line: UInt = #line) throws {
        let base = UInt(bitPattern: region.base), end = base + UInt(region.size)
        let maps = try Self.mappings()
        XCTAssertEqual(base % UInt(region.pageSize.bytes), 0, "\(region.name): base not aligned to its pages", file: file, line: line)
        let own = maps.filter { $0.start >= base && $0.start < end }
        XCTAssertEqual(own.map(\.start).min(), base, "\(region.name): no mapping at the region's base: \(maps.filter { $0.end > base - 0x100000 && $0.start < end + 0x100000 })", file: file, line: line)
        XCTAssertTrue(own.allSatisfy { $0.perms.hasSuffix("s") }, "\(region.name): \(own)", file: file, line: line)
        // Private anonymous memory from the region's end for at least `reach` bytes (the
        // kernel may merge it with neighbouring anonymous memory; it must start right there).
        guard let pad = maps.first(where: { $0.start == end }) else {
            return XCTFail("\(region.name): nothing mapped right after the region's end 0x\(String(end, radix: 16))", file: file, line: line)
        }
        guard pad.perms == "rw-p", pad.inode == "0", pad.end - end >= UInt(Self.reach) else {
            return XCTFail("\(region.name): the mapping after the region is \(pad), not \(Self.reach) bytes of private anonymous memory",
                           file: file, line: line)
        }
        // And it is usable (touched only once known to be ours): the furthest byte a hostile header can name from the last 64 bytes.
        let last = region.base + region.size - 64
        (last + Self.reach - 1).storeBytes(of: 0xA5, as: UInt8.self)
        XCTAssertEqual((last + Self.reach - 1).load(as: UInt8.self), 0xA5, file: file, line: line)
    }

    func testMemfdRegionIsFollowedByItsGuard() throws {
        for size in [4096, 64 << 10, 3 << 20] {
            try assertGuarded(try MemoryRegion.memfd(name: "guard-\(size)", size: size, pageSize: .small4K))
        }
    }

    func testFileRegionAtAnOffsetIsFollowedByItsGuard() throws {
        let path = "/tmp/ws-guard-\(getpid())"
        let fd = try FileDescriptor.open(path, .readWrite, options: [.create, .exclusiveCreate], permissions: [.ownerReadWrite])
        defer { unlink(path) }
        XCTAssertEqual(ftruncate(fd.rawValue, 1 << 20), 0)
        let r = try MemoryRegion(name: "file", fd: fd, fileOffset: 256 << 10, size: 512 << 10, pageSize: .small4K,
                                 backing: .file, ownsFD: true)
        try assertGuarded(r)
        XCTAssertEqual(r.base.load(as: UInt8.self), 0)
    }

    func testHugepageRegionIsAlignedAndFollowedByItsGuard() throws {
        guard let pool = Hugepages.pool(.huge2M), pool.available >= 1 else { throw XCTSkip("needs a free 2M hugepage") }
        let r = try MemoryRegion.memfd(name: "guard-huge", size: 2 << 20, pageSize: .huge2M)
        try assertGuarded(r)
    }
}
