#if canImport(Glibc)
import Glibc
#endif

/// A port declaration that was refused: what was wrong and what would have been accepted.
public indirect enum PortSpecError: Error, CustomStringConvertible, Equatable, Sendable {
    /// One `--port` value (`entry`, as given) and what is wrong with it.
    case port(entry: String, Problem)
    /// A line of a config file (`source`: its path, or "config").
    case line(source: String, number: Int, PortSpecError)
    /// The config file could not be opened or read.
    case unreadableConfig(path: String, errno: Int32)
    /// `--port` or `--config` was the last argument.
    case missingValue(flag: String)

    public enum Problem: Equatable, Sendable {
        case notKindAndPath
        case unknownKind(String)
        case missingPath(DeviceKind)
        case notKeyValue(item: String, kind: DeviceKind)
        case unknownKey(String, kind: DeviceKind)
        case interfaceNameTooLong(String)
        case badMode(String)
        case notPositiveInteger(key: String, value: String)
        case notOnOff(key: String, value: String)
        case badRingSize(String)
        case badMAC(String, why: String)
        case badMTU(String)
        case badFeatures(String)
        case emptyName
        case badMaxMemory(String)
    }

    public var description: String {
        switch self {
        case let .port(entry, problem): return "port '\(entry)': \(Self.text(problem))"
        case let .line(source, number, error): return "\(source):\(number): \(error.description)"
        case let .unreadableConfig(path, e): return "config \(path): \(String(cString: strerror(e)))"
        case let .missingValue(flag): return "\(flag) needs a value"
        }
    }

    static func text(_ problem: Problem) -> String {
        switch problem {
        case .notKindAndPath: return "expected KIND:PATH (valid kinds: \(DeviceKind.validNames))"
        case let .unknownKind(k): return "unknown kind '\(k)' (valid kinds: \(DeviceKind.validNames))"
        case let .missingPath(kind): return "\(kind.rawValue) needs a \(kind == .tap ? "interface name" : "socket path") after the colon"
        case let .notKeyValue(item, kind):
            return "'\(item)' is not key=value (valid keys for \(kind.rawValue): \(kind.validKeys.joined(separator: ", ")))"
        case let .unknownKey(key, kind):
            return "unknown key '\(key)' for \(kind.rawValue) (valid keys: \(kind.validKeys.joined(separator: ", ")))"
        case let .interfaceNameTooLong(name): return "interface name '\(name)' is longer than 15 characters"
        case let .badMode(v): return "mode '\(v)' is not an octal permission like 0600"
        case let .notPositiveInteger(key, v): return "\(key) '\(v)' is not a positive integer"
        case let .notOnOff(key, v): return "\(key) '\(v)' must be 0, 1, on or off"
        case let .badRingSize(v): return "size '\(v)' must be a power of two from 2 to 32768"
        case let .badMAC(v, why): return "mac '\(v)' \(why)"
        case let .badMTU(v): return "mtu '\(v)' must be an integer from 68 to 65535"
        case let .badFeatures(v): return "features '\(v)' is not a 64-bit mask (0x... hexadecimal or decimal)"
        case .emptyName: return "name is empty"
        case let .badMaxMemory(v): return "max-memory '\(v)' is not a positive size like 64G (bytes, or K, M, G, T: powers of 1024)"
        }
    }
}
