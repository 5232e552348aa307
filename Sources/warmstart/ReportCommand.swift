import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartRuntime

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Print a boot report: a saved one (JSON) again, or a running warmstart's (--control).")
    @Argument(help: "A report written by --report-json.")
    var file: String?
    @Option(help: "The control socket of a running warmstart (`warmstart run --control PATH`).")
    var control: String?
    @Option(name: .customLong("svg"), help: "Also draw its timeline as SVG to this file.")
    var svg: String?

    func validate() throws {
        if (file == nil) == (control == nil) { throw ValidationError("give either a report FILE or --control PATH") }
    }

    func run() throws {
        let report: BootReport
        if let control {
            report = try askControl(control, "report", as: BootReport.self).result
        } else {
            let path = file!
            let bytes = try readFile(path)
            do { report = try BootReport.decode(Data(bytes)) } catch {
                throw CLIError.notABootReport(path: path, error)
            }
        }
        print(report.renderText(), terminator: "")
        if let svg { try writeFile(svg, Array(report.renderSVG().utf8)) }
    }
}
