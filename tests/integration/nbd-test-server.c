/* nbd-test-server: serves a raw file through incmig__nbd_* (nbd.c) so the
 * integration tests can point real NBD clients (libnbd, nbdcopy, qemu) at
 * the server alone, without the rest of the engine.
 *
 *   nbd-test-server FILE LISTEN_URI [--workers N] [--delay-ms D]
 *                   [--quiesce-after-seconds N [--restart-after M]]
 *
 * Prints "ready" once listening and started.  With --held it is staged
 * (incmig__nbd_hold: clients are accepted, their requests wait) until
 * SIGUSR2 starts it.  With --quiesce-after-seconds
 * it calls incmig__nbd_quiesce after N seconds, and so does SIGUSR1; when
 * that returns it prints "quiesced rc=R clients=K busy=B" (all must be 0:
 * B counts ops callbacks still running, which a correct quiesce has
 * waited for).  With --restart-after it calls incmig__nbd_start M seconds
 * later, as does SIGUSR2, and prints "restarted".  --delay-ms makes every
 * write sleep first, so that many requests are really in flight when a
 * quiesce comes.  Runs until SIGINT/SIGTERM.
 *
 * The ops are plain pread/pwrite/fdatasync/fallocate on the file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "incmig-internal.h"

static int img_fd = -1;
static long delay_ms;
static int busy;   /* ops callbacks running now (atomic builtins) */

#define ENTER() __atomic_add_fetch(&busy, 1, __ATOMIC_SEQ_CST)
#define LEAVE(rc) (__atomic_sub_fetch(&busy, 1, __ATOMIC_SEQ_CST), (rc))

static int t_pread(void *opaque, void *buf, uint32_t count, uint64_t off)
{
    uint8_t *p = buf;

    while (count > 0) {
        ssize_t r = pread(img_fd, p, count, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0) {            /* past EOF of a file shorter than size */
            memset(p, 0, count);
            return 0;
        }
        p += r;
        off += (uint64_t)r;
        count -= (uint32_t)r;
    }
    return 0;
}

static int t_flush(void *opaque)
{
    return fdatasync(img_fd) < 0 ? -errno : 0;
}

static int t_pwrite(void *opaque, const void *buf, uint32_t count,
                    uint64_t off, bool fua)
{
    const uint8_t *p = buf;

    if (delay_ms > 0) {
        struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
    }
    while (count > 0) {
        ssize_t r = pwrite(img_fd, p, count, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        p += r;
        off += (uint64_t)r;
        count -= (uint32_t)r;
    }
    return fua ? t_flush(opaque) : 0;
}

static int t_trim(void *opaque, uint32_t count, uint64_t off, bool fua)
{
    if (fallocate(img_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)off, count) < 0 && errno != EOPNOTSUPP)
        return -errno;
    return fua ? t_flush(opaque) : 0;   /* trim is advisory: no hole is ok */
}

static int t_zero(void *opaque, uint32_t count, uint64_t off, bool may_trim,
                  bool fua)
{
    int mode = may_trim ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                        : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

    if (fallocate(img_fd, mode, (off_t)off, count) < 0) {
        static const uint8_t zeroes[65536];
        if (errno != EOPNOTSUPP)
            return -errno;
        while (count > 0) {      /* the file system cannot: write them */
            uint32_t n = count < sizeof zeroes ? count : sizeof zeroes;
            int rc = t_pwrite(opaque, zeroes, n, off, false);
            if (rc)
                return rc;
            off += n;
            count -= n;
        }
    }
    return fua ? t_flush(opaque) : 0;
}

/* The ops the server sees: the above, counted in `busy`. */
static int c_pread(void *o, void *buf, uint32_t count, uint64_t off)
{
    ENTER();
    return LEAVE(t_pread(o, buf, count, off));
}
static int c_pwrite(void *o, const void *buf, uint32_t count, uint64_t off,
                    bool fua)
{
    ENTER();
    return LEAVE(t_pwrite(o, buf, count, off, fua));
}
static int c_flush(void *o)
{
    ENTER();
    return LEAVE(t_flush(o));
}
static int c_trim(void *o, uint32_t count, uint64_t off, bool fua)
{
    ENTER();
    return LEAVE(t_trim(o, count, off, fua));
}
static int c_zero(void *o, uint32_t count, uint64_t off, bool may_trim,
                  bool fua)
{
    ENTER();
    return LEAVE(t_zero(o, count, off, may_trim, fua));
}

static const struct incmig__nbd_ops ops = {
    .pread = c_pread,
    .pwrite = c_pwrite,
    .flush = c_flush,
    .trim = c_trim,
    .zero = c_zero,
};

static void usage(void)
{
    fprintf(stderr, "usage: nbd-test-server FILE unix:PATH|tcp:HOST:PORT "
            "[--workers N] [--delay-ms D] [--held] [--quiesce-after-seconds "
            "N [--restart-after M]]\n");
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct incmig__nbd_server *s = NULL;
    long quiesce_after = -1, restart_after = -1;
    int workers = 0, rc, status = 1;
    bool held = false;
    double t_quiesce = -1, t_restart = -1;
    struct stat st;
    sigset_t set;

    if (argc < 3)
        usage();
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--held")) {
            held = true;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--workers"))
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--delay-ms"))
            delay_ms = atol(argv[++i]);
        else if (!strcmp(argv[i], "--quiesce-after-seconds"))
            quiesce_after = atol(argv[++i]);
        else if (!strcmp(argv[i], "--restart-after"))
            restart_after = atol(argv[++i]);
        else
            usage();
    }
    if (getenv("NBD_TEST_DEBUG"))
        incmig_log_setup(2, NULL, "nbd-test-server");

    /* Signals are taken synchronously by the main thread; block them
     * before any thread exists so every thread inherits the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    img_fd = open(argv[1], O_RDWR | O_CLOEXEC);
    if (img_fd < 0 || fstat(img_fd, &st) < 0) {
        perror(argv[1]);
        goto out;
    }
    rc = incmig__nbd_new(&s, argv[2], (uint64_t)st.st_size, &ops, NULL,
                         workers);
    if (rc) {
        fprintf(stderr, "nbd-test-server: %s\n", incmig_strerror(rc));
        goto out;
    }
    rc = held ? incmig__nbd_hold(s) : incmig__nbd_start(s);
    if (rc) {
        fprintf(stderr, "nbd-test-server: start: %s\n", incmig_strerror(rc));
        goto out;
    }
    printf("ready\n");
    fflush(stdout);
    if (quiesce_after >= 0)
        t_quiesce = now() + (double)quiesce_after;

    for (;;) {
        double deadline = t_quiesce >= 0 ? t_quiesce : t_restart;
        int sig;
        if (deadline >= 0) {
            double d = deadline - now();
            if (d < 0)
                d = 0;
            struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };
            sig = sigtimedwait(&set, NULL, &ts);
            if (sig < 0 && errno == EAGAIN)
                sig = t_quiesce >= 0 ? SIGUSR1 : SIGUSR2;
        } else {
            sig = sigwaitinfo(&set, NULL);
        }
        if (sig < 0)
            continue;   /* EINTR */
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (sig == SIGUSR1) {
            t_quiesce = -1;
            rc = incmig__nbd_quiesce(s);
            printf("quiesced rc=%d clients=%d busy=%d\n", rc,
                   incmig__nbd_clients(s),
                   __atomic_load_n(&busy, __ATOMIC_SEQ_CST));
            fflush(stdout);
            if (restart_after >= 0) {
                t_restart = now() + (double)restart_after;
                restart_after = -1;
            }
        } else if (sig == SIGUSR2) {
            t_restart = -1;
            rc = incmig__nbd_start(s);
            if (rc)
                goto out;
            printf("restarted\n");
            fflush(stdout);
        }
    }
    status = 0;
out:
    incmig__nbd_free(s);
    if (img_fd >= 0)
        close(img_fd);
    return status;
}
