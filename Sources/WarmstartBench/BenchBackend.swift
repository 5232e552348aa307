import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// A child process started by pid (posix_spawn), its output in a log file; killed and reaped
/// by pid, never by name.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let logPath: String
    public let command: [String]
    private var reaped = false
    public private(set) var exitStatus: Int32?

    /// With `dieWithParent` (default) the child runs under `setpriv --pdeathsig KILL` when setpriv
    /// is there, so it cannot outlive us even if we crash (testpmd holds hundreds of MB of
    /// hugepages while it runs).
    public init(_ argv: [String], logPath: String, dieWithParent: Bool = true) throws(BenchError) {
        let argv = dieWithParent && access("/usr/bin/setpriv", X_OK) == 0
            ? ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"] + argv : argv
        command = argv
        self.logPath = logPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var p: pid_t = 0
        let rc = posix_spawn(&p, argv[0], &actions, nil, &cargs, environ)
        guard rc == 0 else { throw BenchError.spawn(program: argv[0], errno: rc) }
        pid = p
    }

    /// Still running (reaps it if it exited).
    public var isRunning: Bool {
        if reaped { return false }
        var st: Int32 = 0
        let r = waitpid(pid, &st, WNOHANG)
        if r == pid { reaped = true; exitStatus = st; return false }
        return r == 0
    }

    /// SIGINT (lets testpmd and warmstart close their ports), then SIGKILL after `grace` seconds;
    /// always reaps.
    public func stop(grace: Double = 3) {
        guard isRunning else { return }
        kill(pid, SIGINT)
        let end = ws_monotonic_ns() + UInt64(grace * 1e9)
        while ws_monotonic_ns() < end {
            if !isRunning { return }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        var st: Int32 = 0
        _ = waitpid(pid, &st, 0)
        reaped = true
        exitStatus = st
    }

    /// The last `bytes` of the log.
    public func logTail(_ bytes: Int = 2000) -> String {
        let fd = open(logPath, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        let from = max(0, Int(size) - bytes)
        lseek(fd, off_t(from), SEEK_SET)
        var buf = [UInt8](repeating: 0, count: Int(size) - from)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return String(decoding: buf[0..<max(0, n)], as: UTF8.self)
    }

    public var log: String { logTail(1 << 22) }

    deinit { stop(grace: 0.5) }
}

/// DPDK's testpmd (Docs/USAGE.md has the flags that work): a vhost-user back-end (`net_vhost0`) or a
/// virtio-user front-end (`net_virtio_user0`) for interop tests and comparisons. Every run has its
/// own `--file-prefix`; `cleanup()` removes the hugepage files and runtime directory a killed
/// testpmd leaves behind (they would hold hugepages until removed).
public struct Testpmd: Sendable {
    public static var path: String {
        if let p = getenv("WARMSTART_TESTPMD") { return String(cString: p) }
        return "/usr/bin/dpdk-testpmd"
    }

    /// Why testpmd cannot run here, or nil.
    /// With `--total-num-mbufs=16384` a testpmd takes ~40 MB of its `-m 256`; 64 pages leave room.
    public static func unavailableReason(hugepagesNeeded: Int = 64) -> String? {
        guard access(path, X_OK) == 0 else { return "\(path) not found (apt-get install dpdk-dev)" }
        let free = readInt("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") ?? 0
        let resv = readInt("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages") ?? 0
        if free - resv < hugepagesNeeded {
            return "only \(free - resv) free 2 MiB hugepages, testpmd needs \(hugepagesNeeded) (echo 1024 > /proc/sys/vm/nr_hugepages)"
        }
        return nil
    }

    /// `--vdev net_vhost0,iface=SOCK[,client=1],queues=N` with `--forward-mode=MODE`.
    public static func vhostArguments(socket: String, client: Bool, forward: String, prefix: String,
                                      lcores: String = "0,1", mainLcore: Int = 0, queues: Int = 1,
                                      extra: [String] = []) -> [String] {
        [path, "-l", lcores, "--main-lcore", "\(mainLcore)", "--no-pci", "--single-file-segments",
         "--file-prefix", prefix, "-m", "256", "--log-level", "user1,notice",
         "--vdev", "net_vhost0,iface=\(socket),queues=\(queues)" + (client ? ",client=1" : ""),
         "--", "--forward-mode=\(forward)", "--stats-period", "1", "--nb-cores=1", "--total-num-mbufs=16384",
         "--rxq=\(queues)", "--txq=\(queues)"] + extra
    }

    /// `--vdev net_virtio_user0,path=SOCK,packed_vq=…,mrg_rxbuf=…` (DPDK's front-end, for comparison).
    public static func virtioUserArguments(socket: String, packed: Bool, forward: String, prefix: String,
                                           lcores: String = "0,1", mainLcore: Int = 1, server: Bool = false,
                                           extra: [String] = []) -> [String] {
        [path, "-l", lcores, "--main-lcore", "\(mainLcore)", "--no-pci", "--single-file-segments",
         "--file-prefix", prefix, "-m", "256",
         "--vdev", "net_virtio_user0,path=\(socket),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=1,in_order=0" + (server ? ",server=1" : ""),
         "--", "--forward-mode=\(forward)", "--stats-period", "1", "--nb-cores=1", "--total-num-mbufs=16384"] + extra
    }

    /// The TX-dropped count in the forward statistics testpmd prints when it stops (txonly: frames
    /// the peer's receive ring had no room for), or nil when the log has none.
    public static func txDropped(log: String) -> UInt64? {
        var inStats = false
        for line in log.split(separator: "\n") {
            if line.contains("Forward statistics for port 0") { inStats = true; continue }
            guard inStats else { continue }
            let words = line.split(separator: " ")
            if let k = words.firstIndex(of: "TX-dropped:"), k + 1 < words.count { return UInt64(words[k + 1]) }
        }
        return nil
    }

    /// Removes what a testpmd with `prefix` left: /dev/hugepages/PREFIX* and /var/run/dpdk/PREFIX.
    public static func cleanup(prefix: String) {
        if let d = opendir("/dev/hugepages") {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name.hasPrefix(prefix) { unlink("/dev/hugepages/" + name) }
            }
            closedir(d)
        }
        let dir = "/var/run/dpdk/" + prefix
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name != "." && name != ".." { unlink(dir + "/" + name) }
            }
            closedir(d)
            rmdir(dir)
        }
    }

    /// Per-second "Rx-pps:" / "Tx-pps:" figures from testpmd's --stats-period output.
    public static func ppsSamples(_ log: String, key: String) -> [Double] {
        log.split(separator: "\n").compactMap { line -> Double? in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let i = words.firstIndex(where: { $0 == key + ":" }), i + 1 < words.endIndex else { return nil }
            return Double(words[i + 1])
        }
    }

    static func readInt(_ path: String) -> Int? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 32) }
        guard n > 0 else { return nil }
        return Int(String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters())
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let c = s.last, c == "\n" || c == " " || c == "\r" || c == "\t" { s = s.dropLast() }
        while let c = s.first, c == "\n" || c == " " { s = s.dropFirst() }
        return String(s)
    }
}
