import SystemPackage

/// Everything that can go wrong while reserving, creating or mapping memory. Each case names the
/// thing and the reason, and says what to do where there is something to do.
public enum MemoryError: Error, CustomStringConvertible, Equatable {
    case notEnoughHugepages(pageSize: PageSize, needed: Int, free: Int)
    case noHugetlbfsMount(pageSize: PageSize)
    case hugepagesUnavailable(pageSize: PageSize, reason: String)
    case permissionDenied(path: String)
    case sizeNotPageMultiple(size: Int, pageSize: PageSize)
    case invalidSize(Int)
    case pageSizeMismatch(path: String, wanted: PageSize, filesystemGives: Int)
    case system(operation: String, path: String, errno: Errno)

    public var description: String {
        switch self {
        case let .notEnoughHugepages(ps, needed, free):
            let total = Hugepages.pool(ps)?.total ?? 0
            return "not enough free \(ps) hugepages: \(needed) needed, \(free) free; reserve more with "
                + "'echo \(total + needed - free) > /sys/kernel/mm/hugepages/hugepages-\(ps.bytes / 1024)kB/nr_hugepages' (as root), "
                + "or run with --hugepages off"
        case let .noHugetlbfsMount(ps):
            return "no hugetlbfs mount gives \(ps) pages; mount one with "
                + "'mount -t hugetlbfs -o pagesize=\(ps) nodev /dev/hugepages' (as root)"
        case let .hugepagesUnavailable(ps, reason):
            return "\(ps) hugepages are not available: \(reason)"
        case let .permissionDenied(path):
            return "permission denied: \(path)"
        case let .sizeNotPageMultiple(size, ps):
            return "size \(size) bytes is not a multiple of the page size \(ps) (\(ps.bytes) bytes)"
        case let .invalidSize(size):
            return "invalid memory size \(size) bytes"
        case let .pageSizeMismatch(path, wanted, gives):
            return "\(path): the file system gives \(PageSize(bytes: gives).map { "\($0)" } ?? "\(gives)-byte") pages, not \(wanted)"
        case let .system(op, path, errno):
            return "\(op) \(path): \(errno) (errno \(errno.rawValue))"
        }
    }
}
