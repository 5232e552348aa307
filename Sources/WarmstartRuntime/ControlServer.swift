#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import Logging
import WarmstartHandoff
import WarmstartEngine

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
/// Other local users are untrusted. The socket file is never reachable with wider permissions
/// than 0600 (see `bindListening`); every connection's peer is checked with SO_PEERCRED (this
/// process's uid or root, else it is refused, logged and closed); each accepted connection is
/// served on its own small thread with a deadline per request, so a client that connects and says
/// nothing, or sends half a line, holds only its own thread and never delays `stats` or a handoff.
/// Handlers run one at a time (they were written for one thread). At most
/// `maxClients` connections are served at once; more are told so and closed. Kept off the bus's
/// loop: a slow client can never delay a device's negotiation.
public final class ControlServer: @unchecked Sendable {
    public typealias Handler = (ControlRequest) throws -> Data
    public let path: String
    let listenFD: Int32
    let logger: Logger
    private var handlers: [String: Handler] = [:]
    /// Commands that switch the connection to another protocol (hot upgrade's handoff).
    private var upgrades: [String: (Int32) -> Void] = [:]
    private let lock = PThreadMutex()
    /// Serialises handler calls: connections are served concurrently, handlers are not.
    private let handlerLock = PThreadMutex()
    private var thread = pthread_t()
    private var threadStarted = false
    private var stopping = false
    /// Connections being served (their threads remove them), so `stop` can wake and wait for them.
    private var clients: Set<Int32> = []
    /// Most connections served at once.
    public static let maxClients = 16
    /// How long a client may take to send one complete request line (from the end of the previous
    /// answer, or from connecting), and to take an answer.
    public var requestTimeoutMs = 5000

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

    /// Creates the listening socket at `path`, never reachable with wider permissions than 0600.
    ///
    /// A unix socket's file is created by bind(2) with mode 0777 & ~umask, and there is no fchmod
    /// for it before bind. A tight umask around bind would do, but umask is process-wide: another
    /// thread creating a file (a snapshot, a vhost-user socket) at that moment would get the wrong
    /// mode, and one changing umask itself would undo ours. So the socket is bound in a fresh
    /// private directory beside `path` (mkdtemp: mode 0700, only this user may even look up the
    /// name inside), made 0600 and listening there, and then rename(2)d onto `path`: the name
    /// `path` appears atomically, already restricted and already answering. Same directory, so
    /// the same filesystem; rename also replaces a stale socket atomically.
    static func bindListening(_ path: String) throws -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw ControlSocketError(path, .existsAndIsNotASocket)
            }
            if Self.isLive(path) { throw ControlSocketError(path, .inUse) }
        }
        guard Self.address(path) != nil else {
            throw ControlSocketError(path, .pathTooLong)
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "."
        var template = Array((directory + "/.wsctl.XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ControlSocketError(path, .privateDirectory(directory: directory, errno: errno))
        }
        let privateDirectory = String(cString: template)
        let staging = privateDirectory + "/s"
        defer { unlink(staging); rmdir(privateDirectory) }
        guard var addr = Self.address(staging) else {
            throw ControlSocketError(path, .stagingPathTooLong(staging: staging))
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(path, .socket(errno: errno)) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ControlSocketError(path, .bind(errno: e))
        }
        guard chmod(staging, 0o600) == 0, listen(fd, 8) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ControlSocketError(path, .chmodOrListen(errno: e))
        }
        guard rename(staging, path) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ControlSocketError(path, .rename(errno: e))
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
        // Wake every connection still served and wait (bounded) for its thread to let go.
        lock.locked { for c in clients { shutdown(c, Int32(SHUT_RDWR)) } }
        let deadline = ws_monotonic_ns() &+ 2_000_000_000
        while lock.locked({ !clients.isEmpty }) && ws_monotonic_ns() < deadline { usleep(1000) }
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
            // Who connected, from the kernel: another user never gets a word in.
            guard let peer = PeerCredentials.of(c) else {
                logger.warning("control socket \(path): refused a connection: the kernel gave no peer credentials")
                Glibc.close(c)
                continue
            }
            if let why = peer.refusal {
                logger.warning("control socket \(path): refused a connection: \(why)")
                Self.tell(c, "refused: \(why)")
                Glibc.close(c)
                continue
            }
            let admitted = lock.locked { () -> Bool in
                guard !stopping, clients.count < Self.maxClients else { return false }
                clients.insert(c)
                return true
            }
            guard admitted else {
                logger.warning("control socket \(path): refused a connection from \(peer): \(Self.maxClients) clients are being served")
                Self.tell(c, "busy: \(Self.maxClients) clients are being served; try again")
                Glibc.close(c)
                continue
            }
            var tv = timeval(tv_sec: max(1, requestTimeoutMs / 1000), tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            runDetached { [self] in
                converse(c)
                lock.locked { _ = clients.remove(c) }
                Glibc.close(c)
            }
        }
    }

    /// One error line, without ever blocking (the accept thread calls it).
    private static func tell(_ fd: Int32, _ why: String) {
        let line = Array((#"{"ok":false,"error":"# + quote(why) + "}\n").utf8)
        _ = line.withUnsafeBytes { send(fd, $0.baseAddress, line.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
    }

    /// Reads request lines until the client closes; answers each with one line.
    private func converse(_ fd: Int32) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        // Each request line must be complete within `requestTimeoutMs` of the previous answer
        // (or of connecting): a client dripping bytes cannot hold its thread for ever.
        var deadline = ws_monotonic_ns() &+ UInt64(requestTimeoutMs) * 1_000_000
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
                deadline = ws_monotonic_ns() &+ UInt64(requestTimeoutMs) * 1_000_000
            }
            if buffer.count > 65536 { _ = writeAll(fd, Array(#"{"ok":false,"error":"request line longer than 64 KiB"}"#.utf8) + [0x0A]); return }
            let now = ws_monotonic_ns()
            guard now < deadline else {
                _ = writeAll(fd, Array(#"{"ok":false,"error":"no complete request line in time; closing"}"#.utf8) + [0x0A])
                return
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(UInt64(Int32.max), (deadline - now + 999_999) / 1_000_000)))
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
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
            let result = try handlerLock.locked { try handler(request) }
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
        guard var addr = ControlServer.address(path) else { throw ControlSocketError(path, .pathTooLong) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(path, .socket(errno: errno)) }
        defer { Glibc.close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            throw ControlSocketError(path, .connect(errno: errno))
        }
        // The server is checked as it checks us: a socket another user planted at the path would
        // otherwise be believed.
        guard let server = PeerCredentials.of(fd) else {
            throw ControlSocketError(path, .noPeerCredentials)
        }
        if let why = server.refusal {
            throw ControlSocketError(path, .untrustedPeer(why))
        }
        let line = Array(try ControlServer.encode(request)) + [0x0A]
        guard line.withUnsafeBytes({ send(fd, $0.baseAddress, line.count, Int32(MSG_NOSIGNAL)) }) == line.count else {
            throw ControlSocketError(path, .send(errno: errno))
        }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !out.contains(0x0A) {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw ControlSocketError(path, .noAnswer(errno: errno)) }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        guard let nl = out.firstIndex(of: 0x0A) else { throw ControlSocketError(path, .closedWithoutAnswer) }
        return String(decoding: out[..<nl], as: UTF8.self)
    }
}
