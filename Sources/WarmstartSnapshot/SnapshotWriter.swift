import CWarmstartShim
import SystemPackage
import WarmstartMemory
import WarmstartPools
#if canImport(Glibc)
import Glibc
#endif

/// A named, timed step reported to whoever runs the boot: (phase, start ns, end ns, work done).
public typealias PhaseSink = (_ name: String, _ startNs: UInt64, _ endNs: UInt64, _ work: String) -> Void

/// Creates snapshot files.
public enum SnapshotWriter {
    /// Lays out regions and pools once and persists them at `path`.
    ///
    /// On hugetlbfs (or tmpfs) the snapshot is resident: region contents live in the file, every page
    /// is faulted in (and zeroed by the kernel) now, once, and stays allocated between runs. On any
    /// other file system the snapshot is a disk snapshot: header and metadata only, the region
    /// extents left as holes, because nothing in them needs to survive (see Docs/MEMORY.md).
    /// The file appears atomically (written beside `path`, then renamed).
    @discardableResult
    public static func create(path: String, config: SnapshotConfig, pageSize requested: PageSize? = nil,
                              createdUnixSeconds: UInt64 = 0, phases: PhaseSink? = nil) throws -> SnapshotLayout {
        let dir = parentDirectory(of: path)
        let fs: (kind: FileSystemKind, pageBytes: Int)
        do { fs = try FileSystemKind.of(path: dir) } catch {
            throw SnapshotError.cannotCreate(path: path, reason: "directory \(dir): \(error)")
        }
        let fsPage = fs.kind == .hugetlbfs ? fs.pageBytes : PageSize.small4K.bytes
        let pageSize = requested ?? PageSize(bytes: fsPage) ?? .small4K
        guard pageSize.bytes == fsPage else {
            throw SnapshotError.pageSizeUnavailable(path: path, recorded: pageSize.bytes, filesystemGives: fsPage)
        }
        let layout = try SnapshotLayout.plan(config, pageSize: pageSize)
        let resident = fs.kind != .disk
        if fs.kind == .hugetlbfs, let pool = Hugepages.pool(pageSize) {
            let needed = Int(layout.fileSize) / pageSize.bytes
            if pool.available < needed {
                throw SnapshotError.memory(path: path, .notEnoughHugepages(pageSize: pageSize, needed: needed, free: pool.available))
            }
        }
        let (temp, fd) = try createTemporary(beside: path)
        var renamed = false
        defer {
            try? fd.close()
            if !renamed { unlink(temp) }
        }
        guard ftruncate(fd.rawValue, off_t(layout.fileSize)) == 0 else {
            throw SnapshotError.cannotCreate(path: path, reason: "ftruncate to \(layout.fileSize) bytes: \(Errno(rawValue: errno))")
        }
        let (_, headerBytes) = layout.header(config: config, resident: resident, createdUnixSeconds: createdUnixSeconds)
        if resident {
            try layOutResident(fd: fd, layout: layout, backing: fs.kind == .hugetlbfs ? .hugetlbfs : .file,
                               path: path, phases: phases)
            // hugetlbfs has no write(2): the header page goes in through a mapping too.
            let header = try region(fd: fd, name: "header", offset: 0, size: pageSize.bytes, pageSize: pageSize,
                                    backing: fs.kind == .hugetlbfs ? .hugetlbfs : .file, path: path)
            headerBytes.withUnsafeBytes { header.base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        } else {
            let n = headerBytes.withUnsafeBytes { pwrite(fd.rawValue, $0.baseAddress!, $0.count, 0) }
            guard n == headerBytes.count else {
                throw SnapshotError.cannotCreate(path: path, reason: "write: \(Errno(rawValue: errno))")
            }
            guard fsync(fd.rawValue) == 0 else {
                throw SnapshotError.cannotCreate(path: path, reason: "fsync: \(Errno(rawValue: errno))")
            }
        }
        guard rename(temp, path) == 0 else {
            throw SnapshotError.cannotCreate(path: path, reason: "rename into place: \(Errno(rawValue: errno))")
        }
        renamed = true
        return layout
    }

    /// Creates the file the snapshot is written into before it is renamed over `path`, exclusively
    /// (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600): in a shared directory (/dev/shm) another user may
    /// have planted the name, as a link to a file of ours or as a file they can read, and neither
    /// may be opened. A name that exists is left alone and the next one tried.
    static func createTemporary(beside path: String) throws -> (String, FileDescriptor) {
        var random = SystemRandomNumberGenerator()
        for attempt in 0..<8 {
            var temp = "\(path).tmp-\(getpid())"
            if attempt > 0 { temp += "-" + String(random.next() as UInt32, radix: 16) }
            do {
                let fd = try FileDescriptor.open(FilePath(temp), .readWrite,
                                                 options: [.create, .exclusiveCreate, .noFollow, .closeOnExec],
                                                 permissions: [.ownerReadWrite])
                return (temp, fd)
            } catch Errno.fileExists {
                continue
            } catch let e as Errno {
                throw SnapshotError.cannotCreate(path: path, reason: e == .permissionDenied ? "permission denied" : "\(e)")
            }
        }
        throw SnapshotError.cannotCreate(path: path, reason: "8 temporary names beside it (\(path).tmp-\(getpid())…) already exist")
    }

    /// Faults in every region page (hugepage-init) and writes element identities (mbuf-init), in
    /// the file's own pages.
    static func layOutResident(fd: FileDescriptor, layout: SnapshotLayout, backing: MemoryBacking,
                               path: String, phases: PhaseSink?) throws {
        var t0 = ws_monotonic_ns()
        let regions = try layout.regions.map {
            try region(fd: fd, name: $0.name, offset: Int($0.fileOffset), size: Int($0.size),
                       pageSize: layout.pageSize, backing: backing, ioAddress: $0.ioAddress, path: path)
        }
        for r in regions { r.prefault() }
        var t1 = ws_monotonic_ns()
        phases?("hugepage-init", t0, t1, bytesText(Int(layout.memoryBytes)))
        t0 = t1
        // Identities only: the control block and ring are not in the file (format 1.1).
        do {
            for p in layout.pools {
                try MbufPool.layOutElements(config: p.config, region: regions[Int(p.regionIndex)],
                                            offset: layout.elementsOffset(of: p), poolID: p.poolID)
            }
        } catch let e as PoolError {
            throw SnapshotError.pool(path: path, e)
        }
        t1 = ws_monotonic_ns()
        phases?("mbuf-init", t0, t1, "\(layout.mbufCount) mbufs")
    }

    static func region(fd: FileDescriptor, name: String, offset: Int, size: Int, pageSize: PageSize,
                       backing: MemoryBacking, ioAddress: UInt64 = 0, path: String) throws -> MemoryRegion {
        do {
            return try MemoryRegion(name: name, fd: fd, fileOffset: offset, size: size, pageSize: pageSize,
                                    backing: backing, ioAddress: ioAddress, ownsFD: false)
        } catch let e as MemoryError {
            throw SnapshotError.memory(path: path, e)
        }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }
}

/// "2.0 GiB", "512 MiB", "64 KiB".
public func bytesText(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), i = 0
    while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    let rounded = (v * 10).rounded() / 10
    let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    return "\(text) \(units[i])"
}
