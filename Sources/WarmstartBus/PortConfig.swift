#if canImport(Glibc)
import Glibc
#endif

/// Port lists from a config file or the command line.
extension PortSpec {
    /// One entry per line, the same syntax as `--port`; `#` starts a comment; blank lines are
    /// ignored. A leading `port ` or `--port ` is accepted so lines can be pasted from a command.
    /// Errors say `SOURCE:LINE: ...`.
    public static func parseConfig(_ text: String, source: String = "config") throws(PortSpecError) -> [PortSpec] {
        var specs: [PortSpec] = []
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            var entry = String(line).trimmingSpaces()
            if entry.isEmpty { continue }
            for prefix in ["--port=", "--port ", "port "] where entry.hasPrefix(prefix) {
                entry = String(entry.dropFirst(prefix.count)).trimmingSpaces()
            }
            do {
                specs.append(try parse(entry))
            } catch {
                throw .line(source: source, number: number + 1, error)
            }
        }
        return specs
    }

    /// Reads and parses a config file.
    public static func loadConfig(path: String) throws(PortSpecError) -> [PortSpec] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw .unreadableConfig(path: path, errno: errno) }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .unreadableConfig(path: path, errno: errno)
            }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return try parseConfig(String(decoding: data, as: UTF8.self), source: path)
    }

    /// Collects `--port SPEC`, `--port=SPEC`, `--config FILE` and `--config=FILE` from `arguments`
    /// in order; other arguments are left for the caller.
    public static func fromArguments(_ arguments: [String]) throws(PortSpecError) -> [PortSpec] {
        var specs: [PortSpec] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            func value(_ flag: String) throws(PortSpecError) -> String? {
                if a == flag {
                    guard i + 1 < arguments.count else { throw .missingValue(flag: flag) }
                    i += 1
                    return arguments[i]
                }
                if a.hasPrefix(flag + "=") { return String(a.dropFirst(flag.count + 1)) }
                return nil
            }
            if let p = try value("--port") {
                specs.append(try parse(p))
            } else if let f = try value("--config") {
                specs.append(contentsOf: try loadConfig(path: f))
            }
            i += 1
        }
        return specs
    }
}
