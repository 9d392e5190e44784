/* A read fault for kiln's tests, preloaded with LD_PRELOAD: the
 * KILN_FAULT_READ_NTH-th read (read, pread, pread64) of a file whose path
 * contains KILN_FAULT_READ_PATH fails with EIO, and so do the next
 * KILN_FAULT_READ_COUNT - 1 (default 1 in all); every other call goes to
 * libc. Counting only the reads of matching files makes "the k-th read of
 * sled's files" the same point in every run. Written for these tests. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long fail_at = -1;
static long fail_count = 1;
static const char *wanted = NULL;
static long seen = 0;

__attribute__((constructor)) static void setup(void) {
    const char *nth = getenv("KILN_FAULT_READ_NTH");
    wanted = getenv("KILN_FAULT_READ_PATH");
    if (nth != NULL && wanted != NULL && *wanted != '\0') {
        fail_at = strtol(nth, NULL, 10);
    }
    const char *count = getenv("KILN_FAULT_READ_COUNT");
    if (count != NULL) {
        fail_count = strtol(count, NULL, 10);
    }
}

static int is_wanted(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) {
        return 0;
    }
    path[n] = '\0';
    return strstr(path, wanted) != NULL;
}

/* Whether this call is the one to fail. */
static int fails(int fd) {
    if (fail_at < 1 || !is_wanted(fd)) {
        return 0;
    }
    long k = __atomic_add_fetch(&seen, 1, __ATOMIC_SEQ_CST);
    return k >= fail_at && k < fail_at + fail_count;
}

ssize_t read(int fd, void *buf, size_t count) {
    static ssize_t (*real)(int, void *, size_t);
    if (real == NULL) {
        real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    }
    if (fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (real == NULL) {
        real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    }
    if (fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count, offset);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset) {
    return pread64(fd, buf, count, offset);
}
