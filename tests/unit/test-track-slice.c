/* test-track-slice.c: unit tests of how blkback-patch's xen-blkback marks a
 * range of sectors in its write bitmap: at most TRACK_SLICE_BITS blocks per
 * hold of the irq-safe lock, so a disk-wide discard never holds interrupts
 * off for time proportional to the disk.
 *
 * The code under test is the kernel's own: track_mark_slice() and
 * __xen_blkif_track_mark() are cut from patch 0001's track.c at build time
 * (unit/track-slice.inc, see Makefile.am) and compiled here against stand-ins
 * of the few kernel helpers they use.  The stand-ins record each lock hold
 * (bits set while held, nesting) and each cond_resched().
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- stand-ins for the kernel ---- */
typedef uint64_t sector_t;
typedef uint64_t u64;
#define unlikely(x) (x)
#define BITS_PER_LONG (8 * sizeof(unsigned long))

struct xen_blkif_track {
    int lock;                   /* 1 while held */
    unsigned long *live;
    unsigned long nbits;
    unsigned int shift;
    bool stale;
    u64 marked;
};
struct xen_blkif {
    struct xen_blkif_track track;
};

static unsigned int holds;          /* lock holds */
static u64 held_bits, max_held_bits; /* bits set in this hold, the most */
static unsigned int rescheds;
static void (*on_resched)(struct xen_blkif_track *);
static struct xen_blkif_track *resched_track;

static void lock(int *l)
{
    assert_int_equal(*l, 0);
    *l = 1;
    holds++;
    held_bits = 0;
}

static void unlock(int *l)
{
    assert_int_equal(*l, 1);
    *l = 0;
    if (held_bits > max_held_bits)
        max_held_bits = held_bits;
}

#define spin_lock_irqsave(l, flags) ((flags) = 0, lock(l))
#define spin_unlock_irqrestore(l, flags) ((void)(flags), unlock(l))

static void bitmap_set(unsigned long *map, unsigned int start, unsigned int n)
{
    assert_int_equal(resched_track->lock, 1);
    for (unsigned int i = start; i < start + n; i++)
        map[i / BITS_PER_LONG] |= 1UL << (i % BITS_PER_LONG);
    held_bits += n;
}

static void cond_resched(void)
{
    assert_int_equal(resched_track->lock, 0);
    rescheds++;
    if (on_resched)
        on_resched(resched_track);
}

void __xen_blkif_track_mark(struct xen_blkif *blkif, sector_t sector,
                            sector_t nr, bool count, bool may_sleep);

#include "unit/track-slice.inc"

/* ---- helpers ---- */
static struct xen_blkif vbd;

/* Tracking on a disk of `sectors` sectors in blocks of 512 << shift bytes. */
static void start(u64 sectors, unsigned int shift)
{
    struct xen_blkif_track *t = &vbd.track;

    free(t->live);
    memset(t, 0, sizeof(*t));
    t->shift = shift;
    t->nbits = (sectors + (1ULL << shift) - 1) >> shift;
    t->live = calloc((t->nbits + BITS_PER_LONG - 1) / BITS_PER_LONG + 1,
                     sizeof(unsigned long));
    assert_non_null(t->live);
    resched_track = t;
    holds = rescheds = 0;
    max_held_bits = 0;
    on_resched = NULL;
}

static bool bit(const unsigned long *map, u64 i)
{
    return map[i / BITS_PER_LONG] >> (i % BITS_PER_LONG) & 1;
}

/* The bits set are exactly [first, last] (last < first: none). */
static void assert_exactly(const struct xen_blkif_track *t, u64 first, u64 last)
{
    /* every word, the padding after nbits included */
    u64 words = (t->nbits + BITS_PER_LONG - 1) / BITS_PER_LONG + 1;

    for (u64 i = 0; i < words * BITS_PER_LONG; i++)
        if (bit(t->live, i) != (i >= first && i <= last))
            fail_msg("bit %llu is %d, want [%llu, %llu]",
                     (unsigned long long)i, bit(t->live, i),
                     (unsigned long long)first, (unsigned long long)last);
}

static void teardown_vbd(void)
{
    free(vbd.track.live);
    vbd.track.live = NULL;
}

/* ---- tests ---- */

/* A discard of a whole 2049 MiB disk in 4 KiB blocks: 524544 blocks, two
 * whole slices and a partial one, a reschedule between slices. */
static void test_disk_wide_discard(void **state)
{
    u64 sectors = 2049ULL << 11;

    start(sectors, 3);
    __xen_blkif_track_mark(&vbd, 0, sectors, true, true);
    assert_exactly(&vbd.track, 0, 524543);
    assert_int_equal(holds, 3);
    assert_int_equal(rescheds, 2);
    assert_int_equal(max_held_bits, TRACK_SLICE_BITS);
    assert_int_equal(vbd.track.marked, 524544);
    assert_false(vbd.track.stale);

    /* a 256 GiB disk: 2^26 blocks, never more than a slice per hold */
    start(1ULL << 29, 3);
    __xen_blkif_track_mark(&vbd, 0, 1ULL << 29, false, true);
    assert_int_equal(holds, 1U << 8);
    assert_int_equal(max_held_bits, TRACK_SLICE_BITS);
    assert_int_equal(vbd.track.marked, 0);
    for (u64 w = 0; w < (1ULL << 26) / BITS_PER_LONG; w++)
        if (vbd.track.live[w] != ~0UL)
            fail_msg("word %llu not full", (unsigned long long)w);
    teardown_vbd();
}

/* Without may_sleep (a write's completion, in irq context): no reschedule,
 * and a request's range is one hold. */
static void test_write_one_hold(void **state)
{
    start(1ULL << 20, 3);
    /* 1 MiB at +2 KiB: blocks 0..256 */
    __xen_blkif_track_mark(&vbd, 4, 2048, true, false);
    assert_exactly(&vbd.track, 0, 256);
    assert_int_equal(holds, 1);
    assert_int_equal(rescheds, 0);
    assert_int_equal(vbd.track.marked, 257);

    /* a range larger than a slice still ends, without rescheduling */
    start(1ULL << 22, 3);
    __xen_blkif_track_mark(&vbd, 0, 1ULL << 22, false, false);
    assert_exactly(&vbd.track, 0, (1ULL << 19) - 1);
    assert_int_equal(holds, 2);
    assert_int_equal(rescheds, 0);
    teardown_vbd();
}

/* Ranges of every alignment and block size against the obvious answer. */
static void test_ranges_reference(void **state)
{
    srand(11);
    for (int n = 0; n < 60; n++) {
        unsigned int shift = 3 + (unsigned int)rand() % 9;      /* 4K..1M */
        u64 sectors = 1 + (u64)rand() % (3ULL << (18 + shift));
        u64 sector = (u64)rand() % sectors;
        u64 nr = 1 + (u64)rand() % (sectors - sector);

        start(sectors, shift);
        __xen_blkif_track_mark(&vbd, sector, nr, true, true);
        assert_exactly(&vbd.track, sector >> shift,
                       (sector + nr - 1) >> shift);
        assert_int_equal(vbd.track.marked,
                         ((sector + nr - 1) >> shift) - (sector >> shift) + 1);
        assert_true(max_held_bits <= TRACK_SLICE_BITS);
        assert_int_equal(rescheds, holds - 1);
        assert_false(vbd.track.stale);
    }
    teardown_vbd();
}

/* The VBD grew before its ring thread noticed: marked up to the bitmap's
 * end, tracking stale, nothing past the end; a range wholly past it marks
 * nothing. */
static void test_past_the_end(void **state)
{
    start(1ULL << 22, 3);                           /* 2^19 blocks */
    __xen_blkif_track_mark(&vbd, (1ULL << 22) - 16, 1ULL << 22, true, true);
    assert_true(vbd.track.stale);
    assert_exactly(&vbd.track, (1ULL << 19) - 2, (1ULL << 19) - 1);
    assert_int_equal(vbd.track.marked, 2);
    assert_int_equal(holds, 1);

    start(1ULL << 22, 3);
    __xen_blkif_track_mark(&vbd, 0, 3ULL << 22, true, true);
    assert_true(vbd.track.stale);
    assert_exactly(&vbd.track, 0, (1ULL << 19) - 1);
    assert_int_equal(holds, 3);             /* the third finds only the end */

    start(1ULL << 22, 3);
    __xen_blkif_track_mark(&vbd, 1ULL << 22, 1ULL << 23, true, true);
    assert_true(vbd.track.stale);
    assert_exactly(&vbd.track, 1, 0);
    assert_int_equal(holds, 1);
    teardown_vbd();
}

/* Tracking stopped between two slices: the rest is not marked, the loop
 * ends. */
static void stop(struct xen_blkif_track *t)
{
    free(t->live);
    t->live = NULL;
}

static void test_stopped_between_slices(void **state)
{
    start(1ULL << 24, 3);
    on_resched = stop;
    __xen_blkif_track_mark(&vbd, 0, 1ULL << 24, true, true);
    assert_int_equal(holds, 2);
    assert_int_equal(rescheds, 1);
    assert_int_equal(vbd.track.marked, TRACK_SLICE_BITS);
}

/* Restarted in 64 KiB blocks between two slices: the rest of the range is
 * marked in the new geometry, from the sector where the first slice ended. */
static unsigned long *restarted;

static void restart_64k(struct xen_blkif_track *t)
{
    free(t->live);
    t->shift = 7;
    t->nbits = (1ULL << 24) >> 7;
    t->live = restarted = calloc(t->nbits / BITS_PER_LONG + 1,
                                 sizeof(unsigned long));
    assert_non_null(restarted);
    on_resched = NULL;
}

static void test_restarted_between_slices(void **state)
{
    start(1ULL << 24, 3);
    on_resched = restart_64k;
    __xen_blkif_track_mark(&vbd, 8, (1ULL << 24) - 8, false, true);
    /* the first slice ended at block 2^18 + 1 of 4 KiB = sector 2^21 + 8,
     * inside 64 KiB block 2^14 */
    assert_exactly(&vbd.track, 1ULL << 14, (1ULL << 17) - 1);
    assert_int_equal(holds, 2);
    teardown_vbd();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_wide_discard),
        cmocka_unit_test(test_write_one_hold),
        cmocka_unit_test(test_ranges_reference),
        cmocka_unit_test(test_past_the_end),
        cmocka_unit_test(test_stopped_between_slices),
        cmocka_unit_test(test_restarted_between_slices),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
