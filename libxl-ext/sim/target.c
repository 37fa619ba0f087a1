/* sim/target.c: the simulated target, the destination's backend for a
 * simulated domain (the counterpart of sim/domain.c).
 *
 * Entry point: incmig__sim_target_open, an entry of the table of targets
 * (volume.c); everything else is reached through its ops (incmig-internal.h,
 * "target backend").
 *
 *   op          what the simulated target does
 *   open        every disk needs an NBD URI (--disk NAME=PATH,nbd=URI)
 *   prepare(i)  creates disk i's volume file (incmig__volume_create)
 *   reopen(i)   opens it again (a receiver restarted after GO)
 *   stage(i)    binds the NBD export of disk i's gate on its URI and
 *               starts its threads held (incmig__nbd_hold): the guest
 *               connects and shakes hands before GO, its requests wait
 *   restore     incmig__simstate_restore: reads the state stream to EOF
 *               and proves it intact
 *   unpause     releases every export's held requests (a flag flip: the
 *               guest's connection and the workers are already there)
 *   disk_done   flushes the volume (the guest keeps using the export:
 *               this process stays its disk); the copy is now of the
 *               migration's generation: its lineage is written OPEN
 *               (lineage.c), the writes tracked since unpause on top
 *   in_use      NBD clients connected, all disks
 *   stop        frees the exports (their sockets go)
 *   abort       removes the volumes this migration created
 *   close       closes the volumes; a complete disk's lineage is saved
 *               with the bitmap of every guest write since GO
 *
 * Tracking: the guest's NBD requests pass through track_ops, which mark
 * each write, trim and zero in a per-disk in-process tracker before the
 * gate executes it.
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

/* NBD workers per export: requests for missing blocks hold a worker while
 * they wait, and those for present blocks must still find one free (as
 * many as one client may have in flight). */
#define GATE_WORKERS 64

struct tracked {              /* one disk's export: gate + tracker */
    struct incmig__gate *gate;
    struct incmig__memtracker mt;  /* guest writes since unpause */
    bool complete;                 /* disk_done: the lineage is ours */
};

struct sim_target {
    struct incmig__target t;
    struct incmig__volume vol[INCMIG_MAX_DISKS];
    struct incmig__nbd_server *nbd[INCMIG_MAX_DISKS];
    struct tracked tr[INCMIG_MAX_DISKS];
    struct incmig__simstate_info info;
};

static int tr_pread(void *opaque, void *buf, uint32_t count, uint64_t off)
{
    struct tracked *k = opaque;
    return incmig__gate_nbd_ops.pread(k->gate, buf, count, off);
}

static int tr_pwrite(void *opaque, const void *buf, uint32_t count,
                     uint64_t off, bool fua)
{
    struct tracked *k = opaque;
    incmig__memtracker_mark(&k->mt, off, count);
    return incmig__gate_nbd_ops.pwrite(k->gate, buf, count, off, fua);
}

static int tr_flush(void *opaque)
{
    struct tracked *k = opaque;
    return incmig__gate_nbd_ops.flush(k->gate);
}

static int tr_trim(void *opaque, uint32_t count, uint64_t off, bool fua)
{
    struct tracked *k = opaque;
    incmig__memtracker_mark(&k->mt, off, count);
    return incmig__gate_nbd_ops.trim(k->gate, count, off, fua);
}

static int tr_zero(void *opaque, uint32_t count, uint64_t off, bool may_trim,
                   bool fua)
{
    struct tracked *k = opaque;
    incmig__memtracker_mark(&k->mt, off, count);
    return incmig__gate_nbd_ops.zero(k->gate, count, off, may_trim, fua);
}

static const struct incmig__nbd_ops track_ops = {
    .pread = tr_pread,
    .pwrite = tr_pwrite,
    .flush = tr_flush,
    .trim = tr_trim,
    .zero = tr_zero,
};

static struct sim_target *sim(struct incmig__target *t)
{
    return (struct sim_target *)t;
}

static int sim_prepare(struct incmig__target *t, int i,
                       struct incmig__disk **disk_r)
{
    return incmig__target_prepare_volume(t, i, &sim(t)->vol[i], disk_r);
}

static int sim_reopen(struct incmig__target *t, int i,
                      struct incmig__disk **disk_r)
{
    return incmig__target_reopen_volume(t, i, &sim(t)->vol[i], disk_r);
}

static int sim_stage(struct incmig__target *t, int i, struct incmig__gate *g)
{
    struct sim_target *s = sim(t);
    const struct incmig__target_disk *td = &t->disks[i];
    int rc;

    s->tr[i].gate = g;
    rc = incmig__memtracker_init(&s->tr[i].mt, td->size, td->block_size);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot set up its write "
                                   "tracker", td->name);
    rc = incmig__nbd_new(&s->nbd[i], td->nbd_uri, td->size, &track_ops,
                         &s->tr[i], GATE_WORKERS);
    if (!rc)
        rc = incmig__nbd_hold(s->nbd[i]);
    if (rc)
        return incmig__target_fail(t, rc, "cannot stage the destination "
                                   "export of disk %s on %s: %s", td->name,
                                   td->nbd_uri, incmig_strerror(rc));
    return 0;
}

static int sim_restore(struct incmig__target *t, int fd)
{
    struct sim_target *s = sim(t);
    int rc;

    rc = incmig__simstate_restore(fd, &s->info);
    if (rc)
        return incmig__target_fail(t, rc, "the state of domain %s is not "
                                   "intact (%s): not restored", t->domain,
                                   incmig_strerror(rc));
    DBG("domain %s: state restored, %" PRIu64 " bytes, %" PRIu64 " pages",
        t->domain, s->info.bytes, s->info.pages);
    return 0;
}

static int sim_unpause(struct incmig__target *t)
{
    struct sim_target *s = sim(t);
    int rc;

    for (int i = 0; i < t->ndisks; i++) {
        rc = incmig__nbd_start(s->nbd[i]);
        if (rc)
            return incmig__target_fail(t, rc, "cannot serve disk %s on %s",
                                       t->disks[i].name,
                                       t->disks[i].nbd_uri);
    }
    return 0;
}

static int sim_disk_done(struct incmig__target *t, int i)
{
    struct sim_target *s = sim(t);
    int rc = incmig__disk_flush(&s->vol[i].disk);

    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot flush %s",
                                   t->disks[i].name, t->disks[i].path);
    if (!incmig__lineage_open(t->disks[i].path, s->vol[i].disk.fd,
                              t->disks[i].gen_next, t->disks[i].block_size))
        s->tr[i].complete = true;
    return 0;
}

static int sim_in_use(struct incmig__target *t)
{
    struct sim_target *s = sim(t);
    int n = 0;

    for (int i = 0; i < t->ndisks; i++)
        if (s->nbd[i])
            n += incmig__nbd_clients(s->nbd[i]);
    return n;
}

static void sim_stop(struct incmig__target *t)
{
    struct sim_target *s = sim(t);

    for (int i = 0; i < t->ndisks; i++) {
        if (s->nbd[i])
            incmig__nbd_free(s->nbd[i]);
        s->nbd[i] = NULL;
    }
}

static void sim_abort(struct incmig__target *t)
{
    struct sim_target *s = sim(t);

    sim_stop(t);
    for (int i = 0; i < t->ndisks; i++)
        incmig__volume_close(&s->vol[i], true);   /* never a reused one */
}

/* The exports are gone (stop): nothing writes any more.  A complete disk
 * records its generation with every write since GO. */
static void save_lineage(struct sim_target *s, int i)
{
    struct tracked *k = &s->tr[i];
    const struct incmig__target_disk *td = &s->t.disks[i];
    struct incmig__bitmap bm = {0};
    char g[33];

    if (!k->complete || s->vol[i].disk.fd < 0)
        return;
    if (incmig__bitmap_init(&bm, k->mt.t.nblocks) ||
        k->mt.t.ops->get_and_clear(&k->mt.t, &bm) ||
        incmig__lineage_close(td->path, s->vol[i].disk.fd, td->gen_next,
                              td->block_size, &bm))
        ERR("disk %s: the lineage of %s could not be saved: its claim stays "
            "void", td->name, td->path);
    else
        INFO("disk %s: %s saved as generation %s, %" PRIu64 " block(s) "
             "written since", td->name, td->path,
             incmig__gen_hex(td->gen_next, g), incmig__bitmap_count(&bm));
    incmig__bitmap_dispose(&bm);
}

static void sim_close(struct incmig__target *t)
{
    struct sim_target *s = sim(t);

    if (!t)
        return;
    sim_stop(t);
    for (int i = 0; i < t->ndisks; i++) {
        save_lineage(s, i);
        incmig__volume_close(&s->vol[i], false);
        if (s->tr[i].mt.t.ops)
            s->tr[i].mt.t.ops->dispose(&s->tr[i].mt.t);
    }
    free(s);
}

static const struct incmig__target_ops sim_ops = {
    .prepare = sim_prepare,
    .stage = sim_stage,
    .restore = sim_restore,
    .unpause = sim_unpause,
    .reopen = sim_reopen,
    .disk_done = sim_disk_done,
    .in_use = sim_in_use,
    .stop = sim_stop,
    .abort = sim_abort,
    .close = sim_close,
};

int incmig__sim_target_open(struct incmig__target **t_r, const char *domain,
                            int ndisks, const struct incmig__target_disk *disks,
                            int *bad_r, char *msg, size_t cap)
{
    struct sim_target *s;

    *t_r = NULL;
    *bad_r = 0;
    if (ndisks < 1 || ndisks > (int)INCMIG_MAX_DISKS) {
        snprintf(msg, cap, "domain %s: %d disks", domain, ndisks);
        return INCMIG_EINVAL;
    }
    for (int i = 0; i < ndisks; i++) {
        *bad_r = i;
        if (disks[i].lvm_vg[0]) {
            snprintf(msg, cap, "disk %s: %s is a logical volume, which only "
                     "the xen target creates: refused, nothing created",
                     disks[i].name, disks[i].path);
            return INCMIG_EINVAL;
        }
        if (!disks[i].nbd_uri[0]) {
            snprintf(msg, cap, "disk %s: the simulated target serves each "
                     "disk over NBD and this one has no address (--disk "
                     "%s=PATH,nbd=URI): refused, nothing created",
                     disks[i].name, disks[i].name);
            return INCMIG_EINVAL;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(disks[j].nbd_uri, disks[i].nbd_uri)) {
                snprintf(msg, cap, "disks %s and %s are both mapped to the "
                         "NBD address %s", disks[j].name, disks[i].name,
                         disks[i].nbd_uri);
                return INCMIG_EINVAL;
            }
    }
    *bad_r = -1;
    s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(msg, cap, "out of memory");
        return INCMIG_ENOMEM;
    }
    s->t.ops = &sim_ops;
    snprintf(s->t.domain, sizeof s->t.domain, "%s", domain);
    s->t.ndisks = ndisks;
    for (int i = 0; i < ndisks; i++) {
        s->t.disks[i] = disks[i];
        incmig__volume_init(&s->vol[i]);
    }
    *t_r = &s->t;
    return 0;
}
