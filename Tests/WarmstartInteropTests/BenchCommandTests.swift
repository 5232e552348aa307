import Foundation
import XCTest
import WarmstartTestSupport

/// `warmstart bench --mode sink` end to end (the built executable): the back-end — a `warmstart
/// run --forward txonly` child, or testpmd txonly on net_vhost — generates, Warmstart's front-end
/// receives; the JSON result counts frames of the size asked for; `--mac` is the front-end port's
/// MAC; the child, its socket and temp directory are gone afterwards.
final class BenchCommandTests: XCTestCase {
    func bench(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (status: Int32, json: [String: Any]?, output: String, pid: Int32) {
        guard let bin = TestpmdHarness.findWarmstart() else {
            throw XCTSkip("warmstart executable not found under .build (run `swift build` first, or set WARMSTART_BIN)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["bench"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self) + String(decoding: errData, as: UTF8.self)
        let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        return (p.terminationStatus, json, text, p.processIdentifier)
    }

    func checkSink(backend: String, size: Int) throws {
        let r = try bench(["--mode", "sink", "--backend", backend, "--duration", "0.5", "--size", "\(size)",
                           "--layout", "packed", "--mac", "02:00:00:00:00:33", "--json"])
        XCTAssertEqual(r.status, 0, r.output)
        guard let j = r.json else { return XCTFail("no JSON: \(r.output)") }
        XCTAssertEqual(j["mode"] as? String, "sink")
        XCTAssertEqual(j["backend"] as? String, backend)
        XCTAssertEqual(j["mac"] as? String, "02:00:00:00:00:33")
        let rx = (j["rxPackets"] as? NSNumber)?.doubleValue ?? 0
        XCTAssertGreaterThan(rx, 0, "frames received from the \(backend) back-end: \(j)")
        XCTAssertEqual((j["txPackets"] as? NSNumber)?.intValue, 0)
        XCTAssertNotNil(j["drops"] as? NSNumber)
        // Gbit/s comes from the bytes received: frames of --size bytes.
        let gbps = (j["gbps"] as? NSNumber)?.doubleValue ?? 0, secs = (j["seconds"] as? NSNumber)?.doubleValue ?? 0
        XCTAssertEqual(gbps * 1e9 / 8 * secs / rx, Double(size), accuracy: 0.5, "\(j)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/ws-vuser-bench-\(r.pid)"), "temp directory removed")
    }

    func testSinkAgainstWarmstart() throws { try checkSink(backend: "warmstart", size: 1518) }

    func testSinkAgainstTestpmd() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/dpdk-testpmd") else { throw XCTSkip("dpdk-testpmd not installed") }
        guard TestpmdHarness.freeHugepages() >= 160 else { throw XCTSkip("not enough free hugepages for testpmd") }
        try checkSink(backend: "dpdk", size: 9000)
    }

    func testBadMacIsRefused() throws {
        let r = try bench(["--mode", "sink", "--mac", "01:00:5e:00:00:01"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("--mac '01:00:5e:00:00:01' is a multicast address"), r.output)
    }
}
