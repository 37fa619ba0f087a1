/* test-bitmap.c: unit tests of bitmap.c: bit and range operations across
 * word boundaries, scans at the edges, merge/swap/move, residency after
 * init, the wire encoding (round trips, form choice, one test per decode
 * error rule, the size of a sparse 64 GiB bitmap), and the in-process
 * tracker's hand-over (tracker.c).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

/* A bitmap filled from a simple reference: bool per bit. */
static void check_same(const struct incmig__bitmap *b, const bool *ref)
{
    for (uint64_t i = 0; i < b->nbits; i++)
        assert_int_equal(incmig__bitmap_test(b, i), ref[i]);
}

static void test_init_bounds(void **state)
{
    struct incmig__bitmap b;

    assert_int_equal(incmig__bitmap_init(&b, (INCMIG_DISK_MAX /
                                              INCMIG_BS_MIN) + 1),
                     INCMIG_EINVAL);
    assert_null(b.words);
    incmig__bitmap_dispose(&b);
    assert_int_equal(incmig__bitmap_init(&b, 0), 0);
    assert_int_equal(incmig__bitmap_count(&b), 0);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 0);
    incmig__bitmap_set(&b, 0);       /* out of range: ignored */
    assert_false(incmig__bitmap_test(&b, 0));
    incmig__bitmap_dispose(&b);
    incmig__bitmap_dispose(&b);      /* idempotent */
    assert_null(b.words);
}

static void test_block_size_valid(void **state)
{
    assert_true(incmig__block_size_valid(4096));
    assert_true(incmig__block_size_valid(65536));
    assert_true(incmig__block_size_valid(1 << 20));
    assert_false(incmig__block_size_valid(2048));
    assert_false(incmig__block_size_valid(2 << 20));
    assert_false(incmig__block_size_valid(12288));
    assert_false(incmig__block_size_valid(0));
}

static void test_set_clear_ranges(void **state)
{
    const uint64_t n = 200;            /* not a multiple of 64 */
    struct incmig__bitmap b;
    bool ref[200] = { false };

    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    incmig__bitmap_set(&b, 0);
    ref[0] = true;
    incmig__bitmap_set(&b, 199);
    ref[199] = true;
    incmig__bitmap_set_range(&b, 60, 70);   /* spans words 0..2 */
    for (int i = 60; i < 130; i++)
        ref[i] = true;
    check_same(&b, ref);
    assert_int_equal(incmig__bitmap_count(&b), 72);

    incmig__bitmap_clear_range(&b, 63, 2);
    ref[63] = ref[64] = false;
    incmig__bitmap_clear(&b, 100);
    ref[100] = false;
    check_same(&b, ref);
    assert_int_equal(incmig__bitmap_count(&b), 69);

    /* Out of range: clamped or ignored, never past words[]. */
    incmig__bitmap_set_range(&b, 190, 1000);
    for (int i = 190; i < 200; i++)
        ref[i] = true;
    incmig__bitmap_set(&b, 200);
    incmig__bitmap_set_range(&b, 500, 10);
    incmig__bitmap_set_range(&b, UINT64_MAX - 1, UINT64_MAX);
    check_same(&b, ref);
    assert_false(incmig__bitmap_test(&b, 200));
    /* padding bits past nbits stay 0 */
    assert_int_equal(b.words[3] >> (200 - 192), 0);
    incmig__bitmap_set_range(&b, 0, 64);
    assert_int_equal(b.words[0], UINT64_MAX);
    incmig__bitmap_clear_all(&b);
    assert_int_equal(incmig__bitmap_count(&b), 0);
    incmig__bitmap_dispose(&b);
}

static void test_next(void **state)
{
    struct incmig__bitmap b;
    uint64_t pos = 0, s, l;

    assert_int_equal(incmig__bitmap_init(&b, 130), 0);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 130);
    assert_int_equal(incmig__bitmap_next_clear(&b, 0), 0);
    assert_false(incmig__bitmap_next_run(&b, &pos, &s, &l));
    assert_int_equal(pos, 130);

    incmig__bitmap_set(&b, 0);
    incmig__bitmap_set_range(&b, 63, 3);     /* 63,64,65 */
    incmig__bitmap_set(&b, 129);             /* last bit */
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 0);
    assert_int_equal(incmig__bitmap_next_set(&b, 1), 63);
    assert_int_equal(incmig__bitmap_next_set(&b, 66), 129);
    assert_int_equal(incmig__bitmap_next_set(&b, 130), 130);
    assert_int_equal(incmig__bitmap_next_set(&b, UINT64_MAX), 130);
    assert_int_equal(incmig__bitmap_next_clear(&b, 0), 1);
    assert_int_equal(incmig__bitmap_next_clear(&b, 63), 66);
    /* the last bit is set: the padding must not count as clear */
    assert_int_equal(incmig__bitmap_next_clear(&b, 129), 130);

    pos = 0;
    assert_true(incmig__bitmap_next_run(&b, &pos, &s, &l));
    assert_int_equal(s, 0);
    assert_int_equal(l, 1);
    assert_int_equal(pos, 1);
    assert_true(incmig__bitmap_next_run(&b, &pos, &s, &l));
    assert_int_equal(s, 63);
    assert_int_equal(l, 3);
    assert_true(incmig__bitmap_next_run(&b, &pos, &s, &l));
    assert_int_equal(s, 129);
    assert_int_equal(l, 1);
    assert_int_equal(pos, 130);
    assert_false(incmig__bitmap_next_run(&b, &pos, &s, &l));

    /* all set: one run of the whole bitmap */
    incmig__bitmap_set_range(&b, 0, 130);
    pos = 0;
    assert_true(incmig__bitmap_next_run(&b, &pos, &s, &l));
    assert_int_equal(s, 0);
    assert_int_equal(l, 130);
    assert_int_equal(incmig__bitmap_next_clear(&b, 0), 130);
    incmig__bitmap_dispose(&b);
}

static void test_move(void **state)
{
    struct incmig__bitmap a, b, c;

    assert_int_equal(incmig__bitmap_init(&a, 200), 0);
    assert_int_equal(incmig__bitmap_init(&b, 200), 0);
    assert_int_equal(incmig__bitmap_init(&c, 201), 0);
    incmig__bitmap_set(&a, 3);
    incmig__bitmap_set_range(&b, 60, 70);
    incmig__bitmap_set(&b, 199);
    incmig__bitmap_set(&c, 7);
    assert_int_equal(incmig__bitmap_move(&a, &c), INCMIG_EINVAL);
    assert_int_equal(incmig__bitmap_count(&a), 1);
    assert_int_equal(incmig__bitmap_count(&c), 1);
    assert_int_equal(incmig__bitmap_move(&a, &b), 0);
    assert_int_equal(incmig__bitmap_count(&a), 72);
    assert_true(incmig__bitmap_test(&a, 3));
    assert_true(incmig__bitmap_test(&a, 60));
    assert_true(incmig__bitmap_test(&a, 129));
    assert_false(incmig__bitmap_test(&a, 130));
    assert_true(incmig__bitmap_test(&a, 199));
    assert_int_equal(incmig__bitmap_count(&b), 0);
    incmig__bitmap_dispose(&a);
    incmig__bitmap_dispose(&b);
    incmig__bitmap_dispose(&c);
}

/* A 64 GiB disk's bitmap (2 MiB) is resident once initialised: its first
 * writes, often in the downtime, must not fault pages in. */
static void test_init_resident(void **state)
{
    struct incmig__bitmap b;
    long pg = sysconf(_SC_PAGESIZE);

    assert_int_equal(incmig__bitmap_init(&b, UINT64_C(16) << 20), 0);
    /* the pages wholly inside words[] (an allocator, or ASan, may put
     * the words anywhere in a page: the partial pages at the ends are
     * shared with other memory and prove nothing) */
    uintptr_t lo = ((uintptr_t)b.words + (uintptr_t)pg - 1) &
                   ~(uintptr_t)(pg - 1);
    uintptr_t hi = (uintptr_t)(b.words + (UINT64_C(16) << 20) / 64) &
                   ~(uintptr_t)(pg - 1);
    size_t n = (hi - lo) / (size_t)pg;
    unsigned char *vec = malloc(n);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)lo, hi - lo, vec), 0);
    size_t in = 0;
    for (size_t i = 0; i < n; i++)
        in += vec[i] & 1;
    assert_int_equal(in, n);
    assert_int_equal(incmig__bitmap_count(&b), 0);
    free(vec);
    incmig__bitmap_dispose(&b);
}

/* The in-process tracker: get_and_clear and take hand over exactly the
 * marks since the last one; a failed hand-over keeps them. */
static void test_memtracker(void **state)
{
    struct incmig__memtracker m;
    struct incmig__bitmap out, wrong, dec;
    uint8_t *enc = NULL;
    size_t len = 0;
    uint64_t n = 0;

    assert_int_equal(incmig__memtracker_init(&m, 1 << 20, 4096), 0);
    assert_int_equal(incmig__bitmap_init(&out, 256), 0);
    assert_int_equal(incmig__bitmap_init(&wrong, 255), 0);
    assert_int_equal(incmig__bitmap_init(&dec, 256), 0);
    incmig__memtracker_mark(&m, 4096, 8192);          /* blocks 1, 2 */
    incmig__bitmap_set(&out, 200);                    /* kept: merged */
    assert_int_equal(m.t.ops->get_and_clear(&m.t, &wrong), INCMIG_EINVAL);
    assert_int_equal(m.t.ops->get_and_clear(&m.t, &out), 0);
    assert_int_equal(incmig__bitmap_count(&out), 3);
    assert_true(incmig__bitmap_test(&out, 1) && incmig__bitmap_test(&out, 2));
    incmig__memtracker_mark(&m, 255 * 4096, 1);       /* block 255 */
    assert_int_equal(incmig__memtracker_take(&m, &enc, &len, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(incmig__bitmap_decode(&dec, 0, 256, enc, len), 0);
    assert_int_equal(incmig__bitmap_count(&dec), 1);
    assert_true(incmig__bitmap_test(&dec, 255));
    free(enc);
    enc = NULL;
    assert_int_equal(incmig__memtracker_take(&m, &enc, &len, &n), 0);
    assert_int_equal(n, 0);
    free(enc);
    incmig__memtracker_mark(&m, 0, 1);
    incmig__bitmap_clear_all(&out);
    assert_int_equal(m.t.ops->get_and_clear(&m.t, &out), 0);
    assert_int_equal(incmig__bitmap_count(&out), 1);
    assert_true(incmig__bitmap_test(&out, 0));
    m.t.ops->dispose(&m.t);
    incmig__bitmap_dispose(&out);
    incmig__bitmap_dispose(&wrong);
    incmig__bitmap_dispose(&dec);
}

static void test_merge_swap(void **state)
{
    struct incmig__bitmap a, b, c;

    assert_int_equal(incmig__bitmap_init(&a, 100), 0);
    assert_int_equal(incmig__bitmap_init(&b, 100), 0);
    assert_int_equal(incmig__bitmap_init(&c, 101), 0);
    incmig__bitmap_set(&a, 1);
    incmig__bitmap_set(&b, 99);
    incmig__bitmap_set(&c, 5);
    assert_int_equal(incmig__bitmap_merge(&a, &c), INCMIG_EINVAL);
    assert_int_equal(incmig__bitmap_count(&a), 1);
    assert_int_equal(incmig__bitmap_merge(&a, &b), 0);
    assert_true(incmig__bitmap_test(&a, 1));
    assert_true(incmig__bitmap_test(&a, 99));
    assert_int_equal(incmig__bitmap_count(&a), 2);

    incmig__bitmap_clear_all(&b);
    incmig__bitmap_swap(&a, &b);
    assert_int_equal(incmig__bitmap_count(&a), 0);
    assert_int_equal(incmig__bitmap_count(&b), 2);
    assert_int_equal(a.nbits, 100);
    incmig__bitmap_dispose(&a);
    incmig__bitmap_dispose(&b);
    incmig__bitmap_dispose(&c);
}

/* Round trip bits [first, first+n) of `b` into a fresh bitmap; returns
 * the form byte used. */
static int round_trip(const struct incmig__bitmap *b, uint64_t first,
                      uint64_t n)
{
    struct incmig__bitmap d;
    uint8_t *buf;
    size_t len;

    assert_int_equal(incmig__bitmap_encode(b, first, n, &buf, &len), 0);
    assert_true(len >= 1);
    assert_int_equal(incmig__bitmap_init(&d, b->nbits), 0);
    assert_int_equal(incmig__bitmap_decode(&d, first, n, buf, len), 0);
    for (uint64_t i = 0; i < b->nbits; i++) {
        bool in = i >= first && i < first + n;
        assert_int_equal(incmig__bitmap_test(&d, i),
                         in && incmig__bitmap_test(b, i));
    }
    int form = buf[0];
    free(buf);
    incmig__bitmap_dispose(&d);
    return form;
}

static void test_encode_round_trip(void **state)
{
    struct incmig__bitmap b;
    const uint64_t n = 1000;

    srand(42);
    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    /* empty: one clear run */
    assert_int_equal(round_trip(&b, 0, n), 1);
    assert_int_equal(round_trip(&b, 0, 0), 0);
    /* dense random bits: raw is smaller */
    for (int iter = 0; iter < 20; iter++) {
        incmig__bitmap_clear_all(&b);
        for (uint64_t i = 0; i < n; i++)
            if (rand() % 2)
                incmig__bitmap_set(&b, i);
        assert_int_equal(round_trip(&b, 0, n), 0);
        uint64_t f = (uint64_t)rand() % n;
        round_trip(&b, f, (uint64_t)rand() % (n - f + 1));
    }
    /* a few long runs: runs is smaller, including one ending on a set run
     * and one starting with a set bit (first clear run of 0) */
    for (int iter = 0; iter < 20; iter++) {
        incmig__bitmap_clear_all(&b);
        for (int k = 0; k < 4; k++)
            incmig__bitmap_set_range(&b, (uint64_t)rand() % n,
                                     (uint64_t)rand() % 100 + 1);
        assert_int_equal(round_trip(&b, 0, n), 1);
        uint64_t f = (uint64_t)rand() % n;
        round_trip(&b, f, (uint64_t)rand() % (n - f + 1));
    }
    incmig__bitmap_clear_all(&b);
    incmig__bitmap_set(&b, 0);
    incmig__bitmap_set(&b, n - 1);
    assert_int_equal(round_trip(&b, 0, n), 1);
    round_trip(&b, 1, n - 2);
    round_trip(&b, 0, 1);
    round_trip(&b, n - 1, 1);
    /* out of range encode */
    uint8_t *buf;
    size_t len;
    assert_int_equal(incmig__bitmap_encode(&b, 1, n, &buf, &len),
                     INCMIG_EINVAL);
    assert_null(buf);
    incmig__bitmap_dispose(&b);
}

static void test_encode_exact_bytes(void **state)
{
    struct incmig__bitmap b;
    uint8_t *buf;
    size_t len;

    assert_int_equal(incmig__bitmap_init(&b, 400), 0);
    /* bits 3..5 and 300..399 -> runs 3,3,294,100 */
    incmig__bitmap_set_range(&b, 3, 3);
    incmig__bitmap_set_range(&b, 300, 100);
    assert_int_equal(incmig__bitmap_encode(&b, 0, 400, &buf, &len), 0);
    const uint8_t want[] = { 1, 3, 3, 0xa6, 0x02, 100 };
    assert_int_equal(len, sizeof want);
    assert_memory_equal(buf, want, sizeof want);
    free(buf);
    /* raw: 10 bits 0b1000000101 starting at bit 3 */
    incmig__bitmap_clear_all(&b);
    for (int i = 0; i < 10; i++)
        if ((0x205 >> i) & 1)
            incmig__bitmap_set(&b, 3 + (uint64_t)i);
    assert_int_equal(incmig__bitmap_encode(&b, 3, 10, &buf, &len), 0);
    const uint8_t raw[] = { 0, 0x05, 0x02 };
    assert_int_equal(len, sizeof raw);
    assert_memory_equal(buf, raw, sizeof raw);
    free(buf);
    incmig__bitmap_dispose(&b);
}

/* decode must fail with EPROTO and leave b (pre-filled) unchanged. */
static void expect_bad(uint64_t first, uint64_t nbits, const uint8_t *buf,
                       size_t len)
{
    struct incmig__bitmap b;

    assert_int_equal(incmig__bitmap_init(&b, 100), 0);
    incmig__bitmap_set(&b, 7);
    incmig__bitmap_set(&b, 50);
    assert_int_equal(incmig__bitmap_decode(&b, first, nbits, buf, len),
                     INCMIG_EPROTO);
    assert_int_equal(incmig__bitmap_count(&b), 2);
    assert_true(incmig__bitmap_test(&b, 7));
    assert_true(incmig__bitmap_test(&b, 50));
    incmig__bitmap_dispose(&b);
}

static void test_decode_errors(void **state)
{
    /* the good one, to show the bad ones fail for their stated reason */
    struct incmig__bitmap b;
    const uint8_t good[] = { 1, 2, 3, 5 };     /* 10 bits: ..XXX..... */
    assert_int_equal(incmig__bitmap_init(&b, 100), 0);
    assert_int_equal(incmig__bitmap_decode(&b, 90, 10, good, sizeof good), 0);
    assert_int_equal(incmig__bitmap_count(&b), 3);
    assert_true(incmig__bitmap_test(&b, 92));
    incmig__bitmap_dispose(&b);

    /* range: first+nbits past the bitmap; overflow of first+nbits */
    expect_bad(91, 10, good, sizeof good);
    expect_bad(UINT64_MAX, 2, good, sizeof good);
    expect_bad(5, UINT64_MAX, good, sizeof good);
    /* empty input */
    expect_bad(0, 10, good, 0);
    /* unknown form */
    expect_bad(0, 10, (const uint8_t[]){ 2, 10 }, 2);
    /* raw: too short, too long, pad bits set */
    expect_bad(0, 10, (const uint8_t[]){ 0, 0xff }, 2);
    expect_bad(0, 10, (const uint8_t[]){ 0, 0xff, 0x03, 0 }, 4);
    expect_bad(0, 10, (const uint8_t[]){ 0, 0xff, 0x07 }, 3);
    /* runs: truncated varint, 11-byte varint, 10th byte > 1 (> 64 bits) */
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 0x83 }, 3);
    expect_bad(0, 10, (const uint8_t[]){ 1, 0x80, 0x80, 0x80, 0x80, 0x80,
                                         0x80, 0x80, 0x80, 0x80, 0x80, 0 },
               12);
    expect_bad(0, 10, (const uint8_t[]){ 1, 0x80, 0x80, 0x80, 0x80, 0x80,
                                         0x80, 0x80, 0x80, 0x80, 0x02 }, 11);
    /* runs: a zero-length run other than the first */
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 0, 8 }, 4);
    expect_bad(0, 10, (const uint8_t[]){ 1, 0, 4, 6, 0 }, 5);
    /* runs: sum short, sum long, sum overflowing 64 bits */
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 3 }, 3);
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 3, 6 }, 4);
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0x01 }, 12);
    /* runs: empty list for nbits > 0 */
    expect_bad(0, 10, (const uint8_t[]){ 1 }, 1);
    /* trailing bytes after an exact sum */
    expect_bad(0, 10, (const uint8_t[]){ 1, 2, 8, 0 }, 4);
}

static void test_decode_accepts(void **state)
{
    struct incmig__bitmap b;

    assert_int_equal(incmig__bitmap_init(&b, 100), 0);
    /* first run 0: starts with a set run; ends with a set run */
    assert_int_equal(incmig__bitmap_decode(&b, 0, 10,
                     (const uint8_t[]){ 1, 0, 4, 5, 1 }, 5), 0);
    assert_int_equal(incmig__bitmap_count(&b), 5);
    assert_true(incmig__bitmap_test(&b, 0));
    assert_true(incmig__bitmap_test(&b, 3));
    assert_false(incmig__bitmap_test(&b, 4));
    assert_true(incmig__bitmap_test(&b, 9));
    /* an overlong but 64-bit value encoding of 10 is accepted */
    assert_int_equal(incmig__bitmap_decode(&b, 0, 10,
                     (const uint8_t[]){ 1, 0x8a, 0x00 }, 3), 0);
    /* zero bits: raw with no bytes, and runs with an empty list */
    assert_int_equal(incmig__bitmap_decode(&b, 100, 0,
                     (const uint8_t[]){ 0 }, 1), 0);
    assert_int_equal(incmig__bitmap_decode(&b, 100, 0,
                     (const uint8_t[]){ 1 }, 1), 0);
    /* raw at an unaligned offset ORs into existing bits */
    assert_int_equal(incmig__bitmap_decode(&b, 60, 9,
                     (const uint8_t[]){ 0, 0x81, 0x01 }, 3), 0);
    assert_true(incmig__bitmap_test(&b, 60));
    assert_true(incmig__bitmap_test(&b, 67));
    assert_true(incmig__bitmap_test(&b, 68));
    assert_int_equal(incmig__bitmap_count(&b), 8);
    incmig__bitmap_dispose(&b);
}

/* A 64 GiB disk at 4 KiB with 100 scattered runs: a few hundred bytes. */
static void test_sparse_64g_size(void **state)
{
    const uint64_t n = (UINT64_C(64) << 30) / 4096;
    struct incmig__bitmap b, d;
    uint8_t *buf;
    size_t len;

    srand(7);
    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    for (int i = 0; i < 100; i++) {
        uint64_t at = ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % n;
        incmig__bitmap_set_range(&b, at, (uint64_t)(rand() % 64) + 1);
    }
    double t0 = incmig__now();
    assert_int_equal(incmig__bitmap_encode(&b, 0, n, &buf, &len), 0);
    double t1 = incmig__now();
    assert_int_equal(buf[0], 1);
    assert_true(len <= 600);      /* <= 200 runs * 3 bytes */
    assert_true(t1 - t0 < 0.5);   /* word-at-a-time scan, not per bit */
    assert_int_equal(incmig__bitmap_init(&d, n), 0);
    assert_int_equal(incmig__bitmap_decode(&d, 0, n, buf, len), 0);
    assert_memory_equal(b.words, d.words, n / 8);
    assert_int_equal(incmig__bitmap_count(&d), incmig__bitmap_count(&b));
    free(buf);
    incmig__bitmap_dispose(&b);
    incmig__bitmap_dispose(&d);
}

/* The encoding by the spec's words, a bit at a time: the encoder's bytes
 * must equal these (runs unless raw is no longer; both forms, any offset). */
static size_t ref_encode(const struct incmig__bitmap *b, uint64_t first,
                         uint64_t n, uint8_t *out)
{
    size_t raw = (size_t)(n / 8 + (n % 8 != 0)), k = 1;
    uint64_t run = 0;
    bool set = false;

    for (uint64_t i = first; i <= first + n; i++) {
        if (i < first + n && incmig__bitmap_test(b, i) == set) {
            run++;
            continue;
        }
        if (i == first + n && run == 0 && n)
            break;
        for (; run >= 0x80; run >>= 7)
            out[k++] = (uint8_t)(run | 0x80);
        out[k++] = (uint8_t)run;
        run = 1;
        set = !set;
    }
    if (n == 0)
        k = 1;
    if (k - 1 < raw) {
        out[0] = 1;
        return k;
    }
    out[0] = 0;
    memset(out + 1, 0, raw);
    for (uint64_t i = 0; i < n; i++)
        if (incmig__bitmap_test(b, first + i))
            out[1 + i / 8] |= (uint8_t)(1u << (i % 8));
    return 1 + raw;
}

static void test_encode_matches_reference(void **state)
{
    const uint64_t n = 3000;
    static uint8_t want[2 * 3000 * 10 + 16];
    struct incmig__bitmap b;

    srand(11);
    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    for (int iter = 0; iter < 400; iter++) {
        int density = iter % 8;          /* 1 in 2^density bits set */
        incmig__bitmap_clear_all(&b);
        for (uint64_t i = 0; i < n; i++)
            if (rand() % (1 << density) == 0)
                incmig__bitmap_set(&b, i);
        if (iter % 5 == 0)
            incmig__bitmap_set_range(&b, (uint64_t)rand() % n,
                                     (uint64_t)rand() % 700);
        uint64_t f = iter % 3 ? (uint64_t)rand() % n : 0;
        uint64_t len = iter % 4 ? (uint64_t)rand() % (n - f + 1) : n - f;
        uint8_t *buf;
        size_t got;
        assert_int_equal(incmig__bitmap_encode(&b, f, len, &buf, &got), 0);
        size_t exp = ref_encode(&b, f, len, want);
        assert_int_equal(got, exp);
        assert_memory_equal(buf, want, exp);
        free(buf);
    }
    incmig__bitmap_dispose(&b);
}

/* ---- the summary level -------------------------------------------------- */

/* Every non-zero word has its summary bit; no summary bit past the words. */
static void check_summary(const struct incmig__bitmap *b)
{
    uint64_t nw = (b->nbits + 63) / 64, ns = nw ? (nw + 63) / 64 : 1;

    for (uint64_t w = 0; w < nw; w++)
        if (b->words[w])
            assert_true((b->sum[w / 64] >> (w % 64)) & 1);
    for (uint64_t w = nw; w < ns * 64; w++)
        assert_false((b->sum[w / 64] >> (w % 64)) & 1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(uint64_t n)      /* xorshift64*, fixed seed */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return n ? (rng_state * UINT64_C(2685821657736338717)) % n : 0;
}

/* b against the reference: every bit, count, scans from random points,
 * all runs, and encode's bytes against a bitmap rebuilt bit by bit. */
static void check_model(const struct incmig__bitmap *b, const bool *ref)
{
    uint64_t n = b->nbits, cnt = 0;

    check_summary(b);
    for (uint64_t i = 0; i < n; i++) {
        assert_int_equal(incmig__bitmap_test(b, i), ref[i]);
        cnt += ref[i];
    }
    assert_int_equal(incmig__bitmap_count(b), cnt);
    for (int k = 0; k < 8; k++) {
        uint64_t from = rnd(n + 2), s = from, c = from;
        while (s < n && !ref[s])
            s++;
        while (c < n && ref[c])
            c++;
        assert_int_equal(incmig__bitmap_next_set(b, from), s < n ? s : n);
        assert_int_equal(incmig__bitmap_next_clear(b, from), c < n ? c : n);
    }
    uint64_t pos = 0, st, len, i = 0;
    while (incmig__bitmap_next_run(b, &pos, &st, &len)) {
        while (!ref[i])
            i++;
        assert_int_equal(st, i);
        while (i < n && ref[i])
            i++;
        assert_int_equal(len, i - st);
    }
    for (; i < n; i++)
        assert_false(ref[i]);

    struct incmig__bitmap r;
    assert_int_equal(incmig__bitmap_init(&r, n), 0);
    for (uint64_t j = 0; j < n; j++)
        if (ref[j])
            incmig__bitmap_set(&r, j);
    uint64_t first = rnd(n + 1), nb = rnd(n - first + 1);
    uint8_t *e1, *e2;
    size_t l1, l2;
    assert_int_equal(incmig__bitmap_encode(b, first, nb, &e1, &l1), 0);
    assert_int_equal(incmig__bitmap_encode(&r, first, nb, &e2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(e1, e2, l1);
    free(e1);
    free(e2);
    incmig__bitmap_dispose(&r);
}

/* Thousands of random operations on two bitmaps against bool[] models. */
static void test_summary_model(void **state)
{
    const uint64_t n = 64 * 64 * 3 + 17;
    struct incmig__bitmap bm[2];
    bool *ref[2];

    for (int k = 0; k < 2; k++) {
        assert_int_equal(incmig__bitmap_init(&bm[k], n), 0);
        ref[k] = calloc(n, sizeof(bool));
        assert_non_null(ref[k]);
    }
    for (int op = 0; op < 4000; op++) {
        int t = (int)rnd(2), o = 1 - t;
        struct incmig__bitmap *b = &bm[t];
        bool *r = ref[t];
        uint64_t a = rnd(n + 3), c = rnd(rnd(4) ? 200 : n);
        switch (rnd(11)) {
        case 9:
            assert_int_equal(incmig__bitmap_move(b, &bm[o]), 0);
            for (uint64_t i = 0; i < n; i++) {
                r[i] |= ref[o][i];
                ref[o][i] = false;
            }
            check_model(&bm[o], ref[o]);
            break;
        case 0: case 1:
            incmig__bitmap_set(b, a);
            if (a < n)
                r[a] = true;
            break;
        case 2:
            incmig__bitmap_clear(b, a);
            if (a < n)
                r[a] = false;
            break;
        case 3:
            incmig__bitmap_set_range(b, a, c);
            for (uint64_t i = a; i < n && i - a < c; i++)
                r[i] = true;
            break;
        case 4: case 5:
            incmig__bitmap_clear_range(b, a, c);
            for (uint64_t i = a; i < n && i - a < c; i++)
                r[i] = false;
            break;
        case 6:
            if (rnd(4) == 0) {
                incmig__bitmap_clear_all(b);
                memset(r, 0, n * sizeof(bool));
            }
            break;
        case 7:
            assert_int_equal(incmig__bitmap_merge(b, &bm[o]), 0);
            for (uint64_t i = 0; i < n; i++)
                r[i] |= ref[o][i];
            break;
        case 8: {
            incmig__bitmap_swap(b, &bm[o]);
            bool *x = ref[t];
            ref[t] = ref[o];
            ref[o] = x;
            break;
        }
        default: {
            /* decode a chunk of the other bitmap's encoding into b */
            uint64_t first = rnd(n + 1), nb = rnd(n - first + 1);
            uint8_t *e;
            size_t l;
            assert_int_equal(incmig__bitmap_encode(&bm[o], first, nb, &e, &l),
                             0);
            assert_int_equal(incmig__bitmap_decode(b, first, nb, e, l), 0);
            free(e);
            for (uint64_t i = first; i < first + nb; i++)
                r[i] |= ref[o][i];
            break;
        }
        }
        check_model(&bm[t], ref[t]);
        check_summary(&bm[o]);
    }
    for (int k = 0; k < 2; k++) {
        incmig__bitmap_dispose(&bm[k]);
        free(ref[k]);
    }
}

/* 16M bits (64 GiB at 4 KiB), 3 set: count, next_set and encode use the
 * summary.  Shown by a word set behind the summary's back, which the scans
 * must not see; clear_all leaves the summary empty. */
static void test_summary_skips(void **state)
{
    const uint64_t n = UINT64_C(1) << 24;
    struct incmig__bitmap b, d;
    uint8_t *e;
    size_t l;

    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    incmig__bitmap_set(&b, 5000);
    incmig__bitmap_set(&b, 9000000);
    incmig__bitmap_set(&b, n - 1);
    check_summary(&b);
    assert_int_equal(incmig__bitmap_count(&b), 3);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 5000);
    assert_int_equal(incmig__bitmap_next_set(&b, 5001), 9000000);
    assert_int_equal(incmig__bitmap_next_set(&b, 9000001), n - 1);
    assert_int_equal(incmig__bitmap_encode(&b, 0, n, &e, &l), 0);
    assert_true(l < 16);
    assert_int_equal(incmig__bitmap_init(&d, n), 0);
    assert_int_equal(incmig__bitmap_decode(&d, 0, n, e, l), 0);
    free(e);
    assert_int_equal(incmig__bitmap_count(&d), 3);
    check_summary(&d);

    /* invariant broken on purpose: word 1000 set without its summary bit */
    b.words[1000] = 1;
    assert_int_equal(incmig__bitmap_count(&b), 3);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 5000);
    assert_int_equal(incmig__bitmap_encode(&b, 0, n, &e, &l), 0);
    assert_int_equal(incmig__bitmap_decode(&d, 0, n, e, l), 0);
    free(e);
    assert_int_equal(incmig__bitmap_count(&d), 3);
    incmig__bitmap_resum(&b);          /* repaired: now it is seen */
    check_summary(&b);
    assert_int_equal(incmig__bitmap_count(&b), 4);
    assert_int_equal(incmig__bitmap_next_set(&b, 5001), 64000);

    incmig__bitmap_clear_all(&b);
    for (uint64_t s = 0; s < n / 64 / 64; s++)
        assert_int_equal(b.sum[s], 0);
    assert_int_equal(incmig__bitmap_count(&b), 0);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), n);
    incmig__bitmap_dispose(&b);
    incmig__bitmap_dispose(&d);
    /* disposed (no words, no summary): scans see nothing, touch nothing */
    assert_int_equal(incmig__bitmap_count(&b), 0);
    assert_int_equal(incmig__bitmap_merge(&b, &d), 0);
    incmig__bitmap_clear_all(&b);
}

/* Clearing keeps the summary tight: a bitmap that held the whole disk
 * (PUSH's round 0) and was sent, range by range and bit by bit, has an
 * empty summary again, so later scans skip its words. */
static void test_summary_shrinks(void **state)
{
    const uint64_t n = 100000;
    struct incmig__bitmap b;

    assert_int_equal(incmig__bitmap_init(&b, n), 0);
    incmig__bitmap_set_range(&b, 0, n);
    incmig__bitmap_clear_range(&b, 0, 50000);
    incmig__bitmap_clear_range(&b, 50001, n - 50001);
    assert_true((b.sum[50000 / 64 / 64] >> (50000 / 64 % 64)) & 1);
    check_summary(&b);
    incmig__bitmap_clear(&b, 50000);
    for (uint64_t s = 0; s < (n + 63) / 64 / 64 + 1; s++)
        assert_int_equal(b.sum[s], 0);
    /* a word only partly cleared keeps its bit */
    incmig__bitmap_set_range(&b, 130, 4);
    incmig__bitmap_clear_range(&b, 130, 2);
    check_summary(&b);
    assert_int_equal(incmig__bitmap_count(&b), 2);
    assert_int_equal(incmig__bitmap_next_set(&b, 0), 132);
    incmig__bitmap_dispose(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_bounds),
        cmocka_unit_test(test_block_size_valid),
        cmocka_unit_test(test_set_clear_ranges),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_merge_swap),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_encode_exact_bytes),
        cmocka_unit_test(test_encode_matches_reference),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_decode_accepts),
        cmocka_unit_test(test_sparse_64g_size),
        cmocka_unit_test(test_move),
        cmocka_unit_test(test_init_resident),
        cmocka_unit_test(test_memtracker),
        cmocka_unit_test(test_summary_model),
        cmocka_unit_test(test_summary_skips),
        cmocka_unit_test(test_summary_shrinks),
    };
    /* Decode errors are expected here: keep stderr quiet. */
    incmig__verbosity = -1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
