import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `ip ARGS` (iproute2), its output discarded; returns its exit status.
@discardableResult
func ip(_ args: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

/// A fresh network namespace for a TAP test, named `prefix-PID`, with IPv6 off (no router
/// solicitations or MLD on the TAP: only the test's packets cross it). Skips, saying why, where
/// the machine cannot have one. The caller deletes it: `defer { _ = try? ip(["netns", "del", ns]) }`.
func makeTapTestNamespace(_ prefix: String) throws -> String {
    guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace and a TAP") }
    guard access("/dev/net/tun", R_OK | W_OK) == 0 else { throw XCTSkip("/dev/net/tun is not available") }
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { throw XCTSkip("iproute2 (ip) is not installed") }
    let ns = "\(prefix)-\(getpid())"
    guard try ip(["netns", "add", ns]) == 0 else { throw XCTSkip("cannot create network namespace \(ns)") }
    do {
        try ip(["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        try ip(["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
    } catch {
        _ = try? ip(["netns", "del", ns])
        throw error
    }
    return ns
}
