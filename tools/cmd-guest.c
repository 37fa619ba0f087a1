/* cmd-guest.c: `xl-incmig guest`, the simulated guest.
 *
 * A workload that stands in for a domain: an NBD client (libnbd, aio) that
 * writes stamped blocks (stamp.h) at a paced rate with a hot spot, reads
 * blocks back and checks that each one carries exactly the version it last
 * acknowledged.  A lost write during a migration shows up as an older
 * version on a later read, and in the journal that `xl-incmig verify`
 * checks against the final image.
 *
 * Entry point: cmd_guest().
 *
 * Design notes:
 * - One thread, one libnbd handle, our own poll loop (so that signals, the
 *   token buckets and the stop deadline are all handled in one place).
 * - Requests live in a fixed array of `queue-depth` slots:
 *
 *     FREE --issue--> INFLIGHT --completion--> DONE --processed--> FREE
 *                        |                      | (error, link dead)
 *                        +--link dead--> RETRY <+
 *                                          |
 *                     (after reconnect) --issue--> INFLIGHT
 *
 *   A block covered by a slot that is not FREE is "busy" (bit in `busy`):
 *   no second request may touch it, so the version a read expects and the
 *   version a write produces are unambiguous.
 * - The server closing the connection is normal: the source pauses the
 *   guest for stop-and-copy that way.  Unacknowledged requests are retried
 *   on the next connection (a write carries the same bytes, so it is
 *   idempotent); the URIs are tried in order, cycling, for up to
 *   --reconnect-timeout seconds.
 * - Completion callbacks compare the slot's connection generation with the
 *   current one, so callbacks that libnbd runs while we close a dead
 *   handle do not overwrite the RETRY state.
 * - Longest stall: the longest interval during which the guest had work
 *   outstanding (a request in flight, or no connection) and nothing
 *   completed.  Gaps caused by our own pacing do not count.
 * - Journal (text, see write_journal): the acknowledged version of every
 *   written block, plus the pending version of writes not acknowledged at
 *   exit (either version is then correct).  Rewritten every second as a
 *   "checkpoint" so a killed guest leaves a usable journal, and as "final"
 *   at a clean exit.  The --stats-json figures are rewritten with it.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "incmig.h"
#include "stamp.h"
#include "xl-incmig.h"

#define MAX_URIS 16
#define MAX_QD 64
#define MAX_MULTI 8                     /* blocks in a multi-block request */
#define MAX_REQ_BYTES (1u << 20)        /* bounds each slot's buffer */
/* Bounds the per-block version array (4 bytes a block): 512 MiB. */
#define MAX_BLOCKS (UINT64_C(1) << 27)
#define MAX_SERVER_ERRORS 5             /* per request, on a live link */
#define MAX_REPORTED 50                 /* mismatch lines on stderr */
/* At the end of the run, how long unacknowledged writes may take. */
#define DRAIN_S 10

enum slot_state { S_FREE, S_INFLIGHT, S_DONE, S_RETRY };
enum slot_op { OP_READ, OP_WRITE, OP_FLUSH };

struct guest;

struct slot {
    enum slot_state state;
    enum slot_op op;
    uint64_t first;         /* first block */
    uint32_t count;         /* blocks (0 for a flush) */
    bool fua;
    int err;                /* errno from the completion callback */
    unsigned gen;           /* connection it was issued on */
    int failures;           /* server errors on a live connection */
    unsigned char *buf;
    struct guest *g;
};

struct bucket {
    double rate, tokens, cap, last;
};

struct guest {
    /* options */
    char *uri_buf;
    char *uris[MAX_URIS];
    int nuris;
    double seconds;
    uint64_t rate, read_rate;
    uint32_t bs;
    int hot_pct, hot_frac;
    int qd;
    uint64_t seed;
    const char *journal;
    const char *stats_json;
    bool reads_first;         /* whose turn it is at the next free slot */
    bool verify_reads;
    int reconnect_s;

    /* connection */
    struct nbd_handle *h;
    unsigned gen;
    int cur_uri;
    bool can_fua, can_flush;

    /* disk state */
    uint64_t size, nblocks;
    uint64_t span, span_bytes;  /* blocks I/O goes to; --span (0: all) */
    uint64_t hot_start, hot_len;
    uint32_t maxblk;
    uint32_t *ver;          /* acknowledged version per block, 0 = never */
    uint64_t *busy;         /* bitmap: covered by a non-FREE slot */
    struct slot *slots;
    int nbusy_slots;
    uint64_t rng;
    struct bucket wb, rb;
    uint32_t next_wcount, next_rcount;

    /* stats */
    uint64_t writes, write_bytes, reads, read_bytes, flushes;
    uint64_t reconnects, retries, mismatches, io_errors;
    double last_progress, longest_stall;
    bool was_busy;
    /* The switchover as the guest sees it: from its last completed
     * request on a lost connection to its first on the next one. */
    double switch_from, longest_switch;
    bool switching;
    double t_start;
};

static volatile sig_atomic_t stop_signals;
/* -v: report every URI that fails to connect (they fail many times a
 * second while the destination is not up yet, so not by default). */
static bool verbose_connect;

static void on_signal(int sig)
{
    (void)sig;
    stop_signals++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rnd(struct guest *g)
{
    /* xorshift64*: the workload's choices, seeded from --seed. */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * UINT64_C(0x2545f4914f6cdd1d);
}

static bool busy_test(const struct guest *g, uint64_t b)
{
    return g->busy[b / 64] & (UINT64_C(1) << (b % 64));
}

static void busy_set(struct guest *g, uint64_t first, uint32_t n, bool on)
{
    for (uint64_t b = first; b < first + n; b++) {
        if (on)
            g->busy[b / 64] |= UINT64_C(1) << (b % 64);
        else
            g->busy[b / 64] &= ~(UINT64_C(1) << (b % 64));
    }
}

static void bucket_init(struct bucket *k, uint64_t rate, double cap, double t)
{
    k->rate = (double)rate;
    k->cap = cap;
    k->tokens = cap;
    k->last = t;
}

static void bucket_refill(struct bucket *k, double t)
{
    k->tokens += k->rate * (t - k->last);
    if (k->tokens > k->cap)
        k->tokens = k->cap;
    k->last = t;
}

/* Seconds until `need` tokens are there (0 if now). */
static double bucket_wait(const struct bucket *k, double need)
{
    if (k->tokens >= need || k->rate <= 0)
        return 0;
    return (need - k->tokens) / k->rate;
}

static void note_progress(struct guest *g, double t)
{
    if (g->switching) {
        g->switching = false;
        double ms = (t - g->switch_from) * 1000;
        if (ms > g->longest_switch)
            g->longest_switch = ms;
        /* CLOCK_MONOTONIC stamps: comparable with the debug log of
         * xl-incmig's other commands on this machine (-v). */
        fprintf(stderr, "guest: first request completed on %s %.1f ms "
                "after the last one on the previous connection "
                "[%.6f -> %.6f]\n", g->uris[g->cur_uri], ms, g->switch_from,
                t);
    }
    if (g->was_busy && t - g->last_progress > g->longest_stall)
        g->longest_stall = t - g->last_progress;
    g->last_progress = t;
}

/* Track busy/idle transitions: an idle guest is not stalled. */
static void note_busy(struct guest *g, double t, bool busy)
{
    if (busy && !g->was_busy)
        g->last_progress = t;
    else if (busy && t - g->last_progress > g->longest_stall)
        g->longest_stall = t - g->last_progress;
    g->was_busy = busy;
}

static int complete_cb(void *user_data, int *error)
{
    struct slot *s = user_data;

    /* A callback of a connection we already gave up on: ignore. */
    if (s->gen != s->g->gen || s->state != S_INFLIGHT)
        return 1;
    s->err = *error;
    s->state = S_DONE;
    return 1;
}

static bool link_dead(struct guest *g)
{
    return !g->h || nbd_aio_is_dead(g->h) || nbd_aio_is_closed(g->h);
}

/* Connect to the first URI that answers, cycling through the list from
 * the one used last, until `deadline`. */
static int connect_any(struct guest *g, double deadline)
{
    int tried = 0;
    bool first_try = g->size == 0;

    for (;;) {
        const char *uri = g->uris[g->cur_uri];
        struct nbd_handle *h = nbd_create();
        if (!h) {
            fprintf(stderr, "guest: nbd_create: %s\n", nbd_get_error());
            return -1;
        }
        /* the operator's URIs may name key files (nbds://...?tls-psk-file=
         * or tls-certificates=), as nbdinfo and nbdcopy allow */
        nbd_set_uri_allow_local_file(h, true);
        if (nbd_connect_uri(h, uri) == 0) {
            int64_t size = nbd_get_size(h);
            if (size < 0) {
                fprintf(stderr, "guest: %s: cannot read the export size: %s\n",
                        uri, nbd_get_error());
                nbd_close(h);
                return -1;
            }
            if (!first_try && (uint64_t)size != g->size) {
                fprintf(stderr, "guest: %s: export is %" PRId64 " bytes, "
                        "expected %" PRIu64 " as before the reconnection; "
                        "the server is not serving the same disk\n",
                        uri, size, g->size);
                nbd_close(h);
                return -1;
            }
            g->size = (uint64_t)size;
            g->h = h;
            g->can_fua = nbd_can_fua(h) > 0;
            g->can_flush = nbd_can_flush(h) > 0;
            return 0;
        }
        if (verbose_connect)
            fprintf(stderr, "guest: %s: %s\n", uri, nbd_get_error());
        nbd_close(h);
        g->cur_uri = (g->cur_uri + 1) % g->nuris;
        if (++tried % g->nuris == 0) {
            if (now_s() >= deadline || stop_signals >= 2)
                return -1;
            struct timespec ts = { 0, 100 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
}

/* The connection is gone: every request not acknowledged is retried on
 * the next one. */
static void drop_link(struct guest *g)
{
    g->gen++;
    for (int i = 0; i < g->qd; i++) {
        struct slot *s = &g->slots[i];
        if (s->state == S_INFLIGHT || (s->state == S_DONE && s->err)) {
            s->state = S_RETRY;
            s->err = 0;
        }
    }
    if (g->h)
        nbd_close(g->h);
    g->h = NULL;
}

static uint64_t pick_block(struct guest *g, uint32_t count)
{
    uint64_t b;

    if (rnd(g) % 100 < (uint64_t)g->hot_pct)
        b = (g->hot_start + rnd(g) % g->hot_len) % g->span;
    else
        b = rnd(g) % g->span;
    if (b + count > g->span)
        b = g->span - count;
    return b;
}

/* A free range of `count` blocks, or false after a few tries (the hot spot
 * may be busy at a high queue depth; we then just try later). */
static bool pick_range(struct guest *g, uint32_t count, uint64_t *first_r)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t b = pick_block(g, count);
        bool ok = true;
        for (uint32_t i = 0; i < count && ok; i++)
            ok = !busy_test(g, b + i) && g->ver[b + i] < UINT32_MAX;
        if (ok) {
            *first_r = b;
            return true;
        }
    }
    return false;
}

static uint32_t pick_count(struct guest *g)
{
    uint32_t n = 1;

    if (g->maxblk > 1 && rnd(g) % 100 < 5)
        n = 2 + (uint32_t)(rnd(g) % (g->maxblk - 1));
    if (n > g->span)
        n = (uint32_t)g->span;
    return n;
}

/* Send the request of slot s on the current connection. */
static void submit(struct guest *g, struct slot *s)
{
    nbd_completion_callback cb = { .callback = complete_cb, .user_data = s };
    uint64_t off = s->first * g->bs;
    size_t len = (size_t)s->count * g->bs;
    int64_t cookie;

    s->gen = g->gen;
    s->err = 0;
    s->state = S_INFLIGHT;
    switch (s->op) {
    case OP_READ:
        cookie = nbd_aio_pread(g->h, s->buf, len, off, cb, 0);
        break;
    case OP_WRITE:
        cookie = nbd_aio_pwrite(g->h, s->buf, len, off, cb,
                                s->fua && g->can_fua ? LIBNBD_CMD_FLAG_FUA
                                                     : 0);
        break;
    default:
        cookie = g->can_flush ? nbd_aio_flush(g->h, cb, 0) : 0;
        if (!g->can_flush)
            s->state = S_DONE;
        break;
    }
    if (cookie < 0) {
        /* The link died under us (checked by the main loop), or libnbd
         * refused the request: either way retry it later; a request that
         * keeps failing on a live link ends the run. */
        s->state = S_DONE;
        s->err = nbd_get_errno() ? nbd_get_errno() : EIO;
    }
}

static struct slot *free_slot(struct guest *g)
{
    for (int i = 0; i < g->qd; i++)
        if (g->slots[i].state == S_FREE)
            return &g->slots[i];
    return NULL;
}

/* Issue a write (or a flush) in slot s if the write bucket allows. */
static bool try_write(struct guest *g, struct slot *s)
{
    double wneed = (double)g->next_wcount * g->bs;

    if (g->rate <= 0 || g->wb.tokens < wneed)
        return false;
    uint64_t r = rnd(g) % 1000;
    if (r < 5) {
        s->op = OP_FLUSH;
        s->first = 0;
        s->count = 0;
        s->fua = false;
    } else if (pick_range(g, g->next_wcount, &s->first)) {
        s->op = OP_WRITE;
        s->count = g->next_wcount;
        s->fua = r < 15;
        for (uint32_t i = 0; i < s->count; i++)
            stamp_fill(s->buf + (size_t)i * g->bs, g->bs, g->seed,
                       s->first + i, g->ver[s->first + i] + 1u);
        busy_set(g, s->first, s->count, true);
        g->wb.tokens -= wneed;
        g->next_wcount = pick_count(g);
        s->failures = 0;
    } else {
        return false;
    }
    submit(g, s);
    g->nbusy_slots++;
    return true;
}

/* Issue a read in slot s if the read bucket allows. */
static bool try_read(struct guest *g, struct slot *s)
{
    double rneed = (double)g->next_rcount * g->bs;

    if (g->read_rate <= 0 || g->rb.tokens < rneed ||
        !pick_range(g, g->next_rcount, &s->first))
        return false;
    s->op = OP_READ;
    s->count = g->next_rcount;
    s->fua = false;
    busy_set(g, s->first, s->count, true);
    g->rb.tokens -= rneed;
    g->next_rcount = pick_count(g);
    s->failures = 0;
    submit(g, s);
    g->nbusy_slots++;
    return true;
}

/* Start new requests while slots and tokens allow, reads and writes taking
 * turns at the free slots (so that a write rate that fills the queue does
 * not starve the reads).  Returns how long the loop may sleep before
 * tokens for the next request are there. */
static double issue_new(struct guest *g, double t)
{
    bucket_refill(&g->wb, t);
    bucket_refill(&g->rb, t);
    for (;;) {
        struct slot *s = free_slot(g);
        if (!s)
            return 0.1;
        bool issued;
        g->reads_first = !g->reads_first;
        if (g->reads_first)
            issued = try_read(g, s) || try_write(g, s);
        else
            issued = try_write(g, s) || try_read(g, s);
        if (!issued) {
            double wneed = (double)g->next_wcount * g->bs;
            double rneed = (double)g->next_rcount * g->bs;
            double w1 = g->rate > 0 ? bucket_wait(&g->wb, wneed) : 1;
            double w2 = g->read_rate > 0 ? bucket_wait(&g->rb, rneed) : 1;
            double wait = w1 < w2 ? w1 : w2;
            /* Zero wait with nothing issued: every pick hit a busy
             * block; let completions free some. */
            if (wait < 0.001)
                wait = 0.001;
            return wait > 0.1 ? 0.1 : wait;
        }
    }
}

static void report_mismatch(struct guest *g, const struct slot *s,
                            uint64_t b, const unsigned char *p)
{
    uint64_t fb, fv;

    g->mismatches++;
    if (g->mismatches > MAX_REPORTED) {
        if (g->mismatches == MAX_REPORTED + 1)
            fprintf(stderr, "guest: further mismatches are counted, not "
                    "shown\n");
        return;
    }
    if (stamp_identify(p, g->bs, g->seed, &fb, &fv)) {
        if (fb == b)
            fprintf(stderr, "guest: MISMATCH block %" PRIu64 ": expected "
                    "version %" PRIu32 ", found version %" PRIu64 "\n",
                    b, g->ver[b], fv);
        else
            fprintf(stderr, "guest: MISMATCH block %" PRIu64 ": expected "
                    "version %" PRIu32 ", found block %" PRIu64
                    " version %" PRIu64 " (misplaced write)\n",
                    b, g->ver[b], fb, fv);
    } else {
        fprintf(stderr, "guest: MISMATCH block %" PRIu64 ": expected version "
                "%" PRIu32 ", found %s\n", b, g->ver[b],
                stamp_is_zero(p, g->bs) ? "zeroes" : "foreign data");
    }
    (void)s;
}

/* Act on completed requests.  Returns -1 when a request failed too often
 * on a live connection. */
static int process_done(struct guest *g, double t)
{
    for (int i = 0; i < g->qd; i++) {
        struct slot *s = &g->slots[i];
        if (s->state != S_DONE)
            continue;
        if (s->err) {
            /* The link is alive (drop_link took the others): the server
             * refused this request. */
            g->io_errors++;
            fprintf(stderr, "guest: %s of block %" PRIu64 " (+%" PRIu32
                    ") failed: %s%s\n",
                    s->op == OP_READ ? "read" : s->op == OP_WRITE ? "write"
                                                               : "flush",
                    s->first, s->count, strerror(s->err),
                    ++s->failures < MAX_SERVER_ERRORS ? "; retrying" : "");
            if (s->failures >= MAX_SERVER_ERRORS)
                return -1;
            s->state = S_RETRY;
            continue;
        }
        note_progress(g, t);
        switch (s->op) {
        case OP_READ:
            g->reads++;
            g->read_bytes += (uint64_t)s->count * g->bs;
            for (uint32_t k = 0; g->verify_reads && k < s->count; k++) {
                uint64_t b = s->first + k;
                const unsigned char *p = s->buf + (size_t)k * g->bs;
                /* Never-written blocks hold whatever the disk had. */
                if (g->ver[b] && !stamp_check(p, g->bs, g->seed, b, g->ver[b]))
                    report_mismatch(g, s, b, p);
            }
            break;
        case OP_WRITE:
            g->writes++;
            g->write_bytes += (uint64_t)s->count * g->bs;
            for (uint32_t k = 0; k < s->count; k++)
                g->ver[s->first + k]++;
            break;
        default:
            g->flushes++;
            break;
        }
        busy_set(g, s->first, s->count, false);
        s->state = S_FREE;
        g->nbusy_slots--;
    }
    return 0;
}

/* Pending version of block b if a write not yet acknowledged covers it. */
static uint32_t pending_version(const struct guest *g, uint64_t b)
{
    for (int i = 0; i < g->qd; i++) {
        const struct slot *s = &g->slots[i];
        if (s->state != S_FREE && s->op == OP_WRITE && b >= s->first &&
            b < s->first + s->count)
            return g->ver[b] + 1;
    }
    return 0;
}

/* Journal format (text, one record a line):
 *   incmig-guest-journal 1
 *   seed <u64>
 *   block-size <bytes>
 *   blocks <disk size in blocks>
 *   state final|checkpoint
 *   <block> <version> [<pending version>]     one per written block, sorted
 *   end <number of block lines>
 * The `end` line proves the file is complete. */
static int write_journal(struct guest *g, bool final)
{
    char tmp[PATH_MAX];
    uint64_t n = 0;
    int rc = -1;
    FILE *f = NULL;

    if (!g->journal)
        return 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", g->journal) >= (int)sizeof tmp) {
        fprintf(stderr, "guest: journal path too long: %s\n", g->journal);
        goto out;
    }
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "guest: cannot write the journal %s: %s\n", tmp,
                strerror(errno));
        goto out;
    }
    fprintf(f, "incmig-guest-journal 1\nseed %" PRIu64 "\nblock-size %" PRIu32
            "\nblocks %" PRIu64 "\nstate %s\n", g->seed, g->bs, g->nblocks,
            final ? "final" : "checkpoint");
    for (uint64_t w = 0; w < (g->nblocks + 63) / 64; w++) {
        for (uint64_t b = w * 64; b < (w + 1) * 64 && b < g->nblocks; b++) {
            uint32_t p = busy_test(g, b) ? pending_version(g, b) : 0;
            if (!g->ver[b] && !p)
                continue;
            if (p)
                fprintf(f, "%" PRIu64 " %" PRIu32 " %" PRIu32 "\n", b,
                        g->ver[b], p);
            else
                fprintf(f, "%" PRIu64 " %" PRIu32 "\n", b, g->ver[b]);
            n++;
        }
    }
    fprintf(f, "end %" PRIu64 "\n", n);
    if (ferror(f) | fclose(f)) {
        f = NULL;
        fprintf(stderr, "guest: writing the journal %s failed: %s\n", tmp,
                strerror(errno));
        goto out;
    }
    f = NULL;
    if (rename(tmp, g->journal) < 0) {
        fprintf(stderr, "guest: cannot rename %s to %s: %s\n", tmp,
                g->journal, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    return rc;
}

/* Also rewritten every second (tests poll it to see the guest make
 * progress), so it goes through a rename like the journal. */
static int write_stats(struct guest *g, double elapsed)
{
    char tmp[PATH_MAX];
    FILE *f;

    if (!g->stats_json)
        return 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", g->stats_json) >=
        (int)sizeof tmp) {
        fprintf(stderr, "guest: path too long: %s\n", g->stats_json);
        return -1;
    }
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "guest: cannot write %s: %s\n", tmp,
                strerror(errno));
        return -1;
    }
    fprintf(f, "{\"seconds\": %.3f, \"writes\": %" PRIu64
            ", \"write_bytes\": %" PRIu64 ", \"reads\": %" PRIu64
            ", \"read_bytes\": %" PRIu64 ", \"flushes\": %" PRIu64
            ", \"reconnects\": %" PRIu64 ", \"retried_requests\": %" PRIu64
            ", \"longest_stall_ms\": %.1f, \"longest_switch_ms\": %.1f"
            ", \"mismatches\": %" PRIu64
            ", \"io_errors\": %" PRIu64 ", \"seed\": %" PRIu64 "}\n",
            elapsed, g->writes, g->write_bytes, g->reads, g->read_bytes,
            g->flushes, g->reconnects, g->retries,
            g->longest_stall * 1000, g->longest_switch, g->mismatches,
            g->io_errors, g->seed);
    if (ferror(f) | fclose(f) || rename(tmp, g->stats_json) < 0) {
        fprintf(stderr, "guest: writing %s failed: %s\n", g->stats_json,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* An NBD URI as libnbd takes it (nbd_connect_uri(3)): a scheme of nbd or
 * nbds, with +unix or +vsock, then "://".  Anything else would only fail
 * to connect, again and again until --reconnect-timeout. */
static bool nbd_uri(const char *t)
{
    static const char *const schemes[] = {
        "nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://",
        "nbds+vsock://",
    };
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
        if (!strncmp(t, schemes[i], strlen(schemes[i])))
            return true;
    return false;
}

static int parse_uris(struct guest *g, const char *arg)
{
    char *save = NULL;

    free(g->uri_buf);
    g->uri_buf = strdup(arg);
    if (!g->uri_buf)
        return -1;
    g->nuris = 0;
    for (char *t = strtok_r(g->uri_buf, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (g->nuris == MAX_URIS)
            return -1;
        if (!nbd_uri(t)) {
            fprintf(stderr, "xl-incmig guest: --nbd: '%s' is not an NBD URI "
                    "(nbd://HOST[:PORT][/EXPORT], nbd+unix:///[EXPORT]"
                    "?socket=PATH, or nbds... with TLS)\n", t);
            return -2;
        }
        g->uris[g->nuris++] = t;
    }
    return g->nuris ? 0 : -1;
}

static int parse_int(const char *s, long lo, long hi, long *v_r)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *v_r = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: xl-incmig guest --nbd URI[,URI...] [options]\n"
"  --seconds N             run time, 0 = until SIGTERM/SIGINT (default 10)\n"
"  --rate R                write bytes/s, e.g. 50M; 0 = no writes (default 4M)\n"
"  --read-rate R           read bytes/s (default: --rate, or 4M if it is 0)\n"
"  --block-size B          power of two, 512..1M (default 4096)\n"
"  --hot P:F               P%% of I/O goes to F%% of the span (default 80:10)\n"
"  --span S                I/O only to the disk's first S bytes, e.g. 1G\n"
"                          (default: the whole disk)\n"
"  --queue-depth N         requests in flight, 1..%d (default 16)\n"
"  --seed S                stamp and workload seed (default: random)\n"
"  --journal FILE          final version of every written block\n"
"  --stats-json FILE       figures of the summary line, as JSON\n"
"  --no-verify-reads       do not check what reads return\n"
"  --reconnect-timeout S   how long to retry the URIs (default 60)\n",
            MAX_QD);
}

int cmd_guest(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "nbd", required_argument, NULL, 'n' },
        { "seconds", required_argument, NULL, 's' },
        { "rate", required_argument, NULL, 'r' },
        { "read-rate", required_argument, NULL, 'R' },
        { "block-size", required_argument, NULL, 'b' },
        { "hot", required_argument, NULL, 'H' },
        { "span", required_argument, NULL, 'P' },
        { "queue-depth", required_argument, NULL, 'q' },
        { "seed", required_argument, NULL, 'S' },
        { "journal", required_argument, NULL, 'j' },
        { "stats-json", required_argument, NULL, 'J' },
        { "verify-reads", no_argument, NULL, 'V' },
        { "no-verify-reads", no_argument, NULL, 'N' },
        { "reconnect-timeout", required_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct guest g = {
        .seconds = 10, .rate = 4u << 20, .bs = 4096, .hot_pct = 80,
        .hot_frac = 10, .qd = 16, .verify_reads = true, .reconnect_s = 60,
    };
    bool have_seed = false, have_read_rate = false;
    int ret = 2, c;
    long v;
    uint64_t u;
    double t_end, drain_deadline = 0;
    bool stopping = false, fatal = false;
    struct sigaction sa = { .sa_handler = on_signal }, old_int, old_term;
    bool handlers = false;

    optind = 1;
    while ((c = getopt_long(argc, argv, "v", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            c = parse_uris(&g, optarg);
            if (c == -2)
                goto out;
            if (c < 0) {
                fprintf(stderr, "xl-incmig guest: --nbd wants 1 to %d NBD "
                        "URIs separated by commas\n", MAX_URIS);
                goto out;
            }
            break;
        case 's':
            if (parse_int(optarg, 0, 1000000, &v) < 0) {
                fprintf(stderr, "xl-incmig guest: --seconds: not a number "
                        "of seconds: %s\n", optarg);
                goto out;
            }
            g.seconds = (double)v;
            break;
        case 'r':
        case 'R':
            if (incmig_parse_size(optarg, &u) < 0 || u > (UINT64_C(1) << 40)) {
                fprintf(stderr, "xl-incmig guest: --%s: not a rate in "
                        "bytes/s (e.g. 50M): %s\n",
                        c == 'r' ? "rate" : "read-rate", optarg);
                goto out;
            }
            if (c == 'r') {
                g.rate = u;
            } else {
                g.read_rate = u;
                have_read_rate = true;
            }
            break;
        case 'b':
            if (incmig_parse_size(optarg, &u) < 0 || u < 512 ||
                u > MAX_REQ_BYTES || (u & (u - 1))) {
                fprintf(stderr, "xl-incmig guest: --block-size must be a "
                        "power of two from 512 to 1M: %s\n", optarg);
                goto out;
            }
            g.bs = (uint32_t)u;
            break;
        case 'H': {
            int p, f, n = 0;
            if (sscanf(optarg, "%d:%d%n", &p, &f, &n) != 2 ||
                optarg[n] != '\0' || p < 0 || p > 100 || f < 1 || f > 100) {
                fprintf(stderr, "xl-incmig guest: --hot wants PERCENT:"
                        "FRACTION, both 0..100 (e.g. 80:10): %s\n", optarg);
                goto out;
            }
            g.hot_pct = p;
            g.hot_frac = f;
            break;
        }
        case 'P':
            if (incmig_parse_size(optarg, &u) < 0 || u == 0) {
                fprintf(stderr, "xl-incmig guest: --span: not a size in "
                        "bytes (e.g. 1G): %s\n", optarg);
                goto out;
            }
            g.span_bytes = u;
            break;
        case 'q':
            if (parse_int(optarg, 1, MAX_QD, &v) < 0) {
                fprintf(stderr, "xl-incmig guest: --queue-depth must be 1 "
                        "to %d: %s\n", MAX_QD, optarg);
                goto out;
            }
            g.qd = (int)v;
            break;
        case 'S': {
            char *end;
            errno = 0;
            g.seed = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end) {
                fprintf(stderr, "xl-incmig guest: --seed: not a number: "
                        "%s\n", optarg);
                goto out;
            }
            have_seed = true;
            break;
        }
        case 'j':
            g.journal = optarg;
            break;
        case 'J':
            g.stats_json = optarg;
            break;
        case 'V':
            g.verify_reads = true;
            break;
        case 'N':
            g.verify_reads = false;
            break;
        case 't':
            if (parse_int(optarg, 1, 86400, &v) < 0) {
                fprintf(stderr, "xl-incmig guest: --reconnect-timeout must "
                        "be 1 to 86400 seconds: %s\n", optarg);
                goto out;
            }
            g.reconnect_s = (int)v;
            break;
        case 'v':
            verbose_connect = true;
            break;
        case 'h':
            usage(stdout);
            ret = 0;
            goto out;
        default:
            fprintf(stderr, "xl-incmig guest: unknown option; see "
                    "xl-incmig guest --help\n");
            goto out;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "xl-incmig guest: unexpected argument: %s\n",
                argv[optind]);
        goto out;
    }
    if (!g.nuris) {
        fprintf(stderr, "xl-incmig guest: --nbd URI is required (e.g. "
                "nbd+unix:///?socket=/run/disk.sock)\n");
        goto out;
    }
    if (!have_read_rate)
        g.read_rate = g.rate ? g.rate : 4u << 20;
    if (!have_seed)
        g.seed = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();

    ret = 1;
    /* No SA_RESTART: a signal must wake poll() and the connect. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    signal(SIGPIPE, SIG_IGN);
    handlers = true;
    stop_signals = 0;

    g.t_start = now_s();
    if (connect_any(&g, g.t_start + g.reconnect_s) < 0) {
        fprintf(stderr, "guest: cannot connect to %s%s within %d s; is the "
                "disk served there?\n", g.uris[0],
                g.nuris > 1 ? " (or the other URIs)" : "", g.reconnect_s);
        goto out;
    }
    g.nblocks = g.size / g.bs;
    if (g.nblocks == 0 || g.nblocks > MAX_BLOCKS) {
        fprintf(stderr, "guest: the disk (%" PRIu64 " bytes) must hold 1 to "
                "%" PRIu64 " blocks of %" PRIu32 " bytes; change "
                "--block-size\n", g.size, MAX_BLOCKS, g.bs);
        goto out;
    }
    g.maxblk = MAX_REQ_BYTES / g.bs < MAX_MULTI ? MAX_REQ_BYTES / g.bs
                                                : MAX_MULTI;
    g.span = g.span_bytes ? g.span_bytes / g.bs : g.nblocks;
    if (g.span == 0 || g.span > g.nblocks) {
        fprintf(stderr, "guest: --span %" PRIu64 " must hold at least one "
                "block of %" PRIu32 " bytes and at most the disk's %" PRIu64
                " bytes\n", g.span_bytes, g.bs, g.size);
        goto out;
    }
    g.hot_len = g.span * (uint64_t)g.hot_frac / 100;
    if (g.hot_len == 0)
        g.hot_len = 1;
    g.rng = g.seed ^ UINT64_C(0x9e3779b97f4a7c15);
    if (!g.rng)
        g.rng = 1;
    g.hot_start = rnd(&g) % g.span;
    g.ver = calloc(g.nblocks, sizeof *g.ver);
    g.busy = calloc((g.nblocks + 63) / 64, sizeof *g.busy);
    g.slots = calloc((size_t)g.qd, sizeof *g.slots);
    if (!g.ver || !g.busy || !g.slots) {
        fprintf(stderr, "guest: out of memory for %" PRIu64 " blocks\n",
                g.nblocks);
        goto out;
    }
    for (int i = 0; i < g.qd; i++) {
        g.slots[i].g = &g;
        g.slots[i].buf = malloc((size_t)g.maxblk * g.bs);
        if (!g.slots[i].buf) {
            fprintf(stderr, "guest: out of memory for request buffers\n");
            goto out;
        }
    }
    g.next_wcount = pick_count(&g);
    g.next_rcount = pick_count(&g);
    {
        double t = now_s();
        double wcap = (double)g.rate / 20, rcap = (double)g.read_rate / 20;
        double minc = (double)g.maxblk * g.bs;
        bucket_init(&g.wb, g.rate, wcap > minc ? wcap : minc, t);
        bucket_init(&g.rb, g.read_rate, rcap > minc ? rcap : minc, t);
    }
    fprintf(stderr, "guest: seed %" PRIu64 ", %" PRIu64 " blocks of %" PRIu32
            " bytes, writes %" PRIu64 " B/s, reads %" PRIu64 " B/s, via %s\n",
            g.seed, g.nblocks, g.bs, g.rate, g.read_rate, g.uris[g.cur_uri]);

    t_end = g.t_start + g.seconds;
    double next_journal = g.t_start + 1;
    for (;;) {
        double t = now_s();

        if (!stopping && ((g.seconds > 0 && t >= t_end) || stop_signals)) {
            stopping = true;
            drain_deadline = t + (g.reconnect_s < DRAIN_S ? g.reconnect_s
                                                          : DRAIN_S);
        }
        if (stopping) {
            /* Reads not yet answered no longer matter; writes do. */
            for (int i = 0; i < g.qd; i++) {
                struct slot *s = &g.slots[i];
                if (s->state == S_RETRY && s->op != OP_WRITE) {
                    busy_set(&g, s->first, s->count, false);
                    s->state = S_FREE;
                    g.nbusy_slots--;
                }
            }
            if (g.nbusy_slots == 0 || t >= drain_deadline ||
                stop_signals >= 2)
                break;
        }
        if (g.h && link_dead(&g)) {
            fprintf(stderr, "guest: connection to %s ended with %d "
                    "request(s) in flight; reconnecting [%.6f]\n",
                    g.uris[g.cur_uri], g.nbusy_slots, now_s());
            drop_link(&g);
        }
        if (process_done(&g, t) < 0) {
            fatal = true;
            break;
        }
        if (!g.h) {
            note_busy(&g, t, true);
            double deadline = t + g.reconnect_s;
            /* The run ends while we wait: give the pending writes the
             * same drain time as at a normal stop. */
            double run_limit = (t > t_end ? t : t_end) + DRAIN_S;
            if (stopping && drain_deadline < deadline)
                deadline = drain_deadline;
            else if (g.seconds > 0 && run_limit < deadline)
                deadline = run_limit;
            if (connect_any(&g, deadline) < 0) {
                if (!stopping && (g.seconds == 0 || now_s() < t_end)) {
                    fprintf(stderr, "guest: could not reconnect to any of "
                            "the URIs within %d s\n", g.reconnect_s);
                    fatal = true;
                }
                break;
            }
            g.reconnects++;
            t = now_s();
            fprintf(stderr, "guest: reconnected to %s after %.0f ms "
                    "[%.6f]\n", g.uris[g.cur_uri],
                    (t - g.last_progress) * 1000, t);
            g.switching = true;
            g.switch_from = g.last_progress;
            for (int i = 0; i < g.qd; i++) {
                if (g.slots[i].state == S_RETRY) {
                    g.retries++;
                    submit(&g, &g.slots[i]);
                }
            }
            continue;
        }
        double wait = 0.1;
        if (!stopping)
            wait = issue_new(&g, t);
        /* A request refused by a live server is retried here. */
        for (int i = 0; i < g.qd; i++)
            if (g.slots[i].state == S_RETRY)
                submit(&g, &g.slots[i]);
        note_busy(&g, t, g.nbusy_slots > 0);

        if (t >= next_journal) {
            write_journal(&g, false);
            write_stats(&g, t - g.t_start);
            next_journal = t + 1;
        }

        /* Completions from submit() (a flush on a server without flush,
         * or a refused request) need no waiting. */
        for (int i = 0; i < g.qd; i++)
            if (g.slots[i].state == S_DONE)
                wait = 0;
        unsigned dir = nbd_aio_get_direction(g.h);
        struct pollfd pfd = { .fd = nbd_aio_get_fd(g.h) };
        if (dir & LIBNBD_AIO_DIRECTION_READ)
            pfd.events |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE)
            pfd.events |= POLLOUT;
        if (pfd.fd < 0)
            continue;   /* link_dead() catches it on the next turn */
        int r = poll(&pfd, 1, (int)(wait * 1000 + 0.5));
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "guest: poll: %s\n", strerror(errno));
            fatal = true;
            break;
        }
        if (r > 0) {
            /* HUP/ERR: reading lets libnbd see the end and go dead. */
            if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
                nbd_aio_notify_read(g.h);
            else if (pfd.revents & POLLOUT)
                nbd_aio_notify_write(g.h);
        }
    }

    double elapsed = now_s() - g.t_start;
    if (g.h && !link_dead(&g)) {
        process_done(&g, now_s());
        nbd_shutdown(g.h, 0);
    }
    if (g.nbusy_slots)
        fprintf(stderr, "guest: %d request(s) not acknowledged at exit; "
                "the journal accepts either version for the blocks they "
                "write\n", g.nbusy_slots);
    int jrc = write_journal(&g, true);
    int src = write_stats(&g, elapsed);
    fprintf(stderr, "guest: %" PRIu64 " writes (%.1f MB), %" PRIu64
            " reads, %" PRIu64 " reconnects, longest stall %.0f ms, %" PRIu64
            " mismatches\n", g.writes, g.write_bytes / 1048576.0, g.reads,
            g.reconnects, g.longest_stall * 1000, g.mismatches);
    ret = fatal || jrc < 0 || src < 0 || g.mismatches ? 1 : 0;

out:
    if (handlers) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    if (g.h)
        nbd_close(g.h);
    if (g.slots)
        for (int i = 0; i < g.qd; i++)
            free(g.slots[i].buf);
    free(g.slots);
    free(g.busy);
    free(g.ver);
    free(g.uri_buf);
    return ret;
}
