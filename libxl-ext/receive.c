/* receive.c: the destination side of a migration (incmig_receive).
 *
 * The destination state machine of docs/specs/incmig-stream.md
 * ("Destination states"), written as one table, dst_table below: for each
 * state, the source records it takes, the handler of each and the state
 * it leads to.  Every record goes through dispatch(), which refuses (ERROR
 * to the source, then failure) any record the current state does not
 * take; incmig__dst_transition() exposes the table to the unit test.
 *
 *   state       record          handler       next
 *   HELLO       HELLO           on_hello      DISKS
 *   DISKS       DISK            on_disk       DISKS, BASE after the last
 *                                             disk (all validated, then
 *                                             created or reused, then
 *                                             acked, then BASE reports);
 *                                             without CAP_BASE the BASE
 *                                             state is passed: RECEIVING
 *   BASE        DECIDE          on_decide     BASE, RECEIVING after the
 *                                             last (checksums sent)
 *   RECEIVING   BLOCKS(PUSH)    on_blocks     RECEIVING
 *               ROUND           on_round      RECEIVING
 *               XEN_STREAM      on_state      RECEIVING (CAP_STATE only)
 *               SUSPEND         on_suspend    PAUSED (after the state
 *                                             stream's end, with CAP_STATE)
 *   PAUSED      BLOCKS(STOPCOPY) on_blocks    PAUSED
 *               ROUND           on_round      PAUSED
 *               BITMAP(STOPCOPY) on_bitmap    PAUSED (chunks in order)
 *               READY           on_ready      READY (every bitmap whole,
 *                                             restore succeeded; READY out)
 *   READY       GO              on_go         PULL (the domain runs here)
 *   PULL        BLOCKS(PULL_*)  on_blocks     PULL
 *               PULL_END        on_pull_end   PULL
 *               END             on_end        DONE (after COMPLETE only)
 *   WAIT_LINK   HELLO           on_hello      RESUMING (new connection)
 *   RESUMING    RESUME          on_resume     PULL
 *   (--resume: resume_state, then WAIT_LINK)
 *   any         ERROR           on_error      (failure)
 *
 * What is done where: the target backend (incmig-internal.h, "target
 * backend") creates the volumes, stages the PULL path, restores the
 * domain from the state stream, unpauses it at GO; the receiver writes the
 * PUSH blocks (libaio), arms the gates with the stop-and-copy bitmaps,
 * feeds the state stream (XEN_STREAM records) to the target's restore on
 * a thread through a pipe, and runs PULL through the gates.
 *
 * Failure rules: before GO any failure removes what this migration
 * created (target abort) and the receiver fails: the source still owns
 * the guest.  After GO the data is split between the hosts: a lost link
 * stalls the guest's reads of missing blocks and, with --listen or
 * --rendezvous, the receiver accepts the source's reconnection
 * (WAIT_LINK, RESUMING) and tells it what is still missing.  A stop
 * request (incmig_stop: the library installs no signal handler) fails the
 * migration before GO; from GO on it ends the receiver with what is owed
 * kept in the state file (owed.c, written before READY, marked at GO) and
 * the command that finishes said (say_resume).  A receiver restarted on
 * its state file (--resume: resume_state, RESTARTED in the spec) reopens
 * the volumes, serves the disks again and waits in WAIT_LINK.  After
 * COMPLETE a source that missed it may come back (late_source).
 *
 * Entry points: incmig_receive, incmig_receive_opts_init/_dispose;
 * incmig__dst_transition and incmig__dst_state_name.  The receiver's
 * files (receive-internal.h: struct recv, and what crosses files):
 *   receive.c            this table, dispatch(), the ERROR helpers, and
 *                        incmig_receive: the main loop, the failure
 *                        paths, serving the domain after DONE
 *   receive-link.c       the stream and its deadlines, accept_source,
 *                        relink, late_source
 *   receive-handshake.c  HELLO, DISK, DECIDE
 *   receive-data.c       before GO: BLOCKS, ROUND, XEN_STREAM (and the
 *                        restore thread), SUSPEND, BITMAP, READY
 *   receive-pull.c       GO, PULL's requests, COMPLETE and REPORT,
 *                        PULL_END, END, RESUME
 *   receive-owed.c       the state file: prepared, armed, --resume
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "receive-internal.h"

/* ERROR to the source (once: then say nothing more), not logged again. */
int incmig__recv_send_msg(struct recv *r, int code, const char *msg)
{
    struct incmig__error_rec e = { .code = code };
    uint8_t buf[INCMIG_MSG_MAX + 64];

    if (r->error_sent)
        return code;
    r->error_sent = true;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    int len = incmig__enc_error(&e, buf);
    if (r->st_open && len >= 0)
        incmig__stream_send(&r->st, INCMIG_REC_ERROR, buf, (uint32_t)len);
    return code;
}

/* Log a failure and send it to the source. */
int incmig__recv_send_error(struct recv *r, int code, const char *fmt, ...)
{
    char msg[INCMIG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ERR("%s", msg);
    return incmig__recv_send_msg(r, code, msg);
}

static int on_error(struct recv *r, const struct incmig__rec *rec)
{
    struct incmig__error_rec e;

    r->error_sent = true;      /* the source is going away: no answer */
    if (!incmig__dec_error(rec, &e))
        ERR("the source reports: %s", e.msg);
    return INCMIG_EPEER;
}

/* ---- the table ------------------------------------------------------------ */

typedef int (*dst_handler)(struct recv *r, const struct incmig__rec *rec);
struct dst_edge {
    dst_handler fn;            /* NULL: the record is refused in this state */
    int next;
};
#define NTYPES (INCMIG_REC_DECIDE + 1)
#define TO(h, st) { h, INCMIG_DST_##st }
#define ERROR_IN(st) [INCMIG_REC_ERROR] = TO(on_error, st)

static const struct dst_edge dst_table[INCMIG_DST_NSTATES][NTYPES] = {
    [INCMIG_DST_HELLO] = {
        [INCMIG_REC_HELLO] = TO(incmig__recv_on_hello, DISKS),
        ERROR_IN(HELLO),
    },
    [INCMIG_DST_DISKS] = {
        [INCMIG_REC_DISK] = TO(incmig__recv_on_disk, BASE),
        ERROR_IN(DISKS),
    },
    [INCMIG_DST_BASE] = {
        [INCMIG_REC_DECIDE] = TO(incmig__recv_on_decide, RECEIVING),
        ERROR_IN(BASE),
    },
    [INCMIG_DST_RECEIVING] = {
        [INCMIG_REC_BLOCKS] = TO(incmig__recv_on_blocks, RECEIVING),
        [INCMIG_REC_ROUND] = TO(incmig__recv_on_round, RECEIVING),
        [INCMIG_REC_XEN_STREAM] = TO(incmig__recv_on_state, RECEIVING),
        [INCMIG_REC_SUSPEND] = TO(incmig__recv_on_suspend, PAUSED),
        ERROR_IN(RECEIVING),
    },
    [INCMIG_DST_PAUSED] = {
        [INCMIG_REC_BLOCKS] = TO(incmig__recv_on_blocks, PAUSED),
        [INCMIG_REC_ROUND] = TO(incmig__recv_on_round, PAUSED),
        [INCMIG_REC_BITMAP] = TO(incmig__recv_on_bitmap, PAUSED),
        [INCMIG_REC_READY] = TO(incmig__recv_on_ready, READY),
        ERROR_IN(PAUSED),
    },
    [INCMIG_DST_READY] = {
        [INCMIG_REC_GO] = TO(incmig__recv_on_go, PULL),
        ERROR_IN(READY),
    },
    [INCMIG_DST_PULL] = {
        [INCMIG_REC_BLOCKS] = TO(incmig__recv_on_blocks, PULL),
        [INCMIG_REC_PULL_END] = TO(incmig__recv_on_pull_end, PULL),
        [INCMIG_REC_END] = TO(incmig__recv_on_end, DONE),
        ERROR_IN(PULL),
    },
    [INCMIG_DST_DONE] = {
        ERROR_IN(DONE),
    },
    [INCMIG_DST_WAIT_LINK] = {
        [INCMIG_REC_HELLO] = TO(incmig__recv_on_hello, RESUMING),
        ERROR_IN(WAIT_LINK),
    },
    [INCMIG_DST_RESUMING] = {
        [INCMIG_REC_RESUME] = TO(incmig__recv_on_resume, PULL),
        ERROR_IN(RESUMING),
    },
};

const char *incmig__dst_state_name(int state)
{
    static const char *names[INCMIG_DST_NSTATES] = {
        "HELLO", "DISKS", "BASE", "RECEIVING", "PAUSED", "READY", "PULL",
        "DONE", "WAIT_LINK", "RESUMING",
    };
    return state >= 0 && state < INCMIG_DST_NSTATES ? names[state] : "?";
}

int incmig__dst_transition(int state, uint32_t type, int *next_r)
{
    if (state < 0 || state >= INCMIG_DST_NSTATES || type >= NTYPES ||
        !dst_table[state][type].fn)
        return INCMIG_EPROTO;
    *next_r = dst_table[state][type].next;
    return 0;
}

/* While the state stream runs, with INCMIG_CAP_FLOW: what we acted on,
 * every 64 KiB and at its end (spec: FLOW). */
#define FLOW_EVERY (64u << 10)
static int send_flow(struct recv *r)
{
    uint8_t buf[8];

    if (!(r->caps & INCMIG_CAP_FLOW) || r->state != INCMIG_DST_RECEIVING ||
        r->flow_done || (!r->state_bytes && !r->state_ended))
        return 0;
    if (!r->state_ended && r->st.bytes_in - r->flow_sent < FLOW_EVERY)
        return 0;
    r->flow_done = r->state_ended;
    r->flow_sent = r->st.bytes_in;
    int len = incmig__enc_flow(r->flow_sent, buf);
    return incmig__stream_send(&r->st, INCMIG_REC_FLOW, buf, (uint32_t)len);
}

/* Every record from the source goes through here, and only here. */
int incmig__recv_dispatch(struct recv *r, const struct incmig__rec *rec)
{
    int next, rc;

    if (incmig__dst_transition(r->state, rec->type, &next))
        return incmig__recv_send_error(r, INCMIG_EPROTO, "unexpected %s "
                                       "record in state %s",
                                       incmig__rec_name(rec->type),
                                       incmig__dst_state_name(r->state));
    rc = dst_table[r->state][rec->type].fn(r, rec);
    if (rc == STAY)
        return 0;
    if (rc)
        return rc;
    /* BASE exists only with INCMIG_CAP_BASE (spec: "Destination states") */
    if (next == INCMIG_DST_BASE && !(r->caps & INCMIG_CAP_BASE))
        next = INCMIG_DST_RECEIVING;
    r->state = next;
    return send_flow(r);
}

void incmig_receive_opts_init(struct incmig_receive_opts *o)
{
    memset(o, 0, sizeof *o);
}

void incmig_receive_opts_dispose(struct incmig_receive_opts *o)
{
    memset(o, 0, sizeof *o);
}

int incmig_receive(const struct incmig_receive_opts *o, int in_fd, int out_fd)
{
    struct recv r;
    struct incmig__rec rec;
    bool discard = false, complete = false;
    int rc;

    memset(&r, 0, sizeof r);
    r.ro = *o;
    r.o = o = &r.ro;
    r.lfd = -1;
    r.state_wfd = r.state_rfd = -1;
    r.state = INCMIG_DST_HELLO;
    incmig__owed_init(&r.owed);
    pthread_mutex_init(&r.slock, NULL);
    pthread_mutex_init(&r.rlock, NULL);
    r.zbuf = malloc(INCMIG_BLOCKS_MAX);
    r.ebuf = malloc(INCMIG_REC_MAX);
    if (!r.zbuf || !r.ebuf) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (o->resume) {
        rc = incmig__recv_resume_state(&r);
        if (!rc && !incmig__owed_count(&r.owed)) {
            INFO("nothing is owed any more: the migration is complete");
            goto done;   /* a source that missed COMPLETE: late_source */
        }
        if (!rc)
            rc = incmig__recv_relink(&r);
        if (rc)
            goto out;
        goto pull;
    }
    rc = incmig__volume_check_opts(o);
    if (rc)
        goto out;
    r.kind = incmig__target_find(o->target);
    if (!r.kind) {
        rc = INCMIG_EINVAL;
        goto out;
    }
    if (o->listen) {
        int fd;
        rc = incmig__tcp_listen(o->listen, &r.lfd);
        if (rc)
            goto out;
        INFO("waiting for the source on %s", o->listen);
        rc = incmig__recv_accept_source(&r, 0, &fd);
        if (rc == INCMIG_ECANCEL)
            ERR("stopped while waiting for the source");
        if (rc)
            goto out;
        in_fd = out_fd = fd;
    }
    if (!o->listen && o->rendezvous) {
        rc = incmig_rendezvous_path(o->rendezvous, r.rv_path,
                                    sizeof r.rv_path);
        if (!rc)
            rc = incmig__unix_listen(r.rv_path, &r.lfd);
        if (rc)
            goto out;
    }
    pthread_mutex_lock(&r.slock);
    r.link_ok = true;
    pthread_mutex_unlock(&r.slock);
    rc = incmig__recv_open_stream(&r, in_fd, out_fd);
    if (rc)
        goto failed_discard;

pull:
    while (r.state != INCMIG_DST_DONE) {
        rc = incmig__recv_record(&r, &rec);
        if (!rc)
            rc = incmig__recv_dispatch(&r, &rec);
        if (!rc)
            continue;
        if (r.state != INCMIG_DST_PULL)
            goto failed_discard;
        if (r.complete_sent && (rc == INCMIG_ELINK || rc == INCMIG_ECANCEL))
            break;     /* the source has what it needs: done */
        if (rc == INCMIG_ECANCEL)
            ERR("stopped during PULL");
        if (rc != INCMIG_ELINK)
            goto out;
        rc = incmig__recv_relink(&r);
        if (rc == INCMIG_ECANCEL)
            ERR("stopped while waiting for the source to reconnect");
        if (rc)
            goto out;
    }
done:
    complete = true;
    INFO("migration complete; %s", o->exit_when_done
         ? "serving the domain until it is done with this receiver"
         : "serving the domain until stopped");
    pthread_mutex_lock(&r.slock);
    r.link_ok = false;
    if (r.st_open)
        incmig__stream_dispose(&r.st);
    r.st_open = false;
    pthread_mutex_unlock(&r.slock);
    /* keep serving the domain: this process is its disk now */
    double idle_since = incmig__now();
    while (!incmig__stop_requested) {
        if (r.lfd < 0 || !incmig__recv_late_source(&r))
            usleep(100 * 1000);
        if (r.t->ops->in_use(r.t) > 0)
            idle_since = incmig__now();
        else if (o->exit_when_done && incmig__now() - idle_since > 1.0)
            break;
    }
    rc = 0;
    goto out;

failed_discard:
    /* A stop seen here, or inside a read of the stream: said once. */
    if (rc == INCMIG_ECANCEL)
        ERR("stopped before the point of no return: the guest stays on the "
            "source");
    if (rc == INCMIG_ELINK)
        ERR("connection to the source lost before the point of no return");
    else if (rc != INCMIG_EPEER && !r.error_sent)
        incmig__recv_send_error(&r, rc, "receiver failed: %s",
                                incmig_strerror(rc));
    for (int i = 0; i < r.nd; i++)
        if (r.d[i].q)
            incmig__recv_drain_disk(&r.d[i]);
    incmig__recv_keep_claims(&r);
    discard = true;
out:
    if (!discard && !complete && r.owed.go && r.state >= INCMIG_DST_PULL)
        incmig__recv_say_resume(&r);
    incmig__recv_finish_restore(&r);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++)
        if (r.d[i].gate)
            incmig__gate_abort(r.d[i].gate);
    if (r.t)
        r.t->ops->stop(r.t);
    pthread_mutex_lock(&r.slock);
    r.link_ok = false;
    if (r.st_open)
        incmig__stream_dispose(&r.st);
    r.st_open = false;
    pthread_mutex_unlock(&r.slock);
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        struct rdisk *d = &r.d[i];
        if (d->gate)
            incmig__gate_free(d->gate);
        if (d->q)
            incmig__aioq_free(d->q);
        incmig__bitmap_dispose(&d->final);
        incmig__lineage_dispose(&d->lin);
    }
    if (r.t) {
        if (discard)
            r.t->ops->abort(r.t);
        r.t->ops->close(r.t);
    }
    incmig__owed_close(&r.owed, discard || complete);
    if (r.state_rfd >= 0)
        close(r.state_rfd);
    if (r.lfd >= 0) {
        close(r.lfd);
        if (r.rv_path[0])
            unlink(r.rv_path);
    }
    free(r.zbuf);
    free(r.ebuf);
    pthread_mutex_destroy(&r.rlock);
    pthread_mutex_destroy(&r.slock);
    return rc;
}
