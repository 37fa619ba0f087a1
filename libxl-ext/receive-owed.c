/* receive-owed.c: the receiver's state file (owed.c), from which a
 * receiver restarted after GO finishes PULL (spec "Crash-safe PULL:
 * state files and resuming").
 *
 * Entry points:
 *   incmig__recv_prepare_state  once the disks are staged: every block
 *                               owed, and the migration described as
 *                               keys (domain, target, options, disks)
 *   incmig__recv_arm_state      before READY: the stop-and-copy bitmaps
 *   incmig__recv_say_resume     a stop or a lost source after GO: what
 *                               is owed, and the command that finishes
 *   incmig__recv_resume_state   --resume: the receiver rebuilt from the
 *                               file, its disks served again
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receive-internal.h"

/* The state file (owed.c) of this migration: what a receiver restarted
 * after GO (--resume) needs to serve the domain's disks again and finish
 * PULL.  Prepared with every block owed once the disks are staged, armed
 * with the stop-and-copy bitmaps before READY (arm_state). */
int incmig__recv_prepare_state(struct recv *r)
{
    const struct incmig_receive_opts *o = r->o;
    char k[32];
    uint64_t nb[INCMIG_MAX_DISKS];
    struct incmig__kv *kv = calloc(1, sizeof *kv);
    int rc;

    double t0 = incmig__now();

    if (!kv)
        return INCMIG_ENOMEM;
#define KV(...) incmig__kv_add(kv, __VA_ARGS__)
    KV("domain", "%s", r->domain);
    KV("target", "%s", r->kind->name);
    KV("caps", "%" PRIu64, r->caps);
    KV("listen", "%s", o->listen ? o->listen : "");
    KV("rendezvous", "%s", !o->listen && o->rendezvous ? o->rendezvous : "");
    KV("exit_when_done", "%d", o->exit_when_done);
    KV("reconnect", "%d", o->reconnect_s);
    KV("timeout", "%d", o->timeout_s);
    KV("disks", "%d", r->nd);
    for (int i = 0; i < r->nd; i++) {
        const struct incmig__target_disk *td = &r->t->disks[i];
        snprintf(k, sizeof k, "disk%d.name", i);
        KV(k, "%s", td->name);
        snprintf(k, sizeof k, "disk%d.size", i);
        KV(k, "%" PRIu64, td->size);
        snprintf(k, sizeof k, "disk%d.bs", i);
        KV(k, "%u", td->block_size);
        snprintf(k, sizeof k, "disk%d.path", i);
        KV(k, "%s", td->path);
        snprintf(k, sizeof k, "disk%d.nbd", i);
        KV(k, "%s", td->nbd_uri);
    }
#undef KV
    for (int i = 0; i < r->nd; i++)
        nb[i] = r->d[i].nblocks;
    rc = incmig__owed_start(&r->owed, o->state_dir, "receive", r->mig_id,
                            r->nd, nb, kv);
    free(kv);
    if (rc)
        return incmig__recv_send_error(r, rc, "domain %s: cannot write the "
                                       "state file %s that PULL needs to "
                                       "survive a crash: refused", r->domain,
                                       r->owed.path);
    DBG("state file %s prepared in %.1f ms", r->owed.path,
        (incmig__now() - t0) * 1000);
    return 0;
}

/* In the downtime, before READY: the owed set is the stop-and-copy
 * bitmaps, durably; from here on the gates keep it in step. */
int incmig__recv_arm_state(struct recv *r)
{
    struct incmig__bitmap sets[INCMIG_MAX_DISKS];
    double t0 = incmig__now();
    int rc;

    for (int i = 0; i < r->nd; i++)
        sets[i] = r->d[i].final;
    rc = incmig__owed_arm(&r->owed, sets, false);   /* marked at GO */
    if (rc)
        return incmig__recv_send_error(r, rc, "domain %s: cannot update the "
                                       "state file %s: refused before GO",
                                       r->domain, r->owed.path);
    for (int i = 0; i < r->nd; i++) {
        r->owed.vol[i] = r->d[i].disk;
        incmig__gate_set_owed(r->d[i].gate, &r->owed);
    }
    DBG("state file armed in %.1f ms (in the downtime; made durable "
        "after GO)", (incmig__now() - t0) * 1000);
    return 0;
}

/* What a stop or a lost source leaves: what is owed, and how to finish. */
void incmig__recv_say_resume(struct recv *r)
{
    if (!incmig__owed_active(&r->owed))
        return;
    incmig__owed_sync(&r->owed);
    ERR("domain %s: %" PRIu64 " blocks are still owed by the source; they "
        "are kept in %s.  Restart this receiver with: xl-incmig "
        "migrate-receive --resume %s (the source finishes with `xl-incmig "
        "migrate --resume` if its migrate is gone too)", r->domain,
        incmig__owed_count(&r->owed), r->owed.path, r->owed.path);
}

/* ---- restarting on the state file ------------------------------------------ */

static int kv_num(struct recv *r, const char *text, const char *key,
                  uint64_t max, uint64_t *v_r)
{
    return incmig__kv_num(r->owed.path, text, key, max, v_r);
}

/* migrate-receive --resume: this receiver died after GO; its state file
 * says what it served and what is still owed.  The volumes are opened
 * again (never created), the gates armed with the owed set, the domain's
 * disks served again, and the receiver waits for the source (WAIT_LINK),
 * on the --listen address or --rendezvous socket it had. */
int incmig__recv_resume_state(struct recv *r)
{
    struct incmig__target_disk td[INCMIG_MAX_DISKS];
    char k[32], *text = NULL, msg[INCMIG_MSG_MAX] = "";
    uint64_t n, caps;
    int rc, bad = -1;

    memset(td, 0, sizeof td);
    rc = incmig__owed_resume(&r->owed, r->o->state_dir, "receive",
                             r->o->resume, r->mig_id, &text);
    if (rc)
        goto out;
    rc = INCMIG_EINVAL;
    if (incmig__kv_get(text, "domain", r->domain, sizeof r->domain) ||
        incmig__kv_get(text, "target", r->ro_target, sizeof r->ro_target) ||
        incmig__kv_get(text, "listen", r->ro_listen, sizeof r->ro_listen) ||
        incmig__kv_get(text, "rendezvous", r->ro_rv, sizeof r->ro_rv) ||
        kv_num(r, text, "caps", UINT64_MAX, &caps) ||
        kv_num(r, text, "exit_when_done", 1, &n))
        goto bad;
    r->caps = caps;
    r->ro.exit_when_done = (int)n;
    r->ro.target = r->ro_target;
    r->ro.listen = r->ro_listen[0] ? r->ro_listen : NULL;
    r->ro.rendezvous = r->ro_rv[0] ? r->ro_rv : NULL;
    if (!r->ro.reconnect_s && !kv_num(r, text, "reconnect", INT32_MAX, &n))
        r->ro.reconnect_s = (int)n;
    if (!r->ro.timeout_s && !kv_num(r, text, "timeout", INT32_MAX, &n))
        r->ro.timeout_s = (int)n;
    if (kv_num(r, text, "disks", (uint64_t)r->owed.nd, &n) ||
        (int)n != r->owed.nd)
        goto bad;
    r->nd = r->nrecs = (int)n;
    for (int i = 0; i < r->nd; i++) {
        uint64_t size, bs;
        snprintf(k, sizeof k, "disk%d.size", i);
        if (kv_num(r, text, k, INCMIG_DISK_MAX, &size))
            goto bad;
        snprintf(k, sizeof k, "disk%d.bs", i);
        if (kv_num(r, text, k, INCMIG_BS_MAX, &bs) ||
            !incmig__block_size_valid(bs) ||
            (size + bs - 1) / bs != r->owed.nblocks[i])
            goto bad;
        td[i].size = r->recs[i].size = size;
        td[i].block_size = r->recs[i].block_size = (uint32_t)bs;
        r->recs[i].index = (uint32_t)i;
        snprintf(k, sizeof k, "disk%d.name", i);
        if (incmig__kv_get(text, k, td[i].name, sizeof td[i].name))
            goto bad;
        snprintf(r->recs[i].name, sizeof r->recs[i].name, "%s", td[i].name);
        snprintf(k, sizeof k, "disk%d.path", i);
        if (incmig__kv_get(text, k, td[i].path, sizeof td[i].path))
            goto bad;
        snprintf(k, sizeof k, "disk%d.nbd", i);
        if (incmig__kv_get(text, k, td[i].nbd_uri, sizeof td[i].nbd_uri))
            goto bad;
    }
    r->kind = incmig__target_find(r->ro.target);
    if (!r->kind)
        goto out;
    rc = r->kind->open(&r->t, r->domain, r->nd, td, &bad, msg, sizeof msg);
    if (rc) {
        ERR("%s", msg);
        goto out;
    }
    if (!r->t->ops->reopen) {
        ERR("the %s target cannot restart a PULL after a crash yet",
            r->kind->name);
        rc = INCMIG_ENOTSUP;
        goto out;
    }
    for (int i = 0; i < r->nd && !rc; i++) {
        struct rdisk *d = &r->d[i];
        d->bs = td[i].block_size;
        d->nblocks = r->owed.nblocks[i];
        d->bm_next = d->nblocks;
        rc = r->t->ops->reopen(r->t, i, &d->disk);
        if (!rc)
            rc = incmig__bitmap_init(&d->final, d->nblocks);
        if (!rc)
            rc = incmig__owed_get(&r->owed, i, &d->final);
        if (!rc)
            rc = incmig__gate_new(&d->gate, d->disk, (uint32_t)i, d->bs,
                                  incmig__recv_request_blocks, r);
        if (!rc)
            rc = incmig__gate_mark_missing(d->gate, &d->final);
        if (!rc) {
            r->owed.vol[i] = d->disk;
            incmig__gate_set_owed(d->gate, &r->owed);
            rc = r->t->ops->stage(r->t, i, d->gate);
        }
    }
    if (!rc)
        rc = r->t->ops->unpause(r->t);
    if (rc)
        goto out;
    if (r->ro.listen)
        rc = incmig__tcp_listen(r->ro.listen, &r->lfd);
    else if (r->ro.rendezvous) {
        rc = incmig_rendezvous_path(r->ro.rendezvous, r->rv_path,
                                    sizeof r->rv_path);
        if (!rc)
            rc = incmig__unix_listen(r->rv_path, &r->lfd);
    }
    if (rc)
        goto out;
    r->t_go = incmig__now();
    r->state = INCMIG_DST_PULL;
    INFO("domain %s: restarted on %s, %" PRIu64 " blocks still owed by the "
         "source; its disks are served again", r->domain, r->owed.path,
         incmig__owed_count(&r->owed));
    goto out;
bad:
    ERR("state file %s: missing or malformed fields", r->owed.path);
    rc = INCMIG_EINVAL;
out:
    free(text);
    return rc;
}
