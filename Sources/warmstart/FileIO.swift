import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Writes a whole file (0644), naming the path in any error.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    do {
        let fd = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        defer { try? fd.close() }
        _ = try bytes.withUnsafeBytes { try fd.writeAll($0) }
    } catch {
        throw CLIError.write(path: path, error)
    }
}

/// Reads a whole file, naming the path in any error.
func readFile(_ path: String) throws -> [UInt8] {
    do {
        let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        defer { try? fd.close() }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
            if n == 0 { break }
            out += chunk[0..<n]
        }
        return out
    } catch {
        throw CLIError.read(path: path, error)
    }
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var s = s
        s.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
