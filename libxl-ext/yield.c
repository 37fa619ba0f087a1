/* yield.c: PUSH that yields to the guest (no --bandwidth cap given).
 *
 * Entry points: incmig__yield_init, incmig__yield_step, incmig__yield_probe
 * (incmig-internal.h, "PUSH yielding").  Pure logic: the caller samples
 * the guest's I/O at the export (the domain backend's activity op:
 * requests completed and the time they took, cumulative), applies the cap
 * this returns to the link's pacing (incmig__stream_set_bandwidth), and
 * runs the probes it asks for.
 *
 * PUSH competes with the guest for the disk (its reads and, on one host,
 * the destination's writes) and for the CPUs that carry the guest's
 * requests.  Two signals, each compared with the guest alone:
 *
 *   latency  the export's time per request.  Catches the disk; blind to
 *            the time a request spends outside the export (the guest's
 *            side, the hops in between), which is where a guest with one
 *            request in flight lost most of its rate on a 2-core host.
 *   rate     requests per second.  What the guest keeps is its rate, so
 *            this is the target itself: a one-at-a-time guest slowed
 *            anywhere shows it, and a guest writing at a rate of its own
 *            choosing (a rate limit, a think time) does not slow at all
 *            and does not hold PUSH back.
 *
 *   window   every WINDOW_S: n requests, mean latency lat = busy / n,
 *            rate = n / window, rate_avg its moving average (RATE_A per
 *            window: one noisy window is no verdict)
 *   idle     n < IDLE_REQS: nobody to yield to, no cap (full speed)
 *   probe    the guest alone: PUSH stops for one window (the caller
 *            sleeps); that window gives `base` (its mean latency) and
 *            `base_rate` (averaged with the probe before); asked for when
 *            the guest is busy and the base is unknown or PROBE_EVERY_S
 *            old (a probe costs PUSH WINDOW_S of every PROBE_EVERY_S)
 *   busy     lat > base * SLACK + SLACK_S, or rate_avg < base_rate *
 *            RATE_KEEP: the cap shrinks (SHRINK, at least MIN_BPS); else
 *            it grows (GROW: a guest that goes quiet soon gives PUSH the
 *            whole link)
 *
 * A minimum window, rather than the lowest seen, is not the base: on a
 * loaded host the lowest of many noisy windows is far below the typical
 * latency alone, and PUSH would crawl.  A guest that slows down of its own
 * accord looks like a guest PUSH slows: PUSH backs off until the next
 * probe measures the new rate alone, at most PROBE_EVERY_S later.
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
#define SHRINK 0.8
#define RATE_A 0.3
#define RATE_KEEP 0.9

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
    double t_prev = y->t;
    mark(y, now, reqs, busy_s);
    if (n < IDLE_REQS) {
        y->out = 0;
        y->rate_avg = 0;
        y->probe_due = false;
        return 0;
    }
    y->probe_due = y->base < 0 || now - y->t_probe >= PROBE_EVERY_S;
    double lat = busy / (double)n;
    double rate = (double)n / (now - t_prev);
    y->rate_avg = y->rate_avg > 0 ? y->rate_avg * (1 - RATE_A) + rate * RATE_A
                                  : rate;
    if (y->cap <= 0) {
        y->cap = START_BPS;
    } else if ((y->base >= 0 && lat > y->base * SLACK + SLACK_S) ||
               (y->base_rate > 0 && y->rate_avg < y->base_rate * RATE_KEEP)) {
        y->cap = y->cap * SHRINK > MIN_BPS ? y->cap * SHRINK : MIN_BPS;
        y->backoffs++;
        y->backoffs_lat += y->base >= 0 && lat > y->base * SLACK + SLACK_S;
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
    if (n >= IDLE_REQS && t1 > t0) {
        double r = (double)n / (t1 - t0);
        y->base = (busy1 > busy0 ? busy1 - busy0 : 0) / (double)n;
        y->base_rate = y->base_rate > 0 ? (y->base_rate + r) / 2 : r;
    }
    mark(y, t1, reqs1, busy1);
}
