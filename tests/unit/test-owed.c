/* test-owed.c: unit tests of owed.c, the state file of a PULL: the owed
 * set and the text survive a reopen; a block is cleared in the file only
 * by sync, never by done alone, and by sync_maybe's thread; GO is marked; a file prepared with every
 * block owed is armed down to the given sets; a second user of the file
 * is refused (flock), and one that waits gets the file once the first
 * lets go; and open refuses, one check each, a damaged text, a
 * truncated file, bits past a disk's end, a bad magic; key/value values
 * with any byte round-trip, numbers are bounded, a text too long for the
 * file is refused; a started file resumes with its id, and a resume
 * refuses another role's file and one never marked GO; ids and paths
 * resolve.
 */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

static char dir[] = "/tmp/test-owed.XXXXXX";
static char path[4096];

static void make(struct incmig__owed *o, uint64_t nb0, uint64_t nb1)
{
    struct incmig__bitmap b[2] = {{0}};
    assert_int_equal(incmig__bitmap_init(&b[0], nb0), 0);
    assert_int_equal(incmig__bitmap_init(&b[1], nb1), 0);
    incmig__bitmap_set_range(&b[0], 3, 100);
    incmig__bitmap_set(&b[1], nb1 - 1);
    incmig__owed_init(o);
    assert_int_equal(incmig__owed_create(o, path, 2, b, "role test\n"), 0);
    incmig__bitmap_dispose(&b[0]);
    incmig__bitmap_dispose(&b[1]);
}

static void reopen(struct incmig__owed *o, char **text)
{
    incmig__owed_init(o);
    assert_int_equal(incmig__owed_open(o, path, 0, text), 0);
}

static void test_roundtrip(void **state)
{
    struct incmig__owed o, p;
    char *text = NULL;

    make(&o, 1000, 65);
    assert_int_equal(incmig__owed_count(&o), 101);
    assert_false(o.go);
    /* a second user is refused while the first holds the file */
    incmig__owed_init(&p);
    assert_int_equal(incmig__owed_open(&p, path, 0, &text), INCMIG_EINVAL);
    incmig__owed_close(&p, false);
    /* done alone changes nothing durable; sync does */
    incmig__owed_done(&o, 0, 3, 50);
    assert_true(incmig__owed_durable(&o, 0, 10, 1));
    incmig__owed_close(&o, false);
    reopen(&o, &text);
    assert_string_equal(text, "role test\n");
    free(text);
    assert_int_equal(incmig__owed_count(&o), 101);
    incmig__owed_done(&o, 0, 3, 50);
    incmig__owed_done(&o, 1, 64, 1);
    assert_int_equal(incmig__owed_sync(&o), 0);
    assert_false(incmig__owed_durable(&o, 0, 3, 50));
    assert_true(incmig__owed_durable(&o, 0, 53, 1));
    assert_int_equal(incmig__owed_mark_go(&o), 0);
    incmig__owed_close(&o, false);
    reopen(&o, &text);
    free(text);
    assert_true(o.go);
    assert_int_equal(incmig__owed_count(&o), 50);
    assert_false(incmig__bitmap_test(&o.file[0], 52));
    assert_true(incmig__bitmap_test(&o.file[0], 53));
    assert_false(incmig__bitmap_test(&o.file[1], 64));
    /* keep: only shrinks */
    struct incmig__bitmap k = {0};
    assert_int_equal(incmig__bitmap_init(&k, 1000), 0);
    incmig__bitmap_set_range(&k, 0, 60);
    assert_int_equal(incmig__owed_keep(&o, 0, &k), 0);
    assert_int_equal(incmig__owed_sync(&o), 0);
    assert_int_equal(incmig__owed_count(&o), 7);   /* 53..59 */
    incmig__bitmap_dispose(&k);
    incmig__owed_close(&o, true);
    assert_int_not_equal(access(path, F_OK), 0);
}

/* sync_maybe returns at once and leaves the sync to its thread, which
 * makes the clears durable within a few tenths of a second; the file
 * reopened after close holds them */
static void test_sync_maybe_thread(void **state)
{
    struct incmig__owed o;
    char *text = NULL;

    make(&o, 1000, 65);
    incmig__owed_done(&o, 0, 3, 40);
    assert_int_equal(incmig__owed_sync_maybe(&o), 0);
    assert_true(o.syncer_on);
    for (int i = 0; i < 100 && incmig__owed_durable(&o, 0, 3, 40); i++)
        usleep(20000);
    assert_false(incmig__owed_durable(&o, 0, 3, 40));
    assert_true(incmig__owed_durable(&o, 0, 43, 1));
    incmig__owed_done(&o, 1, 64, 1);
    incmig__owed_close(&o, false);     /* stops the thread */
    assert_false(o.syncer_on);
    reopen(&o, &text);
    free(text);
    assert_int_equal(incmig__owed_count(&o), 61);
    incmig__owed_close(&o, true);
}

/* prepare (every block owed), mark, then arm: the mark alone leaves every
 * block owed; the file then holds the armed sets */
static void test_prepare_arm(void **state)
{
    struct incmig__owed o;
    struct incmig__bitmap b[2] = {{0}};
    uint64_t nb[2] = { 130, 7 };
    char *text = NULL;

    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_prepare(&o, path, 2, nb, "x y\n"), 0);
    assert_int_equal(incmig__owed_count(&o), 137);
    assert_false(o.go);
    assert_int_equal(incmig__bitmap_init(&b[0], 130), 0);
    assert_int_equal(incmig__bitmap_init(&b[1], 7), 0);
    incmig__bitmap_set(&b[0], 129);
    /* the source's downtime: the mark alone, every block still owed */
    assert_int_equal(incmig__owed_arm(&o, NULL, true), 0);
    assert_true(o.go);
    incmig__owed_close(&o, false);
    reopen(&o, &text);
    free(text);
    text = NULL;
    assert_true(o.go);
    assert_int_equal(incmig__owed_count(&o), 137);
    /* after GO: narrowed to the final sets */
    assert_int_equal(incmig__owed_arm(&o, b, false), 0);
    incmig__owed_close(&o, false);
    reopen(&o, &text);
    free(text);
    assert_true(o.go);
    assert_int_equal(incmig__owed_count(&o), 1);
    assert_true(incmig__bitmap_test(&o.file[0], 129));
    incmig__owed_close(&o, true);
    incmig__bitmap_dispose(&b[0]);
    incmig__bitmap_dispose(&b[1]);
}

/* A process killed a moment ago holds the lock until it has exited: open
 * waits for it (here a thread lets go after 0.3 s), within its bound. */
static void *let_go(void *arg)
{
    usleep(300 * 1000);
    incmig__owed_close(arg, false);
    return NULL;
}

static void test_lock_wait(void **state)
{
    struct incmig__owed o, p;
    pthread_t th;
    char *text = NULL;
    double t0;

    make(&o, 1000, 65);
    incmig__owed_init(&p);
    t0 = incmig__now();
    assert_int_equal(incmig__owed_open(&p, path, 1, &text), INCMIG_EINVAL);
    assert_true(incmig__now() - t0 >= 1.0);
    assert_null(text);
    assert_int_equal(pthread_create(&th, NULL, let_go, &o), 0);
    t0 = incmig__now();
    assert_int_equal(incmig__owed_open(&p, path, 10, &text), 0);
    assert_true(incmig__now() - t0 < 5.0);
    pthread_join(th, NULL);
    assert_string_equal(text, "role test\n");
    assert_int_equal(incmig__owed_count(&p), 101);
    free(text);
    incmig__owed_close(&p, true);
}

/* start writes the role and the id before the caller's text; resume finds
 * the file by id, checks the role and the GO mark, and gives the id back */
static void test_start_resume(void **state)
{
    struct incmig__owed o;
    struct incmig__kv *kv = calloc(1, sizeof *kv);
    struct incmig__bitmap b = {0};
    uint64_t nb = 64, x;
    uint8_t id[16], id2[16] = {0};
    char *text = NULL, sp[4096];
    const char *hex = "000102030405060708090a0b0c0d0e0f";

    assert_non_null(kv);
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)i;
    assert_int_equal(incmig__owed_path(dir, "receive", id, sp, sizeof sp), 0);
    incmig__kv_add(kv, "n", "%d", 42);
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_start(&o, dir, "receive", id, 1, &nb, kv),
                     0);
    assert_string_equal(o.path, sp);
    incmig__owed_close(&o, false);
    /* never marked GO: nothing to resume */
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_resume(&o, dir, "receive", hex, id2, &text),
                     INCMIG_EINVAL);
    assert_null(text);
    incmig__owed_close(&o, false);
    /* the text as written; then marked GO */
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_open(&o, sp, 0, &text), 0);
    assert_string_equal(text, "role receive\n"
                        "id 000102030405060708090a0b0c0d0e0f\nn 42\n");
    free(text);
    text = NULL;
    assert_int_equal(incmig__bitmap_init(&b, 64), 0);
    assert_int_equal(incmig__owed_arm(&o, &b, true), 0);
    incmig__owed_close(&o, false);
    /* another role's file */
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_resume(&o, dir, "migrate", sp, id2, &text),
                     INCMIG_EINVAL);
    assert_null(text);
    incmig__owed_close(&o, false);
    /* resumed by id */
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_resume(&o, dir, "receive", hex, id2, &text),
                     0);
    assert_memory_equal(id, id2, 16);
    assert_string_equal(o.path, sp);
    assert_int_equal(incmig__kv_num(o.path, text, "n", 42, &x), 0);
    assert_int_equal(x, 42);
    assert_int_equal(incmig__kv_num(o.path, text, "n", 41, &x), INCMIG_EINVAL);
    assert_int_equal(incmig__kv_num(o.path, text, "id", UINT64_MAX, &x),
                     INCMIG_EINVAL);
    assert_int_equal(incmig__kv_num(o.path, text, "m", 1, &x), INCMIG_EINVAL);
    free(text);
    incmig__owed_close(&o, true);
    incmig__bitmap_dispose(&b);
    /* a text that does not fit: the first error sticks, nothing written */
    for (int i = 0; i < 10; i++)
        incmig__kv_add(kv, "big", "%08000d", i);
    assert_int_not_equal(kv->rc, 0);
    incmig__owed_init(&o);
    assert_int_equal(incmig__owed_start(&o, dir, "receive", id, 1, &nb, kv),
                     INCMIG_EINVAL);
    assert_int_not_equal(access(sp, F_OK), 0);
    incmig__owed_close(&o, false);
    free(kv);
}

static void poke(off_t off, const void *b, size_t n)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, off), (ssize_t)n);
    close(fd);
}

static void refused(void)
{
    struct incmig__owed o;
    char *text = NULL;
    incmig__owed_init(&o);
    assert_int_not_equal(incmig__owed_open(&o, path, 0, &text), 0);
    assert_null(text);
    incmig__owed_close(&o, false);
}

static void test_refusals(void **state)
{
    struct incmig__owed o;

    make(&o, 1000, 65);
    incmig__owed_close(&o, false);
    poke(90, "X", 1);                          /* the text */
    refused();

    make(&o, 1000, 65);
    incmig__owed_close(&o, false);
    assert_int_equal(truncate(path, 65536 + 8), 0);
    refused();

    make(&o, 1000, 65);
    incmig__owed_close(&o, false);
    poke(65536 + 128 + 15, "\xff", 1);         /* disk 1, bits 120..127 */
    refused();

    make(&o, 1000, 65);
    incmig__owed_close(&o, false);
    poke(0, "INCMIGXX", 8);
    refused();
    unlink(path);
}

static void test_kv(void **state)
{
    char buf[256], v[64];
    size_t n = 0;

    assert_int_equal(incmig__kv_put(buf, sizeof buf, &n, "a", "x y%%z\n\t"), 0);
    assert_int_equal(incmig__kv_put(buf, sizeof buf, &n, "empty", "%s", ""), 0);
    assert_int_equal(incmig__kv_put(buf, sizeof buf, &n, "ab", "2"), 0);
    assert_int_equal(incmig__kv_get(buf, "a", v, sizeof v), 0);
    assert_string_equal(v, "x y%z\n\t");
    assert_int_equal(incmig__kv_get(buf, "empty", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(incmig__kv_get(buf, "ab", v, sizeof v), 0);
    assert_string_equal(v, "2");
    assert_int_equal(incmig__kv_get(buf, "b", v, sizeof v), INCMIG_EINVAL);
    assert_int_equal(incmig__kv_get("a %4", "a", v, sizeof v), INCMIG_EINVAL);
    assert_int_equal(incmig__kv_get("a x%00y", "a", v, sizeof v),
                     INCMIG_EINVAL);
    n = 0;
    assert_int_equal(incmig__kv_put(buf, 8, &n, "key", "longer value"),
                     INCMIG_EINVAL);
}

static void test_resolve(void **state)
{
    char p[4096];
    uint8_t id[16];

    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(i * 17);
    assert_int_equal(incmig__owed_path("/d", "migrate", id, p, sizeof p), 0);
    assert_string_equal(p, "/d/migrate-00112233445566778899aabbccddeeff.state");
    assert_int_equal(incmig__owed_resolve("/d", "receive",
                     "00112233445566778899aabbccddeeff", p, sizeof p), 0);
    assert_string_equal(p, "/d/receive-00112233445566778899aabbccddeeff.state");
    assert_int_equal(incmig__owed_resolve("/d", "receive", "./x", p, sizeof p),
                     0);
    assert_string_equal(p, "./x");
    assert_int_equal(incmig__owed_resolve("/d", "receive", "0011", p,
                                          sizeof p), INCMIG_EINVAL);
    assert_int_equal(incmig__owed_resolve("/d", "receive",
                     "0011223344556677889900112233445g", p, sizeof p),
                     INCMIG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_sync_maybe_thread),
        cmocka_unit_test(test_prepare_arm),
        cmocka_unit_test(test_lock_wait),
        cmocka_unit_test(test_start_resume),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_resolve),
    };
    incmig_log_setup(0, stderr, "test-owed");
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/x.state", dir);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(path);
    rmdir(dir);
    return rc;
}
