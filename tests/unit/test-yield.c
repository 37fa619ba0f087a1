/* test-yield.c: unit tests of PUSH's yielding to the guest (yield.c).
 *
 * The controller sees cumulative samples (requests, busy seconds); each
 * test feeds windows with a chosen request count and latency, runs the
 * probes it asks for (the guest alone, latency `alone`), and checks the
 * cap: none while the guest is idle, shrinking when its latency rises
 * above what it is alone or its rate falls below 0.9 of it, growing back
 * when they recover.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "incmig-internal.h"

struct feed {
    struct incmig__yield y;
    double t, busy;
    uint64_t reqs;
    double alone;          /* the guest's latency in probes */
    int probes;
};

/* One window of 0.125 s (exact in binary): n requests of lat seconds
 * each, then the probe it asks for; the cap. */
static uint64_t window(struct feed *f, uint64_t n, double lat)
{
    f->t += 0.125;
    f->reqs += n;
    f->busy += (double)n * lat;
    uint64_t cap = incmig__yield_step(&f->y, f->t, f->reqs, f->busy);
    if (f->y.probe_due) {
        double t0 = f->t, b0 = f->busy;
        uint64_t r0 = f->reqs;
        f->t += 0.125;
        f->reqs += 500;
        f->busy += 500 * f->alone;
        incmig__yield_probe(&f->y, t0, r0, b0, f->t, f->reqs, f->busy);
        f->probes++;
    }
    return cap;
}

static void start(struct feed *f)
{
    *f = (struct feed){ .t = 100, .alone = 100e-6 };
    incmig__yield_init(&f->y);
    assert_int_equal(incmig__yield_step(&f->y, f->t, 0, 0), 0);
}

static void test_idle_guest_no_cap(void **state)
{
    struct feed f;
    (void)state;
    start(&f);
    for (int i = 0; i < 20; i++)
        assert_int_equal(window(&f, 1, 0.001), 0);   /* < 3 requests */
    assert_int_equal(f.y.backoffs, 0);
    assert_int_equal(f.probes, 0);       /* no probe for an idle guest */
}

static void test_busy_guest_backoff(void **state)
{
    struct feed f;
    uint64_t cap, low;
    (void)state;
    start(&f);
    cap = window(&f, 500, 100e-6);          /* busy: the cap starts */
    assert_true(cap > 0);
    assert_int_equal(f.probes, 1);          /* and the guest is probed */
    assert_true(f.y.base > 99e-6 && f.y.base < 101e-6);
    for (int i = 0; i < 10; i++)            /* alone-like latency: grows */
        cap = window(&f, 500, 110e-6);
    assert_true(cap > (uint64_t)64e6);
    low = cap;
    for (int i = 0; i < 3; i++)             /* latency triples: shrinks */
        low = window(&f, 200, 300e-6);
    assert_true(low < cap * 0.6);
    assert_int_equal(f.y.backoffs, 3);
    assert_int_equal(f.y.backoffs_lat, 3);  /* each for the latency */
    for (int i = 0; i < 30; i++)            /* latency back: grows again */
        cap = window(&f, 500, 100e-6);
    assert_true(cap > low * 16);
    /* the rate's moving average recovers over a few windows */
    assert_true(f.y.backoffs >= 3 && f.y.backoffs <= 6);
    assert_true(f.probes >= 3);             /* re-probed every 2 s */
    assert_true(f.probes <= 6);
    /* the guest goes quiet: no cap at once */
    assert_int_equal(window(&f, 0, 0), 0);
}

/* A guest slowed where the export cannot see it (same latency there,
 * fewer requests): the rate alone measured in the probes is the yardstick.
 * Below 0.9 of it PUSH backs off; at 0.96 it does not. */
static void test_rate_loss_backoff(void **state)
{
    struct feed f;
    uint64_t cap, low;
    (void)state;
    start(&f);
    window(&f, 500, 100e-6);                /* probed: 4000 requests/s */
    for (int i = 0; i < 10; i++)
        cap = window(&f, 480, 100e-6);      /* 0.96 of alone: grows */
    assert_int_equal(f.y.backoffs, 0);
    uint64_t b0 = f.y.backoffs;
    low = cap;
    for (int i = 0; i < 6; i++)             /* 0.8 of alone: shrinks */
        low = window(&f, 400, 100e-6);
    assert_true(f.y.backoffs >= b0 + 4);
    assert_int_equal(f.y.backoffs_lat, 0);  /* all for the rate */
    assert_true(low < cap / 2);
    /* one slow window among steady ones is no verdict */
    start(&f);
    window(&f, 500, 100e-6);
    for (int i = 0; i < 5; i++)
        window(&f, 500, 100e-6);
    window(&f, 360, 100e-6);               /* 0.72 of alone, once */
    assert_int_equal(f.y.backoffs, 0);
}

static void test_cap_floor(void **state)
{
    struct feed f;
    uint64_t cap = 0;
    (void)state;
    start(&f);
    window(&f, 100, 100e-6);
    for (int i = 0; i < 50; i++)
        cap = window(&f, 100, 10e-3);      /* far slower than alone */
    assert_true(cap >= (uint64_t)4e6);
    assert_true(cap <= (uint64_t)4e6 + 1);
}

static void test_short_window_ignored(void **state)
{
    struct feed f;
    (void)state;
    start(&f);
    uint64_t cap = window(&f, 500, 100e-6);
    /* 10 ms later, awful latency: not a window yet, cap unchanged */
    assert_int_equal(incmig__yield_step(&f.y, f.t + 0.01, f.reqs + 100,
                                        f.busy + 1.0), cap);
    assert_int_equal(f.y.backoffs, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_guest_no_cap),
        cmocka_unit_test(test_busy_guest_backoff),
        cmocka_unit_test(test_rate_loss_backoff),
        cmocka_unit_test(test_cap_floor),
        cmocka_unit_test(test_short_window_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
