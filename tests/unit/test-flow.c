/* test-flow.c: unit tests of the source's window while the state stream
 * runs (flow.c, spec "FLOW (21)").
 *
 * A simulated path: the receiver acts on the stream at `rate` octets/s
 * after a fixed round trip; the source writes 64 KiB records whenever the
 * window is open.  Checked: the window never lets more than about the
 * slack's worth of stream queue at a slow receiver, it grows to keep a
 * long path full, and a FLOW that goes backwards or beyond what was
 * written is refused.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "incmig-internal.h"

#define REC (64u << 10)

/* Run the path for `secs` in steps of 0.1 ms; returns the octets acted on
 * and the largest queue (written, not yet acted on, past the round trip)
 * seen at the receiver, in seconds of its rate. */
static uint64_t run(struct incmig__flow *f, double rate, double rtt,
                    double secs, double *max_queue_s)
{
    const double dt = 1e-4;
    uint64_t acted = f->sent;        /* the receiver's count */
    double credit = 0, t = 0;
    /* what the receiver has been given: (arrival time, end) of records */
    static struct { double t; uint64_t end; } q[100000];
    unsigned qh = 0, qt = 0;
    double next_flow = 0;

    *max_queue_s = 0;
    for (; t < secs; t += dt) {
        while (incmig__flow_open(f) && qt < 100000) {
            uint64_t end = f->sent + REC;
            incmig__flow_sent(f, end, t);
            q[qt].t = t + rtt / 2;
            q[qt++].end = end;
        }
        /* the receiver acts on what has arrived, at its rate */
        credit += rate * dt;
        while (qh < qt && q[qh].t <= t && credit >= REC) {
            credit -= REC;
            acted = q[qh++].end;
        }
        if (qh == qt || q[qh].t > t)
            credit = 0;           /* idle: no saving up */
        uint64_t arrived = acted;
        for (unsigned i = qh; i < qt && q[i].t <= t; i++)
            arrived = q[i].end;
        double queue = (double)(arrived - acted) / rate;
        if (queue > *max_queue_s)
            *max_queue_s = queue;
        /* FLOW: every record acted on reaches the source rtt/2 later */
        if (t >= next_flow) {
            assert_int_equal(incmig__flow_acked(f, acted, t + rtt / 2), 0);
            next_flow = t + REC / rate;
        }
    }
    return acted - f->base;
}

static void slow_receiver_queue_bounded(void **state)
{
    (void)state;
    struct incmig__flow f;
    double q;

    incmig__flow_init(&f, 1000, 0);
    /* 30 MB/s receiver on loopback: at most the slack (4 ms) plus a few
     * records' worth queued, never the megabytes a socket holds */
    uint64_t n = run(&f, 30e6, 0.0002, 2.0, &q);
    assert_true(q < 0.004 + 4.0 * REC / 30e6);
    assert_true(n > 0.8 * 30e6 * 2.0);          /* and it kept it busy */
}

static void long_path_kept_full(void **state)
{
    (void)state;
    struct incmig__flow f;
    double q;

    incmig__flow_init(&f, 0, 0);
    /* 500 MB/s over a 20 ms round trip: the window must grow past the
     * path's 10 MB, or the rate would fall to 256 KiB / 20 ms */
    uint64_t n = run(&f, 500e6, 0.020, 2.0, &q);
    assert_true(n > 0.5 * 500e6 * 2.0);
    assert_true(f.window > 5000000);
}

static void bad_flow_refused(void **state)
{
    (void)state;
    struct incmig__flow f;

    incmig__flow_init(&f, 100, 0);
    incmig__flow_sent(&f, 100 + REC, 0.001);
    assert_int_equal(incmig__flow_acked(&f, 100 + REC + 1, 0.002),
                     INCMIG_EPROTO);                 /* beyond written */
    assert_int_equal(incmig__flow_acked(&f, 100 + REC / 2, 0.002), 0);
    assert_int_equal(incmig__flow_acked(&f, 100 + REC / 4, 0.003),
                     INCMIG_EPROTO);                 /* backwards */
    assert_true(incmig__flow_open(&f));
}

static void ring_full_extends_newest(void **state)
{
    (void)state;
    struct incmig__flow f;

    incmig__flow_init(&f, 0, 0);
    f.window = UINT64_MAX;        /* force far more records than the ring */
    for (unsigned i = 1; i <= 3 * INCMIG_FLOW_RING; i++)
        incmig__flow_sent(&f, (uint64_t)i * 4096, i * 1e-5);
    assert_int_equal(f.len, INCMIG_FLOW_RING);
    assert_int_equal(f.sent, 3 * INCMIG_FLOW_RING * 4096ull);
    assert_int_equal(incmig__flow_acked(&f, f.sent, 0.5), 0);
    assert_int_equal(f.len, 0);
    assert_true(f.min_rtt > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slow_receiver_queue_bounded),
        cmocka_unit_test(long_path_kept_full),
        cmocka_unit_test(bad_flow_refused),
        cmocka_unit_test(ring_full_extends_newest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
