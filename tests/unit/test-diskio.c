/* test-diskio.c: unit tests of diskio.c on real files in a private
 * temporary directory: create/extend/size checks, allocation map of a
 * sparse file, is_zero, punch, the libaio queue (random round trip, the
 * unaligned last block, busy buffers) and the out-of-space path (a 1 MiB
 * tmpfs in a private mount namespace; skipped without mount rights).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

static char dir[] = "/tmp/test-diskio.XXXXXX";
static char path[64];

static int setup(void **state)
{
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/disk.img", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return (uint64_t)st.st_size;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9) + 1);
}

static void test_open_create(void **state)
{
    struct incmig__disk d;
    const uint64_t sz = 4096 * 10 + 1000;

    unlink(path);
    /* missing, no CREATE */
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_WRITE, 0),
                     INCMIG_EIO);
    assert_null(d.path);
    incmig__disk_close(&d);      /* idempotent after a failed open */

    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_WRITE |
                                       INCMIG_DISK_CREATE, sz), 0);
    assert_int_equal(d.size, sz);
    assert_int_equal(file_size(path), sz);
    assert_true(d.fd >= 0 && d.dfd >= 0);
    incmig__disk_close(&d);
    incmig__disk_close(&d);

    /* size read back */
    assert_int_equal(incmig__disk_open(&d, path, 0, 0), 0);
    assert_int_equal(d.size, sz);
    incmig__disk_close(&d);
    /* smaller existing file: extended with CREATE, ESIZE without */
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_WRITE,
                                       sz * 2), INCMIG_ESIZE);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_WRITE |
                                       INCMIG_DISK_CREATE, sz * 2), 0);
    assert_int_equal(d.size, sz * 2);
    assert_int_equal(file_size(path), sz * 2);
    incmig__disk_close(&d);
    /* a directory is neither file nor device */
    assert_int_equal(incmig__disk_open(&d, dir, 0, 0), INCMIG_EINVAL);
    unlink(path);
}

static void test_block_device_too_small(void **state)
{
    char cmd[256], dev[128] = "";
    struct incmig__disk d;

    if (geteuid() != 0)
        skip();
    snprintf(cmd, sizeof cmd, "truncate -s 1M '%s' && losetup -f --show "
             "'%s' 2>/dev/null", path, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        skip();
    if (!fgets(dev, sizeof dev, p))
        dev[0] = '\0';
    pclose(p);
    dev[strcspn(dev, "\n")] = '\0';
    if (!dev[0])
        skip();                    /* no loop devices here */
    int rc1 = incmig__disk_open(&d, dev, INCMIG_DISK_WRITE, 2 << 20);
    int rc2 = incmig__disk_open(&d, dev, INCMIG_DISK_WRITE, 1 << 20);
    uint64_t size = d.size;
    if (rc2 == 0)
        incmig__disk_close(&d);
    snprintf(cmd, sizeof cmd, "losetup -d '%s'", dev);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    assert_int_equal(rc1, INCMIG_ENOSPC);
    assert_int_equal(rc2, 0);
    assert_int_equal(size, 1 << 20);
}

static void test_alloc_map(void **state)
{
    struct incmig__disk d;
    struct incmig__bitmap map;
    uint8_t buf[4096];
    const uint64_t blocks[] = { 3, 100, 255 };

    unlink(path);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_CREATE,
                                       256 * 4096), 0);
    fill(buf, sizeof buf, 1);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(incmig__disk_pwrite(&d, buf, sizeof buf,
                                             blocks[i] * 4096), 0);
    assert_int_equal(incmig__disk_flush(&d), 0);
    assert_int_equal(incmig__bitmap_init(&map, 256), 0);
    /* a map too small for the disk is refused */
    struct incmig__bitmap small;
    assert_int_equal(incmig__bitmap_init(&small, 255), 0);
    assert_int_equal(incmig__disk_alloc_map(&d, 4096, &small), INCMIG_EINVAL);
    incmig__bitmap_dispose(&small);

    assert_int_equal(incmig__disk_alloc_map(&d, 4096, &map), 0);
    uint64_t n = incmig__bitmap_count(&map);
    /* Filesystems without SEEK_DATA mark everything (or allocate in
     * bigger extents): the exact assertion only holds on the others. */
    if (n != 3) {
        incmig__bitmap_dispose(&map);
        incmig__disk_close(&d);
        skip();
    }
    for (size_t i = 0; i < 3; i++)
        assert_true(incmig__bitmap_test(&map, blocks[i]));
    /* at 64 KiB blocks: blocks 0, 6 and 15 */
    struct incmig__bitmap big;
    assert_int_equal(incmig__bitmap_init(&big, 16), 0);
    assert_int_equal(incmig__disk_alloc_map(&d, 65536, &big), 0);
    assert_int_equal(incmig__bitmap_count(&big), 3);
    assert_true(incmig__bitmap_test(&big, 0));
    assert_true(incmig__bitmap_test(&big, 6));
    assert_true(incmig__bitmap_test(&big, 15));
    incmig__bitmap_dispose(&big);
    incmig__bitmap_dispose(&map);
    incmig__disk_close(&d);
    unlink(path);
}

static void test_is_zero(void **state)
{
    static uint8_t buf[65536 + 3];

    memset(buf, 0, sizeof buf);
    assert_true(incmig__is_zero(buf, 0));
    assert_true(incmig__is_zero(buf, 1));
    assert_true(incmig__is_zero(buf, 16));
    assert_true(incmig__is_zero(buf, 17));
    assert_true(incmig__is_zero(buf, sizeof buf));
    const size_t at[] = { 0, 15, 16, 17, 4095, 65536 + 2 };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        buf[at[i]] = 1;
        assert_false(incmig__is_zero(buf, sizeof buf));
        assert_true(incmig__is_zero(buf, at[i]));
        buf[at[i]] = 0;
    }
}

static void test_pread_pwrite_punch(void **state)
{
    struct incmig__disk d;
    uint8_t w[8192], r[8192], z[8192] = { 0 };

    unlink(path);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_CREATE,
                                       16 * 4096), 0);
    fill(w, sizeof w, 2);
    assert_int_equal(incmig__disk_pwrite(&d, w, sizeof w, 4096), 0);
    assert_int_equal(incmig__disk_pread(&d, r, sizeof r, 4096), 0);
    assert_memory_equal(w, r, sizeof w);
    /* unaligned */
    assert_int_equal(incmig__disk_pread(&d, r, 100, 4096 + 7), 0);
    assert_memory_equal(w + 7, r, 100);
    /* past EOF reads as zeroes */
    memset(r, 0xee, sizeof r);
    assert_int_equal(incmig__disk_pread(&d, r, sizeof r, 15 * 4096), 0);
    assert_true(incmig__is_zero(r, sizeof r));

    assert_int_equal(incmig__disk_punch(&d, 4096, 4096), 0);
    assert_int_equal(incmig__disk_pread(&d, r, sizeof r, 4096), 0);
    assert_memory_equal(r, z, 4096);
    assert_memory_equal(r + 4096, w + 4096, 4096);
    /* punching past the end neither fails nor grows the file */
    assert_int_equal(incmig__disk_punch(&d, 15 * 4096, 1 << 20), 0);
    assert_int_equal(file_size(path), 16 * 4096);
    assert_int_equal(incmig__disk_flush(&d), 0);
    incmig__disk_close(&d);

    /* read-only disk: writes fail with EIO */
    assert_int_equal(incmig__disk_open(&d, path, 0, 0), 0);
    assert_int_equal(incmig__disk_pwrite(&d, w, 10, 0), INCMIG_EIO);
    incmig__disk_close(&d);
    unlink(path);
}

/* Reap one request, expect success and, with check, the block data. */
static void reap_one(struct incmig__aioq *q, uint8_t (*expect)[4096],
                     bool check)
{
    uint64_t tag, off;
    size_t len;
    uint8_t *buf;
    int res;

    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res), 0);
    assert_int_equal(res, 0);
    assert_int_equal(len, 4096);
    assert_int_equal(off, tag * 4096);
    if (check)
        assert_memory_equal(buf, expect[tag], 4096);
    incmig__aioq_put_buf(q, buf);
}

static void test_aioq_round_trip(void **state)
{
    enum { NB = 256, QD = 8 };
    static uint8_t data[NB][4096];
    static bool written[NB];
    struct incmig__disk d;
    struct incmig__aioq *q;
    uint8_t *buf, r[4096];

    unlink(path);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_CREATE,
                                       NB * 4096), 0);
    assert_int_equal(incmig__aioq_new(&q, &d, 0, 4096), INCMIG_EINVAL);
    assert_int_equal(incmig__aioq_new(&q, &d, QD, 1000), INCMIG_EINVAL);
    assert_int_equal(incmig__aioq_new(&q, &d, QD, 4096), 0);
    assert_int_equal(incmig__aioq_inflight(q), 0);

    srand(3);
    memset(data, 0, sizeof data);
    for (int i = 0; i < 100; i++) {
        uint64_t blk = (uint64_t)rand() % NB;
        if (incmig__aioq_inflight(q) == QD)
            reap_one(q, NULL, false);
        assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
        fill(buf, 4096, (unsigned)i);
        /* the same block twice in flight would race: skip duplicates */
        if (written[blk]) {
            incmig__aioq_put_buf(q, buf);
            continue;
        }
        written[blk] = true;
        memcpy(data[blk], buf, 4096);
        assert_int_equal(incmig__aioq_submit(q, true, buf, 4096, blk * 4096,
                                             blk), 0);
    }
    assert_int_equal(incmig__aioq_drain(q), 0);
    assert_int_equal(incmig__aioq_inflight(q), 0);
    for (uint64_t blk = 0; blk < NB; blk++) {
        assert_int_equal(incmig__disk_pread(&d, r, 4096, blk * 4096), 0);
        assert_memory_equal(r, data[blk], 4096);
    }
    /* and read every block back through the queue */
    for (uint64_t blk = 0; blk < NB; blk++) {
        if (incmig__aioq_inflight(q) == QD)
            reap_one(q, data, true);
        assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
        assert_int_equal(incmig__aioq_submit(q, false, buf, 4096, blk * 4096,
                                             blk), 0);
    }
    while (incmig__aioq_inflight(q) > 0)
        reap_one(q, data, true);
    incmig__aioq_free(q);
    incmig__disk_close(&d);
    unlink(path);
}

static void test_aioq_busy_and_misuse(void **state)
{
    struct incmig__disk d;
    struct incmig__aioq *q;
    uint8_t *b1, *b2, *b3, *buf, other[4096];
    uint64_t tag, off;
    size_t len;
    int res;

    unlink(path);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_CREATE,
                                       8 * 4096), 0);
    assert_int_equal(incmig__aioq_new(&q, &d, 2, 8192), 0);
    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res),
                     INCMIG_EINVAL);
    assert_int_equal(incmig__aioq_get_buf(q, &b1), 0);
    assert_int_equal((uintptr_t)b1 % 4096, 0);
    assert_int_equal(incmig__aioq_get_buf(q, &b2), 0);
    assert_int_equal(incmig__aioq_get_buf(q, &b3), INCMIG_EINVAL);
    /* bad submits: foreign buffer, too long, write past the end */
    assert_int_equal(incmig__aioq_submit(q, false, other, 4096, 0, 0),
                     INCMIG_EINVAL);
    assert_int_equal(incmig__aioq_submit(q, false, b1, 8193, 0, 0),
                     INCMIG_EINVAL);
    assert_int_equal(incmig__aioq_submit(q, true, b1, 8192, 7 * 4096, 0),
                     INCMIG_EINVAL);
    memset(b1, 0x5a, 8192);
    assert_int_equal(incmig__aioq_submit(q, true, b1, 8192, 0, 1), 0);
    /* a submitted buffer cannot be submitted again */
    assert_int_equal(incmig__aioq_submit(q, true, b1, 8192, 0, 1),
                     INCMIG_EINVAL);
    incmig__aioq_put_buf(q, b2);           /* unused: back to the pool */
    assert_int_equal(incmig__aioq_inflight(q), 1);
    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res), 0);
    assert_int_equal(tag, 1);
    assert_ptr_equal(buf, b1);
    assert_int_equal(res, 0);
    assert_int_equal(incmig__aioq_get_buf(q, &b2), 0);
    assert_int_equal(incmig__aioq_get_buf(q, &b3), INCMIG_EINVAL);
    incmig__aioq_put_buf(q, b1);
    assert_int_equal(incmig__aioq_get_buf(q, &b3), 0);
    incmig__aioq_put_buf(q, b2);
    incmig__aioq_put_buf(q, b3);
    incmig__aioq_free(q);
    incmig__disk_close(&d);
    unlink(path);
}

/* A disk whose size is not a multiple of 4096: the tail block. */
static void test_aioq_unaligned_tail(void **state)
{
    const uint64_t sz = 4096 * 10 + 1000;
    struct incmig__disk d;
    struct incmig__aioq *q;
    uint8_t *buf, w[4096], r[4096];
    uint64_t tag, off;
    size_t len;
    int res;

    unlink(path);
    assert_int_equal(incmig__disk_open(&d, path, INCMIG_DISK_CREATE, sz), 0);
    assert_int_equal(incmig__aioq_new(&q, &d, 4, 4096), 0);

    /* write the 1000-byte tail and the block before it */
    fill(w, sizeof w, 9);
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    memcpy(buf, w, 1000);
    assert_int_equal(incmig__aioq_submit(q, true, buf, 1000, 40960, 10), 0);
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    memcpy(buf, w, 4096);
    assert_int_equal(incmig__aioq_submit(q, true, buf, 4096, 36864, 9), 0);
    /* a full block at the tail would grow the disk: refused */
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    assert_int_equal(incmig__aioq_submit(q, true, buf, 4096, 40960, 11),
                     INCMIG_EINVAL);
    incmig__aioq_put_buf(q, buf);
    assert_int_equal(incmig__aioq_drain(q), 0);
    assert_int_equal(file_size(path), sz);
    assert_int_equal(incmig__disk_pread(&d, r, 1000, 40960), 0);
    assert_memory_equal(r, w, 1000);

    /* read the tail as a full block: past EOF is zero */
    for (int k = 0; k < 3; k++) {
        size_t want = k == 0 ? 4096 : k == 1 ? 1000 : 600;
        assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
        memset(buf, 0xee, 4096);
        assert_int_equal(incmig__aioq_submit(q, false, buf, want, 40960, 0),
                         0);
        assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res),
                         0);
        assert_int_equal(res, 0);
        assert_int_equal(len, want);
        assert_memory_equal(buf, w, want < 1000 ? want : 1000);
        if (want > 1000)
            assert_true(incmig__is_zero(buf + 1000, want - 1000));
        incmig__aioq_put_buf(q, buf);
    }
    /* entirely past EOF, and at an unaligned offset */
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    memset(buf, 0xee, 4096);
    assert_int_equal(incmig__aioq_submit(q, false, buf, 4096, 45056, 0), 0);
    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res), 0);
    assert_int_equal(res, 0);
    assert_true(incmig__is_zero(buf, 4096));
    incmig__aioq_put_buf(q, buf);
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    assert_int_equal(incmig__aioq_submit(q, false, buf, 100, 36864 + 3, 0),
                     0);
    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res), 0);
    assert_int_equal(res, 0);
    assert_memory_equal(buf, w + 3, 100);
    incmig__aioq_put_buf(q, buf);

    incmig__aioq_free(q);
    incmig__disk_close(&d);
    unlink(path);
}

/* Out of space: a 1 MiB tmpfs in a private mount namespace (so nothing
 * leaks to the host).  Runs last: the namespace stays for this process. */
static void test_enospc(void **state)
{
    char mnt[64], img[96];
    struct incmig__disk d;
    struct incmig__aioq *q;
    static uint8_t big[256 * 1024];
    uint8_t *buf;
    uint64_t tag, off;
    size_t len;
    int res;

    snprintf(mnt, sizeof mnt, "%s/small", dir);
    snprintf(img, sizeof img, "%s/disk.img", mnt);
    if (mkdir(mnt, 0700) < 0 || unshare(CLONE_NEWNS) < 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=1M") < 0)
        skip();
    /* a sparse 8 MiB image fits; its data does not */
    assert_int_equal(incmig__disk_open(&d, img, INCMIG_DISK_CREATE,
                                       8 << 20), 0);
    memset(big, 0x11, sizeof big);
    int rc = 0;
    uint64_t at;
    for (at = 0; at < (8 << 20) && rc == 0; at += sizeof big)
        rc = incmig__disk_pwrite(&d, big, sizeof big, at);
    assert_int_equal(rc, INCMIG_ENOSPC);
    assert_true(at <= (2 << 20));

    /* the same through the queue */
    assert_int_equal(incmig__aioq_new(&q, &d, 1, 65536), 0);
    assert_int_equal(incmig__aioq_get_buf(q, &buf), 0);
    memset(buf, 0x22, 65536);
    assert_int_equal(incmig__aioq_submit(q, true, buf, 65536, 4 << 20, 7), 0);
    assert_int_equal(incmig__aioq_reap(q, &tag, &off, &len, &buf, &res), 0);
    assert_int_equal(tag, 7);
    assert_int_equal(res, INCMIG_ENOSPC);
    incmig__aioq_put_buf(q, buf);
    incmig__aioq_free(q);
    incmig__disk_close(&d);
    umount(mnt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_create),
        cmocka_unit_test(test_block_device_too_small),
        cmocka_unit_test(test_alloc_map),
        cmocka_unit_test(test_is_zero),
        cmocka_unit_test(test_pread_pwrite_punch),
        cmocka_unit_test(test_aioq_round_trip),
        cmocka_unit_test(test_aioq_busy_and_misuse),
        cmocka_unit_test(test_aioq_unaligned_tail),
        cmocka_unit_test(test_enospc),
    };
    /* Expected errors are tested here: keep stderr quiet. */
    incmig__verbosity = -1;
    return cmocka_run_group_tests(tests, setup, teardown);
}
