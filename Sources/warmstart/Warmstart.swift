import ArgumentParser
import WarmstartRuntime

@main
struct Warmstart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warmstart",
        abstract: "A fast-boot packet-processing runtime: snapshot, restore by mmap, lazy parallel probe, vhost-user datapath.",
        subcommands: [Run.self, StatsCommand.self, SnapshotCommand.self, ReportCommand.self, BenchCommand.self],
        defaultSubcommand: Run.self
    )

    static func main() {
        // Before anything opens a socket: a peer that goes away must not kill the process.
        Runtime.ignoreBrokenPipes()
        main(nil)
    }
}
