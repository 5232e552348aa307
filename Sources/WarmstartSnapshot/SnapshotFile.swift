import CWarmstartShim
import SystemPackage
import WarmstartMemory
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// An opened, validated snapshot file: the small part (header and metadata) checked in full before
/// anything is mapped; the large part (region contents) mapped, never parsed.
public final class SnapshotFile: @unchecked Sendable {
    public let path: String
    public let fd: FileDescriptor
    public let header: SnapshotHeader
    public let layout: SnapshotLayout
    public let filesystem: FileSystemKind
    /// Region contents live in the file (hugetlbfs or tmpfs); restore maps them in place.
    public var isResident: Bool { header.flags.contains(.resident) }

    init(path: String, fd: FileDescriptor, header: SnapshotHeader, layout: SnapshotLayout, filesystem: FileSystemKind) {
        self.path = path
        self.fd = fd
        self.header = header
        self.layout = layout
        self.filesystem = filesystem
    }

    deinit { try? fd.close() }

    /// Opens `path` and checks, in this order: not a symbolic link (O_NOFOLLOW); a regular file of
    /// this user's that nobody else can write (`checkOwnership`, on the opened descriptor, so the
    /// file checked is the file used); magic; version; header size; CRC-32C over header and
    /// metadata; metadata shape; file size; page size against what the file system gives; region
    /// and pool geometry. Any failure throws a `SnapshotError` naming the file.
    public static func open(path: String) throws -> SnapshotFile {
        let fd: FileDescriptor
        do {
            // The default snapshot lives in /dev/shm, where anyone can plant a link to a file of ours.
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec, .noFollow])
        } catch let e as Errno {
            throw openFailure(path: path, e)
        }
        do {
            var st = stat()
            guard fstat(fd.rawValue, &st) == 0 else {
                throw SnapshotError.cannotOpen(path: path, reason: "fstat: \(Errno(rawValue: errno))")
            }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw SnapshotError.cannotOpen(path: path, reason: "not a regular file") }
            try checkOwnership(st, path: path)
            let fileSize = Int(st.st_size)
            let fsKind: FileSystemKind, fsPage: Int
            do { (fsKind, fsPage) = try FileSystemKind.of(fd: fd.rawValue, name: path) } catch let e as MemoryError {
                throw SnapshotError.memory(path: path, e)
            }
            let head = try readBytes(fd: fd, offset: 0, count: min(fileSize, 4096), path: path)
            let header = try SnapshotHeader.decode(head, path: path)
            guard header.metadataOffset == UInt64(SnapshotHeader.size),
                  header.metadataSize <= UInt64(4096 - SnapshotHeader.size) else {
                throw SnapshotError.corruptMetadata(path: path, reason: "metadata at \(header.metadataOffset)+\(header.metadataSize) does not fit the header page")
            }
            let metaEnd = SnapshotHeader.size + Int(header.metadataSize)
            guard head.count >= metaEnd else { throw SnapshotError.truncated(path: path, size: fileSize, expected: metaEnd) }
            let metadata = Array(head[SnapshotHeader.size..<metaEnd])
            let computed = SnapshotLayout.checksum(header: head, metadata: metadata)
            guard computed == header.crc else {
                throw SnapshotError.checksumMismatch(path: path, stored: header.crc, computed: computed)
            }
            guard UInt64(fileSize) == header.fileSize else {
                throw SnapshotError.truncated(path: path, size: fileSize, expected: Int(truncatingIfNeeded: header.fileSize))
            }
            let layout = try SnapshotLayout.decode(metadata: metadata, header: header, path: path)
            if header.flags.contains(.resident) || fsKind == .hugetlbfs {
                let gives = fsKind == .hugetlbfs ? fsPage : PageSize.small4K.bytes
                guard gives == header.pageSize else {
                    throw SnapshotError.pageSizeUnavailable(path: path, recorded: header.pageSize, filesystemGives: gives)
                }
            }
            try layout.validate(path: path, header: header)
            return SnapshotFile(path: path, fd: fd, header: header, layout: layout, filesystem: fsKind)
        } catch {
            try? fd.close()
            throw error
        }
    }

    static func openFailure(path: String, _ e: Errno) -> SnapshotError {
        switch e {
        case .noSuchFileOrDirectory:
            return .cannotOpen(path: path, reason: "no such file")
        case .tooManySymbolicLinkLevels:
            return .unsafeFile(path: path, reason: "is a symbolic link, and a snapshot is never opened through one "
                               + "(anyone may plant one in a shared directory): remove it or pass --snapshot with the file itself")
        case .permissionDenied:
            return .cannotOpen(path: path, reason: "permission denied")
        default:
            return .cannotOpen(path: path, reason: "\(e)")
        }
    }

    /// A snapshot is mapped shared and its contents trusted once checked, so it must be this user's
    /// own file and writable by nobody else: in a directory every user can write (/dev/shm, the
    /// default without hugepages) another user could have put it there, or could change it later.
    static func checkOwnership(_ st: stat, path: String) throws {
        let me = geteuid()
        guard st.st_uid == me else {
            throw SnapshotError.unsafeFile(path: path, reason: "is owned by uid \(st.st_uid), not by you (uid \(me)): "
                                           + "remove it or pass --snapshot PATH in a directory only you can write")
        }
        let mode = st.st_mode & 0o7777
        guard mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw SnapshotError.unsafeFile(path: path, reason: "is writable by group or others (mode 0\(String(mode, radix: 8))): "
                                           + "'chmod 600 \(path)' if it is yours to trust, else remove it")
        }
    }

    static func readBytes(fd: FileDescriptor, offset: Int, count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SnapshotError.cannotOpen(path: path, reason: "read: \(Errno(rawValue: errno))")
            }
            if n == 0 { break }
            done += n
        }
        out.removeLast(count - done)
        return out
    }

    /// Refuses a snapshot whose layout differs from what this run asks for.
    public func check(against config: SnapshotConfig) throws {
        guard let p = layout.pools.first else {
            throw SnapshotError.corruptMetadata(path: path, reason: "no mbuf pool")
        }
        func mismatch(_ field: String, _ s: Int, _ r: Int) -> SnapshotError {
            .layoutMismatch(path: path, field: field, snapshot: "\(s)", requested: "\(r)")
        }
        if p.config.count != config.pool.count { throw mismatch("mbufs", p.config.count, config.pool.count) }
        if p.config.dataRoom != config.pool.dataRoom { throw mismatch("data room", p.config.dataRoom, config.pool.dataRoom) }
        if p.config.headroom != config.pool.headroom { throw mismatch("headroom", p.config.headroom, config.pool.headroom) }
        if p.config.cacheSize != config.pool.cacheSize { throw mismatch("cache size", p.config.cacheSize, config.pool.cacheSize) }
        if let m = config.memoryBytes, UInt64(m) != layout.memoryBytes {
            throw mismatch("memory", Int(layout.memoryBytes), m)
        }
    }

    /// Maps every region of a resident snapshot in place (MAP_SHARED on the snapshot's fd).
    public func mapRegions(populate: Bool = false) throws -> [MemoryRegion] {
        let backing: MemoryBacking = filesystem == .hugetlbfs ? .hugetlbfs : .file
        do {
            return try layout.regions.map {
                try MemoryRegion(name: $0.name, fd: fd, fileOffset: Int($0.fileOffset), size: Int($0.size),
                                 pageSize: layout.pageSize, backing: backing, ioAddress: $0.ioAddress,
                                 ownsFD: false, populate: populate)
            }
        } catch let e as MemoryError {
            throw SnapshotError.memory(path: path, e)
        }
    }
}
