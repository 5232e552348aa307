import CWarmstartShim
import Foundation
import XCTest
@testable import WarmstartHandoff

/// The wire format alone: frames, descriptor batches, versions, garbage.
final class HandoffWireTests: XCTestCase {
    func testFortyDescriptorsCrossInBatchesOfSixteenWithTheirNames() throws {
        let (a, b) = socketPair()
        let tx = HandoffChannel(fd: a), rx = HandoffChannel(fd: b)
        let fds = (0..<40).map { _ in ws_eventfd(0, WS_EFD_CLOEXEC) }
        defer { for f in fds { close(f) } }
        let names = (0..<40).map { "eventfd \($0)" }
        let before = countOpenFDs()
        try tx.sendFDs(fds, names: names, step: .transfer)
        let got = try rx.receiveFDs(names: names, step: .transfer, timeoutMs: 1000)
        XCTAssertEqual(got.count, 40)
        XCTAssertEqual(countOpenFDs(), before + 40)
        // Same files, new numbers: a write on one is read on the other.
        for (i, f) in got.enumerated() {
            var one: UInt64 = UInt64(i + 1)
            XCTAssertEqual(write(fds[i], &one, 8), 8)
            var v: UInt64 = 0
            XCTAssertEqual(read(f, &v, 8), 8)
            XCTAssertEqual(v, UInt64(i + 1))
            close(f)
        }
        XCTAssertEqual(countOpenFDs(), before)
    }

    func testBatchNamesMustMatchTheIndex() throws {
        let (a, b) = socketPair()
        let tx = HandoffChannel(fd: a), rx = HandoffChannel(fd: b)
        let fd = ws_eventfd(0, WS_EFD_CLOEXEC)
        defer { close(fd) }
        let before = countOpenFDs()
        try tx.sendFDs([fd], names: ["kick"], step: .transfer)
        XCTAssertThrowsError(try rx.receiveFDs(names: ["memory region 0"], step: .transfer, timeoutMs: 1000)) { e in
            XCTAssertTrue("\(e)".contains("does not match"), "\(e)")
        }
        XCTAssertEqual(countOpenFDs(), before, "descriptors of a refused batch are closed")
    }

    func testDescriptorsOnlyOnFDFramesAndNoReservedFlags() throws {
        let (a, b) = socketPair()
        let tx = HandoffChannel(fd: a), rx = HandoffChannel(fd: b)
        let fd = ws_eventfd(0, WS_EFD_CLOEXEC)
        defer { close(fd) }
        let before = countOpenFDs()
        try tx.send(.state, Array("{}".utf8), fds: [fd], step: .transfer)
        XCTAssertThrowsError(try rx.receive(step: .transfer, timeoutMs: 1000)) { e in
            XCTAssertTrue("\(e)".contains("only fds frames may"), "\(e)")
        }
        XCTAssertEqual(countOpenFDs(), before, "the smuggled descriptor is closed")
        // (After a protocol error the stream is abandoned: a new connection for the next case.)
        let (c, d) = socketPair()
        defer { close(c) }
        let rx2 = HandoffChannel(fd: d)
        var raw: [UInt8] = [0x57, 0x53, 0x48, 0x4F, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]   // ready, flags 1
        XCTAssertEqual(write(c, &raw, raw.count), raw.count)
        XCTAssertThrowsError(try rx2.receive(step: .commit, timeoutMs: 1000)) { e in
            XCTAssertTrue("\(e)".contains("reserved flags"), "\(e)")
        }
    }

    func testGarbageAndSilenceAreNamedErrors() throws {
        let (a, b) = socketPair()
        let rx = HandoffChannel(fd: b)
        XCTAssertThrowsError(try rx.receive(step: .hello, timeoutMs: 50)) { e in
            XCTAssertEqual("\(e)", "handoff failed at step 'hello': timed out after 50 ms waiting for the peer")
        }
        let junk = [UInt8]("GET / HTTP/1.0\r\n\r\n".utf8)
        XCTAssertEqual(write(a, junk, junk.count), junk.count)
        XCTAssertThrowsError(try rx.receive(step: .hello, timeoutMs: 1000)) { e in
            XCTAssertTrue("\(e)".contains("does not speak the handoff protocol"), "\(e)")
        }
        close(a)
        XCTAssertThrowsError(try rx.receive(step: .transfer, timeoutMs: 1000)) { e in
            XCTAssertTrue("\(e)".contains("closed the connection"), "\(e)")
        }
    }

    /// A running process of an unknown major: the new binary refuses to read it, tells it (so it
    /// never quiesces), and says which versions it reads.
    func testUnreadableVersionIsRefusedBeforeAnythingStops() throws {
        let (d, t) = socketPair()
        var aborted: String?
        let done = DispatchSemaphore(value: 0)
        Thread {
            let ch = HandoffChannel(fd: d)
            _ = try? ch.expect(.hello, step: .hello, timeoutMs: 2000)
            let w = try! JSONEncoder().encode(HandoffHello(version: HandoffVersion(major: 2, minor: 0), pid: 1))
            try? ch.send(.welcome, Array(w), step: .hello)
            if let f = try? ch.receive(step: .hello, timeoutMs: 2000) { aborted = "\(f.type) " + String(decoding: f.payload, as: UTF8.self) }
            done.signal()
        }.start()
        XCTAssertThrowsError(try HandoffTaker.takeover(channel: HandoffChannel(fd: t), hooks: HandoffTakerHooks(adopt: { _ in XCTFail() }, resume: {}))) { e in
            XCTAssertTrue("\(e)".contains("speaks handoff 2.0") && "\(e)".contains("reads majors 1"), "\(e)")
        }
        done.wait()
        XCTAssertTrue(aborted?.hasPrefix("abort") ?? false, aborted ?? "nothing")
    }

    /// A 1.1 binary reads a 1.0 state (no per-port counters), and ignores fields a
    /// later 1.x adds.
    func testPreviousMinorStateIsRead() throws {
        let v10 = """
        {"version":{"major":1,"minor":0},"donorPid":42,"describedAtNs":123,"configuration":{"arguments":["warmstart","run"],"values":{}},
         "fds":["memory region 'mbufs'"],"regions":[{"name":"mbufs","fd":0,"size":4096,"fileOffset":0,"ioAddress":4294967296,"pageSize":4096,"backing":"memfd"}],
         "pools":[],"ports":[{"name":"vhost0","kind":"vhost-user","path":"/tmp/s"}],"addedIn1_7":{"x":1}}
        """
        let s = try HandoffJSON.decode(HandoffState.self, Array(v10.utf8), step: .transfer)
        XCTAssertEqual(s.version, HandoffVersion(major: 1, minor: 0))
        XCTAssertTrue(HandoffVersion.current.canRead(s.version))
        XCTAssertNil(s.ports[0].counters)
        XCTAssertEqual(s.regions[0].ioAddress, 1 << 32)
        XCTAssertFalse(HandoffVersion.current.canRead(HandoffVersion(major: 2, minor: 0)))
    }

    func testFaultSpecParses() {
        XCTAssertEqual(HandoffFault(parsing: "kill:map"), .kill(.map))
        XCTAssertEqual(HandoffFault(parsing: "crash:old-exit"), .crash(.oldExit))
        XCTAssertNil(HandoffFault(parsing: "kill:later"))
    }

    func testReportJSONShape() throws {
        let r = HandoffReport(outcome: "committed", blackoutMs: 0.4, steps: [HandoffStep(name: "hello", ms: 0.1)])
        let json = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
        XCTAssertTrue(json.contains("\"blackout_ms\":0.4") && json.contains("\"steps\":[{"), json)
    }

    /// A JSON-lines control socket switches a connection to the handoff protocol on request; one
    /// without the command is named as an older binary.
    func testUpgradeFromAJSONLinesControlSocket() throws {
        let path = "/tmp/ws-handoff-lines-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, c) in path.utf8.enumerated() { p[i] = c } }
        XCTAssertEqual(withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }, 0)
        XCTAssertEqual(listen(fd, 2), 0)
        defer { close(fd) }
        let done = DispatchSemaphore(value: 0)
        Thread {
            for answer in [#"{"ok":false,"error":"unknown command 'handoff' (commands: help, ping, stats)"}"#,
                           #"{"ok":true,"cmd":"handoff","result":"switching"}"#] {
                let c = accept(fd, nil, nil)
                var line: [UInt8] = []
                var b: UInt8 = 0
                while read(c, &b, 1) == 1 && b != 0x0A { line.append(b) }
                XCTAssertEqual(String(decoding: line, as: UTF8.self), #"{"cmd":"handoff"}"#)
                let out = Array((answer + "\n").utf8)
                _ = write(c, out, out.count)
                if answer.contains("switching") {
                    // Now binary: expect the hello frame.
                    let ch = HandoffChannel(fd: c)
                    XCTAssertEqual(try? ch.receive(step: .hello, timeoutMs: 2000).type, .hello)
                } else {
                    close(c)
                }
            }
            done.signal()
        }.start()
        XCTAssertThrowsError(try HandoffChannel.connectUpgrading(path: path)) { e in
            XCTAssertTrue("\(e)".contains("does not support handoff"), "\(e)")
        }
        let ch = try HandoffChannel.connectUpgrading(path: path)
        try ch.send(.hello, try HandoffJSON.encode(HandoffHello(version: .current, pid: getpid()), step: .hello), step: .hello)
        done.wait()
    }
}
