import Foundation
import XCTest

/// The one launcher of DPDK's testpmd in the tests (and of `warmstart run` as a child for the
/// interop tests): command lines (`ealArguments`, `startTestpmd`, `startVhost`), its own work
/// directory and `--file-prefix` per test, logs in that directory, children started and stopped
/// by pid (and killed with this process when setpriv is there), and the skip reason when
/// testpmd, root or free hugepages are missing. `cleanup` (also at deinit) kills every child by
/// its pid and removes testpmd's hugepage files and runtime directory, whatever the outcome.
public final class TestpmdHarness {
    /// How long any wait for a condition may take: generous, for a machine loaded by parallel
    /// builds. Waits return as soon as their condition holds.
    public static let deadline: Double = 60
    public let dir: String
    public let prefix: String
    public var children: [Process] = []
    public let testpmdPath: String
    public let warmstartPath: String

    /// testpmd's path: WARMSTART_TESTPMD, else Debian's.
    public static var testpmd: String { ProcessInfo.processInfo.environment["WARMSTART_TESTPMD"] ?? "/usr/bin/dpdk-testpmd" }

    /// Why testpmd cannot run here (not installed, not root, fewer than `hugepages` free 2 MiB
    /// hugepages), or nil.
    public static func unavailableReason(hugepages: Int = 160) -> String? {
        guard FileManager.default.isExecutableFile(atPath: testpmd) else { return "\(testpmd) not found (apt-get install dpdk-dev)" }
        guard getuid() == 0 else { return "testpmd needs root here (hugepages)" }
        let free = freeHugepages()
        guard free >= hugepages else { return "only \(free) free 2 MiB hugepages; testpmd -m 256 needs \(hugepages)" }
        return nil
    }

    /// Skips (with the reason) when testpmd, free hugepages or (when `needsWarmstart`: tests that
    /// drive Warmstart in-process do not) the warmstart executable is missing.
    public init(name: String, prefixBase: String = "ws-vport", needsWarmstart: Bool = true, hugepages: Int = 160) throws {
        testpmdPath = Self.testpmd
        if let why = Self.unavailableReason(hugepages: hugepages) { throw XCTSkip(why) }
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

    /// Kills every child by pid, removes testpmd's files and (unless `keepLogs` or
    /// WARMSTART_KEEP_LOGS=1) the work directory with the logs.
    public func cleanup(keepLogs: Bool = false) {
        for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in children { p.waitUntilExit() }
        children = []
        if let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/hugepages") {
            for n in names where n.hasPrefix(prefix) { try? FileManager.default.removeItem(atPath: "/dev/hugepages/" + n) }
        }
        try? FileManager.default.removeItem(atPath: "/var/run/dpdk/" + prefix)
        if !keepLogs && ProcessInfo.processInfo.environment["WARMSTART_KEEP_LOGS"] != "1" { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Removes hugepage files, DPDK runtime directories and work directories named
    /// `PREFIXBASE-PID-…` whose process PID no longer exists.
    public static func removeLeftovers(prefixBase: String) {
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

    public static func freeHugepages() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("HugePages_Free:") {
            return Int(line.split(separator: " ").last ?? "0") ?? 0
        }
        return 0
    }

    /// WARMSTART_BIN, else the package's .build/debug or .build/release executable.
    public static func findWarmstart() -> String? {
        if let b = ProcessInfo.processInfo.environment["WARMSTART_BIN"] { return b }
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }   // Tests/WarmstartTestSupport/this file
        for c in ["debug", "release"] {
            let p = root.appendingPathComponent(".build/\(c)/warmstart").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Starts `warmstart run` (cold memory, no hugepages: the guest memory is testpmd's).
    public func startWarmstart(ports: [String], forward: String = "macswap", cores: Int = 1, extra: [String] = []) throws -> Process {
        var args = ["run", "--no-snapshot", "--hugepages", "off", "--mbufs", "16384", "--forward", forward,
                    "--cores", "\(cores)", "--control", "\(dir)/control"]
        for p in ports { args += ["--port", p] }
        let p = try spawn(warmstartPath, args + extra, log: "warmstart")
        // Listening sockets and the control socket exist once it is up.
        let paths = ports.compactMap { $0.split(separator: ":", maxSplits: 1).last.map { String($0.split(separator: ",")[0]) } } + ["\(dir)/control"]
        _ = waitUntil(timeout: Self.deadline, interval: 10_000) { !p.isRunning || paths.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) }
        guard paths.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) else {
            throw InteropError("warmstart did not come up; log: \(log("warmstart"))")
        }
        return p
    }

    /// Starts testpmd interactively (commands on stdin) as the virtio-user front-end of `socket`.
    /// `inOrder`: VIRTIO_F_IN_ORDER, offered by Warmstart's back-end and asked for by testpmd's
    /// virtio-user unless `in_order=0` (its default is 1). `appArgs` go after testpmd's own (e.g.
    /// `--no-flush-rx`: `start` after `stop` keeps the packets looping instead of dropping what
    /// waits in the receive queue).
    public func startTestpmd(socket: String, packed: Bool, mergeable: Bool, size: Int, name: String = "testpmd",
                             queues: Int = 1, inOrder: Bool = true, waitForPrompt: Bool = true, appArgs: [String] = []) throws -> TestpmdConsole {
        var args = ealArguments(mainLcore: 1) + [
                    "--vdev", "net_virtio_user0,path=\(socket),queues=\(queues),packed_vq=\(packed ? 1 : 0),mrg_rxbuf=\(mergeable ? 1 : 0),"
                        + "in_order=\(inOrder ? 1 : 0),queue_size=256",
                    "--", "-i", "--nb-cores=1", "--rxq=\(queues)", "--txq=\(queues)"]
        // Jumbo frames: one segment must fit an mbuf, and testpmd checks --txpkts against the
        // mbuf size given before it.
        // A bounded pool keeps the 10 KiB mbufs inside -m 256 even when other processes hold
        // most of the machine's hugepages.
        if size > 1518 { args += ["--mbuf-size=10240", "--max-pkt-len=\(size + 600)", "--total-num-mbufs=4096"] }
        args.append("--txpkts=\(size)")
        args += appArgs
        let stdin = Pipe()
        // stdout is a file: without stdbuf testpmd's answers sit in its stdio buffer until exit.
        let p = try spawn("/usr/bin/stdbuf", ["-oL", "-eL", testpmdPath] + args, log: name, stdin: stdin, dieWithParent: true)
        let t = TestpmdConsole(process: p, stdin: stdin.fileHandleForWriting, logPath: log(name))
        // The port is up when the prompt answers.
        if waitForPrompt { try t.waitFor("testpmd>", timeout: Self.deadline) }
        return t
    }

    /// testpmd's EAL arguments: lcores, no PCI, one file per segment, this test's file prefix, 256 MB.
    public func ealArguments(lcores: String = "0,1", mainLcore: Int) -> [String] {
        ["-l", lcores, "--main-lcore", "\(mainLcore)", "--no-pci", "--single-file-segments", "--file-prefix", prefix, "-m", "256"]
    }

    /// Starts testpmd non-interactively with `ealArguments`, the `vdevs`, then `--` and `appArgs`;
    /// its output in `log(name)`.
    public func startTestpmd(vdevs: [String], mainLcore: Int = 0, appArgs: [String], name: String = "testpmd") throws -> Process {
        try spawn(testpmdPath, ealArguments(mainLcore: mainLcore) + vdevs.flatMap { ["--vdev", $0] } + ["--"] + appArgs, log: name,
                  dieWithParent: true)
    }

    /// testpmd as a vhost-user back-end: `net_vhost0,iface=SOCKET[,client=1],queues=N` with
    /// `--forward-mode=FORWARD` (Docs/USAGE.md has the flags that work).
    public func startVhost(socket: String, client: Bool = false, forward: String, queues: Int = 1, extra: [String] = [],
                           name: String = "testpmd") throws -> Process {
        try spawn(testpmdPath, ealArguments(mainLcore: 0) + ["--log-level", "user1,notice",
                  "--vdev", "net_vhost0,iface=\(socket),queues=\(queues)" + (client ? ",client=1" : ""),
                  "--", "--forward-mode=\(forward)", "--stats-period", "1", "--nb-cores=1", "--total-num-mbufs=16384",
                  "--rxq=\(queues)", "--txq=\(queues)"] + extra, log: name, dieWithParent: true)
    }

    /// SIGINT (lets testpmd close its ports: GET_VRING_BASE to the back-end), then SIGKILL after
    /// `grace` seconds; always reaps.
    public func stop(_ p: Process, grace: Double = 3) {
        guard p.isRunning else { return }
        kill(p.processIdentifier, SIGINT)
        if !waitUntil(timeout: grace, interval: 10_000, { !p.isRunning }) { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    public func log(_ name: String) -> String { "\(dir)/\(name).log" }

    /// The last `bytes` of log `name`.
    public func logTail(_ name: String = "testpmd", bytes: Int = 2000) -> String {
        let text = (try? String(contentsOfFile: log(name), encoding: .utf8)) ?? ""
        return String(text.suffix(bytes))
    }

    /// Starts `path` with `args`, output (and stdin) as given, by pid; with `dieWithParent` under
    /// `setpriv --pdeathsig KILL` when setpriv is there, so the child cannot outlive a crashed test
    /// (testpmd holds hundreds of MB of hugepages while it runs).
    public func spawn(_ path: String, _ args: [String], log name: String, stdin: Pipe? = nil,
                      environment extra: [String: String] = [:], dieWithParent: Bool = false) throws -> Process {
        let p = Process()
        if !extra.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(extra) { _, b in b } }
        let setpriv = "/usr/bin/setpriv"
        if dieWithParent && FileManager.default.isExecutableFile(atPath: setpriv) {
            p.executableURL = URL(fileURLWithPath: setpriv)
            p.arguments = ["--pdeathsig", "KILL", "--", path] + args
        } else {
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = args
        }
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
    public func warmstartStats() throws -> [String: Any] { try Self.stats(control: "\(dir)/control") }

    /// The `stats` answer of the warmstart whose control socket is `path`.
    public static func stats(control path: String) throws -> [String: Any] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
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
    public func queueRxPackets(port name: String) throws -> [UInt64] {
        let s = try warmstartStats()
        guard let ports = s["ports"] as? [[String: Any]], let p = ports.first(where: { $0["name"] as? String == name }),
              let qs = p["queues"] as? [[String: Any]] else { throw InteropError("no port \(name) in \(s)") }
        return qs.map { ($0["rx_packets"] as? NSNumber)?.uint64Value ?? 0 }
    }

    /// Stops testpmd's forwarding, then reads both sides' counters once every frame testpmd sent is
    /// accounted for: testpmd no longer transmits (its counters are final), and Warmstart keeps
    /// polling until it has taken every frame left in the guest's TX ring and forwarded or dropped
    /// each one.
    public func stopAndCollect(_ tp: TestpmdConsole, port: String) throws
        -> (testpmd: (rx: UInt64, rxBytes: UInt64, tx: UInt64, txBytes: UInt64), warmstart: PortCounters) {
        tp.send("stop")
        try tp.waitFor("Done.", timeout: Self.deadline)
        let t = try tp.portStats()
        let w = try waitForCounters(port: port, "take the \(t.tx) frames testpmd sent and forward or drop each") {
            $0.rxPackets >= t.tx && $0.txPackets + $0.drops >= $0.rxPackets
        }
        return (t, w)
    }

    /// Polls port `name`'s counters until `condition` holds (returning them at once), or throws
    /// with the last ones after `timeout` seconds. The deadline is for a loaded machine; on a
    /// quiet one the condition holds within milliseconds.
    @discardableResult
    public func waitForCounters(port name: String, timeout: Double = TestpmdHarness.deadline, _ what: String,
                                _ condition: (PortCounters) -> Bool) throws -> PortCounters {
        var last = try counters(port: name)
        let ok = try waitUntil(timeout: timeout, interval: 10_000) {
            last = try counters(port: name)
            return condition(last)
        }
        guard ok else { throw InteropError("port \(name): did not \(what) within \(timeout) s: \(last); logs \(dir)") }
        return last
    }

    public func counters(port name: String) throws -> PortCounters {
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

/// A port's counters in the `stats` answer of a running warmstart.
public struct PortCounters {
    public var rxPackets, rxBytes, txPackets, txBytes, drops, errors: UInt64
    public var state: String
    public var reconnects: Int
    public var reason: String?
}

public struct InteropError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// An interactive testpmd: commands go to its stdin, answers are read from its log.
public final class TestpmdConsole {
    public let process: Process
    public let stdin: FileHandle
    public let logPath: String
    private var consumed = 0

    public init(process: Process, stdin: FileHandle, logPath: String) {
        self.process = process; self.stdin = stdin; self.logPath = logPath
    }

    public var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Writes `command` to testpmd's stdin; a testpmd that died is noticed by the next
    /// `waitFor` (the write fails with EPIPE instead of killing the test with SIGPIPE).
    public func send(_ command: String) {
        guard process.isRunning else { return }
        try? stdin.write(contentsOf: Data((command + "\n").utf8))
    }

    /// Waits until `marker` appears in output not consumed yet; consumes through it.
    @discardableResult
    public func waitFor(_ marker: String, timeout: Double) throws -> String {
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
    public func portStats() throws -> (rx: UInt64, rxBytes: UInt64, tx: UInt64, txBytes: UInt64) {
        send("show port stats 0")
        let text = try waitFor("Tx-bps", timeout: TestpmdHarness.deadline)
        func value(_ key: String) -> UInt64 {
            guard let r = text.range(of: key + ":") else { return 0 }
            let digits = text[r.upperBound...].drop(while: { $0 == " " }).prefix(while: { $0.isNumber })
            return UInt64(digits) ?? 0
        }
        return (value("RX-packets"), value("RX-bytes"), value("TX-packets"), value("TX-bytes"))
    }

    /// `show port stats PORT` as key → value ("RX-packets", "RX-missed", "RX-bytes", "RX-errors",
    /// "RX-nombuf", "TX-packets", "TX-errors", "TX-bytes"): exact once no frame is in flight.
    public func nicStats(port: Int) throws -> [String: UInt64] {
        send("show port stats \(port)")
        let text = try waitFor("Tx-bps", timeout: TestpmdHarness.deadline)
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
    public func quit() {
        send("quit")
        _ = waitUntil(timeout: 30, interval: 20_000) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
