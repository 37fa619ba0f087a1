/* yield.c: PUSH that yields to the guest (no --bandwidth cap given).
 *
 * Entry points: incmig__yield_init, incmig__yield_step, incmig__yield_probe
 * (incmig-internal.h, "PUSH yielding").  Pure logic: the caller samples
 * the guest's I/O at the export (the domain backend's activity op:
 * requests completed and the time they took, cumulative), applies the cap
 * this returns to the link's pacing (incmig__stream_set_bandwidth), and
 * runs the probes it asks for.
 *
 * PUSH's reads (and, on one host, the destination's writes) compete with
 * the guest's own I/O for the disk.  A guest that keeps one request in
 * flight loses rate in proportion to its latency, so latency is the
 * signal, compared with the guest's latency alone:
 *
 *   window  every WINDOW_S: n requests, mean latency lat = busy / n
 *   idle    n < IDLE_REQS: nobody to yield to, no cap (full speed)
 *   probe   the guest's latency alone: PUSH stops for one window (the
 *           caller sleeps) and that window's mean is `base`; asked for
 *           when the guest is busy and base is unknown or PROBE_EVERY_S
 *           old (a probe costs PUSH WINDOW_S of every PROBE_EVERY_S)
 *   busy    lat > base * SLACK + SLACK_S: the cap shrinks (SHRINK, at
 *           least MIN_BPS); else it grows (GROW: a guest that goes quiet
 *           soon gives PUSH the whole link)
 *
 * A minimum window, rather than the lowest seen, is not the base: on a
 * loaded host the lowest of many noisy windows is far below the typical
 * latency alone, and PUSH would crawl.
 */
#include "config.h"

#include "incmig-internal.h"

#define WINDOW_S 0.1
#define PROBE_EVERY_S 2.0
#define IDLE_REQS 3
#define START_BPS (32e6)
#define MIN_BPS (4e6)
#define MAX_BPS (4e9)
#define SLACK 1.3
#define SLACK_S 100e-6
#define GROW 1.2
#define SHRINK 0.6

void incmig__yield_init(struct incmig__yield *y)
{
    *y = (struct incmig__yield){ .base = -1 };
}

static void mark(struct incmig__yield *y, double now, uint64_t reqs,
                 double busy_s)
{
    y->have = true;
    y->t = now;
    y->reqs = reqs;
    y->busy = busy_s;
}

uint64_t incmig__yield_step(struct incmig__yield *y, double now,
                            uint64_t reqs, double busy_s)
{
    if (!y->have) {
        mark(y, now, reqs, busy_s);
        return y->out;
    }
    if (now - y->t < WINDOW_S)
        return y->out;
    uint64_t n = reqs >= y->reqs ? reqs - y->reqs : 0;
    double busy = busy_s >= y->busy ? busy_s - y->busy : 0;
    mark(y, now, reqs, busy_s);
    if (n < IDLE_REQS) {
        y->out = 0;
        y->probe_due = false;
        return 0;
    }
    y->probe_due = y->base < 0 || now - y->t_probe >= PROBE_EVERY_S;
    double lat = busy / (double)n;
    if (y->cap <= 0) {
        y->cap = START_BPS;
    } else if (y->base >= 0 && lat > y->base * SLACK + SLACK_S) {
        y->cap = y->cap * SHRINK > MIN_BPS ? y->cap * SHRINK : MIN_BPS;
        y->backoffs++;
    } else {
        y->cap = y->cap * GROW < MAX_BPS ? y->cap * GROW : MAX_BPS;
    }
    y->out = (uint64_t)y->cap;
    return y->out;
}

void incmig__yield_probe(struct incmig__yield *y, double t0, uint64_t reqs0,
                         double busy0, double t1, uint64_t reqs1,
                         double busy1)
{
    uint64_t n = reqs1 >= reqs0 ? reqs1 - reqs0 : 0;

    y->probe_due = false;
    y->t_probe = t1;
    y->probes++;
    y->probe_s += t1 - t0;
    if (n >= IDLE_REQS)
        y->base = (busy1 > busy0 ? busy1 - busy0 : 0) / (double)n;
    mark(y, t1, reqs1, busy1);
}
