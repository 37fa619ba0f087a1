/* xen/nbdkern.c: dom0's kernel NBD client, driven from userspace.
 *
 * The Xen target (xen/target.c) serves each disk's PULL gate on a private
 * unix socket (nbd.c) and puts the kernel's NBD client on it, so that a
 * block device, /dev/nbdN, reads and writes through the gate; blkback then
 * serves the domain from a device-mapper device on top of it (xen/dm.c).
 * nbd-client(8) is not needed: the handshake is done here, in userspace,
 * and the connected socket is handed to the kernel with the ioctls of
 * <linux/nbd.h>, as nbd-client does it.
 *
 * Entry points (xen/nbdkern.h): incmig__nbdkern_handshake (the client side
 * of the fixed newstyle negotiation, also run by the unit test against
 * nbd.c's server), incmig__nbdkern_connect, incmig__nbdkern_disconnect.
 *
 *   step            what                              on failure
 *   handshake       NBDMAGIC IHAVEOPT, cflags,        EPROTO, socket closed
 *                   NBD_OPT_GO "" (EXPORT_NAME if
 *                   the server answers ERR_UNSUP)
 *   pick a device   SYS/nbdN without a pid file       ENOTSUP: no device
 *                   and of size 0
 *   NBD_SET_SOCK    claims it; EBUSY: next device     EIO
 *   BLKSIZE, SIZE,  512, the export's size, its       NBD_CLEAR_SOCK, EIO
 *   FLAGS           transmission flags
 *   NBD_DO_IT       own thread, all signals blocked;  the thread's errno
 *                   blocks until disconnect           (EIO)
 *   live            SYS/nbdN/size shows the size      disconnect, EIO
 *
 * No request timeout is set (NBD_SET_TIMEOUT): a read waiting for a block
 * that PULL has not brought yet must wait as long as the link is down,
 * and with timeout 0 the kernel only warns about it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/nbd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../be.h"
#include "../incmig-internal.h"
#include "nbdkern.h"

#define NBD_MAGIC_INIT UINT64_C(0x4e42444d41474943)   /* "NBDMAGIC" */
#define NBD_MAGIC_OPT UINT64_C(0x49484156454f5054)    /* "IHAVEOPT" */
#define NBD_MAGIC_REP UINT64_C(0x0003e889045565a9)
#define HFLAG_FIXED_NEWSTYLE 1u
#define HFLAG_NO_ZEROES 2u
#define OPT_EXPORT_NAME 1u
#define OPT_GO 7u
#define REP_ACK 1u
#define REP_INFO 3u
#define REP_ERR (UINT32_C(1) << 31)
#define REP_ERR_UNSUP (REP_ERR | 1u)
#define INFO_EXPORT 0u
#define TFLAG_HAS_FLAGS 1u
#define REP_MAX 4096u             /* a reply we read, at most */
#define HANDSHAKE_TIMEOUT_S 10
#define LIVE_TIMEOUT_S 10.0

static int real_ioctl(int fd, unsigned long req, unsigned long arg)
{
    return ioctl(fd, req, arg);
}

struct incmig__nbdkern_sys incmig__nbdkern_sys = {
    .dev_dir = "/dev",
    .sys_dir = "/sys/block",
    .ioctl = real_ioctl,
};

void incmig__nbdkern_init(struct incmig__nbdkern *k)
{
    memset(k, 0, sizeof *k);
    k->index = -1;
    k->fd = k->sock = -1;
}

/* ---- the handshake ---------------------------------------------------------- */

static int readn(int fd, void *buf, size_t len, char *msg, size_t cap,
                 const char *what)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(msg, cap, "NBD handshake: %s: %s", what,
                     n == 0 ? "the server closed the connection"
                            : errno == EAGAIN ? "no answer in time"
                                              : strerror(errno));
            return INCMIG_EPROTO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int writen(int fd, const void *buf, size_t len, char *msg, size_t cap)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(msg, cap, "NBD handshake: cannot send: %s",
                     strerror(errno));
            return INCMIG_EPROTO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_opt(int fd, uint32_t opt, const void *data, uint32_t len,
                    char *msg, size_t cap)
{
    uint8_t h[16];
    put64(h, NBD_MAGIC_OPT);
    put32(h + 8, opt);
    put32(h + 12, len);
    int rc = writen(fd, h, sizeof h, msg, cap);
    if (!rc && len)
        rc = writen(fd, data, len, msg, cap);
    return rc;
}

/* NBD_OPT_GO: 0, or 1 when the server does not know it. */
static int opt_go(int fd, uint64_t *size_r, uint16_t *tflags_r, char *msg,
                  size_t cap)
{
    uint8_t req[6] = { 0 };   /* empty export name, no info request */
    uint8_t h[20], data[REP_MAX];
    bool have = false;
    int rc;

    rc = send_opt(fd, OPT_GO, req, sizeof req, msg, cap);
    for (int n = 0; !rc; n++) {
        if (n > 64) {
            snprintf(msg, cap, "NBD handshake: too many replies to GO");
            return INCMIG_EPROTO;
        }
        rc = readn(fd, h, sizeof h, msg, cap, "reply to GO");
        if (rc)
            return rc;
        uint32_t opt = get32(h + 8), type = get32(h + 12), len = get32(h + 16);
        if (get64(h) != NBD_MAGIC_REP || opt != OPT_GO) {
            snprintf(msg, cap, "NBD handshake: bad reply (magic %016" PRIx64
                     ", option %u)", get64(h), opt);
            return INCMIG_EPROTO;
        }
        if (len > REP_MAX) {
            snprintf(msg, cap, "NBD handshake: a reply of %u bytes", len);
            return INCMIG_EPROTO;
        }
        rc = readn(fd, data, len, msg, cap, "reply data");
        if (rc)
            return rc;
        if (type == REP_ERR_UNSUP)
            return 1;
        if (type & REP_ERR) {
            snprintf(msg, cap, "NBD handshake: the server refused the "
                     "export (error %u: %.*s)", type & ~REP_ERR,
                     (int)(len < 200 ? len : 200), (const char *)data);
            return INCMIG_EPROTO;
        }
        if (type == REP_INFO && len >= 2 &&
            ((uint16_t)(data[0] << 8 | data[1])) == INFO_EXPORT) {
            if (len != 12) {
                snprintf(msg, cap, "NBD handshake: NBD_INFO_EXPORT of %u "
                         "bytes", len);
                return INCMIG_EPROTO;
            }
            *size_r = get64(data + 2);
            *tflags_r = (uint16_t)(data[10] << 8 | data[11]);
            have = true;
        } else if (type == REP_ACK) {
            if (!have) {
                snprintf(msg, cap, "NBD handshake: GO acknowledged without "
                         "the export's size");
                return INCMIG_EPROTO;
            }
            return 0;
        }
        /* other informational replies: skipped */
    }
    return rc;
}

int incmig__nbdkern_handshake(int fd, uint64_t *size_r, uint16_t *tflags_r,
                              char *msg, size_t cap)
{
    uint8_t h[18], b[4];
    int rc;

    rc = readn(fd, h, sizeof h, msg, cap, "greeting");
    if (rc)
        return rc;
    uint16_t hflags = (uint16_t)(h[16] << 8 | h[17]);
    if (get64(h) != NBD_MAGIC_INIT || get64(h + 8) != NBD_MAGIC_OPT ||
        !(hflags & HFLAG_FIXED_NEWSTYLE)) {
        snprintf(msg, cap, "NBD handshake: not a fixed newstyle NBD server");
        return INCMIG_EPROTO;
    }
    bool nz = hflags & HFLAG_NO_ZEROES;
    put32(b, HFLAG_FIXED_NEWSTYLE | (nz ? HFLAG_NO_ZEROES : 0));
    rc = writen(fd, b, 4, msg, cap);
    if (rc)
        return rc;
    rc = opt_go(fd, size_r, tflags_r, msg, cap);
    if (rc == 1) {
        uint8_t e[10 + 124];
        rc = send_opt(fd, OPT_EXPORT_NAME, NULL, 0, msg, cap);
        if (!rc)
            rc = readn(fd, e, nz ? 10 : sizeof e, msg, cap, "export");
        if (rc)
            return rc;
        *size_r = get64(e);
        *tflags_r = (uint16_t)(e[8] << 8 | e[9]);
    }
    if (rc)
        return rc;
    if (!(*tflags_r & TFLAG_HAS_FLAGS) || *size_r == 0 ||
        *size_r > INCMIG_DISK_MAX) {
        snprintf(msg, cap, "NBD handshake: export of %" PRIu64 " bytes, "
                 "flags %#x", *size_r, *tflags_r);
        return INCMIG_EPROTO;
    }
    return 0;
}

/* ---- the kernel side ----------------------------------------------------------- */

static bool sys_file(int n, const char *name, char *buf, size_t cap)
{
    char p[512];
    snprintf(p, sizeof p, "%s/nbd%d%s%s", incmig__nbdkern_sys.sys_dir, n,
             name ? "/" : "", name ? name : "");
    if (!buf) {
        struct stat sb;
        return stat(p, &sb) == 0;
    }
    FILE *f = fopen(p, "re");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    return ok;
}

static uint64_t sys_size(int n)
{
    char b[64];
    return sys_file(n, "size", b, sizeof b) ? strtoull(b, NULL, 10) : 0;
}

static void *doit_main(void *opaque)
{
    struct incmig__nbdkern *k = opaque;
    int r = incmig__nbdkern_sys.ioctl(k->fd, NBD_DO_IT, 0);
    int e = r < 0 ? errno : 0;

    incmig__nbdkern_sys.ioctl(k->fd, NBD_CLEAR_QUE, 0);
    incmig__nbdkern_sys.ioctl(k->fd, NBD_CLEAR_SOCK, 0);
    pthread_mutex_lock(&k->lock);
    k->doit_done = true;
    k->doit_errno = e;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* Find a free device and give it the socket (NBD_SET_SOCK claims it). */
static int claim(struct incmig__nbdkern *k, char *msg, size_t cap)
{
    int last = 0, tried = 0;

    for (int n = 0; n < 4096 && sys_file(n, NULL, NULL, 0); n++) {
        char dev[64];
        if (sys_file(n, "pid", NULL, 0) || sys_size(n) != 0)
            continue;                        /* connected, or being so */
        snprintf(dev, sizeof dev, "%s/nbd%d", incmig__nbdkern_sys.dev_dir, n);
        int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            last = errno;
            continue;
        }
        tried++;
        if (incmig__nbdkern_sys.ioctl(fd, NBD_SET_SOCK,
                                      (unsigned long)k->sock) < 0) {
            last = errno;
            close(fd);
            continue;                        /* EBUSY: someone else's */
        }
        k->fd = fd;
        k->index = n;
        snprintf(k->dev, sizeof k->dev, "%s", dev);
        return 0;
    }
    snprintf(msg, cap, "no free NBD device (%s/nbd*: %d tried%s%s; `modprobe "
             "nbd nbds_max=N` gives more)", incmig__nbdkern_sys.dev_dir,
             tried, last ? ", last error: " : "", last ? strerror(last) : "");
    return tried ? INCMIG_EIO : INCMIG_ENOTSUP;
}

int incmig__nbdkern_connect(struct incmig__nbdkern *k, int sock, char *msg,
                            size_t cap)
{
    struct timeval tv = { .tv_sec = HANDSHAKE_TIMEOUT_S };
    sigset_t all, old;
    int rc;

    k->sock = sock;
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    rc = incmig__nbdkern_handshake(sock, &k->size, &k->tflags, msg, cap);
    tv.tv_sec = 0;       /* the kernel's receives must wait for ever */
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (rc)
        goto failed;
    rc = claim(k, msg, cap);
    if (rc)
        goto failed;
    if (incmig__nbdkern_sys.ioctl(k->fd, NBD_SET_BLKSIZE,
                                  INCMIG_NBDKERN_BLKSIZE) < 0 ||
        incmig__nbdkern_sys.ioctl(k->fd, NBD_SET_SIZE,
                                  (unsigned long)k->size) < 0 ||
        incmig__nbdkern_sys.ioctl(k->fd, NBD_SET_FLAGS, k->tflags) < 0) {
        snprintf(msg, cap, "%s: cannot set its size (%" PRIu64 " bytes) or "
                 "flags: %s", k->dev, k->size, strerror(errno));
        incmig__nbdkern_sys.ioctl(k->fd, NBD_CLEAR_SOCK, 0);
        rc = INCMIG_EIO;
        goto failed;
    }
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&k->thr, NULL, doit_main, k);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        snprintf(msg, cap, "%s: cannot start its thread", k->dev);
        incmig__nbdkern_sys.ioctl(k->fd, NBD_CLEAR_SOCK, 0);
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->lock);
        rc = INCMIG_ENOMEM;
        goto failed;
    }
    k->thr_started = true;

    /* live once the kernel shows the size (it does from NBD_DO_IT on) */
    double end = incmig__now() + LIVE_TIMEOUT_S;
    for (;;) {
        pthread_mutex_lock(&k->lock);
        bool done = k->doit_done;
        int e = k->doit_errno;
        pthread_mutex_unlock(&k->lock);
        if (done) {
            snprintf(msg, cap, "%s: NBD_DO_IT ended at once: %s", k->dev,
                     e ? strerror(e) : "disconnected");
            incmig__nbdkern_disconnect(k, 1);
            return INCMIG_EIO;
        }
        if (sys_size(k->index) == k->size / 512 && k->size >= 512)
            break;
        if (incmig__now() > end) {
            snprintf(msg, cap, "%s: not live after %.0f s", k->dev,
                     LIVE_TIMEOUT_S);
            incmig__nbdkern_disconnect(k, 1);
            return INCMIG_EIO;
        }
        usleep(5000);
    }
    DBG("%s connected: %" PRIu64 " bytes, flags %#x", k->dev, k->size,
        k->tflags);
    return 0;

failed:
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    k->index = -1;
    close(sock);
    k->sock = -1;
    return rc;
}

void incmig__nbdkern_disconnect(struct incmig__nbdkern *k, double timeout_s)
{
    if (k->thr_started) {
        struct timespec ts;
        bool done;

        incmig__nbdkern_sys.ioctl(k->fd, NBD_DISCONNECT, 0);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)timeout_s;
        pthread_mutex_lock(&k->lock);
        while (!k->doit_done &&
               pthread_cond_timedwait(&k->cond, &k->lock, &ts) == 0)
            ;
        done = k->doit_done;
        pthread_mutex_unlock(&k->lock);
        if (!done) {
            /* the server did not close: end the connection under it */
            ERR("%s: still connected %.0f s after NBD_DISCONNECT; shutting "
                "its socket down", k->dev, timeout_s);
            shutdown(k->sock, SHUT_RDWR);
        }
        pthread_join(k->thr, NULL);
        k->thr_started = false;
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->lock);
        DBG("%s disconnected", k->dev);
    }
    if (k->fd >= 0)
        close(k->fd);
    if (k->sock >= 0)
        close(k->sock);
    k->fd = k->sock = -1;
    k->index = -1;
}
