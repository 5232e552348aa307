import CWarmstartShim
import Foundation
import WarmstartVhostUserWire

// The descriptor helpers the wire tests need (WarmstartVhostUserTests keeps its own copies beside
// the session fixtures; a test target cannot share another's files).
func makeEventFD() -> Int32 { ws_eventfd(0, WS_EFD_CLOEXEC) }
func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

/// What descriptor `fd` refers to: the file's device and inode and, for an eventfd (all share one
/// anonymous inode), the kernel's `eventfd-id` from fdinfo. Nil when `fd` is not open.
func fileIdentity(_ fd: Int32) -> String? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    var identity = "\(st.st_dev):\(st.st_ino)"
    if let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8),
       let line = info.split(separator: "\n").first(where: { $0.hasPrefix("eventfd-id:") }) {
        identity += " eventfd \(line.dropFirst("eventfd-id:".count).trimmingCharacters(in: .whitespaces))"
    }
    return identity
}

func msg(_ r: VhostUserRequest, _ p: VhostUserPayload = .none, fds: [Int32] = [], needReply: Bool = false) -> VhostUserMessage {
    VhostUserMessage(request: r, payload: p, fds: fds, needReply: needReply)
}
