#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import WarmstartDatapath

/// One request line: `{"cmd":"stats"}`, with optional string arguments for later commands.
/// `{"cmd":"handoff"}` (hot upgrade) switches the connection to the handoff protocol.
public struct ControlRequest: Codable, Sendable {
    public var cmd: String
    public var args: [String: String]?
    public init(cmd: String, args: [String: String]? = nil) { self.cmd = cmd; self.args = args }
}

/// The control socket: a unix stream socket (mode 0600) answering one JSON request per line with
/// one JSON response line, `{"ok":true,"cmd":...,"result":...}` or `{"ok":false,"error":"..."}`.
/// Commands are registered by name, so new ones (handoff) plug in without touching the framing.
///
/// Served by one small thread: requests are rare and short, and keeping them off the bus's loop
/// means a slow client can never delay a device's negotiation.
public final class ControlServer: @unchecked Sendable {
    public typealias Handler = (ControlRequest) throws -> Data
    public let path: String
    let listenFD: Int32
    let logger: Logger
    private var handlers: [String: Handler] = [:]
    /// Commands that switch the connection to another protocol (hot upgrade's handoff).
    private var upgrades: [String: (Int32) -> Void] = [:]
    private let lock = PThreadMutex()
    private var thread = pthread_t()
    private var threadStarted = false
    private var stopping = false

    /// Binds `path`. A stale socket (nobody listening) is replaced; a live one, or any other kind
    /// of file, is an error naming the path.
    public convenience init(path: String, logger: Logger) throws {
        self.init(path: path, listeningFD: try Self.bindListening(path), logger: logger)
    }

    /// Serves an already-listening socket bound at `path` (hot upgrade: the previous process's
    /// control socket, handed over — the path never stops answering).
    public init(path: String, listeningFD fd: Int32, logger: Logger) {
        self.path = path
        self.logger = logger
        listenFD = fd
        register("ping") { _ in Data("\"pong\"".utf8) }
        register("help") { [unowned self] _ in try Self.encode(self.commands) }
    }

    /// The listening descriptor (handed over to the new process by a hot upgrade).
    public var listeningFD: Int32 { listenFD }

    /// Hot upgrade, after the commit: the new process serves this socket now. Never shut it down
    /// (that would act on the shared socket) nor unlink its path; `stop` does nothing afterwards.
    /// The accept thread is left as it is: the process exits right after.
    public func handOver() {
        lock.locked { stopping = true }
    }

    static func bindListening(_ path: String) throws -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw RuntimeError("control socket \(path): exists and is not a socket; refusing to replace it")
            }
            if Self.isLive(path) { throw RuntimeError("control socket \(path): another process is listening on it") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError("control socket \(path): socket: \(String(cString: strerror(errno)))") }
        guard var addr = Self.address(path) else {
            Glibc.close(fd)
            throw RuntimeError("control socket \(path): path is longer than a unix socket address allows")
        }
        // Bind under a tight umask so the file never exists with wider permissions.
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindErrno = errno
        umask(old)
        guard rc == 0 else {
            Glibc.close(fd)
            throw RuntimeError("control socket \(path): bind: \(String(cString: strerror(bindErrno)))")
        }
        chmod(path, 0o600)
        guard listen(fd, 8) == 0 else {
            let e = errno
            Glibc.close(fd); unlink(path)
            throw RuntimeError("control socket \(path): listen: \(String(cString: strerror(e)))")
        }
        return fd
    }

    deinit { stop() }

    public var commands: [String] { lock.locked { (Array(handlers.keys) + Array(upgrades.keys)).sorted() } }

    /// Adds (or replaces) command `name`; the handler returns the JSON of `result`.
    /// Adds command `name` that takes the connection over: after the ok line, `handler` receives
    /// its own descriptor for the connection (it must close it) and the control thread goes back
    /// to accepting — so a long exchange (a handoff) never blocks `stats`, and a second one reaches
    /// its handler while the first runs (the handoff refuses it there). The handler should return
    /// quickly (start a thread).
    public func registerUpgrade(_ name: String, _ handler: @escaping (Int32) -> Void) {
        lock.locked { upgrades[name] = handler }
    }

    public func register(_ name: String, _ handler: @escaping Handler) {
        lock.locked { handlers[name] = handler }
    }

    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return try e.encode(value)
    }

    public func start() {
        let ctx = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let s = Unmanaged<ControlServer>.fromOpaque(arg!).takeRetainedValue()
            s.serve()
            return nil
        }, ctx)
        if rc == 0 { threadStarted = true } else { Unmanaged<ControlServer>.fromOpaque(ctx).release() }
    }

    /// Wakes the accept with shutdown, joins the thread, removes the socket file.
    public func stop() {
        let first = lock.locked { () -> Bool in
            defer { stopping = true }
            return !stopping
        }
        guard first else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        if threadStarted { pthread_join(thread, nil); threadStarted = false }
        Glibc.close(listenFD)
        unlink(path)
    }

    private func serve() {
        while true {
            let c = accept(listenFD, nil, nil)
            if c < 0 {
                if errno == EINTR { continue }
                if lock.locked({ stopping }) { return }
                if errno == EINVAL { return }
                continue
            }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            // A client that stops talking must not hold the control thread for long.
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            converse(c)
            Glibc.close(c)
        }
    }

    /// Reads request lines until the client closes; answers each with one line.
    private func converse(_ fd: Int32) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            while let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                if let cmd = (try? JSONDecoder().decode(ControlRequest.self, from: Data(line)))?.cmd,
                   let upgrade = lock.locked({ upgrades[cmd] }) {
                    guard buffer.isEmpty else {
                        _ = writeAll(fd, Array(#"{"ok":false,"error":"nothing may follow an upgrade request before its answer"}"#.utf8) + [0x0A])
                        return
                    }
                    let ok = #"{"ok":true,"cmd":"# + Self.quote(cmd) + #","result":"switching protocols"}"#
                    guard writeAll(fd, Array(ok.utf8) + [0x0A]) else { return }
                    let own = dup(fd)   // the serve loop closes `fd` when this returns
                    if own >= 0 { _ = fcntl(own, F_SETFD, FD_CLOEXEC); upgrade(own) }
                    return
                }
                var reply = answer(line)
                reply.append(0x0A)
                if !writeAll(fd, reply) { return }
            }
            if buffer.count > 65536 { _ = writeAll(fd, Array(#"{"ok":false,"error":"request line longer than 64 KiB"}"#.utf8) + [0x0A]); return }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// One response line for one request line.
    func answer(_ line: [UInt8]) -> [UInt8] {
        func fail(_ why: String) -> [UInt8] {
            Array((#"{"ok":false,"error":"# + Self.quote(why) + "}").utf8)
        }
        let request: ControlRequest
        do {
            request = try JSONDecoder().decode(ControlRequest.self, from: Data(line))
        } catch {
            return fail("request is not a JSON object with a \"cmd\" string: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
        guard let handler = lock.locked({ handlers[request.cmd] }) else {
            return fail("unknown command '\(request.cmd)' (commands: \(commands.joined(separator: ", ")))")
        }
        do {
            let result = try handler(request)
            return Array((#"{"ok":true,"cmd":"# + Self.quote(request.cmd) + #","result":"#).utf8) + Array(result) + [0x7D]
        } catch {
            return fail("\(request.cmd): \(error)")
        }
    }

    static func quote(_ s: String) -> String {
        (try? String(decoding: encode(s), as: UTF8.self)) ?? "\"\""
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    static func address(_ path: String) -> sockaddr_un? {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        return addr
    }

    /// True when something accepts connections on `path`.
    static func isLive(_ path: String) -> Bool {
        guard var addr = address(path) else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }
}

/// The client side: one request, one response line. Used by `warmstart stats` and tests.
public enum ControlClient {
    public static func request(path: String, _ request: ControlRequest, timeoutSeconds: Int = 5) throws -> String {
        guard var addr = ControlServer.address(path) else { throw RuntimeError("control socket \(path): path too long") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RuntimeError("control socket \(path): socket: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            throw RuntimeError("control socket \(path): cannot connect: \(String(cString: strerror(errno))) (is `warmstart run --control \(path)` running?)")
        }
        let line = Array(try ControlServer.encode(request)) + [0x0A]
        guard line.withUnsafeBytes({ send(fd, $0.baseAddress, line.count, Int32(MSG_NOSIGNAL)) }) == line.count else {
            throw RuntimeError("control socket \(path): send: \(String(cString: strerror(errno)))")
        }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !out.contains(0x0A) {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw RuntimeError("control socket \(path): no answer: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        guard let nl = out.firstIndex(of: 0x0A) else { throw RuntimeError("control socket \(path): closed without an answer") }
        return String(decoding: out[..<nl], as: UTF8.self)
    }
}
