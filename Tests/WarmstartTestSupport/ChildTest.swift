import Foundation

/// Runs one test of this test binary again in a child process, with variables added to its
/// environment (the test sees them and plays the child's part): for scenarios that may crash or
/// hang (a crash fails the test instead of killing the run, a hang costs a kill) and for a second
/// process (a handoff's new process). The child is waited for with a deadline and killed by its
/// pid, never by name.
public enum ChildTest {
    /// What a child ended with.
    public struct Result {
        /// `.exit` or `.uncaughtSignal` (then `status` is the signal).
        public let reason: Process.TerminationReason
        public let status: Int32
        /// The child did not end within the deadline and was killed (SIGKILL).
        public let timedOut: Bool
        /// Its standard output and error, when they were captured (else "").
        public let output: String

        /// XCTest's line for the test having passed in the child.
        public func passed(_ test: String) -> Bool { output.contains("\(test)' passed") }
    }

    /// This test binary.
    public static func executable() throws -> URL {
        URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
    }

    /// Starts `test` ("Module.Class/testMethod") in a child with `environment` added to ours (a nil
    /// value removes the variable). Output goes to the file `output` (created), to `stdout`/`stderr`
    /// pipes, or to /dev/null (stderr to ours with `inheritStderr`: the child's diagnostics in the
    /// test log). With `quiet` the Swift runtime prints no backtrace of a crash it was meant to
    /// have. The caller waits for the process and kills it by pid.
    public static func start(_ test: String, environment: [String: String?], output: String? = nil,
                             stdout: Pipe? = nil, stderr: Pipe? = nil, inheritStderr: Bool = false,
                             quiet: Bool = false) throws -> Process {
        let p = Process()
        p.executableURL = try executable()
        p.arguments = [test]
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        if quiet { env["SWIFT_BACKTRACE"] = "enable=no" }
        p.environment = env
        if let output {
            FileManager.default.createFile(atPath: output, contents: nil)
            guard let h = FileHandle(forWritingAtPath: output) else {
                throw NSError(domain: "ChildTest", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "open \(output)"])
            }
            p.standardOutput = h
            p.standardError = h
        } else {
            p.standardOutput = stdout ?? FileHandle.nullDevice
            if let stderr { p.standardError = stderr } else if !inheritStderr { p.standardError = FileHandle.nullDevice }
        }
        try p.run()
        return p
    }

    /// Runs `test` in a child (see `start`) and waits for it; a child still running after
    /// `deadline` seconds is killed by pid (SIGKILL) and reaped. With `captureOutput` its output
    /// goes to a temporary file, read into the result and removed.
    public static func run(_ test: String, environment: [String: String?], deadline: Double = testDeadline,
                           captureOutput: Bool = false, quiet: Bool = false) throws -> Result {
        let output = captureOutput ? NSTemporaryDirectory() + "ws-child-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log" : nil
        defer { if let output { unlink(output) } }
        let p = try start(test, environment: environment, output: output, quiet: quiet)
        let end = Date().addingTimeInterval(deadline)
        while p.isRunning && Date() < end { usleep(10_000) }
        let timedOut = p.isRunning
        if timedOut { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let text = output.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
        return Result(reason: p.terminationReason, status: p.terminationStatus, timedOut: timedOut, output: text)
    }
}
