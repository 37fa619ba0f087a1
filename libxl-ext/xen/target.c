/* xen/target.c: the Xen target, the destination's backend for a Xen
 * domain (the counterpart of xen/domain.c on the source).
 *
 * Entry point: incmig__xen_target_open, the "xen" entry of the table of
 * targets (volume.c; `xl-incmig migrate-receive --target xen --disk
 * NAME=PATH ...`); everything else is reached through its ops
 * (incmig-internal.h, "target backend").
 *
 * The contract with the source (xen/domain.c), the state stream that
 * restore reads (XEN_STREAM bodies, concatenated, fed to fd by receive-data.c):
 *
 *   "INCMIGXC"  u32 version (1)  u32 N (1 .. 1 MiB)     big-endian
 *   N bytes     the domain's configuration as xl keeps it: JSON of
 *               libxl_domain_config (libxl_retrieve_domain_configuration
 *               on the source, libxl_domain_config_to_json)
 *   ...         libxl's migration stream v2 exactly as
 *               libxl_domain_suspend(ctx, domid, fd, LIBXL_SUSPEND_LIVE)
 *               wrote it, to EOF
 *
 * N is bounded before it is allocated; a bad header is INCMIG_EPROTO
 * (xen/target-config.c).  DISK records name each disk by its vdev
 * ("xvda"); the receiver's own mapping (--disk NAME=PATH, volume.c) says
 * where its volume goes.
 *
 * One disk's I/O path, bottom up:
 *
 *   volume file or LV (created here)  <-  gate (receive.c; PUSH writes
 *   the volume directly)  <-  NBD server on a private unix socket (nbd.c)
 *   <-  dom0's kernel NBD client /dev/nbdN (xen/nbdkern.c)  <-
 *   device-mapper linear /dev/mapper/incmig-<domain>-<disk> (xen/dm.c)
 *   <-  blkback  <-  guest
 *
 * and after PULL the dm table points at the local volume (a logical
 * volume directly, a file through a loop device), the NBD parts go, and
 * the guest keeps running on its local volume.
 *
 *   op          what the Xen target does
 *   open        checks: Xen reachable (libxl), NBD devices (modprobe nbd
 *               if none), device-mapper, dmsetup and losetup; each disk a
 *               whole number of 512-byte sectors, no nbd= (sim only);
 *               for an lvm:VG/LV disk, lvm2 installed, VG there, LV not
 *               (xen/lvm.c).  Creates nothing
 *   prepare(i)  creates disk i's volume file at its mapped path, sized
 *               (incmig__volume_create: O_EXCL, never an existing file),
 *               or its logical volume (lvcreate), then zeroed: PUSH skips
 *               the blocks the source never allocated, and a new LV holds
 *               whatever its extents held before (fallocate PUNCH_HOLE on
 *               a block device: BLKZEROOUT, offloaded where the storage can)
 *   stage(i)    serves gate g on <rundir>/disk<i>.sock, connects the kernel
 *               NBD client to it (live at once: the gate is not armed, so
 *               the kernel's partition scan reads the volume as PUSH has
 *               written it so far), creates the dm device on /dev/nbdN
 *   restore     reads the header and the JSON, rewrites the configuration
 *               (each migrated disk -> its dm device, phy, raw, no script
 *               but block-incmig when this host has it; named
 *               NAME--incoming), libxl_domain_create_restore reads
 *               libxl's stream to its END: the domain exists, paused.  Its
 *               own libxl context: it runs on receive-data.c's restore thread.
 *               Then blkback tracking on for each disk on a file volume,
 *               under the volume's key (xen/claim.c), before any guest
 *               write
 *   unpause     at GO: rename NAME--incoming -> NAME, unpause (not with
 *               migrate-receive -p: the domain stays paused, as xl's -p)
 *   disk_done   PULL of disk i complete: flush the volume; for a file, a
 *               loop device on it (direct I/O); dm table swapped to the LV
 *               or the loop device (load, suspend, resume), the loop
 *               device marked autoclear (it goes with the dm device),
 *               kernel NBD client disconnected, NBD server freed; for a
 *               file volume, its lineage OPEN with the migration's
 *               generation, then the VBD's incmig-track-gen (spec "Xen:
 *               blkback is the tracker"): blkback's bitmap holds every
 *               write since GO
 *   in_use      disks still on the NBD path
 *   stop        before GO: destroys the incoming domain (so that blkback
 *               lets go of the staged devices); then disconnects every NBD
 *               client still connected and frees the servers.  After GO,
 *               a disk whose PULL is not complete loses its I/O path: the
 *               engine calls stop only when it gives up
 *   abort       stop, then removes the dm devices and the volumes this
 *               migration created (a file: same inode; an LV: same uuid),
 *               nothing else
 *   close       closes the volumes, removes the socket directory; the dm
 *               devices of a running domain stay (blkback uses them)
 *
 * libxl: one context for the receiver's thread (open .. close) and one for
 * the restore thread; both reap only their own children
 * (libxl_sigchld_owner_libxl_always_selective_reap), because this process
 * runs dmsetup and losetup too and waits for them itself.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxl.h>
#include <xentoollog.h>

#include "../incmig-internal.h"
#include "../tracker-blkback.h"
#include "claim.h"
#include "dm.h"
#include "lvm.h"
#include "nbdkern.h"
#include "target-config.h"
#include "target.h"
#include "xen.h"

/* NBD workers per export, as sim/target.c: requests waiting for missing
 * blocks hold a worker, and those for present blocks must still find one
 * (the kernel client keeps up to 128 in flight). */
#define GATE_WORKERS 64
#define DISCONNECT_TIMEOUT_S 10.0
#define HOOK_SCRIPT "/etc/xen/scripts/block-incmig"

struct xen_target {
    struct incmig__target t;
    xentoollog_logger_stdiostream *lg;
    libxl_ctx *ctx;                  /* the receiver's thread only */
    char rundir[80];                 /* private: the NBD sockets, in
                                      * the runtime directory */
    struct incmig__volume vol[INCMIG_MAX_DISKS];
    struct incmig__lv lv[INCMIG_MAX_DISKS];      /* lvm:VG/LV disks */
    struct incmig__nbd_server *nbd[INCMIG_MAX_DISKS];
    struct incmig__nbdkern kern[INCMIG_MAX_DISKS];
    char dm[INCMIG_MAX_DISKS][128];  /* dm device name, "" before stage */
    bool dm_made[INCMIG_MAX_DISKS];
    bool done[INCMIG_MAX_DISKS];     /* on the local volume */
    char loop[INCMIG_MAX_DISKS][64];
    struct incmig__tracker *trk[INCMIG_MAX_DISKS];   /* under lock */

    pthread_mutex_t lock;            /* what restore sets */
    bool restored;                   /* the incoming domain exists */
    uint32_t domid;
    char name[INCMIG_NAME_MAX + 1];  /* the domain's own name */
    bool unpaused;
};

static struct xen_target *xt(struct incmig__target *t)
{
    return (struct xen_target *)t;
}

/* ---- prepare, stage ---------------------------------------------------------- */

/* Disk i's logical volume, created, opened, zeroed. */
static int prepare_lv(struct xen_target *s, int i, struct incmig__disk **disk_r)
{
    const struct incmig__target_disk *td = &s->t.disks[i];
    struct incmig__disk *d = &s->vol[i].disk;
    char msg[INCMIG_MSG_MAX];
    int rc;

    rc = incmig__lvm_create(&s->lv[i], td->lvm_vg, td->lvm_lv, td->size, msg,
                            sizeof msg);
    if (rc)
        return incmig__target_fail(&s->t, rc, "disk %s: %s", td->name, msg);
    rc = incmig__disk_open(d, s->lv[i].dev, INCMIG_DISK_WRITE, td->size);
    if (rc)
        return incmig__target_fail(&s->t, rc, "disk %s: cannot open %s (%s)",
                                   td->name, s->lv[i].dev, td->path);
    d->size = td->size;      /* LVM rounds up to its extents: the disk's */
    double t0 = incmig__now();
    rc = incmig__disk_punch(d, 0, td->size);
    if (!rc)
        rc = incmig__disk_flush(d);
    if (rc)
        return incmig__target_fail(&s->t, rc, "disk %s: cannot zero %s",
                                   td->name, td->path);
    INFO("disk %s: %s zeroed in %.1f s", td->name, td->path,
         incmig__now() - t0);
    *disk_r = d;
    return 0;
}

static int xen_prepare(struct incmig__target *t, int i,
                       struct incmig__disk **disk_r)
{
    if (t->disks[i].lvm_vg[0])
        return prepare_lv(xt(t), i, disk_r);
    return incmig__target_prepare_volume(t, i, &xt(t)->vol[i], disk_r);
}

static int make_rundir(struct xen_target *s)
{
    char dir[4096];
    if (s->rundir[0])
        return 0;
    int rc = incmig__runtime_dir(dir, sizeof dir);
    if (rc)
        return incmig__target_fail(&s->t, rc, "no private runtime directory "
                                   "for the NBD sockets (see above)");
    if ((size_t)snprintf(s->rundir, sizeof s->rundir, "%s/xen.XXXXXX", dir) <
            sizeof s->rundir && mkdtemp(s->rundir))
        return 0;
    s->rundir[0] = '\0';
    return incmig__target_fail(&s->t, INCMIG_EIO, "cannot create a private "
                               "directory for the NBD sockets in %s: %s", dir,
                               strerror(errno));
}

static int xen_stage(struct incmig__target *t, int i, struct incmig__gate *g)
{
    struct xen_target *s = xt(t);
    const struct incmig__target_disk *td = &t->disks[i];
    char path[128], uri[160], msg[INCMIG_MSG_MAX], mapper[192];
    struct stat sb;
    int fd, rc;

    rc = make_rundir(s);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/disk%d.sock", s->rundir, i);
    snprintf(uri, sizeof uri, "unix:%s", path);
    rc = incmig__nbd_new(&s->nbd[i], uri, td->size, &incmig__gate_nbd_ops, g,
                         GATE_WORKERS);
    if (!rc)
        rc = incmig__nbd_start(s->nbd[i]);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot serve its PULL "
                                   "gate on %s: %s", td->name, path,
                                   incmig_strerror(rc));
    rc = incmig__unix_connect(path, &fd);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot connect to its "
                                   "own NBD socket %s", td->name, path);
    rc = incmig__nbdkern_connect(&s->kern[i], fd, msg, sizeof msg);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: dom0's NBD client: %s",
                                   td->name, msg);
    if (s->kern[i].size != td->size)
        return incmig__target_fail(t, INCMIG_EIO, "disk %s: %s shows %"
                                   PRIu64 " bytes, not %" PRIu64, td->name,
                                   s->kern[i].dev, s->kern[i].size, td->size);

    /* a name of our own: one left by an earlier migration of this domain
     * (a domain that runs on it, or ran) is never touched */
    for (int k = 0; k < 100; k++) {
        incmig__dm_name(s->dm[i], sizeof s->dm[i], t->domain, td->name, k);
        if (!incmig__dm_exists(s->dm[i]))
            break;
        if (k == 99)
            return incmig__target_fail(t, INCMIG_EIO, "disk %s: every "
                                       "device-mapper name for it is taken "
                                       "(incmig-%s-%s...)", td->name,
                                       t->domain, td->name);
    }
    rc = incmig__dm_create(s->dm[i], td->size / 512, s->kern[i].dev, msg,
                           sizeof msg);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot create its "
                                   "device-mapper device: %s", td->name, msg);
    s->dm_made[i] = true;
    snprintf(mapper, sizeof mapper, "/dev/mapper/%s", s->dm[i]);
    if (stat(mapper, &sb) < 0) {
        /* no udev to make the node: dmsetup makes it */
        const char *mk[] = { "dmsetup", "mknodes", s->dm[i], NULL };
        incmig__dm_run(mk, NULL, 0, msg, sizeof msg);
        if (stat(mapper, &sb) < 0)
            return incmig__target_fail(t, INCMIG_EIO, "disk %s: %s did not "
                                       "appear", td->name, mapper);
    }
    INFO("disk %s: PULL path staged: gate on %s, %s, %s", td->name, path,
         s->kern[i].dev, mapper);
    return 0;
}

/* ---- restore ------------------------------------------------------------------- */

static int read_exact(int fd, void *buf, size_t len, size_t *got_r)
{
    uint8_t *p = buf;
    *got_r = 0;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return INCMIG_EIO;
        if (n == 0)
            return INCMIG_EPROTO;
        p += n;
        len -= (size_t)n;
        *got_r += (size_t)n;
    }
    return 0;
}

/* The restored domain, still paused: blkback tracks each disk on a file
 * volume from now on, its bitmap named after the volume (what the hook
 * and the next migration from here look for).  A failure costs only the
 * next incremental migration of that disk. */
static void track_disks(struct xen_target *s, libxl_ctx *ctx,
                        libxl_domain_config *cfg, uint32_t domid)
{
    struct stat mb;

    /* the stock module would make each enable wait out its timeout, in
     * the downtime: incmig's has this directory from its load on */
    if (stat("/sys/kernel/xen-blkback-incmig", &mb) < 0) {
        INFO("domain %s: the stock xen-blkback is loaded: its disks are not "
             "tracked here, the next migration from this host copies them "
             "in full", s->t.domain);
        return;
    }
    for (int i = 0; i < s->t.ndisks; i++) {
        const struct incmig__target_disk *td = &s->t.disks[i];
        char key[INCMIG_XEN_KEY_LEN + 1];
        struct incmig__tracker *trk = NULL;
        libxl_device_disk *dk = NULL;
        libxl_diskinfo info;
        struct stat sb;

        if (stat(td->path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;                     /* lineage: file volumes only */
        for (int k = 0; k < cfg->num_disks && !dk; k++)
            if (cfg->disks[k].vdev && !strcmp(cfg->disks[k].vdev, td->name))
                dk = &cfg->disks[k];
        libxl_diskinfo_init(&info);
        bool ok = dk && !libxl_device_disk_getinfo(ctx, domid, dk, &info) &&
                  !incmig__xen_track_key(td->path, key);
        struct incmig__blkback_opts bo = {
            .timeout_s = 10, .key = key, .volume = td->path, .size = td->size,
        };
        if (ok && incmig__blkback_tracker_open(&trk, domid,
                                               (uint32_t)info.devid,
                                               td->block_size, &bo))
            ok = false;
        libxl_diskinfo_dispose(&info);
        if (!ok) {
            ERR("disk %s: blkback does not track it here: the next "
                "migration from this host copies it in full", td->name);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        s->trk[i] = trk;
        pthread_mutex_unlock(&s->lock);
    }
}

static int xen_restore(struct incmig__target *t, int fd)
{
    struct xen_target *s = xt(t);
    uint8_t h[INCMIG_XEN_STATE_HDR];
    char msg[INCMIG_MSG_MAX], name[INCMIG_NAME_MAX + 1];
    char devs_buf[INCMIG_MAX_DISKS][160];
    const char *names[INCMIG_MAX_DISKS], *devs[INCMIG_MAX_DISKS];
    xentoollog_logger_stdiostream *lg = NULL;
    libxl_ctx *ctx = NULL;
    libxl_domain_config cfg;
    libxl_domain_restore_params params;
    bool cfg_init = false, params_init = false;
    char *json = NULL;
    uint32_t n, domid = INVALID_DOMID;
    size_t got;
    int rc, r;

    rc = read_exact(fd, h, sizeof h, &got);
    if (rc) {
        rc = incmig__target_fail(t, INCMIG_EPROTO, "domain %s: its state "
                                 "stream ended after %zu bytes, in its "
                                 "header", t->domain, got);
        goto out;
    }
    rc = incmig__xen_state_header(h, &n, msg, sizeof msg);
    if (rc) {
        rc = incmig__target_fail(t, rc, "domain %s: %s", t->domain, msg);
        goto out;
    }
    json = malloc((size_t)n + 1);
    if (!json) {
        rc = incmig__target_fail(t, INCMIG_ENOMEM, "out of memory");
        goto out;
    }
    rc = read_exact(fd, json, n, &got);
    if (rc) {
        rc = incmig__target_fail(t, INCMIG_EPROTO, "domain %s: its state "
                                 "stream ended in its configuration (%zu of "
                                 "%u bytes)", t->domain, got, n);
        goto out;
    }
    json[n] = '\0';
    if (strlen(json) != n) {
        rc = incmig__target_fail(t, INCMIG_EPROTO, "domain %s: its "
                                 "configuration holds a NUL byte", t->domain);
        goto out;
    }
    rc = incmig__xen_ctx_open(&ctx, &lg, msg, sizeof msg);
    if (rc) {
        rc = incmig__target_fail(t, rc, "domain %s: %s", t->domain, msg);
        goto out;
    }
    libxl_domain_config_init(&cfg);
    cfg_init = true;
    if (libxl_domain_config_from_json(ctx, &cfg, json)) {
        rc = incmig__target_fail(t, INCMIG_EPROTO, "domain %s: its "
                                 "configuration (%u bytes of JSON) is not one "
                                 "libxl reads", t->domain, n);
        goto out;
    }
    for (int i = 0; i < t->ndisks; i++) {
        snprintf(devs_buf[i], sizeof devs_buf[i], "/dev/mapper/%s", s->dm[i]);
        names[i] = t->disks[i].name;
        devs[i] = devs_buf[i];
    }
    const char *shared[INCMIG_MAX_DISKS];
    for (int i = 0; i < t->nshared; i++)
        shared[i] = t->shared[i];
    rc = incmig__xen_config_rewrite(&cfg, t->ndisks, names, devs, t->nshared,
                                    shared, name, sizeof name, msg,
                                    sizeof msg);
    if (rc) {
        rc = incmig__target_fail(t, rc, "%s", msg);
        goto out;
    }
    if (access(HOOK_SCRIPT, X_OK) == 0 &&
        incmig__xen_config_hook(&cfg, t->ndisks, names, "block-incmig")) {
        rc = incmig__target_fail(t, INCMIG_ENOMEM, "out of memory");
        goto out;
    }
    if (strcmp(name, t->domain))
        INFO("domain %s is called %s in its configuration", t->domain, name);
    libxl_domain_restore_params_init(&params);
    params_init = true;
    params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
    params.stream_version = 2;
    DBG("domain %s: restoring as %s--incoming", name, name);
    r = libxl_domain_create_restore(ctx, &cfg, &domid, fd, -1, &params, NULL,
                                    NULL);
    if (r) {
        /* libxl destroys what it had built of the domain */
        rc = incmig__target_fail(t, INCMIG_EIO, "domain %s: libxl could not "
                                 "restore it from its state stream (libxl "
                                 "error %d; libxl's own messages above say "
                                 "why)", name, r);
        goto out;
    }
    track_disks(s, ctx, &cfg, domid);
    pthread_mutex_lock(&s->lock);
    s->restored = true;
    s->domid = domid;
    snprintf(s->name, sizeof s->name, "%s", name);
    pthread_mutex_unlock(&s->lock);
    INFO("domain %s restored as %s--incoming (id %u), paused", name, name,
         domid);
    rc = 0;
out:
    if (params_init)
        libxl_domain_restore_params_dispose(&params);
    if (cfg_init)
        libxl_domain_config_dispose(&cfg);
    incmig__xen_ctx_close(ctx, lg);
    free(json);
    return rc;
}

/* ---- GO, PULL complete ------------------------------------------------------------ */

static int xen_unpause(struct incmig__target *t)
{
    struct xen_target *s = xt(t);
    char inc[INCMIG_NAME_MAX + 32];

    pthread_mutex_lock(&s->lock);
    bool restored = s->restored;
    pthread_mutex_unlock(&s->lock);
    if (!restored)
        return incmig__target_fail(t, INCMIG_EINVAL, "domain %s: GO, but it "
                                   "was never restored here", t->domain);
    snprintf(inc, sizeof inc, "%s--incoming", s->name);
    if (libxl_domain_rename(s->ctx, s->domid, inc, s->name))
        return incmig__target_fail(t, INCMIG_EIO, "domain %s (id %u): cannot "
                                   "rename it from %s (does the source still "
                                   "hold the name?)", s->name, s->domid, inc);
    if (!t->paused && libxl_domain_unpause(s->ctx, s->domid, NULL))
        return incmig__target_fail(t, INCMIG_EIO, "domain %s (id %u): cannot "
                                   "unpause it", s->name, s->domid);
    s->unpaused = true;         /* GO acted on: the domain is here's */
    if (t->paused)
        INFO("domain %s (id %u) is here, left paused (-p): `xl unpause %s`",
             s->name, s->domid, s->name);
    else
        INFO("domain %s (id %u) runs here", s->name, s->domid);
    return 0;
}

/* Disk i is complete and blkback has tracked it since GO: the volume is
 * of the migration's generation (lineage OPEN: blkback holds it), and the
 * VBD says its bitmap is every write since (written last: it is the
 * proof the next migration from here checks). */
static void record_gen(struct xen_target *s, int i)
{
    const struct incmig__target_disk *td = &s->t.disks[i];
    char hex[33];

    pthread_mutex_lock(&s->lock);
    struct incmig__tracker *trk = s->trk[i];
    pthread_mutex_unlock(&s->lock);
    if (!trk)
        return;
    if (incmig__lineage_open(td->path, s->vol[i].disk.fd, td->gen_next,
                             td->block_size) ||
        incmig__blkback_set_gen(trk, td->gen_next)) {
        ERR("disk %s: generation %s could not be recorded: the next "
            "migration from this host copies it in full", td->name,
            incmig__gen_hex(td->gen_next, hex));
        return;
    }
    INFO("disk %s: %s is generation %s, blkback tracking its writes since "
         "GO", td->name, td->path, incmig__gen_hex(td->gen_next, hex));
}

static int xen_disk_done(struct incmig__target *t, int i)
{
    struct xen_target *s = xt(t);
    const struct incmig__target_disk *td = &t->disks[i];
    char msg[INCMIG_MSG_MAX];
    int rc;

    if (s->done[i])
        return 0;
    if (!s->dm_made[i])
        return incmig__target_fail(t, INCMIG_EINVAL, "disk %s was never "
                                   "staged", td->name);
    rc = incmig__disk_flush(&s->vol[i].disk);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot flush %s",
                                   td->name, td->path);
    const char *under = s->lv[i].created ? s->lv[i].dev : s->loop[i];
    if (!s->lv[i].created && !s->loop[i][0]) {
        rc = incmig__loop_attach(td->path, s->loop[i], sizeof s->loop[i], msg,
                                 sizeof msg);
        if (rc)
            return incmig__target_fail(t, rc, "disk %s: no loop device for "
                                       "%s: %s (the domain stays on the "
                                       "NBD path)", td->name, td->path, msg);
    }
    rc = incmig__dm_swap(s->dm[i], td->size / 512, under, msg, sizeof msg);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot switch "
                                   "/dev/mapper/%s to %s: %s (the domain "
                                   "stays on the NBD path)", td->name,
                                   s->dm[i], under, msg);
    /* device-mapper holds it now: it goes when the dm device goes */
    if (s->loop[i][0] && incmig__loop_detach(s->loop[i], msg, sizeof msg))
        ERR("disk %s: %s not set to autoclear: %s", td->name, s->loop[i],
            msg);
    incmig__nbdkern_disconnect(&s->kern[i], DISCONNECT_TIMEOUT_S);
    if (s->nbd[i])
        incmig__nbd_free(s->nbd[i]);
    s->nbd[i] = NULL;
    s->done[i] = true;
    INFO("disk %s: PULL complete; /dev/mapper/%s now on %s (%s): incmig has "
         "left its I/O path", td->name, s->dm[i], under, td->path);
    record_gen(s, i);
    return 0;
}

static int xen_in_use(struct incmig__target *t)
{
    struct xen_target *s = xt(t);
    int n = 0;

    for (int i = 0; i < t->ndisks; i++)
        if (s->nbd[i] && !s->done[i])
            n++;
    return n;
}

/* ---- failure, the end ----------------------------------------------------------- */

static void destroy_incoming(struct xen_target *s)
{
    pthread_mutex_lock(&s->lock);
    bool restored = s->restored && !s->unpaused;
    s->restored = false;
    pthread_mutex_unlock(&s->lock);
    if (!restored || !s->ctx)
        return;
    /* nothing of a domain that never ran is worth parking */
    for (int i = 0; i < s->t.ndisks; i++)
        if (s->trk[i]) {
            incmig__blkback_disable(s->trk[i]);
            s->trk[i]->ops->dispose(s->trk[i]);
            s->trk[i] = NULL;
        }
    if (libxl_domain_destroy(s->ctx, s->domid, NULL))
        ERR("domain %s--incoming (id %u) could not be destroyed: `xl "
            "destroy %u`", s->name, s->domid, s->domid);
    else
        INFO("domain %s--incoming (id %u) destroyed: the domain stays on "
             "the source", s->name, s->domid);
}

static void xen_stop(struct incmig__target *t)
{
    struct xen_target *s = xt(t);

    destroy_incoming(s);
    for (int i = 0; i < t->ndisks; i++) {
        if (s->done[i])
            continue;
        if (s->unpaused && s->kern[i].thr_started)
            ERR("disk %s: PULL is not complete and the receiver stops: the "
                "domain's I/O on it fails from now on", t->disks[i].name);
        incmig__nbdkern_disconnect(&s->kern[i], DISCONNECT_TIMEOUT_S);
        if (s->nbd[i])
            incmig__nbd_free(s->nbd[i]);
        s->nbd[i] = NULL;
    }
}

static void xen_abort(struct incmig__target *t)
{
    struct xen_target *s = xt(t);
    char msg[INCMIG_MSG_MAX];

    xen_stop(t);
    for (int i = 0; i < t->ndisks; i++) {
        if (s->dm_made[i] && !s->unpaused) {
            if (incmig__dm_remove(s->dm[i], msg, sizeof msg))
                ERR("disk %s: %s", t->disks[i].name, msg);
            s->dm_made[i] = false;
        }
        if (!s->unpaused) {
            incmig__volume_close(&s->vol[i], true);
            incmig__lvm_remove(&s->lv[i]);
        }
    }
}

static void xen_close(struct incmig__target *t)
{
    struct xen_target *s = xt(t);

    if (!t)
        return;
    xen_stop(t);
    for (int i = 0; i < t->ndisks; i++) {
        /* blkback keeps tracking: the domain runs on */
        if (s->trk[i])
            s->trk[i]->ops->dispose(s->trk[i]);
        incmig__volume_close(&s->vol[i], false);
    }
    if (s->rundir[0] && rmdir(s->rundir) < 0)
        DBG("cannot remove %s: %s", s->rundir, strerror(errno));
    incmig__xen_ctx_close(s->ctx, s->lg);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const struct incmig__target_ops xen_ops = {
    .prepare = xen_prepare,
    .stage = xen_stage,
    .restore = xen_restore,
    .unpause = xen_unpause,
    .disk_done = xen_disk_done,
    .in_use = xen_in_use,
    .stop = xen_stop,
    .abort = xen_abort,
    .close = xen_close,
};

/* ---- open ---------------------------------------------------------------------- */

static bool have_nbd(void)
{
    char p[512];
    struct stat sb;
    snprintf(p, sizeof p, "%s/nbd0", incmig__nbdkern_sys.sys_dir);
    return stat(p, &sb) == 0;
}

/* What this host must have; msg says what is missing. */
static int check_host(char *msg, size_t cap)
{
    char m2[INCMIG_MSG_MAX];
    struct stat sb;

    if (!have_nbd()) {
        const char *mp[] = { "modprobe", "nbd", NULL };
        int rc = incmig__dm_run(mp, NULL, 0, m2, sizeof m2);
        for (int k = 0; k < 100 && !rc && !have_nbd(); k++)
            usleep(20000);
        if (!have_nbd()) {
            snprintf(msg, cap, "the xen target needs the kernel's NBD client "
                     "and this host has no NBD device (%s): refused, nothing "
                     "created", rc ? m2 : "modprobe nbd gave none");
            return INCMIG_ENOTSUP;
        }
    }
    if (stat("/dev/mapper/control", &sb) < 0) {
        const char *mp[] = { "modprobe", "dm_mod", NULL };
        incmig__dm_run(mp, NULL, 0, m2, sizeof m2);
        if (stat("/dev/mapper/control", &sb) < 0) {
            snprintf(msg, cap, "the xen target needs device-mapper and this "
                     "host has no /dev/mapper/control: refused, nothing "
                     "created");
            return INCMIG_ENOTSUP;
        }
    }
    for (int k = 0; k < 2; k++) {
        const char *prog = k ? "losetup" : "dmsetup";
        if (!incmig__dm_have(prog)) {
            snprintf(msg, cap, "the xen target needs %s (package %s), not "
                     "installed here: refused, nothing created", prog,
                     k ? "mount" : "dmsetup");
            return INCMIG_ENOTSUP;
        }
    }
    return 0;
}

int incmig__xen_target_open(struct incmig__target **t_r, const char *domain,
                            int ndisks, const struct incmig__target_disk *disks,
                            int *bad_r, char *msg, size_t cap)
{
    struct xen_target *s = NULL;
    int rc;

    *t_r = NULL;
    *bad_r = -1;
    if (ndisks < 1 || ndisks > (int)INCMIG_MAX_DISKS) {
        snprintf(msg, cap, "domain %s: %d disks", domain, ndisks);
        return INCMIG_EINVAL;
    }
    for (int i = 0; i < ndisks; i++) {
        *bad_r = i;
        if (disks[i].nbd_uri[0]) {
            snprintf(msg, cap, "disk %s: nbd=%s is for the simulated target; "
                     "the xen target attaches the domain's disks itself: "
                     "refused, nothing created", disks[i].name,
                     disks[i].nbd_uri);
            return INCMIG_EINVAL;
        }
        if (disks[i].lvm_vg[0]) {
            int rc2 = incmig__lvm_check(disks[i].lvm_vg, disks[i].lvm_lv,
                                        msg, cap);
            if (rc2)
                return rc2;
        }
        if (disks[i].size % 512) {
            snprintf(msg, cap, "disk %s: %" PRIu64 " bytes is not a whole "
                     "number of 512-byte sectors, which a Xen disk is: "
                     "refused, nothing created", disks[i].name,
                     disks[i].size);
            return INCMIG_ESIZE;
        }
    }
    *bad_r = -1;
    s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(msg, cap, "out of memory");
        return INCMIG_ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->t.ops = &xen_ops;
    snprintf(s->t.domain, sizeof s->t.domain, "%s", domain);
    s->t.ndisks = ndisks;
    for (int i = 0; i < ndisks; i++) {
        s->t.disks[i] = disks[i];
        incmig__volume_init(&s->vol[i]);
        incmig__nbdkern_init(&s->kern[i]);
    }
    rc = incmig__xen_ctx_open(&s->ctx, &s->lg, msg, cap);
    if (rc) {
        char why[256];
        snprintf(why, sizeof why, "%s", msg);
        snprintf(msg, cap, "the xen target needs %s: refused, nothing "
                 "created", why);
    }
    if (!rc)
        rc = check_host(msg, cap);
    if (rc) {
        xen_close(&s->t);
        return rc;
    }
    *t_r = &s->t;
    return 0;
}
