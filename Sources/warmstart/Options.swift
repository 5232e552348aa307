import ArgumentParser
import WarmstartMemory
import WarmstartPools
import WarmstartRuntime
import WarmstartSnapshot

/// A byte size: "1048576", "512K", "64M", "2G" (binary units).
struct ByteSize: ExpressibleByArgument {
    let bytes: Int
    init?(argument: String) {
        var t = argument.uppercased()
        if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
        var mult = 1
        switch t.last {
        case "K": mult = 1 << 10
        case "M": mult = 1 << 20
        case "G": mult = 1 << 30
        case "T": mult = 1 << 40
        default: break
        }
        if mult > 1 { t.removeLast() }
        guard let n = Int(t), n > 0 else { return nil }
        let (v, o) = n.multipliedReportingOverflow(by: mult)
        guard !o else { return nil }
        bytes = v
    }
}

extension HugepageMode: ExpressibleByArgument {}
extension SnapshotFallback: ExpressibleByArgument {}
extension PageSize: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
    public static var allValueStrings: [String] { ["4K", "2M", "1G"] }
}

/// The pool and memory layout, shared by `run` and `snapshot create`.
struct LayoutOptions: ParsableArguments {
    @Option(help: "Number of mbufs in the pool.")
    var mbufs: Int = 131_072
    @Option(name: .customLong("data-room"), help: "Data room per mbuf, bytes.")
    var dataRoom: Int = MbufLayout.defaultDataRoom
    @Option(help: "Headroom per mbuf, bytes.")
    var headroom: Int = MbufLayout.defaultHeadroom
    @Option(name: .customLong("cache-size"), help: "Per-thread mbuf cache size.")
    var cacheSize: Int = 256
    @Option(help: "Total memory (e.g. 2G): at least what the pool needs; the rest is a general-purpose region.")
    var memory: ByteSize?
    @Option(name: .customLong("page-size"), help: "Page size: 4K, 2M or 1G (default: what the file system or hugepages give).")
    var pageSize: PageSize?
    @Option(help: "Hugepages: auto (use them when free), require, off.")
    var hugepages: HugepageMode = .auto

    func snapshotConfig() throws -> SnapshotConfig {
        let pool = MbufPoolConfig(count: mbufs, headroom: headroom, dataRoom: dataRoom, cacheSize: cacheSize)
        do { try pool.validate() } catch { throw ValidationError("\(error)") }
        return SnapshotConfig(pool: pool, memoryBytes: memory?.bytes)
    }
}
