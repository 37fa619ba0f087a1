/* migrate-push.c: PUSH, the pre-copy of the disks while the guest runs.
 *
 * Entry points (migrate-internal.h): incmig__mig_push sends round 0 (the
 * allocated blocks, or what base.c decided) and rounds of dirty blocks
 * until the convergence policy stops, then waits for the destination to
 * echo the last ROUND.  incmig__mig_get_dirty, incmig__mig_send_round and
 * incmig__mig_wait_rounds serve the state stream and stop-and-copy too;
 * incmig__mig_progress_begin starts the progress line.  Between extents
 * progress_poll draws that line, checks for a stop request and, with no
 * cap given, sets PUSH's cap from the guest's I/O (yield.c).
 * incmig__mig_set_bandwidth is the control socket's BANDWIDTH request
 * (control thread).  Data: each struct mdisk's dirty bitmap and sender;
 * struct mig's yield state and progress fields; bandwidth, yielding and
 * background under the lock.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "migrate-internal.h"

/* ---- progress ------------------------------------------------------------ */

/* The guest's I/O cannot be read (the backend said why): PUSH goes on
 * uncapped rather than fail a migration for want of a courtesy. */
static int yield_off(struct mig *m)
{
    ERR("warning: PUSH no longer yields to the guest: its I/O statistics cannot be "
         "read; PUSH runs uncapped (--bandwidth sets a cap)");
    pthread_mutex_lock(&m->lock);
    m->yielding = false;
    if (m->st_open)
        incmig__stream_set_bandwidth(&m->st, m->bandwidth);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* PUSH yielding: the guest's I/O since the last window sets the cap. */
static int yield_poll(struct mig *m, double now)
{
    uint64_t reqs;
    double busy;
    int rc;

    if (m->sstate != INCMIG_SRC_PUSH || (m->y.have && now - m->y.t < 0.1))
        return 0;
    rc = m->dom->ops->activity(m->dom, &reqs, &busy);
    if (rc)
        return yield_off(m);
    uint64_t cap = incmig__yield_step(&m->y, now, reqs, busy);
    if (m->y.probe_due) {
        /* The guest alone for a window: PUSH sends nothing meanwhile. */
        uint64_t reqs1;
        double busy1, t1;
        usleep(100000);
        rc = m->dom->ops->activity(m->dom, &reqs1, &busy1);
        if (rc)
            return yield_off(m);
        t1 = incmig__now();
        incmig__yield_probe(&m->y, now, reqs, busy, t1, reqs1, busy1);
        DBG("PUSH yielding: the guest's latency alone %.3f ms, cap %.1f "
            "MB/s", m->y.base * 1000, cap / 1e6);
    }
    pthread_mutex_lock(&m->lock);
    if (m->yielding)
        incmig__stream_set_bandwidth(&m->st, cap);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int progress_poll(void *opaque)
{
    struct mig *m = opaque;
    double now = incmig__now();

    if (incmig__stop_requested && m->sstate < INCMIG_SRC_PULL) {
        ERR("stopped before the point of no return");
        return INCMIG_ECANCEL;
    }
    pthread_mutex_lock(&m->lock);
    bool yielding = m->yielding, bg = m->background;
    pthread_mutex_unlock(&m->lock);
    incmig__mig_background_io(m, bg && m->sstate == INCMIG_SRC_PUSH);
    if (yielding) {
        int rc = yield_poll(m, now);
        if (rc)
            return rc;
    }
    if (!m->o->progress || now - m->prog_last < 0.5)
        return 0;
    /* The rate over the last interval, so a new cap shows at once. */
    double el = now - m->prog_t;
    double rate = m->prog_t > 0 && el > 0
                      ? (double)(m->st.bytes_out - m->prog_bytes) / el : 0;
    m->prog_last = m->prog_t = now;
    m->prog_bytes = m->st.bytes_out;
    uint64_t done = 0;
    for (int i = 0; i < m->nd; i++)
        done += m->d[i].snd.blocks * m->d[i].bs;
    done -= m->prog_base;
    double eta = rate > 0 && m->prog_total > done
                     ? (double)(m->prog_total - done) / rate : 0;
    pthread_mutex_lock(&m->lock);
    uint64_t cap = m->bandwidth;
    pthread_mutex_unlock(&m->lock);
    char capbuf[48];
    if (yielding && m->y.out)
        snprintf(capbuf, sizeof capbuf, "yielding to the guest: %.1f MB/s",
                 m->y.out / 1e6);
    else if (yielding)
        snprintf(capbuf, sizeof capbuf, "guest idle: no cap");
    else if (cap)
        snprintf(capbuf, sizeof capbuf, "cap %.1f MB/s", cap / 1e6);
    else
        snprintf(capbuf, sizeof capbuf, "no cap");
    fprintf(stderr, "\r%s: %" PRIu64 "/%" PRIu64 " MiB  %.1f MB/s (%s)  "
            "ETA %.0fs   ", m->prog_what, done >> 20, m->prog_total >> 20,
            rate / 1e6, capbuf, eta);
    return 0;
}

/* The control socket's BANDWIDTH request (control thread). */
int incmig__mig_set_bandwidth(void *opaque, uint64_t bw, uint64_t *sent_r)
{
    struct mig *m = opaque;

    pthread_mutex_lock(&m->lock);
    m->bandwidth = bw;
    m->yielding = false;   /* the operator's cap rules from now on */
    m->background = false;
    incmig__stream_set_bandwidth(&m->st, bw);
    *sent_r = m->st.bytes_out;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void incmig__mig_progress_begin(struct mig *m, const char *what, uint64_t total)
{
    m->prog_what = what;
    m->prog_total = total;
    m->prog_base = 0;
    for (int i = 0; i < m->nd; i++)
        m->prog_base += m->d[i].snd.blocks * m->d[i].bs;
}

static void progress_end(struct mig *m)
{
    if (m->o->progress && m->prog_last > 0) {
        fprintf(stderr, "\r%*s\r", 70, "");
        m->prog_last = 0;
    }
}

/* ---- PUSH ---------------------------------------------------------------- */

int incmig__mig_get_dirty(struct mig *m, uint64_t *total_r)
{
    uint64_t total = 0;
    for (int i = 0; i < m->nd; i++) {
        int rc = m->dom->ops->get_and_clear(m->dom, i, &m->d[i].dirty);
        if (rc)
            return rc;
        total += incmig__bitmap_count(&m->d[i].dirty) * m->d[i].bs;
    }
    *total_r = total;
    return 0;
}

int incmig__mig_send_round(struct mig *m, uint32_t round, uint8_t phase,
                      uint64_t *blocks_r)
{
    uint64_t before = 0, after = 0;
    int rc = 0;

    for (int i = 0; i < m->nd; i++)
        before += m->d[i].snd.blocks;
    for (int i = 0; i < m->nd && !rc; i++)
        rc = incmig__send_bitmap(&m->d[i].snd, phase, &m->d[i].dirty,
                                 INCMIG_BLOCKS_MAX, progress_poll, m);
    progress_end(m);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++)
        after += m->d[i].snd.blocks;
    struct incmig__round x = { .round = round, .blocks = after - before };
    int len = incmig__enc_round(&x, m->buf);
    if (len < 0)
        return len;
    *blocks_r = after - before;
    return incmig__stream_send(&m->st, INCMIG_REC_ROUND, m->buf, (uint32_t)len);
}

/* Wait until the destination has written every round up to `last` (it
 * echoes each ROUND): what is still in flight is caught up with now, while
 * the guest runs, not in the downtime. */
int incmig__mig_wait_rounds(struct mig *m, uint32_t last)
{
    struct incmig__rec r;
    struct incmig__round x;
    double t = incmig__now();

    for (;;) {
        int rc = incmig__mig_recv_expect(m, &r, INCMIG_REC_ROUND);
        if (!rc)
            rc = incmig__dec_round(&r, &x);
        if (rc)
            return rc;
        if (x.round == last)
            break;
    }
    DBG("destination caught up with round %u in %.1f ms", last,
        (incmig__now() - t) * 1000);
    return 0;
}

/* The rate PUSH's convergence test assumes for the pause: at least 1 MB/s
 * (a yielding PUSH measures less than the pause, which does not yield,
 * will get), but never above the operator's cap, which holds in the pause
 * too (a 1 MB/s floor under a 16 KiB/s cap declared 300 KiB "fits the
 * budget": 19 s of downtime). */
static double pause_rate(struct mig *m, double rate)
{
    pthread_mutex_lock(&m->lock);
    uint64_t cap = m->yielding ? 0 : m->bandwidth;
    pthread_mutex_unlock(&m->lock);
    if (rate < 1e6)
        rate = 1e6;
    if (cap && rate > (double)cap)
        rate = (double)cap;
    return rate;
}

int incmig__mig_push(struct mig *m)
{
    const struct incmig_migrate_opts *o = m->o;
    struct incmig_report *rep = m->rep;
    uint64_t dirty, alloc = 0, blocks, w0 = incmig__mig_wire_now(m);
    int max_rounds = o->max_rounds > 0 ? o->max_rounds : 30;
    double budget = (o->downtime_ms ? o->downtime_ms : 300) / 1000.0;
    int rc;

    /* Round 0: every block written since the trackers restarted (before
     * DISK, read_lineage), and what the decision says: everything
     * allocated (FULL), or the blocks base.c found (UNION, CHECKSUM). */
    rc = incmig__mig_get_dirty(m, &dirty);
    if (rc)
        return rc;
    for (int i = 0; i < m->nd; i++) {
        struct incmig__bitmap map = {0};
        rc = incmig__bitmap_init(&map, m->d[i].nblocks);
        if (!rc)
            rc = incmig__disk_alloc_map(&m->d[i].disk, m->d[i].bs, &map);
        if (!rc)
            rep->disks[i].allocated_blocks = incmig__bitmap_count(&map);
        if (!rc)
            rc = incmig__bitmap_merge(&m->d[i].dirty,
                                      m->d[i].base.mode == INCMIG_MODE_FULL
                                          ? &map : &m->d[i].base.send);
        incmig__bitmap_dispose(&map);
        if (rc)
            return rc;
        alloc += incmig__bitmap_count(&m->d[i].dirty) * m->d[i].bs;
    }
    INFO("PUSH round 0: %" PRIu64 " MiB", alloc >> 20);
    double t = incmig__now();
    incmig__mig_progress_begin(m, "PUSH round 0", alloc);
    rc = incmig__mig_send_round(m, 0, INCMIG_PHASE_PUSH, &blocks);
    if (rc)
        return rc;
    double el = incmig__now() - t;
    double rate = pause_rate(m, el > 0 ? (double)(incmig__mig_wire_now(m) - w0)
                                             / el
                                       : 1e9);
    rep->push_rate = rate;
    int round = 1;
    uint64_t prev = UINT64_MAX;
    for (;; round++) {
        rc = incmig__mig_get_dirty(m, &dirty);
        if (rc)
            return rc;
        double est = (double)dirty / rate;
        const char *why = NULL;
        if (o->policy == INCMIG_POLICY_SINGLE)
            why = "single-pass policy";
        else if (est <= budget)
            why = "remaining set fits the downtime budget";
        else if (round > max_rounds)
            why = "round limit reached";
        else if (round >= 3 && dirty >= prev - prev / 10)
            why = "dirty set no longer shrinking";
        if (why) {
            INFO("PUSH converged after %d round(s): %s (%" PRIu64
                 " KiB dirty, %.0f ms at %.1f %s)", round, why,
                 dirty >> 10, est * 1000, rate < 1e6 ? rate / 1e3 : rate / 1e6,
                 rate < 1e6 ? "kB/s" : "MB/s");
            break;
        }
        prev = dirty;
        DBG("PUSH round %d: %" PRIu64 " KiB dirty", round, dirty >> 10);
        t = incmig__now();
        uint64_t w = incmig__mig_wire_now(m);
        incmig__mig_progress_begin(m, "PUSH round", dirty);
        rc = incmig__mig_send_round(m, (uint32_t)round, INCMIG_PHASE_PUSH,
                                    &blocks);
        if (rc)
            return rc;
        el = incmig__now() - t;
        if (el > 0.05)
            rate = pause_rate(m, (rate + (double)(incmig__mig_wire_now(m) - w)
                                             / el) / 2);
    }
    for (int i = 0; i < m->nd; i++)
        rep->disks[i].rounds = round;
    return incmig__mig_wait_rounds(m, (uint32_t)(round - 1));
}
