import Foundation
import WarmstartMemory
import WarmstartPools
@testable import WarmstartSnapshot

/// A scratch directory on a given file system, removed at the end.
final class ScratchDir {
    let path: String
    init(under root: String) {
        path = "\(root)/warmstart-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        mkdir(path, 0o700)
    }
    func file(_ name: String) -> String { "\(path)/\(name)" }
    deinit {
        if let names = try? FileManager.default.contentsOfDirectory(atPath: path) {
            for n in names { unlink("\(path)/\(n)") }
        }
        rmdir(path)
    }
}

enum Fixture {
    static let small = SnapshotConfig(pool: MbufPoolConfig(count: 512), memoryBytes: nil)

    /// Flips bit `bit` of the byte at `offset` in the file, through a mapping (works on hugetlbfs too).
    static func flip(_ path: String, offset: Int, bit: Int = 0) {
        let fd = open(path, O_RDWR)
        precondition(fd >= 0)
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let p = mmap(nil, Int(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        precondition(p != MAP_FAILED)
        let b = p.advanced(by: offset).assumingMemoryBound(to: UInt8.self)
        b.pointee ^= UInt8(1 << bit)
        munmap(p, Int(st.st_size))
    }

    /// Rewrites header bytes then fixes up the CRC, to test semantic checks behind the checksum.
    static func patchHeader(_ path: String, _ body: (UnsafeMutableRawPointer) -> Void) {
        let fd = open(path, O_RDWR)
        precondition(fd >= 0)
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let p = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        body(p)
        let metaSize = Int(p.load(fromByteOffset: 72, as: UInt64.self))
        let head = Array(UnsafeRawBufferPointer(start: p, count: SnapshotHeader.size))
        let meta = Array(UnsafeRawBufferPointer(start: p + SnapshotHeader.size, count: min(metaSize, 3840)))
        let crc = SnapshotLayout.checksum(header: head, metadata: meta)
        p.storeBytes(of: crc.littleEndian, toByteOffset: SnapshotHeader.crcOffset, as: UInt32.self)
        munmap(p, 4096)
    }

    static var hugetlbfsMount: String? {
        guard let m = Hugepages.mount(for: .huge2M), access(m.path, W_OK) == 0,
              let pool = Hugepages.pool(.huge2M), pool.available >= 24 else { return nil }
        return m.path
    }
}
