/* migrate.c: the source side of a migration (incmig_migrate).
 *
 * This file holds the source's state machine (which records each state
 * accepts, and its deadlines) and incmig_migrate, which runs the states
 * in order and applies the failure rules; each phase has a file of its
 * own (migrate-internal.h lists them, with struct mig, their shared data).
 * Entry points: incmig_migrate, incmig_migrate_opts_init/_dispose, and
 * incmig__src_accepts / incmig__src_state_name (the state table, for the
 * tests and the fuzzer).
 *
 * States, in order; "->fail" resumes the guest on the source, because
 * until GO the source is authoritative (ARCHITECTURE.md, failure rules):
 *
 *   CONNECT    transport up, headers + HELLO both ways       ->fail
 *   DISKS      DISK per disk, DISK_ACK per disk; with
 *              INCMIG_CAP_BASE a BASE report per disk, the
 *              DECIDE per disk (base.c) and the destination's
 *              checksums of the CHECKSUM disks                ->fail
 *   PUSH       round 0 (allocated blocks), rounds of dirty
 *              blocks until the convergence policy stops      ->fail
 *   STATE      the domain's own state stream (libxl's memory
 *              pre-copy, for Xen), dirty blocks in between,
 *              until the domain pauses                        ->fail
 *   STOPCOPY   guest suspended; final bitmap (or, for the
 *              pre-copy-only policy, the blocks) then READY;
 *              wait for the destination's READY               ->fail
 *   COMMIT     domain told it will not resume; GO sent.
 *              --- point of no return ---
 *              The state file (owed.c), prepared after DISKS, is
 *              armed with the final bitmaps after our READY.
 *   PULL       background push of the marked blocks; demand
 *              requests answered first; PULL_END; wait for
 *              COMPLETE.  A lost link is re-established and
 *              resumed (RESUME), never abandoned, until
 *              reconnect_s passes; a stop request, or that,
 *              ends this process and keeps the state file and
 *              the source's disk: `migrate --resume` finishes  ->stuck
 *   RELEASE    source disk let go, END sent, state file
 *              removed, report.
 *
 * The owed set in the state file only shrinks when the destination
 * confirms durably, i.e. at COMPLETE (it is sent once the destination's
 * own state file says nothing is owed): a RESUME's bitmap is what the
 * destination lacks in memory, and a crash of it could bring back blocks
 * written but not yet durable there.  incmig_migrate with o->resume starts at PULL with a RESUME
 * on a new connection, from the state file of a migrate that died.
 *
 * Threads: the main thread sends everything.  With --control, a thread
 * answers the control socket (control.c) and changes the link's cap.  During PULL a reader thread
 * takes PULL_REQ, COMPLETE and ERROR records off the stream and queues
 * demand requests, which the main thread serves between background extents.
 */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate-internal.h"

/* ---- the source state machine (spec: "Source states") ------------------ */

/* Which records from the destination each state accepts; anything else is
 * a protocol error ("unexpected X record in state S"), whatever the code
 * reading it expected.  ERROR is accepted everywhere (the migration
 * fails).  REPORT is optional (bit 31), indexed by REC_IDX. */
#define NTYPES (INCMIG_REC_FLOW + 2)
#define REC_IDX(t) ((t) == INCMIG_REC_REPORT ? INCMIG_REC_FLOW + 1 \
                    : (t) <= INCMIG_REC_FLOW ? (t) : NTYPES)
static const bool src_table[INCMIG_SRC_NSTATES][NTYPES] = {
    [INCMIG_SRC_HANDSHAKE] = { [INCMIG_REC_HELLO] = 1,
                               [INCMIG_REC_DISK_ACK] = 1,
                               [INCMIG_REC_BASE] = 1,
                               [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_PUSH] = { [INCMIG_REC_ROUND] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_STATE] = { [INCMIG_REC_FLOW] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_STOPCOPY] = { [INCMIG_REC_ROUND] = 1, [INCMIG_REC_READY] = 1,
                              [INCMIG_REC_FLOW] = 1, [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_PULL] = { [INCMIG_REC_PULL_REQ] = 1,
                          [INCMIG_REC_COMPLETE] = 1,
                          [REC_IDX(INCMIG_REC_REPORT)] = 1,
                          [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_RECONNECT] = { [INCMIG_REC_HELLO] = 1,
                               [INCMIG_REC_BITMAP] = 1,
                               [INCMIG_REC_READY] = 1,
                               [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_DONE] = { [INCMIG_REC_ERROR] = 1 },
    [INCMIG_SRC_FAILED] = { [INCMIG_REC_ERROR] = 1 },
};

const char *incmig__src_state_name(int state)
{
    static const char *names[INCMIG_SRC_NSTATES] = {
        "HANDSHAKE", "PUSH", "STATE", "STOPCOPY", "PULL", "RECONNECT",
        "DONE", "FAILED_RESUME",
    };
    return state >= 0 && state < INCMIG_SRC_NSTATES ? names[state] : "?";
}

int incmig__src_accepts(int state, uint32_t type)
{
    uint32_t i = REC_IDX(type);
    if (state < 0 || state >= INCMIG_SRC_NSTATES || i >= NTYPES ||
        !src_table[state][i])
        return INCMIG_EPROTO;
    return 0;
}

/* Without a cap PUSH is background I/O: its reads go at the IDLE I/O
 * class, so the block layer serves the guest's own requests first (also
 * where the backend reports no I/O to yield to, as on Xen, where the
 * guest's requests are blkback's); a cap, --bandwidth max and PULL go at
 * the normal class.  Main thread (it submits the reads). */
void incmig__mig_background_io(struct mig *m, bool on)
{
    if (m->bg_io == on)
        return;
    m->bg_io = on;
    for (int i = 0; i < m->nd; i++)
        if (m->d[i].snd.q)
            incmig__aioq_set_idle(m->d[i].snd.q, on);
}

/* Deadlines for the state: the handshake must be done within timeout_s;
 * before GO neither side may stall the other for 4 * timeout_s (the
 * destination restores the domain before its READY); in PULL the
 * destination may be quiet for long (no guest reads of missing blocks)
 * while the background push runs, so no silence bound applies there.  A
 * stop request cancels reads before GO, and is noted in PULL, which
 * completes first. */
void incmig__mig_set_state(struct mig *m, int state)
{
    double t = m->o->timeout_s > 0 ? m->o->timeout_s : 30;

    m->sstate = state;
    if (state != INCMIG_SRC_PUSH) {   /* yielding is for PUSH rounds */
        pthread_mutex_lock(&m->lock);
        if (m->yielding && m->st_open)
            incmig__stream_set_bandwidth(&m->st, m->bandwidth);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_lock(&m->lock);
    bool bg = m->background;
    pthread_mutex_unlock(&m->lock);
    incmig__mig_background_io(m, bg && state == INCMIG_SRC_PUSH);
    if (!m->st_open)
        return;
    m->st.deadline = state == INCMIG_SRC_HANDSHAKE ||
                     state == INCMIG_SRC_RECONNECT ? incmig__now() + t : 0;
    m->st.idle_s = state == INCMIG_SRC_PUSH || state == INCMIG_SRC_STATE ||
                   state == INCMIG_SRC_STOPCOPY ? 4 * t : 0;
    m->st.stop_cancels = state < INCMIG_SRC_PULL;
}

/* Every record read from the destination goes through here. */
int incmig__mig_src_check(struct mig *m, const struct incmig__rec *r)
{
    if (incmig__src_accepts(m->sstate, r->type) == 0)
        return 0;
    ERR("unexpected %s record from the receiver in state %s",
        incmig__rec_name(r->type), incmig__src_state_name(m->sstate));
    return INCMIG_EPROTO;
}

int incmig__mig_recv_checked(struct mig *m, struct incmig__rec *r)
{
    int rc = incmig__stream_recv(&m->st, r);
    return rc ? rc : incmig__mig_src_check(m, r);
}

/* After commit: the source copy's generation once released, the one the
 * destination records too.  A failure costs only the next incremental. */
static void adopt(struct mig *m)
{
    for (int i = 0; i < m->nd && m->dom->ops->adopt; i++) {
        uint8_t gen[16];
        if (incmig__gen_zero(m->d[i].base.gen))
            continue;
        incmig__gen_derive(m->mig_id, (uint32_t)i, gen);
        if (m->dom->ops->adopt(m->dom, i, gen))
            ERR("disk %s: the source copy will not record its generation: "
                "the next migration back copies it in full",
                m->dom->disks[i].name);
    }
}

/* ---- the whole migration ---------------------------------------------------- */

static int open_disks(struct mig *m)
{
    for (int i = 0; i < m->nd; i++) {
        struct incmig__dom_disk *dd = &m->dom->disks[i];
        struct mdisk *d = &m->d[i];
        int rc = incmig__disk_open(&d->disk, dd->path, 0, 0);
        if (rc)
            return rc;
        if (d->disk.size != dd->size) {
            ERR("disk %s: image %s is %" PRIu64 " bytes, the domain says %"
                PRIu64, dd->name, dd->path, d->disk.size, dd->size);
            return INCMIG_ESIZE;
        }
        d->bs = dd->block_size;
        d->nblocks = (dd->size + d->bs - 1) / d->bs;
        rc = incmig__bitmap_init(&d->dirty, d->nblocks);
        if (!rc)
            rc = incmig__sender_init(&d->snd, &m->st, &d->disk, (uint32_t)i,
                                     d->bs);
        if (rc)
            return rc;
        struct incmig_disk_report *dr = &m->rep->disks[i];
        snprintf(dr->name, sizeof dr->name, "%s", dd->name);
        dr->size = dd->size;
        dr->block_size = d->bs;
    }
    return 0;
}

void incmig_migrate_opts_init(struct incmig_migrate_opts *o)
{
    memset(o, 0, sizeof *o);
}

void incmig_migrate_opts_dispose(struct incmig_migrate_opts *o)
{
    memset(o, 0, sizeof *o);
}

int incmig_migrate(const struct incmig_migrate_opts *o,
                   struct incmig_report *rep)
{
    struct mig m;
    double t_susp = 0;
    int rc;
    bool suspended = false;

    memset(&m, 0, sizeof m);
    m.state_rfd = -1;
    incmig_report_init(rep);
    m.o = o;
    m.rep = rep;
    m.t0 = incmig__now();
    pthread_mutex_init(&m.lock, NULL);
    pthread_cond_init(&m.cond, NULL);
    incmig__owed_init(&m.owed);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        m.d[i].disk.fd = m.d[i].disk.dfd = -1;
    if (o->resume) {
        rc = incmig__mig_resume_state(&m, o);
        if (rc)
            goto out;
        o = m.o;
    }
    snprintf(rep->policy, sizeof rep->policy, "%s",
             o->policy == INCMIG_POLICY_PRECOPY ? "precopy"
             : o->policy == INCMIG_POLICY_SINGLE ? "single" : "default");
    if (!incmig__host_valid(o->host)) {
        ERR("'%s' is not a valid host name", o->host ? o->host : "");
        rc = INCMIG_EINVAL;
        goto out;
    }
    m.bandwidth = o->bandwidth;
    m.buf = malloc(INCMIG_REC_MAX);
    if (!m.buf)
        return INCMIG_ENOMEM;
    if (o->control_path) {
        rc = incmig__mctl_start(&m.ctl, o->control_path,
                                incmig__mig_set_bandwidth, &m);
        if (rc) {
            ERR("cannot open the control socket %s: nothing started",
                o->control_path);
            free(m.buf);
            return rc;
        }
    }
    if (!o->resume) {
        int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (ufd < 0 || read(ufd, m.mig_id, 16) != 16)
            memcpy(m.mig_id, &m.t0, sizeof m.t0);
        if (ufd >= 0)
            close(ufd);
    }

    struct incmig__domain_args da = {
        .nshared = o->nshared, .shared = o->shared_disks,
        .config_file = o->config_file, .debug = o->debug,
    };
    rc = incmig__domain_open(o->domain, &da, &m.dom);
    if (rc && o->resume && incmig__owed_count(&m.owed) == 0) {
        INFO("the PULL of this migration was complete and its source "
             "released: nothing is left to do");
        incmig__owed_close(&m.owed, true);
        rc = 0;
        goto out;
    }
    if (rc)
        goto out;
    m.nd = m.dom->ndisks;
    rep->ndisks = m.nd;
    incmig__yield_init(&m.y);
    m.background = !o->bandwidth && !o->no_yield;
    m.yielding = m.background && m.dom->ops->activity;
    if (m.background && !m.dom->ops->activity)
        INFO("domain %s: its backend does not report the guest's I/O, so "
             "PUSH has no cap; its reads go at the idle I/O class",
             m.dom->name);
    rc = open_disks(&m);
    if (!rc && o->resume)
        rc = incmig__mig_resume_check(&m);
    if (rc && o->resume)
        goto failed_badly;
    if (rc)
        goto failed_resume;
    if (o->resume) {
        uint64_t owed = incmig__owed_count(&m.owed);
        if (!owed)
            goto release;
        INFO("resuming the PULL of %s to %s from %s: up to %" PRIu64
             " blocks still owed", m.dom->name, o->host, m.owed.path, owed);
        incmig__mig_set_state(&m, INCMIG_SRC_PULL);
        rc = incmig__mig_pull(&m, true);
        if (rc)
            goto failed_badly;
        goto pulled;
    }
    uint64_t w0 = 0;
    rc = incmig__mig_read_lineage(&m);
    if (!rc)
        rc = incmig__mig_open_link(&m, false, false);
    if (!rc)
        rc = incmig__mig_send_disks(&m);
    if (!rc)
        rc = incmig__mig_base_exchange(&m);
    if (!rc)
        rc = incmig__mig_prepare_state(&m);
    incmig__mig_phase_add(&m, &rep->wire.control, w0);
    if (rc)
        goto failed_resume;
    incmig__mig_set_state(&m, INCMIG_SRC_PUSH);

    w0 = incmig__mig_wire_now(&m);
    double tp = incmig__now();
    rc = incmig__mig_push(&m);
    incmig__mig_phase_add(&m, &rep->wire.push, w0);
    rep->push_s = incmig__now() - tp;
    rep->push_yield_backoffs = m.y.backoffs;
    rep->push_yield_probes = m.y.probes;
    if (m.y.backoffs)
        DBG("PUSH yielding: %" PRIu64 " back-offs, %" PRIu64 " for the "
            "guest's latency, the others for its rate", m.y.backoffs,
            m.y.backoffs_lat);
    for (int i = 0; i < m.nd; i++)
        if (m.d[i].snd.q)
            rep->push_idle_reads += incmig__aioq_idle_reqs(m.d[i].snd.q);
    for (int i = 0; i < m.nd; i++) {
        rep->disks[i].pushed_blocks = m.d[i].snd.blocks;
        rep->disks[i].zero_blocks = m.d[i].snd.zero_blocks;
    }
    if (rc)
        goto failed_resume;

    /* The domain's state pre-copy (libxl's memory, for Xen), PUSH of what
     * the guest keeps writing in between, then the pause. */
    suspended = true;
    w0 = incmig__mig_wire_now(&m);
    incmig__mig_set_state(&m, INCMIG_SRC_STATE);
    rc = incmig__mig_state_precopy(&m, &t_susp);
    for (int i = 0; i < m.nd; i++)
        rep->disks[i].pushed_blocks = m.d[i].snd.blocks;
    if (rc)
        goto failed_resume;
    incmig__mig_set_state(&m, INCMIG_SRC_STOPCOPY);
    rc = incmig__mig_stop_and_copy(&m, t_susp);
    if (!rc && incmig__stop_requested) {
        ERR("stopped before the point of no return");
        rc = INCMIG_ECANCEL;
    }
    if (rc)
        goto failed_resume;
    rc = m.dom->ops->commit(m.dom);
    if (rc)
        goto failed_resume;
    /* --- point of no return --- the guest will run on the destination. */
    rc = incmig__stream_send(&m.st, INCMIG_REC_GO, NULL, 0);
    rep->go_ms = (incmig__now() - t_susp) * 1000;
    rep->downtime_ms = rep->go_ms;
    if (rc) {
        ERR("sending GO failed: the guest is paused on the source and "
            "committed to the destination, which may not run it; check the "
            "destination before doing anything else");
        goto failed_badly;
    }
    INFO("GO: guest runs on the destination (GO sent %.1f ms after the "
         "pause)", rep->go_ms);
    /* Out of the downtime: the state file marked in it narrowed and made
     * durable (a killed process already finds it in the page cache), the
     * source copy's new generation recorded. */
    incmig__mig_narrow_state(&m);
    if (incmig__owed_settle(&m.owed))
        ERR("the state file %s could not be made durable: PULL goes on, "
            "but if this host goes down before it completes, `migrate "
            "--resume` may refuse the file", m.owed.path);
    adopt(&m);

    double tpull = incmig__now();
    w0 = incmig__mig_wire_now(&m);
    incmig__mig_set_state(&m, INCMIG_SRC_PULL);
    rc = incmig__mig_pull(&m, false);
    rep->pull_s = incmig__now() - tpull;
    if (rc)
        goto failed_badly;
pulled:
    incmig__mig_set_state(&m, INCMIG_SRC_DONE);
    if (incmig__mig_state_complete(&m))
        ERR("the state file %s could not be marked complete", m.owed.path);
release:
    rc = m.dom->ops->release(m.dom);
    if (rc)
        ERR("the source disk could not be released (migration itself is "
            "complete)");
    if (m.st_open) {
        uint64_t w1 = incmig__mig_wire_now(&m);
        incmig__stream_send(&m.st, INCMIG_REC_END, NULL, 0);
        incmig__mig_phase_add(&m, &rep->wire.control, w1);
    }
    incmig__owed_close(&m.owed, true);
    goto out;

failed_resume:
    incmig__owed_close(&m.owed, true);
    if (rc == INCMIG_ELINK && m.st_open)
        rc = incmig__mig_peer_reason(&m, rc);
    incmig__mig_set_state(&m, INCMIG_SRC_FAILED);
    {
        char msg[128];
        snprintf(msg, sizeof msg, "source aborted the migration: %s",
                 incmig_strerror(rc));
        incmig__mig_send_error(&m, rc, msg);
    }
    if (m.dom && suspended) {
        if (m.dom->ops->resume(m.dom) == 0)
            INFO("migration failed before the point of no return: the guest "
                 "runs on the source, its disks untouched");
        else
            ERR("migration failed and the guest could not be resumed on the "
                "source");
    } else if (m.dom) {
        INFO("migration failed before the point of no return: the guest "
             "kept running on the source, its disks untouched");
    }
    goto out;
failed_badly:
    if (rc == INCMIG_ECANCEL)
        ERR("stopped during PULL");
    else
        ERR("migration failed after the point of no return: %s",
            incmig_strerror(rc));
    incmig__mig_say_resume(&m);
out:
    incmig__mig_stop_reader(&m);
    incmig__mctl_stop(m.ctl);
    rep->total_s = incmig__now() - m.t0;
    if (m.st_open) {
        rep->wire_total = m.st.bytes_out + m.st.bytes_in;
    }
    for (int i = 0; i < m.nd; i++) {
        struct incmig_disk_report *dr = &rep->disks[i];
        dr->wire.push = m.d[i].snd.wire[INCMIG_PHASE_PUSH];
        dr->wire.stopcopy += m.d[i].snd.wire[INCMIG_PHASE_STOPCOPY];
        dr->wire.pull_demand = m.d[i].snd.wire[INCMIG_PHASE_PULL_DEMAND];
        dr->wire.pull_background = m.d[i].snd.wire[INCMIG_PHASE_PULL_BACKGROUND];
        rep->compressed_in += m.d[i].snd.comp.in_bytes;
        rep->compressed_out += m.d[i].snd.comp.out_bytes;
        incmig__sender_dispose(&m.d[i].snd);
        incmig__bitmap_dispose(&m.d[i].dirty);
        incmig__bitmap_dispose(&m.d[i].base.mine);
        incmig__bitmap_dispose(&m.d[i].base.send);
        incmig__disk_close(&m.d[i].disk);
    }
    incmig__mig_close_link(&m);
    if (m.dom)
        m.dom->ops->close(m.dom);
    incmig__owed_close(&m.owed, false);
    free(m.ro_text);
    free(m.buf);
    pthread_mutex_destroy(&m.lock);
    pthread_cond_destroy(&m.cond);
    return rc;
}
