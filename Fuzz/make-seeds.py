#!/usr/bin/env python3
"""Writes the checked-in seed corpus of every fuzz target (Fuzz/*/corpus/). Run from anywhere;
the files are small and deterministic. Formats: each target's harness (Fuzz/Common, Fuzz/TARGET)."""
import json, os, struct, zlib

HERE = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    d = os.path.join(HERE, target, "corpus")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

u8 = lambda v: struct.pack("<B", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)

# ---- portspec: text, one spec per line --------------------------------------------------------
put("portspec", "vhost-user", b"vhost-user:/run/ws/p0.sock,mode=0660,queues=2\n")
put("portspec", "virtio-user", b"virtio-user:/tmp/a.sock,packed=1,queues=2,mrg=0,server=1,size=512,mac=02:00:00:00:00:01,mtu=9000\n")
put("portspec", "config", b"# ports\nport vhost-user:/tmp/a.sock,name=a\n--port tap:wstap0,queues=2\nvhost-user-client:/tmp/q.sock,backoff-min-ms=5,backoff-max-ms=100\n")

# ---- control: JSON request lines ---------------------------------------------------------------
put("control", "requests", b'{"cmd":"ping"}\n{"cmd":"help"}\n{"cmd":"stats","args":{"port":"p0"}}\n{"cmd":"fail"}\n{"cmd":"nope"}\n')

# ---- device rings: 16-byte header + guest memory (descriptors first) -------------------------
GA = 0x10000
def device_split(size_sel, features, ops, descs, avail, used_off_fill=b""):
    size = 1 << (size_sel % 9)
    hdr = u8(size_sel) + u8(features) + u8(31) + u16(0) + u16(0) + u8(3) + bytes(ops)
    mem = bytearray(0x200)
    for i, (addr, ln, fl, nx) in enumerate(descs):
        mem[16 * i:16 * i + 16] = u64(addr) + u32(ln) + u16(fl) + u16(nx)
    a = 16 * size
    mem[a:a + 2] = u16(0)
    mem[a + 2:a + 4] = u16(len(avail))
    for i, h in enumerate(avail):
        mem[a + 4 + 2 * i:a + 6 + 2 * i] = u16(h)
    return hdr + bytes(mem)

DATA = GA + 0x800
# TX: two single-descriptor frames, one 2-descriptor chain; then dequeue, enqueue, dequeue.
put("ring-split", "tx", device_split(3, 1 | 4, [0, 1 | (3 << 2), 2, 0, 3 | (1 << 2), 0, 1, 0],
    [(DATA, 12 + 60, 0, 0), (DATA + 0x100, 12 + 1500, 0, 0), (DATA + 0x800, 12, 1, 3), (DATA + 0x900, 200, 0, 0)],
    [0, 1, 2]))
# RX: writable buffers, mergeable.
put("ring-split", "rx", device_split(4, 1 | 2, [1 | (6 << 2), 1 | (0x13 << 2), 0, 2, 1, 3, 1, 0],
    [(DATA + 0x800 * i, 2048, 2, 0) for i in range(8)], list(range(8))))
# Indirect table.
put("ring-split", "indirect", device_split(2, 1 | 4, [0, 0, 1, 0, 0, 0, 0, 0],
    [(GA + 0x4000, 32, 4, 0)], [0]) + b"")

def device_packed(size_sel, features, ops, descs):
    hdr = u8(size_sel) + u8(features) + u8(31) + u16(0) + u16(0) + u8(3) + bytes(ops)
    mem = bytearray(0x200)
    for i, (addr, ln, bid, fl) in enumerate(descs):
        mem[16 * i:16 * i + 16] = u64(addr) + u32(ln) + u16(bid) + u16(fl)
    return hdr + bytes(mem)
AV = 1 << 7   # avail bit set, used bit clear: available in wrap 1
put("ring-packed", "tx", device_packed(7, 1 | 4, [0, 1, 0, 2, 3, 0, 1, 0],
    [(DATA, 72, 0, AV), (DATA + 0x100, 1512, 1, AV), (DATA + 0x800, 12, 2, AV | 1), (DATA + 0x900, 200, 2, AV)]))
put("ring-packed", "rx", device_packed(15, 1 | 2, [1 | (6 << 2), 1, 0, 1 | (0x13 << 2), 2, 1, 0, 1],
    [(DATA + 0x800 * i, 2048, i, AV | 2) for i in range(8)]))
put("ring-packed", "indirect", device_packed(3, 1 | 4, [0, 0, 1, 0, 0, 0, 0, 0], [(GA + 0x4000, 32, 0, AV | 4)]))

# ---- driver rings: size, features, then operations ------------------------------------------
def drv_add(bufs, indirect=False):
    out = u8(1 if indirect else 0) + u8(len(bufs) - 1)
    for addr, ln, w in bufs:
        out += u8(1 if w else 0) + u16(addr) + u16(ln)
    return out
def drv_complete_split(i, ln): return u8(7) + u16(i) + u32(ln)
def drv_complete_packed(slot, wrap, bid, ln): return u8(7) + u8(slot) + u8(wrap) + u16(bid) + u32(ln)
PUB = u8(2)
put("driver-split", "post-reap", u8(4) + u8(1) + drv_add([(0, 64, False)]) + drv_add([(0x100, 12, False), (0x200, 1500, False)])
    + drv_add([(0x1000, 2048, True)], indirect=True) + PUB + drv_complete_split(0, 0) + drv_complete_split(1, 0)
    + u8(4) + u8(8) + drv_complete_split(3, 1500) + drv_complete_split(3, 0) + u8(5) + u8(8) + u8(6) + u8(3))
put("driver-packed", "post-reap", u8(7) + u8(1) + drv_add([(0, 64, False)]) + drv_add([(0x100, 12, False), (0x200, 1500, False)])
    + drv_add([(0x1000, 2048, True)], indirect=True) + PUB + drv_complete_packed(0, 1, 0, 0)
    + drv_complete_packed(1, 1, 1, 0) + u8(5) + u8(8) + drv_complete_packed(3, 1, 2, 100) + u8(4) + u8(8) + u8(6) + u8(3))

# ---- vhost-user session: a QEMU-style handshake -----------------------------------------------
def msg(req, payload=b"", fds=0, kind=0, need_reply=False):
    return u8(req) + u8(1 if need_reply else 0) + u8(fds | kind << 4) + u16(len(payload)) + payload
def guestwrite(offset, payload):
    return u8(offset & 0xFF) + u8(0x80) + u8(offset >> 8) + u16(len(payload)) + payload
USER = 0x7F00_0000_0000
F_VERSION1, F_MRG, F_EVENT_IDX, F_INDIRECT, F_PROTOCOL, F_PACKED = 1 << 32, 1 << 15, 1 << 29, 1 << 28, 1 << 30, 1 << 34
def handshake(features, ring_size, base=0, packed=False):
    m = msg(1) + msg(3) + msg(15) + msg(16, u64((1 << 0) | (1 << 3) | (1 << 9) | (1 << 13) | (1 << 15) | (1 << 16)))
    m += msg(17) + msg(36) + msg(2, u64(features))
    m += msg(5, u32(1) + u32(0) + u64(0) + u64(64 << 10) + u64(USER) + u64(0), fds=1, kind=1)
    for q in (0, 1):
        desc = USER + q * 0x8000
        avail = desc + 16 * ring_size
        used = (avail + 6 + 2 * ring_size + 3) & ~3 if not packed else avail + 4
        m += msg(8, u32(q) + u32(ring_size)) + msg(10, u32(q) + u32(base))
        m += msg(9, u32(q) + u32(0) + u64(desc) + u64(used) + u64(avail) + u64(0))
        m += msg(12, u64(q), fds=1) + msg(13, u64(q), fds=1) + msg(18, u32(q) + u32(1))
    return m
put("session", "qemu-split", handshake(F_VERSION1 | F_MRG | F_EVENT_IDX | F_INDIRECT | F_PROTOCOL, 256)
    + guestwrite(0x8000, u64(0x1000) + u32(72) + u16(0) + u16(0)) + guestwrite(0x8000 + 16 * 256, u16(0) + u16(1) + u16(0))
    + msg(11, u32(0) + u32(0)) + msg(11, u32(1) + u32(0)))
put("session", "qemu-packed", handshake(F_VERSION1 | F_MRG | F_PROTOCOL | F_PACKED, 256, base=0x80008000, packed=True)
    + msg(11, u32(0) + u32(0)) + msg(34))
put("session", "memslots", msg(1) + msg(15) + msg(16, u64((1 << 15) | (1 << 3)))
    + msg(37, u64(0) + u64(0x10000) + u64(0x8000) + u64(USER) + u64(0), fds=1, kind=1, need_reply=True)
    + msg(37, u64(0) + u64(0x20000) + u64(0x8000) + u64(USER + 0x8000) + u64(0x8000), fds=1, kind=1)
    + msg(31, u64(0) + u64(0) + u16(4) + u16(256)) + msg(38, u64(0) + u64(0x10000) + u64(0x8000) + u64(USER) + u64(0)))

# ---- snapshot: control byte + file ---------------------------------------------------------
def snapshot():
    page = 4096
    hdr = bytearray(256)
    hdr[0:8] = b"WARMSNAP"
    regions, pools = 1, 1
    meta = bytearray()
    rec = bytearray(64)
    rec[0:16] = b"pool".ljust(16, b"\0"); rec[16:20] = u32(1); rec[24:32] = u64(page); rec[32:40] = u64(page * 4); rec[40:48] = u64(0x100000)
    meta += rec
    prec = bytearray(64)
    prec[0:16] = b"mbufs".ljust(16, b"\0"); prec[16:20] = u32(0); prec[20:22] = u16(1); prec[24:32] = u64(0); prec[32:40] = u64(4)
    prec[40:44] = u32(128); prec[44:48] = u32(2048); prec[48:52] = u32(0); prec[52:56] = u32(2240); prec[56:64] = u64(page * 4)
    meta += prec
    w = bytearray()
    w += b"WARMSNAP" + u16(1) + u16(0) + u32(256) + b"warmstart 0.1.0".ljust(32, b"\0")
    w += u64(page) + u64(page * 5) + u64(256) + u64(len(meta)) + u32(regions) + u32(pools)
    w += u64(0) + u64(page * 4) + u64(4) + u32(128) + u32(2048) + u32(0) + u32(1) + u64(page)
    w = w.ljust(252, b"\0") + u32(0)
    return bytes(w) + bytes(meta)
put("snapshot", "one-pool", u8(3) + snapshot())
put("snapshot", "raw-header", u8(0) + snapshot()[:256])

# ---- handoff: selector + stream / state / live ------------------------------------------
def frame(t, payload, nfds=0):
    return u32(0x4F485357) + u16(t) + u16(0) + u32(len(payload)) + u32(nfds) + payload
vr = lambda i, started: {"index": i, "size": 256, "descriptorAddress": USER + i * 0x8000, "availableAddress": USER + i * 0x8000 + 4096,
    "usedAddress": USER + i * 0x8000 + 4096 + 516 + 4, "addressFlags": 0, "lastAvailIndex": 0, "availWrapCounter": True,
    "lastUsedIndex": 0, "usedWrapCounter": True, "kick": {"kind": "fd", "fd": 1 + 2 * i}, "call": {"kind": "fd", "fd": 2 + 2 * i},
    "err": {"kind": "unset"}, "enabled": True, "started": started}
state = {"version": {"major": 1, "minor": 2}, "donorPid": 1, "describedAtNs": 1,
    "configuration": {"arguments": ["warmstart", "run"], "values": {"burst": "32"}},
    "fds": ["port 'p0' guest memory region 0", "port 'p0' vring 0 kick", "port 'p0' vring 0 call",
            "port 'p0' vring 1 kick", "port 'p0' vring 1 call", "memory region 'pool'"],
    "regions": [{"name": "pool", "fd": 5, "size": 65536, "fileOffset": 0, "ioAddress": 0x100000, "pageSize": 4096, "backing": "memfd"}],
    "pools": [],
    "ports": [{"name": "p0", "kind": "vhost-user", "path": "/tmp/p0.sock", "session": {
        "maxQueuePairs": 1, "ownerSet": True, "ackedFeatures": F_VERSION1 | F_MRG, "ackedProtocolFeatures": 0, "status": 15,
        "netConfig": [2, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0xdc, 5], "memoryGeneration": 1,
        "memory": [{"fd": 0, "guestAddress": 0, "size": 65536, "userAddress": USER, "mmapOffset": 0}],
        "vrings": [vr(0, True), vr(1, True)]}}]}
doc = json.dumps(state, separators=(",", ":")).encode()
live = u64(5) + u64(4) + u64(3) + u16(2) + u16(1) + u32(0)
live += u16(0) + u16(0) + u16(7) + u16(7) + u8(1) + u8(1) + u16(0)
live += u16(1) + u16(1) + u16(3) + u16(2) + u8(1) + u8(0) + u16(0)
live += u16(0) + u16(0) + u32(0) + b"".join(u64(i) for i in range(6))
put("handoff", "state", u8(1) + doc)
put("handoff", "live", u8(2) + live)
put("handoff", "stream", u8(0) + frame(2, b'{"version":{"major":1,"minor":2},"pid":7}') + frame(6, doc)
    + frame(7, b'{"first":0,"names":[]}') + frame(5, live.replace(u16(1) + u16(1) + u16(3), u16(0) + u16(1) + u16(3))) + frame(9, b""))

# ---- framing: config u8, chunk sizes, then records (Fuzz/framing/main.swift) -------------------
def fr_msg(req, payload=b"", fds=0, flags=1, size=None, overflow=False):
    tag = (4 if size is not None else 0) | fds << 3 | (0x80 if overflow else 0)
    return u8(tag) + u8(req) + u8(flags) + u16(len(payload)) + (u32(size) if size is not None else b"") + payload
def fr_raw(data, fds=0): return u8(1 | fds << 3) + u8(len(data)) + data
def fr_event(fds): return u8(2 | fds << 3)
def framing(records, chunks=(), reply=False):
    return u8(1 if reply else 0) + u8(len(chunks)) + b"".join(u16(c) for c in chunks) + b"".join(records)
fr_handshake = [fr_msg(1), fr_msg(3), fr_msg(15), fr_msg(16, u64(1 << 3)), fr_msg(2, u64(F_VERSION1)),
    fr_msg(5, u32(1) + u32(0) + u64(0) + u64(64 << 10) + u64(USER) + u64(0), fds=1),
    fr_msg(8, u32(0) + u32(256)), fr_msg(9, u32(0) + u32(0) + u64(USER) + u64(USER + 0x1000) + u64(USER + 0x2000) + u64(0)),
    fr_msg(12, u64(0), fds=1), fr_msg(13, u64(0), fds=1, flags=1 | 8), fr_msg(18, u32(0) + u32(1))]
put("framing", "handshake", framing(fr_handshake, chunks=(7, 1, 300, 0)))
put("framing", "handshake-bytewise", framing(fr_handshake, chunks=(1,)))
put("framing", "handshake-whole", framing(fr_handshake))
put("framing", "replies", framing([fr_msg(1, u64(F_VERSION1), flags=5), fr_msg(31, bytes(16), fds=1, flags=5),
    fr_msg(11, u32(0) + u32(9), flags=5)], chunks=(5, 0), reply=True))
put("framing", "max-payload", framing([fr_msg(25, bytes(range(256)) * 16, fds=2), fr_msg(1)], chunks=(1000, 3)))
put("framing", "descriptors-in-two-reads", framing([fr_raw(u32(5) + u32(1), fds=5), fr_raw(u32(32) + bytes(32), fds=3)], chunks=(0,)))
put("framing", "bad-version", framing([fr_msg(1), fr_msg(12, u64(0), fds=1, flags=2)], chunks=(2,)))
put("framing", "reply-on-request", framing([fr_msg(12, u64(0), fds=1, flags=5)]))
put("framing", "oversize", framing([fr_msg(5, bytes(8), fds=1, size=4097)], chunks=(0,)))
put("framing", "fds-without-bytes", framing([fr_msg(3), fr_event(2), fr_msg(1)]))
put("framing", "too-many-fds", framing([fr_msg(5, bytes(8 + 32 * 9), fds=9)], chunks=(13,)))
put("framing", "overflow", framing([fr_msg(1), fr_msg(12, u64(0), fds=1, overflow=True)], chunks=(1,)))
put("framing", "truncated", framing([fr_msg(1), fr_raw(u32(12) + u32(1), fds=1)]))
put("framing", "garbage-across-frames", framing([fr_raw(u32(1) + u32(1) + u32(0) + u32(2) + u32(1) + u32(8) + u64(7), fds=2),
    fr_msg(1)], chunks=(3, 9)))
