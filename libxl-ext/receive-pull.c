/* receive-pull.c: GO and PULL: the domain runs here while the source
 * still holds the blocks of the stop-and-copy bitmaps.
 *
 * Entry points:
 *   incmig__recv_request_blocks  the gates' callback, on NBD worker
 *                                threads: PULL_REQ to the source, under
 *                                r->slock
 *   incmig__recv_maybe_complete  COMPLETE and REPORT, once no gate misses
 *                                a block and the state file says so
 *   handlers of dst_table (receive.c): incmig__recv_on_go (the point of no
 *   return), _on_pull_end, _on_end, _on_resume (on a reconnection)
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "receive-internal.h"

/* Gate callback, on NBD worker threads: ask the source for blocks. */
int incmig__recv_request_blocks(void *opaque, uint32_t disk, uint64_t first,
                                uint32_t n)
{
    struct recv *r = opaque;
    uint8_t buf[64];
    struct incmig__pull_req p = { .disk = disk, .first = first, .nblocks = n };
    int rc = INCMIG_ELINK;

    pthread_mutex_lock(&r->slock);
    if (r->link_ok) {
        int len = incmig__enc_pull_req(&p, buf);
        rc = len < 0 ? len
                     : incmig__stream_send(&r->st, INCMIG_REC_PULL_REQ, buf,
                                           (uint32_t)len);
    }
    pthread_mutex_unlock(&r->slock);
    return rc;
}

/* The destination's figures, one JSON object (spec: REPORT). */
static int report_json(struct recv *r, const struct incmig__gate_stats *tot,
                       const struct incmig__gate_stats *per, char *buf,
                       size_t cap)
{
    size_t n = 0;
    double restore_s;

    pthread_mutex_lock(&r->rlock);
    restore_s = r->restore_s;
    pthread_mutex_unlock(&r->rlock);
#define OUT(...)                                                            \
    do {                                                                    \
        int k_ = snprintf(buf + n, cap - n, __VA_ARGS__);                   \
        if (k_ < 0 || (size_t)k_ >= cap - n)                                \
            return INCMIG_EINVAL;                                           \
        n += (size_t)k_;                                                    \
    } while (0)
    OUT("{\"pull_s\": %.3f, \"demand_requests\": %" PRIu64
        ", \"demand_blocks\": %" PRIu64 ", \"waits\": %" PRIu64
        ", \"max_wait_ms\": %.3f, \"state_bytes\": %" PRIu64
        ", \"restore_s\": %.3f, \"serve_ms\": %.3f, \"disks\": [",
        incmig__now() - r->t_go, tot->demand_requests, tot->demand_blocks,
        tot->waits, tot->max_wait_ms, r->state_bytes, restore_s,
        r->serve_ms);
    for (int i = 0; i < r->nd; i++) {
        const struct rdisk *d = &r->d[i];
        OUT("%s{\"name\": \"", i ? ", " : "");
        for (const char *p = r->recs[i].name; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\')
                OUT("\\%c", c);
            else if (c < 0x20)
                OUT("\\u%04x", c);
            else
                OUT("%c", c);
        }
        OUT("\", \"demand_blocks\": %" PRIu64 ", \"waits\": %" PRIu64
            ", \"overwritten\": %" PRIu64 ", \"dropped\": %" PRIu64
            ", \"push_blocks\": %" PRIu64 ", \"stopcopy_blocks\": %" PRIu64
            ", \"final_dirty_blocks\": %" PRIu64 ", \"pull_blocks\": %"
            PRIu64 "}", per[i].demand_blocks, per[i].waits,
            per[i].overwritten, per[i].dropped, d->push_blocks,
            d->stopcopy_blocks, incmig__bitmap_count(&d->final),
            d->pull_blocks);
    }
    OUT("]}");
#undef OUT
    return (int)n;
}

void incmig__recv_maybe_complete(struct recv *r)
{
    if (r->state != INCMIG_DST_PULL || r->complete_sent)
        return;
    bool all = true;
    for (int i = 0; i < r->nd; i++) {
        struct rdisk *d = &r->d[i];
        if (incmig__gate_missing_count(d->gate)) {
            all = false;
            continue;
        }
        if (!d->done) {
            if (r->t->ops->disk_done(r->t, i)) {
                incmig__recv_send_msg(r, INCMIG_EIO, r->t->msg);
                return;
            }
            d->done = true;
        }
    }
    if (!all)
        return;
    /* every volume flushed (disk_done): the file says nothing is owed */
    if (incmig__owed_sync(&r->owed)) {
        incmig__recv_send_msg(r, INCMIG_EIO, "cannot update the destination's "
                              "state file");
        return;
    }
    pthread_mutex_lock(&r->slock);
    if (r->link_ok &&
        incmig__stream_send(&r->st, INCMIG_REC_COMPLETE, NULL, 0) == 0) {
        struct incmig__gate_stats tot = {0}, per[INCMIG_MAX_DISKS];
        r->complete_sent = true;
        for (int i = 0; i < r->nd; i++) {
            incmig__gate_get_stats(r->d[i].gate, &per[i]);
            tot.demand_requests += per[i].demand_requests;
            tot.demand_blocks += per[i].demand_blocks;
            tot.waits += per[i].waits;
            tot.overwritten += per[i].overwritten;
            tot.dropped += per[i].dropped;
            if (per[i].max_wait_ms > tot.max_wait_ms)
                tot.max_wait_ms = per[i].max_wait_ms;
        }
        INFO("PULL complete after %.2f s: every block is here; the source "
             "may let go (%" PRIu64 " guest requests waited for %" PRIu64
             " blocks, the longest %.1f ms)", incmig__now() - r->t_go,
             tot.waits, tot.demand_blocks, tot.max_wait_ms);
        for (int i = 0; i < r->nd; i++) {
            const struct rdisk *d = &r->d[i];
            INFO("disk %s: %" PRIu64 " blocks pushed, %" PRIu64 " in the "
                 "stop-and-copy bitmap, %" PRIu64 " pulled (%" PRIu64 " on "
                 "demand), %" PRIu64 " guest requests waited, %" PRIu64
                 " overwritten by the guest, %" PRIu64 " late copies dropped",
                 r->recs[i].name, d->push_blocks + d->stopcopy_blocks,
                 incmig__bitmap_count(&d->final), d->pull_blocks,
                 per[i].demand_blocks, per[i].waits, per[i].overwritten,
                 per[i].dropped);
        }
        int len = report_json(r, &tot, per, (char *)r->ebuf, INCMIG_REC_MAX);
        if (len > 0)
            incmig__stream_send(&r->st, INCMIG_REC_REPORT, r->ebuf,
                                (uint32_t)len);
    }
    pthread_mutex_unlock(&r->slock);
}

/* In PULL a demand answer queues behind the background data already in
 * our socket's receive buffer, which we drain only as fast as blocks are
 * written: keep it small (as the source keeps its send buffer), so that
 * a guest read waiting for a block does not wait for megabytes. */
static void small_recv_buffer(struct recv *r)
{
    int sz = 256 << 10;
    setsockopt(r->st.rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

int incmig__recv_on_go(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    r->t_go = incmig__now();
    r->state = INCMIG_DST_PULL;   /* past the point of no return */
    small_recv_buffer(r);
    /* Before the domain runs: from here on the state file is what a
     * restarted receiver finishes PULL from (written: a killed receiver
     * finds it in the page cache; made durable just after the unpause,
     * and before any guest flush is answered). */
    if (incmig__owed_mark_go(&r->owed))
        ERR("domain %s: PULL goes on, but a crash of this receiver before "
            "it completes could not be recovered from", r->domain);
    rc = r->t->ops->unpause(r->t);
    if (rc)
        return incmig__recv_send_msg(r, rc, r->t->msg);
    r->serve_ms = (incmig__now() - r->t_go) * 1000;
    if (incmig__owed_settle(&r->owed))
        ERR("domain %s: the state file %s could not be made durable: PULL "
            "goes on, but if this host goes down before it completes the "
            "file may not resume", r->domain, r->owed.path);
    INFO("GO: domain %s runs here (%s%s)", r->domain,
         r->t->disks[0].nbd_uri[0] ? "disk served on " : "disks attached",
         r->t->disks[0].nbd_uri);
    incmig__recv_maybe_complete(r);
    return 0;
}

/* After PULL_END: whatever is still missing is asked for again. */
int incmig__recv_on_pull_end(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    incmig__recv_maybe_complete(r);
    if (r->complete_sent)
        return 0;
    for (int i = 0; i < r->nd; i++) {
        struct incmig__bitmap m = {0};
        uint64_t pos = 0, start, len;
        uint32_t per = INCMIG_BLOCKS_MAX / r->d[i].bs;
        if (incmig__bitmap_init(&m, r->d[i].nblocks) ||
            incmig__gate_get_missing(r->d[i].gate, &m)) {
            incmig__bitmap_dispose(&m);
            continue;
        }
        while (incmig__bitmap_next_run(&m, &pos, &start, &len))
            for (uint64_t k; len; start += k, len -= k) {
                k = len < per ? len : per;
                incmig__recv_request_blocks(r, (uint32_t)i, start,
                                            (uint32_t)k);
            }
        incmig__bitmap_dispose(&m);
    }
    return 0;
}

int incmig__recv_on_end(struct recv *r, const struct incmig__rec *rec)
{
    int rc = incmig__dec_empty(rec);

    if (rc)
        return rc;
    if (!r->complete_sent)
        return incmig__recv_send_error(r, INCMIG_EPROTO, "END before the "
                                       "migration was complete");
    return 0;
}

/* RESUME on a new connection: tell the source what is still missing. */
int incmig__recv_on_resume(struct recv *r, const struct incmig__rec *rec)
{
    uint8_t id[16];
    int rc;

    rc = incmig__dec_resume(rec, id);
    if (rc)
        return rc;
    if (memcmp(id, r->mig_id, 16))
        return incmig__recv_send_error(r, INCMIG_EPROTO,
                                       "RESUME of another migration");
    for (int i = 0; i < r->nd && !rc; i++) {
        struct incmig__bitmap m = {0};
        rc = incmig__bitmap_init(&m, r->d[i].nblocks);
        if (!rc)
            rc = incmig__gate_get_missing(r->d[i].gate, &m);
        if (!rc)
            rc = incmig__send_bitmap_recs(&r->st, (uint32_t)i,
                                          INCMIG_PHASE_PULL_BACKGROUND, &m,
                                          r->ebuf);
        incmig__bitmap_dispose(&m);
    }
    if (!rc)
        rc = incmig__stream_send(&r->st, INCMIG_REC_READY, NULL, 0);
    if (rc)
        return rc;
    pthread_mutex_lock(&r->slock);
    r->link_ok = true;
    r->complete_sent = false;
    pthread_mutex_unlock(&r->slock);
    INFO("source reconnected: PULL resumes");
    r->state = INCMIG_DST_PULL;
    small_recv_buffer(r);
    for (int i = 0; i < r->nd; i++)
        incmig__gate_relink(r->d[i].gate);
    incmig__recv_maybe_complete(r);
    return 0;
}
