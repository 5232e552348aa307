import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import WarmstartRuntime

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Create, inspect and verify snapshot files.",
        subcommands: [Create.self, Inspect.self, Verify.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lay out memory and mbuf pools once and persist them.",
            discussion: "A PATH on hugetlbfs (or tmpfs) gives a resident snapshot whose pages stay allocated between runs; on any other file system, a disk snapshot that survives a reboot.")
        @OptionGroup var layout: LayoutOptions
        @Option(help: "Where to write the snapshot.")
        var out: String

        func run() throws {
            let poolLayout = try layout.poolLayout()
            let lines: [String]
            do {
                lines = try SnapshotFiles.create(path: out, layout: poolLayout, pageSize: layout.pageSize)
            } catch {
                throw CLIError.snapshot(error)
            }
            lines.forEach { print($0) }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a snapshot's layout and header checks.")
        @Argument var path: String
        @Flag var json = false
        func run() throws {
            do { printReport(try SnapshotFiles.inspect(path: path), json: json) } catch { throw CLIError.snapshot(error) }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Inspect, and check the payload too; exits non-zero when anything is wrong.")
        @Argument var path: String
        @Flag var json = false
        func run() throws {
            let report: SnapshotReport
            do { report = try SnapshotFiles.verify(path: path) } catch { throw CLIError.snapshot(error) }
            printReport(report, json: json)
            if !report.ok { throw ExitCode(1) }
        }
    }
}

func printReport(_ r: SnapshotReport, json: Bool) {
    print(json ? SnapshotReportText.json(r) : SnapshotReportText.text(r))
}
