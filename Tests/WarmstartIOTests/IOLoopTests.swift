import XCTest
import Glibc
import CWarmstartShim
import CWarmstartTestShim
@testable import WarmstartIO

/// Every behaviour is checked on both backends: the fallback must do what the ring does.
final class IOLoopTests: XCTestCase {
    private func loops() throws -> [IOLoop] {
        [try IOLoop(), try IOLoop(forceFallback: true)]
    }

    /// Runs `loop` on this thread until `done()` or 5 s.
    private func spin(_ loop: IOLoop, _ what: String, until done: () -> Bool,
                      file: StaticString = #filePath, line: UInt = #line) {
        let deadline = ws_monotonic_ns() + 5_000_000_000
        while !done() && ws_monotonic_ns() < deadline { loop.runOnce(timeoutNs: 10_000_000) }
        XCTAssertTrue(done(), "\(loop.backendName): \(what) did not complete", file: file, line: line)
    }

    private func tempDir() -> String {
        var template = Array("/tmp/ws-io-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: p!)
    }

    func testBackendSelection() throws {
        let ring = try IOLoop()
        let sysctl = (try? String(contentsOfFile: "/proc/sys/kernel/io_uring_disabled", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if sysctl == nil || sysctl == "0" {
            XCTAssertEqual(ring.backendName, "io_uring", ring.fallbackReason ?? "")
            XCTAssertNil(ring.fallbackReason)
        } else {
            XCTAssertNotNil(ring.fallbackReason)
        }
        let forced = try IOLoop(forceFallback: true)
        XCTAssertEqual(forced.backendName, "poll")
        XCTAssertEqual(forced.fallbackReason, "io_uring disabled by the caller")

        setenv(IOLoop.disableEnvironmentVariable, "1", 1)
        defer { unsetenv(IOLoop.disableEnvironmentVariable) }
        let env = try IOLoop()
        XCTAssertEqual(env.backendName, "poll")
        XCTAssertEqual(env.fallbackReason, "io_uring disabled by WARMSTART_NO_IO_URING=1")
    }

    /// io_uring refused the way seccomp or kernel.io_uring_disabled refuse it: the loop falls back
    /// to poll, says why, and still works. Done on a thread of its own because the filter stays
    /// on the thread that installed it.
    func testFallbackWhenIOURingIsDeniedBySeccomp() throws {
        var outcome: (backend: String, reason: String?, connectErrno: Int32?)?
        var installError: Int32 = 0
        let done = DispatchSemaphore(value: 0)
        Thread {
            defer { done.signal() }
            installError = ws_seccomp_deny_io_uring()
            guard installError == 0, let loop = try? IOLoop() else { return }
            let fd = try! UnixSocket.makeStream().get()
            defer { Glibc.close(fd) }
            var r: IOResult<Void>?
            loop.connect(fd: fd, unixPath: "/tmp/ws-missing-\(getpid())") { r = $0 }
            let deadline = ws_monotonic_ns() + 2_000_000_000
            while r == nil && ws_monotonic_ns() < deadline { loop.runOnce(timeoutNs: 10_000_000) }
            var e: Int32? = nil
            if case .failure(let err)? = r { e = err.errno }
            outcome = (loop.backendName, loop.fallbackReason, e)
        }.start()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        if installError != 0 { throw XCTSkip("cannot install a seccomp filter: \(IOError.message(-installError))") }
        let o = try XCTUnwrap(outcome)
        XCTAssertEqual(o.backend, "poll")
        XCTAssertTrue(o.reason?.hasPrefix("io_uring_queue_init: Operation not permitted") == true, o.reason ?? "nil")
        XCTAssertEqual(o.connectErrno, ENOENT, "the fallback performs operations")
    }

    func testTimeoutFiresAndCancels() throws {
        for loop in try loops() {
            let t0 = ws_monotonic_ns()
            var firedAt: UInt64 = 0
            loop.timeout(nanoseconds: 20_000_000) { r in
                if case .failure(let e) = r { XCTFail(e.description) }
                firedAt = ws_monotonic_ns()
            }
            var canceled: IOError?
            let id = loop.timeout(nanoseconds: 10_000_000_000) { r in
                if case .failure(let e) = r { canceled = e }
            }
            loop.cancel(id)
            spin(loop, "timeouts", until: { firedAt != 0 && canceled != nil })
            XCTAssertGreaterThanOrEqual(firedAt - t0, 19_000_000, loop.backendName)
            XCTAssertEqual(canceled?.errno, ECANCELED, loop.backendName)
        }
    }

    func testFileOperations() throws {
        let dir = tempDir()
        defer { rmdir(dir) }
        for loop in try loops() {
            let path = dir + "/f-\(loop.backendName)"
            defer { unlink(path) }
            var fd: Int32 = -1
            loop.open(path, flags: O_RDWR | O_CREAT, mode: 0o644) { fd = (try? $0.get()) ?? -2 }
            spin(loop, "open", until: { fd != -1 })
            XCTAssertGreaterThanOrEqual(fd, 0)
            var wrote = -1
            loop.write(fd: fd, bytes: Array("hello ring".utf8), offset: 0) { wrote = (try? $0.get()) ?? -2 }
            spin(loop, "write", until: { wrote != -1 })
            XCTAssertEqual(wrote, 10)
            var got: [UInt8]?
            loop.read(fd: fd, count: 64, offset: 6) { got = try? $0.get() }
            spin(loop, "read", until: { got != nil })
            XCTAssertEqual(got.map { String(decoding: $0, as: UTF8.self) }, "ring")
            var st: IOResult<FileStatus>?
            loop.stat(path) { st = $0 }
            spin(loop, "stat", until: { st != nil })
            let status = try XCTUnwrap(try? st?.get())
            XCTAssertTrue(status.isRegular)
            XCTAssertEqual(status.size, 10)
            XCTAssertEqual(status.typeName, "regular file")
            var missing: IOResult<FileStatus>?
            loop.stat(dir + "/nope") { missing = $0 }
            spin(loop, "stat missing", until: { missing != nil })
            guard case .failure(let e)? = missing else { return XCTFail("stat of a missing path succeeded") }
            XCTAssertEqual(e.errno, ENOENT)
            XCTAssertEqual(e.description, "stat \(dir)/nope: No such file or directory")
            var closed = false
            loop.close(fd: fd) { r in if case .failure(let e) = r { XCTFail(e.description) }; closed = true }
            spin(loop, "close", until: { closed })
        }
    }

    func testListenConnectAcceptAndMessagesWithFDs() throws {
        let dir = tempDir()
        defer { rmdir(dir) }
        for loop in try loops() {
            let path = dir + "/s-\(loop.backendName)"
            defer { unlink(path) }
            let listener = try UnixSocket.makeStream().get()
            defer { Glibc.close(listener) }
            try UnixSocket.listen(fd: listener, path: path, mode: 0o600).get()
            let perms = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            XCTAssertEqual(perms, 0o600)

            var server: Int32 = -1
            loop.accept(fd: listener) { server = (try? $0.get()) ?? -2 }
            let client = try UnixSocket.makeStream().get()
            defer { Glibc.close(client) }
            var connected = false
            loop.connect(fd: client, unixPath: path) { r in if case .failure(let e) = r { XCTFail(e.description) }; connected = true }
            spin(loop, "accept/connect", until: { server != -1 && connected })
            XCTAssertGreaterThanOrEqual(server, 0)
            defer { Glibc.close(server) }

            // Send two descriptors (an eventfd with a value in it, and a pipe end) with a payload.
            let efd = ws_eventfd(7, WS_EFD_CLOEXEC)
            var pipeFDs: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&pipeFDs), 0)
            defer { Glibc.close(efd); Glibc.close(pipeFDs[0]); Glibc.close(pipeFDs[1]) }
            var sent = -1
            loop.sendMessage(fd: client, bytes: [1, 2, 3, 4], fds: [efd, pipeFDs[1]]) { sent = (try? $0.get()) ?? -2 }
            var message: ReceivedMessage?
            loop.receiveMessage(fd: server, maxBytes: 256) { message = try? $0.get() }
            spin(loop, "message", until: { sent != -1 && message != nil })
            XCTAssertEqual(sent, 4)
            let m = try XCTUnwrap(message)
            XCTAssertEqual(m.bytes, [1, 2, 3, 4])
            XCTAssertEqual(m.fds.count, 2)
            XCTAssertFalse(m.truncated)
            var value: UInt64 = 0
            XCTAssertEqual(Glibc.read(m.fds[0], &value, 8), 8)
            XCTAssertEqual(value, 7, "the received eventfd is the one sent")
            XCTAssertEqual(Glibc.write(m.fds[1], "x", 1), 1)
            var byte: UInt8 = 0
            XCTAssertEqual(Glibc.read(pipeFDs[0], &byte, 1), 1)
            XCTAssertEqual(byte, UInt8(ascii: "x"), "the received pipe end is the one sent")
            for fd in m.fds { Glibc.close(fd) }

            // A peer that closes gives a zero-length message.
            var eof: ReceivedMessage?
            loop.receiveMessage(fd: server, maxBytes: 16) { eof = try? $0.get() }
            Glibc.shutdown(client, Int32(SHUT_WR))
            spin(loop, "eof", until: { eof != nil })
            XCTAssertEqual(eof?.bytes.count, 0)
        }
    }

    func testConnectToMissingSocketFails() throws {
        for loop in try loops() {
            let fd = try UnixSocket.makeStream().get()
            defer { Glibc.close(fd) }
            var r: IOResult<Void>?
            loop.connect(fd: fd, unixPath: "/tmp/ws-definitely-missing-\(getpid())") { r = $0 }
            spin(loop, "connect", until: { r != nil })
            guard case .failure(let e)? = r else { return XCTFail("connect succeeded") }
            XCTAssertEqual(e.errno, ENOENT, loop.backendName)
            XCTAssertTrue(e.description.hasPrefix("connect /tmp/ws-definitely-missing"), e.description)
        }
    }

    func testPollOperation() throws {
        for loop in try loops() {
            var fds: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&fds), 0)
            defer { Glibc.close(fds[0]); Glibc.close(fds[1]) }
            var revents: Int16?
            loop.poll(fd: fds[0], events: Int16(POLLIN)) { revents = try? $0.get() }
            loop.runOnce(timeoutNs: 5_000_000)
            XCTAssertNil(revents, "\(loop.backendName): poll completed before the pipe was readable")
            XCTAssertEqual(Glibc.write(fds[1], "a", 1), 1)
            spin(loop, "poll", until: { revents != nil })
            XCTAssertNotEqual((revents ?? 0) & Int16(POLLIN), 0)
        }
    }

    /// More operations than the ring has entries: submission flushes a full queue and goes on.
    func testManyOperationsInOneBatch() throws {
        for loop in [try IOLoop(entries: 32), try IOLoop(forceFallback: true)] {
            var fired = 0
            for i in 0..<300 { loop.timeout(nanoseconds: UInt64(1_000_000 + i * 1000)) { _ in fired += 1 } }
            spin(loop, "300 timeouts", until: { fired == 300 })
        }
    }

    /// Work posted from another thread wakes a loop blocked in its wait.
    func testPostFromAnotherThreadWakesTheLoop() throws {
        for loop in try loops() {
            loop.startThread()
            let lock = ConditionLock()
            var ranOnLoop = false
            let t0 = ws_monotonic_ns()
            loop.post {
                lock.withLock { ranOnLoop = loop.isOnLoopThread }
                lock.broadcast()
            }
            let ok = lock.withLock { () -> Bool in
                while !ranOnLoop { if !lock.wait(untilMonotonicNs: t0 + 2_000_000_000) { break } }
                return ranOnLoop
            }
            XCTAssertTrue(ok, "\(loop.backendName): posted work did not run on the loop thread")
            XCTAssertLessThan(ws_monotonic_ns() - t0, 500_000_000)
            loop.stopAndJoin()
        }
    }
}
