import CWarmstartShim
import Foundation
import WarmstartVhostUserWire
#if canImport(Glibc)
import Glibc
#endif

// Descriptor helpers for the vhost-user tests (session and wire alike).

public func makeEventFD() -> Int32 { ws_eventfd(0, WS_EFD_CLOEXEC) }
public func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

/// What descriptor `fd` refers to, comparable between descriptors: the file's device and inode
/// (a memfd or a file is its inode) and, for an eventfd — all eventfds share one anonymous inode —
/// the id the kernel gives each one (`eventfd-id` in fdinfo). Nil when `fd` is not open.
public func fileIdentity(_ fd: Int32) -> String? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    var identity = "\(st.st_dev):\(st.st_ino)"
    if let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8),
       let line = info.split(separator: "\n").first(where: { $0.hasPrefix("eventfd-id:") }) {
        identity += " eventfd \(line.dropFirst("eventfd-id:".count).trimmingCharacters(in: .whitespaces))"
    }
    return identity
}

/// A vhost-user message as a test writes it.
public func msg(_ r: VhostUserRequest, _ p: VhostUserPayload = .none, fds: [Int32] = [], needReply: Bool = false) -> VhostUserMessage {
    VhostUserMessage(request: r, payload: p, fds: fds, needReply: needReply)
}
