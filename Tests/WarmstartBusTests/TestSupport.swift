import XCTest
import Glibc
import Foundation
import WarmstartIO
@testable import WarmstartBus

/// How long a wait for an event (a state reached, a frame arrived) may take: for a machine
/// loaded by parallel builds. Waits return as soon as their condition holds; checks that
/// something does *not* happen keep their short windows.
let testDeadline: Double = 60

/// Stand-in for the vhost-user layer: the peer sends "HELLO", the driver answers "OK" and marks
/// the device ready and started; a closed connection sends the device back to probing.
final class HandshakeDriver: DeviceDriver {
    final class Session {
        var alive = true
        var negotiated = false
    }
    let lock = NSLock()
    private(set) var attaches = 0

    func attach(device: Device, fd: Int32, bus: Bus) {
        lock.withLock { attaches += 1 }
        let session = Session()
        device.driverContext = session
        receive(device: device, fd: fd, bus: bus, session: session)
    }

    private func receive(device: Device, fd: Int32, bus: Bus, session: Session) {
        bus.loop.receiveMessage(fd: fd, maxBytes: 64) { [self] result in
            guard session.alive else { return }
            switch result {
            case .success(let m) where m.bytes.isEmpty:
                bus.peerClosed(device, reason: session.negotiated ? "peer closed the connection"
                                                                  : "peer closed during negotiation")
            case .success(let m) where !session.negotiated:
                guard m.bytes == Array("HELLO".utf8) else {
                    return bus.failed(device, reason: "unexpected first message")
                }
                bus.loop.sendMessage(fd: fd, bytes: Array("OK".utf8)) { r in
                    guard session.alive else { return }
                    if case .failure(let e) = r { return bus.peerClosed(device, reason: e.description) }
                    session.negotiated = true
                    bus.ready(device)
                    bus.started(device)
                    self.receive(device: device, fd: fd, bus: bus, session: session)
                }
            case .success:
                receive(device: device, fd: fd, bus: bus, session: session)
            case .failure(let e):
                bus.peerClosed(device, reason: e.description)
            }
        }
    }

    func detach(device: Device, bus: Bus) {
        (device.driverContext as? Session)?.alive = false
        device.driverContext = nil
    }
}

/// Plain blocking socket helpers for the peers the tests play.
enum Peer {
    static func socketFD() -> Int32 { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }

    static func withAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        let addr = UnsafeMutablePointer<sockaddr_un>.allocate(capacity: 1)
        defer { addr.deallocate() }
        let len = UnixSocket.fill(addr, path: path)!
        return addr.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, len) }
    }

    /// A frontend already waiting (QEMU server=on): a listening socket at `path`.
    static func listen(_ path: String) -> Int32 {
        let fd = socketFD()
        unlink(path)
        precondition(withAddress(path) { bind(fd, $0, $1) } == 0, "bind \(path): \(String(cString: strerror(errno)))")
        precondition(Glibc.listen(fd, 16) == 0)
        return fd
    }

    static func connect(_ path: String) -> Int32? {
        let fd = socketFD()
        var rc = withAddress(path, { Glibc.connect(fd, $0, $1) })
        while rc != 0 && errno == EINTR { rc = withAddress(path, { Glibc.connect(fd, $0, $1) }) }
        if rc == 0 { return fd }
        close(fd)
        return nil
    }

    /// Connects once the bus listens: its socket file can exist a moment before it accepts
    /// (bound, not yet listening: ECONNREFUSED), so a test that only waited for the file retries.
    static func connectWhenListening(_ path: String, timeout: Double = testDeadline) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let fd = connect(path) { return fd }
            if Date() >= deadline { return nil }
            usleep(1000)
        }
    }

    /// Sends HELLO (after `delay`) and waits for OK; true when the handshake completed.
    @discardableResult
    static func handshake(_ fd: Int32, delay: TimeInterval = 0) -> Bool {
        if delay > 0 { Thread.sleep(forTimeInterval: delay) }
        guard send(fd, "HELLO", 5, Int32(MSG_NOSIGNAL)) == 5 else {
            print("handshake: send: \(String(cString: strerror(errno)))")
            return false
        }
        var buf = [UInt8](repeating: 0, count: 16)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // EINTR: a socket call under SO_RCVTIMEO is never restarted, and io_uring's task-work
        // notification can reach this thread (it created and started the bus's ring). Retry.
        var n = recv(fd, &buf, 16, 0)
        while n < 0 && errno == EINTR { n = recv(fd, &buf, 16, 0) }
        let ok = n == 2 && buf[0] == UInt8(ascii: "O") && buf[1] == UInt8(ascii: "K")
        if !ok { print("handshake: recv \(n)\(n < 0 ? ": " + String(cString: strerror(errno)) : ""), bytes \(buf.prefix(max(0, n)))") }
        return ok
    }
}

/// Runs `body` on a background thread; `join` waits for it.
final class Background {
    private let done = DispatchSemaphore(value: 0)
    init(_ body: @escaping () -> Void) {
        let t = Thread { body(); self.done.signal() }
        t.start()
    }
    @discardableResult
    func join(timeout: TimeInterval = 10) -> Bool { done.wait(timeout: .now() + timeout) == .success }
}

func makeTempDir(_ tag: String = "bus") -> String {
    var template = Array("/tmp/ws-\(tag)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return String(cString: p!)
}

func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

extension Bus {
    func record(_ name: String) -> DeviceRecord? { snapshot().first { $0.name == name } }
    func waitFor(_ name: String, _ state: DeviceState, timeout: Double = testDeadline) -> Bool {
        wait(timeoutSeconds: timeout) { $0.first { $0.name == name }?.state == state }
    }
}
