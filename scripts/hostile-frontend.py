#!/usr/bin/env python3
"""A hostile vhost-user front-end, for scripts/bench-hostile.sh (issue 12).

Connects to a Warmstart vhost-user port again and again and, on each connection, tries one of
the attacks the back-end must survive: a packed ring position outside the ring, a pipe or a
socket as call descriptor, a memory table above the port's max-memory, call eventfds at their
maximum counter, a call eventfd made blocking again through the shared file description, frames
with invalid virtio-net headers, and guest memory truncated under running rings. Each connection
ends by closing the socket; the back-end must drop only that session.

Usage: hostile-frontend.py SOCKET [SECONDS] [--benign]   (prints one line per connection)
--benign: every connection is a well-behaved one (negotiate, rings up, 32 frames, hang up), the
control that tells the attacks' cost from the cost of a front-end reconnecting at that pace.
Linux only (memfd, eventfd, SCM_RIGHTS); Python 3.10+.
"""
import errno
import fcntl
import os
import socket
import struct
import sys
import time

# vhost-user requests (QEMU docs/interop/vhost-user.rst)
GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 5, 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, SET_VRING_ENABLE = 15, 16, 18
VERSION, REPLY = 0x1, 0x4
F_PROTOCOL_FEATURES, F_VERSION_1, F_RING_PACKED = 30, 32, 34

RING = 256
MEM = 4 << 20                # guest memory: one 4 MiB memfd
USER_BASE = 0x7F00_0000_0000  # the front-end's "virtual address" of guest address 0
RX, TX = 0, 1
# split ring areas (guest addresses): per queue desc, avail, used; buffers from 64 KiB
AREAS = {RX: (0x0000, 0x1000, 0x2000), TX: (0x4000, 0x5000, 0x6000)}
BUF0, BUFSZ = 0x10000, 2048


class Closed(Exception):
    pass


class Session:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(2.0)
        self.s.connect(path)
        self.mine = []   # descriptors to close when the connection ends
        self.memfd = -1
        self.mem = None

    def keep(self, fd):
        self.mine.append(fd)
        return fd

    def close(self):
        try:
            self.s.close()
        finally:
            for fd in self.mine:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def send(self, req, payload=b"", fds=()):
        msg = struct.pack("<III", req, VERSION, len(payload)) + payload
        try:
            if fds:
                socket.send_fds(self.s, [msg], list(fds))
            else:
                self.s.sendall(msg)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def recv_u64(self, req):
        hdr = self._recv_exact(12)
        r, flags, size = struct.unpack("<III", hdr)
        body = self._recv_exact(size)
        if r != req or not flags & REPLY or size != 8:
            raise Closed(f"unexpected reply {r} flags {flags:#x} size {size}")
        return struct.unpack("<Q", body)[0]

    def _recv_exact(self, n):
        b = b""
        while len(b) < n:
            try:
                chunk = self.s.recv(n - len(b))
            except (socket.timeout, ConnectionResetError) as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("back-end closed the connection")
            b += chunk
        return b

    def negotiate(self, packed=False):
        self.send(SET_OWNER)
        self.send(GET_FEATURES)
        offered = self.recv_u64(GET_FEATURES)
        want = (1 << F_VERSION_1) | (1 << F_PROTOCOL_FEATURES)
        if packed:
            want |= 1 << F_RING_PACKED
        if offered & (1 << F_PROTOCOL_FEATURES):
            self.send(GET_PROTOCOL_FEATURES)
            self.recv_u64(GET_PROTOCOL_FEATURES)
            self.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", 0))
        self.features = offered & want
        self.send(SET_FEATURES, struct.pack("<Q", self.features))

    def memory(self, size=MEM, table_size=None):
        self.memfd = self.keep(os.memfd_create("hostile-guest", os.MFD_CLOEXEC))
        os.ftruncate(self.memfd, size)
        n = table_size if table_size is not None else size
        region = struct.pack("<QQQQ", 0, n, USER_BASE, 0)
        self.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self.memfd])
        if size <= MEM:
            import mmap
            self.mem = mmap.mmap(self.memfd, size)

    def start_ring(self, q, base=0, call=None, kick=None):
        desc, avail, used = AREAS[q]
        self.send(SET_VRING_NUM, struct.pack("<II", q, RING))
        self.send(SET_VRING_BASE, struct.pack("<II", q, base))
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, USER_BASE + desc, USER_BASE + used,
                                              USER_BASE + avail, 0))
        kick = kick if kick is not None else self.keep(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        call = call if call is not None else self.keep(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        self.send(SET_VRING_KICK, struct.pack("<Q", q), [kick])
        self.send(SET_VRING_CALL, struct.pack("<Q", q), [call])
        if self.features & (1 << F_PROTOCOL_FEATURES):
            self.send(SET_VRING_ENABLE, struct.pack("<II", q, 1))
        return kick, call

    # split ring driver side, just enough to post buffers and frames
    def post(self, q, first, frames, writable):
        desc, avail, _ = AREAS[q]
        idx = struct.unpack_from("<H", self.mem, avail + 2)[0]
        for i, data in enumerate(frames):
            slot = (first + i) % RING
            addr = BUF0 + (q * RING + slot) * BUFSZ
            if not writable:
                self.mem[addr:addr + len(data)] = data
            struct.pack_into("<QIHH", self.mem, desc + 16 * slot, addr, BUFSZ if writable else len(data),
                             2 if writable else 0, 0)
            struct.pack_into("<H", self.mem, avail + 4 + 2 * ((idx + i) % RING), slot)
        struct.pack_into("<H", self.mem, avail + 2, (idx + len(frames)) & 0xFFFF)


def frame(seq, header=b"\0" * 12):
    eth = b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x08\x00"
    return header + eth + seq.to_bytes(4, "little") + b"\x5a" * 42


def saturate(fd):
    os.write(fd, struct.pack("<Q", 0xFFFF_FFFF_FFFF_FFFE))


def traffic(s, call_rx=None, call_tx=None, header=b"\0" * 12, n=32):
    kick_rx, _ = s.start_ring(RX, call=call_rx)
    kick_tx, _ = s.start_ring(TX, call=call_tx)
    s.post(RX, 0, [b""] * 128, writable=True)
    os.write(kick_rx, struct.pack("<Q", 1))
    s.post(TX, 0, [frame(i, header) for i in range(n)], writable=False)
    os.write(kick_tx, struct.pack("<Q", 1))


def attack(path, kind):
    s = Session(path)
    try:
        if kind == "packed-base":
            s.negotiate(packed=True)
            s.memory()
            s.start_ring(RX, base=0x7FFF)
        elif kind in ("pipe-call", "socket-call"):
            s.negotiate()
            s.memory()
            if kind == "pipe-call":
                r, w = os.pipe()
                os.close(r)
                fd = s.keep(w)
            else:
                a, b = socket.socketpair()
                b.close()
                fd = s.keep(a.detach())
            s.start_ring(RX, call=fd)
        elif kind == "huge-memory":
            s.negotiate()
            s.memory(size=4 << 30)
        elif kind == "saturated-call":
            s.negotiate()
            s.memory()
            calls = [s.keep(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)) for _ in range(2)]
            for c in calls:
                saturate(c)
            traffic(s, calls[0], calls[1])
        elif kind == "blocking-call":
            # The back-end made the call eventfd non-blocking; the file description is shared, so
            # clear O_NONBLOCK on our copy and fill the counter: its next call write would sleep.
            s.negotiate()
            s.memory()
            calls = [s.keep(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)) for _ in range(2)]
            traffic(s, calls[0], calls[1], n=0)
            time.sleep(0.02)
            for c in calls:
                fcntl.fcntl(c, fcntl.F_SETFL, fcntl.fcntl(c, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                saturate(c)
            s.post(TX, 0, [frame(i) for i in range(32)], writable=False)
        elif kind == "bad-net-header":
            s.negotiate()
            s.memory()
            # NEEDS_CSUM with csum_start past the frame, then an unknown gso_type
            traffic(s, header=bytes([1, 0, 0, 0, 0, 0, 0xF0, 0xFF, 0x10, 0, 0, 0]), n=16)
            s.post(TX, 16, [frame(i, bytes([0, 0x55] + [0] * 10)) for i in range(16)], writable=False)
        elif kind == "benign":
            # The control: a well-behaved front-end that connects, brings its rings up, sends 32
            # frames and hangs up, at the same pace as the attacks.
            s.negotiate()
            s.memory()
            traffic(s)
        elif kind == "truncated-memory":
            s.negotiate()
            s.memory()
            traffic(s)
            s.mem.close()
            s.mem = None
            os.ftruncate(s.memfd, 0)
        else:
            raise ValueError(kind)
        time.sleep(0.05)   # let the back-end act on it before we hang up
        return "sent"
    except Closed as e:
        return f"refused ({e})"
    finally:
        if s.mem is not None:
            s.mem.close()
        s.close()


KINDS = ["packed-base", "pipe-call", "socket-call", "huge-memory", "saturated-call", "blocking-call",
         "bad-net-header", "truncated-memory"]


def main():
    args = [a for a in sys.argv[1:] if a != "--benign"]
    kinds = ["benign"] if "--benign" in sys.argv[1:] else KINDS
    if not args:
        print("usage: hostile-frontend.py SOCKET [SECONDS] [--benign]", file=sys.stderr)
        sys.exit(2)
    path = args[0]
    until = time.monotonic() + (float(args[1]) if len(args) > 1 else 1e9)
    n = 0
    while time.monotonic() < until:
        kind = kinds[n % len(kinds)]
        try:
            outcome = attack(path, kind)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            outcome = f"no connection ({e.strerror})"
            time.sleep(0.01)
        print(f"{n} {kind}: {outcome}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
