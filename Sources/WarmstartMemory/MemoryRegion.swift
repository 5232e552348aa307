import CWarmstartShim
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// How a region's pages are provided.
public enum MemoryBacking: String, Sendable, Codable, CustomStringConvertible {
    /// A file on a hugetlbfs mount: stays resident between runs.
    case hugetlbfs
    /// `memfd_create(MFD_HUGETLB)`: hugepages that live as long as someone holds the fd.
    case memfdHugetlb = "memfd-hugetlb"
    /// A 4 KiB memfd (the lightweight memory model).
    case memfd
    /// A 4 KiB file on tmpfs or a disk file system.
    case file

    public var description: String { rawValue }
    public var isHuge: Bool { self == .hugetlbfs || self == .memfdHugetlb }
}

/// One region of memory: one file descriptor mapped once, MAP_SHARED, so that a peer can map the
/// same pages through the same fd. Never one file per page: a peer maps all of Warmstart's memory
/// through a handful of these.
public final class MemoryRegion: @unchecked Sendable {
    public let name: String
    public let fd: FileDescriptor
    /// Where the region starts inside `fd` (the vhost-user `mmap_offset`).
    public let fileOffset: Int
    public let size: Int
    public let pageSize: PageSize
    public let backing: MemoryBacking
    /// Where the region is mapped in this process.
    public let base: UnsafeMutableRawPointer
    /// The address a peer sees this region at (the vhost-user guest physical / I/O address).
    public var ioAddress: UInt64
    private let ownsFD: Bool
    /// Guards of this mapping against a peer we lent `fd` to shrinking the file behind it
    /// (`guardAgainstPeerShrink`), one per flag; kept as long as the mapping, since a peer keeps
    /// the fd after it disconnects. Under `PeerShrinkGuards.lock`.
    var peerGuards: [MappingFaultGuard] = []

    /// Private anonymous memory mapped right after every region (its addresses adjacent to the
    /// region's end), unmapped with it. Pool elements live in regions we share with a peer (a
    /// virtio-user back-end), which can rewrite any mbuf header at any time; every address the
    /// datapath forms from a header is the element's start + 64 + the 16-bit data offset, plus at
    /// most a 16-bit length (data length, buffer length, tail room) — under 64 + 2 × 65535 bytes
    /// past an element that starts inside the region. The guard makes all of that mapped memory,
    /// so a hostile header costs wrong bytes (other packets', or this private scratch), never a
    /// fault and never memory of ours outside the region. Whole 4 KiB pages: a separate mapping
    /// also after a huge-page region. The datapath keeps its header-derived lengths 16-bit.
    public static let trailingGuardBytes = 192 << 10

    /// Maps `size` bytes of `fd` from `fileOffset`, MAP_SHARED, followed by `trailingGuardBytes`
    /// of private anonymous memory.
    /// - Parameter populate: fault every page in now (pays the kernel's zeroing for new pages).
    public init(name: String, fd: FileDescriptor, fileOffset: Int, size: Int, pageSize: PageSize,
                backing: MemoryBacking, ioAddress: UInt64 = 0, ownsFD: Bool, populate: Bool = false) throws {
        guard size > 0 else {
            if ownsFD { try? fd.close() }
            throw MemoryError.invalidSize(size)
        }
        guard size % pageSize.bytes == 0, fileOffset % pageSize.bytes == 0 else {
            if ownsFD { try? fd.close() }
            throw MemoryError.sizeNotPageMultiple(size: size % pageSize.bytes == 0 ? fileOffset : size, pageSize: pageSize)
        }
        // Reserve the region plus its trailing guard (and, for huge pages, room to align the
        // start) as inaccessible private anonymous memory (not charged against the commit limit
        // under strict overcommit), map the file over the aligned start, MAP_FIXED, then make the
        // guard readable and writable.
        let slack = pageSize.isHuge ? pageSize.bytes : 0
        let pad = Self.trailingGuardBytes
        let reserved = mmap(nil, size + slack + pad, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | WS_MAP_NORESERVE, -1, 0)
        guard let reserved, reserved != MAP_FAILED else {
            let e = Errno(rawValue: errno)
            if ownsFD { try? fd.close() }
            throw MemoryError.system(operation: "mmap (address reservation)", path: name, errno: e)
        }
        let r = UInt(bitPattern: reserved)
        let startAddress = slack == 0 ? r : (r + UInt(slack) - 1) & ~(UInt(slack) - 1)
        let start = UnsafeMutableRawPointer(bitPattern: startAddress)!
        if startAddress > r { munmap(reserved, Int(startAddress - r)) }
        let tail = slack - Int(startAddress - r)
        if tail > 0 { munmap(start + size + pad, tail) }
        var flags = MAP_SHARED | MAP_FIXED
        if populate { flags |= WS_MAP_POPULATE }
        let p = mmap(start, size, PROT_READ | PROT_WRITE, flags, fd.rawValue, off_t(fileOffset))
        guard let p, p != MAP_FAILED, p == start, mprotect(start + size, pad, PROT_READ | PROT_WRITE) == 0 else {
            let e = Errno(rawValue: errno)
            munmap(start, size + pad)
            if ownsFD { try? fd.close() }
            if e == .noMemory && pageSize.isHuge {
                let pool = Hugepages.pool(pageSize)
                throw MemoryError.notEnoughHugepages(pageSize: pageSize, needed: size / pageSize.bytes,
                                                     free: pool?.available ?? 0)
            }
            if e == .permissionDenied || e == .notPermitted { throw MemoryError.permissionDenied(path: name) }
            throw MemoryError.system(operation: "mmap", path: name, errno: e)
        }
        self.name = name
        self.fd = fd
        self.fileOffset = fileOffset
        self.size = size
        self.pageSize = pageSize
        self.backing = backing
        self.base = p
        self.ioAddress = ioAddress
        self.ownsFD = ownsFD
    }

    deinit {
        // Unregistered before munmap: the range may be reused by another mapping at once.
        for g in peerGuards { g.unregister() }
        munmap(base, size + Self.trailingGuardBytes)
        if ownsFD { try? fd.close() }
    }

    /// Creates an anonymous region on a memfd: hugetlb when `pageSize` is huge, else 4 KiB.
    public static func memfd(name: String, size: Int, pageSize: PageSize, ioAddress: UInt64 = 0,
                             populate: Bool = false) throws -> MemoryRegion {
        guard size > 0 else { throw MemoryError.invalidSize(size) }
        guard size % pageSize.bytes == 0 else { throw MemoryError.sizeNotPageMultiple(size: size, pageSize: pageSize) }
        if pageSize.isHuge {
            guard let pool = Hugepages.pool(pageSize) else {
                throw MemoryError.hugepagesUnavailable(pageSize: pageSize, reason: "the kernel offers no \(pageSize) pages")
            }
            let needed = size / pageSize.bytes
            if pool.available < needed {
                throw MemoryError.notEnoughHugepages(pageSize: pageSize, needed: needed, free: pool.available)
            }
        }
        let raw = ws_memfd_create("warmstart:\(name)", WS_MFD_CLOEXEC | WS_MFD_ALLOW_SEALING | pageSize.memfdFlags)
        guard raw >= 0 else {
            let e = Errno(rawValue: errno)
            if pageSize.isHuge {
                throw MemoryError.hugepagesUnavailable(pageSize: pageSize, reason: "memfd_create(MFD_HUGETLB): \(e)")
            }
            throw MemoryError.system(operation: "memfd_create", path: name, errno: e)
        }
        let fd = FileDescriptor(rawValue: raw)
        guard ftruncate(raw, off_t(size)) == 0 else {
            let e = Errno(rawValue: errno)
            try? fd.close()
            throw MemoryError.system(operation: "ftruncate", path: name, errno: e)
        }
        // A virtio-user port hands this descriptor to its back-end peer, which could otherwise
        // shrink the file and fault every access of ours past the new end (SIGBUS). Best effort:
        // a kernel without hugetlb sealing (before 4.16) leaves the region unsealed.
        _ = ws_seal_size(raw)
        return try MemoryRegion(name: name, fd: fd, fileOffset: 0, size: size, pageSize: pageSize,
                                backing: pageSize.isHuge ? .memfdHugetlb : .memfd, ioAddress: ioAddress,
                                ownsFD: true, populate: populate)
    }

    /// Picks the page size for `mode`: hugepages of `preferred` size when enough are free (auto) or
    /// required (require), else 4 KiB.
    public static func choosePageSize(bytes: Int, mode: HugepageMode, preferred: PageSize) throws -> PageSize {
        switch mode {
        case .off:
            return .small4K
        case .require, .auto:
            let wanted = preferred.isHuge ? preferred : (Hugepages.defaultSize ?? .huge2M)
            guard let pool = Hugepages.pool(wanted) else {
                if mode == .auto { return .small4K }
                throw MemoryError.hugepagesUnavailable(pageSize: wanted, reason: "the kernel offers no \(wanted) pages")
            }
            let needed = (wanted.roundUp(bytes) ?? Int.max) / wanted.bytes
            if pool.available >= needed { return wanted }
            if mode == .auto { return .small4K }
            throw MemoryError.notEnoughHugepages(pageSize: wanted, needed: needed, free: pool.available)
        }
    }

    /// Writes one byte per page so every page is faulted in now, the cost DPDK calls hugepage init
    /// (over 95% of it is the kernel zeroing the page). Zeroing is bound by one core's memory
    /// bandwidth, so the pages are split over `threads` threads (default: every online CPU).
    public func prefault(threads: Int = 0) {
        let pages = size / pageSize.bytes
        let n = max(1, min(threads > 0 ? threads : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), pages, 16))
        if n == 1 || size < 64 << 20 {
            Self.touch(base, pages: pages, pageBytes: pageSize.bytes)
            return
        }
        var jobs = (0..<n).map { i -> TouchJob in
            let first = pages * i / n, last = pages * (i + 1) / n
            return TouchJob(base: base + first * pageSize.bytes, pages: last - first, pageBytes: pageSize.bytes)
        }
        jobs.withUnsafeMutableBufferPointer { buf in
            var tids = [pthread_t](repeating: pthread_t(), count: n)
            var started = [Bool](repeating: false, count: n)
            for i in 1..<n {
                started[i] = pthread_create(&tids[i], nil, { arg in
                    let job = arg!.assumingMemoryBound(to: TouchJob.self).pointee
                    MemoryRegion.touch(job.base, pages: job.pages, pageBytes: job.pageBytes)
                    return nil
                }, buf.baseAddress! + i) == 0
                // A thread that could not start: its share is done on this one.
                if !started[i] { Self.touch(buf[i].base, pages: buf[i].pages, pageBytes: buf[i].pageBytes) }
            }
            Self.touch(buf[0].base, pages: buf[0].pages, pageBytes: buf[0].pageBytes)
            for i in 1..<n where started[i] { pthread_join(tids[i], nil) }
        }
    }

    struct TouchJob {
        var base: UnsafeMutableRawPointer
        var pages: Int
        var pageBytes: Int
    }

    static func touch(_ base: UnsafeMutableRawPointer, pages: Int, pageBytes: Int) {
        var offset = 0
        for _ in 0..<pages {
            base.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
            offset += pageBytes
        }
    }

    /// The host address of `offset` inside this region, after a bounds check.
    @inlinable
    public func pointer(at offset: Int, length: Int = 1) -> UnsafeMutableRawPointer? {
        guard offset >= 0, length >= 0, offset <= size, length <= size - offset else { return nil }
        return base + offset
    }
}
