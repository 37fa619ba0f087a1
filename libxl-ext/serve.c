/* serve.c: the source-side disk of the simulated guest (incmig_serve).
 *
 * It stands in for what Xen provides on the source host: blkback serving
 * the guest's disk and keeping its write bitmap.  It exports an image over
 * NBD (nbd.c) and marks every write, trim and write-zeroes in an
 * in-process tracker (tracker.c) before the image is touched and again
 * once it has been (the ordering rule in tracker.c).  The
 * toolstack drives it through the control socket (protocol in
 * incmig-internal.h, client side in ctl.c).
 *
 * States of the export:
 *   SERVING --SUSPEND--> SUSPENDED --COMMIT--> COMMITTED --RELEASE--> exit
 *                        SUSPENDED --RESUME / toolstack gone--> SERVING
 * After COMMIT the destination runs the guest: this side never serves
 * again, whatever happens to the toolstack.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "incmig-internal.h"

enum serve_state { SERVING, SUSPENDED, COMMITTED };

struct served {
    struct incmig__disk disk;
    struct incmig__memtracker mt;
    struct incmig__nbd_server *nbd;
    enum serve_state state;
    const char *name;
};

static int sv_pread(void *opaque, void *buf, uint32_t count, uint64_t off)
{
    struct served *s = opaque;
    return incmig__disk_pread(&s->disk, buf, count, off) ? -EIO : 0;
}

static int sv_flush(void *opaque)
{
    struct served *s = opaque;
    return incmig__disk_flush(&s->disk) ? -EIO : 0;
}

/* Aligned writes go to the image with O_DIRECT, as blkback's go to the
 * disk: nothing piles up in the page cache, so a flush, and the drain when
 * the guest is paused, cost what the device costs.  Returns 1 when the
 * write must take the buffered path (unaligned, or O_DIRECT refused). */
static int direct_write(struct served *s, const void *buf, uint32_t count,
                        uint64_t off)
{
    void *bounce;

    if (s->disk.dfd == s->disk.fd || (off | count) & 4095 ||
        off + count > s->disk.size)
        return 1;
    if (posix_memalign(&bounce, 4096, count))
        return 1;
    memcpy(bounce, buf, count);
    int rc = 0;
    for (uint32_t done = 0; done < count;) {
        ssize_t r = pwrite(s->disk.dfd, (uint8_t *)bounce + done, count - done,
                           (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EINVAL && done == 0) {
            rc = 1;
            break;
        }
        if (r <= 0) {
            rc = errno == ENOSPC || errno == EDQUOT ? INCMIG_ENOSPC : INCMIG_EIO;
            ERR("writing %u bytes at offset %" PRIu64 " of %s failed: %s",
                count, off, s->disk.path, strerror(errno));
            break;
        }
        done += (uint32_t)r;
    }
    free(bounce);
    return rc;
}

static int sv_pwrite(void *opaque, const void *buf, uint32_t count,
                     uint64_t off, bool fua)
{
    struct served *s = opaque;
    int rc;

    incmig__memtracker_mark(&s->mt, off, count);
    rc = direct_write(s, buf, count, off);
    if (rc == 1)
        rc = incmig__disk_pwrite(&s->disk, buf, count, off);
    incmig__memtracker_mark(&s->mt, off, count);
    if (rc)
        return rc == INCMIG_ENOSPC ? -ENOSPC : -EIO;
    return fua ? sv_flush(opaque) : 0;
}

static int sv_zero(void *opaque, uint32_t count, uint64_t off, bool may_trim,
                   bool fua)
{
    struct served *s = opaque;
    incmig__memtracker_mark(&s->mt, off, count);
    int rc = incmig__disk_punch(&s->disk, off, count);
    incmig__memtracker_mark(&s->mt, off, count);
    if (rc)
        return -EIO;
    return fua ? sv_flush(opaque) : 0;
}

static int sv_trim(void *opaque, uint32_t count, uint64_t off, bool fua)
{
    return sv_zero(opaque, count, off, true, fua);
}

static const struct incmig__nbd_ops serve_ops = {
    .pread = sv_pread,
    .pwrite = sv_pwrite,
    .flush = sv_flush,
    .trim = sv_trim,
    .zero = sv_zero,
};

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static int reply(int fd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int reply(int fd, const char *fmt, ...)
{
    char line[INCMIG_CTL_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    return incmig__ctl_writeall(fd, line, (size_t)n);
}

static int cmd_getclear(struct served *s, int fd, const char *arg)
{
    struct incmig__bitmap bm = {0};
    uint8_t *enc = NULL;
    size_t len = 0;
    int rc;

    if (strcmp(arg, "0") != 0)
        return reply(fd, "ERR no disk %s (this guest has disk 0 only)", arg);
    rc = incmig__bitmap_init(&bm, s->mt.t.nblocks);
    if (!rc)
        rc = s->mt.t.ops->get_and_clear(&s->mt.t, &bm);
    if (!rc)
        rc = incmig__bitmap_encode(&bm, 0, bm.nbits, &enc, &len);
    if (rc) {
        rc = reply(fd, "ERR cannot read the write bitmap: %s",
                   incmig_strerror(rc));
        goto out;
    }
    DBG("bitmap handed out: %" PRIu64 " dirty blocks, %zu bytes",
        incmig__bitmap_count(&bm), len);
    rc = reply(fd, "OK %" PRIu64 " %zu", bm.nbits, len);
    if (!rc)
        rc = incmig__ctl_writeall(fd, enc, len);
out:
    free(enc);
    incmig__bitmap_dispose(&bm);
    return rc;
}

/* Serve one toolstack connection.  Returns 1 when released. */
static int control_session(struct served *s, int fd)
{
    char line[INCMIG_CTL_LINE_MAX];
    int rc;

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, 500);
        if (stop_requested)
            return 0;
        if (r <= 0)
            continue;
        rc = incmig__ctl_readline(fd, line, sizeof line);
        if (rc)
            break;
        if (!strcmp(line, "INFO")) {
            rc = reply(fd, "OK %" PRIu64 " %u %s %s", s->disk.size,
                       s->mt.t.block_size, s->name, s->disk.path);
        } else if (!strncmp(line, "GETCLEAR ", 9)) {
            rc = cmd_getclear(s, fd, line + 9);
        } else if (!strcmp(line, "SUSPEND")) {
            if (s->state == SERVING) {
                rc = incmig__nbd_quiesce(s->nbd);
                if (rc) {
                    rc = reply(fd, "ERR cannot drain the export");
                    continue;
                }
                s->state = SUSPENDED;
                INFO("guest paused: export drained and closed");
            }
            rc = reply(fd, "OK");
        } else if (!strcmp(line, "COMMIT")) {
            if (s->state == SERVING)
                rc = reply(fd, "ERR not suspended");
            else {
                s->state = COMMITTED;
                rc = reply(fd, "OK");
            }
        } else if (!strcmp(line, "RESUME")) {
            if (s->state == COMMITTED)
                rc = reply(fd, "ERR past the point of no return: the "
                           "destination owns the guest");
            else {
                if (s->state == SUSPENDED && incmig__nbd_start(s->nbd) == 0)
                    INFO("guest resumed on the source");
                s->state = SERVING;
                rc = reply(fd, "OK");
            }
        } else if (!strcmp(line, "RELEASE")) {
            if (s->state != COMMITTED) {
                rc = reply(fd, "ERR release before commit refused");
            } else {
                reply(fd, "OK");
                return 1;
            }
        } else {
            rc = reply(fd, "ERR unknown command");
        }
        if (rc)
            break;
    }
    /* The toolstack went away. */
    if (s->state == SUSPENDED) {
        ERR("toolstack disconnected while the guest was paused, before the "
            "point of no return: resuming the guest here");
        if (incmig__nbd_start(s->nbd) == 0)
            s->state = SERVING;
    }
    return 0;
}

int incmig_serve(const struct incmig_serve_opts *o)
{
    struct served s;
    int lfd = -1, rc;
    struct sigaction sa = { .sa_handler = on_signal };
    uint32_t bs = o->block_size ? o->block_size : INCMIG_BS_DEFAULT;

    memset(&s, 0, sizeof s);
    s.disk.fd = s.disk.dfd = -1;
    if (!o->image || !o->nbd_uri || !o->control_path) {
        ERR("serve needs an image, an NBD address and a control socket");
        return INCMIG_EINVAL;
    }
    s.name = strrchr(o->image, '/') ? strrchr(o->image, '/') + 1 : o->image;
    rc = incmig__disk_open(&s.disk, o->image, INCMIG_DISK_WRITE, 0);
    if (rc)
        goto out;
    rc = incmig__memtracker_init(&s.mt, s.disk.size, bs);
    if (rc)
        goto out;
    rc = incmig__nbd_new(&s.nbd, o->nbd_uri, s.disk.size, &serve_ops, &s,
                         o->max_inflight);
    if (rc)
        goto out;
    rc = incmig__unix_listen(o->control_path, &lfd);
    if (rc)
        goto out;
    rc = incmig__nbd_start(s.nbd);
    if (rc)
        goto out;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    INFO("serving %s (%" PRIu64 " bytes, tracking %u-byte blocks) on %s, "
         "control %s", o->image, s.disk.size, bs, o->nbd_uri, o->control_path);

    while (!stop_requested) {
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        if (poll(&p, 1, 500) <= 0)
            continue;
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        int released = control_session(&s, cfd);
        close(cfd);
        if (released) {
            INFO("released by the toolstack: the destination owns the disk");
            break;
        }
    }
    if (stop_requested)
        INFO("stopped by signal %d", (int)stop_requested);
out:
    if (lfd >= 0) {
        close(lfd);
        unlink(o->control_path);
    }
    if (s.nbd)
        incmig__nbd_free(s.nbd);
    if (s.mt.t.ops)
        s.mt.t.ops->dispose(&s.mt.t);
    incmig__disk_close(&s.disk);
    return rc;
}
