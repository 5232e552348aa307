import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import WarmstartRuntime
@testable import WarmstartHandoff

/// Issue 12, defect 6: both sides of a handoff learn who the other is from the kernel, and refuse a
/// peer of another user (root aside), whatever its messages say.
final class HandoffPeerCredentialsTests: XCTestCase {
    var dir: String!
    var child: Process?

    override func setUpWithError() throws {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else {
            throw XCTSkip("needs root, /usr/bin/setpriv and /usr/bin/python3")
        }
        var t = Array("/tmp/ws-hopeer.XXXXXX".utf8CString)
        guard t.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw XCTSkip("mkdtemp") }
        dir = String(cString: t)
        XCTAssertEqual(chmod(dir, 0o777), 0)   // the other user binds or connects here
    }

    override func tearDownWithError() throws {
        if let child, child.isRunning { child.terminate(); child.waitUntilExit() }
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Starts /usr/bin/python3 `script` as uid/gid 65534.
    func startAsNobody(_ script: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        child = p
        return p
    }

    func waitForPath(_ path: String) {
        var st = stat()
        for _ in 0..<10_000 where lstat(path, &st) != 0 { usleep(1000) }
    }

    /// The new process's side: a "running process" of another user listening where the control
    /// socket should be is not believed — neither by `takeover` nor by `stats`.
    func testTakerRefusesADonorOfAnotherUser() throws {
        let path = "\(dir!)/control"
        _ = try startAsNobody("""
        import socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(\(String(reflecting: path)))
        s.listen(8)
        s.settimeout(20)
        conns = []
        try:
            while True:
                c, _ = s.accept()
                c.sendall(b'{"ok":true,"cmd":"stats","result":{}}\\n')
                conns.append(c)
        except Exception:
            pass
        """)
        waitForPath(path)
        XCTAssertThrowsError(try HandoffChannel.connect(path: path)) { e in
            XCTAssertTrue("\(e)".contains("uid 65534"), "\(e)")
        }
        XCTAssertThrowsError(try ControlClient.request(path: path, ControlRequest(cmd: "stats"), timeoutSeconds: 2)) { e in
            XCTAssertTrue("\(e)".contains("uid 65534"), "\(e)")
        }
    }

    /// The old process's side: a connection from another user is refused before its hello is
    /// read (the hello's pid is the peer's say-so; the kernel's is used).
    func testDonorRefusesATakerOfAnotherUser() throws {
        let path = "\(dir!)/handoff"
        guard var addr = ControlServer.address(path) else { return XCTFail("path") }
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener); unlink(path) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(chmod(path, 0o777), 0)
        XCTAssertEqual(listen(listener, 1), 0)
        // A hello frame claiming to be pid 1: "WSHO", type 1, flags 0, length, no descriptors.
        _ = try startAsNobody("""
        import socket, struct, json, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(\(String(reflecting: path)))
        body = json.dumps({"version": {"major": 1, "minor": 2}, "pid": 1}).encode()
        s.sendall(struct.pack('<IHHII', 0x4F485357, 1, 0, len(body), 0) + body)
        s.settimeout(20)
        try:
            while s.recv(4096): pass
        except Exception:
            pass
        """)
        let fd = accept(listener, nil, nil)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var touched = false
        let hooks = HandoffDonorHooks(freeze: { touched = true }, export: { _ in touched = true }, quiesce: { touched = true; return HandoffLive() },
                                      resume: { _ in }, release: { touched = true })
        var lines: [String] = []
        let donor = HandoffDonor(hooks: hooks, timeouts: HandoffTimeouts(stepMs: 500, mapMs: 500), log: { lines.append($0) })
        let outcome = donor.serve(HandoffChannel(fd: fd))
        guard case let .refused(reason) = outcome else { return XCTFail("not refused: \(outcome)") }
        XCTAssertTrue(reason.contains("uid 65534"), reason)
        XCTAssertFalse(touched, "nothing of this process was frozen, described or released")
        XCTAssertFalse(donor.isBusy)
    }
}
