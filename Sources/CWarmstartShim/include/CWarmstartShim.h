// CWarmstartShim: only what Swift cannot import by itself.
//  - acquire/release atomics and fences on raw shared memory (rings read by another process)
//  - GNU-only calls (memfd_create, eventfd) and their flag constants
//  - SCM_RIGHTS control messages (CMSG_* are function-like macros)
#ifndef CWARMSTART_SHIM_H
#define CWARMSTART_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// ---- fences ---------------------------------------------------------------------------------
static inline void ws_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void ws_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
// Full barrier (store→load ordering between processes sharing a ring). On x86-64 a locked add to
// the stack orders ordinary write-back memory exactly like mfence at about half its cost (mfence
// also waits for non-temporal stores and other weakly ordered accesses, which no ring uses).
static inline void ws_fence_seq_cst(void) {
#if defined(__x86_64__)
    __asm__ __volatile__("lock; addl $0,-128(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}
static inline void ws_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void ws_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}
static inline void ws_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
// Prefetch for writing: the line comes in owned, so the store that follows needs no second
// request to upgrade a shared copy. __builtin_prefetch(p, 1, 3) only emits PREFETCHW when the
// target says it has it (-mprfchw), which this build does not, and falls back to a read
// prefetch; every x86-64 this runs on decodes PREFETCHW (those without it treat it as a NOP).
static inline void ws_prefetch_w(const void *p) {
#if defined(__x86_64__)
    __asm__ __volatile__("prefetchw %0" :: "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

// Copies n bytes between buffers that do not overlap. Up to 128 bytes (the small frames that
// dominate a burst) it is a few fixed-size unaligned loads then stores, inline — the first and
// the last k bytes, overlapping in the middle — instead of a call into libc's memmove; longer
// copies go to memcpy. The 16-byte pieces are unaligned vector loads and stores straight through
// registers: a 16-byte memcpy into a local struct was left on the stack here (a spill and a
// reload per piece, doubling the stores of a copy that runs against guest memory another core
// owns, where the store buffer is what fills).
typedef unsigned char ws_v16 __attribute__((vector_size(16), aligned(1), may_alias));
typedef uint64_t ws_u64u __attribute__((aligned(1), may_alias));
typedef uint32_t ws_u32u __attribute__((aligned(1), may_alias));
#define WS_LD16(p) (*(const ws_v16 *)(const void *)(p))
#define WS_ST16(p, v) (*(ws_v16 *)(void *)(p) = (v))
static inline void ws_copy16(unsigned char *d, const unsigned char *s) { WS_ST16(d, WS_LD16(s)); }
static inline void ws_copy(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (n > 128) { __builtin_memcpy(d, s, n); return; }
    if (n >= 32) {
        ws_v16 a = WS_LD16(s), b = WS_LD16(s + 16), y = WS_LD16(s + n - 32), z = WS_LD16(s + n - 16);
        if (n > 64) {
            ws_v16 c = WS_LD16(s + 32), e = WS_LD16(s + 48), w = WS_LD16(s + n - 64), x = WS_LD16(s + n - 48);
            WS_ST16(d + 32, c); WS_ST16(d + 48, e); WS_ST16(d + n - 64, w); WS_ST16(d + n - 48, x);
        }
        WS_ST16(d, a); WS_ST16(d + 16, b); WS_ST16(d + n - 32, y); WS_ST16(d + n - 16, z);
        return;
    }
    if (n >= 16) {
        ws_v16 a = WS_LD16(s), z = WS_LD16(s + n - 16);
        WS_ST16(d, a); WS_ST16(d + n - 16, z);
        return;
    }
    if (n >= 8) {
        uint64_t a = *(const ws_u64u *)(const void *)s, z = *(const ws_u64u *)(const void *)(s + n - 8);
        *(ws_u64u *)(void *)d = a; *(ws_u64u *)(void *)(d + n - 8) = z;
        return;
    }
    if (n >= 4) {
        uint32_t a = *(const ws_u32u *)(const void *)s, z = *(const ws_u32u *)(const void *)(s + n - 4);
        *(ws_u32u *)(void *)d = a; *(ws_u32u *)(void *)(d + n - 4) = z;
        return;
    }
    for (size_t i = 0; i < n; i++) d[i] = s[i];
}

// ---- atomics on raw memory ------------------------------------------------------------------
#define WS_ATOMIC_OPS(T, N)                                                                          \
    static inline T ws_load_acquire_##N(const T *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); } \
    static inline T ws_load_relaxed_##N(const T *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); } \
    static inline void ws_store_release_##N(T *p, T v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); } \
    static inline void ws_store_relaxed_##N(T *p, T v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); } \
    static inline T ws_fetch_add_##N(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); } \
    static inline T ws_fetch_or_##N(T *p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL); }  \
    static inline T ws_fetch_and_##N(T *p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_ACQ_REL); } \
    static inline T ws_exchange_##N(T *p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); } \
    static inline int ws_cas_##N(T *p, T *expected, T desired) {                                     \
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE); \
    }
WS_ATOMIC_OPS(uint8_t, u8)
WS_ATOMIC_OPS(uint16_t, u16)
WS_ATOMIC_OPS(uint32_t, u32)
WS_ATOMIC_OPS(uint64_t, u64)
#undef WS_ATOMIC_OPS

// ---- GNU calls and constants ----------------------------------------------------------------
int ws_memfd_create(const char *name, unsigned int flags);
int ws_eventfd(unsigned int initval, int flags);
extern const unsigned int WS_MFD_CLOEXEC;
extern const unsigned int WS_MFD_HUGETLB;
extern const unsigned int WS_MFD_ALLOW_SEALING;
extern const unsigned int WS_MFD_HUGE_2MB;
extern const unsigned int WS_MFD_HUGE_1GB;
extern const int WS_MAP_HUGETLB;
extern const int WS_MAP_HUGE_2MB;
extern const int WS_MAP_HUGE_1GB;
extern const int WS_MAP_POPULATE;
extern const int WS_MAP_NORESERVE;
extern const int WS_MAP_FIXED_NOREPLACE;
extern const int WS_EFD_NONBLOCK;
extern const int WS_EFD_CLOEXEC;
extern const long WS_HUGETLBFS_MAGIC;
extern const long WS_TMPFS_MAGIC;
/// Returns the clock in nanoseconds (CLOCK_MONOTONIC).
uint64_t ws_monotonic_ns(void);
/// The CLOCK_MONOTONIC time at which this process image started running its constructors.
uint64_t ws_image_start_ns(void);
/// Pins the calling thread to one CPU; returns 0 or an errno.
int ws_pin_thread(int cpu);
/// prctl(PR_SET_TIMERSLACK) for the calling thread (variadic prctl is not callable from Swift).
int ws_set_timer_slack_ns(unsigned long ns);
/// statfs(2): the file system magic and block size of `path`. Returns 0 or -errno.
int ws_statfs(const char *path, long *magic, long *block_size);
/// fallocate(2), which Glibc's module does not always export.
int ws_fallocate(int fd, int mode, off_t offset, off_t len);

// ---- SCM_RIGHTS -----------------------------------------------------------------------------
/// Sends `len` bytes and up to `nfds` descriptors in one message. Returns bytes sent or -errno.
ssize_t ws_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/// Receives up to `cap` bytes and up to `maxfds` descriptors. `*nfds` is set to the number of
/// descriptors received (all of them are owned by the caller, even on a truncated message), and
/// `*truncated` to 1 when the payload or the control data did not fit. Returns bytes or -errno.
ssize_t ws_recv_with_fds(int sock, void *buf, size_t cap, int *fds, int maxfds, int *nfds, int *truncated);

// ---- message headers for io_uring recvmsg/sendmsg ------------------------------------------
// io_uring needs a struct msghdr (with iovec and control buffer) that stays put until the
// completion arrives; CMSG_* are macros, so the layout and fd parsing live here.
/// Bytes to allocate for one message header block (msghdr + iovec + room for 16 descriptors).
size_t ws_msgblock_size(void);
/// Prepares `block` for receiving up to `cap` bytes into `buf`; returns the msghdr to submit.
void *ws_msgblock_prepare_recv(void *block, void *buf, size_t cap);
/// Prepares `block` for sending `len` bytes and `nfds` descriptors; returns the msghdr, or NULL
/// when `nfds` is out of range.
void *ws_msgblock_prepare_send(void *block, const void *buf, size_t len, const int *fds, int nfds);
/// After a receive completed: copies up to `maxfds` received descriptors into `fds` (closing any
/// extra), sets `*truncated` when payload or control data did not fit. Returns the fd count.
int ws_msgblock_collect_fds(void *block, int *fds, int maxfds, int *truncated);

// ---- TAP and namespaces ---------------------------------------------------------------------
/// Configures an open /dev/net/tun descriptor as TAP `name` with IFF_NO_PI|IFF_VNET_HDR, a 12-byte
/// virtio-net header and O_NONBLOCK. The kernel's chosen name is copied to `actual` (16 bytes).
/// Returns 0 or -errno; `*step` names the call that failed.
int ws_tap_configure(int fd, const char *name, char *actual, const char **step);

// ---- snapshot files in shared directories (issue 12, defect 4) ----

/// fstatfs(2): like ws_statfs, for an open descriptor (the file checked is the file opened).
int ws_fstatfs(int fd, long *magic, long *block_size);


// ---- interruptible writes to peer-shared eventfds (issue 12 defect 2) -----------------------
// A peer shares the open file description of every eventfd we signal (vhost-user call fds, the
// virtio-user kick fds), so it can clear O_NONBLOCK on its copy and fill the counter: a write(2)
// from a polling thread would then sleep for good. There is no per-call non-blocking write for an
// eventfd, so the write is made interruptible instead: a watchdog thread sees a registered thread
// that has been inside ws_eventfd_signal for WS_WRITE_GUARD_STUCK_NS and pthread_kill()s it with
// WS_WRITE_GUARD_SIGNAL, whose handler does nothing and is installed without SA_RESTART, so the
// sleeping write returns EINTR. A signal that lands outside such a sleep is harmless (a write
// that is not sleeping completes; a nap ends early), so the watchdog needs no exact timing.
// Before writing, ws_eventfd_signal reads the description's flags (one fcntl) and refuses a
// descriptor the peer made blocking (WS_EVENTFD_MADE_BLOCKING), so the watchdog only matters to a
// peer that flips O_NONBLOCK between that check and the write.
/// The signal the watchdog sends (SIGURG: ignored by default, nothing else in the process or in
/// Dispatch uses it, and no socket here has an owner for out-of-band data).
int ws_write_guard_signal(void);
/// How long a write may sleep before the watchdog interrupts it, and how often it looks.
#define WS_WRITE_GUARD_STUCK_NS 20000000
#define WS_WRITE_GUARD_TICK_NS 5000000
/// Installs the handler (once, process-wide) and puts the calling thread under the watchdog
/// (started on first use). Returns 0 or -errno (then the thread's writes are unguarded).
int ws_write_guard_register(void);
/// Takes the calling thread off the watchdog; call before the thread exits.
void ws_write_guard_unregister(void);
/// Writes 1 to eventfd `fd`. Returns 0 when delivered, else -errno: -EAGAIN when the counter is
/// full (non-blocking), -EINTR when the write slept and the watchdog interrupted it (the peer made
/// the descriptor blocking and filled it: treat the descriptor as unusable). Around the write the
/// thread stores `fd + 1` and then 0 into its own slot (two relaxed stores, no other cost).
/// ws_eventfd_signal's result for a descriptor found blocking (no write was tried).
extern const int WS_EVENTFD_MADE_BLOCKING;
int ws_eventfd_signal(int fd);
/// Signals the watchdog sent since the process started (tests, statistics).
uint64_t ws_write_guard_interrupts(void);

// ---- shared-memory fault guard (issue 12, defect 3) -----------------------------------------
// A peer that shrinks a file we map MAP_SHARED (ftruncate of its memfd) turns every access past
// the new end into SIGBUS. Mappings of peer memory are registered here; a process-wide SIGBUS
// handler maps anonymous zero pages over the whole registered mapping that faulted (so the
// faulting access re-executes harmlessly) and marks its `flag`: flag[0] = registration slot + 1
// (only the first fault per flag), flag[1] = the faulting address. A fault anywhere else goes to
// the previous handler, or takes the default action (a real bug still crashes). The table is
// written with atomics only and read by the handler without locks.
/// Installs the SIGBUS handler once (later calls do nothing). Returns 0 or -errno.
int ws_fault_guard_install(void);
/// Registers [base, base + length), length rounded up to `page_size` (the mapping's page size:
/// a hugetlb mapping can only be replaced in whole huge pages). Returns the slot, -ENOSPC when
/// the table is full, -EINVAL for an empty or wrapping range.
int ws_fault_guard_register(void *base, size_t length, size_t page_size, uint64_t *flag);
/// Removes a registration; call before the mapping is unmapped.
void ws_fault_guard_unregister(int slot);
/// Registrations live now (tests).
int ws_fault_guard_count(void);
/// F_GET_SEALS of `fd`: the seals, or -errno (EINVAL: a file that cannot be sealed).
int ws_file_seals(int fd);
/// F_ADD_SEALS F_SEAL_SHRINK|F_SEAL_GROW on `fd`. Returns 0 or -errno.
int ws_seal_size(int fd);
extern const int WS_F_SEAL_SHRINK;
extern const int WS_F_SEAL_GROW;

#endif
