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
        let (stats, line) = try askControl(control, "stats", as: RuntimeStats.self)
        if json {
            print(line)
        } else {
            print(stats.renderText(), terminator: "")
        }
    }
}

/// Sends `cmd` to a running warmstart's control socket and decodes the `result` of its answer;
/// returns it with the raw JSON line. Every failure names the socket and the reason.
func askControl<T: Decodable>(_ path: String, _ cmd: String, as type: T.Type) throws -> (result: T, line: String) {
    let line: String
    do { line = try ControlClient.request(path: path, ControlRequest(cmd: cmd)) } catch { throw CLIError.control(error) }
    let answer: ControlAnswer<T>
    do { answer = try JSONDecoder().decode(ControlAnswer<T>.self, from: Data(line.utf8)) } catch {
        throw CLIError.controlAnswer(path: path, command: cmd, line: line)
    }
    guard answer.ok, let result = answer.result else {
        throw CLIError.controlRefused(path: path, reason: answer.error)
    }
    return (result, line)
}

/// The control socket's answer line: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
struct ControlAnswer<T: Decodable>: Decodable {
    var ok: Bool
    var error: String?
    var result: T?
}
