#if canImport(Glibc)
import Glibc
#endif
import CLibURing
import WarmstartIO

/// Socket-level probe of vhost-user and virtio-user ports, as chains of ring operations:
///   server: stat PATH → (stale socket? connect to tell) → unlink → bind/chmod/listen → accept
///   client: connect → on failure wait (10 ms doubling to 1 s) → connect again
/// Every completion first checks the device is still probing: a stop or failure in between
/// makes late completions harmless.
extension Bus {
    // MARK: server side (vhost-user, virtio-user server=1)

    func probeServer(_ d: Device) {
        let path = d.spec.path
        guard path.utf8.count <= UnixSocket.maxPathLength else {
            failed(d, reason: "socket path \(path) is longer than \(UnixSocket.maxPathLength) bytes")
            return
        }
        d.pendingOp = loop.stat(path) { [self] result in
            d.pendingOp = nil
            guard d.state == .probing else { return }
            switch result {
            case .failure(let e) where e.errno == ENOENT:
                listen(d)
            case .failure(let e):
                failed(d, reason: "cannot check socket path \(path): \(IOError.message(e.errno))")
            case .success(let st) where st.isSocket:
                replaceIfStale(d)
            case .success(let st):
                failed(d, reason: "\(path) exists and is a \(st.typeName), not a socket; refusing to replace it")
            }
        }
    }

    /// A socket file is stale when nobody accepts on it (connect is refused). A live one belongs
    /// to another process, and taking it over would cut that process off its peers.
    private func replaceIfStale(_ d: Device) {
        let path = d.spec.path
        guard case .success(let probe) = UnixSocket.makeStream() else {
            failed(d, reason: "cannot create a socket to test \(path): \(IOError.message(errno))")
            return
        }
        d.pendingOp = loop.connect(fd: probe, unixPath: path) { [self] result in
            d.pendingOp = nil
            Glibc.close(probe)
            guard d.state == .probing else { return }
            switch result {
            case .success:
                failed(d, reason: "\(path) is in use: another process accepts connections on it")
            case .failure(let e) where e.errno == ECONNREFUSED:
                if unlink(path) != 0 && errno != ENOENT {
                    failed(d, reason: "cannot remove stale socket \(path): \(IOError.message(errno))")
                    return
                }
                listen(d)
            case .failure(let e):
                failed(d, reason: "cannot test existing socket \(path): \(IOError.message(e.errno))")
            }
        }
    }

    private func listen(_ d: Device) {
        let path = d.spec.path
        let fd: Int32
        switch UnixSocket.makeStream() {
        case .success(let s): fd = s
        case .failure(let e):
            failed(d, reason: "cannot create socket for \(path): \(IOError.message(e.errno))")
            return
        }
        switch UnixSocket.listen(fd: fd, path: path, mode: d.spec.socketMode) {
        case .success:
            d.listenFD = fd
            d.ownsSocketFile = true
            acceptNext(d)
        case .failure(let e):
            Glibc.close(fd)
            if e.operation.hasPrefix("chmod") || e.operation.hasPrefix("listen") { unlink(path) }
            failed(d, reason: Bus.listenFailure(path: path, error: e))
        }
    }

    static func listenFailure(path: String, error e: IOError) -> String {
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let where_ = dir.isEmpty ? "the current directory" : dir
        switch e.errno {
        case EACCES, EPERM:
            return "cannot create socket \(path): \(IOError.message(e.errno)) (is \(where_) writable by this user?)"
        case EROFS:
            return "cannot create socket \(path): \(where_) is on a read-only file system"
        case ENOENT, ENOTDIR:
            return "cannot create socket \(path): directory \(where_) does not exist"
        case EADDRINUSE:
            return "cannot create socket \(path): the path appeared while probing (another process?)"
        default:
            return "cannot create socket \(path): \(e.description)"
        }
    }

    /// Waits for the next frontend. Also used after a peer went away: the listening socket stays.
    func acceptNext(_ d: Device) {
        guard d.listenFD >= 0 else { probeServer(d); return }
        d.pendingOp = loop.accept(fd: d.listenFD) { [self] result in
            d.pendingOp = nil
            // Suspended for a handoff: the cancelled accept is not a failure (thaw re-arms it).
            if d.acceptFrozen, case .failure(let e) = result, e.isCanceled { return }
            guard d.state == .probing else {
                if case .success(let fd) = result { Glibc.close(fd) }
                return
            }
            switch result {
            case .success(let fd):
                connected(d, fd: fd)
            case .failure(let e) where e.errno == EINTR || e.errno == ECONNABORTED || e.errno == EAGAIN:
                acceptNext(d)
            case .failure(let e):
                failed(d, reason: "accept on \(d.spec.path): \(IOError.message(e.errno))")
            }
        }
    }

    // MARK: client side (vhost-user-client, virtio-user)

    func probeClient(_ d: Device) {
        let path = d.spec.path
        guard path.utf8.count <= UnixSocket.maxPathLength else {
            failed(d, reason: "socket path \(path) is longer than \(UnixSocket.maxPathLength) bytes")
            return
        }
        let fd: Int32
        switch UnixSocket.makeStream() {
        case .success(let s): fd = s
        case .failure(let e):
            failed(d, reason: "cannot create socket for \(path): \(IOError.message(e.errno))")
            return
        }
        d.pendingOp = loop.connect(fd: fd, unixPath: path) { [self] result in
            d.pendingOp = nil
            guard d.state == .probing else { Glibc.close(fd); return }
            switch result {
            case .success:
                connected(d, fd: fd)
            case .failure(let e):
                Glibc.close(fd)
                // The frontend may simply not be up yet (ENOENT, ECONNREFUSED) or be restarting:
                // keep trying, slower each time, and say so in the device's reason.
                d.backoffNs = d.backoffNs == 0 ? d.backoffMinNs : min(d.backoffNs * 2, d.backoffMaxNs)
                d.reason = "connect \(path): \(IOError.message(e.errno)); retrying in \(d.backoffNs / 1_000_000) ms"
                transition(d, to: .probing)
                scheduleReconnect(d, after: d.backoffNs)
            }
        }
    }

    func scheduleReconnect(_ d: Device, after ns: UInt64) {
        d.pendingOp = loop.timeout(nanoseconds: ns) { [self] result in
            d.pendingOp = nil
            guard case .success = result, d.state == .probing else { return }
            probeClient(d)
        }
    }
}

extension Device {
    var backoffMinNs: UInt64 { UInt64(spec.option("backoff-min-ms").flatMap { Int($0) } ?? 10) * 1_000_000 }
    var backoffMaxNs: UInt64 {
        max(backoffMinNs, UInt64(spec.option("backoff-max-ms").flatMap { Int($0) } ?? 1000) * 1_000_000)
    }
}
