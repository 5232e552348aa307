import CWarmstartShim

/// The page size memory is backed by: 4 KiB (the lightweight model, any file or memfd) or a
/// hugepage size the kernel offers (2 MiB, 1 GiB).
public enum PageSize: Int, CaseIterable, Codable, Sendable, CustomStringConvertible {
    case small4K = 4096
    case huge2M = 2097152
    case huge1G = 1073741824

    public init?(bytes: Int) { self.init(rawValue: bytes) }

    /// Parses "4K", "2M", "1G" (case-insensitive, optional "B"/"iB").
    public init?(parsing text: String) {
        var t = text.uppercased()
        if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
        switch t {
        case "4K", "4096": self = .small4K
        case "2M", "2048K": self = .huge2M
        case "1G", "1024M": self = .huge1G
        default: return nil
        }
    }

    public var bytes: Int { rawValue }
    public var isHuge: Bool { self != .small4K }

    public var description: String {
        switch self {
        case .small4K: return "4K"
        case .huge2M: return "2M"
        case .huge1G: return "1G"
        }
    }

    /// Rounds `size` up to a whole number of pages; nil on overflow.
    public func roundUp(_ size: Int) -> Int? {
        let (sum, overflow) = size.addingReportingOverflow(bytes - 1)
        return overflow ? nil : sum & ~(bytes - 1)
    }

    var memfdFlags: UInt32 {
        switch self {
        case .small4K: return 0
        case .huge2M: return WS_MFD_HUGETLB | WS_MFD_HUGE_2MB
        case .huge1G: return WS_MFD_HUGETLB | WS_MFD_HUGE_1GB
        }
    }
}

/// `--hugepages auto|require|off`.
public enum HugepageMode: String, CaseIterable, Codable, Sendable {
    /// Use hugepages when enough are free, else 4 KiB pages (and say so).
    case auto
    /// Fail with a clear error when hugepages cannot be had.
    case require
    /// Always 4 KiB pages.
    case off
}
