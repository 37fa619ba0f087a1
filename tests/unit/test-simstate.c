/* test-simstate.c: unit tests of sim/state.c, the simulated domain's state
 * stream: a save restores intact (pages dirtied during the pre-copy
 * included, the pause called exactly once, between pre-copy and the last
 * pages); and restore refuses, one test each, a flipped bit, a truncated
 * stream, a bad header, an out-of-range page, trailing bytes after END.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

struct pausectx {
    struct incmig__simmem *m;
    int paused;
    uint64_t touches_before;
};

/* The "guest" writes while pre-copy runs: the pause callback is the last
 * moment it may, so it dirties a few pages there, before pausing. */
static int pause_cb(void *opaque)
{
    struct pausectx *c = opaque;
    for (uint64_t k = 0; k < 40; k++)
        incmig__simmem_touch(c->m, k * 7);
    c->paused++;
    return 0;
}

static int save_to_memfd(bool corrupt, struct incmig__simmem *m,
                         struct pausectx *c)
{
    int fd = memfd_create("state", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(incmig__simmem_init(m, 64 * 4096), 0);
    for (uint64_t k = 0; k < 100; k++)
        incmig__simmem_touch(m, k);
    c->m = m;
    c->paused = 0;
    assert_int_equal(incmig__simstate_save(m, fd, pause_cb, c, corrupt), 0);
    assert_int_equal(c->paused, 1);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static void test_roundtrip(void **state)
{
    struct incmig__simmem m;
    struct pausectx c;
    struct incmig__simstate_info info;
    int fd = save_to_memfd(false, &m, &c);

    assert_int_equal(incmig__simstate_restore(fd, &info), 0);
    assert_int_equal(info.npages, 64);
    assert_true(info.pages >= 64);            /* round 0 + the dirty ones */
    assert_int_equal(info.cpu, m.cpu);        /* the last touch is in */
    assert_int_equal(info.crc, incmig__crc32c(0, m.pages, 64 * 4096));
    close(fd);
    incmig__simmem_dispose(&m);
    incmig__simmem_dispose(&m);               /* idempotent */
    (void)state;
}

static void test_corrupt_bit(void **state)
{
    struct incmig__simmem m;
    struct pausectx c;
    struct incmig__simstate_info info;
    int fd = save_to_memfd(true, &m, &c);
    assert_int_equal(incmig__simstate_restore(fd, &info), INCMIG_EPROTO);
    close(fd);
    incmig__simmem_dispose(&m);
    (void)state;
}

/* The stream of a save, then modified by `mod` and restored. */
static int restore_modified(void (*mod)(uint8_t *buf, size_t *len))
{
    struct incmig__simmem m;
    struct pausectx c;
    struct incmig__simstate_info info;
    int fd = save_to_memfd(false, &m, &c);
    off_t n = lseek(fd, 0, SEEK_END);
    uint8_t *buf = malloc((size_t)n + 16);
    size_t len = (size_t)n;
    assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
    mod(buf, &len);
    int fd2 = memfd_create("state2", MFD_CLOEXEC);
    assert_int_equal(write(fd2, buf, len), (ssize_t)len);
    lseek(fd2, 0, SEEK_SET);
    int rc = incmig__simstate_restore(fd2, &info);
    close(fd);
    close(fd2);
    free(buf);
    incmig__simmem_dispose(&m);
    return rc;
}

static void cut_end(uint8_t *b, size_t *len) { (void)b; *len -= 5; }
static void cut_mid(uint8_t *b, size_t *len) { (void)b; *len = 24 + 12 + 100; }
static void bad_magic(uint8_t *b, size_t *len) { (void)len; b[0] ^= 1; }
static void huge_npages(uint8_t *b, size_t *len) { (void)len; b[16] = 0xff; }
static void page_out_of_range(uint8_t *b, size_t *len)
{
    (void)len;
    b[24 + 4 + 7] = 64;     /* first PAGE record's index: 64 of 64 */
}
static void trailing(uint8_t *b, size_t *len) { b[(*len)++] = 0; }
static void empty(uint8_t *b, size_t *len) { (void)b; *len = 0; }

static void test_refusals(void **state)
{
    assert_int_equal(restore_modified(cut_end), INCMIG_EPROTO);
    assert_int_equal(restore_modified(cut_mid), INCMIG_EPROTO);
    assert_int_equal(restore_modified(bad_magic), INCMIG_EPROTO);
    assert_int_equal(restore_modified(huge_npages), INCMIG_EPROTO);
    assert_int_equal(restore_modified(page_out_of_range), INCMIG_EPROTO);
    assert_int_equal(restore_modified(trailing), INCMIG_EPROTO);
    assert_int_equal(restore_modified(empty), INCMIG_EPROTO);
    (void)state;
}

static void test_bounds(void **state)
{
    struct incmig__simmem m;
    assert_int_equal(incmig__simmem_init(&m, 0), INCMIG_EINVAL);
    incmig__simmem_dispose(&m);
    assert_int_equal(incmig__simmem_init(&m, (uint64_t)(INCMIG_SIMSTATE_MAX_PAGES + 1) * 4096),
                     INCMIG_EINVAL);
    incmig__simmem_dispose(&m);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_corrupt_bit),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bounds),
    };
    incmig_log_setup(0, NULL, "test-simstate");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
