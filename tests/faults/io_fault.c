/* I/O faults for kiln's tests, preloaded with LD_PRELOAD (built by the tests
 * with `cc`; no system package needed). Written for these tests.
 *
 * Only calls on files whose path contains KILN_FAULT_PATH are counted or
 * failed; every other call goes straight to libc. Which calls:
 * KILN_FAULT_CALLS, a comma-separated list of read, pread (preadv too), write, pwrite,
 * fsync, fdatasync, sync_file_range, open, rename, unlink, ftruncate
 * (default "read,pread"). A failed call returns -1 with errno
 * KILN_FAULT_ERRNO (default EIO). Which of the counted calls fail:
 *   KILN_FAULT_NTH=k [KILN_FAULT_COUNT=n]: the k-th to the (k+n-1)-th
 *     (n = 1 by default), the same point in every run;
 *   KILN_FAULT_PROBABILITY=p [KILN_FAULT_SEED=s]: each with probability p,
 *     from a seeded generator.
 *
 * A process can also arm it itself (fuzz/'s queue_model target, which
 * finds these functions with dlsym): kiln_fault_arm(path, calls, errno, n)
 * fails the n-th (from 1) of the next counted calls, then nothing;
 * kiln_fault_disarm() stops counting; kiln_fault_failed() is how many
 * calls failed since the process started. With KILN_FAULT_REPORT set, each
 * failed call is printed to stderr as it fails: "kiln-fault: CALL failed on
 * PATH". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum call { READ, PREAD, WRITE, PWRITE, FSYNC, FDATASYNC, SYNC_FILE_RANGE, OPEN, RENAME, UNLINK, FTRUNCATE, CALLS };
static const char *names[CALLS] = {"read", "pread", "write", "pwrite", "fsync", "fdatasync",
                                   "sync_file_range", "open", "rename", "unlink", "ftruncate"};

static int enabled[CALLS];
static const char *wanted = NULL;
static int fault_errno = EIO;
static long nth = 0, count = 1;
static double probability = 0.0;
static unsigned long long state = 0x9E3779B97F4A7C15ULL;
static long seen = 0;
static long failed = 0;
static __thread int inside = 0;

/* Enables the calls named in the comma-separated list `calls`, and only
 * those. */
void kiln_fault_disarm(void);

static void enable(const char *calls) {
    for (int c = 0; c < CALLS; c++) {
        __atomic_store_n(&enabled[c], 0, __ATOMIC_SEQ_CST);
        size_t len = strlen(names[c]);
        for (const char *p = calls; p != NULL && *p != '\0';) {
            const char *end = strchr(p, ',');
            size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
            if (n == len && strncmp(p, names[c], n) == 0) {
                __atomic_store_n(&enabled[c], 1, __ATOMIC_SEQ_CST);
            }
            p = end != NULL ? end + 1 : NULL;
        }
    }
}

__attribute__((constructor)) static void setup(void) {
    wanted = getenv("KILN_FAULT_PATH");
    if (wanted == NULL || *wanted == '\0') {
        wanted = NULL;
        return;
    }
    const char *calls = getenv("KILN_FAULT_CALLS");
    if (calls == NULL) {
        calls = "read,pread";
    }
    enable(calls);
    const char *v;
    if ((v = getenv("KILN_FAULT_ERRNO")) != NULL) fault_errno = (int)strtol(v, NULL, 10);
    if ((v = getenv("KILN_FAULT_NTH")) != NULL) nth = strtol(v, NULL, 10);
    if ((v = getenv("KILN_FAULT_COUNT")) != NULL) count = strtol(v, NULL, 10);
    if ((v = getenv("KILN_FAULT_PROBABILITY")) != NULL) probability = strtod(v, NULL);
    if ((v = getenv("KILN_FAULT_SEED")) != NULL) state ^= strtoull(v, NULL, 10) * 0xBF58476D1CE4E5B9ULL;
}

static void report(enum call c, const char *path) {
    if (getenv("KILN_FAULT_REPORT") != NULL) {
        fprintf(stderr, "kiln-fault: %s failed on %s\n", names[c], path);
    }
}

static int path_wanted(const char *path) {
    return wanted != NULL && path != NULL && strstr(path, wanted) != NULL;
}

/* Whether `fd` is a wanted file; its path in `path`. */
static int fd_wanted(int fd, char path[4096]) {
    if (wanted == NULL) {
        return 0;
    }
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, 4095);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    return strstr(path, wanted) != NULL;
}

/* Whether this call, on a wanted file, fails. */
static int fails(enum call c) {
    if (!enabled[c]) {
        return 0;
    }
    long k = __atomic_add_fetch(&seen, 1, __ATOMIC_SEQ_CST);
    int f;
    if (nth > 0) {
        f = k >= nth && k < nth + count;
    } else if (probability <= 0.0) {
        f = 0;
    } else {
        /* splitmix64 on a shared counter: one draw per counted call. */
        unsigned long long z = __atomic_add_fetch(&state, 0x9E3779B97F4A7C15ULL, __ATOMIC_SEQ_CST);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        f = (double)(z >> 11) / (double)(1ULL << 53) < probability;
    }
    if (f) {
        __atomic_add_fetch(&failed, 1, __ATOMIC_SEQ_CST);
    }
    return f;
}

void kiln_fault_arm(const char *path, const char *calls, int err, long n) {
    static char kept[4096];
    kiln_fault_disarm();
    snprintf(kept, sizeof kept, "%s", path);
    wanted = kept;
    fault_errno = err;
    count = 1;
    probability = 0.0;
    __atomic_store_n(&seen, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&nth, n, __ATOMIC_SEQ_CST);
    enable(calls);
}

void kiln_fault_disarm(void) {
    enable("");
}

long kiln_fault_failed(void) {
    return __atomic_load_n(&failed, __ATOMIC_SEQ_CST);
}

static int fd_fails(enum call c, int fd) {
    if (!enabled[c] || inside) {
        return 0;
    }
    inside = 1;
    char path[4096];
    int f = fd_wanted(fd, path) && fails(c);
    if (f) {
        report(c, path);
    }
    inside = 0;
    if (f) {
        errno = fault_errno;
    }
    return f;
}

static int path_fails(enum call c, const char *path) {
    if (!enabled[c] || inside) {
        return 0;
    }
    int f = path_wanted(path) && fails(c);
    if (f) {
        inside = 1;
        report(c, path);
        inside = 0;
        errno = fault_errno;
    }
    return f;
}

#define REAL(ret, name, ...)                                              \
    static ret (*real)(__VA_ARGS__);                                      \
    if (real == NULL) {                                                   \
        real = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, name);               \
    }

ssize_t read(int fd, void *buf, size_t n) {
    REAL(ssize_t, "read", int, void *, size_t);
    return fd_fails(READ, fd) ? -1 : real(fd, buf, n);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pread64", int, void *, size_t, off_t);
    return fd_fails(PREAD, fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    return pread64(fd, buf, n, off);
}

/* A vectored positional read counts as a pread. */
ssize_t preadv64(int fd, const struct iovec *iov, int count, off_t off) {
    REAL(ssize_t, "preadv64", int, const struct iovec *, int, off_t);
    return fd_fails(PREAD, fd) ? -1 : real(fd, iov, count, off);
}

ssize_t preadv(int fd, const struct iovec *iov, int count, off_t off) {
    return preadv64(fd, iov, count, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, "write", int, const void *, size_t);
    return fd_fails(WRITE, fd) ? -1 : real(fd, buf, n);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pwrite64", int, const void *, size_t, off_t);
    return fd_fails(PWRITE, fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    return pwrite64(fd, buf, n, off);
}

int fsync(int fd) {
    REAL(int, "fsync", int);
    return fd_fails(FSYNC, fd) ? -1 : real(fd);
}

int fdatasync(int fd) {
    REAL(int, "fdatasync", int);
    return fd_fails(FDATASYNC, fd) ? -1 : real(fd);
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    REAL(int, "sync_file_range", int, off64_t, off64_t, unsigned int);
    return fd_fails(SYNC_FILE_RANGE, fd) ? -1 : real(fd, off, n, flags);
}

int ftruncate64(int fd, off64_t len) {
    REAL(int, "ftruncate64", int, off64_t);
    return fd_fails(FTRUNCATE, fd) ? -1 : real(fd, len);
}

int ftruncate(int fd, off_t len) {
    return ftruncate64(fd, len);
}

int rename(const char *from, const char *to) {
    REAL(int, "rename", const char *, const char *);
    return path_fails(RENAME, to) ? -1 : real(from, to);
}

int unlink(const char *path) {
    REAL(int, "unlink", const char *);
    return path_fails(UNLINK, path) ? -1 : real(path);
}

int open64(const char *path, int flags, ...) {
    REAL(int, "open64", const char *, int, mode_t);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return path_fails(OPEN, path) ? -1 : real(path, flags, mode);
}

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return open64(path, flags, mode);
}
