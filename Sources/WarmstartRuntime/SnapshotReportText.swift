#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import WarmstartSnapshot

/// `snapshot inspect|verify` output, for people and for machines.
public enum SnapshotReportText {
    public static func text(_ r: SnapshotReport) -> String {
        let h = r.header
        var s = "snapshot \(r.path)\n"
        s += "  format \(h.major).\(h.minor), written by \(h.writer), \(r.filesystem.rawValue), \(r.layout.pageSize) pages, \(h.fileSize) bytes\n"
        s += "  kind: \(h.flags.contains(.resident) ? "resident (region contents in the file, mapped in place)" : "disk (layout only)")\n"
        s += "  regions:\n"
        for g in r.layout.regions {
            s += "    \(g.name): \(g.role) at file offset \(g.fileOffset), \(g.size) bytes, I/O address 0x\(String(g.ioAddress, radix: 16))\n"
        }
        s += "  pools:\n"
        for p in r.layout.pools {
            s += "    \(p.name) (id \(p.poolID)): \(p.config.count) mbufs × \(p.elementSize) B (headroom \(p.config.headroom), data room \(p.config.dataRoom)), cache \(p.config.cacheSize), region \(p.regionIndex) + \(p.offset), \(p.bytes) bytes\n"
        }
        s += "  checks:\n"
        for c in r.checks { s += "    \(c.ok ? "ok  " : "FAIL") \(c.name): \(c.detail)\n" }
        s += r.ok ? "  result: ok" : "  result: FAILED"
        return s
    }

    struct JSONView: Encodable {
        struct Region: Encodable { var name, role: String; var file_offset, size, io_address: UInt64 }
        struct Pool: Encodable { var name: String; var id: UInt16; var mbufs, element_size, headroom, data_room, cache_size: Int; var region: UInt32; var offset, bytes: UInt64 }
        struct Check: Encodable { var name: String; var ok: Bool; var detail: String }
        var path: String
        var format: String
        var writer: String
        var filesystem: String
        var kind: String
        var page_size: Int
        var file_size: UInt64
        var regions: [Region]
        var pools: [Pool]
        var checks: [Check]
        var ok: Bool
    }

    public static func json(_ r: SnapshotReport) -> String {
        let v = JSONView(
            path: r.path, format: "\(r.header.major).\(r.header.minor)", writer: r.header.writer,
            filesystem: r.filesystem.rawValue, kind: r.header.flags.contains(.resident) ? "resident" : "disk",
            page_size: r.layout.pageSize.bytes, file_size: r.header.fileSize,
            regions: r.layout.regions.map { .init(name: $0.name, role: "\($0.role)", file_offset: $0.fileOffset, size: $0.size, io_address: $0.ioAddress) },
            pools: r.layout.pools.map { .init(name: $0.name, id: $0.poolID, mbufs: $0.config.count, element_size: Int($0.elementSize),
                                              headroom: $0.config.headroom, data_room: $0.config.dataRoom, cache_size: $0.config.cacheSize,
                                              region: $0.regionIndex, offset: $0.offset, bytes: $0.bytes) },
            checks: r.checks.map { .init(name: $0.name, ok: $0.ok, detail: $0.detail) }, ok: r.ok)
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? e.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
