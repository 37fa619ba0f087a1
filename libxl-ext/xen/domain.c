/* xen/domain.c: the Xen domain backend on the source (libxl + blkback).
 *
 * A running domain is found by name or id; its configuration comes from
 * libxl_retrieve_domain_configuration.  Every disk served by blkback (phy:
 * block devices, and files through loop) is migrated: blkback's write
 * bitmap is switched on (tracker-blkback.c) and PUSH reads the backing
 * file or device directly (O_DIRECT).  A disk blkback does not serve
 * (qdisk: QEMU writes it, blkback never sees those writes) is refused up
 * front, naming the disk, unless it is on shared storage; CD-ROMs are
 * left alone.  PUSH yields to the guest (yield.c) by the latency of the
 * guest's requests on each disk's backing device, the one blkback serves
 * it from (incmig__blkback_activity).
 *
 * Disks on shared storage are neither tracked nor copied, and travel in
 * the configuration as they are (plain `xl migrate` does the same for
 * every disk): those named by --shared-disk VDEV, and those whose type
 * says so (incmig__xen_disk_network: a hotplug script other than block,
 * a target that is not a local path).  The destination accepts them
 * (xen/target-config.c).
 *
 * -C CONFIG (xl's option): the configuration sent is CONFIG's instead of
 * the stored one; the disks tracked are still the running domain's, and
 * each must be in CONFIG.  CONFIG is libxl's JSON, or an xl configuration
 * file that `xl create --dryrun` turns into it.
 *
 * The state stream (suspend) is what the destination's Xen target reads
 * (xen/target.c, and the spec's "Xen state stream"):
 *   "INCMIGXC"  u32 version (1)  u32 N  N bytes: the domain configuration
 *   as JSON (libxl_domain_config_to_json, as xl sends it), then libxl's
 *   migration stream v2 exactly as libxl_domain_suspend(LIVE) writes it.
 * libxl_domain_suspend runs the memory pre-copy and the pause in one
 * blocking call and has no public hook between "paused" and its last
 * memory round, so the moment of the pause is observed from the side: a
 * watcher thread polls the domain's state while suspend runs, and the
 * disk stop-and-copy (drain blkback, final bitmaps) runs right after
 * suspend returns, the domain then suspended with its backends attached.
 *
 * Point of no return as xl does it: the domain is renamed NAME--migratedaway
 * (commit); release destroys it.  Before that, resume =
 * libxl_domain_resume(suspend_cancel=1), with tracking still on and the
 * disks untouched.
 *
 * Lineage (spec "Xen: blkback is the tracker"; xen/claim.c): a disk on a
 * file volume (the file itself, or incmig's dm device over a loop device
 * of it) claims its volume's OPEN generation when blkback has tracked it
 * without a break since (incmig-track-gen).  The claim is taken at open,
 * before the first snapshot: the node is emptied, every snapshot is also
 * ORed into `since` (the writes since the generation), and a migration
 * that fails before the point of no return loads `since` back into
 * blkback and writes the node again, so the domain keeps its history.
 * After release the volume records the migration's generation (adopt)
 * with an empty bitmap, once the domain is destroyed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libxl.h>
#include <libxl_utils.h>
#include <xentoollog.h>

#include "../be.h"
#include "../tracker-blkback.h"
#include "claim.h"
#include "dm.h"
#include "target-config.h"
#include "xen.h"

#define XEN_STATE_MAGIC "INCMIGXC"
#define DRAIN_TIMEOUT_S 30.0
#define WATCH_PERIOD_US 2000

struct xen_domain {
    struct incmig__domain d;
    xentoollog_logger_stdiostream *lg;
    libxl_ctx *ctx;
    uint32_t domid;
    char xname[INCMIG_NAME_MAX + 1];    /* the domain's name in Xen */
    libxl_domain_config cfg;
    bool cfg_ok;
    libxl_domain_config sent;        /* -C CONFIG: sent instead of cfg */
    bool sent_ok;
    bool debug;                      /* LIBXL_SUSPEND_DEBUG */
    struct incmig__tracker *trk[INCMIG_MAX_DISKS];
    dev_t push_dev[INCMIG_MAX_DISKS];   /* what PUSH reads, 0: a file */
    bool suspended, committed, released;
    struct xen_lineage {
        char vol[PATH_MAX];       /* the file volume, "" if none */
        uint8_t gen[16];          /* the claimed one, or a fresh one */
        bool claim;               /* gen proven, `since` complete */
        char why[512];            /* otherwise why */
        struct incmig__bitmap since;   /* every snapshot taken */
        struct incmig__bitmap snap;    /* scratch */
        bool adopt;
        uint8_t adopted[16];
    } lin[INCMIG_MAX_DISKS];
};

static const struct incmig__domain_ops xen_ops;

/* libxl for the domain named in spec, or a clear error: without Xen only
 * simulated domains can be migrated here. */
static int ctx_open(libxl_ctx **ctx_r, xentoollog_logger_stdiostream **lg_r,
                    const char *what)
{
    char msg[256];
    int rc = incmig__xen_ctx_open(ctx_r, lg_r, msg, sizeof msg);
    if (rc)
        ERR("domain '%s': Xen domains cannot be migrated from this machine: "
            "%s; only sim:CONTROL_SOCKET domains (served by `xl-incmig "
            "serve`) can be migrated here", what, msg);
    return rc;
}

/* ---- disks ----------------------------------------------------------------- */

/* The file volume under a disk's path: the file itself, or the backing
 * file of incmig's dm device (a disk that came here by migration). */
static void volume_of(struct incmig__dom_disk *dd, struct xen_lineage *l)
{
    char file[PATH_MAX], msg[512];
    struct stat sb;

    l->vol[0] = '\0';
    if (stat(dd->path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(file, sizeof file, "%s", dd->path);
    } else if (incmig__dm_backing_file(dd->path, file, sizeof file, msg,
                                       sizeof msg)) {
        snprintf(l->why, sizeof l->why, "%.150s is not a file volume "
                 "(%.250s): lineage is kept for file volumes only", dd->path,
                 msg);
        return;
    }
    if (!realpath(file, l->vol) || stat(l->vol, &sb) < 0 ||
        !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != dd->size) {
        snprintf(l->why, sizeof l->why, "%.150s's volume %.250s is not a "
                 "regular file of %" PRIu64 " bytes", dd->path, file, dd->size);
        l->vol[0] = '\0';
    }
}

/* Before the first snapshot: the disk's claim (xen/claim.c), and the
 * VBD's proof emptied while this migration holds the bitmap. */
static int take_claim(struct xen_domain *x, int i)
{
    struct incmig__dom_disk *dd = &x->d.disks[i];
    struct xen_lineage *l = &x->lin[i];
    char prior[33], hex[33];
    bool was_on;
    int rc;

    rc = incmig__bitmap_init(&l->since, x->trk[i]->nblocks);
    if (!rc)
        rc = incmig__bitmap_init(&l->snap, x->trk[i]->nblocks);
    if (rc)
        return rc;
    incmig__gen_random(l->gen);
    incmig__blkback_prior(x->trk[i], &was_on, prior);
    volume_of(dd, l);
    if (l->vol[0])
        l->claim = incmig__xen_claim(l->vol, dd->block_size, was_on, prior,
                                     l->gen, l->why, sizeof l->why);
    if (prior[0] && incmig__blkback_set_gen(x->trk[i], NULL)) {
        snprintf(l->why, sizeof l->why, "the VBD's incmig-track-gen could "
                 "not be emptied before the first snapshot");
        l->claim = false;
    }
    if (l->claim) {
        INFO("disk %s: %s holds generation %s, every write since in "
             "blkback's bitmap", dd->name, l->vol, incmig__gen_hex(l->gen, hex));
    } else {
        incmig__gen_random(l->gen);
        INFO("disk %s: %s: new generation %s", dd->name, l->why,
             incmig__gen_hex(l->gen, hex));
    }
    if (!l->vol[0])
        memset(l->gen, 0, 16);     /* no lineage kept: none to adopt */
    return 0;
}

static int add_disk(struct xen_domain *x, libxl_device_disk *dk)
{
    struct incmig__dom_disk *dd = &x->d.disks[x->d.ndisks];
    struct incmig__disk probe = { .fd = -1, .dfd = -1 };
    libxl_diskinfo info;
    int rc;

    if (x->d.ndisks >= (int)INCMIG_MAX_DISKS) {
        ERR("domain %s: more than %u disks", x->xname, INCMIG_MAX_DISKS);
        return INCMIG_ENOTSUP;
    }
    if (dk->format != LIBXL_DISK_FORMAT_RAW &&
        dk->format != LIBXL_DISK_FORMAT_EMPTY) {
        ERR("domain %s: disk %s is %s, not raw", x->xname, dk->vdev,
            libxl_disk_format_to_string(dk->format));
        return INCMIG_ENOTSUP;
    }
    if (!dk->pdev_path || dk->pdev_path[0] != '/') {
        ERR("domain %s: disk %s has no local path (%s): network disks are "
            "not migrated by incmig", x->xname, dk->vdev,
            dk->pdev_path ? dk->pdev_path : "none");
        return INCMIG_ENOTSUP;
    }
    if (strlen(dk->vdev) >= sizeof dd->name ||
        strlen(dk->pdev_path) >= sizeof dd->path) {
        ERR("domain %s: disk name or path too long", x->xname);
        return INCMIG_EINVAL;
    }
    /* Which backend serves it is what xenstore says: the stored
     * configuration may leave it to libxl ("unknown"). */
    libxl_diskinfo_init(&info);
    if (libxl_device_disk_getinfo(x->ctx, x->domid, dk, &info) ||
        !info.backend) {
        ERR("domain %s: no backend information for disk %s", x->xname,
            dk->vdev);
        libxl_diskinfo_dispose(&info);
        return INCMIG_EIO;
    }
    uint32_t devid = (uint32_t)info.devid;
    bool blkback = strstr(info.backend, "/backend/vbd/") != NULL;
    libxl_diskinfo_dispose(&info);
    if (!blkback || (dk->backend != LIBXL_DISK_BACKEND_PHY &&
                     dk->backend != LIBXL_DISK_BACKEND_UNKNOWN)) {
        ERR("domain %s: disk %s (%s) is served by %s, not blkback: incmig "
            "cannot track its writes; give it a phy: backend, or, if it is "
            "on shared storage, say so (--shared-disk %s): refused, nothing "
            "started", x->xname, dk->vdev, dk->vdev,
            dk->pdev_path ? dk->pdev_path : "?",
            blkback ? libxl_disk_backend_to_string(dk->backend) : "QEMU (qdisk)");
        return INCMIG_ENOTSUP;
    }

    rc = incmig__disk_open(&probe, dk->pdev_path, 0, 0);
    if (rc) {
        ERR("domain %s: cannot open disk %s's volume %s", x->xname, dk->vdev,
            dk->pdev_path);
        return rc;
    }
    snprintf(dd->name, sizeof dd->name, "%s", dk->vdev);
    snprintf(dd->path, sizeof dd->path, "%s", dk->pdev_path);
    dd->size = probe.size;
    struct stat st;
    x->push_dev[x->d.ndisks] =
        !stat(dd->path, &st) && S_ISBLK(st.st_mode) ? st.st_rdev : 0;
    dd->block_size = INCMIG_BS_DEFAULT;
    incmig__disk_close(&probe);

    struct incmig__blkback_opts bo = { .timeout_s = 10 };
    rc = incmig__blkback_tracker_open(&x->trk[x->d.ndisks], x->domid, devid,
                                      dd->block_size, &bo);
    if (rc) {
        ERR("domain %s: cannot track writes to disk %s (vbd %u/%u)",
            x->xname, dk->vdev, x->domid, devid);
        return rc;
    }
    INFO("disk %s: %s, %" PRIu64 " bytes, blkback tracking on (vbd %u/%u)",
         dd->name, dd->path, dd->size, x->domid, devid);
    x->d.ndisks++;
    return take_claim(x, x->d.ndisks - 1);
}

/* ---- the state stream -------------------------------------------------------- */

static int write_config(struct xen_domain *x, int fd)
{
    char *js = libxl_domain_config_to_json(x->ctx, x->sent_ok ? &x->sent
                                                              : &x->cfg);
    uint8_t hdr[16];
    int rc;

    if (!js) {
        ERR("domain %s: cannot write its configuration as JSON", x->xname);
        return INCMIG_EIO;
    }
    size_t n = strlen(js);
    if (n == 0 || n > INCMIG_XEN_CONFIG_MAX) {
        ERR("domain %s: configuration of %zu bytes (at most %u)", x->xname, n,
            INCMIG_XEN_CONFIG_MAX);
        free(js);
        return INCMIG_EINVAL;
    }
    memcpy(hdr, XEN_STATE_MAGIC, 8);
    put32(hdr + 8, INCMIG_XEN_STATE_VERSION);
    put32(hdr + 12, (uint32_t)n);
    rc = incmig__write_state(fd, hdr, sizeof hdr);
    if (!rc)
        rc = incmig__write_state(fd, js, n);
    free(js);
    return rc;
}

/* The pause, seen from the side: libxl_domain_suspend gives no callback. */
struct watcher {
    uint32_t domid;
    volatile int stop;
    double t_paused;
    pthread_t th;
};

static void *watch_main(void *opaque)
{
    struct watcher *w = opaque;
    xentoollog_logger_stdiostream *lg;
    libxl_ctx *ctx;

    if (ctx_open(&ctx, &lg, "watcher"))
        return NULL;
    while (!w->stop) {
        libxl_dominfo info;
        libxl_dominfo_init(&info);
        if (libxl_domain_info(ctx, &info, w->domid) == 0 &&
            (info.paused || (info.shutdown &&
                             info.shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND))) {
            w->t_paused = incmig__now();
            libxl_dominfo_dispose(&info);
            break;
        }
        libxl_dominfo_dispose(&info);
        usleep(WATCH_PERIOD_US);
    }
    incmig__xen_ctx_close(ctx, lg);
    return NULL;
}

static int xen_suspend(struct incmig__domain *d, int state_fd,
                       double *t_paused_r)
{
    struct xen_domain *x = (struct xen_domain *)d;
    struct watcher w = { .domid = x->domid };
    bool watching;
    int rc;

    rc = write_config(x, state_fd);
    if (rc)
        return rc;
    watching = pthread_create(&w.th, NULL, watch_main, &w) == 0;
    INFO("domain %s: libxl's memory pre-copy, then the pause", x->xname);
    int r = libxl_domain_suspend(x->ctx, x->domid, state_fd,
                                 LIBXL_SUSPEND_LIVE |
                                 (x->debug ? LIBXL_SUSPEND_DEBUG : 0), NULL);
    double t_end = incmig__now();
    if (watching) {
        w.stop = 1;
        pthread_join(w.th, NULL);
    }
    if (r) {
        ERR("domain %s: libxl_domain_suspend failed (%d)", x->xname, r);
        /* it may have got as far as suspending the domain */
        x->suspended = true;
        return INCMIG_EIO;
    }
    x->suspended = true;
    *t_paused_r = w.t_paused > 0 ? w.t_paused : t_end;
    for (int i = 0; i < x->d.ndisks && !rc; i++) {
        rc = incmig__blkback_drain_wait(x->trk[i], DRAIN_TIMEOUT_S);
        if (rc)
            ERR("domain %s: disk %s still has requests in flight after %.0f s",
                x->xname, x->d.disks[i].name, DRAIN_TIMEOUT_S);
    }
    if (!rc)
        INFO("domain %s suspended %.1f ms after libxl paused it; blkback "
             "drained", x->xname, (incmig__now() - *t_paused_r) * 1000);
    return rc;
}

/* ---- the other operations ------------------------------------------------------ */

static int xen_get_and_clear(struct incmig__domain *d, int disk,
                             struct incmig__bitmap *out)
{
    struct xen_domain *x = (struct xen_domain *)d;
    struct xen_lineage *l;
    int rc;

    if (disk < 0 || disk >= x->d.ndisks || !x->trk[disk])
        return INCMIG_EINVAL;
    l = &x->lin[disk];
    incmig__bitmap_clear_all(&l->snap);
    rc = x->trk[disk]->ops->get_and_clear(x->trk[disk], &l->snap);
    if (!rc)
        rc = incmig__bitmap_merge(out, &l->snap);
    if (!rc)
        rc = incmig__bitmap_merge(&l->since, &l->snap);
    return rc;
}

static int xen_lineage(struct incmig__domain *d, int disk, uint8_t gen[16],
                       bool *bitmap_r, struct incmig__bitmap *out, char *why,
                       size_t cap)
{
    struct xen_domain *x = (struct xen_domain *)d;
    struct xen_lineage *l;

    if (disk < 0 || disk >= x->d.ndisks)
        return INCMIG_EINVAL;
    l = &x->lin[disk];
    memcpy(gen, l->gen, 16);
    *bitmap_r = l->claim;
    snprintf(why, cap, "%s", l->claim ? "" : l->why);
    return l->claim ? incmig__bitmap_merge(out, &l->since) : 0;
}

static int xen_adopt(struct incmig__domain *d, int disk, const uint8_t gen[16])
{
    struct xen_domain *x = (struct xen_domain *)d;

    if (disk < 0 || disk >= x->d.ndisks || !x->committed ||
        !x->lin[disk].vol[0])
        return INCMIG_EINVAL;
    memcpy(x->lin[disk].adopted, gen, 16);
    x->lin[disk].adopt = true;
    return 0;
}

/* PUSH yielding: the guest's requests on every disk's backing device. */
static int xen_activity(struct incmig__domain *d, uint64_t *reqs_r,
                        double *busy_s_r)
{
    struct xen_domain *x = (struct xen_domain *)d;

    *reqs_r = 0;
    *busy_s_r = 0;
    for (int i = 0; i < d->ndisks; i++) {
        uint64_t n;
        double s;
        int rc = incmig__blkback_activity(x->trk[i], x->push_dev[i], &n, &s);
        if (rc)
            return rc;
        *reqs_r += n;
        *busy_s_r += s;
    }
    return 0;
}

static int xen_resume(struct incmig__domain *d)
{
    struct xen_domain *x = (struct xen_domain *)d;
    libxl_dominfo info;
    bool stopped = false;

    if (x->committed) {
        ERR("domain %s is past the point of no return", x->xname);
        return INCMIG_EINVAL;
    }
    libxl_dominfo_init(&info);
    if (libxl_domain_info(x->ctx, &info, x->domid) == 0)
        stopped = info.shutdown &&
                  info.shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND;
    libxl_dominfo_dispose(&info);
    if (!stopped) {
        x->suspended = false;
        return 0;
    }
    if (libxl_domain_resume(x->ctx, x->domid, 1, NULL)) {
        ERR("domain %s: libxl_domain_resume failed: the domain is suspended "
            "on this host; try `xl migrate`'s recovery: xl destroy is NOT "
            "needed, check `xl list` first", x->xname);
        return INCMIG_EIO;
    }
    x->suspended = false;
    INFO("domain %s resumed on the source", x->xname);
    return 0;
}

static int xen_commit(struct incmig__domain *d)
{
    struct xen_domain *x = (struct xen_domain *)d;
    char away[INCMIG_NAME_MAX + 32];

    snprintf(away, sizeof away, "%s--migratedaway", x->xname);
    if (libxl_domain_rename(x->ctx, x->domid, x->xname, away)) {
        ERR("domain %s: cannot rename it to %s", x->xname, away);
        return INCMIG_EIO;
    }
    x->committed = true;
    return 0;
}

static int xen_release(struct incmig__domain *d)
{
    struct xen_domain *x = (struct xen_domain *)d;
    for (int i = 0; i < x->d.ndisks; i++)
        if (x->trk[i]) {
            incmig__blkback_disable(x->trk[i]);
            x->trk[i]->ops->dispose(x->trk[i]);
            x->trk[i] = NULL;
        }
    if (libxl_domain_destroy(x->ctx, x->domid, NULL)) {
        ERR("domain %s--migratedaway (id %u) could not be destroyed; its "
            "disks are no longer needed: `xl destroy %u`", x->xname,
            x->domid, x->domid);
        return INCMIG_EIO;
    }
    INFO("domain %s--migratedaway destroyed: the destination owns it",
         x->xname);
    x->released = true;
    return 0;
}

/* The domain runs on here (a failure before the point of no return): a
 * disk whose claim this migration took gets its history back (every
 * snapshot ORed into blkback again, then the proof) and keeps tracking;
 * any other disk's tracking ends, as before incmig knew lineage. */
static void give_back(struct xen_domain *x, int i)
{
    struct xen_lineage *l = &x->lin[i];
    struct incmig__tracker *t = x->trk[i];

    if (l->claim && !x->committed) {
        if (!t->ops->load(t, &l->since) &&
            !incmig__blkback_set_gen(t, l->gen)) {
            INFO("disk %s: blkback's bitmap has its %" PRIu64 " block(s) "
                 "written since the generation back: the next migration can "
                 "still be incremental", x->d.disks[i].name,
                 incmig__bitmap_count(&l->since));
            return;
        }
        ERR("disk %s: its writes since the generation could not be given "
            "back to blkback: the next migration copies it in full",
            x->d.disks[i].name);
    }
    /* committed and not released: the copy here is the past; no claim */
    incmig__blkback_disable(t);
}

/* Released, the domain destroyed: the volume is exactly what the
 * destination got at the pause; it records the shared generation. */
static void save_released(struct xen_domain *x, int i)
{
    struct xen_lineage *l = &x->lin[i];
    struct incmig__bitmap none = {0};
    char hex[33];
    struct stat sb;
    int fd, rc;

    if (!l->adopt)
        return;
    fd = open(l->vol, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    rc = fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) ||
         (uint64_t)sb.st_size != x->d.disks[i].size ? INCMIG_EIO : 0;
    if (!rc)
        rc = incmig__bitmap_init(&none, x->lin[i].since.nbits);
    if (!rc)
        rc = incmig__lineage_close(l->vol, fd, l->adopted,
                                   x->d.disks[i].block_size, &none);
    if (rc)
        ERR("disk %s: %s could not record generation %s: the next migration "
            "back copies it in full", x->d.disks[i].name, l->vol,
            incmig__gen_hex(l->adopted, hex));
    else
        INFO("disk %s: %s recorded as generation %s", x->d.disks[i].name,
             l->vol, incmig__gen_hex(l->adopted, hex));
    incmig__bitmap_dispose(&none);
    if (fd >= 0)
        close(fd);
}

static void xen_close(struct incmig__domain *d)
{
    struct xen_domain *x = (struct xen_domain *)d;
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        if (x->trk[i]) {
            give_back(x, i);
            x->trk[i]->ops->dispose(x->trk[i]);
        }
    if (x->released) {
        /* A disk that came here by an earlier incmig migration sits on
         * incmig's device-mapper device over a loop device: both go with the
         * domain (the volume file stays, as any source disk does).  Here, not
         * in release: the engine's own O_DIRECT descriptors on the device are
         * closed by now (dmsetup remove saw EBUSY while they were open). */
        for (int i = 0; i < x->d.ndisks; i++) {
            char msg[512];
            if (incmig__dm_teardown(x->d.disks[i].path, msg, sizeof msg))
                ERR("disk %s: %s; remove it by hand (dmsetup remove, losetup "
                     "-d)", x->d.disks[i].name, msg);
            else if (msg[0] == '\0' && !strncmp(x->d.disks[i].path,
                                                "/dev/mapper/incmig-", 19))
                INFO("disk %s: %s and its loop device removed",
                     x->d.disks[i].name, x->d.disks[i].path);
            save_released(x, i);
        }
    }
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        incmig__bitmap_dispose(&x->lin[i].since);
        incmig__bitmap_dispose(&x->lin[i].snap);
    }
    if (x->cfg_ok)
        libxl_domain_config_dispose(&x->cfg);
    if (x->sent_ok)
        libxl_domain_config_dispose(&x->sent);
    incmig__xen_ctx_close(x->ctx, x->lg);
    free(x);
}

static const struct incmig__domain_ops xen_ops = {
    .get_and_clear = xen_get_and_clear,
    .suspend = xen_suspend,
    .activity = xen_activity,
    .resume = xen_resume,
    .commit = xen_commit,
    .release = xen_release,
    .close = xen_close,
    .lineage = xen_lineage,
    .adopt = xen_adopt,
};

/* ---- -C CONFIG ----------------------------------------------------------------- */

/* CONFIG's bytes (at most INCMIG_XEN_CONFIG_MAX), NUL-terminated. */
static int read_config_file(const char *path, char **buf_r)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t n;

    if (!f) {
        ERR("-C %s: %s", path, strerror(errno));
        return INCMIG_EINVAL;
    }
    buf = malloc(INCMIG_XEN_CONFIG_MAX + 2);
    if (!buf) {
        fclose(f);
        return INCMIG_ENOMEM;
    }
    n = fread(buf, 1, INCMIG_XEN_CONFIG_MAX + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || n == 0 || n > INCMIG_XEN_CONFIG_MAX || memchr(buf, 0, n)) {
        ERR("-C %s: %s", path, bad ? "cannot read it" : n == 0 ? "empty" :
            n > INCMIG_XEN_CONFIG_MAX ? "larger than 1 MiB" :
            "holds a NUL byte: not a configuration file");
        free(buf);
        return INCMIG_EINVAL;
    }
    buf[n] = '\0';
    *buf_r = buf;
    return 0;
}

/* -C CONFIG into x->sent: libxl's JSON as it is, an xl file through `xl
 * create --dryrun` (which prints the JSON and creates nothing); then
 * every disk tracked must be in it. */
static int load_config(struct xen_domain *x, const char *path)
{
    char *text = NULL, *json = NULL, msg[1024];
    int rc = read_config_file(path, &text);

    if (rc)
        return rc;
    if (text[strspn(text, " \t\r\n")] == '{') {
        json = text;
        text = NULL;
    } else {
        const char *argv[] = { "xl", "create", "--dryrun", "--quiet", path,
                               NULL };
        json = malloc(INCMIG_XEN_CONFIG_MAX + 2);
        if (!json) {
            rc = INCMIG_ENOMEM;
            goto out;
        }
        rc = incmig__dm_run(argv, json, INCMIG_XEN_CONFIG_MAX + 2, msg,
                            sizeof msg);
        if (rc) {
            ERR("-C %s: xl cannot read it: %s", path, msg);
            rc = INCMIG_EINVAL;
            goto out;
        }
        if (strlen(json) > INCMIG_XEN_CONFIG_MAX) {
            ERR("-C %s: its configuration is larger than 1 MiB", path);
            rc = INCMIG_EINVAL;
            goto out;
        }
    }
    libxl_domain_config_init(&x->sent);
    x->sent_ok = true;
    if (libxl_domain_config_from_json(x->ctx, &x->sent, json)) {
        ERR("-C %s: not a configuration libxl reads (an xl file, or its "
            "JSON from `xl create --dryrun`; is output_format=sxp set in "
            "xl.conf?)", path);
        rc = INCMIG_EINVAL;
        goto out;
    }
    for (int k = 0; k < x->d.ndisks; k++) {
        bool found = false;
        for (int i = 0; i < x->sent.num_disks && !found; i++)
            found = x->sent.disks[i].vdev && !x->sent.disks[i].is_cdrom &&
                    !strcmp(x->sent.disks[i].vdev, x->d.disks[k].name);
        if (!found) {
            ERR("-C %s: domain %s's disk %s, which incmig migrates, is not "
                "in it: refused, nothing started", path, x->xname,
                x->d.disks[k].name);
            rc = INCMIG_EINVAL;
            goto out;
        }
    }
    INFO("domain %s: the configuration sent is %s's", x->xname, path);
out:
    free(text);
    free(json);
    return rc;
}

/* Whether disk dk is left alone as shared storage (said why, once). */
static bool shared_disk(struct xen_domain *x,
                        const struct incmig__domain_args *a,
                        const libxl_device_disk *dk, bool *used)
{
    const char *why = NULL;

    for (int k = 0; k < a->nshared; k++)
        if (dk->vdev && !strcmp(dk->vdev, a->shared[k])) {
            used[k] = true;
            why = "--shared-disk";
        }
    if (!why)
        why = incmig__xen_disk_network(dk);
    if (why)
        INFO("domain %s: disk %s (%s) is on shared storage (%s): not "
             "tracked, not copied; the destination attaches it as it is",
             x->xname, dk->vdev, dk->pdev_path ? dk->pdev_path : "no path",
             why);
    return why != NULL;
}

int incmig__xen_domain_open(struct incmig__domain **d_r, const char *spec,
                            const struct incmig__domain_args *a)
{
    bool used[INCMIG_MAX_SHARED] = { false };
    struct xen_domain *x = calloc(1, sizeof *x);
    char *end;
    int rc;

    if (!x)
        return INCMIG_ENOMEM;
    x->d.ops = &xen_ops;
    rc = ctx_open(&x->ctx, &x->lg, spec);
    if (rc)
        goto out;
    unsigned long id = strtoul(spec, &end, 10);
    if (*spec && !*end && id < UINT32_MAX) {
        x->domid = (uint32_t)id;
        char *n = libxl_domid_to_name(x->ctx, x->domid);
        if (!n) {
            ERR("no domain with id %lu", id);
            rc = INCMIG_EINVAL;
            goto out;
        }
        snprintf(x->xname, sizeof x->xname, "%s", n);
        free(n);
    } else if (libxl_name_to_domid(x->ctx, spec, &x->domid)) {
        ERR("no domain named '%s' (see `xl list`)", spec);
        rc = INCMIG_EINVAL;
        goto out;
    } else {
        snprintf(x->xname, sizeof x->xname, "%s", spec);
    }
    if (x->domid == 0) {
        ERR("domain 0 cannot be migrated");
        rc = INCMIG_EINVAL;
        goto out;
    }
    snprintf(x->d.name, sizeof x->d.name, "%s", x->xname);
    libxl_domain_config_init(&x->cfg);
    x->cfg_ok = true;
    if (libxl_retrieve_domain_configuration(x->ctx, x->domid, &x->cfg, NULL)) {
        ERR("domain %s: cannot read its configuration from libxl", x->xname);
        rc = INCMIG_EIO;
        goto out;
    }
    if (a->nshared > INCMIG_MAX_SHARED) {
        ERR("at most %d --shared-disk", INCMIG_MAX_SHARED);
        rc = INCMIG_EINVAL;
        goto out;
    }
    x->debug = a->debug;
    for (int i = 0; i < x->cfg.num_disks && !rc; i++) {
        libxl_device_disk *dk = &x->cfg.disks[i];
        if (dk->is_cdrom || shared_disk(x, a, dk, used))
            continue;
        rc = add_disk(x, dk);
    }
    for (int k = 0; k < a->nshared && !rc; k++)
        if (!used[k]) {
            ERR("--shared-disk %s: domain %s has no such disk (see `xl "
                "block-list %s`)", a->shared[k], x->xname, x->xname);
            rc = INCMIG_EINVAL;
        }
    if (!rc && a->config_file)
        rc = load_config(x, a->config_file);
    if (rc)
        goto out;
    *d_r = &x->d;
    x = NULL;
out:
    if (x)
        xen_close(&x->d);
    return rc;
}
