#if canImport(Glibc)
import Glibc
#endif
import CLibURing
import CWarmstartShim

/// Typed operations. Each handler runs once, on the loop thread, with the result of the
/// operation; errors name the operation and its target.
extension IOLoop {
    /// Largest number of descriptors one message may carry (vhost-user sends at most 8).
    public static let maxMessageFDs = 8

    private static func result(_ res: Int32, _ what: @autoclosure () -> String) -> IOResult<Int32> {
        res >= 0 ? .success(res) : .failure(IOError(errno: -res, operation: what()))
    }

    /// openat(2) relative to `dirfd`; the result is the new descriptor (O_CLOEXEC is added).
    @discardableResult
    public func open(_ path: String, flags: Int32, mode: mode_t = 0, dirfd: Int32 = AT_FDCWD,
                     _ done: @escaping (IOResult<Int32>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let p = PendingOp.cString(path, into: &owned)
        return submit(.openat(dirfd: dirfd, path: p, flags: flags | O_CLOEXEC, mode: mode), owned: owned) { res in
            done(IOLoop.result(res, "open \(path)"))
        }
    }

    /// Reads up to `count` bytes (at `offset`, or at the file position when nil).
    @discardableResult
    public func read(fd: Int32, count: Int, offset: UInt64? = nil,
                     _ done: @escaping (IOResult<[UInt8]>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let buf = PendingOp.allocateBytes(count, into: &owned)
        return submit(.read(fd: fd, buffer: buf, length: count, offset: offset ?? .max), owned: owned) { res in
            done(IOLoop.result(res, "read fd \(fd)").map {
                Array(UnsafeRawBufferPointer(start: buf, count: Int($0)))
            })
        }
    }

    /// Writes `bytes` (at `offset`, or at the file position when nil); the result is the count.
    @discardableResult
    public func write(fd: Int32, bytes: [UInt8], offset: UInt64? = nil,
                      _ done: @escaping (IOResult<Int>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let buf = PendingOp.allocateBytes(bytes.count, into: &owned)
        bytes.withUnsafeBytes { if $0.count > 0 { buf.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        return submit(.write(fd: fd, buffer: buf, length: bytes.count, offset: offset ?? .max), owned: owned) { res in
            done(IOLoop.result(res, "write fd \(fd)").map { Int($0) })
        }
    }

    /// statx(2) of `path` itself (symbolic links are not followed).
    @discardableResult
    public func stat(_ path: String, _ done: @escaping (IOResult<FileStatus>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let p = PendingOp.cString(path, into: &owned)
        let sx = PendingOp.allocate(statx.self, into: &owned)
        return submit(.statx(path: p, result: sx), owned: owned) { res in
            done(IOLoop.result(res, "stat \(path)").map { _ in
                FileStatus(mode: UInt32(sx.pointee.stx_mode), size: sx.pointee.stx_size, uid: sx.pointee.stx_uid)
            })
        }
    }

    /// Connects an AF_UNIX stream socket to `path`.
    @discardableResult
    public func connect(fd: Int32, unixPath path: String, _ done: @escaping (IOResult<Void>) -> Void) -> IOOpID? {
        var owned: [UnsafeMutableRawPointer] = []
        let addr = PendingOp.allocate(sockaddr_un.self, into: &owned)
        guard let len = UnixSocket.fill(addr, path: path) else {
            // Reported through the handler like any other failure, but on the next iteration
            // so the caller never re-enters itself.
            post { done(.failure(IOError(errno: ENAMETOOLONG, operation: "connect \(path)"))) }
            for p in owned { p.deallocate() }
            return nil
        }
        return submit(.connect(fd: fd, address: addr, length: len), owned: owned) { res in
            done(IOLoop.result(res, "connect \(path)").map { _ in () })
        }
    }

    /// Accepts one connection on a listening socket; the result is the new descriptor.
    @discardableResult
    public func accept(fd: Int32, _ done: @escaping (IOResult<Int32>) -> Void) -> IOOpID {
        submit(.accept(fd: fd)) { res in done(IOLoop.result(res, "accept fd \(fd)")) }
    }

    /// Receives one message of up to `maxBytes` with up to `maxFDs` descriptors (SCM_RIGHTS).
    /// A zero-length message means the peer closed the connection.
    @discardableResult
    public func receiveMessage(fd: Int32, maxBytes: Int, maxFDs: Int = IOLoop.maxMessageFDs,
                               _ done: @escaping (IOResult<ReceivedMessage>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let buf = PendingOp.allocateBytes(maxBytes, into: &owned)
        let block = PendingOp.allocateBytes(ws_msgblock_size(), into: &owned)
        let header = ws_msgblock_prepare_recv(block, buf, maxBytes)!
        return submit(.recvmsg(fd: fd, header: header), owned: owned) { res in
            // Collect descriptors even on error paths where the kernel delivered some, so none leak.
            var fds = [Int32](repeating: -1, count: 16)
            var truncated: Int32 = 0
            let n = res >= 0 ? Int(ws_msgblock_collect_fds(block, &fds, Int32(min(maxFDs, 16)), &truncated)) : 0
            done(IOLoop.result(res, "recvmsg fd \(fd)").map {
                ReceivedMessage(bytes: Array(UnsafeRawBufferPointer(start: buf, count: Int($0))),
                                fds: Array(fds[0..<n]), truncated: truncated != 0)
            })
        }
    }

    /// Sends `bytes` and `fds` as one message; the result is the number of bytes sent.
    /// The caller keeps ownership of `fds` (the kernel duplicates them into the peer).
    @discardableResult
    public func sendMessage(fd: Int32, bytes: [UInt8], fds: [Int32] = [],
                            _ done: @escaping (IOResult<Int>) -> Void) -> IOOpID? {
        guard fds.count <= 16 else {
            post { done(.failure(IOError(errno: EINVAL, operation: "sendmsg fd \(fd): \(fds.count) descriptors"))) }
            return nil
        }
        var owned: [UnsafeMutableRawPointer] = []
        let buf = PendingOp.allocateBytes(bytes.count, into: &owned)
        bytes.withUnsafeBytes { if $0.count > 0 { buf.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        let block = PendingOp.allocateBytes(ws_msgblock_size(), into: &owned)
        let header = fds.withUnsafeBufferPointer {
            ws_msgblock_prepare_send(block, buf, bytes.count, $0.baseAddress, Int32(fds.count))!
        }
        return submit(.sendmsg(fd: fd, header: header), owned: owned) { res in
            done(IOLoop.result(res, "sendmsg fd \(fd)").map { Int($0) })
        }
    }

    /// Waits until `fd` has one of `events` (POLLIN, POLLOUT, ...); the result is the revents.
    @discardableResult
    public func poll(fd: Int32, events: Int16, _ done: @escaping (IOResult<Int16>) -> Void) -> IOOpID {
        submit(.poll(fd: fd, events: events)) { res in
            done(IOLoop.result(res, "poll fd \(fd)").map { Int16(truncatingIfNeeded: $0) })
        }
    }

    /// Fires after `nanoseconds`: `.success` when the time passed, a failure with ECANCELED when
    /// cancelled first.
    @discardableResult
    public func timeout(nanoseconds: UInt64, _ done: @escaping (IOResult<Void>) -> Void) -> IOOpID {
        var owned: [UnsafeMutableRawPointer] = []
        let spec = PendingOp.allocate(__kernel_timespec.self, into: &owned)
        return submit(.timeout(nanoseconds: nanoseconds, spec: spec), owned: owned) { res in
            done(res == -ETIME || res >= 0 ? .success(()) : .failure(IOError(errno: -res, operation: "timeout")))
        }
    }

    /// Closes `fd` through the loop (the handler may be omitted).
    @discardableResult
    public func close(fd: Int32, _ done: ((IOResult<Void>) -> Void)? = nil) -> IOOpID {
        submit(.close(fd: fd)) { res in done?(IOLoop.result(res, "close fd \(fd)").map { _ in () }) }
    }
}
