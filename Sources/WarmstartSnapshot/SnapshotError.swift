import WarmstartMemory
import WarmstartPools

/// Why a snapshot could not be created, opened or used. Every case names the file and the reason.
public enum SnapshotError: Error, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case cannotCreate(path: String, reason: String)
    /// The file is not safe to map: a symbolic link, another user's file, or one others can write
    /// (a snapshot in a shared directory such as /dev/shm). `reason` says which and what to do.
    case unsafeFile(path: String, reason: String)
    case truncated(path: String, size: Int, expected: Int)
    case badMagic(path: String)
    case unsupportedVersion(path: String, major: UInt16, minor: UInt16)
    case checksumMismatch(path: String, stored: UInt32, computed: UInt32)
    case corruptMetadata(path: String, reason: String)
    case pageSizeUnavailable(path: String, recorded: Int, filesystemGives: Int)
    case layoutMismatch(path: String, field: String, snapshot: String, requested: String)
    case payloadCorrupt(path: String, problems: [String])
    case invalidConfiguration(String)
    case memory(path: String, MemoryError)
    case pool(path: String, PoolError)

    public var description: String {
        switch self {
        case let .cannotOpen(p, r): return "snapshot \(p): cannot open: \(r)"
        case let .cannotCreate(p, r): return "snapshot \(p): cannot create: \(r)"
        case let .unsafeFile(p, r): return "snapshot \(p) \(r)"
        case let .truncated(p, s, e): return "snapshot \(p): truncated: the file has \(s) bytes, its header says \(e)"
        case let .badMagic(p): return "snapshot \(p): not a Warmstart snapshot (wrong magic number)"
        case let .unsupportedVersion(p, ma, mi):
            return "snapshot \(p): format version \(ma).\(mi) is not supported (this build reads \(SnapshotHeader.formatMajor).0–\(SnapshotHeader.formatMajor).\(SnapshotHeader.formatMinor))"
        case let .checksumMismatch(p, s, c):
            return "snapshot \(p): header or metadata corrupt (CRC-32C stored \(hex(s)), computed \(hex(c)))"
        case let .corruptMetadata(p, r): return "snapshot \(p): corrupt metadata: \(r)"
        case let .pageSizeUnavailable(p, rec, fs):
            var text = "snapshot \(p): page size \(PageSize(bytes: rec).map { "\($0)" } ?? "\(rec) bytes") is wanted, but its file system gives \(PageSize(bytes: fs).map { "\($0)" } ?? "\(fs)-byte") pages"
            if let ps = PageSize(bytes: rec), ps.isHuge {
                if let m = Hugepages.mount(for: ps) {
                    text += "; put the snapshot under \(m.path), the hugetlbfs mount that gives \(ps) pages"
                } else {
                    text += "; " + MemoryError.noHugetlbfsMount(pageSize: ps).description
                }
            }
            return text
        case let .layoutMismatch(p, f, s, r):
            return "snapshot \(p): layout does not match the requested configuration: \(f) is \(s) in the snapshot, \(r) requested"
        case let .payloadCorrupt(p, problems):
            return "snapshot \(p): payload corrupt: " + problems.joined(separator: "; ")
        case let .invalidConfiguration(r): return "invalid snapshot configuration: \(r)"
        case let .memory(p, e): return "snapshot \(p): \(e)"
        case let .pool(p, e): return "snapshot \(p): \(e)"
        }
    }
}

func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}
