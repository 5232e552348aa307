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
            throw .port(entry: entry, .notKindAndPath)
        }
        let kindText = String(entry[..<colon])
        guard let kind = DeviceKind(rawValue: kindText) else {
            throw .port(entry: entry, .unknownKind(kindText))
        }
        let parts = entry[entry.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let path = parts[0]
        guard !path.isEmpty else {
            throw .port(entry: entry, .missingPath(kind))
        }
        var options: [(key: String, value: String)] = []
        for item in parts.dropFirst() {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw .port(entry: entry, .notKeyValue(item: item, kind: kind))
            }
            let key = String(item[..<eq]), value = String(item[item.index(after: eq)...])
            guard kind.validKeys.contains(key) else {
                throw .port(entry: entry, .unknownKey(key, kind: kind))
            }
            try validate(key: key, value: value, entry: entry)
            options.append((key, value))
        }
        if kind == .tap && path.utf8.count > 15 {
            throw .port(entry: entry, .interfaceNameTooLong(path))
        }
        return PortSpec(kind: kind, path: path, options: options)
    }

    private static func validate(key: String, value: String, entry: String) throws(PortSpecError) {
        switch key {
        case "mode":
            guard let m = UInt32(value, radix: 8), m <= 0o777 else {
                throw .port(entry: entry, .badMode(value))
            }
        case "queues", "backoff-min-ms", "backoff-max-ms":
            guard let n = Int(value), n > 0 else {
                throw .port(entry: entry, .notPositiveInteger(key: key, value: value))
            }
        case "server", "packed", "mrg":
            guard ["0", "1", "on", "off"].contains(value) else {
                throw .port(entry: entry, .notOnOff(key: key, value: value))
            }
        case "size":
            guard let n = Int(value), n >= 2, n <= 32768, n & (n - 1) == 0 else {
                throw .port(entry: entry, .badRingSize(value))
            }
        case "mac":
            if let why = PortSpec.macProblem(value) { throw .port(entry: entry, .badMAC(value, why: why)) }
        case "mtu":
            // virtio 1.2 §5.1.4.1: at least 68; a 16-bit config field.
            guard let n = Int(value), n >= 68, n <= 65535 else {
                throw .port(entry: entry, .badMTU(value))
            }
        case "features":
            let ok = value.hasPrefix("0x") || value.hasPrefix("0X") ? UInt64(value.dropFirst(2), radix: 16) != nil : UInt64(value) != nil
            guard ok else {
                throw .port(entry: entry, .badFeatures(value))
            }
        case "name":
            guard !value.isEmpty else { throw .port(entry: entry, .emptyName) }
        case "max-memory":
            guard let n = PortSpec.parseSize(value), n > 0 else {
                throw .port(entry: entry, .badMaxMemory(value))
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
