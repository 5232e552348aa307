import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartRuntime

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Print a saved boot report (JSON) again.")
    @Argument(help: "A report written by --report-json.")
    var file: String
    @Option(name: .customLong("svg"), help: "Also draw its timeline as SVG to this file.")
    var svg: String?

    func run() throws {
        let bytes = try readFile(file)
        let report: BootReport
        do { report = try BootReport.decode(Data(bytes)) } catch {
            throw CLIError("\(file) is not a Warmstart boot report: \(error)")
        }
        print(report.renderText(), terminator: "")
        if let svg { try writeFile(svg, Array(report.renderSVG().utf8)) }
    }
}
