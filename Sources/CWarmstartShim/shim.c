#define _GNU_SOURCE
#include "CWarmstartShim.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << 26)
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << 26)
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

const unsigned int WS_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int WS_MFD_HUGETLB = MFD_HUGETLB;
const unsigned int WS_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;
const unsigned int WS_MFD_HUGE_2MB = MFD_HUGE_2MB;
const unsigned int WS_MFD_HUGE_1GB = MFD_HUGE_1GB;
const int WS_MAP_HUGETLB = MAP_HUGETLB;
const int WS_MAP_HUGE_2MB = MAP_HUGE_2MB;
const int WS_MAP_HUGE_1GB = MAP_HUGE_1GB;
const int WS_MAP_POPULATE = MAP_POPULATE;
const int WS_MAP_NORESERVE = MAP_NORESERVE;
const int WS_MAP_FIXED_NOREPLACE = MAP_FIXED_NOREPLACE;
const int WS_EFD_NONBLOCK = EFD_NONBLOCK;
const int WS_EFD_CLOEXEC = EFD_CLOEXEC;
const long WS_HUGETLBFS_MAGIC = HUGETLBFS_MAGIC;
const long WS_TMPFS_MAGIC = TMPFS_MAGIC;

int ws_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
int ws_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
int ws_fallocate(int fd, int mode, off_t offset, off_t len) { return fallocate(fd, mode, offset, len); }

int ws_statfs(const char *path, long *magic, long *block_size) {
    struct statfs st;
    if (statfs(path, &st) != 0) return -errno;
    *magic = (long)st.f_type;
    *block_size = (long)st.f_bsize;
    return 0;
}

uint64_t ws_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t image_start_ns;
__attribute__((constructor(101))) static void ws_record_image_start(void) { image_start_ns = ws_monotonic_ns(); }
uint64_t ws_image_start_ns(void) { return image_start_ns; }

int ws_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int ws_set_timer_slack_ns(unsigned long ns) { return prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0 ? 0 : -errno; }

#define WS_MAX_FDS 16

ssize_t ws_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > WS_MAX_FDS) return -EINVAL;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * WS_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t ws_recv_with_fds(int sock, void *buf, size_t cap, int *fds, int maxfds, int *nfds, int *truncated) {
    *nfds = 0;
    *truncated = 0;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        char buf[CMSG_SPACE(sizeof(int) * WS_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = data[i];
            else { close(data[i]); *truncated = 1; }   // never leak what we cannot hand over
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) *truncated = 1;
    return n;
}

typedef struct {
    struct msghdr msg;
    struct iovec iov;
    union {
        char buf[CMSG_SPACE(sizeof(int) * WS_MAX_FDS)];
        struct cmsghdr align;
    } control;
} ws_msgblock;

size_t ws_msgblock_size(void) { return sizeof(ws_msgblock); }

void *ws_msgblock_prepare_recv(void *block, void *buf, size_t cap) {
    ws_msgblock *b = block;
    memset(b, 0, sizeof(*b));
    b->iov.iov_base = buf;
    b->iov.iov_len = cap;
    b->msg.msg_iov = &b->iov;
    b->msg.msg_iovlen = 1;
    b->msg.msg_control = b->control.buf;
    b->msg.msg_controllen = sizeof(b->control.buf);
    return &b->msg;
}

void *ws_msgblock_prepare_send(void *block, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > WS_MAX_FDS) return NULL;
    ws_msgblock *b = block;
    memset(b, 0, sizeof(*b));
    b->iov.iov_base = (void *)buf;
    b->iov.iov_len = len;
    b->msg.msg_iov = &b->iov;
    b->msg.msg_iovlen = 1;
    if (nfds > 0) {
        b->msg.msg_control = b->control.buf;
        b->msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&b->msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    return &b->msg;
}

int ws_msgblock_collect_fds(void *block, int *fds, int maxfds, int *truncated) {
    ws_msgblock *b = block;
    int n = 0;
    *truncated = (b->msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ? 1 : 0;
    if (b->msg.msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&b->msg); c != NULL; c = CMSG_NXTHDR(&b->msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (n < maxfds) fds[n++] = data[i];
            else { close(data[i]); *truncated = 1; }
        }
    }
    return n;
}

int ws_tap_configure(int fd, const char *name, char *actual, const char **step) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    *step = "TUNSETIFF";
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return -errno;
    memcpy(actual, ifr.ifr_name, IFNAMSIZ);
    int hdr = 12;   // struct virtio_net_hdr_mrg_rxbuf, the size virtio 1.0 devices use
    *step = "TUNSETVNETHDRSZ";
    if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) return -errno;
    *step = "fcntl(O_NONBLOCK)";
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    *step = "";
    return 0;
}

// ---- snapshot files in shared directories (issue 12, defect 4) ----

int ws_fstatfs(int fd, long *magic, long *block_size) {
    struct statfs st;
    if (fstatfs(fd, &st) != 0) return -errno;
    *magic = (long)st.f_type;
    *block_size = (long)st.f_bsize;
    return 0;
}

// ---- interruptible writes to peer-shared eventfds (issue 12 defect 2) -----------------------
#include <signal.h>

#define WS_WGUARD_MAX 256

// The calling thread's "inside ws_eventfd_signal" slot: fd + 1 while writing, 0 otherwise.
// initial-exec: a plain %fs-relative access, no __tls_get_addr call on the hot path.
static __thread uint64_t ws_wguard_busy __attribute__((tls_model("initial-exec")));

struct ws_wguard_entry {
    pthread_t thread;
    uint64_t *busy;     // the thread's ws_wguard_busy (valid until it unregisters, under the lock)
    uint64_t seen;      // the value the watchdog saw last (0: idle)
    uint64_t since_ns;  // when it first saw that value
};

static pthread_mutex_t ws_wguard_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ws_wguard_cond;
static struct ws_wguard_entry ws_wguard_entries[WS_WGUARD_MAX];
static int ws_wguard_count;
static int ws_wguard_install_error;
static pthread_once_t ws_wguard_once = PTHREAD_ONCE_INIT;
static uint64_t ws_wguard_interrupt_count;

int ws_write_guard_signal(void) { return SIGURG; }

static void ws_wguard_handler(int sig) { (void)sig; }

static void *ws_wguard_watchdog(void *arg) {
    (void)arg;
    pthread_mutex_lock(&ws_wguard_lock);
    for (;;) {
        if (ws_wguard_count == 0) {
            pthread_cond_wait(&ws_wguard_cond, &ws_wguard_lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)WS_WRITE_GUARD_TICK_NS;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec += 1; until.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&ws_wguard_cond, &ws_wguard_lock, &until);
        uint64_t now = ws_monotonic_ns();
        for (int i = 0; i < ws_wguard_count; i++) {
            struct ws_wguard_entry *e = &ws_wguard_entries[i];
            uint64_t v = __atomic_load_n(e->busy, __ATOMIC_RELAXED);
            if (v == 0) { e->seen = 0; continue; }
            if (v != e->seen) { e->seen = v; e->since_ns = now; continue; }
            // Still (or again) writing to the same descriptor since since_ns. Sent again every
            // tick while it lasts: one that arrived just before the thread entered write(2) was
            // handled in user space and interrupted nothing.
            if (now - e->since_ns >= (uint64_t)WS_WRITE_GUARD_STUCK_NS) {
                pthread_kill(e->thread, SIGURG);
                __atomic_fetch_add(&ws_wguard_interrupt_count, 1, __ATOMIC_RELAXED);
            }
        }
    }
    return NULL;
}

static void ws_wguard_setup(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ws_wguard_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   // no SA_RESTART: a sleeping write returns EINTR
    if (sigaction(SIGURG, &sa, NULL) != 0) { ws_wguard_install_error = errno; return; }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ws_wguard_cond, &ca);
    pthread_condattr_destroy(&ca);
    // The watchdog itself never takes SIGURG (nor anything else it could be asked to handle).
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, NULL, ws_wguard_watchdog, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) { ws_wguard_install_error = rc; return; }
    pthread_detach(t);
}

int ws_write_guard_register(void) {
    pthread_once(&ws_wguard_once, ws_wguard_setup);
    if (ws_wguard_install_error != 0) return -ws_wguard_install_error;
    // The thread must be able to take the signal even if its creator blocked it.
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGURG);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    pthread_mutex_lock(&ws_wguard_lock);
    int rc = 0;
    if (ws_wguard_count == WS_WGUARD_MAX) {
        rc = -ENOSPC;
    } else {
        ws_wguard_busy = 0;
        ws_wguard_entries[ws_wguard_count++] = (struct ws_wguard_entry){
            .thread = pthread_self(), .busy = &ws_wguard_busy, .seen = 0, .since_ns = 0};
        pthread_cond_signal(&ws_wguard_cond);
    }
    pthread_mutex_unlock(&ws_wguard_lock);
    return rc;
}

void ws_write_guard_unregister(void) {
    pthread_mutex_lock(&ws_wguard_lock);
    for (int i = 0; i < ws_wguard_count; i++) {
        if (ws_wguard_entries[i].busy == &ws_wguard_busy) {
            ws_wguard_entries[i] = ws_wguard_entries[--ws_wguard_count];
            break;
        }
    }
    pthread_mutex_unlock(&ws_wguard_lock);
}

const int WS_EVENTFD_MADE_BLOCKING = -4096;

int ws_eventfd_signal(int fd) {
    uint64_t one = 1;
    // The peer cleared O_NONBLOCK on the shared description: refuse before the write could sleep
    // (the watchdog below remains for a peer that flips it between this check and the write).
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -errno;
    if ((fl & O_NONBLOCK) == 0) return WS_EVENTFD_MADE_BLOCKING;
    __atomic_store_n(&ws_wguard_busy, (uint64_t)(uint32_t)fd + 1, __ATOMIC_RELAXED);
    ssize_t r = write(fd, &one, sizeof(one));
    __atomic_store_n(&ws_wguard_busy, 0, __ATOMIC_RELAXED);   // a plain store: errno is untouched
    if (r == (ssize_t)sizeof(one)) return 0;
    return r < 0 ? -errno : -EIO;
}

uint64_t ws_write_guard_interrupts(void) { return __atomic_load_n(&ws_wguard_interrupt_count, __ATOMIC_RELAXED); }

// ---- shared-memory fault guard (issue 12, defect 3) -----------------------------------------
// See CWarmstartShim.h. The handler only loads from the table, calls mmap (a plain system call
// on Linux) and stores to the flag words: no lock, no allocation, errno preserved.
#include <signal.h>

#define WS_GUARD_SLOTS 4096

typedef struct {
    uint32_t state;   // 0 free, 1 being written or cleared (control side), 2 live
    uint64_t start;   // [start, end): the whole mapping, page-size aligned
    uint64_t end;
    uint64_t *flag;
} ws_guard_entry;

enum { WS_GUARD_FREE = 0, WS_GUARD_BUSY = 1, WS_GUARD_LIVE = 2 };

static ws_guard_entry ws_guard_table[WS_GUARD_SLOTS];
static uint32_t ws_guard_high;          // 1 + the highest slot ever claimed: the handler's scan bound
static struct sigaction ws_guard_previous;
static pthread_once_t ws_guard_once = PTHREAD_ONCE_INIT;
static int ws_guard_install_result;

const int WS_F_SEAL_SHRINK = F_SEAL_SHRINK;
const int WS_F_SEAL_GROW = F_SEAL_GROW;

int ws_file_seals(int fd) {
    int s = fcntl(fd, F_GET_SEALS);
    return s < 0 ? -errno : s;
}

int ws_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0 ? 0 : -errno; }

// Hands the signal to whoever had it before us, or to the default action.
static void ws_guard_chain(int sig, siginfo_t *info, void *uctx) {
    const struct sigaction *prev = &ws_guard_previous;
    if (prev->sa_flags & SA_SIGINFO) {
        if (prev->sa_sigaction != NULL) { prev->sa_sigaction(sig, info, uctx); return; }
    } else if (prev->sa_handler == SIG_IGN) {
        // A SIGBUS someone sent stays ignored; a fault cannot be ignored (the kernel would have
        // reset it to the default action), so it falls through to the default below.
        if (info->si_code <= 0) return;
    } else if (prev->sa_handler != SIG_DFL) {
        prev->sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    // A fault re-executes the access on return and now takes the default action (core dump at
    // the right place). A sent signal does not come back by itself: send it again (pending until
    // this handler returns, since SIGBUS is blocked while it runs).
    if (info->si_code <= 0) raise(sig);
}

static void ws_guard_handler(int sig, siginfo_t *info, void *uctx) {
    int saved = errno;
    int handled = 0;
    // si_code > 0: raised by the kernel for this access, not sent by kill/sigqueue.
    if (info->si_code > 0) {
        uint64_t a = (uint64_t)(uintptr_t)info->si_addr;
        uint32_t n = __atomic_load_n(&ws_guard_high, __ATOMIC_ACQUIRE);
        for (uint32_t i = 0; i < n && i < WS_GUARD_SLOTS; i++) {
            ws_guard_entry *e = &ws_guard_table[i];
            if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != WS_GUARD_LIVE) continue;
            uint64_t start = __atomic_load_n(&e->start, __ATOMIC_RELAXED);
            uint64_t end = __atomic_load_n(&e->end, __ATOMIC_RELAXED);
            if (a < start || a >= end) continue;
            // Zero pages over the whole mapping: every later access past the new end of the file
            // would fault too, and replacing all of it needs no split of a hugetlb mapping.
            void *p = mmap((void *)(uintptr_t)start, (size_t)(end - start), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) continue;
            handled = 1;
            uint64_t *flag = __atomic_load_n(&e->flag, __ATOMIC_RELAXED);
            uint64_t expected = 0;
            if (flag != NULL && __atomic_compare_exchange_n(&flag[0], &expected, (uint64_t)i + 1, 0,
                                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                __atomic_store_n(&flag[1], a, __ATOMIC_RELEASE);
            }
        }
    }
    errno = saved;
    if (!handled) ws_guard_chain(sig, info, uctx);
}

static void ws_guard_install_once(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = ws_guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ws_guard_install_result = sigaction(SIGBUS, &sa, &ws_guard_previous) == 0 ? 0 : -errno;
}

int ws_fault_guard_install(void) {
    pthread_once(&ws_guard_once, ws_guard_install_once);
    return ws_guard_install_result;
}

int ws_fault_guard_register(void *base, size_t length, size_t page_size, uint64_t *flag) {
    if (page_size == 0) page_size = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t start = (uint64_t)(uintptr_t)base;
    if (length == 0 || length > UINT64_MAX - page_size) return -EINVAL;
    uint64_t len = ((uint64_t)length + page_size - 1) / page_size * page_size;
    if (start > UINT64_MAX - len) return -EINVAL;
    for (uint32_t i = 0; i < WS_GUARD_SLOTS; i++) {
        ws_guard_entry *e = &ws_guard_table[i];
        uint32_t free_state = WS_GUARD_FREE;
        if (!__atomic_compare_exchange_n(&e->state, &free_state, WS_GUARD_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
        __atomic_store_n(&e->start, start, __ATOMIC_RELAXED);
        __atomic_store_n(&e->end, start + len, __ATOMIC_RELAXED);
        __atomic_store_n(&e->flag, flag, __ATOMIC_RELAXED);
        uint32_t high = __atomic_load_n(&ws_guard_high, __ATOMIC_ACQUIRE);
        while (high < i + 1 && !__atomic_compare_exchange_n(&ws_guard_high, &high, i + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
        __atomic_store_n(&e->state, WS_GUARD_LIVE, __ATOMIC_RELEASE);
        return (int)i;
    }
    return -ENOSPC;
}

void ws_fault_guard_unregister(int slot) {
    if (slot < 0 || slot >= WS_GUARD_SLOTS) return;
    ws_guard_entry *e = &ws_guard_table[slot];
    __atomic_store_n(&e->state, WS_GUARD_BUSY, __ATOMIC_RELEASE);
    __atomic_store_n(&e->flag, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&e->start, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->end, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->state, WS_GUARD_FREE, __ATOMIC_RELEASE);
}

int ws_fault_guard_count(void) {
    int n = 0;
    for (uint32_t i = 0; i < WS_GUARD_SLOTS; i++)
        if (__atomic_load_n(&ws_guard_table[i].state, __ATOMIC_ACQUIRE) == WS_GUARD_LIVE) n++;
    return n;
}
