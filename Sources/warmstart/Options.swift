import ArgumentParser
import WarmstartRuntime

/// A byte size: "1048576", "512K", "64M", "2G" (binary units).
extension ByteSize: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
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
    var dataRoom: Int = PoolLayout.defaultDataRoom
    @Option(help: "Headroom per mbuf, bytes.")
    var headroom: Int = PoolLayout.defaultHeadroom
    @Option(name: .customLong("cache-size"), help: "Per-thread mbuf cache size.")
    var cacheSize: Int = 256
    @Option(help: "Total memory (e.g. 2G): at least what the pool needs; the rest is a general-purpose region.")
    var memory: ByteSize?
    @Option(name: .customLong("page-size"), help: "Page size: 4K, 2M or 1G (default: what the file system or hugepages give).")
    var pageSize: PageSize?
    @Option(help: "Hugepages: auto (use them when free), require, off.")
    var hugepages: HugepageMode = .auto

    /// The pool lay-out, checked (a bad field is a usage error).
    func poolLayout() throws -> PoolLayout {
        let layout = PoolLayout(mbufs: mbufs, dataRoom: dataRoom, headroom: headroom, cacheSize: cacheSize, memoryBytes: memory?.bytes)
        do { try layout.validate() } catch { throw ValidationError("\(error)") }
        return layout
    }
}
