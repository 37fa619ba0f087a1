/* diskio.c: image files and block devices: open/create, allocation map,
 * synchronous I/O helpers, and an O_DIRECT + libaio request queue.
 *
 * Entry points: incmig__disk_open/close, disk_alloc_map, is_zero,
 * disk_pread/pwrite/flush/punch, and incmig__aioq_* (new, free, get_buf,
 * submit, inflight, reap, put_buf, drain).
 *
 * Each disk has two fds on the same file: `fd` (buffered) for small,
 * unaligned or fallback I/O, and `dfd` (O_DIRECT) for the bulk copy, so a
 * migration does not evict the host's page cache.  Where O_DIRECT is
 * refused (some filesystems) dfd == fd and everything still works.
 *
 * aioq design.  qd slots, each owning one 4096-aligned buffer of maxlen
 * bytes.  A slot moves FREE -get_buf-> OWNED -submit-> INFLIGHT (in the
 * kernel) -> DONE (completion collected, waiting in the `done` FIFO)
 * -reap-> REAPED -put_buf-> FREE.  get_buf never waits: a completion does
 * not free a buffer (the caller still has to see its result), so when no
 * slot is FREE it fails with INCMIG_EINVAL and the caller must reap and
 * put_buf first (keep inflight() < qd before asking for a buffer).
 * Requests that cannot go through O_DIRECT (offset or length not a multiple
 * of 512, e.g. the tail of a disk whose size is not a multiple of 4096, or
 * a kernel EINVAL) are done synchronously on the buffered fd at submit
 * time and put straight on the done FIFO; reap returns the FIFO first, so
 * the caller sees every request exactly once whatever path it took.
 * Reads are rounded up to 4096 bytes (the buffer is large enough) and
 * whatever lies past EOF reads as zeroes.  Short writes are finished
 * synchronously.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libaio.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "incmig-internal.h"

#define DIO_ALIGN 512u          /* O_DIRECT offset/length granularity */
#ifndef IOCB_FLAG_IOPRIO
#define IOCB_FLAG_IOPRIO (1 << 1)  /* linux/aio_abi.h, Linux 4.18 */
#endif
#define IOPRIO_CLASS_SHIFT 13
#define IOPRIO_IDLE (3 << IOPRIO_CLASS_SHIFT)  /* class IDLE, level 0 */
#define BUF_ALIGN 4096u         /* buffer alignment and read rounding */
#define AIOQ_QD_MAX 1024
#define AIOQ_MAXLEN_MAX (UINT64_C(64) << 20)
#define AIOQ_TOTAL_MAX (UINT64_C(1) << 30)

static int errno_to_rc(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? INCMIG_ENOSPC : INCMIG_EIO;
}

/* ---- open / close ------------------------------------------------------- */

int incmig__disk_open(struct incmig__disk *d, const char *path, int flags,
                      uint64_t size)
{
    int rc, r;
    struct stat st;
    bool write = flags & (INCMIG_DISK_WRITE | INCMIG_DISK_CREATE);
    int oflags = (write ? O_RDWR : O_RDONLY) | O_CLOEXEC;

    d->fd = d->dfd = -1;
    d->size = 0;
    d->path = strdup(path);
    if (!d->path) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (flags & INCMIG_DISK_CREATE)
        oflags |= O_CREAT;
    d->fd = open(path, oflags | (flags & INCMIG_DISK_NOFOLLOW ? O_NOFOLLOW
                                                              : 0), 0600);
    if (d->fd < 0 && errno == ELOOP && (flags & INCMIG_DISK_NOFOLLOW)) {
        ERR("disk image %s is a symbolic link: refused (give the file "
            "itself)", path);
        rc = INCMIG_EINVAL;
        goto out;
    }
    if (d->fd < 0) {
        LOGE("cannot open disk image %s", path);
        rc = errno == ENOSPC ? INCMIG_ENOSPC : INCMIG_EIO;
        goto out;
    }
    r = fstat(d->fd, &st);
    if (r < 0) {
        LOGE("cannot stat disk image %s", path);
        rc = INCMIG_EIO;
        goto out;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t bytes;
        r = ioctl(d->fd, BLKGETSIZE64, &bytes);
        if (r < 0) {
            LOGE("cannot read the size of block device %s", path);
            rc = INCMIG_EIO;
            goto out;
        }
        if (size && bytes < size) {
            ERR("block device %s holds %" PRIu64 " bytes, the disk needs %"
                PRIu64 ": use a larger volume", path, bytes, size);
            rc = INCMIG_ENOSPC;
            goto out;
        }
        d->size = bytes;
    } else if (S_ISREG(st.st_mode)) {
        d->size = (uint64_t)st.st_size;
        if (size && d->size < size) {
            if (!(flags & INCMIG_DISK_CREATE)) {
                ERR("disk image %s is %" PRIu64 " bytes, expected at least %"
                    PRIu64, path, d->size, size);
                rc = INCMIG_ESIZE;
                goto out;
            }
            if (size > (uint64_t)INT64_MAX || ftruncate(d->fd, (off_t)size) < 0) {
                LOGE("cannot extend disk image %s to %" PRIu64 " bytes",
                     path, size);
                rc = errno_to_rc(errno);
                goto out;
            }
            d->size = size;
        }
    } else {
        ERR("%s is neither a regular file nor a block device", path);
        rc = INCMIG_EINVAL;
        goto out;
    }

    /* the file already opened, not whatever the path names by now */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", d->fd);
    d->dfd = open(self, (oflags & ~O_CREAT) | O_DIRECT);
    if (d->dfd < 0) {
        DBG("O_DIRECT refused on %s (%s): using buffered I/O", path,
            strerror(errno));
        d->dfd = d->fd;
    }
    rc = 0;
out:
    if (rc)
        incmig__disk_close(d);
    return rc;
}

void incmig__disk_close(struct incmig__disk *d)
{
    if (d->dfd >= 0 && d->dfd != d->fd)
        close(d->dfd);
    if (d->fd >= 0)
        close(d->fd);
    d->fd = d->dfd = -1;
    free(d->path);
    d->path = NULL;
}

/* ---- allocation map ----------------------------------------------------- */

int incmig__disk_alloc_map(struct incmig__disk *d, uint32_t bs,
                           struct incmig__bitmap *map)
{
    if (bs == 0 || map->nbits < (d->size + bs - 1) / bs) {
        ERR("allocation map of %s: %" PRIu64 " bits is too small for %"
            PRIu64 " bytes in blocks of %" PRIu32, d->path, map->nbits,
            d->size, bs);
        return INCMIG_EINVAL;
    }
    uint64_t pos = 0;
    while (pos < d->size) {
        off_t data = lseek(d->fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)          /* only a hole up to EOF */
                return 0;
            if (errno == EINVAL || errno == EOPNOTSUPP) {
                DBG("SEEK_DATA unsupported on %s: every block is copied",
                    d->path);
                incmig__bitmap_set_range(map, 0, map->nbits);
                return 0;
            }
            LOGE("cannot map allocated blocks of %s at offset %" PRIu64,
                 d->path, pos);
            return INCMIG_EIO;
        }
        off_t hole = lseek(d->fd, data, SEEK_HOLE);
        if (hole < 0) {
            if (errno != ENXIO) {
                LOGE("cannot map allocated blocks of %s at offset %jd",
                     d->path, (intmax_t)data);
                return INCMIG_EIO;
            }
            hole = (off_t)d->size;       /* raced with a truncate */
        }
        if ((uint64_t)hole > d->size)
            hole = (off_t)d->size;
        if (hole <= data)                /* past our size: done */
            return 0;
        uint64_t b0 = (uint64_t)data / bs;
        uint64_t b1 = ((uint64_t)hole + bs - 1) / bs;
        incmig__bitmap_set_range(map, b0, b1 - b0);
        pos = (uint64_t)hole;
    }
    return 0;
}

bool incmig__is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    /* Check a 16-byte prefix byte by byte, then compare the buffer with
     * itself shifted by 16: memcmp is vectorised, and if the prefix is zero
     * and buf[i] == buf[i+16] everywhere, everything is zero. */
    for (size_t i = 0; i < len && i < 16; i++)
        if (p[i])
            return false;
    if (len <= 16)
        return true;
    return memcmp(p, p + 16, len - 16) == 0;
}

/* ---- synchronous I/O ---------------------------------------------------- */

/* Read len bytes at off from fd; zeroes past EOF.  Returns 0 or -errno. */
static int full_pread(int fd, uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int full_pwrite(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t r = pwrite(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int io_error(struct incmig__disk *d, int neg_errno, bool write,
                  size_t len, uint64_t off)
{
    errno = -neg_errno;
    if (errno == ENOSPC || errno == EDQUOT)
        LOGE("no space to write %zu bytes at offset %" PRIu64 " of %s: "
             "free space on the destination volume", len, off, d->path);
    else
        LOGE("cannot %s %zu bytes at offset %" PRIu64 " of %s",
             write ? "write" : "read", len, off, d->path);
    return errno_to_rc(-neg_errno);
}

int incmig__disk_pread(struct incmig__disk *d, void *buf, size_t len,
                       uint64_t off)
{
    int r = full_pread(d->fd, buf, len, off);
    return r ? io_error(d, r, false, len, off) : 0;
}

int incmig__disk_pwrite(struct incmig__disk *d, const void *buf, size_t len,
                        uint64_t off)
{
    int r = full_pwrite(d->fd, buf, len, off);
    return r ? io_error(d, r, true, len, off) : 0;
}

int incmig__disk_flush(struct incmig__disk *d)
{
    if (fdatasync(d->fd) < 0 || (d->dfd != d->fd && fdatasync(d->dfd) < 0)) {
        LOGE("cannot flush %s to stable storage", d->path);
        return errno_to_rc(errno);
    }
    return 0;
}

int incmig__disk_punch(struct incmig__disk *d, uint64_t off, uint64_t len)
{
    static const uint8_t zeroes[65536];

    if (off >= d->size || len == 0)
        return 0;
    if (len > d->size - off)
        len = d->size - off;
    if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
        LOGE("cannot deallocate %" PRIu64 " bytes at offset %" PRIu64
             " of %s", len, off, d->path);
        return errno_to_rc(errno);
    }
    while (len > 0) {
        size_t n = len < sizeof zeroes ? (size_t)len : sizeof zeroes;
        int rc = incmig__disk_pwrite(d, zeroes, n, off);
        if (rc)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

/* ---- asynchronous queue ------------------------------------------------- */

enum slot_state { SLOT_FREE, SLOT_OWNED, SLOT_INFLIGHT, SLOT_DONE,
                  SLOT_REAPED };

struct slot {
    uint8_t *buf;
    enum slot_state state;
    bool write;
    size_t len;            /* as the caller asked */
    size_t iolen;          /* as submitted (reads rounded up) */
    uint64_t off, tag;
    int res;               /* 0 or INCMIG_E* once DONE */
    struct iocb iocb;
};

struct incmig__aioq {
    struct incmig__disk *d;
    io_context_t ctx;
    bool ctx_ok;
    int qd;
    size_t maxlen;
    struct slot *slots;
    int kernel;            /* submitted, not yet collected */
    int *done;             /* FIFO ring of slot indices, qd entries */
    int done_head, done_n;
    struct io_event *events;
    bool idle;             /* submit at the IDLE I/O class */
    bool idle_refused;     /* the kernel refused a request's priority */
    uint64_t idle_reqs;    /* submitted at the IDLE class */
};

void incmig__aioq_free(struct incmig__aioq *q)
{
    if (!q)
        return;
    if (q->ctx_ok) {
        /* Collect what the kernel still holds before freeing buffers. */
        while (q->kernel > 0) {
            int r = io_getevents(q->ctx, 1, q->qd, q->events, NULL);
            if (r == -EINTR)
                continue;
            if (r < 0)
                break;
            q->kernel -= r;
        }
        io_destroy(q->ctx);
    }
    if (q->slots)
        for (int i = 0; i < q->qd; i++)
            free(q->slots[i].buf);
    free(q->slots);
    free(q->done);
    free(q->events);
    free(q);
}

int incmig__aioq_new(struct incmig__aioq **q_r, struct incmig__disk *d, int qd,
                     size_t maxlen)
{
    int rc;
    struct incmig__aioq *q = NULL;

    *q_r = NULL;
    if (qd < 1 || qd > AIOQ_QD_MAX || maxlen < BUF_ALIGN ||
        maxlen % BUF_ALIGN || maxlen > AIOQ_MAXLEN_MAX ||
        (uint64_t)qd * maxlen > AIOQ_TOTAL_MAX) {
        ERR("I/O queue for %s: bad depth %d or request size %zu", d->path, qd,
            maxlen);
        return INCMIG_EINVAL;
    }
    q = calloc(1, sizeof *q);
    if (!q) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    q->d = d;
    q->qd = qd;
    q->maxlen = maxlen;
    q->slots = calloc((size_t)qd, sizeof *q->slots);
    q->done = calloc((size_t)qd, sizeof *q->done);
    q->events = calloc((size_t)qd, sizeof *q->events);
    if (!q->slots || !q->done || !q->events) {
        ERR("cannot allocate an I/O queue of depth %d", qd);
        rc = INCMIG_ENOMEM;
        goto out;
    }
    for (int i = 0; i < qd; i++) {
        void *p;
        if (posix_memalign(&p, BUF_ALIGN, maxlen)) {
            ERR("cannot allocate %d I/O buffers of %zu bytes", qd, maxlen);
            rc = INCMIG_ENOMEM;
            goto out;
        }
        q->slots[i].buf = p;
    }
    int r = io_setup(qd, &q->ctx);
    if (r < 0) {
        errno = -r;
        LOGE("cannot set up asynchronous I/O (depth %d) for %s; raise "
             "fs.aio-max-nr or lower the queue depth", qd, d->path);
        rc = INCMIG_EIO;
        goto out;
    }
    q->ctx_ok = true;
    *q_r = q;
    q = NULL;
    rc = 0;
out:
    incmig__aioq_free(q);
    return rc;
}

static struct slot *find_slot(struct incmig__aioq *q, const uint8_t *buf)
{
    for (int i = 0; i < q->qd; i++)
        if (q->slots[i].buf == buf)
            return &q->slots[i];
    return NULL;
}

int incmig__aioq_get_buf(struct incmig__aioq *q, uint8_t **buf_r)
{
    for (int i = 0; i < q->qd; i++) {
        if (q->slots[i].state == SLOT_FREE) {
            q->slots[i].state = SLOT_OWNED;
            *buf_r = q->slots[i].buf;
            return 0;
        }
    }
    *buf_r = NULL;
    ERR("I/O queue for %s: all %d buffers busy (reap and put_buf first)",
        q->d->path, q->qd);
    return INCMIG_EINVAL;
}

static void push_done(struct incmig__aioq *q, struct slot *s)
{
    s->state = SLOT_DONE;
    q->done[(q->done_head + q->done_n) % q->qd] = (int)(s - q->slots);
    q->done_n++;
}

/* Do the request synchronously on the buffered fd. */
static void do_sync(struct incmig__aioq *q, struct slot *s)
{
    int r = s->write ? full_pwrite(q->d->fd, s->buf, s->len, s->off)
                     : full_pread(q->d->fd, s->buf, s->len, s->off);
    s->res = r ? io_error(q->d, r, s->write, s->len, s->off) : 0;
}

/* Turn a kernel completion into the slot's final result. */
static void complete(struct incmig__aioq *q, struct slot *s, long res)
{
    if (res == -EINVAL) {
        /* O_DIRECT alignment refused by this device: go buffered. */
        DBG("O_DIRECT refused at offset %" PRIu64 " of %s: retrying buffered",
            s->off, q->d->path);
        do_sync(q, s);
    } else if (res < 0) {
        s->res = io_error(q->d, (int)res, s->write, s->len, s->off);
    } else if (s->write) {
        size_t done = (size_t)res;
        s->res = 0;
        if (done < s->len) {
            int r = full_pwrite(q->d->fd, s->buf + done, s->len - done,
                                s->off + done);
            if (r)
                s->res = io_error(q->d, r, true, s->len - done, s->off + done);
        }
    } else {
        size_t done = (size_t)res;
        s->res = 0;
        if (done < s->len) {
            /* Short read: at EOF full_pread just zero-fills the rest. */
            int r = full_pread(q->d->fd, s->buf + done, s->len - done,
                               s->off + done);
            if (r)
                s->res = io_error(q->d, r, false, s->len - done, s->off + done);
        }
    }
    push_done(q, s);
}

/* Collect at least `min` kernel completions into the done FIFO. */
static int collect(struct incmig__aioq *q, int min)
{
    for (;;) {
        int r = io_getevents(q->ctx, min, q->qd, q->events, NULL);
        if (r == -EINTR)
            continue;
        if (r < 0) {
            errno = -r;
            LOGE("waiting for asynchronous I/O on %s failed", q->d->path);
            return INCMIG_EIO;
        }
        for (int i = 0; i < r; i++) {
            struct slot *s = q->events[i].data;
            q->kernel--;
            complete(q, s, (long)q->events[i].res);
        }
        return 0;
    }
}

int incmig__aioq_submit(struct incmig__aioq *q, bool write, uint8_t *buf,
                        size_t len, uint64_t off, uint64_t tag)
{
    struct slot *s = find_slot(q, buf);

    if (!s || s->state != SLOT_OWNED) {
        ERR("I/O queue for %s: request at offset %" PRIu64 " with a buffer "
            "%s", q->d->path, off, s ? "already submitted or not obtained "
            "by get_buf" : "that is not the queue's");
        return INCMIG_EINVAL;
    }
    if (len == 0 || len > q->maxlen) {
        ERR("I/O queue for %s: request of %zu bytes at offset %" PRIu64
            " (limit %zu)", q->d->path, len, off, q->maxlen);
        return INCMIG_EINVAL;
    }
    if (write && (off > q->d->size || len > q->d->size - off)) {
        ERR("write of %zu bytes at offset %" PRIu64 " is past the end of %s "
            "(%" PRIu64 " bytes)", len, off, q->d->path, q->d->size);
        return INCMIG_EINVAL;
    }
    s->write = write;
    s->len = len;
    s->off = off;
    s->tag = tag;
    s->res = 0;
    s->iolen = write ? len : (len + BUF_ALIGN - 1) / BUF_ALIGN * BUF_ALIGN;

    if (off % DIO_ALIGN || s->iolen % DIO_ALIGN ||
        (!write && off >= q->d->size)) {
        do_sync(q, s);
        push_done(q, s);
        return 0;
    }
    if (write)
        io_prep_pwrite(&s->iocb, q->d->dfd, s->buf, s->iolen, (long long)off);
    else
        io_prep_pread(&s->iocb, q->d->dfd, s->buf, s->iolen, (long long)off);
    s->iocb.data = s;
    if (q->idle) {
        s->iocb.u.c.flags |= IOCB_FLAG_IOPRIO;
        s->iocb.aio_reqprio = IOPRIO_IDLE;
    }
    for (;;) {
        struct iocb *iocbs[1] = { &s->iocb };
        int r = io_submit(q->ctx, 1, iocbs);
        if (r == 1)
            break;
        if (r == -EINTR)
            continue;
        if (r == -EINVAL && (s->iocb.u.c.flags & IOCB_FLAG_IOPRIO)) {
            /* A kernel before 4.18, or one that refuses the class. */
            DBG("I/O priorities refused on %s: background reads at the "
                "normal class", q->d->path);
            q->idle = false;
            q->idle_refused = true;
            s->iocb.u.c.flags &= ~IOCB_FLAG_IOPRIO;
            s->iocb.aio_reqprio = 0;
            continue;
        }
        if (r == -EAGAIN && q->kernel > 0) {
            /* Kernel queue full: make room, keeping the completions. */
            int rc = collect(q, 1);
            if (rc)
                return rc;
            continue;
        }
        if (r == -EAGAIN || r == -EINVAL || r == -EOPNOTSUPP) {
            DBG("io_submit refused at offset %" PRIu64 " of %s (%s): doing "
                "it synchronously", off, q->d->path, strerror(-r));
            do_sync(q, s);
            push_done(q, s);
            return 0;
        }
        errno = r < 0 ? -r : EIO;
        LOGE("cannot submit asynchronous I/O at offset %" PRIu64 " of %s",
             off, q->d->path);
        return INCMIG_EIO;
    }
    s->state = SLOT_INFLIGHT;
    q->kernel++;
    if (s->iocb.u.c.flags & IOCB_FLAG_IOPRIO)
        q->idle_reqs++;
    return 0;
}

void incmig__aioq_set_idle(struct incmig__aioq *q, bool idle)
{
    q->idle = idle && !q->idle_refused;
}

uint64_t incmig__aioq_idle_reqs(const struct incmig__aioq *q)
{
    return q->idle_reqs;
}

int incmig__aioq_inflight(const struct incmig__aioq *q)
{
    return q->kernel + q->done_n;
}

int incmig__aioq_reap(struct incmig__aioq *q, uint64_t *tag_r,
                      uint64_t *off_r, size_t *len_r, uint8_t **buf_r,
                      int *res_r)
{
    if (q->done_n == 0) {
        if (q->kernel == 0) {
            ERR("I/O queue for %s: reap with nothing in flight", q->d->path);
            return INCMIG_EINVAL;
        }
        int rc = collect(q, 1);
        if (rc)
            return rc;
    }
    struct slot *s = &q->slots[q->done[q->done_head]];
    q->done_head = (q->done_head + 1) % q->qd;
    q->done_n--;
    s->state = SLOT_REAPED;
    *tag_r = s->tag;
    *off_r = s->off;
    *len_r = s->len;
    *buf_r = s->buf;
    *res_r = s->res;
    return 0;
}

void incmig__aioq_put_buf(struct incmig__aioq *q, uint8_t *buf)
{
    struct slot *s = find_slot(q, buf);

    /* A buffer still in flight or unseen by reap must not be reused. */
    if (s && (s->state == SLOT_REAPED || s->state == SLOT_OWNED))
        s->state = SLOT_FREE;
    else
        ERR("I/O queue for %s: put_buf of a buffer that is not the "
            "caller's", q->d->path);
}

int incmig__aioq_drain(struct incmig__aioq *q)
{
    int first = 0;

    while (incmig__aioq_inflight(q) > 0) {
        uint64_t tag, off;
        size_t len;
        uint8_t *buf;
        int res;
        int rc = incmig__aioq_reap(q, &tag, &off, &len, &buf, &res);
        if (rc)
            return rc;
        incmig__aioq_put_buf(q, buf);
        if (res && !first)
            first = res;
    }
    return first;
}
