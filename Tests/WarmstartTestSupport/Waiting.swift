import Foundation

/// How long a wait for an event (a state reached, a frame or a count arrived, a process gone, a
/// file written) may take: for a machine loaded by parallel builds. Every wait returns as soon as
/// its condition holds; checks that something does *not* happen keep their short windows.
public let testDeadline: Double = 60

/// Polls `condition` every `interval` µs until it holds (true, at once) or `timeout` seconds
/// passed (false). For waits whose end is an event, never a measurement of speed.
@discardableResult
public func waitUntil(timeout: Double = testDeadline, interval: useconds_t = 1000, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return true }
        if Date() >= end { return false }
        usleep(interval)
    }
}

/// A unix stream socket listening on `path` (a stand-in peer's listener), or -1.
public func listenUnix(_ path: String, backlog: Int32 = 4) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard fd >= 0, bound == 0, listen(fd, backlog) == 0 else { if fd >= 0 { close(fd) }; return -1 }
    return fd
}
