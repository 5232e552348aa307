import Foundation
import Logging
import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import WarmstartRuntime

/// Issue 12, defect 6: the control socket against other local users and slow clients.
final class ControlSocketSecurityTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        var t = Array("/tmp/ws-ctlsec.XXXXXX".utf8CString)
        guard t.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw XCTSkip("mkdtemp") }
        dir = String(cString: t)
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Runs /usr/bin/python3 as uid/gid 65534 (setpriv) with `script`; returns its stdout.
    func runAsNobody(_ script: String) throws -> String {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else {
            throw XCTSkip("needs root, /usr/bin/setpriv and /usr/bin/python3")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// A client running as another user is refused by its kernel credentials, even when the socket
    /// file's mode would let it connect (loosened by hand, say); the server goes on answering us.
    func testClientOfAnotherUserIsRefused() throws {
        let path = "\(dir!)/control"
        let server = try ControlServer(path: path, logger: Logger(label: "t"))
        server.start()
        defer { server.stop() }
        // Let the other user reach the socket at all: only SO_PEERCRED stands in its way now.
        XCTAssertEqual(chmod(dir, 0o755), 0)
        XCTAssertEqual(chmod(path, 0o666), 0)
        let script = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        data = b''
        try:
            s.connect(\(String(reflecting: path)))
            try:
                s.sendall(b'{"cmd":"ping"}\\n')
            except OSError:
                pass   # a server that refused us may have closed already; its answer is still there
            while not data.endswith(b'\\n'):
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            print('ANSWER:' + data.decode(errors='replace').strip())
        except Exception as e:
            print('ERROR:' + repr(e) + ' ' + data.decode(errors='replace'))
        """
        let answer = try runAsNobody(script)
        XCTAssertFalse(answer.contains(#""ok":true"#), "uid 65534 was served: \(answer)")
        XCTAssertTrue(answer.contains("refused") && answer.contains("uid 65534"), answer)
        let mine = try ControlClient.request(path: path, ControlRequest(cmd: "ping"))
        XCTAssertTrue(mine.contains(#""ok":true"#), mine)
    }

    /// One client that connects and says nothing, and one that sends half a request line, do not
    /// hold up another client's request.
    func testSilentClientsDoNotBlockOthers() throws {
        let path = "\(dir!)/control"
        let server = try ControlServer(path: path, logger: Logger(label: "t"))
        server.register("stats") { _ in Data("{\"ports\":[]}".utf8) }
        server.start()
        defer { server.stop() }
        func connectRaw() throws -> Int32 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = ControlServer.address(path)!
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard rc == 0 else { let e = errno; close(fd); throw ControlSocketError(path, .connect(errno: e)) }
            return fd
        }
        let silent = try connectRaw()
        defer { close(silent) }
        let half = try connectRaw()
        defer { close(half) }
        let partial = Array(#"{"cmd":"st"#.utf8)
        XCTAssertEqual(partial.withUnsafeBytes { send(half, $0.baseAddress, partial.count, Int32(MSG_NOSIGNAL)) }, partial.count)
        // The silent ones hold their connections for the whole request timeout (5 s); the answer
        // here must not wait for that. No timing asserted: the client's own receive timeout is
        // 1 s, far below the server's 5 s, so a server that serves one client at a time fails.
        let line = try ControlClient.request(path: path, ControlRequest(cmd: "stats"), timeoutSeconds: 1)
        XCTAssertTrue(line.hasPrefix(#"{"ok":true,"cmd":"stats""#), line)
    }

    /// The socket file is never reachable with wider permissions than 0600, even while another
    /// thread of the process changes the umask (umask is process-wide): a watcher that looks at
    /// the path the moment it appears finds a socket of mode 0600 that already accepts.
    func testSocketNeverAppearsWiderThan0600() throws {
        let path = "\(dir!)/control"
        final class Flag: @unchecked Sendable { var stop = false; var seen: [String] = [] }
        let flag = Flag()
        let lock = NSLock()
        // Another part of the process sets a loose umask now and then.
        let thrash = Thread {
            while !lock.withLock({ flag.stop }) { umask(0o002); usleep(5); umask(0o022) }
        }
        thrash.start()
        let saved = umask(0o022)
        defer { lock.withLock { flag.stop = true }; usleep(20_000); umask(saved) }
        for round in 0..<300 {
            let watcher = Thread {
                var st = stat()
                let start = Date()
                while lstat(path, &st) != 0 {
                    if Date().timeIntervalSince(start) > 5 { return }
                }
                let mode = st.st_mode
                let live = ControlServer.isLive(path)
                if mode & S_IFMT != S_IFSOCK || mode & 0o777 != 0o600 || !live {
                    lock.withLock { flag.seen.append("round \(round): mode \(String(mode, radix: 8)), accepting \(live)") }
                }
            }
            watcher.start()
            let fd = try ControlServer.bindListening(path)
            while !watcher.isFinished { usleep(100) }
            close(fd)
            unlink(path)
        }
        XCTAssertEqual(lock.withLock { flag.seen }, [], "the control socket was visible with a wider mode or not yet listening")
        // No private directory is left behind.
        let left = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertEqual(left, [])
    }
}
