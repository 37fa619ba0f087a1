/* tracker-blkback.c: the write tracker of a VBD served by incmig's patched
 * xen-blkback.
 *
 * Interface (blkback-patch/ABI-sysfs-xen-blkback-tracking.txt):
 *   xenstore, backend dir    incmig-track-block-size  we write N / 0
 *                            incmig-tracking          blkback: N, 0, "error: ..."
 *                            incmig-track-key         optional, we write
 *                            incmig-track-volume      optional, we write
 *                            incmig-track-gen         lineage proof (spec
 *                                                     "Xen: blkback is the
 *                                                     tracker"), we write
 *                            sectors                  VBD size (blkback)
 *   sysfs, vbd-D-N/          incmig_control           "snapshot" | "load"
 *                            physical_device          "MAJ:MIN" (hex), the
 *                                                     device blkback serves
 *                            incmig_bitmap            the snapshot, bytes
 *                            incmig_bitmap_load       staged bitmap
 *                            incmig_inflight          requests in flight
 * Bitmap bytes: bit i of the disk is bit (i % 8) of byte i / 8.
 *
 * get_and_clear = write "snapshot", then read the whole snapshot (the
 * kernel swaps bitmaps under its lock: no write is lost between calls).
 * load = write the bytes to incmig_bitmap_load, then "load".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <xenstore.h>

#include "tracker-blkback.h"

struct bbtracker {
    struct incmig__tracker t;
    char name[64];                 /* "vbd-D-N", for messages */
    char sysdir[4096];
    char root[2048];               /* sysfs root prefix ("" normally) */
    char bepath[256];
    const struct incmig__blkback_xs_ops *xs;
    void *xs_opaque;
    uint64_t nbytes;               /* bitmap size in bytes */
    bool was_on;                   /* tracking on before open asked */
    char prior_gen[33];            /* incmig-track-gen before open */
};

static const struct incmig__tracker_ops bb_ops;

/* ---- libxenstore --------------------------------------------------------- */

static int lxs_write(void *opaque, const char *path, const char *val)
{
    struct xs_handle *h = opaque;

    for (;;) {
        xs_transaction_t tx = xs_transaction_start(h);
        if (tx == XBT_NULL) {
            LOGE("xenstore: starting a transaction to write %s", path);
            return INCMIG_EIO;
        }
        if (!xs_write(h, tx, path, val, strlen(val))) {
            LOGE("xenstore: writing %s", path);
            xs_transaction_end(h, tx, true);
            return INCMIG_EIO;
        }
        if (xs_transaction_end(h, tx, false))
            return 0;
        if (errno != EAGAIN) {
            LOGE("xenstore: ending the transaction writing %s", path);
            return INCMIG_EIO;
        }
    }
}

static int lxs_read(void *opaque, const char *path, char **val_r)
{
    struct xs_handle *h = opaque;
    unsigned int len;
    char *v = xs_read(h, XBT_NULL, path, &len);

    if (!v) {
        if (errno == ENOENT)
            return 1;
        LOGE("xenstore: reading %s", path);
        return INCMIG_EIO;
    }
    *val_r = v;
    return 0;
}

static void lxs_close(void *opaque)
{
    xs_close(opaque);
}

static const struct incmig__blkback_xs_ops lxs_ops = {
    .write = lxs_write, .read = lxs_read, .close = lxs_close,
};

/* ---- sysfs --------------------------------------------------------------- */

static void bb_path(const struct bbtracker *b, const char *leaf, char *buf,
                    size_t len)
{
    snprintf(buf, len, "%s/%s", b->sysdir, leaf);
}

/* Write a whole string to a sysfs attribute; r: 0 or -errno. */
static int sys_write(const struct bbtracker *b, const char *leaf,
                     const char *val)
{
    char path[4200];
    int fd, r = 0;

    bb_path(b, leaf, path, sizeof path);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (write(fd, val, strlen(val)) < 0)
        r = -errno;
    close(fd);
    return r;
}

static int sys_read_u64(const struct bbtracker *b, const char *leaf,
                        uint64_t *v_r)
{
    char path[4200], buf[64], *end;
    ssize_t n;
    int fd;

    bb_path(b, leaf, path, sizeof path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return n < 0 ? -errno : -EINVAL;
    buf[n] = 0;
    errno = 0;
    *v_r = strtoull(buf, &end, 10);
    if (errno || end == buf || (*end && *end != '\n'))
        return -EINVAL;
    return 0;
}

/* The errno of a refused snapshot / read / load, in words. */
static const char *bb_why(int err)
{
    switch (err) {
    case ENODATA: return "tracking is off (write incmig-track-block-size)";
    case ESTALE: return "the VBD changed size: tracking is stale, "
                        "disable and enable it again";
    case EINVAL: return "blkback refused the bitmap (wrong size)";
    case ENOENT: return "the VBD is gone";
    default: return strerror(err);
    }
}

/* ---- the tracker ---------------------------------------------------------- */

static int bb_get_and_clear(struct incmig__tracker *t,
                            struct incmig__bitmap *out)
{
    struct bbtracker *b = (struct bbtracker *)t;
    char path[4200];
    uint8_t *buf = NULL;
    uint64_t got = 0, i;
    int fd = -1, r, rc;

    if (out->nbits != t->nblocks) {
        ERR("%s: bitmap of %" PRIu64 " blocks given, the VBD has %" PRIu64,
            b->name, out->nbits, t->nblocks);
        rc = INCMIG_EINVAL;
        goto out;
    }
    r = sys_write(b, "incmig_control", "snapshot");
    if (r < 0) {
        ERR("%s: taking a snapshot of the write bitmap: %s", b->name,
            bb_why(-r));
        rc = r == -ENODATA || r == -ESTALE ? INCMIG_EINVAL : INCMIG_EIO;
        goto out;
    }
    buf = malloc(b->nbytes + 1);
    if (!buf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    bb_path(b, "incmig_bitmap", path, sizeof path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        LOGE("%s: opening %s", b->name, path);
        rc = INCMIG_EIO;
        goto out;
    }
    /* The kernel hands out at most a page per read. */
    for (;;) {
        ssize_t n = read(fd, buf + got, b->nbytes + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ERR("%s: reading the write bitmap: %s", b->name, bb_why(errno));
            rc = INCMIG_EIO;
            goto out;
        }
        if (n == 0)
            break;
        got += (uint64_t)n;
        if (got > b->nbytes)
            break;
    }
    if (got != b->nbytes) {
        ERR("%s: write bitmap of %" PRIu64 " bytes, expected %" PRIu64
            " (%" PRIu64 " blocks of %u bytes): did the VBD change size?",
            b->name, got, b->nbytes, t->nblocks, t->block_size);
        rc = INCMIG_ESIZE;
        goto out;
    }
    for (i = 0; i < t->nblocks; i++)
        if (buf[i / 8] & (1u << (i % 8)))
            incmig__bitmap_set(out, i);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static int bb_load(struct incmig__tracker *t, const struct incmig__bitmap *in)
{
    struct bbtracker *b = (struct bbtracker *)t;
    char path[4200];
    uint8_t *buf = NULL;
    uint64_t done = 0, i;
    int fd = -1, r, rc;

    if (in->nbits != t->nblocks) {
        ERR("%s: cannot load a bitmap of %" PRIu64 " blocks: the VBD has %"
            PRIu64 " blocks of %u bytes", b->name, in->nbits, t->nblocks,
            t->block_size);
        rc = INCMIG_ESIZE;
        goto out;
    }
    buf = calloc(1, b->nbytes ? b->nbytes : 1);
    if (!buf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    for (i = 0; i < t->nblocks; i++)
        if (incmig__bitmap_test(in, i))
            buf[i / 8] |= (uint8_t)(1u << (i % 8));
    bb_path(b, "incmig_bitmap_load", path, sizeof path);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        LOGE("%s: opening %s", b->name, path);
        rc = INCMIG_EIO;
        goto out;
    }
    while (done < b->nbytes) {
        ssize_t n = write(fd, buf + done, b->nbytes - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ERR("%s: staging the bitmap: %s", b->name,
                n < 0 ? bb_why(errno) : "short write");
            rc = INCMIG_EIO;
            goto out;
        }
        done += (uint64_t)n;
    }
    close(fd);
    fd = -1;
    r = sys_write(b, "incmig_control", "load");
    if (r < 0) {
        ERR("%s: loading the bitmap: %s", b->name, bb_why(-r));
        rc = r == -EINVAL ? INCMIG_ESIZE : INCMIG_EIO;
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static void bb_dispose(struct incmig__tracker *t)
{
    struct bbtracker *b = (struct bbtracker *)t;

    if (!b)
        return;
    if (b->xs && b->xs->close)
        b->xs->close(b->xs_opaque);
    free(b);
}

static const struct incmig__tracker_ops bb_ops = {
    .get_and_clear = bb_get_and_clear,
    .load = bb_load,
    .dispose = bb_dispose,
};

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int xs_node(const struct bbtracker *b, const char *leaf, char **val_r)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", b->bepath, leaf);
    return b->xs->read(b->xs_opaque, path, val_r);
}

static int xs_set(const struct bbtracker *b, const char *leaf,
                  const char *val)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", b->bepath, leaf);
    return b->xs->write(b->xs_opaque, path, val);
}

/* Wait for incmig-tracking to say `want`: 0, INCMIG_EINVAL (blkback's
 * "error: ..."), INCMIG_ENOTSUP (stock module) or INCMIG_ECANCEL. */
static int wait_tracking(struct bbtracker *b, const char *want, double timeout)
{
    double t0 = incmig__now();
    bool seen = false;
    char *v = NULL;
    int r;

    for (;;) {
        r = xs_node(b, "incmig-tracking", &v);
        if (r < 0)
            return r;
        if (r == 0) {
            seen = true;
            if (!strcmp(v, want)) {
                free(v);
                return 0;
            }
            if (!strncmp(v, "error:", 6)) {
                ERR("%s: blkback refused: %s", b->name, v + 6 + (v[6] == ' '));
                free(v);
                return INCMIG_EINVAL;
            }
            free(v);
            v = NULL;
        }
        if (incmig__now() - t0 > timeout)
            break;
        sleep_ms(10);
    }
    if (!seen) {
        char path[4200];
        struct stat st;

        bb_path(b, "incmig_control", path, sizeof path);
        if (stat(path, &st) < 0) {
            ERR("blkback of %s does not support write tracking: the stock "
                "xen-blkback is loaded; install incmig's module "
                "(blkback-patch/README)", b->name);
            return INCMIG_ENOTSUP;
        }
    }
    ERR("%s: blkback did not report tracking \"%s\" within %.0f s", b->name,
        want, timeout);
    return INCMIG_ECANCEL;
}

int incmig__blkback_tracker_open(struct incmig__tracker **t_r, uint32_t domid,
                                 uint32_t devid, uint32_t block_size,
                                 const struct incmig__blkback_opts *opts)
{
    static const struct incmig__blkback_opts defaults;
    struct bbtracker *b = NULL;
    const char *root;
    char path[4200], bs[16], *v = NULL, *end;
    struct stat st;
    uint64_t sectors;
    double timeout;
    int r, rc;

    *t_r = NULL;
    if (!opts)
        opts = &defaults;
    timeout = opts->timeout_s > 0 ? opts->timeout_s : 10.0;
    b = calloc(1, sizeof *b);
    if (!b) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    b->t.ops = &bb_ops;
    snprintf(b->name, sizeof b->name, "vbd-%u-%u", domid, devid);
    if (!incmig__block_size_valid(block_size)) {
        ERR("%s: block size %u is not a power of two from %u to %u",
            b->name, block_size, INCMIG_BS_MIN, INCMIG_BS_MAX);
        rc = INCMIG_EINVAL;
        goto out;
    }
    root = opts->sysfs_root ? opts->sysfs_root : getenv("INCMIG_SYSFS_ROOT");
    snprintf(b->root, sizeof b->root, "%s", root ? root : "");
    snprintf(b->sysdir, sizeof b->sysdir, "%s/sys/bus/xen-backend/devices/%s",
             b->root, b->name);
    if (opts->backend_path)
        snprintf(b->bepath, sizeof b->bepath, "%s", opts->backend_path);
    else
        snprintf(b->bepath, sizeof b->bepath,
                 "/local/domain/0/backend/vbd/%u/%u", domid, devid);

    if (opts->xs) {
        b->xs = opts->xs;
        b->xs_opaque = opts->xs_opaque;
    } else {
        b->xs_opaque = xs_open(0);
        if (!b->xs_opaque) {
            LOGE("%s: cannot open xenstore", b->name);
            rc = INCMIG_EIO;
            goto out;
        }
        b->xs = &lxs_ops;
    }

    if (stat(b->sysdir, &st) < 0) {
        ERR("%s: no such VBD in blkback (%s): is the disk attached and "
            "served by xen-blkback?", b->name, b->sysdir);
        rc = INCMIG_EINVAL;
        goto out;
    }
    r = xs_node(b, "sectors", &v);
    if (r < 0 || (r == 1 && (opts->size == 0 || opts->size % 512))) {
        ERR("%s: cannot read %s/sectors: is the VBD connected?", b->name,
            b->bepath);
        rc = r < 0 ? r : INCMIG_EINVAL;
        goto out;
    }
    if (r == 1) {
        sectors = opts->size / 512;
    } else {
        errno = 0;
        sectors = strtoull(v, &end, 10);
        if (errno || end == v || *end || sectors == 0) {
            ERR("%s: bad size \"%s\" in %s/sectors", b->name, v, b->bepath);
            rc = INCMIG_EINVAL;
            goto out;
        }
        if (opts->size && sectors != opts->size / 512) {
            ERR("%s: the VBD has %" PRIu64 " sectors, its volume %" PRIu64
                " bytes", b->name, sectors, opts->size);
            rc = INCMIG_ESIZE;
            goto out;
        }
    }
    if (sectors == 0 || sectors > INCMIG_DISK_MAX / 512) {
        ERR("%s: %" PRIu64 " sectors: not a disk incmig tracks", b->name,
            sectors);
        rc = INCMIG_EINVAL;
        goto out;
    }
    b->t.block_size = block_size;
    b->t.nblocks = (sectors * 512 + block_size - 1) / block_size;
    b->nbytes = (b->t.nblocks + 7) / 8;

    snprintf(bs, sizeof bs, "%u", block_size);
    /* what was there before we ask: the lineage's proof (spec "Xen:
     * blkback is the tracker") needs tracking that was never off */
    free(v);
    v = NULL;
    r = xs_node(b, "incmig-tracking", &v);
    if (r < 0) {
        rc = r;
        goto out;
    }
    b->was_on = r == 0 && !strcmp(v, bs);
    free(v);
    v = NULL;
    r = xs_node(b, "incmig-track-gen", &v);
    if (r < 0) {
        rc = r;
        goto out;
    }
    if (r == 0 && strlen(v) == 32)
        snprintf(b->prior_gen, sizeof b->prior_gen, "%s", v);
    if (opts->key) {
        rc = xs_set(b, "incmig-track-key", opts->key);
        if (rc)
            goto out;
    }
    if (opts->volume) {
        rc = xs_set(b, "incmig-track-volume", opts->volume);
        if (rc)
            goto out;
    }
    rc = xs_set(b, "incmig-track-block-size", bs);
    if (rc)
        goto out;
    rc = wait_tracking(b, bs, timeout);
    if (rc)
        goto out;
    bb_path(b, "incmig_control", path, sizeof path);
    if (stat(path, &st) < 0) {
        ERR("%s: blkback reports tracking but %s is missing: module and "
            "toolstack versions differ?", b->name, path);
        rc = INCMIG_ENOTSUP;
        goto out;
    }
    INFO("%s: blkback tracks writes in %u-byte blocks (%" PRIu64 " blocks)",
         b->name, block_size, b->t.nblocks);
    *t_r = &b->t;
    b = NULL;
out:
    free(v);
    if (b) {
        /* The caller's xenstore stays the caller's on failure. */
        if (b->xs == &lxs_ops)
            lxs_close(b->xs_opaque);
        free(b);
    }
    return rc;
}

int incmig__blkback_drain_wait(struct incmig__tracker *t, double timeout_s)
{
    struct bbtracker *b = (struct bbtracker *)t;
    double t0 = incmig__now();
    uint64_t n = 0;
    int r;

    for (;;) {
        r = sys_read_u64(b, "incmig_inflight", &n);
        if (r < 0) {
            ERR("%s: reading incmig_inflight: %s", b->name,
                r == -EINVAL ? "not a number" : bb_why(-r));
            return INCMIG_EIO;
        }
        if (n == 0)
            return 0;
        if (incmig__now() - t0 > timeout_s)
            break;
        sleep_ms(1);
    }
    ERR("%s: %" PRIu64 " requests still in flight after %.1f s: is the "
        "domain suspended?", b->name, n, timeout_s);
    return INCMIG_ECANCEL;
}

void incmig__blkback_prior(struct incmig__tracker *t, bool *was_on_r,
                           char gen_hex_r[33])
{
    struct bbtracker *b = (struct bbtracker *)t;
    *was_on_r = b->was_on;
    snprintf(gen_hex_r, 33, "%s", b->prior_gen);
}

int incmig__blkback_set_gen(struct incmig__tracker *t, const uint8_t *gen)
{
    struct bbtracker *b = (struct bbtracker *)t;
    char hex[33] = "";

    if (gen)
        incmig__gen_hex(gen, hex);
    return xs_set(b, "incmig-track-gen", hex);
}

int incmig__blkback_disable(struct incmig__tracker *t)
{
    struct bbtracker *b = (struct bbtracker *)t;
    int rc = incmig__blkback_set_gen(t, NULL);

    if (rc)
        return rc;
    rc = xs_set(b, "incmig-track-block-size", "0");

    if (rc)
        return rc;
    return wait_tracking(b, "0", 10.0);
}

/* The device blkback serves the VBD from (physical_device, "%x:%x"). */
static int bb_physdev(const struct bbtracker *b, unsigned *maj, unsigned *min)
{
    char path[4200], buf[64];
    ssize_t n;
    int fd;

    bb_path(b, "physical_device", path, sizeof path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return n < 0 ? -errno : -EINVAL;
    buf[n] = 0;
    return sscanf(buf, "%x:%x", maj, min) == 2 ? 0 : -EINVAL;
}

int incmig__blkback_activity(struct incmig__tracker *t, dev_t push_dev,
                             uint64_t *reqs_r, double *busy_s_r)
{
    struct bbtracker *b = (struct bbtracker *)t;
    unsigned maj, min;
    unsigned long long f[8];
    char path[4200], buf[512];
    ssize_t n;
    int fd, r;

    r = bb_physdev(b, &maj, &min);
    if (r) {
        ERR("%s: no physical_device in blkback's sysfs: %s", b->name,
            strerror(-r));
        return INCMIG_EIO;
    }
    snprintf(path, sizeof path, "%s/sys/dev/block/%u:%u/stat", b->root, maj,
             min);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        LOGE("%s: %s", b->name, path);
        return INCMIG_EIO;
    }
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0)
        buf[n] = 0;
    /* reads, merged, sectors, ms; writes, merged, sectors, ms */
    if (n <= 0 || sscanf(buf, "%llu %llu %llu %llu %llu %llu %llu %llu",
                         &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6],
                         &f[7]) != 8) {
        ERR("%s: %s: not a block device's statistics", b->name, path);
        return INCMIG_EIO;
    }
    /* PUSH's own reads of the same device are not the guest's. */
    bool writes_only = push_dev && major(push_dev) == maj &&
                       minor(push_dev) == min;
    *reqs_r = f[4] + (writes_only ? 0 : f[0]);
    *busy_s_r = (double)(f[7] + (writes_only ? 0 : f[3])) / 1e3;
    return 0;
}
