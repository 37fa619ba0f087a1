/* test-gate.c: unit tests of the destination's PULL gate (gate.c).
 *
 * Each test builds a small image file in $TMPDIR: blocks the gate has
 * ("present") hold the source's data, blocks marked missing hold a stale
 * pattern (0xEE) that a correct gate never lets the guest see.  The
 * request callback records every call; in "answer" mode a responder
 * thread serves the recorded requests by filling from the source buffer,
 * after an optional delay, as the source would over the link.
 *
 * Threads other than the main one never call cmocka asserts (they are
 * not thread safe): they count failures that the main thread checks.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"

#define BS 4096u
#define MAXREQ 4096
#define STALE 0xEE

struct req {
    uint64_t first;
    uint32_t n;
};

struct fx {
    char path[256];
    struct incmig__disk d;
    struct incmig__gate *g;
    uint64_t size, nblocks;
    uint8_t *src;                /* nblocks * BS: the source's contents */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct req reqs[MAXREQ];     /* requests accepted, in order */
    int nreq;
    int attempts;                /* callback calls, failed ones included */
    int fail_next;               /* fail this many calls with ELINK */
    bool answer;                 /* responder serves accepted requests */
    int delay_ms;                /* before each answer */
    int answered;
    bool stop;
    bool responder_on;
    pthread_t responder;
    int errors;                  /* failures seen by helper threads */
};

static int request_cb(void *opaque, uint32_t disk, uint64_t first,
                      uint32_t n)
{
    struct fx *f = opaque;
    int rc = 0;

    pthread_mutex_lock(&f->lock);
    f->attempts++;
    if (disk != 0 || n == 0 || first + n > f->nblocks)
        f->errors++;
    if (f->fail_next > 0) {
        f->fail_next--;
        rc = INCMIG_ELINK;
    } else if (f->nreq < MAXREQ) {
        f->reqs[f->nreq].first = first;
        f->reqs[f->nreq].n = n;
        f->nreq++;
        pthread_cond_broadcast(&f->cond);
    } else {
        f->errors++;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static void *responder_main(void *arg)
{
    struct fx *f = arg;

    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->stop && (!f->answer || f->answered == f->nreq))
            pthread_cond_wait(&f->cond, &f->lock);
        if (f->stop)
            break;
        struct req r = f->reqs[f->answered++];
        int delay = f->delay_ms;
        pthread_mutex_unlock(&f->lock);
        if (delay)
            usleep((useconds_t)delay * 1000);
        int rc = incmig__gate_fill(f->g, r.first, r.n, f->src + r.first * BS);
        pthread_mutex_lock(&f->lock);
        if (rc)
            f->errors++;
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* Image of `size` bytes: source data everywhere except the blocks of
 * `missing` (a list ended by UINT64_MAX), which hold the stale pattern. */
static struct fx *fx_new(uint64_t size, const uint64_t *missing)
{
    struct fx *f = calloc(1, sizeof *f);
    struct incmig__bitmap m = { 0 };
    uint8_t stale[BS];
    int fd;

    assert_non_null(f);
    f->size = size;
    f->nblocks = (size + BS - 1) / BS;
    f->src = malloc(f->nblocks * BS);
    assert_non_null(f->src);
    srand(42);
    for (uint64_t i = 0; i < f->nblocks * BS; i++)
        f->src[i] = (uint8_t)rand();
    memset(stale, STALE, sizeof stale);

    const char *tmp = getenv("TMPDIR");
    snprintf(f->path, sizeof f->path, "%s/test-gate.XXXXXX", tmp ? tmp : "/tmp");
    fd = mkstemp(f->path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f->src, size), (ssize_t)size);
    assert_int_equal(incmig__bitmap_init(&m, f->nblocks), 0);
    for (int i = 0; missing[i] != UINT64_MAX; i++) {
        uint64_t b = missing[i];
        uint64_t len = b * BS + BS > size ? size - b * BS : BS;
        assert_int_equal(pwrite(fd, stale, len, (off_t)(b * BS)),
                         (ssize_t)len);
        incmig__bitmap_set(&m, b);
    }
    close(fd);

    assert_int_equal(incmig__disk_open(&f->d, f->path, INCMIG_DISK_WRITE, 0),
                     0);
    assert_int_equal(f->d.size, size);
    assert_int_equal(incmig__gate_new(&f->g, &f->d, 0, BS, request_cb, f), 0);
    assert_int_equal(incmig__gate_mark_missing(f->g, &m), 0);
    incmig__bitmap_dispose(&m);

    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    assert_int_equal(pthread_create(&f->responder, NULL, responder_main, f),
                     0);
    f->responder_on = true;
    return f;
}

static void fx_answer(struct fx *f, int delay_ms)
{
    pthread_mutex_lock(&f->lock);
    f->answer = true;
    f->delay_ms = delay_ms;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static int fx_nreq(struct fx *f)
{
    pthread_mutex_lock(&f->lock);
    int n = f->nreq;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static void fx_free(struct fx *f)
{
    if (f->responder_on) {
        pthread_mutex_lock(&f->lock);
        f->stop = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->responder, NULL);
    }
    assert_int_equal(f->errors, 0);
    incmig__gate_free(f->g);
    incmig__disk_close(&f->d);
    unlink(f->path);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->src);
    free(f);
}

/* The file's bytes, bypassing the gate. */
static void file_read(struct fx *f, void *buf, size_t len, uint64_t off)
{
    assert_int_equal(incmig__disk_pread(&f->d, buf, len, off), 0);
}

static int gread(struct fx *f, void *buf, uint32_t len, uint64_t off)
{
    return incmig__gate_nbd_ops.pread(f->g, buf, len, off);
}

static int gwrite(struct fx *f, const void *buf, uint32_t len, uint64_t off)
{
    return incmig__gate_nbd_ops.pwrite(f->g, buf, len, off, false);
}

/* A guest read on its own thread. */
struct reader {
    struct fx *f;
    uint64_t off;
    uint32_t len;
    uint8_t buf[4 * BS];
    int rc;
    bool done;
    pthread_t t;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    r->rc = gread(r->f, r->buf, r->len, r->off);
    __atomic_store_n(&r->done, true, __ATOMIC_SEQ_CST);
    return NULL;
}

static void reader_start(struct reader *r, struct fx *f, uint64_t off,
                         uint32_t len)
{
    assert_true(len <= sizeof r->buf);
    r->f = f;
    r->off = off;
    r->len = len;
    r->rc = 1;
    r->done = false;
    assert_int_equal(pthread_create(&r->t, NULL, reader_main, r), 0);
}

static void reader_join_check(struct reader *r)
{
    struct timespec dl;

    /* A gate that forgets a waiter would hang the test: fail instead. */
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    if (pthread_timedjoin_np(r->t, NULL, &dl))
        fail_msg("guest read at %llu still waiting after 5 s",
                 (unsigned long long)r->off);
    assert_int_equal(r->rc, 0);
    assert_memory_equal(r->buf, r->f->src + r->off, r->len);
}

static struct incmig__gate_stats stats(struct fx *f)
{
    struct incmig__gate_stats st;
    incmig__gate_get_stats(f->g, &st);
    return st;
}

/* ------------------------------------------------------------------------- */

static void test_read_present(void **state)
{
    const uint64_t miss[] = { 5, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t buf[2 * BS];

    /* Blocks 3-4, next to the missing block 5. */
    assert_int_equal(gread(f, buf, sizeof buf, 3 * BS), 0);
    assert_memory_equal(buf, f->src + 3 * BS, sizeof buf);
    assert_int_equal(fx_nreq(f), 0);
    assert_int_equal(stats(f).waits, 0);
    assert_int_equal(incmig__gate_missing_count(f->g), 1);
    fx_free(f);
}

static void test_read_missing(void **state)
{
    const uint64_t miss[] = { 5, 9, 10, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t buf[4 * BS];

    fx_answer(f, 20);
    /* Inside block 5 only: exactly that block is asked for. */
    assert_int_equal(gread(f, buf, 200, 5 * BS + 100), 0);
    assert_memory_equal(buf, f->src + 5 * BS + 100, 200);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(f->reqs[0].first, 5);
    assert_int_equal(f->reqs[0].n, 1);

    /* Blocks 8-11: the missing 9 and 10 go out as one request. */
    assert_int_equal(gread(f, buf, 4 * BS, 8 * BS), 0);
    assert_memory_equal(buf, f->src + 8 * BS, 4 * BS);
    assert_int_equal(fx_nreq(f), 2);
    assert_int_equal(f->reqs[1].first, 9);
    assert_int_equal(f->reqs[1].n, 2);

    struct incmig__gate_stats st = stats(f);
    assert_int_equal(st.waits, 2);
    assert_int_equal(st.demand_requests, 2);
    assert_int_equal(st.demand_blocks, 3);
    assert_true(st.max_wait_ms >= 15.0);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);
    fx_free(f);
}

static void test_concurrent_reads_one_request(void **state)
{
    const uint64_t miss[] = { 9, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    struct reader r[4];

    fx_answer(f, 150);
    for (int i = 0; i < 4; i++)
        reader_start(&r[i], f, 9 * BS + (uint64_t)i * 512, 1024);
    for (int i = 0; i < 4; i++)
        reader_join_check(&r[i]);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(f->reqs[0].first, 9);
    assert_int_equal(f->reqs[0].n, 1);
    fx_free(f);
}

static void test_full_write_makes_current(void **state)
{
    const uint64_t miss[] = { 7, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t guest[BS], buf[BS];

    memset(guest, 0x55, sizeof guest);
    assert_int_equal(gwrite(f, guest, BS, 7 * BS), 0);
    assert_int_equal(fx_nreq(f), 0);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);
    assert_int_equal(stats(f).overwritten, 1);

    /* The source's copy arrives late: it must not replace the guest's. */
    assert_int_equal(incmig__gate_fill(f->g, 7, 1, f->src + 7 * BS), 0);
    assert_int_equal(stats(f).dropped, 1);
    file_read(f, buf, BS, 7 * BS);
    assert_memory_equal(buf, guest, BS);
    assert_int_equal(gread(f, buf, BS, 7 * BS), 0);
    assert_memory_equal(buf, guest, BS);
    fx_free(f);
}

static void test_partial_write_merges(void **state)
{
    const uint64_t miss[] = { 8, 10, 11, 12, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t guest[2 * BS], buf[3 * BS], want[3 * BS];

    fx_answer(f, 10);
    memset(guest, 0x77, sizeof guest);

    /* 100 bytes inside block 8: fetched first, then merged. */
    assert_int_equal(gwrite(f, guest, 100, 8 * BS + 50), 0);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(f->reqs[0].first, 8);
    assert_int_equal(f->reqs[0].n, 1);
    memcpy(want, f->src + 8 * BS, BS);
    memset(want + 50, 0x77, 100);
    file_read(f, buf, BS, 8 * BS);
    assert_memory_equal(buf, want, BS);

    /* 10+100 .. 12+100: head and tail partial (fetched), 11 whole (not). */
    assert_int_equal(gwrite(f, guest, 2 * BS, 10 * BS + 100), 0);
    assert_int_equal(fx_nreq(f), 3);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(f->reqs[i].n, 1);
        assert_true(f->reqs[i].first == 10 || f->reqs[i].first == 12);
    }
    assert_true(f->reqs[1].first != f->reqs[2].first);
    memcpy(want, f->src + 10 * BS, 3 * BS);
    memset(want + 100, 0x77, 2 * BS);
    assert_int_equal(gread(f, buf, 3 * BS, 10 * BS), 0);
    assert_memory_equal(buf, want, 3 * BS);
    assert_int_equal(stats(f).overwritten, 1);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);
    fx_free(f);
}

static void test_fill(void **state)
{
    const uint64_t miss[] = { 2, 20, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t data[3 * BS], buf[3 * BS], zero[BS] = { 0 };

    /* Blocks 1-3 arrive; only 2 was missing. */
    memset(data, 0x33, sizeof data);
    assert_int_equal(incmig__gate_fill(f->g, 1, 3, data), 0);
    assert_int_equal(stats(f).dropped, 2);
    file_read(f, buf, 3 * BS, BS);
    assert_memory_equal(buf, f->src + BS, BS);
    assert_memory_equal(buf + BS, data + BS, BS);
    assert_memory_equal(buf + 2 * BS, f->src + 3 * BS, BS);

    /* A zero block: exactly that block reads as zeroes afterwards. */
    assert_int_equal(incmig__gate_fill(f->g, 20, 1, NULL), 0);
    file_read(f, buf, 3 * BS, 19 * BS);
    assert_memory_equal(buf, f->src + 19 * BS, BS);
    assert_memory_equal(buf + BS, zero, BS);
    assert_memory_equal(buf + 2 * BS, f->src + 21 * BS, BS);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);

    /* Past the end of the disk: refused, nothing written. */
    assert_int_equal(incmig__gate_fill(f->g, 63, 2, data), INCMIG_EPROTO);
    assert_int_equal(incmig__gate_fill(f->g, 64, 1, data), INCMIG_EPROTO);
    assert_int_equal(incmig__gate_fill(f->g, UINT64_MAX, 1, data),
                     INCMIG_EPROTO);
    file_read(f, buf, BS, 63 * BS);
    assert_memory_equal(buf, f->src + 63 * BS, BS);
    fx_free(f);
}

static void test_relink(void **state)
{
    const uint64_t miss[] = { 13, 40, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    struct reader r[2];

    /* Block 13 is asked for, but the answer is lost with the link. */
    reader_start(&r[0], f, 13 * BS, BS);
    for (int i = 0; i < 400 && fx_nreq(f) < 1; i++)
        usleep(5000);
    assert_int_equal(fx_nreq(f), 1);
    /* The link is down when block 40 is asked for. */
    pthread_mutex_lock(&f->lock);
    f->fail_next = 1;
    pthread_mutex_unlock(&f->lock);
    reader_start(&r[1], f, 40 * BS + 10, 100);
    for (int i = 0; i < 400 && stats(f).waits < 2; i++)
        usleep(5000);
    usleep(50000);
    /* Both wait, and the dead link is not hammered: one attempt only. */
    assert_int_equal(stats(f).waits, 2);
    assert_false(__atomic_load_n(&r[0].done, __ATOMIC_SEQ_CST));
    assert_false(__atomic_load_n(&r[1].done, __ATOMIC_SEQ_CST));
    pthread_mutex_lock(&f->lock);
    assert_int_equal(f->attempts, 2);
    assert_int_equal(f->nreq, 1);
    f->answered = f->nreq;     /* the lost request is never answered */
    pthread_mutex_unlock(&f->lock);

    /* Back: what both readers wait for is asked for again, once each. */
    fx_answer(f, 0);
    incmig__gate_relink(f->g);
    reader_join_check(&r[0]);
    reader_join_check(&r[1]);
    assert_int_equal(f->attempts, 4);
    assert_int_equal(fx_nreq(f), 3);
    assert_int_equal(f->reqs[1].n, 1);
    assert_int_equal(f->reqs[2].n, 1);
    assert_int_equal(f->reqs[1].first + f->reqs[2].first, 13 + 40);
    assert_int_equal(stats(f).demand_requests, 4);
    fx_free(f);
}

/* A fill of a long run is writing while the guest overwrites whole blocks
 * inside it: whichever comes first, the guest's data must stay. */
struct overwriter {
    struct fx *f;
    uint64_t first, n;
    int rc;
};

static void *overwriter_main(void *arg)
{
    struct overwriter *o = arg;
    uint8_t buf[BS];

    memset(buf, 0x5A, sizeof buf);
    for (uint64_t k = 0; k < o->n && !o->rc; k++)
        o->rc = gwrite(o->f, buf, BS, (o->first + o->n - 1 - k * 7 % o->n) * BS);
    return NULL;
}

static void test_write_during_fill(void **state)
{
    enum { NB = 4096 };
    uint64_t *miss = malloc((NB + 1) * sizeof *miss);
    assert_non_null(miss);
    for (uint64_t b = 0; b < NB; b++)
        miss[b] = b;
    miss[NB] = UINT64_MAX;
    struct fx *f = fx_new((uint64_t)NB * BS, miss);
    struct overwriter o = { .f = f, .first = NB / 2, .n = NB / 2 };
    uint8_t *disk = malloc((uint64_t)NB * BS), want[BS];
    pthread_t t;

    assert_non_null(disk);
    memset(want, 0x5A, sizeof want);
    assert_int_equal(pthread_create(&t, NULL, overwriter_main, &o), 0);
    assert_int_equal(incmig__gate_fill(f->g, 0, NB, f->src), 0);
    pthread_join(t, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);
    assert_int_equal(fx_nreq(f), 0);
    file_read(f, disk, (uint64_t)NB * BS, 0);
    for (uint64_t b = 0; b < NB; b++) {
        const uint8_t *exp = b < NB / 2 ? f->src + b * BS : want;
        if (memcmp(disk + b * BS, exp, BS))
            fail_msg("block %llu: the guest's write was lost",
                     (unsigned long long)b);
    }
    struct incmig__gate_stats st = stats(f);
    assert_int_equal(st.dropped, st.overwritten);
    free(disk);
    free(miss);
    fx_free(f);
}

/* The destination volume fails writes: fill and guest writes report it,
 * and the blocks stay missing. */
static void test_io_errors(void **state)
{
    const uint64_t miss[] = { 3, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    struct incmig__disk ro;
    struct incmig__gate *g = NULL;
    struct incmig__bitmap m = { 0 };
    uint8_t buf[BS] = { 0 };

    assert_int_equal(incmig__disk_open(&ro, f->path, 0, 0), 0);
    assert_int_equal(incmig__gate_new(&g, &ro, 1, BS, request_cb, f), 0);
    assert_int_equal(incmig__gate_get_missing(f->g, &m), 0);
    assert_int_equal(incmig__gate_mark_missing(g, &m), 0);
    assert_int_equal(incmig__gate_fill(g, 3, 1, f->src + 3 * BS), INCMIG_EIO);
    assert_int_equal(incmig__gate_missing_count(g), 1);
    assert_int_equal(incmig__gate_nbd_ops.pwrite(g, buf, BS, 5 * BS, false),
                     -EIO);
    incmig__gate_free(g);
    incmig__disk_close(&ro);

    /* Bad arguments. */
    struct incmig__bitmap small = { 0 };
    assert_int_equal(incmig__bitmap_init(&small, 10), 0);
    assert_int_equal(incmig__gate_mark_missing(f->g, &small), INCMIG_EINVAL);
    assert_int_equal(incmig__gate_get_missing(f->g, &small), INCMIG_EINVAL);
    assert_int_equal(incmig__gate_new(&g, &f->d, 0, 1000, request_cb, f),
                     INCMIG_EINVAL);
    assert_null(g);
    assert_int_equal(incmig__gate_new(&g, &f->d, 0, BS, NULL, f),
                     INCMIG_EINVAL);
    incmig__bitmap_dispose(&small);
    incmig__bitmap_dispose(&m);
    fx_free(f);
}

struct filler {
    struct fx *f;
    uint64_t first;
    uint32_t n;
    int delay_ms;
    int rc;
};

static void *filler_main(void *arg)
{
    struct filler *x = arg;
    usleep((useconds_t)x->delay_ms * 1000);
    x->rc = incmig__gate_fill(x->f->g, x->first, x->n,
                              x->f->src + x->first * BS);
    return NULL;
}

static void test_wait_complete(void **state)
{
    const uint64_t miss[] = { 1, 2, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    struct filler x = { .f = f, .first = 1, .n = 2, .delay_ms = 50 };
    pthread_t t;

    double t0 = incmig__now();
    assert_int_equal(incmig__gate_wait_complete(f->g, 0.05), INCMIG_ECANCEL);
    assert_true(incmig__now() - t0 >= 0.045);
    assert_int_equal(pthread_create(&t, NULL, filler_main, &x), 0);
    assert_int_equal(incmig__gate_wait_complete(f->g, 5), 0);
    pthread_join(t, NULL);
    assert_int_equal(x.rc, 0);
    assert_int_equal(incmig__gate_wait_complete(f->g, 0), 0);
    assert_int_equal(incmig__gate_wait_complete(f->g, -1), 0);

    struct incmig__bitmap m = { 0 };
    assert_int_equal(incmig__gate_get_missing(f->g, &m), 0);
    assert_int_equal(m.nbits, 64);
    assert_int_equal(incmig__bitmap_count(&m), 0);
    incmig__bitmap_dispose(&m);
    fx_free(f);
}

static void test_trim_zero(void **state)
{
    const uint64_t miss[] = { 30, 31, 32, 33, UINT64_MAX };
    struct fx *f = fx_new(64 * BS, miss);
    uint8_t buf[BS], want[BS], zero[BS] = { 0 };
    const struct incmig__nbd_ops *ops = &incmig__gate_nbd_ops;

    /* Trim all of 30 and half of 31: 30 becomes current (zeroes), 31 stays
     * missing, nothing is requested and nothing waits. */
    assert_int_equal(ops->trim(f->g, BS + BS / 2, 30 * BS, false), 0);
    assert_int_equal(fx_nreq(f), 0);
    assert_int_equal(incmig__gate_missing_count(f->g), 3);
    struct incmig__bitmap m = { 0 };
    assert_int_equal(incmig__gate_get_missing(f->g, &m), 0);
    assert_false(incmig__bitmap_test(&m, 30));
    assert_true(incmig__bitmap_test(&m, 31));
    incmig__bitmap_dispose(&m);
    assert_int_equal(gread(f, buf, BS, 30 * BS), 0);
    assert_memory_equal(buf, zero, BS);

    /* Zero all of 33 (may trim): current without a request. */
    assert_int_equal(ops->zero(f->g, BS, 33 * BS, true, false), 0);
    assert_int_equal(fx_nreq(f), 0);
    assert_int_equal(gread(f, buf, BS, 33 * BS), 0);
    assert_memory_equal(buf, zero, BS);

    /* Zero part of 32 (no trim): fetched, then merged. */
    fx_answer(f, 0);
    assert_int_equal(ops->zero(f->g, 1000, 32 * BS + 24, false, true), 0);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(f->reqs[0].first, 32);
    memcpy(want, f->src + 32 * BS, BS);
    memset(want + 24, 0, 1000);
    assert_int_equal(gread(f, buf, BS, 32 * BS), 0);
    assert_memory_equal(buf, want, BS);

    /* Out of range: refused. */
    assert_int_equal(ops->zero(f->g, BS, 64 * BS, false, false), -EINVAL);
    assert_int_equal(gread(f, buf, 2, 64 * BS - 1), -EINVAL);
    assert_int_equal(ops->flush(f->g), 0);
    fx_free(f);
}

/* A disk whose size is not a multiple of the block size. */
static void test_short_last_block(void **state)
{
    const uint64_t size = 10 * BS + 1000;
    const uint64_t miss[] = { 9, 10, UINT64_MAX };
    struct fx *f = fx_new(size, miss);
    uint8_t buf[2 * BS], back[2 * BS];
    struct stat st;

    fx_answer(f, 0);
    /* The short block is fetched; its fill (a whole block of data) must
     * not write past the end of the disk. */
    assert_int_equal(gread(f, buf, 1000, 10 * BS), 0);
    assert_memory_equal(buf, f->src + 10 * BS, 1000);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(fstat(f->d.fd, &st), 0);
    assert_int_equal(st.st_size, size);

    /* A write to the end of the disk covers block 9 fully: no request. */
    memset(buf, 0x44, sizeof buf);
    assert_int_equal(gwrite(f, buf, BS + 1001, 9 * BS), -EINVAL);
    assert_int_equal(incmig__gate_missing_count(f->g), 1);
    assert_int_equal(gwrite(f, buf, BS + 1000, 9 * BS), 0);
    assert_int_equal(fx_nreq(f), 1);
    assert_int_equal(stats(f).overwritten, 1);
    assert_int_equal(incmig__gate_missing_count(f->g), 0);
    file_read(f, back, BS + 1000, 9 * BS);
    assert_memory_equal(back, buf, BS + 1000);
    fx_free(f);
}

/* ---- stress -------------------------------------------------------------- */

#define S_BLOCKS 512u
#define S_THREADS 4u
#define S_OPS 1500

struct sguest {
    struct fx *f;
    uint8_t *model;         /* expected contents of the whole disk */
    unsigned tid, seed;
    int bad;
};

static void *sguest_main(void *arg)
{
    struct sguest *s = arg;
    struct fx *f = s->f;
    const uint64_t per = S_BLOCKS / S_THREADS, base = s->tid * per * BS;
    uint8_t *buf = malloc(3 * BS);

    if (!buf) {
        s->bad++;
        return NULL;
    }
    for (int i = 0; i < S_OPS; i++) {
        /* A range inside this thread's own blocks, aligned or not. */
        uint64_t off = base + (uint64_t)rand_r(&s->seed) % (per * BS);
        uint32_t len;
        if (rand_r(&s->seed) % 2) {
            off -= off % BS;
            len = BS * (1 + (uint32_t)rand_r(&s->seed) % 3);
        } else {
            len = 1 + (uint32_t)rand_r(&s->seed) % (3 * BS);
        }
        if (off + len > base + per * BS)
            len = (uint32_t)(base + per * BS - off);
        int op = rand_r(&s->seed) % 10;
        if (op < 5) {
            if (gread(f, buf, len, off) || memcmp(buf, s->model + off, len))
                s->bad++;
        } else if (op < 9) {
            for (uint32_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rand_r(&s->seed);
            if (gwrite(f, buf, len, off))
                s->bad++;
            memcpy(s->model + off, buf, len);
        } else {
            bool trim = rand_r(&s->seed) % 2;
            if (incmig__gate_nbd_ops.zero(f->g, len, off, trim, false))
                s->bad++;
            memset(s->model + off, 0, len);
        }
    }
    free(buf);
    return NULL;
}

struct sfill {
    struct fx *f;
    int rc;
};

/* The background push: every block once, in random order, in runs. */
static void *sfill_main(void *arg)
{
    struct sfill *x = arg;
    uint64_t order[S_BLOCKS / 4];
    unsigned seed = 7;

    for (uint64_t i = 0; i < S_BLOCKS / 4; i++)
        order[i] = i * 4;
    for (uint64_t i = S_BLOCKS / 4 - 1; i > 0; i--) {
        uint64_t j = (uint64_t)rand_r(&seed) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint64_t i = 0; i < S_BLOCKS / 4 && !x->rc; i++) {
        x->rc = incmig__gate_fill(x->f->g, order[i], 4,
                                  x->f->src + order[i] * BS);
        usleep(500);
    }
    return NULL;
}

/* The source is gone for good: a waiting read and a partial write fail
 * with EIO instead of hanging; reads of present blocks still work. */
static void test_abort(void **state)
{
    const uint64_t miss[] = { 4, UINT64_MAX };
    struct fx *f = fx_new(16 * BS, miss);
    struct reader r;
    uint8_t buf[BS];

    reader_start(&r, f, 4 * BS, BS);          /* never answered */
    usleep(50 * 1000);
    assert_false(__atomic_load_n(&r.done, __ATOMIC_SEQ_CST));
    incmig__gate_abort(f->g);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    if (pthread_timedjoin_np(r.t, NULL, &dl))
        fail_msg("a waiting read survived the abort");
    assert_int_equal(r.rc, -EIO);
    memset(buf, 0xab, sizeof buf);
    assert_int_equal(gwrite(f, buf, 100, 4 * BS + 8), -EIO);
    assert_int_equal(gread(f, buf, BS, 3 * BS), 0);
    assert_memory_equal(buf, f->src + 3 * BS, BS);
    fx_free(f);
}

static void test_stress(void **state)
{
    uint64_t miss[S_BLOCKS + 1];
    int nm = 0;
    for (uint64_t b = 0; b < S_BLOCKS; b++)
        if (b % 5)
            miss[nm++] = b;
    miss[nm] = UINT64_MAX;
    struct fx *f = fx_new(S_BLOCKS * BS, miss);
    uint8_t *model = malloc(S_BLOCKS * BS), *disk = malloc(S_BLOCKS * BS);
    struct sguest g[S_THREADS];
    struct sfill x = { .f = f };
    pthread_t gt[S_THREADS], ft;

    assert_non_null(model);
    assert_non_null(disk);
    memcpy(model, f->src, S_BLOCKS * BS);
    fx_answer(f, 0);
    assert_int_equal(pthread_create(&ft, NULL, sfill_main, &x), 0);
    for (unsigned i = 0; i < S_THREADS; i++) {
        g[i] = (struct sguest){ .f = f, .model = model, .tid = i,
                                .seed = 1000 + i };
        assert_int_equal(pthread_create(&gt[i], NULL, sguest_main, &g[i]),
                         0);
    }
    for (unsigned i = 0; i < S_THREADS; i++) {
        pthread_join(gt[i], NULL);
        assert_int_equal(g[i].bad, 0);
    }
    pthread_join(ft, NULL);
    assert_int_equal(x.rc, 0);
    assert_int_equal(incmig__gate_wait_complete(f->g, 5), 0);

    file_read(f, disk, S_BLOCKS * BS, 0);
    for (uint64_t b = 0; b < S_BLOCKS; b++)
        if (memcmp(disk + b * BS, model + b * BS, BS))
            fail_msg("block %llu differs from the expected contents",
                     (unsigned long long)b);
    struct incmig__gate_stats st = stats(f);
    /* Both paths must have been exercised for the test to mean anything. */
    assert_true(st.demand_requests > 0);
    assert_true(st.overwritten > 0);
    assert_true(st.dropped > 0);
    free(model);
    free(disk);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_present),
        cmocka_unit_test(test_read_missing),
        cmocka_unit_test(test_concurrent_reads_one_request),
        cmocka_unit_test(test_full_write_makes_current),
        cmocka_unit_test(test_partial_write_merges),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_relink),
        cmocka_unit_test(test_write_during_fill),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_wait_complete),
        cmocka_unit_test(test_trim_zero),
        cmocka_unit_test(test_short_last_block),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_stress),
    };

    incmig_log_setup(0, NULL, "test-gate");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
