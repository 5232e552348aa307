import Foundation
import XCTest

/// Drives `warmstart run` and DPDK's testpmd (virtio-user front-end) as child processes for the
/// interop tests. Every child is killed by its pid, and testpmd's hugepage files and runtime
/// directory are removed, whatever the test's outcome.
final class InteropHarness {
    let dir: String
    let prefix: String
    var children: [Process] = []
    let testpmdPath: String
    let warmstartPath: String

    /// Skips (with the reason) when testpmd, free hugepages or (when `needsWarmstart`: tests that
    /// drive Warmstart in-process do not) the warmstart executable is missing.
    init(name: String, prefixBase: String = "ws-vport", needsWarmstart: Bool = true) throws {
        let env = ProcessInfo.processInfo.environment
        testpmdPath = env["WARMSTART_TESTPMD"] ?? "/usr/bin/dpdk-testpmd"
        guard FileManager.default.isExecutableFile(atPath: testpmdPath) else {
            throw XCTSkip("\(testpmdPath) not found (apt-get install dpdk-dev)")
        }
        guard getuid() == 0 else { throw XCTSkip("testpmd needs root here (hugepages)") }
        let free = Self.freeHugepages()
        guard free >= 160 else { throw XCTSkip("only \(free) free 2 MiB hugepages; testpmd -m 256 needs 128+") }
        let bin = Self.findWarmstart()
        if needsWarmstart && bin == nil {
            throw XCTSkip("warmstart executable not found under .build (run `swift build` first, or set WARMSTART_BIN)")
        }
        warmstartPath = bin ?? ""
        // A test process that crashed could not clean up: its testpmd died with it (pdeathsig)
        // but left hugepage files, which hold hugepages until removed.
        Self.removeLeftovers(prefixBase: prefixBase)
        // Writing to a testpmd that died must fail, not raise SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        prefix = "\(prefixBase)-\(getpid())-\(name)"
        dir = "/tmp/\(prefix)"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    deinit { cleanup() }

    func cleanup() {
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in children { p.waitUntilExit() }
        children = []
        if let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/hugepages") {
            for n in names where n.hasPrefix(prefix) { try? FileManager.default.removeItem(atPath: "/dev/hugepages/" + n) }
        }
        try? FileManager.default.removeItem(atPath: "/var/run/dpdk/" + prefix)
        if ProcessInfo.processInfo.environment["WARMSTART_KEEP_LOGS"] != "1" { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Removes hugepage files, DPDK runtime directories and work directories named
    /// `PREFIXBASE-PID-…` whose process PID no longer exists.
    static func removeLeftovers(prefixBase: String) {
        let fm = FileManager.default
        for dir in ["/dev/hugepages", "/var/run/dpdk", "/tmp"] {
            for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(prefixBase + "-") {
                let rest = name.dropFirst(prefixBase.count + 1)
                guard let pid = Int32(rest.prefix(while: { $0.isNumber })), pid > 0, pid != getpid(),
                      kill(pid, 0) != 0 && errno == ESRCH else { continue }
                try? fm.removeItem(atPath: dir + "/" + name)
            }
        }
    }

    static func freeHugepages() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("HugePages_Free:") {
            return Int(line.split(separator: " ").last ?? "0") ?? 0
        }
        return 0
    }

    /// WARMSTART_BIN, else the package's .build/debug or .build/release executable.
    static func findWarmstart() -> String? {
        if let b = ProcessInfo.processInfo.environment["WARMSTART_BIN"] { return b }
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        for c in ["debug", "release"] {
            let p = root.appendingPathComponent(".build/\(c)/warmstart").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Starts `warmstart run` (cold memory, no hugepages: the guest memory is testpmd's).
    func startWarmstart(ports: [String], forward: String = "macswap", cores: Int = 1, extra: [String] = []) throws -> Process {
        var args = ["run", "--no-snapshot", "--hugepages", "off", "--mbufs", "16384", "--forward", forward,
                    "--cores", "\(cores)", "--control", "\(dir)/control"]
        for p in ports { args += ["--port", p] }
        let p = try spawn(warmstartPath, args + extra, log: "warmstart")
        // Listening sockets and the control socket exist once it is up.
        let paths = ports.compactMap { $0.split(separator: ":", maxSplits: 1).last.map { String($0.split(separator: ",")[0]) } } + ["\(dir)/control"]
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !paths.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
            guard p.isRunning else { break }
            usleep(20_000)
        }
        guard paths.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) else {
            throw InteropError("warmstart did not come up; log: \(log("warmstart"))")
        }
        return p
    }

    /// Starts testpmd interactively (commands on stdin) as the virtio-user front-end of `socket`.
    func startTestpmd(socket: String, packed: Bool, mergeable: Bool, size: Int, name: String = "testpmd",
                      queues: Int = 1, waitForPrompt: Bool = true) throws -> Testpmd {
        var args = ["-l", "0,1", "--main-lcore", "1", "--no-pci", "--single-file-segments",
                    "--file-prefix", prefix, "-m", "256",
                    "--vdev", "net_virtio_user0,path=\(socket),queues=\(queues),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=\(mergeable ? 1 : 0),queue_size=256",
                    "--", "-i", "--nb-cores=1", "--rxq=\(queues)", "--txq=\(queues)"]
        // Jumbo frames: one segment must fit an mbuf, and testpmd checks --txpkts against the
        // mbuf size given before it.
        // A bounded pool keeps the 10 KiB mbufs inside -m 256 even when other processes hold
        // most of the machine's hugepages.
        if size > 1518 { args += ["--mbuf-size=10240", "--max-pkt-len=\(size + 600)", "--total-num-mbufs=4096"] }
        args.append("--txpkts=\(size)")
        let stdin = Pipe()
        // stdout is a file: without stdbuf testpmd's answers sit in its stdio buffer until exit.
        let p = try spawn("/usr/bin/stdbuf", ["-oL", "-eL", testpmdPath] + args, log: name, stdin: stdin)
        let t = Testpmd(process: p, stdin: stdin.fileHandleForWriting, logPath: log(name))
        // The port is up when the prompt answers.
        if waitForPrompt { try t.waitFor("testpmd>", timeout: 20) }
        return t
    }

    func log(_ name: String) -> String { "\(dir)/\(name).log" }

    func spawn(_ path: String, _ args: [String], log name: String, stdin: Pipe? = nil,
               environment extra: [String: String] = [:]) throws -> Process {
        let p = Process()
        if !extra.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(extra) { _, b in b } }
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        _ = FileManager.default.createFile(atPath: log(name), contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log(name)))
        p.standardOutput = h
        p.standardError = h
        if let stdin { p.standardInput = stdin }
        try p.run()
        children.append(p)
        return p
    }

    /// The `stats` answer of the running warmstart.
    func warmstartStats() throws -> [String: Any] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = "\(dir)/control"
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw InteropError("control socket: connect errno \(errno)") }
        let req = Array(#"{"cmd":"stats"}"#.utf8) + [10]
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, req.count, 0) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while !out.contains(10) {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        guard let obj = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any],
              obj["ok"] as? Bool == true, let result = obj["result"] as? [String: Any] else {
            throw InteropError("control socket: bad answer \(String(decoding: out, as: UTF8.self))")
        }
        return result
    }

    /// Port `name`'s per-queue rx packet counts.
    func queueRxPackets(port name: String) throws -> [UInt64] {
        let s = try warmstartStats()
        guard let ports = s["ports"] as? [[String: Any]], let p = ports.first(where: { $0["name"] as? String == name }),
              let qs = p["queues"] as? [[String: Any]] else { throw InteropError("no port \(name) in \(s)") }
        return qs.map { ($0["rx_packets"] as? NSNumber)?.uint64Value ?? 0 }
    }

    /// Port `name`'s total counters from warmstart.
    /// Stops testpmd's forwarding, lets Warmstart drain the guest's TX ring (testpmd no longer
    /// polls), then reads both sides' counters.
    func stopAndCollect(_ tp: Testpmd, port: String) throws
        -> (testpmd: (rx: UInt64, rxBytes: UInt64, tx: UInt64, txBytes: UInt64), warmstart: PortCounters) {
        tp.send("stop")
        try tp.waitFor("Done.", timeout: 10)
        usleep(300_000)
        return (try tp.portStats(), try counters(port: port))
    }

    func counters(port name: String) throws -> PortCounters {
        let s = try warmstartStats()
        guard let ports = s["ports"] as? [[String: Any]], let p = ports.first(where: { $0["name"] as? String == name }),
              let t = p["total"] as? [String: Any] else { throw InteropError("no port \(name) in \(s)") }
        func n(_ k: String) -> UInt64 { (t[k] as? NSNumber)?.uint64Value ?? 0 }
        return PortCounters(rxPackets: n("rx_packets"), rxBytes: n("rx_bytes"), txPackets: n("tx_packets"),
                            txBytes: n("tx_bytes"), drops: n("drops"), errors: n("errors"),
                            state: p["state"] as? String ?? "", reconnects: p["reconnects"] as? Int ?? 0,
                            reason: p["reason"] as? String)
    }
}

struct PortCounters {
    var rxPackets, rxBytes, txPackets, txBytes, drops, errors: UInt64
    var state: String
    var reconnects: Int
    var reason: String?
}

struct InteropError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// An interactive testpmd: commands go to its stdin, answers are read from its log.
final class Testpmd {
    let process: Process
    let stdin: FileHandle
    let logPath: String
    private var consumed = 0

    init(process: Process, stdin: FileHandle, logPath: String) {
        self.process = process; self.stdin = stdin; self.logPath = logPath
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Writes `command` to testpmd's stdin; a testpmd that died is noticed by the next
    /// `waitFor` (the write fails with EPIPE instead of killing the test with SIGPIPE).
    func send(_ command: String) {
        guard process.isRunning else { return }
        try? stdin.write(contentsOf: Data((command + "\n").utf8))
    }

    /// Waits until `marker` appears in output not consumed yet; consumes through it.
    @discardableResult
    func waitFor(_ marker: String, timeout: Double) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let all = output
            let start = all.index(all.startIndex, offsetBy: min(consumed, all.count))
            if let r = all[start...].range(of: marker) {
                consumed = all.distance(from: all.startIndex, to: r.upperBound)
                return String(all[start..<r.upperBound])
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        let tail = output.split(separator: "\n").suffix(15).joined(separator: "\n")
        throw InteropError("testpmd: no '\(marker)' within \(timeout) s (running: \(process.isRunning)); log \(logPath), last lines:\n\(tail)")
    }

    /// `show port stats 0`: exact counters once forwarding is stopped.
    func portStats() throws -> (rx: UInt64, rxBytes: UInt64, tx: UInt64, txBytes: UInt64) {
        send("show port stats 0")
        let text = try waitFor("Tx-bps", timeout: 5)
        func value(_ key: String) -> UInt64 {
            guard let r = text.range(of: key + ":") else { return 0 }
            let digits = text[r.upperBound...].drop(while: { $0 == " " }).prefix(while: { $0.isNumber })
            return UInt64(digits) ?? 0
        }
        return (value("RX-packets"), value("RX-bytes"), value("TX-packets"), value("TX-bytes"))
    }

    /// `show port stats PORT` as key → value ("RX-packets", "RX-missed", "RX-bytes", "RX-errors",
    /// "RX-nombuf", "TX-packets", "TX-errors", "TX-bytes"): exact once no frame is in flight.
    func nicStats(port: Int) throws -> [String: UInt64] {
        send("show port stats \(port)")
        let text = try waitFor("Tx-bps", timeout: 5)
        guard let start = text.range(of: "NIC statistics for port \(port)") else {
            throw InteropError("testpmd: no statistics for port \(port) in:\n\(text)")
        }
        var out: [String: UInt64] = [:]
        let words = text[start.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\n" })
        for (i, w) in words.enumerated() where w.hasSuffix(":") && (w.hasPrefix("RX-") || w.hasPrefix("TX-")) && i + 1 < words.count {
            if let v = UInt64(words[i + 1]) { out[String(w.dropLast())] = v }
        }
        return out
    }

    /// `quit`, then SIGKILL if it lingers.
    func quit() {
        send("quit")
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
