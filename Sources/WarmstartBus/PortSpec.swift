#if canImport(Glibc)
import Glibc
#endif

/// The kinds of port `--port KIND:PATH[,key=value...]` accepts.
public enum DeviceKind: String, CaseIterable, Sendable {
    /// Warmstart is the vhost-user backend and listens on PATH.
    case vhostUser = "vhost-user"
    /// Warmstart is the backend and connects to a frontend listening on PATH (QEMU server=on).
    case vhostUserClient = "vhost-user-client"
    /// Warmstart is the virtio frontend of a vhost-user backend at PATH.
    case virtioUser = "virtio-user"
    /// A Linux TAP interface named PATH, with a virtio-net header.
    case tap = "tap"

    /// Keys each kind accepts after the path. `name` names the device in reports.
    public var validKeys: [String] {
        switch self {
        // features=0x...: a mask over the virtio features the back-end offers (e.g. clear bit 34
        // to refuse the packed ring, bit 15 to refuse mergeable RX buffers).
        // max-memory=SIZE: the most address space the front-end's memory table may take
        // (bytes, or with a K/M/G/T suffix, binary).
        case .vhostUser: return ["name", "mode", "queues", "features", "max-memory"]
        case .vhostUserClient: return ["name", "queues", "features", "backoff-min-ms", "backoff-max-ms", "max-memory"]
        case .virtioUser: return ["name", "queues", "server", "mode", "backoff-min-ms", "backoff-max-ms",
                                  "packed", "mrg", "size", "mac", "mtu"]
        case .tap: return ["name", "queues"]
        }
    }

    public static var validNames: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A port error that says what was wrong and what would have been accepted.
public struct PortSpecError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One declared port: `KIND:PATH[,key=value...]`.
public struct PortSpec: Equatable, Sendable, CustomStringConvertible {
    public var kind: DeviceKind
    /// Socket path, or the interface name for `tap`.
    public var path: String
    /// Keys in the order given (validated against `kind.validKeys`).
    public var options: [(key: String, value: String)]

    public static func == (a: PortSpec, b: PortSpec) -> Bool {
        a.kind == b.kind && a.path == b.path && a.options.elementsEqual(b.options, by: { $0 == $1 })
    }

    public func option(_ key: String) -> String? { options.last(where: { $0.key == key })?.value }

    /// Name shown in reports: `name=` if given, else the last component of the path.
    public var name: String {
        if let n = option("name") { return n }
        return path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Socket file mode for listening ports (octal `mode=`), default 0600.
    public var socketMode: mode_t { option("mode").flatMap { mode_t($0, radix: 8) } ?? 0o600 }

    /// `max-memory=SIZE` in bytes, when given (validated by `parse`).
    public var maxMemoryBytes: UInt64? { option("max-memory").flatMap(PortSpec.parseSize) }

    /// virtio-user with server=1 listens instead of connecting.
    public var listens: Bool {
        switch kind {
        case .vhostUser: return true
        case .virtioUser: return option("server") == "1" || option("server") == "on"
        case .vhostUserClient, .tap: return false
        }
    }

    public var description: String {
        ([kind.rawValue + ":" + path] + options.map { "\($0.key)=\($0.value)" }).joined(separator: ",")
    }

    public init(kind: DeviceKind, path: String, options: [(key: String, value: String)] = []) {
        self.kind = kind
        self.path = path
        self.options = options
    }

    /// Parses `KIND:PATH[,key=value...]`. Errors list the valid kinds or keys.
    public static func parse(_ text: String) throws(PortSpecError) -> PortSpec {
        let entry = text.trimmingSpaces()
        guard let colon = entry.firstIndex(of: ":") else {
            throw PortSpecError("port '\(entry)': expected KIND:PATH (valid kinds: \(DeviceKind.validNames))")
        }
        let kindText = String(entry[..<colon])
        guard let kind = DeviceKind(rawValue: kindText) else {
            throw PortSpecError("port '\(entry)': unknown kind '\(kindText)' (valid kinds: \(DeviceKind.validNames))")
        }
        let parts = entry[entry.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let path = parts[0]
        guard !path.isEmpty else {
            throw PortSpecError("port '\(entry)': \(kind.rawValue) needs a \(kind == .tap ? "interface name" : "socket path") after the colon")
        }
        var options: [(key: String, value: String)] = []
        for item in parts.dropFirst() {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw PortSpecError("port '\(entry)': '\(item)' is not key=value (valid keys for \(kind.rawValue): \(kind.validKeys.joined(separator: ", ")))")
            }
            let key = String(item[..<eq]), value = String(item[item.index(after: eq)...])
            guard kind.validKeys.contains(key) else {
                throw PortSpecError("port '\(entry)': unknown key '\(key)' for \(kind.rawValue) (valid keys: \(kind.validKeys.joined(separator: ", ")))")
            }
            try validate(key: key, value: value, entry: entry)
            options.append((key, value))
        }
        if kind == .tap && path.utf8.count > 15 {
            throw PortSpecError("port '\(entry)': interface name '\(path)' is longer than 15 characters")
        }
        return PortSpec(kind: kind, path: path, options: options)
    }

    private static func validate(key: String, value: String, entry: String) throws(PortSpecError) {
        switch key {
        case "mode":
            guard let m = UInt32(value, radix: 8), m <= 0o777 else {
                throw PortSpecError("port '\(entry)': mode '\(value)' is not an octal permission like 0600")
            }
        case "queues", "backoff-min-ms", "backoff-max-ms":
            guard let n = Int(value), n > 0 else {
                throw PortSpecError("port '\(entry)': \(key) '\(value)' is not a positive integer")
            }
        case "server", "packed", "mrg":
            guard ["0", "1", "on", "off"].contains(value) else {
                throw PortSpecError("port '\(entry)': \(key) '\(value)' must be 0, 1, on or off")
            }
        case "size":
            guard let n = Int(value), n >= 2, n <= 32768, n & (n - 1) == 0 else {
                throw PortSpecError("port '\(entry)': size '\(value)' must be a power of two from 2 to 32768")
            }
        case "mac":
            if let why = PortSpec.macProblem(value) { throw PortSpecError("port '\(entry)': mac '\(value)' \(why)") }
        case "mtu":
            // virtio 1.2 §5.1.4.1: at least 68; a 16-bit config field.
            guard let n = Int(value), n >= 68, n <= 65535 else {
                throw PortSpecError("port '\(entry)': mtu '\(value)' must be an integer from 68 to 65535")
            }
        case "features":
            let ok = value.hasPrefix("0x") || value.hasPrefix("0X") ? UInt64(value.dropFirst(2), radix: 16) != nil : UInt64(value) != nil
            guard ok else {
                throw PortSpecError("port '\(entry)': features '\(value)' is not a 64-bit mask (0x... hexadecimal or decimal)")
            }
        case "name":
            guard !value.isEmpty else { throw PortSpecError("port '\(entry)': name is empty") }
        case "max-memory":
            guard let n = PortSpec.parseSize(value), n > 0 else {
                throw PortSpecError("port '\(entry)': max-memory '\(value)' is not a positive size like 64G (bytes, or K, M, G, T: powers of 1024)")
            }
        default: break
        }
    }
}

extension PortSpec {
    /// Six hexadecimal bytes separated by colons (`02:00:00:00:00:01`), or nil.
    public static func parseMAC(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6, parts.allSatisfy({ $0.count == 2 }) else { return nil }
        let bytes = parts.compactMap { UInt8($0, radix: 16) }
        return bytes.count == 6 ? bytes : nil
    }

    /// Why `value` cannot be a port's own MAC address, or nil when it can: six hexadecimal bytes,
    /// unicast (IEEE 802: bit 0 of the first byte marks a group address), not all zeros.
    public static func macProblem(_ value: String) -> String? {
        guard let mac = parseMAC(value) else { return "is not six hexadecimal bytes like 02:00:00:00:00:01" }
        if mac[0] & 1 != 0 {
            return "is a multicast address (the low bit of the first byte is set); a port's MAC must be unicast"
        }
        if !mac.contains(where: { $0 != 0 }) { return "is all zeros" }
        return nil
    }

    /// A byte count: decimal digits, optionally followed by K, M, G or T (powers of 1024, either
    /// case). Nil when malformed or beyond 64 bits.
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var shift: UInt64 = 0
        if let last = digits.last, let s = ["k": 10, "m": 20, "g": 30, "t": 40][last.lowercased()] {
            shift = UInt64(s)
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= "0" && $0 <= "9" }), let n = UInt64(digits) else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: 1 << shift)
        return o ? nil : r
    }

    /// `02:00:00:00:00:01`.
    public static func formatMAC(_ mac: [UInt8]) -> String {
        mac.map { b in
            let h = String(b, radix: 16)
            return h.count == 1 ? "0" + h : h
        }.joined(separator: ":")
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}
