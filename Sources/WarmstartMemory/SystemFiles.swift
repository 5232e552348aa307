import CWarmstartShim
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Small readers of kernel files (sysfs, procfs) used to explain what memory the machine offers.
enum SystemFiles {
    /// Reads a whole small file as text, or nil.
    static func read(_ path: String, limit: Int = 1 << 20) -> String? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) else { return nil }
        defer { try? fd.close() }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let n = (try? chunk.withUnsafeMutableBytes { try fd.read(into: $0) }) ?? 0
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readInt(_ path: String) -> Int? {
        guard let text = read(path) else { return nil }
        return Int(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? "")
    }
}

/// What the kernel offers in hugepages of one size right now.
public struct HugepagePool: Sendable, Equatable {
    public var pageSize: PageSize
    public var total: Int
    public var free: Int
    public var reserved: Int
    /// Pages that can still be taken without a fault failing: free minus already reserved.
    public var available: Int { max(0, free - reserved) }
}

/// A mounted hugetlbfs.
public struct HugetlbfsMount: Sendable, Equatable {
    public var path: String
    public var pageSize: PageSize
}

/// Facts about hugepages on this machine, read from sysfs and /proc/mounts.
public enum Hugepages {
    public static func pool(_ pageSize: PageSize) -> HugepagePool? {
        guard pageSize.isHuge else { return nil }
        let dir = "/sys/kernel/mm/hugepages/hugepages-\(pageSize.bytes / 1024)kB"
        guard let total = SystemFiles.readInt(dir + "/nr_hugepages"),
              let free = SystemFiles.readInt(dir + "/free_hugepages") else { return nil }
        let reserved = SystemFiles.readInt(dir + "/resv_hugepages") ?? 0
        return HugepagePool(pageSize: pageSize, total: total, free: free, reserved: reserved)
    }

    /// The hugepage sizes this kernel supports (directories under /sys/kernel/mm/hugepages).
    public static var supportedSizes: [PageSize] {
        [.huge2M, .huge1G].filter { pool($0) != nil }
    }

    /// The kernel's default hugepage size (Hugepagesize in /proc/meminfo).
    public static var defaultSize: PageSize? {
        guard let info = SystemFiles.read("/proc/meminfo") else { return nil }
        for line in info.split(separator: "\n") where line.hasPrefix("Hugepagesize:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return PageSize(bytes: kb * 1024)
        }
        return nil
    }

    /// hugetlbfs mounts, with the page size each one gives.
    public static var mounts: [HugetlbfsMount] {
        guard let text = SystemFiles.read("/proc/mounts") else { return [] }
        var found: [HugetlbfsMount] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 4, f[2] == "hugetlbfs" else { continue }
            var size = defaultSize ?? .huge2M
            for opt in f[3].split(separator: ",") where opt.hasPrefix("pagesize=") {
                if let p = PageSize(parsing: String(opt.dropFirst("pagesize=".count))) { size = p }
            }
            found.append(HugetlbfsMount(path: String(f[1]), pageSize: size))
        }
        return found
    }

    public static func mount(for pageSize: PageSize) -> HugetlbfsMount? {
        mounts.first { $0.pageSize == pageSize }
    }
}

/// What kind of file system a path lives on, and the page size it gives to a mapping.
public enum FileSystemKind: String, Sendable, Codable {
    case hugetlbfs, tmpfs, disk

    /// The file system of `path` (an existing file or directory) and its block (page) size.
    public static func of(path: String) throws -> (kind: FileSystemKind, pageBytes: Int) {
        var magic = 0, bsize = 0
        let rc = ws_statfs(path, &magic, &bsize)
        guard rc == 0 else {
            throw MemoryError.system(operation: "statfs", path: path, errno: Errno(rawValue: -rc))
        }
        return classify(magic: magic, blockSize: bsize)
    }

    /// The file system of an open file (`name` for errors only): the file checked is the one
    /// opened, whatever its path points at by now.
    public static func of(fd: Int32, name: String) throws -> (kind: FileSystemKind, pageBytes: Int) {
        var magic = 0, bsize = 0
        let rc = ws_fstatfs(fd, &magic, &bsize)
        guard rc == 0 else {
            throw MemoryError.system(operation: "fstatfs", path: name, errno: Errno(rawValue: -rc))
        }
        return classify(magic: magic, blockSize: bsize)
    }

    static func classify(magic: Int, blockSize: Int) -> (kind: FileSystemKind, pageBytes: Int) {
        if magic == WS_HUGETLBFS_MAGIC { return (.hugetlbfs, blockSize) }
        if magic == WS_TMPFS_MAGIC { return (.tmpfs, 4096) }
        return (.disk, 4096)
    }
}
