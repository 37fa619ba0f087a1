/* test-lineage.c: what a copy proves (lineage.c), the BASE and DECIDE
 * codecs (stream.c) and the per-disk decision and checksums (base.c). */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

#define BS 4096u
#define NB 64u

static char dir[64];
static char img[128];

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/test-lineage.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(img, sizeof img, "%s/disk.img", dir);
    int fd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)BS * NB) < 0)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **st)
{
    char p[160];
    (void)st;
    incmig__lineage_remove(img);
    unlink(img);
    snprintf(p, sizeof p, "%s/other.img", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

/* Flip every bit of the octet at off of file p. */
static void flip(const char *p, off_t off)
{
    uint8_t c;
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0xff;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void load(struct incmig__lineage *l)
{
    incmig__lineage_dispose(l);
    assert_int_equal(incmig__lineage_load(img, -1, BS, l), 0);
}

/* Save cleanly with blocks 3 and 40 written since gen. */
static void save_clean(const uint8_t gen[16])
{
    struct incmig__bitmap bm = {0};
    int fd = open(img, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(incmig__bitmap_init(&bm, NB), 0);
    incmig__bitmap_set(&bm, 3);
    incmig__bitmap_set(&bm, 40);
    assert_int_equal(incmig__lineage_close(img, fd, gen, BS, &bm), 0);
    incmig__bitmap_dispose(&bm);
    close(fd);
}

static void test_generations(void **st)
{
    uint8_t id[16], a[16], b[16], c[16], r1[16], r2[16];
    char hex[33];
    (void)st;
    memset(id, 7, 16);
    incmig__gen_derive(id, 0, a);
    incmig__gen_derive(id, 0, b);
    incmig__gen_derive(id, 1, c);
    assert_memory_equal(a, b, 16);
    assert_memory_not_equal(a, c, 16);
    incmig__gen_random(r1);
    incmig__gen_random(r2);
    assert_false(incmig__gen_zero(r1));
    assert_memory_not_equal(r1, r2, 16);
    assert_int_equal(incmig__gen_parse(incmig__gen_hex(a, hex), b), 0);
    assert_memory_equal(a, b, 16);
    assert_int_equal(incmig__gen_parse("12", b), INCMIG_EINVAL);
}

static void test_claims(void **st)
{
    struct incmig__lineage l = {0};
    uint8_t gen[16];
    char p[160];
    (void)st;
    incmig__gen_random(gen);

    load(&l);                                   /* nothing yet */
    assert_false(l.found);
    assert_false(l.valid);

    int fd = open(img, O_RDWR);                 /* a tracker holds it */
    assert_int_equal(incmig__lineage_open(img, fd, gen, BS), 0);
    close(fd);
    load(&l);
    assert_true(l.found);
    assert_false(l.valid);
    assert_non_null(strstr(l.why, "did not close"));

    save_clean(gen);                            /* closed cleanly */
    load(&l);
    if (!l.valid)
        fail_msg("a clean close is not proven: %s", l.why);
    assert_true(l.has_bitmap);
    assert_memory_equal(l.gen, gen, 16);
    assert_int_equal(incmig__bitmap_count(&l.bm), 2);
    assert_true(incmig__bitmap_test(&l.bm, 40));

    incmig__lineage_dispose(&l);                /* another block size */
    assert_int_equal(incmig__lineage_load(img, -1, 2 * BS, &l), 0);
    assert_true(l.valid);
    assert_false(l.has_bitmap);

    snprintf(p, sizeof p, "%s.incmig-bitmap", img);   /* bitmap deleted */
    assert_int_equal(unlink(p), 0);
    load(&l);
    assert_true(l.valid);
    assert_false(l.has_bitmap);
    assert_non_null(strstr(l.why, "missing"));

    save_clean(gen);                            /* written behind its back */
    struct timespec ts = { 0, 30000000 };   /* past a timestamp tick */
    nanosleep(&ts, NULL);
    fd = open(img, O_RDWR);
    assert_int_equal(pwrite(fd, "x", 1, 5000), 1);   /* a hole: was 0 */
    close(fd);
    load(&l);
    assert_false(l.valid);
    assert_non_null(strstr(l.why, "changed after"));

    save_clean(gen);                            /* a corrupt lineage */
    snprintf(p, sizeof p, "%s.incmig", img);
    flip(p, 20);
    load(&l);
    assert_false(l.valid);
    assert_non_null(strstr(l.why, "corrupt"));

    save_clean(gen);                            /* a corrupt bitmap */
    snprintf(p, sizeof p, "%s.incmig-bitmap", img);
    flip(p, 46);
    load(&l);
    assert_true(l.valid);
    assert_false(l.has_bitmap);

    save_clean(gen);                            /* another file in its place */
    char other[160];
    snprintf(other, sizeof other, "%s/other.img", dir);
    fd = open(other, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && ftruncate(fd, (off_t)BS * NB) == 0);
    close(fd);
    assert_int_equal(rename(other, img), 0);
    load(&l);
    assert_false(l.valid);
    incmig__lineage_dispose(&l);
}

/* ---- codecs ------------------------------------------------------------- */

static void test_codecs(void **st)
{
    uint8_t buf[256];
    struct incmig__base_rec b = { .index = 2, .kind = INCMIG_BASE_REPORT,
                                  .flags = INCMIG_BASE_HAVE | INCMIG_BASE_BITMAP,
                                  .nbits = 100 }, b2;
    struct incmig__rec r = { .type = INCMIG_REC_BASE, .body = buf };
    (void)st;
    memset(b.gen, 0x5a, 16);
    int n = incmig__enc_base_hdr(&b, buf);
    assert_int_equal(n, INCMIG_BASE_REPORT_HDR);
    buf[n] = 0;                                 /* one octet of bitmap */
    r.len = (uint32_t)n + 1;
    assert_int_equal(incmig__dec_base(&r, &b2), 0);
    assert_int_equal(b2.index, 2);
    assert_int_equal(b2.flags, b.flags);
    assert_memory_equal(b2.gen, b.gen, 16);
    assert_int_equal(b2.len, 1);
    r.len = (uint32_t)n;                        /* BITMAP and no data */
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);
    buf[11] = INCMIG_BASE_BITMAP;               /* BITMAP without HAVE */
    r.len = (uint32_t)n + 1;
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);
    buf[11] = INCMIG_BASE_HAVE;                 /* HAVE: no bitmap, nbits 0 */
    memset(buf + 28, 0, 8);
    r.len = (uint32_t)n;
    assert_int_equal(incmig__dec_base(&r, &b2), 0);
    memset(buf + 12, 0, 16);                    /* HAVE with no generation */
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);
    buf[5] = 1;                                 /* reserved */
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);

    struct incmig__base_rec s = { .index = 0, .kind = INCMIG_BASE_SUMS,
                                  .first = 10, .count = 2 };
    n = incmig__enc_base_hdr(&s, buf);
    assert_int_equal(n, INCMIG_BASE_SUMS_HDR);
    r.len = (uint32_t)n + 32;
    assert_int_equal(incmig__dec_base(&r, &b2), 0);
    assert_int_equal(b2.first, 10);
    assert_int_equal(b2.count, 2);
    r.len = (uint32_t)n + 31;                   /* a sum cut short */
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);
    buf[4] = 7;                                 /* unknown kind */
    r.len = (uint32_t)n + 32;
    assert_int_equal(incmig__dec_base(&r, &b2), INCMIG_EPROTO);
    s.count = INCMIG_SUMS_MAX + 1;
    assert_int_equal(incmig__enc_base_hdr(&s, buf), INCMIG_EINVAL);

    struct incmig__decide x = { .index = 1, .mode = INCMIG_MODE_CHECKSUM,
                                .reason = "why" }, x2;
    n = incmig__enc_decide(&x, buf);
    assert_int_equal(n, 13);
    r.type = INCMIG_REC_DECIDE;
    r.len = (uint32_t)n;
    assert_int_equal(incmig__dec_decide(&r, &x2), 0);
    assert_int_equal(x2.mode, INCMIG_MODE_CHECKSUM);
    assert_string_equal(x2.reason, "why");
    buf[4] = 3;                                 /* no such mode */
    assert_int_equal(incmig__dec_decide(&r, &x2), INCMIG_EPROTO);
    assert_string_equal(incmig__mode_name(INCMIG_MODE_UNION), "union");
}

/* ---- the decision and the checksums ------------------------------------- */

static void base_init(struct incmig__base_src *b, struct incmig__disk *d,
                      const uint8_t gen[16])
{
    memset(b, 0, sizeof *b);
    b->name = "xvda";
    b->disk = d;
    b->bs = BS;
    b->nblocks = NB;
    memcpy(b->gen, gen, 16);
    assert_int_equal(incmig__bitmap_init(&b->mine, NB), 0);
    assert_int_equal(incmig__bitmap_init(&b->send, NB), 0);
}

static void base_dispose(struct incmig__base_src *b)
{
    incmig__bitmap_dispose(&b->mine);
    incmig__bitmap_dispose(&b->send);
}

static void test_decide(void **st)
{
    struct incmig__base_src b;
    struct incmig__bitmap theirs = {0};
    uint8_t gen[16], *enc;
    size_t len;
    (void)st;
    incmig__gen_random(gen);

    base_init(&b, NULL, gen);                   /* nothing there */
    struct incmig__base_rec rep = { .kind = INCMIG_BASE_REPORT };
    assert_int_equal(incmig__base_decide(&b, &rep), 0);
    assert_int_equal(b.mode, INCMIG_MODE_FULL);
    base_dispose(&b);

    base_init(&b, NULL, gen);                   /* both bitmaps: union */
    b.has_bitmap = true;
    incmig__bitmap_set(&b.mine, 1);
    assert_int_equal(incmig__bitmap_init(&theirs, NB), 0);
    incmig__bitmap_set(&theirs, 1);
    incmig__bitmap_set(&theirs, 60);
    assert_int_equal(incmig__bitmap_encode(&theirs, 0, NB, &enc, &len), 0);
    rep.flags = INCMIG_BASE_HAVE | INCMIG_BASE_BITMAP;
    memcpy(rep.gen, gen, 16);
    rep.nbits = NB;
    rep.data = enc;
    rep.len = (uint32_t)len;
    assert_int_equal(incmig__base_decide(&b, &rep), 0);
    assert_int_equal(b.mode, INCMIG_MODE_UNION);
    assert_int_equal(incmig__bitmap_count(&b.send), 2);
    base_dispose(&b);

    base_init(&b, NULL, gen);                   /* ours missing: checksums */
    snprintf(b.why, sizeof b.why, "the source's bitmap is missing");
    assert_int_equal(incmig__base_decide(&b, &rep), 0);
    assert_int_equal(b.mode, INCMIG_MODE_CHECKSUM);
    assert_non_null(strstr(b.reason, "source's bitmap is missing"));
    base_dispose(&b);

    base_init(&b, NULL, gen);                   /* theirs missing */
    b.has_bitmap = true;
    rep.flags = INCMIG_BASE_HAVE;
    assert_int_equal(incmig__base_decide(&b, &rep), 0);
    assert_int_equal(b.mode, INCMIG_MODE_CHECKSUM);
    base_dispose(&b);

    base_init(&b, NULL, gen);                   /* another generation */
    rep.gen[0] ^= 1;
    assert_int_equal(incmig__base_decide(&b, &rep), INCMIG_EPROTO);
    base_dispose(&b);
    free(enc);
    incmig__bitmap_dispose(&theirs);
}

static void test_checksums(void **st)
{
    struct incmig__disk a = { .fd = -1, .dfd = -1 }, c = { .fd = -1, .dfd = -1 };
    struct incmig__base_src b;
    char other[160];
    uint8_t gen[16], sums[NB * 16], blk[BS];
    (void)st;

    snprintf(other, sizeof other, "%s/other.img", dir);
    int fd = open(other, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0 && ftruncate(fd, (off_t)BS * NB - 100) == 0);
    memset(blk, 0xab, sizeof blk);
    assert_int_equal(pwrite(fd, blk, BS, 5 * BS), BS);
    assert_int_equal(pwrite(fd, blk, 10, (off_t)BS * (NB - 1)), 10);
    close(fd);
    fd = open(img, O_RDWR | O_TRUNC);
    assert_true(fd >= 0 && ftruncate(fd, (off_t)BS * NB - 100) == 0);
    close(fd);
    assert_int_equal(incmig__disk_open(&a, other, 0, 0), 0);
    assert_int_equal(incmig__disk_open(&c, img, 0, 0), 0);

    incmig__gen_random(gen);
    base_init(&b, &a, gen);
    b.mode = INCMIG_MODE_CHECKSUM;
    assert_int_equal(incmig__sums_compute(&c, BS, 0, NB, sums), 0);
    struct incmig__base_rec s = { .kind = INCMIG_BASE_SUMS, .first = 0,
                                  .count = 40, .data = sums };
    assert_int_equal(incmig__base_compare(&b, &s), 0);
    s.first = 40;
    s.count = NB - 40;
    s.data = sums + 40 * 16;
    assert_int_equal(incmig__base_compare(&b, &s), 0);
    assert_int_equal(incmig__bitmap_count(&b.send), 2);
    assert_true(incmig__bitmap_test(&b.send, 5));
    assert_true(incmig__bitmap_test(&b.send, NB - 1));   /* the partial tail */
    s.first = 0;                                /* out of order */
    assert_int_equal(incmig__base_compare(&b, &s), INCMIG_EPROTO);
    base_dispose(&b);
    incmig__disk_close(&a);
    incmig__disk_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generations),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_checksums),
    };
    incmig_log_setup(0, NULL, "test-lineage: ");
    return cmocka_run_group_tests(tests, setup, teardown);
}
