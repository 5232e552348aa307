import CWarmstartShim
import WarmstartBus
import WarmstartRuntime
import WarmstartSnapshot
#if canImport(Glibc)
import Glibc
#endif

/// The main job's self-contained default (`warmstart run` with no ports): a loopback inside one
/// process. The runtime brings up a vhost-user back-end port on a socket in a private temp
/// directory and forwards with macswap on its polling core; a virtio-user front-end on the other
/// core (`Bench.drive`) connects to that socket and generates traffic for `duration` seconds.
///
/// Why one process and not a child: one boot (the boot report covers everything that ran), no
/// child to reap or leak, and the front-end shares the runtime's own memory — the back-end maps
/// it back through SET_MEM_TABLE exactly as it would a guest's, so the whole protocol path runs
/// (socket, negotiation, memory table, both ring directions) while the two halves still sit on
/// different CPUs like two processes would.
public enum SelfLoopback {
    public struct Result {
        public var traffic: BenchResult
        /// Stopped by the time `run` returns; its device timings and counters stay readable.
        public var runtime: Runtime
        /// Boot-clock ms at which the loopback was up (front-end port started): the end of boot.
        public var readyMs: Double
        /// The private temp directory that held the socket: removed by the time `run` returns.
        public var directory: String
    }

    public static func run(memory: LiveMemory, recorder: PhaseRecorder, duration: Double, size: Int = 64,
                           packed: Bool = false, progress: (String) -> Void = { _ in }) throws -> Result {
        var template = Array("/tmp/warmstart-loop-XXXXXX".utf8CString)
        guard let dirp = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw BenchError.temporaryDirectory(errno: errno)
        }
        let dir = String(cString: dirp)
        let sock = dir + "/loop.sock"
        let spec = try PortSpec.parse("vhost-user:\(sock),name=loop-backend")
        let runtime = try Runtime(options: RuntimeOptions(ports: [spec], forward: .macswap, cores: 1),
                                  memory: memory, recorder: recorder)
        try runtime.start()
        defer {
            runtime.stop()
            unlink(sock)
            rmdir(dir)
        }
        var o = BenchOptions()
        o.duration = duration
        o.size = size
        o.packed = packed
        o.mode = .loopback
        let backendCPU = Runtime.cpus(forThreads: 1)[0]
        o.cpu = backendCPU == 0 ? 1 : 0
        let t0 = ws_monotonic_ns()
        let traffic = try Bench.drive(memory: memory, socket: sock, options: o, startNs: t0, progress: progress)
        runtime.recordDevicePhases()
        return Result(traffic: traffic, runtime: runtime, readyMs: recorder.clock.ms(t0) + traffic.setupMs, directory: dir)
    }
}
