import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartBench
import WarmstartRuntime

extension BenchOptions.Mode: ExpressibleByArgument {}
extension BenchOptions.Backend: ExpressibleByArgument {}

/// `warmstart bench`: traffic generator and sink over Warmstart's virtio-user front-end against a
/// vhost-user back-end in a second process.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Drive a vhost-user back-end (Warmstart's own or DPDK's testpmd) from Warmstart's virtio-user front-end and measure it.",
        discussion: """
            Starts the back-end as a child process on a socket in a private temp directory, connects \
            (or, with --frontend-listens, lets it connect), sends --size byte frames in bursts for \
            --duration seconds, and prints Mpps, Gbit/s (frame bytes), drops and round-trip latency \
            percentiles (the send time travels in the payload). With --mode sink the back-end sends \
            (testpmd --forward-mode=txonly, or warmstart run --forward txonly) and we receive and count; \
            drops are then the back-end's count of frames our receive ring had no room for. The child \
            is killed and reaped by pid and the socket removed. Cross-core figures on a shared VM flip minute to minute: compare \
            contenders only in alternating short runs (scripts/bench-virtio-user.sh).
            """)

    enum Layout: String, ExpressibleByArgument, CaseIterable { case split, packed }

    @Option(help: "Ring layout: split or packed.") var layout: Layout = .split
    @Option(help: "Frame size in bytes (60...9216).") var size: Int = 64
    @Option(help: "Packets per burst.") var burst: Int = 32
    @Option(help: "Seconds of traffic.") var duration: Double = 5
    @Option(help: "oneway (we send, the back-end drops: rxonly), loopback (the back-end reflects: macswap) or sink (the back-end sends: txonly; we receive).")
    var mode: BenchOptions.Mode = .loopback
    @Option(help: "Back-end: warmstart (warmstart run --port vhost-user:SOCK) or dpdk (dpdk-testpmd net_vhost).")
    var backend: BenchOptions.Backend = .warmstart
    @Flag(name: .customLong("frontend-listens"), help: "We listen (virtio-user server=1) and the back-end connects.")
    var frontendListens = false
    @Option(name: .customLong("queue-size"), help: "Descriptors per ring.") var queueSize: Int = 256
    @Option(help: "Loopback: most frames on their way at once (default: the queue size, so the back-end never finds our receive ring full; 0: no limit but the rings').")
    var inflight: Int?
    @Option(help: "CPU for the generator; the back-end forwards on the other one.") var cpu: Int = 0
    @Option(help: "Hugepages for our memory: auto, require, off.") var hugepages: HugepageMode = .auto
    @Option(help: "The front-end port's MAC (mac=), the generator's source address; default: random locally administered.")
    var mac: String?
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        if let mac, let why = PortSpec.macProblem(mac) { throw ValidationError("--mac '\(mac)' \(why)") }
    }

    func run() throws {
        var o = BenchOptions()
        o.packed = layout == .packed
        o.size = size; o.burst = burst; o.duration = duration; o.mode = mode; o.backend = backend
        o.frontendListens = frontendListens; o.queueSize = queueSize; o.cpu = cpu; o.hugepages = hugepages
        o.inflight = inflight
        o.mac = mac.flatMap(PortSpec.parseMAC)
        let r: BenchResult
        do {
            r = try Bench.run(o) { line in if !json { print(line) } }
        } catch {
            throw CLIError.bench(error)
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let data = try enc.encode(r)
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(r.text(), terminator: "")
        }
    }
}
