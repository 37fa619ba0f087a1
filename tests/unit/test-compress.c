/* test-compress.c: unit tests of block compression (compress.c): the
 * adaptive choice (compress only when the link is slower than what
 * compression saves), incompressible data sent raw, and the zstd decoder's
 * refusal of anything that does not inflate to exactly the expected size.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "incmig-internal.h"

#define LEN (256u << 10)

static uint8_t text[LEN], noise[LEN], out[LEN];

static int setup(void **state)
{
    uint64_t x = 88172645463325252ull;
    (void)state;
    for (size_t i = 0; i < LEN; i++) {
        text[i] = (uint8_t)("incmig moves disks "[i % 19] + (i / 4096) % 3);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise[i] = (uint8_t)x;
    }
    return 0;
}

static void test_roundtrip_and_bounds(void **state)
{
    struct incmig__comp c;
    const uint8_t *z;
    (void)state;
    assert_int_equal(incmig__comp_init(&c, INCMIG_COMP_ALWAYS,
                                       INCMIG_ENC_ZSTD), 0);
    size_t zl = incmig__comp_encode(&c, text, LEN, &z);
    assert_true(zl > 0 && zl < LEN / 4);
    assert_int_equal(incmig__zstd_decode(out, LEN, z, zl), 0);
    assert_memory_equal(out, text, LEN);
    /* a frame that inflates to less, or more, than the record says */
    assert_int_equal(incmig__zstd_decode(out, LEN - 4096, z, zl),
                     INCMIG_EPROTO);
    assert_int_equal(incmig__zstd_decode(out, LEN, z, zl - 1), INCMIG_EPROTO);
    uint8_t junk[64] = { 1, 2, 3 };
    assert_int_equal(incmig__zstd_decode(out, LEN, junk, sizeof junk),
                     INCMIG_EPROTO);
    /* incompressible: raw */
    assert_int_equal(incmig__comp_encode(&c, noise, LEN, &z), 0);
    incmig__comp_dispose(&c);
    incmig__comp_dispose(&c);   /* idempotent */
}

static void test_adaptive(void **state)
{
    struct incmig__comp c;
    const uint8_t *z;
    int compressed = 0;
    (void)state;
    assert_int_equal(incmig__comp_init(&c, INCMIG_COMP_AUTO,
                                       INCMIG_ENC_ZSTD), 0);
    assert_true(incmig__comp_worth(&c));            /* nothing known yet */
    assert_true(incmig__comp_encode(&c, text, LEN, &z) > 0);
    /* a link far faster than compression: records go out raw, except one
     * probe in 16 that keeps the estimates current */
    for (int i = 0; i < 20; i++)
        incmig__comp_sent(&c, LEN, LEN / 1e12);
    assert_false(incmig__comp_worth(&c));
    for (int i = 0; i < 64; i++)
        compressed += incmig__comp_encode(&c, text, LEN, &z) > 0;
    assert_true(compressed >= 2 && compressed <= 6);
    /* a slow link (1 MB/s): compressing pays */
    for (int i = 0; i < 40; i++)
        incmig__comp_sent(&c, LEN, LEN / 1e6);
    assert_true(incmig__comp_worth(&c));
    assert_true(incmig__comp_encode(&c, text, LEN, &z) > 0);
    incmig__comp_dispose(&c);

    /* OFF never compresses; zlib for an older peer still works */
    assert_int_equal(incmig__comp_init(&c, INCMIG_COMP_OFF, INCMIG_ENC_ZSTD), 0);
    assert_int_equal(incmig__comp_encode(&c, text, LEN, &z), 0);
    incmig__comp_dispose(&c);
    assert_int_equal(incmig__comp_init(&c, INCMIG_COMP_ALWAYS,
                                       INCMIG_ENC_ZLIB), 0);
    assert_true(incmig__comp_encode(&c, text, LEN, &z) > 0);
    incmig__comp_dispose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_bounds),
        cmocka_unit_test(test_adaptive),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
