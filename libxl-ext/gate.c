/* gate.c: the destination's PULL gate, between the guest and a disk whose
 * current contents are partly still on the source.
 *
 * Entry points: incmig__gate_new/free, mark_missing (arm with the
 * stop-and-copy bitmap), fill (blocks from the source), relink (after a
 * reconnect), wait_complete, get_missing/missing_count/get_stats, and
 * incmig__gate_nbd_ops (the guest's NBD requests; opaque = the gate).
 *
 * State: three bitmaps of one bit per block, under one mutex:
 *
 *   missing    busy    meaning
 *   0          0       current on the local disk: guest I/O goes through
 *   1          0       still on the source; `requested` says whether a
 *                      PULL_REQ is outstanding for it (once per block)
 *   1          1       a fill is writing it right now (lock dropped)
 *   0          1       never: fill clears both together
 *
 * One condition variable, broadcast on every change, wakes guest requests
 * waiting for blocks, writers waiting for a fill to finish, and
 * wait_complete.  The mutex is never held across disk I/O or across the
 * request callback (which sends on the link and may block).
 *
 * Ordering rules, which keep every guest write and never expose stale data:
 *   - fill writes a block only if it is missing and not busy, and marks it
 *     busy first: so a block the guest has made current is never written
 *     by a fill, however late the copy arrives (it is counted as dropped);
 *   - a guest write/zero/trim covering a whole missing block clears its
 *     missing bit before doing its I/O, after waiting for !busy: so a fill
 *     is either finished before the guest's write or skips the block;
 *   - a read, and a write/zero covering a missing block only partly, waits
 *     until the block is current (requesting it first), so the merge with
 *     the untouched part happens on top of the source's data;
 *   - trim is advisory (NBD): it makes current (and punches) only whole
 *     blocks and leaves partly covered ones alone, missing or not, so it
 *     never waits for the link.
 * A guest write that fails leaves its blocks current with undefined
 * contents, as a failed write does on any disk.
 *
 * Requests: a guest request waiting for blocks puts itself on a list with
 * the block ranges it needs, marks the missing-and-not-requested ones
 * requested and asks the source for them in runs of at most
 * INCMIG_BLOCKS_MAX / block size blocks.  When the callback fails (link
 * down), the bits are cleared again and no more requests are made until
 * incmig__gate_relink, which re-requests what the listed waiters need.
 * Meanwhile waiters stall, as ARCHITECTURE.md's failure rules want.
 *
 * Crash safety (with a state file, incmig__gate_set_owed): a block's data
 * written by fill is reported done to the owed set, which clears it in
 * the file in batches once the volume is flushed; a guest modification is
 * acknowledged only once no block it touched is still owed in the file
 * (else a restarted receiver would fetch the source's older copy over
 * the guest's data): it syncs the owed set first when needed.
 *
 * Fill data holds n * block size bytes; for the last block of a disk whose
 * size is not a multiple of the block size only the part inside the disk
 * is written.  The gate must be freed only when no guest request is in
 * flight (the NBD server quiesced or freed).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "incmig-internal.h"

/* A guest request waiting for blocks: up to two ranges (a read's range, or
 * the partly covered head and tail blocks of a write).  Lives on the
 * waiting thread's stack, linked into g->waiters while it waits. */
struct waiter {
    struct waiter *prev, *next;
    int nr;
    uint64_t first[2], last[2];   /* inclusive block ranges */
};

struct incmig__gate {
    struct incmig__disk *d;
    uint32_t disk;
    uint32_t bs;
    uint64_t nblocks;
    uint32_t req_max;             /* blocks per request */
    incmig__gate_request_fn request;
    void *opaque;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool lock_ok, cond_ok;
    struct incmig__bitmap missing, requested, busy;
    uint64_t nmissing;
    struct waiter *waiters;
    bool link_down;               /* a request failed; wait for relink */
    bool aborted;                 /* the source is gone for good */
    uint64_t link_gen;            /* bumped by relink */
    struct incmig__gate_stats st;
    struct incmig__owed *owed;    /* the state file's owed set, or NULL */
};

static const uint8_t zeroes[65536];

int incmig__gate_new(struct incmig__gate **g_r, struct incmig__disk *d,
                     uint32_t disk_index, uint32_t block_size,
                     incmig__gate_request_fn request, void *opaque)
{
    int rc, r;
    struct incmig__gate *g = NULL;
    pthread_condattr_t ca;
    bool ca_ok = false;

    *g_r = NULL;
    if (!d || !request) {
        ERR("PULL gate of disk %u: no disk or no request callback",
            disk_index);
        rc = INCMIG_EINVAL;
        goto out;
    }
    if (!incmig__block_size_valid(block_size) || d->size == 0 ||
        d->size > INCMIG_DISK_MAX) {
        ERR("cannot set up the PULL gate of disk %u: disk size %" PRIu64
            " or block size %" PRIu32 " out of range", disk_index, d->size,
            block_size);
        rc = INCMIG_EINVAL;
        goto out;
    }
    g = calloc(1, sizeof *g);
    if (!g) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    g->d = d;
    g->disk = disk_index;
    g->bs = block_size;
    g->nblocks = (d->size + block_size - 1) / block_size;
    g->req_max = INCMIG_BLOCKS_MAX / block_size;
    g->request = request;
    g->opaque = opaque;

    r = pthread_mutex_init(&g->lock, NULL);
    if (r) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    g->lock_ok = true;
    /* wait_complete's deadline must not jump with the wall clock. */
    r = pthread_condattr_init(&ca);
    if (r) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    ca_ok = true;
    r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!r)
        r = pthread_cond_init(&g->cond, &ca);
    if (r) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    g->cond_ok = true;

    rc = incmig__bitmap_init(&g->missing, g->nblocks);
    if (!rc)
        rc = incmig__bitmap_init(&g->requested, g->nblocks);
    if (!rc)
        rc = incmig__bitmap_init(&g->busy, g->nblocks);
    if (rc)
        goto out;

    *g_r = g;
    g = NULL;
    rc = 0;
out:
    if (ca_ok)
        pthread_condattr_destroy(&ca);
    incmig__gate_free(g);
    return rc;
}

void incmig__gate_free(struct incmig__gate *g)
{
    if (!g)
        return;
    incmig__bitmap_dispose(&g->missing);
    incmig__bitmap_dispose(&g->requested);
    incmig__bitmap_dispose(&g->busy);
    if (g->cond_ok)
        pthread_cond_destroy(&g->cond);
    if (g->lock_ok)
        pthread_mutex_destroy(&g->lock);
    free(g);
}

int incmig__gate_mark_missing(struct incmig__gate *g,
                              const struct incmig__bitmap *m)
{
    int rc;

    if (m->nbits != g->nblocks) {
        ERR("stop-and-copy bitmap of disk %u has %" PRIu64 " bits, the "
            "disk has %" PRIu64 " blocks", g->disk, m->nbits, g->nblocks);
        return INCMIG_EINVAL;
    }
    pthread_mutex_lock(&g->lock);
    rc = incmig__bitmap_merge(&g->missing, m);
    g->nmissing = incmig__bitmap_count(&g->missing);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return rc;
}

/* out: an initialised bitmap of the disk's size, or zeroed (words NULL),
 * in which case it is initialised here.  Its previous contents are
 * replaced. */
int incmig__gate_get_missing(struct incmig__gate *g, struct incmig__bitmap *out)
{
    int rc;

    if (!out->words) {
        rc = incmig__bitmap_init(out, g->nblocks);
        if (rc)
            return rc;
    }
    if (out->nbits != g->nblocks) {
        ERR("missing-block bitmap of disk %u: %" PRIu64 " bits asked, the "
            "disk has %" PRIu64 " blocks", g->disk, out->nbits, g->nblocks);
        return INCMIG_EINVAL;
    }
    incmig__bitmap_clear_all(out);
    pthread_mutex_lock(&g->lock);
    rc = incmig__bitmap_merge(out, &g->missing);
    pthread_mutex_unlock(&g->lock);
    return rc;
}

uint64_t incmig__gate_missing_count(struct incmig__gate *g)
{
    uint64_t n;

    pthread_mutex_lock(&g->lock);
    n = g->nmissing;
    pthread_mutex_unlock(&g->lock);
    return n;
}

void incmig__gate_get_stats(struct incmig__gate *g,
                            struct incmig__gate_stats *st)
{
    pthread_mutex_lock(&g->lock);
    *st = g->st;
    pthread_mutex_unlock(&g->lock);
}

/* ---- helpers, all called with the lock held ------------------------------ */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Byte range [off, off+len) of blocks [first, first+n), clipped to the
 * disk's end (its last block may be short). */
static uint64_t blocks_len(const struct incmig__gate *g, uint64_t first,
                           uint64_t n, uint64_t *off_r)
{
    *off_r = first * g->bs;
    return min_u64((first + n) * g->bs, g->d->size) - *off_r;
}

/* Set bits of b in [first, last]. */
static uint64_t count_range(const struct incmig__bitmap *b, uint64_t first,
                            uint64_t last)
{
    uint64_t n = 0, pos = first;

    while ((pos = incmig__bitmap_next_set(b, pos)) <= last) {
        uint64_t end = min_u64(incmig__bitmap_next_clear(b, pos), last + 1);
        n += end - pos;
        pos = end;
    }
    return n;
}

/* Clear missing (and requested) for blocks [first, first+n); lock held. */
static uint64_t make_current(struct incmig__gate *g, uint64_t first,
                             uint64_t n)
{
    uint64_t cnt = count_range(&g->missing, first, first + n - 1);

    if (cnt) {
        incmig__bitmap_clear_range(&g->missing, first, n);
        g->nmissing -= cnt;
    }
    incmig__bitmap_clear_range(&g->requested, first, n);
    return cnt;
}

/* First block in [from, last] that is missing, not requested and not
 * being filled (that copy is as good as an answer), or UINT64_MAX.  A word
 * at a time: a read may span thousands of blocks and this runs on every
 * wake-up. */
static uint64_t next_wanted(const struct incmig__gate *g, uint64_t from,
                            uint64_t last)
{
    while (from <= last) {
        /* skip to the next missing block through missing's summary */
        from = incmig__bitmap_next_set(&g->missing, from);
        if (from > last)
            break;
        uint64_t i = from / 64;
        uint64_t w = g->missing.words[i] & ~g->requested.words[i] &
                     ~g->busy.words[i] & (~UINT64_C(0) << (from % 64));
        if (w) {
            uint64_t b = i * 64 + (uint64_t)__builtin_ctzll(w);
            return b <= last ? b : UINT64_MAX;
        }
        from = (i + 1) * 64;
    }
    return UINT64_MAX;
}

/* Ask the source for the first run of next_wanted blocks in [first, last].  Returns 0 when there was nothing to ask, 1 when a request
 * went out, -1 when it failed; in the last two cases the lock was dropped
 * and everything must be re-checked. */
static int request_next(struct incmig__gate *g, uint64_t first, uint64_t last)
{
    uint64_t b = next_wanted(g, first, last), n = 0, gen;
    int rc;

    if (b == UINT64_MAX)
        return 0;
    while (n < g->req_max && b + n <= last &&
           incmig__bitmap_test(&g->missing, b + n) &&
           !incmig__bitmap_test(&g->requested, b + n) &&
           !incmig__bitmap_test(&g->busy, b + n))
        n++;
    incmig__bitmap_set_range(&g->requested, b, n);
    g->st.demand_requests++;
    g->st.demand_blocks += n;
    gen = g->link_gen;

    pthread_mutex_unlock(&g->lock);
    rc = g->request(g->opaque, g->disk, b, (uint32_t)n);
    pthread_mutex_lock(&g->lock);

    if (!rc)
        return 1;
    /* Forget the request so that it is made again; stop asking until the
     * link is back, unless a relink already happened meanwhile. */
    incmig__bitmap_clear_range(&g->requested, b, n);
    if (gen == g->link_gen && !g->link_down) {
        g->link_down = true;
        INFO("disk %u: demand request for blocks %" PRIu64 "+%" PRIu64
             " not sent (%s); guest reads of missing blocks wait for the "
             "link to come back", g->disk, b, n, incmig_strerror(rc));
    }
    return -1;
}

static bool waiter_needs(const struct incmig__gate *g, const struct waiter *w)
{
    for (int i = 0; i < w->nr; i++)
        if (incmig__bitmap_next_set(&g->missing, w->first[i]) <= w->last[i])
            return true;
    return false;
}

static void note_wait(struct incmig__gate *g, double t0)
{
    double ms = (incmig__now() - t0) * 1000.0;

    if (ms > g->st.max_wait_ms)
        g->st.max_wait_ms = ms;
}

/* Wait until no block of w is missing, requesting them first; lock held. */
static int await_blocks(struct incmig__gate *g, struct waiter *w)
{
    bool listed = false;
    double t0 = 0;

    while (!g->aborted && waiter_needs(g, w)) {
        if (!listed) {
            w->prev = NULL;
            w->next = g->waiters;
            if (g->waiters)
                g->waiters->prev = w;
            g->waiters = w;
            listed = true;
            g->st.waits++;
            t0 = incmig__now();
        }
        if (!g->link_down) {
            int got = 0;
            for (int i = 0; i < w->nr && !got; i++)
                got = request_next(g, w->first[i], w->last[i]);
            if (got)
                continue;
        }
        pthread_cond_wait(&g->cond, &g->lock);
    }
    if (listed) {
        if (w->prev)
            w->prev->next = w->next;
        else
            g->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        note_wait(g, t0);
    }
    return g->aborted && waiter_needs(g, w) ? -EIO : 0;
}

/* ---- blocks from the source ---------------------------------------------- */

int incmig__gate_fill(struct incmig__gate *g, uint64_t first, uint32_t n,
                      const uint8_t *data)
{
    int rc = 0;
    uint64_t pos = first, end;

    if (n == 0)
        return 0;
    if (first >= g->nblocks || n > g->nblocks - first) {
        ERR("disk %u: the source sent blocks %" PRIu64 "+%" PRIu32 " past "
            "the end of the disk (%" PRIu64 " blocks)", g->disk, first, n,
            g->nblocks);
        return INCMIG_EPROTO;
    }
    end = first + n;

    pthread_mutex_lock(&g->lock);
    while (pos < end) {
        uint64_t stop, cnt, off, len;

        if (!incmig__bitmap_test(&g->missing, pos)) {
            stop = min_u64(incmig__bitmap_next_set(&g->missing, pos), end);
            g->st.dropped += stop - pos;
            pos = stop;
            continue;
        }
        if (incmig__bitmap_test(&g->busy, pos)) {
            /* Another copy (demand answer vs. background push) is being
             * written now: the source's data is frozen, so it is the
             * same; skip ours. */
            g->st.dropped++;
            pos++;
            continue;
        }
        stop = min_u64(incmig__bitmap_next_clear(&g->missing, pos),
                       incmig__bitmap_next_set(&g->busy, pos));
        stop = min_u64(stop, end);
        cnt = stop - pos;
        incmig__bitmap_set_range(&g->busy, pos, cnt);
        pthread_mutex_unlock(&g->lock);

        len = blocks_len(g, pos, cnt, &off);
        if (data)
            rc = incmig__disk_pwrite(g->d, data + (pos - first) * g->bs,
                                     len, off);
        else
            rc = incmig__disk_punch(g->d, off, len);
        if (!rc && g->owed)
            incmig__owed_done(g->owed, (int)g->disk, pos, cnt);

        pthread_mutex_lock(&g->lock);
        incmig__bitmap_clear_range(&g->busy, pos, cnt);
        if (!rc)
            make_current(g, pos, cnt);
        else
            /* Left missing; waiters will ask for these blocks again. */
            incmig__bitmap_clear_range(&g->requested, pos, cnt);
        pthread_cond_broadcast(&g->cond);
        if (rc)
            break;
        pos = stop;
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

void incmig__gate_relink(struct incmig__gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->link_gen++;
    g->link_down = false;
    /* Requests made on the old link may have been lost with it. */
    incmig__bitmap_clear_all(&g->requested);
    for (;;) {
        int got = 0;
        /* request_next drops the lock: restart from the list's head after
         * each request; requested bits make every pass shorter. */
        for (struct waiter *w = g->waiters; w && !got; w = w->next)
            for (int i = 0; i < w->nr && !got; i++)
                got = request_next(g, w->first[i], w->last[i]);
        if (got != 1)
            break;
    }
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

int incmig__gate_wait_complete(struct incmig__gate *g, double timeout_s)
{
    struct timespec dl;
    int rc;

    if (timeout_s >= 0)
        incmig__deadline(&dl, CLOCK_MONOTONIC, timeout_s);
    pthread_mutex_lock(&g->lock);
    while (g->nmissing) {
        if (timeout_s < 0)
            pthread_cond_wait(&g->cond, &g->lock);
        else if (pthread_cond_timedwait(&g->cond, &g->lock, &dl) == ETIMEDOUT)
            break;
    }
    rc = g->nmissing ? INCMIG_ECANCEL : 0;
    pthread_mutex_unlock(&g->lock);
    return rc;
}

/* ---- the guest's requests (NBD callbacks) -------------------------------- */

static int to_errno(int rc)
{
    if (!rc)
        return 0;
    return rc == INCMIG_ENOSPC ? -ENOSPC : -EIO;
}

/* The NBD server checks bounds; this is a second line, and quiet because
 * a guest can trigger it at will. */
static bool in_disk(const struct incmig__gate *g, uint32_t count,
                    uint64_t offset)
{
    if (offset <= g->d->size && count <= g->d->size - offset)
        return true;
    DBG("disk %u: request of %" PRIu32 " bytes at %" PRIu64 " is past the "
        "end", g->disk, count, offset);
    return false;
}

/* Block b lies entirely inside [s, e). */
static bool covers(const struct incmig__gate *g, uint64_t s, uint64_t e,
                   uint64_t b)
{
    return b * g->bs >= s && min_u64((b + 1) * g->bs, g->d->size) <= e;
}

/* Before the guest modifies [offset, offset+count) (count > 0): wait for
 * partly covered missing blocks when wait_partial (write, zero), then make
 * the whole blocks current, after any fill writing them finished.  The
 * whole blocks are returned in [*wf_r, *wf_r + *wn_r). */
static int gate_modify(struct incmig__gate *g, uint32_t count,
                       uint64_t offset, bool wait_partial, uint64_t *wf_r,
                       uint64_t *wn_r)
{
    int rc = 0;
    uint64_t e = offset + count;
    uint64_t bf = offset / g->bs, bl = (e - 1) / g->bs;
    bool head = !covers(g, offset, e, bf), tail = !covers(g, offset, e, bl);
    uint64_t wf = bf + head, wend = bl + 1 - tail;
    uint64_t wn = wend > wf ? wend - wf : 0;
    struct waiter w = { .nr = 0 };

    if (head) {
        w.first[w.nr] = w.last[w.nr] = bf;
        w.nr++;
    }
    if (tail && bl != bf) {
        w.first[w.nr] = w.last[w.nr] = bl;
        w.nr++;
    }

    pthread_mutex_lock(&g->lock);
    if (wait_partial && w.nr)
        rc = await_blocks(g, &w);
    if (wn && !rc) {
        bool waited = false;
        double t0 = 0;
        while (incmig__bitmap_next_set(&g->busy, wf) < wf + wn) {
            if (!waited) {
                waited = true;
                g->st.waits++;
                t0 = incmig__now();
            }
            pthread_cond_wait(&g->cond, &g->lock);
        }
        if (waited)
            note_wait(g, t0);
        uint64_t cnt = make_current(g, wf, wn);
        if (cnt) {
            g->st.overwritten += cnt;
            pthread_cond_broadcast(&g->cond);
        }
    }
    pthread_mutex_unlock(&g->lock);
    *wf_r = wf;
    *wn_r = wn;
    return rc;
}

static int gate_pread(void *opaque, void *buf, uint32_t count,
                      uint64_t offset)
{
    struct incmig__gate *g = opaque;
    struct waiter w = { .nr = 1 };

    if (!in_disk(g, count, offset))
        return -EINVAL;
    if (count == 0)
        return 0;
    w.first[0] = offset / g->bs;
    w.last[0] = (offset + count - 1) / g->bs;
    pthread_mutex_lock(&g->lock);
    int r = await_blocks(g, &w);
    pthread_mutex_unlock(&g->lock);
    if (r)
        return r;
    return to_errno(incmig__disk_pread(g->d, buf, count, offset));
}

/* The part every modifying request shares: bounds, then gate_modify.
 * Returns 0 to go on, 1 when there is nothing to do, or -errno. */
static int modify_begin(struct incmig__gate *g, uint32_t count,
                        uint64_t offset, bool wait_partial, uint64_t *wf_r,
                        uint64_t *wn_r)
{
    if (!in_disk(g, count, offset))
        return -EINVAL;
    if (count == 0)
        return 1;
    return gate_modify(g, count, offset, wait_partial, wf_r, wn_r) ? -EIO : 0;
}

/* After a guest modification's I/O, before its answer: the whole blocks
 * it made current [wf, wf+wn) are done, and blocks [cf, cf+cn) it wrote
 * must not stay owed in the state file (see "Crash safety"). */
static int modify_end(struct incmig__gate *g, int rc, bool fua, uint64_t wf,
                      uint64_t wn, uint64_t cf, uint64_t cn)
{
    if (!rc && fua)
        rc = incmig__disk_flush(g->d);
    if (!rc && fua && g->owed)
        rc = incmig__owed_settle(g->owed);
    if (!rc && g->owed) {
        if (wn)
            incmig__owed_done(g->owed, (int)g->disk, wf, wn);
        if (cn && incmig__owed_durable(g->owed, (int)g->disk, cf, cn))
            rc = incmig__owed_sync(g->owed);
    }
    return to_errno(rc);
}

/* Blocks [*cf_r, *cf_r + return) that [offset, offset+count) touches. */
static uint64_t touched(const struct incmig__gate *g, uint32_t count,
                        uint64_t offset, uint64_t *cf_r)
{
    *cf_r = offset / g->bs;
    return (offset + count - 1) / g->bs - *cf_r + 1;
}

void incmig__gate_set_owed(struct incmig__gate *g, struct incmig__owed *o)
{
    g->owed = o;
}

static int gate_pwrite(void *opaque, const void *buf, uint32_t count,
                       uint64_t offset, bool fua)
{
    struct incmig__gate *g = opaque;
    uint64_t wf, wn;
    int r = modify_begin(g, count, offset, true, &wf, &wn);

    if (r)
        return r < 0 ? r : 0;
    uint64_t cf, cn = touched(g, count, offset, &cf);
    return modify_end(g, incmig__disk_pwrite(g->d, buf, count, offset), fua,
                      wf, wn, cf, cn);
}

/* A guest's flush: its data, and the state file's GO mark and armed
 * bitmaps (owed.c, settle) that a restarted receiver needs to find it. */
static int gate_flush(void *opaque)
{
    struct incmig__gate *g = opaque;
    int rc = incmig__disk_flush(g->d);

    if (!rc && g->owed)
        rc = incmig__owed_settle(g->owed);
    return to_errno(rc);
}

static int gate_trim(void *opaque, uint32_t count, uint64_t offset, bool fua)
{
    struct incmig__gate *g = opaque;
    uint64_t wf, wn, off, len;
    int r = modify_begin(g, count, offset, false, &wf, &wn);

    if (r)
        return r < 0 ? r : 0;
    if (!wn)
        return 0;
    len = blocks_len(g, wf, wn, &off);
    return modify_end(g, incmig__disk_punch(g->d, off, len), fua, wf, wn, wf,
                      wn);
}

static int gate_zero(void *opaque, uint32_t count, uint64_t offset,
                     bool may_trim, bool fua)
{
    struct incmig__gate *g = opaque;
    uint64_t wf, wn;
    int rc = 0, r = modify_begin(g, count, offset, true, &wf, &wn);

    if (r)
        return r < 0 ? r : 0;
    if (may_trim) {
        rc = incmig__disk_punch(g->d, offset, count);
    } else {
        /* The client wants the range to stay allocated: write zeroes. */
        uint64_t pos = offset, e = offset + count;
        while (!rc && pos < e) {
            size_t n = (size_t)min_u64(e - pos, sizeof zeroes);
            rc = incmig__disk_pwrite(g->d, zeroes, n, pos);
            pos += n;
        }
    }
    uint64_t cf, cn = touched(g, count, offset, &cf);
    return modify_end(g, rc, fua, wf, wn, cf, cn);
}

const struct incmig__nbd_ops incmig__gate_nbd_ops = {
    .pread = gate_pread,
    .pwrite = gate_pwrite,
    .flush = gate_flush,
    .trim = gate_trim,
    .zero = gate_zero,
};

void incmig__gate_abort(struct incmig__gate *g)
{
    pthread_mutex_lock(&g->lock);
    if (!g->aborted && g->nmissing)
        ERR("disk %u: %" PRIu64 " blocks will never arrive; the guest's "
            "requests for them fail with EIO", g->disk, g->nmissing);
    g->aborted = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}
