#if canImport(Glibc)
import Glibc
#endif

/// What this process holds, as `warmstart stats` reports it: the figures a hot upgrade must not
/// let grow from one process to the next (Docs/HANDOFF.md).
public struct ProcessFootprint: Codable, Sendable, Equatable {
    public var pid: Int32
    /// Entries of /proc/self/fd (the descriptor used to list them not counted).
    public var openFDs: Int
    /// Lines of /proc/self/maps.
    public var mappings: Int
    /// Of those, shared ones (`rw-s`: our memory regions, the guest's memory, io_uring rings):
    /// the ones a hot upgrade could leak. The private anonymous rest varies by one or two from
    /// process to process: malloc's areas merge with their neighbours or not, by address.
    public var sharedMappings: Int
    /// Entries of /proc/self/task.
    public var threads: Int
    /// Mbufs taken from the pools and not back, by any process sharing them (the pools live in
    /// shared memory): what every process since the first boot still holds or lost.
    public var mbufsInUse: Int
    /// Of those, in this process's polling-thread caches.
    public var mbufsCached: Int

    enum CodingKeys: String, CodingKey {
        case pid, mappings, threads
        case openFDs = "open_fds", sharedMappings = "shared_mappings", mbufsInUse = "mbufs_in_use", mbufsCached = "mbufs_cached"
    }

    /// Reads /proc/self now.
    static func current(mbufsInUse: Int, mbufsCached: Int) -> ProcessFootprint {
        let maps = mappings()
        return ProcessFootprint(pid: getpid(), openFDs: max(0, entries(of: "/proc/self/fd") - 1), mappings: maps.all,
                                sharedMappings: maps.shared, threads: entries(of: "/proc/self/task"),
                                mbufsInUse: mbufsInUse, mbufsCached: mbufsCached)
    }

    /// Directory entries other than . and .. (-1 when it cannot be read).
    static func entries(of path: String) -> Int {
        guard let d = opendir(path) else { return -1 }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            let dot = withUnsafeBytes(of: e.pointee.d_name) { $0[0] == 0x2E && ($0[1] == 0 || ($0[1] == 0x2E && $0[2] == 0)) }
            if !dot { n += 1 }
        }
        return n
    }

    /// Lines of /proc/self/maps, and those whose permissions say shared (`rw-s`); -1 when it
    /// cannot be read.
    static func mappings() -> (all: Int, shared: Int) {
        let fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return (-1, -1) }
        defer { close(fd) }
        var all = 0, shared = 0
        var column = 0, field = 0   // position in the current line's permissions field (the second)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            for i in 0..<got {
                let c = buf[i]
                if c == 0x0A { all += 1; field = 0; column = 0; continue }
                if c == 0x20 { if field < 2 { field += 1; column = 0 }; continue }
                if field == 1 {
                    if column == 3 && c == 0x73 { shared += 1 }   // "rw-s"
                    column += 1
                }
            }
        }
        return (all, shared)
    }
}
