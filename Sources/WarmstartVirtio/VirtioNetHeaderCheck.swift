import WarmstartPools
import WarmstartSpec

// The virtio-net header a guest puts in front of every transmitted frame (§5.1.6, `struct
// virtio_net_hdr_v1`) travels on with the frame: into another guest's receive buffer and into a TAP
// device, where the host kernel acts on it. A guest is untrusted, so the device checks the header
// the way the kernel checks one written to a tap device (virtio_net_hdr_to_skb and
// skb_partial_csum_set in Linux) before anything forwards it; a bad one drops the frame and is
// counted as `ChainError.badNetHeader`.
//
// The check runs on the copy of the header in the mbuf (or on the registers it was loaded into),
// never on guest memory again: the guest may rewrite its buffer at any time.

extension VirtioFeatures {
    /// The device features that let a guest send a non-trivial header (§5.1.3): VIRTIO_NET_F_CSUM
    /// (bit 0, NEEDS_CSUM), VIRTIO_NET_F_HOST_TSO4 / _TSO6 / _ECN / _UFO (bits 11–14, gso_type), and
    /// VIRTIO_NET_F_HOST_USO (bit 56, UDP_L4). Without any of them the header must be all zero but
    /// num_buffers, which is one compare per frame.
    public static let guestTransmitOffloads = VirtioFeatures(rawValue: 1 << 0 | 0xF << 11 | 1 << 56)
}

/// Whether a guest's virtio-net header may go on with a frame of `frameLength` bytes (the bytes
/// after the header). `h0` is the header's bytes 0..<8 and `h1` its bytes 8..<12 (little-endian
/// loads: flags, gso_type, hdr_len, gso_size, csum_start | csum_offset, num_buffers).
///
/// With `offloads` false (none of `VirtioFeatures.guestTransmitOffloads` negotiated) every field but
/// num_buffers must be zero. Otherwise, as the kernel's tap path demands: flags only NEEDS_CSUM and
/// DATA_VALID; gso_type NONE, TCPV4, UDP, TCPV6 or UDP_L4, the ECN bit only with a type (and not on
/// UDP_L4), UDP_L4 only with NEEDS_CSUM; with a type, 0 < gso_size ≤ frame length; hdr_len ≤ frame
/// length; with NEEDS_CSUM, csum_start + csum_offset + 2 ≤ frame length. No overflow: every field
/// is 16 bits, summed in `Int`.
@inline(__always)
public func virtioNetHeaderIsValid(_ h0: UInt64, _ h1: UInt32, frameLength: Int, offloads: Bool) -> Bool {
    if h0 | UInt64(truncatingIfNeeded: h1 & 0xFFFF) == 0 { return true }
    return offloads && virtioNetHeaderIsValidSlow(h0, h1, frameLength: frameLength)
}

/// The full check, for headers that are not all zero.
@inline(never)
public func virtioNetHeaderIsValidSlow(_ h0: UInt64, _ h1: UInt32, frameLength: Int) -> Bool {
    typealias F = VirtioNetHeader
    let flags = UInt8(truncatingIfNeeded: h0)
    let gsoType = UInt8(truncatingIfNeeded: h0 >> 8)
    let hdrLen = Int(UInt16(truncatingIfNeeded: h0 >> 16))
    let gsoSize = Int(UInt16(truncatingIfNeeded: h0 >> 32))
    let csumStart = Int(UInt16(truncatingIfNeeded: h0 >> 48))
    let csumOffset = Int(UInt16(truncatingIfNeeded: h1))
    if flags & ~(F.flagNeedsCsum | F.flagDataValid) != 0 { return false }
    if hdrLen > frameLength { return false }
    let needsChecksum = flags & F.flagNeedsCsum != 0
    if needsChecksum && csumStart &+ csumOffset &+ 2 > frameLength { return false }
    if gsoType != F.gsoNone {
        switch gsoType & ~F.gsoECN {
        case F.gsoTCPv4, F.gsoTCPv6, F.gsoUDP: break
        case F.gsoUDPL4:
            // The kernel: USO needs a partial checksum and takes no ECN bit.
            if !needsChecksum || gsoType & F.gsoECN != 0 { return false }
        default: return false   // unknown type, or the ECN bit alone
        }
        if gsoSize == 0 || gsoSize > frameLength { return false }
    }
    return true
}
