import CWarmstartShim
#if canImport(Glibc)
import Glibc
#endif

/// Monotonic time since the process was exec'd, the origin of every boot figure.
///
/// The kernel does not expose the exec time with better than 10 ms resolution (/proc/self/stat,
/// field 22, in clock ticks). A launcher that wants a precise figure (the benchmarks, the tests,
/// a supervisor) sets WARMSTART_EXEC_NS to CLOCK_MONOTONIC nanoseconds just before exec, or, from a
/// shell, WARMSTART_EXEC_EPOCH to bash's $EPOCHREALTIME (`WARMSTART_EXEC_EPOCH=$EPOCHREALTIME exec ...`).
public struct BootClock: Sendable {
    /// CLOCK_MONOTONIC ns at exec.
    public let originNs: UInt64
    /// CLOCK_MONOTONIC ns when main() started.
    public let mainNs: UInt64
    public let coarse: Bool

    public init(environment: [String: String]) {
        mainNs = ws_monotonic_ns()
        if let text = environment["WARMSTART_EXEC_NS"], let v = UInt64(text), v <= mainNs, mainNs - v < 60_000_000_000 {
            originNs = v
            coarse = false
        } else if let text = environment["WARMSTART_EXEC_EPOCH"], let v = BootClock.realtimeToMonotonic(text),
                  v <= mainNs, mainNs - v < 60_000_000_000 {
            originNs = v
            coarse = false
        } else if let start = BootClock.procStartNs(), start <= mainNs {
            originNs = start
            coarse = true
        } else {
            originNs = ws_image_start_ns() > 0 ? ws_image_start_ns() : mainNs
            coarse = true
        }
    }

    public func ms(_ ns: UInt64) -> Double { Double(Int64(bitPattern: ns &- originNs)) / 1e6 }
    public func nowMs() -> Double { ms(ws_monotonic_ns()) }

    /// "1764000000.123456" (CLOCK_REALTIME seconds, as bash's $EPOCHREALTIME) → CLOCK_MONOTONIC ns.
    static func realtimeToMonotonic(_ text: String) -> UInt64? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let sec = UInt64(parts[0]) else { return nil }
        var frac: UInt64 = 0
        if parts.count == 2 {
            let digits = parts[1].prefix(9)
            guard let f = UInt64(digits) else { return nil }
            frac = f
            for _ in digits.count..<9 { frac *= 10 }
        }
        var real = timespec(), mono = timespec()
        clock_gettime(CLOCK_REALTIME, &real)
        clock_gettime(CLOCK_MONOTONIC, &mono)
        let realNs = UInt64(real.tv_sec) * 1_000_000_000 + UInt64(real.tv_nsec)
        let monoNs = UInt64(mono.tv_sec) * 1_000_000_000 + UInt64(mono.tv_nsec)
        let thenReal = sec * 1_000_000_000 + frac
        guard thenReal <= realNs, realNs - thenReal <= monoNs else { return nil }
        return monoNs - (realNs - thenReal)
    }

    /// The process start time from /proc/self/stat, converted to CLOCK_MONOTONIC: starttime is in
    /// ticks since boot (CLOCK_BOOTTIME), so subtract the time spent suspended.
    static func procStartNs() -> UInt64? {
        guard let fd = Optional(open("/proc/self/stat", O_RDONLY | O_CLOEXEC)), fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1024)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard n > 0 else { return nil }
        let text = String(decoding: buf[0..<n], as: UTF8.self)
        // Fields after the command name (which may contain spaces) start after the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); starttime is field 22.
        guard fields.count > 19, let ticks = UInt64(fields[19]) else { return nil }
        let hz = UInt64(sysconf(Int32(_SC_CLK_TCK)))
        var boot = timespec(), mono = timespec()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        clock_gettime(CLOCK_MONOTONIC, &mono)
        let bootNs = UInt64(boot.tv_sec) * 1_000_000_000 + UInt64(boot.tv_nsec)
        let monoNs = UInt64(mono.tv_sec) * 1_000_000_000 + UInt64(mono.tv_nsec)
        let startBoot = ticks * (1_000_000_000 / max(hz, 1))
        let suspended = bootNs &- monoNs
        return startBoot >= suspended ? startBoot - suspended : nil
    }
}
