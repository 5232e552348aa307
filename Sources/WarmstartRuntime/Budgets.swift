/// DPDK's start-up budgets (DPDK Summit 2017 talk; table in Docs/BENCHMARKS.md), scaled to the work done.
public enum Budgets {
    /// 320 ms per GiB of hugepages.
    public static let hugepageMsPerGiB = 320.0
    /// 320–520 ms per 1,000,000 mbufs.
    public static let mbufMsPerMillion = (low: 320.0, high: 520.0)
    /// 240 (uio) – 400 (vfio) ms per device probed.
    public static let probeMsPerDevice = (low: 240.0, high: 400.0)
    /// 440 ms per device started.
    public static let startMsPerDevice = 440.0

    public static func hugepages(bytes: Int) -> Double { hugepageMsPerGiB * Double(bytes) / Double(1 << 30) }
    public static func mbufs(_ n: Int) -> (Double, Double) {
        (mbufMsPerMillion.low * Double(n) / 1e6, mbufMsPerMillion.high * Double(n) / 1e6)
    }
    public static func probe(devices n: Int) -> (Double, Double) {
        (probeMsPerDevice.low * Double(n), probeMsPerDevice.high * Double(n))
    }
    public static func start(devices n: Int) -> Double { startMsPerDevice * Double(n) }
}
