import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartRuntime

/// `warmstart stats --control PATH [--json]`: asks a running `warmstart run --control PATH` for its
/// per-port and per-queue counters and device states.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print the counters and device states of a running warmstart (via its control socket).")

    @Option(help: "The control socket of the running warmstart (`warmstart run --control PATH`).")
    var control: String
    @Flag(help: "Print the JSON answer as is.")
    var json = false

    func run() throws {
        let line: String
        do { line = try ControlClient.request(path: control, ControlRequest(cmd: "stats")) } catch { throw CLIError("\(error)") }
        struct Answer: Decodable { var ok: Bool; var error: String?; var result: RuntimeStats? }
        let answer: Answer
        do { answer = try JSONDecoder().decode(Answer.self, from: Data(line.utf8)) } catch {
            throw CLIError("control socket \(control): answer is not the expected JSON: \(line.prefix(200))")
        }
        guard answer.ok, let stats = answer.result else {
            throw CLIError("control socket \(control): \(answer.error ?? "request failed")")
        }
        if json {
            print(line)
        } else {
            print(stats.renderText(), terminator: "")
        }
    }
}
