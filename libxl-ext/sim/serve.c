/* sim/serve.c: the simulated domain on the source (incmig_serve).
 *
 * It stands in for what Xen provides on the source host: blkback serving
 * the guest's disks and keeping their write bitmaps, and the hypervisor
 * holding the domain's memory.  Each disk is an image exported over NBD
 * (nbd.c, one export and socket per disk) whose writes, trims and
 * write-zeroes are marked in an in-process tracker (tracker.c) before the
 * image is touched and again once it has been (the ordering rule in
 * tracker.c).  Every write also dirties a page of the domain's simulated
 * memory (sim/state.c), whose state stream SUSPEND writes, pre-copy first,
 * then the pause, as libxl does.  The toolstack drives it through the
 * control socket (protocol in incmig-internal.h, client in sim/domain.c);
 * each control connection has its own thread.
 *
 * States of the domain:
 *   SERVING --SUSPEND (state stream, then pause)--> SUSPENDED
 *   SUSPENDED --COMMIT--> COMMITTED --RELEASE--> exit
 *   SUSPENDED --RESUME / last toolstack connection gone--> SERVING
 * After COMMIT the destination runs the guest: this side never serves
 * again, whatever happens to the toolstack.
 *
 * Lineage (lineage.c): each image's claim is proven at start; the image
 * is then marked OPEN and every write is also marked in a second tracker
 * (`lt`, never cleared by the toolstack): the blocks written since the
 * image's generation.  At a clean exit the generation and that bitmap are
 * saved; after RELEASE the generation the toolstack named (ADOPT) with an
 * empty bitmap, the content being exactly what the destination got.
 * Committed but not released, nothing is saved: the claim stays void.
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

struct served;
struct served_disk {           /* one disk: its image, tracker, export */
    struct incmig__disk disk;
    struct incmig__memtracker mt;
    struct incmig__memtracker lt;  /* writes since gen (lineage) */
    uint8_t gen[16];               /* zero: no lineage kept */
    bool lin_bitmap;               /* lt holds every write since gen */
    char lin_why[512];             /* otherwise, why */
    uint8_t adopted[16];           /* ADOPT: the generation at RELEASE */
    bool adopt;
    struct incmig__nbd_server *nbd;
    const char *name;
    int index;
    struct served *sv;
};

struct served {
    const struct incmig_serve_opts *o;
    int nd;
    struct served_disk d[INCMIG_MAX_DISKS];
    struct incmig__simmem mem;     /* the domain's own state */
    pthread_mutex_t lock;          /* state, sessions */
    pthread_cond_t cond;
    enum serve_state state;
    int sessions;                  /* control connections open */
    bool released;
    double t_paused;               /* incmig__now() when paused */
    bool saving;                   /* a SUSPEND is writing the state */
    const char *name;
    /* The guest's I/O as the export sees it (ACTIVITY), atomic: requests
     * completed, and nanoseconds spent in them. */
    uint64_t io_reqs, io_ns;
};

/* Counts one guest request that started at t0 (incmig__now()). */
static int counted(struct served_disk *s, double t0, int rc)
{
    uint64_t ns = (uint64_t)((incmig__now() - t0) * 1e9);
    __atomic_add_fetch(&s->sv->io_reqs, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->sv->io_ns, ns, __ATOMIC_RELAXED);
    return rc;
}

/* A guest write also dirties the domain's memory, as a real guest's
 * would: one page per write, chosen by disk and offset. */
static void touch(struct served_disk *s, uint64_t off)
{
    incmig__simmem_touch(&s->sv->mem, off / 4096 * 31 + (uint64_t)s->index * 7919);
}

static int sv_pread(void *opaque, void *buf, uint32_t count, uint64_t off)
{
    struct served_disk *s = opaque;
    double t0 = incmig__now();
    return counted(s, t0,
                   incmig__disk_pread(&s->disk, buf, count, off) ? -EIO : 0);
}

static int sv_flush(void *opaque)
{
    struct served_disk *s = opaque;
    return incmig__disk_flush(&s->disk) ? -EIO : 0;
}

/* Aligned writes go to the image with O_DIRECT, as blkback's go to the
 * disk: nothing piles up in the page cache, so a flush, and the drain when
 * the guest is paused, cost what the device costs.  Returns 1 when the
 * write must take the buffered path (unaligned, or O_DIRECT refused). */
static int direct_write(struct served_disk *s, const void *buf, uint32_t count,
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
    struct served_disk *s = opaque;
    double t0 = incmig__now();
    int rc;

    incmig__memtracker_mark(&s->mt, off, count);
    incmig__memtracker_mark(&s->lt, off, count);
    touch(s, off);
    rc = direct_write(s, buf, count, off);
    if (rc == 1)
        rc = incmig__disk_pwrite(&s->disk, buf, count, off);
    incmig__memtracker_mark(&s->mt, off, count);
    if (rc)
        return counted(s, t0, rc == INCMIG_ENOSPC ? -ENOSPC : -EIO);
    return counted(s, t0, fua ? sv_flush(opaque) : 0);
}

static int sv_zero(void *opaque, uint32_t count, uint64_t off, bool may_trim,
                   bool fua)
{
    struct served_disk *s = opaque;
    incmig__memtracker_mark(&s->mt, off, count);
    incmig__memtracker_mark(&s->lt, off, count);
    touch(s, off);
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

/* "DISK i" / "GETCLEAR i": the disk, or NULL after an ERR reply. */
static struct served_disk *disk_arg(struct served *s, int fd, const char *arg)
{
    char *end;
    long i = strtol(arg, &end, 10);
    if (*arg && !*end && i >= 0 && i < s->nd)
        return &s->d[i];
    reply(fd, "ERR no disk '%s' (this guest has disks 0..%d)", arg, s->nd - 1);
    return NULL;
}

static int cmd_getclear(struct served_disk *d, int fd)
{
    uint8_t *enc = NULL;
    size_t len = 0;
    uint64_t n = 0;
    int rc;

    rc = incmig__memtracker_take(&d->mt, &enc, &len, &n);
    if (rc) {
        rc = reply(fd, "ERR cannot read the write bitmap of disk %s: %s",
                   d->name, incmig_strerror(rc));
        goto out;
    }
    rc = reply(fd, "OK %" PRIu64 " %zu", d->mt.t.nblocks, len);
    if (!rc)
        rc = incmig__ctl_writeall(fd, enc, len);
    DBG("bitmap of %s handed out: %" PRIu64 " dirty blocks, %zu bytes",
        d->name, n, len);
out:
    free(enc);
    return rc;
}

/* The pause, from inside the state stream: every export stops taking
 * requests and its connections close once the requests in flight are
 * answered (the guest's next requests wait in the backlog, as a paused
 * domain's I/O waits in its ring).  The state stream's last pages go
 * out meanwhile; cmd_suspend waits for the exports (drain_all) before it
 * answers, so the toolstack reads the final bitmaps after the last
 * write. */
static int pause_all(void *opaque)
{
    struct served *s = opaque;

    pthread_mutex_lock(&s->lock);
    if (s->state == SERVING) {
        s->t_paused = incmig__now();
        for (int i = 0; i < s->nd; i++)
            incmig__nbd_quiesce_begin(s->d[i].nbd);
        s->state = SUSPENDED;
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* After the state stream: when it paused the guest (SUSPENDED: a SUSPEND
 * starts only while SERVING), wait for the exports' requests in flight. */
static void drain_all(struct served *s)
{
    pthread_mutex_lock(&s->lock);
    bool paused = s->state == SUSPENDED;
    pthread_mutex_unlock(&s->lock);
    if (!paused)
        return;
    for (int i = 0; i < s->nd; i++)
        incmig__nbd_quiesce_wait(s->d[i].nbd);
    INFO("guest paused: exports drained and closed, %.1f ms after the "
         "pause", (incmig__now() - s->t_paused) * 1000);
}

static int cmd_suspend(struct served *s, int fd, int state_fd)
{
    double t0 = incmig__now(), t_paused;

    if (state_fd < 0)
        return reply(fd, "ERR SUSPEND needs the state stream's descriptor");
    pthread_mutex_lock(&s->lock);
    bool ok = s->state == SERVING && !s->saving;
    if (ok)
        s->saving = true;
    pthread_mutex_unlock(&s->lock);
    if (!ok)
        return reply(fd, "ERR not running, or a SUSPEND is under way");
    int rc = incmig__simstate_save(&s->mem, state_fd, pause_all, s,
                                   s->o->faults & INCMIG_FAULT_CORRUPT_STATE);
    drain_all(s);
    pthread_mutex_lock(&s->lock);
    s->saving = false;
    pthread_mutex_unlock(&s->lock);
    if (rc)
        return reply(fd, "ERR writing the state stream failed: %s",
                     incmig_strerror(rc));
    pthread_mutex_lock(&s->lock);
    t_paused = s->t_paused;
    pthread_mutex_unlock(&s->lock);
    INFO("state stream written in %.1f ms, the last %.1f ms of it paused",
         (incmig__now() - t0) * 1000, (incmig__now() - t_paused) * 1000);
    return reply(fd, "OK %.6f", t_paused);
}

static int cmd_lineage(struct served_disk *d, int fd)
{
    struct incmig__bitmap bm = {0};
    uint8_t *enc = NULL;
    size_t len = 0;
    char hex[33];
    int rc = 0;

    if (d->lin_bitmap) {
        rc = incmig__bitmap_init(&bm, d->lt.t.nblocks);
        pthread_mutex_lock(&d->lt.lock);
        if (!rc)
            rc = incmig__bitmap_merge(&bm, &d->lt.bm);
        pthread_mutex_unlock(&d->lt.lock);
        if (!rc)
            rc = incmig__bitmap_encode(&bm, 0, bm.nbits, &enc, &len);
    }
    if (rc)
        rc = reply(fd, "ERR cannot read the lineage bitmap of disk %s: %s",
                   d->name, incmig_strerror(rc));
    else
        rc = reply(fd, "OK %s %d %" PRIu64 " %zu %s",
                   incmig__gen_hex(d->gen, hex), d->lin_bitmap,
                   d->lt.t.nblocks, len, d->lin_bitmap ? "-" : d->lin_why);
    if (!rc && len)
        rc = incmig__ctl_writeall(fd, enc, len);
    free(enc);
    incmig__bitmap_dispose(&bm);
    return rc;
}

static int cmd_adopt(struct served *s, int fd, const char *arg)
{
    char hex[64];
    int i, n = 0;
    uint8_t gen[16];

    if (sscanf(arg, "%d %40s%n", &i, hex, &n) != 2 || arg[n] || i < 0 ||
        i >= s->nd || incmig__gen_parse(hex, gen))
        return reply(fd, "ERR ADOPT <disk> <32 hex digits>");
    pthread_mutex_lock(&s->lock);
    bool ok = s->state == COMMITTED;
    if (ok) {
        memcpy(s->d[i].adopted, gen, 16);
        s->d[i].adopt = true;
    }
    pthread_mutex_unlock(&s->lock);
    return ok ? reply(fd, "OK") : reply(fd, "ERR ADOPT before COMMIT");
}

static int command(struct served *s, int fd, const char *line, int passed_fd)
{
    struct served_disk *d;
    int rc = 0;

    if (!strcmp(line, "INFO"))
        return reply(fd, "OK %d %s", s->nd, s->name);
    if (!strncmp(line, "DISK ", 5)) {
        if (!(d = disk_arg(s, fd, line + 5)))
            return 0;
        return reply(fd, "OK %" PRIu64 " %u %s %s", d->disk.size,
                     d->mt.t.block_size, d->name, d->disk.path);
    }
    if (!strncmp(line, "GETCLEAR ", 9)) {
        if (!(d = disk_arg(s, fd, line + 9)))
            return 0;
        return cmd_getclear(d, fd);
    }
    if (!strncmp(line, "LINEAGE ", 8)) {
        if (!(d = disk_arg(s, fd, line + 8)))
            return 0;
        return cmd_lineage(d, fd);
    }
    if (!strncmp(line, "ADOPT ", 6))
        return cmd_adopt(s, fd, line + 6);
    if (!strcmp(line, "SUSPEND"))
        return cmd_suspend(s, fd, passed_fd);
    if (!strcmp(line, "ACTIVITY"))
        return reply(fd, "OK %" PRIu64 " %" PRIu64,
                     __atomic_load_n(&s->io_reqs, __ATOMIC_RELAXED),
                     __atomic_load_n(&s->io_ns, __ATOMIC_RELAXED));
    pthread_mutex_lock(&s->lock);
    if (!strcmp(line, "COMMIT")) {
        if (s->state == SERVING) {
            rc = reply(fd, "ERR not suspended");
        } else {
            s->state = COMMITTED;
            rc = reply(fd, "OK");
        }
    } else if (!strcmp(line, "RESUME")) {
        if (s->saving) {
            rc = reply(fd, "ERR a SUSPEND is under way");
        } else if (s->state == COMMITTED) {
            rc = reply(fd, "ERR past the point of no return: the "
                       "destination owns the guest");
        } else {
            if (s->state == SUSPENDED) {
                for (int i = 0; i < s->nd; i++)
                    incmig__nbd_start(s->d[i].nbd);
                incmig__simmem_freeze(&s->mem, false);
                INFO("guest resumed on the source");
            }
            s->state = SERVING;
            rc = reply(fd, "OK");
        }
    } else if (!strcmp(line, "RELEASE")) {
        if (s->state != COMMITTED) {
            rc = reply(fd, "ERR release before commit refused");
        } else {
            reply(fd, "OK");
            s->released = true;
            pthread_cond_broadcast(&s->cond);
        }
    } else {
        rc = reply(fd, "ERR unknown command");
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

struct session {
    struct served *s;
    int fd;
};

/* One control connection, on its own thread. */
static void *session_main(void *opaque)
{
    struct session *ss = opaque;
    struct served *s = ss->s;
    char line[INCMIG_CTL_LINE_MAX];

    while (!incmig__stop_requested) {
        struct pollfd p = { .fd = ss->fd, .events = POLLIN };
        int r = poll(&p, 1, 200);
        pthread_mutex_lock(&s->lock);
        bool gone = s->released;
        pthread_mutex_unlock(&s->lock);
        if (gone)
            break;
        if (r <= 0)
            continue;
        int passed = -1;
        if (incmig__ctl_readline_fd(ss->fd, line, sizeof line, &passed))
            break;
        int rc = command(s, ss->fd, line, passed);
        if (passed >= 0)
            close(passed);
        pthread_mutex_lock(&s->lock);
        bool released = s->released;
        pthread_mutex_unlock(&s->lock);
        if (rc || released)
            break;
    }
    close(ss->fd);
    pthread_mutex_lock(&s->lock);
    /* The toolstack went away. */
    if (--s->sessions == 0 && s->state == SUSPENDED) {
        ERR("toolstack disconnected while the guest was paused, before the "
            "point of no return: resuming the guest here");
        for (int i = 0; i < s->nd; i++)
            incmig__nbd_start(s->d[i].nbd);
        incmig__simmem_freeze(&s->mem, false);
        s->state = SERVING;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    free(ss);
    return NULL;
}

/* Prove the image's claim, then mark it held (before the export runs). */
static int lineage_start(struct served_disk *d, uint32_t bs)
{
    struct incmig__lineage l;
    char hex[33];
    int rc = incmig__lineage_load(d->disk.path, d->disk.fd, bs, &l);

    if (rc)
        return rc;
    if (l.valid) {
        memcpy(d->gen, l.gen, 16);
        d->lin_bitmap = l.has_bitmap;
        if (l.has_bitmap)
            rc = d->lt.t.ops->load(&d->lt.t, &l.bm);
        else
            snprintf(d->lin_why, sizeof d->lin_why, "the source's bitmap is "
                     "missing (%.400s)", l.why);
        INFO("disk %s: generation %s, %s", d->name, incmig__gen_hex(d->gen, hex),
             l.has_bitmap ? "its writes since tracked" : d->lin_why);
    } else {
        incmig__gen_random(d->gen);
        d->lin_bitmap = true;      /* a new generation: nothing since */
        INFO("disk %s: %s: new generation %s", d->name,
             l.found ? l.why : "no lineage yet", incmig__gen_hex(d->gen, hex));
    }
    incmig__lineage_dispose(&l);
    if (!rc && incmig__lineage_open(d->disk.path, d->disk.fd, d->gen, bs)) {
        ERR("disk %s: its lineage cannot be kept beside %s: it will always "
            "be copied in full", d->name, d->disk.path);
        memset(d->gen, 0, 16);
        d->lin_bitmap = false;
        snprintf(d->lin_why, sizeof d->lin_why, "no lineage kept");
    }
    return rc;
}

/* At exit, the exports gone: what this copy can prove from now on. */
static void lineage_save(struct served *s, struct served_disk *d)
{
    struct incmig__bitmap bm = {0};
    char hex[33];
    const uint8_t *gen = d->gen;
    int rc;

    if (incmig__gen_zero(d->gen) || d->disk.fd < 0 || !d->lt.t.ops)
        return;
    if (s->state == COMMITTED && !(s->released && d->adopt)) {
        ERR("disk %s: committed to the destination but not released with "
            "the generation both copies share: its lineage stays void",
            d->name);
        return;
    }
    /* released: exactly what the destination got, nothing written since;
     * else the writes since our generation, if we know them all */
    bool released = s->state == COMMITTED;
    rc = incmig__bitmap_init(&bm, d->lt.t.nblocks);
    if (released)
        gen = d->adopted;
    else if (!rc)
        rc = d->lt.t.ops->get_and_clear(&d->lt.t, &bm);
    if (!rc)
        rc = incmig__lineage_close(d->disk.path, d->disk.fd, gen,
                                   d->lt.t.block_size,
                                   released || d->lin_bitmap ? &bm : NULL);
    if (rc)
        ERR("disk %s: its lineage could not be saved: its claim stays void",
            d->name);
    else
        INFO("disk %s: lineage saved, generation %s, %" PRIu64 " block(s) "
             "written since", d->name, incmig__gen_hex(gen, hex),
             incmig__bitmap_count(&bm));
    incmig__bitmap_dispose(&bm);
}

static int open_disk(struct served *s, int i)
{
    const struct incmig_serve_disk *od = &s->o->disks[i];
    struct served_disk *d = &s->d[i];
    uint32_t bs = od->block_size ? od->block_size : INCMIG_BS_DEFAULT;
    int rc;

    d->sv = s;
    d->index = i;
    d->name = od->name;
    if (!od->image || !od->nbd_uri || !od->name) {
        ERR("disk %d needs a name, an image and an NBD address", i);
        return INCMIG_EINVAL;
    }
    for (int j = 0; j < i; j++)
        if (!strcmp(s->d[j].name, od->name)) {
            ERR("two disks named %s", od->name);
            return INCMIG_EINVAL;
        }
    rc = incmig__disk_open(&d->disk, od->image,
                           INCMIG_DISK_WRITE | INCMIG_DISK_NOFOLLOW, 0);
    if (!rc)
        rc = incmig__memtracker_init(&d->mt, d->disk.size, bs);
    if (!rc)
        rc = incmig__memtracker_init(&d->lt, d->disk.size, bs);
    if (!rc)
        rc = lineage_start(d, bs);
    if (!rc)
        rc = incmig__nbd_new(&d->nbd, od->nbd_uri, d->disk.size, &serve_ops, d,
                             s->o->max_inflight);
    if (!rc)
        INFO("disk %s: %s (%" PRIu64 " bytes, tracking %u-byte blocks) on %s",
             d->name, od->image, d->disk.size, bs, od->nbd_uri);
    return rc;
}

void incmig_serve_opts_init(struct incmig_serve_opts *o)
{
    memset(o, 0, sizeof *o);
}

void incmig_serve_opts_dispose(struct incmig_serve_opts *o)
{
    memset(o, 0, sizeof *o);
}

int incmig_serve(const struct incmig_serve_opts *o)
{
    struct served s;
    int lfd = -1, rc;

    memset(&s, 0, sizeof s);
    s.o = o;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        s.d[i].disk.fd = s.d[i].disk.dfd = -1;
    if (o->ndisks < 1 || o->ndisks > (int)INCMIG_MAX_DISKS || !o->control_path) {
        ERR("serve needs 1 to %u disks and a control socket", INCMIG_MAX_DISKS);
        rc = INCMIG_EINVAL;
        goto out;
    }
    s.nd = o->ndisks;
    s.name = o->name ? o->name : o->disks[0].name;
    if (!s.name || !*s.name || strlen(s.name) > INCMIG_NAME_MAX ||
        strpbrk(s.name, " \t\n")) {
        ERR("bad domain name '%s'", s.name ? s.name : "");
        rc = INCMIG_EINVAL;
        goto out;
    }
    rc = incmig__simmem_init(&s.mem, o->memory ? o->memory : 4u << 20);
    for (int i = 0; i < s.nd && !rc; i++)
        rc = open_disk(&s, i);
    if (!rc)
        rc = incmig__unix_listen(o->control_path, &lfd);
    for (int i = 0; i < s.nd && !rc; i++)
        rc = incmig__nbd_start(s.d[i].nbd);
    if (rc)
        goto out;
    INFO("domain %s: %d disk(s), %" PRIu64 " KiB of memory, control %s",
         s.name, s.nd, s.mem.npages * 4, o->control_path);

    while (!incmig__stop_requested) {
        pthread_mutex_lock(&s.lock);
        bool released = s.released;
        pthread_mutex_unlock(&s.lock);
        if (released)
            break;
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        if (poll(&p, 1, 200) <= 0)
            continue;
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0)
            continue;
        if (!incmig__peer_allowed(cfd, o->control_path)) {
            close(cfd);
            continue;
        }
        struct session *ss = malloc(sizeof *ss);
        pthread_t th;
        if (!ss) {
            close(cfd);
            continue;
        }
        ss->s = &s;
        ss->fd = cfd;
        pthread_mutex_lock(&s.lock);
        s.sessions++;
        pthread_mutex_unlock(&s.lock);
        if (pthread_create(&th, NULL, session_main, ss)) {
            close(cfd);
            free(ss);
            pthread_mutex_lock(&s.lock);
            s.sessions--;
            pthread_mutex_unlock(&s.lock);
            continue;
        }
        pthread_detach(th);
    }
    /* Sessions end within their poll period once released or stopped. */
    if (!s.released)
        incmig__stop_requested = 1;
    pthread_mutex_lock(&s.lock);
    while (s.sessions > 0)
        pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
    if (s.released)
        INFO("released by the toolstack: the destination owns the disks");
    else
        INFO("stopped by a signal");
out:
    if (lfd >= 0) {
        close(lfd);
        unlink(o->control_path);
    }
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        if (s.d[i].nbd)
            incmig__nbd_free(s.d[i].nbd);
        s.d[i].nbd = NULL;
    }
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        struct served_disk *d = &s.d[i];
        lineage_save(&s, d);
        if (d->mt.t.ops)
            d->mt.t.ops->dispose(&d->mt.t);
        if (d->lt.t.ops)
            d->lt.t.ops->dispose(&d->lt.t);
        incmig__disk_close(&d->disk);
    }
    incmig__simmem_dispose(&s.mem);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.cond);
    return rc;
}
