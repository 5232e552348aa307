import Foundation
import XCTest

/// `--takeover` of a TAP port, no testpmd needed: the interface survives the old process (its fd
/// was handed over), the new process's port is started and forwards a packet sent on it.
final class TakeoverTapTests: XCTestCase {
    func testTapPortIsTakenOver() throws {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/net/tun") else {
            throw XCTSkip("TAP needs root and /dev/net/tun")
        }
        guard let bin = InteropHarness.findWarmstart() else { throw XCTSkip("warmstart executable not found under .build") }
        let dir = "/tmp/ws-tko-\(getpid())-tap"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ifname = "wstko\(getpid() % 10000)"
        var children: [Process] = []
        defer {
            for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
            for p in children { p.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: dir)
        }
        func spawn(_ args: [String], _ log: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = args
            FileManager.default.createFile(atPath: "\(dir)/\(log).log", contents: nil)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/\(log).log"))
            p.standardOutput = h; p.standardError = h
            try p.run()
            children.append(p)
            return p
        }
        func text(_ log: String) -> String { (try? String(contentsOfFile: "\(dir)/\(log).log", encoding: .utf8)) ?? "" }
        func ifindex() -> String? { try? String(contentsOfFile: "/sys/class/net/\(ifname)/ifindex", encoding: .utf8) }
        func until(_ seconds: Double, _ cond: () -> Bool) -> Bool {
            let end = Date().addingTimeInterval(seconds)
            while !cond() && Date() < end { usleep(20_000) }
            return cond()
        }
        let ctl = "\(dir)/control", json = "\(dir)/r.json"
        let old = try spawn(["run", "--no-snapshot", "--hugepages", "off", "--mbufs", "4096", "--port", "tap:\(ifname)",
                             "--forward", "macswap", "--control", ctl], "old")
        XCTAssertTrue(until(10) { FileManager.default.fileExists(atPath: ctl) && ifindex() != nil }, text("old"))
        let index = ifindex()
        let new = try spawn(["run", "--takeover", ctl, "--report-json", json], "new")
        XCTAssertTrue(until(15) { !old.isRunning }, "old process still running: \(text("old"))")
        old.waitUntilExit()
        XCTAssertEqual(old.terminationStatus, 0, text("old"))
        XCTAssertTrue(until(10) { FileManager.default.fileExists(atPath: json) }, text("new"))
        XCTAssertEqual(ifindex(), index, "the interface survived: its fd was handed over")
        XCTAssertTrue(new.isRunning, text("new"))
        // A packet sent on the interface comes back through the new process (macswap).
        let up = try spawn_ip(["link", "set", ifname, "up"])
        XCTAssertEqual(up, 0)
        let ping = Process()
        ping.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        ping.arguments = ["ping", "-c", "2", "-W", "1", "-I", ifname, "ff02::1"]
        ping.standardOutput = FileHandle.nullDevice; ping.standardError = FileHandle.nullDevice
        try? ping.run(); ping.waitUntilExit()
        let stats = try spawn(["stats", "--control", ctl, "--json"], "stats")
        stats.waitUntilExit()
        let obj = try JSONSerialization.jsonObject(with: Data(text("stats").utf8)) as? [String: Any]
        let port = ((obj?["result"] as? [String: Any])?["ports"] as? [[String: Any]])?.first
        XCTAssertEqual(port?["state"] as? String, "started", text("stats"))
        let rx = ((port?["total"] as? [String: Any])?["rx_packets"] as? NSNumber)?.intValue ?? 0
        XCTAssertGreaterThanOrEqual(rx, 1, "the new process received on the handed-over TAP fd: \(text("stats"))")
        kill(new.processIdentifier, SIGTERM)
        new.waitUntilExit()
        XCTAssertEqual(new.terminationStatus, 0, text("new"))
        XCTAssertTrue(text("new").contains("handoff: committed"), text("new"))
        XCTAssertTrue(until(5) { ifindex() == nil }, "the interface goes with the last process holding it")
    }

    private func spawn_ip(_ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip"] + args
        try p.run(); p.waitUntilExit()
        return p.terminationStatus
    }
}
