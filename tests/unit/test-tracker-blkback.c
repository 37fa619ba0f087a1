/* test-tracker-blkback.c: unit tests of tracker-blkback.c against a fake
 * sysfs directory (a temp dir standing for /sys/bus/xen-backend/devices/
 * vbd-D-N) and a fake xenstore that answers like the patched blkback:
 * enable and its errors, the stock-module message, snapshot + read and
 * the byte layout, a bitmap of the wrong size, load, drain-wait, disable;
 * the lineage's proof: what the VBD said before open (tracking already on,
 * incmig-track-gen), the node written and emptied (disable empties it
 * first), incmig-track-volume, and a VBD not connected yet (no sectors:
 * the size given).
 * Built only with libxen (HAVE_XEN).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"
#include "tracker-blkback.h"

#define BE "/local/domain/0/backend/vbd/7/51712"

/* ---- fake xenstore: a few nodes, and blkback's answer to an enable ---- */

struct fakexs {
    bool stock;                    /* blkback never answers */
    bool refuse;                   /* blkback answers "error: ..." */
    char block_size[32];
    char tracking[128];            /* "" = absent */
    char key[80];
    char volume[256];
    char gen[40];
    char sectors[32];
    int writes;
};

static int fx_write(void *opaque, const char *path, const char *val)
{
    struct fakexs *x = opaque;
    const char *leaf = strrchr(path, '/') + 1;

    x->writes++;
    assert_memory_equal(path, BE "/", strlen(BE "/"));
    if (!strcmp(leaf, "incmig-track-key")) {
        snprintf(x->key, sizeof x->key, "%s", val);
        return 0;
    }
    if (!strcmp(leaf, "incmig-track-volume")) {
        snprintf(x->volume, sizeof x->volume, "%s", val);
        return 0;
    }
    if (!strcmp(leaf, "incmig-track-gen")) {
        snprintf(x->gen, sizeof x->gen, "%s", val);
        return 0;
    }
    assert_string_equal(leaf, "incmig-track-block-size");
    snprintf(x->block_size, sizeof x->block_size, "%s", val);
    if (x->stock)
        return 0;
    if (x->refuse) {
        strcpy(x->tracking, "error: cannot allocate two bitmaps");
        return 0;
    }
    unsigned long bs = strtoul(val, NULL, 10);
    if (bs == 0)
        strcpy(x->tracking, "0");
    else if ((bs & (bs - 1)) || bs < 4096 || bs > (1u << 20))
        snprintf(x->tracking, sizeof x->tracking,
                 "error: block size %lu is not a power of two", bs);
    else
        snprintf(x->tracking, sizeof x->tracking, "%lu", bs);
    return 0;
}

static int fx_read(void *opaque, const char *path, char **val_r)
{
    struct fakexs *x = opaque;
    const char *leaf = strrchr(path, '/') + 1;
    const char *v = NULL;

    if (!strcmp(leaf, "incmig-tracking"))
        v = x->tracking;
    else if (!strcmp(leaf, "sectors"))
        v = x->sectors;
    else if (!strcmp(leaf, "incmig-track-gen"))
        v = x->gen;
    if (!v || !*v)
        return 1;
    *val_r = strdup(v);
    return 0;
}

static const struct incmig__blkback_xs_ops fx_ops = {
    .write = fx_write, .read = fx_read, .close = NULL,
};

/* ---- fake sysfs ---------------------------------------------------------- */

struct env {
    char root[64];
    char dir[256];
    struct fakexs xs;
    struct incmig__blkback_opts opts;
};

static void put(struct env *e, const char *leaf, const void *data, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", e->dir, leaf);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static size_t get(struct env *e, const char *leaf, void *buf, size_t len)
{
    char path[512];
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "%s/%s", e->dir, leaf);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, len, f);
    fclose(f);
    return n;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    char cmd[600];

    strcpy(e->root, "/tmp/incmig-tbb-XXXXXX");
    assert_non_null(mkdtemp(e->root));
    snprintf(e->dir, sizeof e->dir,
             "%s/sys/bus/xen-backend/devices/vbd-7-51712", e->root);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
    put(e, "incmig_control", "", 0);
    put(e, "incmig_bitmap_load", "", 0);
    put(e, "incmig_inflight", "0\n", 2);
    /* 1 MiB + 512 B disk: 257 blocks of 4 KiB, 33 bytes of bitmap. */
    strcpy(e->xs.sectors, "2049");
    e->opts.sysfs_root = e->root;
    e->opts.xs = &fx_ops;
    e->opts.xs_opaque = &e->xs;
    e->opts.timeout_s = 0.2;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    char cmd[200];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->root);
    assert_int_equal(system(cmd), 0);
    free(e);
    return 0;
}

static void test_open(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;

    e->opts.key = "disk-abc";
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_string_equal(e->xs.block_size, "4096");
    assert_string_equal(e->xs.key, "disk-abc");
    assert_int_equal(t->block_size, 4096);
    assert_int_equal(t->nblocks, 257);
    assert_int_equal(incmig__blkback_disable(t), 0);
    assert_string_equal(e->xs.tracking, "0");
    t->ops->dispose(t);
}

/* PUSH yielding's view of the guest: the statistics of the device blkback
 * serves the VBD from; reads left out when PUSH reads that device. */
static void test_activity(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;
    char cmd[600], path[300];
    uint64_t n;
    double s;
    FILE *f;

    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    /* no physical_device: an error, not a guest that looks idle */
    assert_int_equal(incmig__blkback_activity(t, 0, &n, &s), INCMIG_EIO);
    put(e, "physical_device", "fd:1a\n", 6);
    assert_int_equal(incmig__blkback_activity(t, 0, &n, &s), INCMIG_EIO);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/sys/dev/block/253:26'", e->root);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/sys/dev/block/253:26/stat", e->root);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "     120        3     4000      250      300        0"
               "     9000      750        0      900     1000\n");
    fclose(f);
    assert_int_equal(incmig__blkback_activity(t, 0, &n, &s), 0);
    assert_int_equal(n, 420);
    assert_true(s > 0.999 && s < 1.001);
    assert_int_equal(incmig__blkback_activity(t, makedev(253, 26), &n, &s),
                     0);
    assert_int_equal(n, 300);
    assert_true(s > 0.749 && s < 0.751);
    assert_int_equal(incmig__blkback_activity(t, makedev(253, 27), &n, &s),
                     0);
    assert_int_equal(n, 420);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "garbage\n");
    fclose(f);
    assert_int_equal(incmig__blkback_activity(t, 0, &n, &s), INCMIG_EIO);
    assert_int_equal(incmig__blkback_disable(t), 0);
    t->ops->dispose(t);
}

static void test_bad_block_size(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;

    /* Refused before blkback is asked... */
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 6000,
                                                  &e->opts), INCMIG_EINVAL);
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 2u << 20,
                                                  &e->opts), INCMIG_EINVAL);
    assert_null(t);
    assert_int_equal(e->xs.writes, 0);
    /* ...and blkback's own refusal is passed on. */
    e->xs.refuse = true;
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 65536,
                                                  &e->opts), INCMIG_EINVAL);
    assert_null(t);
}

static void test_stock_module(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;
    char path[512];

    e->xs.stock = true;
    snprintf(path, sizeof path, "%s/incmig_control", e->dir);
    unlink(path);
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), INCMIG_ENOTSUP);
    assert_null(t);
}

static void test_no_vbd(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;

    assert_int_equal(incmig__blkback_tracker_open(&t, 8, 51712, 4096,
                                                  &e->opts), INCMIG_EINVAL);
    strcpy(e->xs.sectors, "");
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), INCMIG_EINVAL);
}

static void test_get_and_clear(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;
    struct incmig__bitmap bm, small;
    uint8_t bytes[33] = { 0 };
    char ctl[32];

    bytes[0] = 0x81;               /* blocks 0 and 7 */
    bytes[8] = 0x02;               /* block 65 */
    bytes[32] = 0x01;              /* block 256, the last */
    put(e, "incmig_bitmap", bytes, sizeof bytes);
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_int_equal(incmig__bitmap_init(&bm, 257), 0);
    incmig__bitmap_set(&bm, 100);  /* ORed into, not overwritten */
    assert_int_equal(t->ops->get_and_clear(t, &bm), 0);
    assert_int_equal(get(e, "incmig_control", ctl, sizeof ctl), 8);
    assert_memory_equal(ctl, "snapshot", 8);
    assert_int_equal(incmig__bitmap_count(&bm), 5);
    assert_true(incmig__bitmap_test(&bm, 0));
    assert_true(incmig__bitmap_test(&bm, 7));
    assert_true(incmig__bitmap_test(&bm, 65));
    assert_true(incmig__bitmap_test(&bm, 100));
    assert_true(incmig__bitmap_test(&bm, 256));

    /* The caller's bitmap must match the VBD. */
    assert_int_equal(incmig__bitmap_init(&small, 256), 0);
    assert_int_equal(t->ops->get_and_clear(t, &small), INCMIG_EINVAL);

    /* A bitmap of the wrong size from the kernel: the VBD changed. */
    put(e, "incmig_bitmap", bytes, 32);
    assert_int_equal(t->ops->get_and_clear(t, &bm), INCMIG_ESIZE);
    put(e, "incmig_bitmap", bytes, 0);
    assert_int_equal(t->ops->get_and_clear(t, &bm), INCMIG_ESIZE);

    incmig__bitmap_dispose(&small);
    incmig__bitmap_dispose(&bm);
    t->ops->dispose(t);
}

static void test_load(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;
    struct incmig__bitmap bm;
    uint8_t bytes[40];
    char ctl[32];

    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_int_equal(incmig__bitmap_init(&bm, 257), 0);
    incmig__bitmap_set(&bm, 1);
    incmig__bitmap_set(&bm, 64);
    incmig__bitmap_set(&bm, 256);
    assert_int_equal(t->ops->load(t, &bm), 0);
    assert_int_equal(get(e, "incmig_bitmap_load", bytes, sizeof bytes), 33);
    assert_int_equal(bytes[0], 0x02);
    assert_int_equal(bytes[8], 0x01);
    assert_int_equal(bytes[32], 0x01);
    assert_int_equal(get(e, "incmig_control", ctl, sizeof ctl), 4);
    assert_memory_equal(ctl, "load", 4);
    incmig__bitmap_dispose(&bm);

    /* A saved bitmap of another size is refused before the kernel. */
    assert_int_equal(incmig__bitmap_init(&bm, 258), 0);
    put(e, "incmig_bitmap_load", "", 0);
    assert_int_equal(t->ops->load(t, &bm), INCMIG_ESIZE);
    assert_int_equal(get(e, "incmig_bitmap_load", bytes, sizeof bytes), 0);
    incmig__bitmap_dispose(&bm);
    t->ops->dispose(t);
}

static void test_drain_wait(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;

    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_int_equal(incmig__blkback_drain_wait(t, 0.1), 0);
    put(e, "incmig_inflight", "3\n", 2);
    assert_int_equal(incmig__blkback_drain_wait(t, 0.05), INCMIG_ECANCEL);
    put(e, "incmig_inflight", "x\n", 2);
    assert_int_equal(incmig__blkback_drain_wait(t, 0.05), INCMIG_EIO);
    t->ops->dispose(t);
}

static void test_prior_and_gen(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;
    char gen[33];
    bool on;
    uint8_t g[16];

    /* a fresh VBD: tracking off before us, no proof */
    strcpy(e->xs.gen, "0123456789abcdef0123456789abcdef");
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    incmig__blkback_prior(t, &on, gen);
    assert_false(on);
    assert_string_equal(gen, "0123456789abcdef0123456789abcdef");
    t->ops->dispose(t);

    /* tracking already on at this size (the target, the hook) */
    e->opts.volume = "/srv/vm/disk.img";
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_string_equal(e->xs.volume, "/srv/vm/disk.img");
    incmig__blkback_prior(t, &on, gen);
    assert_true(on);
    assert_int_equal(incmig__blkback_set_gen(t, NULL), 0);
    assert_string_equal(e->xs.gen, "");
    for (int i = 0; i < 16; i++)
        g[i] = (uint8_t)(0xa0 + i);
    assert_int_equal(incmig__blkback_set_gen(t, g), 0);
    assert_string_equal(e->xs.gen, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    t->ops->dispose(t);

    /* on, but at another block size: not the same bitmap */
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 8192,
                                                  &e->opts), 0);
    incmig__blkback_prior(t, &on, gen);
    assert_false(on);
    assert_string_equal(gen, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    /* switching tracking off takes the proof with it, first */
    assert_int_equal(incmig__blkback_disable(t), 0);
    assert_string_equal(e->xs.gen, "");
    assert_string_equal(e->xs.tracking, "0");
    t->ops->dispose(t);
}

static void test_not_connected(void **state)
{
    struct env *e = *state;
    struct incmig__tracker *t;

    /* a restored domain, paused: no sectors node yet, the size given */
    strcpy(e->xs.sectors, "");
    e->opts.size = 2049 * 512;
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), 0);
    assert_int_equal(t->nblocks, 257);
    t->ops->dispose(t);
    e->opts.size = 1000;          /* not whole sectors */
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), INCMIG_EINVAL);
    /* connected: the two must agree */
    strcpy(e->xs.sectors, "2049");
    e->opts.size = 2048 * 512;
    assert_int_equal(incmig__blkback_tracker_open(&t, 7, 51712, 4096,
                                                  &e->opts), INCMIG_ESIZE);
    assert_null(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_block_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stock_module, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_vbd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prior_and_gen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_connected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activity, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
