import WarmstartMemory
import WarmstartPools

/// `snapshot inspect` and `snapshot verify`: what a snapshot holds, and whether it can be trusted.
public struct SnapshotReport: Sendable {
    public var path: String
    public var header: SnapshotHeader
    public var layout: SnapshotLayout
    public var filesystem: FileSystemKind
    /// Checks done and their outcome, in order, for people to read.
    public var checks: [(name: String, ok: Bool, detail: String)]
    public var ok: Bool { checks.allSatisfy { $0.ok } }
}

public enum SnapshotVerifier {
    /// Header, metadata and geometry checks (everything `SnapshotFile.open` does), as a report.
    public static func inspect(path: String) throws -> SnapshotReport {
        let file = try SnapshotFile.open(path: path)
        return report(file, payload: nil)
    }

    /// `inspect` plus the payload: for a resident snapshot, every element's identity words in every
    /// pool (which reads every page of the pools). A disk snapshot has no payload to check.
    public static func verify(path: String) throws -> SnapshotReport {
        let file = try SnapshotFile.open(path: path)
        guard file.isResident else {
            return report(file, payload: (true, "none: a disk snapshot keeps the layout only"))
        }
        let regions = try file.mapRegions()
        var problems: [String] = []
        for p in file.layout.pools {
            problems += MbufPool.verifyImage(config: p.config, region: regions[Int(p.regionIndex)],
                                             offset: Int(p.offset), poolID: p.poolID,
                                             inline: file.layout.poolMetadataInFile).map { "pool '\(p.name)': \($0)" }
        }
        let count = file.layout.mbufCount
        return report(file, payload: problems.isEmpty ? (true, "\(count) mbuf identities intact")
                                                      : (false, problems.joined(separator: "; ")))
    }

    static func report(_ file: SnapshotFile, payload: (Bool, String)?) -> SnapshotReport {
        let h = file.header
        var checks: [(String, Bool, String)] = [
            ("magic", true, "WARMSNAP"),
            ("version", true, "\(h.major).\(h.minor) (reader supports \(SnapshotHeader.formatMajor).0–\(SnapshotHeader.formatMajor).\(SnapshotHeader.formatMinor))"),
            ("crc32c", true, hex(h.crc) + " over header and \(h.metadataSize) bytes of metadata"),
            ("file size", true, "\(h.fileSize) bytes"),
            ("page size", true, "\(file.layout.pageSize) on \(file.filesystem.rawValue)"),
            ("geometry", true, "\(file.layout.regions.count) regions, \(file.layout.pools.count) pools, no overlaps"),
        ]
        if let payload { checks.append(("payload", payload.0, payload.1)) }
        return SnapshotReport(path: file.path, header: h, layout: file.layout, filesystem: file.filesystem, checks: checks)
    }
}
