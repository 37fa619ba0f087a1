/* test-stream.c: unit tests of the migration stream codec (stream.c).
 *
 * Streams run over pipes and socketpairs inside this process.  Records
 * bigger than a socket buffer are sent from a helper thread.  Malformed
 * input is written as raw bytes (frames built here with incmig__crc32c, so
 * the framing is checked against the spec independently of stream.c), and
 * the error messages are captured through incmig_log_setup into a temporary
 * file so tests can check that the message names what failed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "incmig-internal.h"

static FILE *logf_;

static void log_reset(void)
{
    fflush(logf_);
    assert_int_equal(ftruncate(fileno(logf_), 0), 0);
    rewind(logf_);
}

static bool log_contains(const char *needle)
{
    static char text[65536];
    fflush(logf_);
    long end = ftell(logf_);
    rewind(logf_);
    size_t n = fread(text, 1, sizeof text - 1, logf_);
    text[n] = '\0';
    fseek(logf_, end, SEEK_SET);
    return strstr(text, needle) != NULL;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, v >> 32);
    put32(p + 4, (uint32_t)v);
}

/* Frame a record as the spec says: type, len, body, crc32(type,len,body). */
static size_t mkframe(uint8_t *out, uint32_t type, const void *body,
                      uint32_t len)
{
    put32(out, type);
    put32(out + 4, len);
    if (len)
        memcpy(out + 8, body, len);
    put32(out + 8 + len, incmig__crc32c(0, out, 8 + len));
    return 12 + len;
}

/* A stream that reads `len` raw bytes, then EOF. */
static void feed(struct incmig__stream *s, const void *bytes, size_t len)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_true(len <= 65536);
    assert_int_equal(write(p[1], bytes, len), (ssize_t)len);
    close(p[1]);
    assert_int_equal(incmig__stream_init(s, p[0], p[0]), 0);
}

static void pair(struct incmig__stream *a, struct incmig__stream *b)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(incmig__stream_init(a, sv[0], sv[0]), 0);
    assert_int_equal(incmig__stream_init(b, sv[1], sv[1]), 0);
}

struct async_send {
    struct incmig__stream *s;
    uint32_t type;
    const void *body;
    uint32_t len;
    int count;
    int rc;
    pthread_t th;
};

static void *async_send_main(void *arg)
{
    struct async_send *a = arg;
    for (int i = 0; i < a->count && a->rc == 0; i++)
        a->rc = incmig__stream_send(a->s, a->type, a->body, a->len);
    return NULL;
}

static void async_send_start(struct async_send *a)
{
    a->rc = 0;
    if (a->count == 0)
        a->count = 1;
    assert_int_equal(pthread_create(&a->th, NULL, async_send_main, a), 0);
}

/* Send one record from a helper thread and receive it here. */
static void roundtrip(uint32_t type, const void *body, uint32_t len,
                      struct incmig__stream *rx, struct incmig__rec *r)
{
    static struct incmig__stream tx;
    pair(&tx, rx);
    struct async_send a = { .s = &tx, .type = type, .body = body, .len = len };
    async_send_start(&a);
    assert_int_equal(incmig__stream_recv(rx, r), 0);
    pthread_join(a.th, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(r->type, type);
    assert_int_equal(r->len, len);
    if (len)
        assert_memory_equal(r->body, body, len);
    assert_int_equal(tx.bytes_out, 12 + len);
    assert_int_equal(rx->bytes_in, 12 + len);
    incmig__stream_dispose(&tx);
}

/* ---- header -------------------------------------------------------------- */

/* The record checksum is CRC-32C: its standard check value, the same on
 * the hardware and the table path (a long buffer exercises the 8-byte
 * steps, an odd length the tail). */
static void test_crc32c(void **st)
{
    static const char check[] = "123456789";
    uint8_t big[1031];
    uint32_t whole, parts;

    assert_int_equal(incmig__crc32c(0, check, 9), 0xE3069283u);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    whole = incmig__crc32c(0, big, sizeof big);
    parts = incmig__crc32c(incmig__crc32c(0, big, 100), big + 100,
                           sizeof big - 100);
    assert_int_equal(whole, parts);
    assert_int_not_equal(whole, incmig__crc32c(0, big, sizeof big - 1));
}

static void test_header_ok(void **st)
{
    int p[2];
    uint8_t raw[16];
    struct incmig__stream s;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(incmig__stream_init(&s, -1, p[1]), 0);
    assert_int_equal(incmig__stream_send_header(&s), 0);
    assert_int_equal(read(p[0], raw, 16), 16);
    assert_memory_equal(raw, "INCMIG\r\n\0\0\0\1\0\0\0\0", 16);
    incmig__stream_dispose(&s);
    close(p[0]);

    feed(&s, raw, 16);
    assert_int_equal(incmig__stream_recv_header(&s), 0);
    assert_int_equal(s.bytes_in, 16);
    incmig__stream_dispose(&s);
}

static void test_header_bad_magic(void **st)
{
    struct incmig__stream s;
    log_reset();
    feed(&s, "Welcome to host\0\0\0\0", 16);
    assert_int_equal(incmig__stream_recv_header(&s), INCMIG_EPROTO);
    assert_true(log_contains("not an incmig stream"));
    assert_true(log_contains("Welcome "));
    incmig__stream_dispose(&s);
}

static void test_header_version(void **st)
{
    struct incmig__stream s;
    log_reset();
    feed(&s, "INCMIG\r\n\0\0\0\2\0\0\0\0", 16);
    assert_int_equal(incmig__stream_recv_header(&s), INCMIG_EVERSION);
    assert_true(log_contains("version 2"));
    assert_true(log_contains("version 1"));
    incmig__stream_dispose(&s);
}

static void test_header_flags(void **st)
{
    struct incmig__stream s;
    feed(&s, "INCMIG\r\n\0\0\0\1\0\0\0\1", 16);
    assert_int_equal(incmig__stream_recv_header(&s), INCMIG_EPROTO);
    incmig__stream_dispose(&s);
}

static void test_header_eof(void **st)
{
    struct incmig__stream s;
    feed(&s, "", 0);
    assert_int_equal(incmig__stream_recv_header(&s), INCMIG_ELINK);
    incmig__stream_dispose(&s);
    feed(&s, "INCMIG\r\n\0\0", 10);
    assert_int_equal(incmig__stream_recv_header(&s), INCMIG_ELINK);
    incmig__stream_dispose(&s);
}

/* ---- framing ------------------------------------------------------------- */

static void test_frame_bytes(void **st)
{
    int p[2];
    uint8_t raw[64], want[64];
    struct incmig__stream s;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(incmig__stream_init(&s, -1, p[1]), 0);
    assert_int_equal(incmig__stream_send(&s, INCMIG_REC_ROUND, "abc", 3), 0);
    size_t n = mkframe(want, INCMIG_REC_ROUND, "abc", 3);
    assert_int_equal(read(p[0], raw, sizeof raw), (ssize_t)n);
    assert_memory_equal(raw, want, n);
    assert_int_equal(s.bytes_out, 15);
    incmig__stream_dispose(&s);
    close(p[0]);
}

static void test_crc_mismatch(void **st)
{
    uint8_t f[64];
    struct incmig__stream s;
    struct incmig__rec r;
    size_t n = mkframe(f, INCMIG_REC_ROUND, "0123456789ab", 12);

    log_reset();
    f[10] ^= 1;                              /* body */
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    assert_true(log_contains("checksum mismatch"));
    assert_true(log_contains("ROUND"));
    incmig__stream_dispose(&s);

    f[10] ^= 1;
    f[n - 1] ^= 0x80;                        /* the crc itself */
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);

    f[n - 1] ^= 0x80;
    f[3] = INCMIG_REC_GO;                    /* type covered by the crc */
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);
}

static void test_truncated(void **st)
{
    uint8_t f[64];
    struct incmig__stream s;
    struct incmig__rec r;
    size_t n = mkframe(f, INCMIG_REC_ROUND, "0123456789ab", 12);

    log_reset();
    feed(&s, f, 0);                          /* clean EOF at a boundary */
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_ELINK);
    assert_true(log_contains("connection closed by peer"));
    incmig__stream_dispose(&s);

    for (size_t cut = 1; cut < n; cut++) {   /* every cut inside a record */
        log_reset();
        feed(&s, f, cut);
        assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_ELINK);
        assert_true(log_contains("truncated record"));
        incmig__stream_dispose(&s);
    }
}

static void test_oversized(void **st)
{
    uint8_t f[64];
    struct incmig__stream s;
    struct incmig__rec r;

    /* Only a header: were the body read, the result would be ELINK (EOF);
     * EPROTO shows the length was refused before any read. */
    put32(f, INCMIG_REC_BLOCKS);
    put32(f + 4, INCMIG_REC_MAX + 1);
    feed(&s, f, 8);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);

    put32(f + 4, UINT32_MAX);
    feed(&s, f, 8);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);

    /* Also for optional records, which are otherwise skipped. */
    put32(f, 0x80000055u);
    feed(&s, f, 8);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);
}

static void test_max_record(void **st)
{
    uint8_t *big = malloc(INCMIG_REC_MAX);
    struct incmig__stream rx, tx;
    struct incmig__rec r;

    assert_non_null(big);
    for (uint32_t i = 0; i < INCMIG_REC_MAX; i++)
        big[i] = (uint8_t)(i * 7 + (i >> 13));
    roundtrip(INCMIG_REC_XEN_STREAM, big, INCMIG_REC_MAX, &rx, &r);
    incmig__stream_dispose(&rx);

    pair(&tx, &rx);
    assert_int_equal(incmig__stream_send(&tx, INCMIG_REC_XEN_STREAM, big,
                                         INCMIG_REC_MAX + 1), INCMIG_EINVAL);
    assert_int_equal(tx.bytes_out, 0);
    incmig__stream_dispose(&tx);
    incmig__stream_dispose(&rx);
    free(big);
}

static void test_unknown_optional(void **st)
{
    uint8_t f[128];
    size_t n = 0;
    struct incmig__stream s;
    struct incmig__rec r;

    n += mkframe(f + n, 0x80000063u, "future stuff", 12);
    n += mkframe(f + n, 0x80000064u, NULL, 0);
    n += mkframe(f + n, INCMIG_REC_END, NULL, 0);
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), 0);
    assert_int_equal(r.type, INCMIG_REC_END);
    assert_int_equal(s.bytes_in, n);
    incmig__stream_dispose(&s);

    /* A skipped record is still checked. */
    n = mkframe(f, 0x80000063u, "future stuff", 12);
    f[9] ^= 4;
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);
}

static void test_unknown_mandatory(void **st)
{
    uint8_t f[64];
    struct incmig__stream s;
    struct incmig__rec r;
    size_t n = mkframe(f, 99, "x", 1);

    log_reset();
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    assert_true(log_contains("unknown mandatory record type 99"));
    incmig__stream_dispose(&s);

    n = mkframe(f, 0, NULL, 0);
    feed(&s, f, n);
    assert_int_equal(incmig__stream_recv(&s, &r), INCMIG_EPROTO);
    incmig__stream_dispose(&s);
}

/* ---- round trips of every record type ----------------------------------- */

static void test_rt_hello(void **st)
{
    uint8_t buf[512];
    struct incmig__hello h = { .version = INCMIG_STREAM_VERSION, .role = 0,
                               .caps = INCMIG_CAP_ZLIB | INCMIG_CAP_RESUME |
                                       (UINT64_C(1) << 63),
                               .ndisks = 3 }, h2;
    struct incmig__stream rx;
    struct incmig__rec r;

    for (int i = 0; i < 16; i++)
        h.mig_id[i] = (uint8_t)(0xa0 + i);
    memset(h.name, 'd', INCMIG_NAME_MAX);          /* longest name */
    h.name[INCMIG_NAME_MAX] = '\0';
    int len = incmig__enc_hello(&h, buf);
    assert_int_equal(len, 38 + INCMIG_NAME_MAX);
    roundtrip(INCMIG_REC_HELLO, buf, (uint32_t)len, &rx, &r);
    memset(&h2, 0x55, sizeof h2);
    assert_int_equal(incmig__dec_hello(&r, &h2), 0);
    assert_int_equal(h2.version, h.version);
    assert_int_equal(h2.role, 0);
    assert_true(h2.caps == h.caps);
    assert_memory_equal(h2.mig_id, h.mig_id, 16);
    assert_int_equal(h2.ndisks, 3);
    assert_string_equal(h2.name, h.name);
    incmig__stream_dispose(&rx);

    /* destination, no disks, empty name */
    h.role = 1;
    h.ndisks = 0;
    h.name[0] = '\0';
    len = incmig__enc_hello(&h, buf);
    assert_int_equal(len, 38);
    roundtrip(INCMIG_REC_HELLO, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_hello(&r, &h2), 0);
    assert_int_equal(h2.role, 1);
    assert_string_equal(h2.name, "");
    incmig__stream_dispose(&rx);
}

static void test_rt_disk(void **st)
{
    uint8_t buf[512];
    struct incmig__disk_rec d = { .index = 7, .block_size = 65536,
                                  .size = INCMIG_DISK_MAX, .name = "xvda" },
                            d2;
    struct incmig__stream rx;
    struct incmig__rec r;

    memset(d.lineage, 0xee, 16);
    int len = incmig__enc_disk(&d, buf);
    assert_int_equal(len, 34 + 4);
    roundtrip(INCMIG_REC_DISK, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_disk(&r, &d2), 0);
    assert_int_equal(d2.index, 7);
    assert_int_equal(d2.block_size, 65536);
    assert_true(d2.size == INCMIG_DISK_MAX);
    assert_memory_equal(d2.lineage, d.lineage, 16);
    assert_string_equal(d2.name, "xvda");
    incmig__stream_dispose(&rx);
}

static void test_rt_disk_ack(void **st)
{
    uint8_t buf[2048];
    struct incmig__disk_ack a = { .index = 1, .status = INCMIG_ENOSPC }, a2;
    struct incmig__stream rx;
    struct incmig__rec r;

    memset(a.msg, 'm', INCMIG_MSG_MAX);
    a.msg[INCMIG_MSG_MAX] = '\0';
    int len = incmig__enc_disk_ack(&a, buf);
    assert_int_equal(len, 10 + INCMIG_MSG_MAX);
    roundtrip(INCMIG_REC_DISK_ACK, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_disk_ack(&r, &a2), 0);
    assert_int_equal(a2.index, 1);
    assert_int_equal(a2.status, INCMIG_ENOSPC);
    assert_string_equal(a2.msg, a.msg);
    incmig__stream_dispose(&rx);
}

static void test_rt_blocks(void **st)
{
    uint32_t bs = 4096, nb = INCMIG_BLOCKS_MAX / 4096;
    uint8_t *buf = malloc(INCMIG_BLOCKS_HDR + INCMIG_BLOCKS_MAX);
    struct incmig__blocks b = { .disk = 2, .phase = INCMIG_PHASE_PULL_DEMAND,
                                .enc = INCMIG_ENC_RAW, .first = 12345,
                                .nblocks = nb, .len = nb * bs }, b2;
    struct incmig__stream rx;
    struct incmig__rec r;

    assert_non_null(buf);
    assert_int_equal(incmig__enc_blocks_hdr(&b, buf), INCMIG_BLOCKS_HDR);
    for (uint32_t i = 0; i < b.len; i++)
        buf[INCMIG_BLOCKS_HDR + i] = (uint8_t)(i ^ (i >> 12));
    roundtrip(INCMIG_REC_BLOCKS, buf, INCMIG_BLOCKS_HDR + b.len, &rx, &r);
    assert_int_equal(incmig__dec_blocks(&r, bs, &b2), 0);
    assert_int_equal(b2.disk, 2);
    assert_int_equal(b2.phase, INCMIG_PHASE_PULL_DEMAND);
    assert_int_equal(b2.enc, INCMIG_ENC_RAW);
    assert_int_equal(b2.first, 12345);
    assert_int_equal(b2.nblocks, nb);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, buf + INCMIG_BLOCKS_HDR, b.len);
    incmig__stream_dispose(&rx);

    /* zero blocks: no data */
    b.enc = INCMIG_ENC_ZERO;
    b.len = 0;
    b.phase = INCMIG_PHASE_PUSH;
    assert_int_equal(incmig__enc_blocks_hdr(&b, buf), INCMIG_BLOCKS_HDR);
    roundtrip(INCMIG_REC_BLOCKS, buf, INCMIG_BLOCKS_HDR, &rx, &r);
    assert_int_equal(incmig__dec_blocks(&r, bs, &b2), 0);
    assert_int_equal(b2.enc, INCMIG_ENC_ZERO);
    assert_int_equal(b2.len, 0);
    incmig__stream_dispose(&rx);

    /* zlib: compressed data as produced by the sender, inflated here */
    static uint8_t plain[8192], out[8192];
    memset(plain, 'z', sizeof plain);
    uLongf clen = INCMIG_BLOCKS_MAX;
    assert_int_equal(compress2(buf + INCMIG_BLOCKS_HDR, &clen, plain,
                               sizeof plain, 1), Z_OK);
    b.enc = INCMIG_ENC_ZLIB;
    b.nblocks = 2;
    b.len = (uint32_t)clen;
    b.phase = INCMIG_PHASE_PULL_BACKGROUND;
    assert_int_equal(incmig__enc_blocks_hdr(&b, buf), INCMIG_BLOCKS_HDR);
    roundtrip(INCMIG_REC_BLOCKS, buf, INCMIG_BLOCKS_HDR + b.len, &rx, &r);
    assert_int_equal(incmig__dec_blocks(&r, bs, &b2), 0);
    assert_int_equal(b2.enc, INCMIG_ENC_ZLIB);
    uLongf olen = sizeof out;
    assert_int_equal(uncompress(out, &olen, b2.data, b2.len), Z_OK);
    assert_int_equal(olen, sizeof plain);
    assert_memory_equal(out, plain, sizeof plain);
    incmig__stream_dispose(&rx);
    free(buf);
}

static void test_rt_bitmap(void **st)
{
    uint8_t buf[64];
    struct incmig__bitmap_rec m = { .disk = 0, .phase = INCMIG_PHASE_STOPCOPY,
                                    .first = 1u << 20, .nbits = 1u << 20 },
                              m2;
    struct incmig__stream rx;
    struct incmig__rec r;

    assert_int_equal(incmig__enc_bitmap_hdr(&m, buf), INCMIG_BITMAP_HDR);
    memcpy(buf + INCMIG_BITMAP_HDR, "\1\5\7", 3);
    roundtrip(INCMIG_REC_BITMAP, buf, INCMIG_BITMAP_HDR + 3, &rx, &r);
    assert_int_equal(incmig__dec_bitmap(&r, &m2), 0);
    assert_int_equal(m2.disk, 0);
    assert_int_equal(m2.phase, INCMIG_PHASE_STOPCOPY);
    assert_true(m2.first == m.first && m2.nbits == m.nbits);
    assert_int_equal(m2.len, 3);
    assert_memory_equal(m2.data, "\1\5\7", 3);
    incmig__stream_dispose(&rx);
}

static void test_rt_small(void **st)
{
    uint8_t buf[2048];
    struct incmig__stream rx;
    struct incmig__rec r;
    int len;

    struct incmig__round x = { .round = 29, .blocks = 1000000 }, x2;
    assert_int_equal(len = incmig__enc_round(&x, buf), 12);
    roundtrip(INCMIG_REC_ROUND, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_round(&r, &x2), 0);
    assert_int_equal(x2.round, 29);
    assert_int_equal(x2.blocks, 1000000);
    incmig__stream_dispose(&rx);

    struct incmig__pull_req q = { .disk = 3, .first = UINT64_C(1) << 31,
                                  .nblocks = 256 }, q2;
    assert_int_equal(len = incmig__enc_pull_req(&q, buf), 16);
    roundtrip(INCMIG_REC_PULL_REQ, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_pull_req(&r, &q2), 0);
    assert_int_equal(q2.disk, 3);
    assert_true(q2.first == q.first);
    assert_int_equal(q2.nblocks, 256);
    incmig__stream_dispose(&rx);

    struct incmig__error_rec e = { .code = INCMIG_EIO,
                                   .msg = "disk xvda: write failed" }, e2;
    len = incmig__enc_error(&e, buf);
    assert_int_equal(len, 6 + (int)strlen(e.msg));
    roundtrip(INCMIG_REC_ERROR, buf, (uint32_t)len, &rx, &r);
    assert_int_equal(incmig__dec_error(&r, &e2), 0);
    assert_int_equal(e2.code, INCMIG_EIO);
    assert_string_equal(e2.msg, e.msg);
    incmig__stream_dispose(&rx);

    uint8_t id[16], id2[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(i * 17);
    roundtrip(INCMIG_REC_RESUME, id, 16, &rx, &r);
    assert_int_equal(incmig__dec_resume(&r, id2), 0);
    assert_memory_equal(id, id2, 16);
    incmig__stream_dispose(&rx);

    static const uint32_t empties[] = {
        INCMIG_REC_SUSPEND, INCMIG_REC_READY, INCMIG_REC_GO,
        INCMIG_REC_PULL_END, INCMIG_REC_COMPLETE, INCMIG_REC_END,
    };
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        roundtrip(empties[i], NULL, 0, &rx, &r);
        assert_int_equal(incmig__dec_empty(&r), 0);
        incmig__stream_dispose(&rx);
    }

    roundtrip(INCMIG_REC_XEN_STREAM, "libxl bytes", 11, &rx, &r);
    incmig__stream_dispose(&rx);
    roundtrip(INCMIG_REC_XEN_STREAM, NULL, 0, &rx, &r);
    incmig__stream_dispose(&rx);
    /* REPORT is optional but known: delivered, not skipped */
    roundtrip(INCMIG_REC_REPORT, "{\"pull_s\":1.5}", 14, &rx, &r);
    incmig__stream_dispose(&rx);
}

static void test_sequence(void **st)
{
    /* several records back to back on one stream, headers first */
    struct incmig__stream a, b;
    struct incmig__rec r;
    uint8_t buf[64];

    pair(&a, &b);
    assert_int_equal(incmig__stream_send_header(&a), 0);
    assert_int_equal(incmig__stream_send(&a, INCMIG_REC_SUSPEND, NULL, 0), 0);
    struct incmig__round x = { .round = 1, .blocks = 2 };
    int len = incmig__enc_round(&x, buf);
    assert_int_equal(incmig__stream_send(&a, INCMIG_REC_ROUND, buf,
                                         (uint32_t)len), 0);
    assert_int_equal(incmig__stream_send(&a, INCMIG_REC_GO, NULL, 0), 0);
    assert_int_equal(incmig__stream_recv_header(&b), 0);
    assert_int_equal(incmig__stream_recv(&b, &r), 0);
    assert_int_equal(r.type, INCMIG_REC_SUSPEND);
    assert_int_equal(incmig__stream_recv(&b, &r), 0);
    assert_int_equal(r.type, INCMIG_REC_ROUND);
    assert_int_equal(incmig__stream_recv(&b, &r), 0);
    assert_int_equal(r.type, INCMIG_REC_GO);
    assert_int_equal(a.bytes_out, 16 + 12 + 24 + 12);
    assert_int_equal(b.bytes_in, a.bytes_out);
    incmig__stream_dispose(&a);                 /* peer gone */
    assert_int_equal(incmig__stream_recv(&b, &r), INCMIG_ELINK);
    incmig__stream_dispose(&b);
}

/* ---- decoders reject bad fields, one rule per assertion ----------------- */

static struct incmig__rec R(uint32_t type, const uint8_t *body, size_t len)
{
    struct incmig__rec r = { type, (uint32_t)len, body };
    return r;
}

static void test_dec_hello_bad(void **st)
{
    uint8_t b[512] = { 0 };
    struct incmig__hello h = { .version = 1, .role = 0, .ndisks = 1,
                               .name = "dom" }, o;
    int n = incmig__enc_hello(&h, b);
    struct incmig__rec r;

    r = R(INCMIG_REC_HELLO, b, n);
    assert_int_equal(incmig__dec_hello(&r, &o), 0);
    r = R(INCMIG_REC_DISK, b, n);                       /* wrong type */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    r = R(INCMIG_REC_HELLO, b, 37);                     /* short */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    r = R(INCMIG_REC_HELLO, b, n + 1);                  /* trailing byte */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    r = R(INCMIG_REC_HELLO, b, n - 1);                  /* name cut */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    r = R(INCMIG_REC_HELLO, b, n);
    put32(b, 2);                                        /* version */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EVERSION);
    put32(b, 1);
    put32(b + 4, 2);                                    /* role */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 0);
    put32(b + 32, INCMIG_MAX_DISKS + 1);                /* ndisks */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    put32(b + 32, 0);                                   /* source, 0 disks */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    put32(b + 32, 1);
    b[39] = '\0';                                       /* NUL in name */
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);
    b[39] = 'o';
    assert_int_equal(incmig__dec_hello(&r, &o), 0);

    /* a name length over the limit, with the body to match */
    memset(b + 38, 'x', 300);
    b[36] = 300 >> 8;
    b[37] = 300 & 0xff;
    r = R(INCMIG_REC_HELLO, b, 38 + 300);
    assert_int_equal(incmig__dec_hello(&r, &o), INCMIG_EPROTO);

    /* encoder refuses what the decoder would refuse */
    memset(h.name, 'x', sizeof h.name);                 /* unterminated */
    assert_int_equal(incmig__enc_hello(&h, b), INCMIG_EINVAL);
    h.name[0] = '\0';
    h.ndisks = INCMIG_MAX_DISKS + 1;
    assert_int_equal(incmig__enc_hello(&h, b), INCMIG_EINVAL);
}

static void test_dec_disk_bad(void **st)
{
    uint8_t b[512] = { 0 };
    struct incmig__disk_rec d = { .index = 0, .block_size = 4096,
                                  .size = 1 << 20, .name = "xvda" }, o;
    int n = incmig__enc_disk(&d, b);
    struct incmig__rec r = R(INCMIG_REC_DISK, b, n);

    assert_int_equal(incmig__dec_disk(&r, &o), 0);
    put32(b, INCMIG_MAX_DISKS);                         /* index */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put32(b, 0);
    put32(b + 4, 5000);                                 /* not power of 2 */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 2048);                                 /* below min */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 2u << 20);                             /* above max */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 0);                                    /* zero */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 4096);
    put64(b + 8, 0);                                    /* empty disk */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put64(b + 8, INCMIG_DISK_MAX + 1);                  /* too large */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    put64(b + 8, 1 << 20);
    b[35] = '\0';                                       /* NUL in name */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    b[35] = 'v';
    r.len = n + 1;                                      /* trailing byte */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);
    r.len = 33;                                         /* short */
    assert_int_equal(incmig__dec_disk(&r, &o), INCMIG_EPROTO);

    d.block_size = 1000;
    assert_int_equal(incmig__enc_disk(&d, b), INCMIG_EINVAL);
}

static void test_dec_disk_ack_bad(void **st)
{
    uint8_t b[2048] = { 0 };
    struct incmig__disk_ack a = { .index = 0, .status = 0, .msg = "ok" }, o;
    int n = incmig__enc_disk_ack(&a, b);
    struct incmig__rec r = R(INCMIG_REC_DISK_ACK, b, n);

    assert_int_equal(incmig__dec_disk_ack(&r, &o), 0);
    put32(b, INCMIG_MAX_DISKS);                         /* index */
    assert_int_equal(incmig__dec_disk_ack(&r, &o), INCMIG_EPROTO);
    put32(b, 0);
    put32(b + 4, 1);                                    /* positive status */
    assert_int_equal(incmig__dec_disk_ack(&r, &o), INCMIG_EPROTO);
    put32(b + 4, 0);
    memset(b + 10, 'm', INCMIG_MSG_MAX + 1);            /* msg too long */
    b[8] = (INCMIG_MSG_MAX + 1) >> 8;
    b[9] = (INCMIG_MSG_MAX + 1) & 0xff;
    r.len = 10 + INCMIG_MSG_MAX + 1;
    assert_int_equal(incmig__dec_disk_ack(&r, &o), INCMIG_EPROTO);
    r.len = 9;                                          /* short */
    assert_int_equal(incmig__dec_disk_ack(&r, &o), INCMIG_EPROTO);

    a.status = 3;
    assert_int_equal(incmig__enc_disk_ack(&a, b), INCMIG_EINVAL);
}

static void test_dec_blocks_bad(void **st)
{
    static uint8_t b[INCMIG_BLOCKS_HDR + 2 * 4096];
    struct incmig__blocks x = { .disk = 1, .phase = INCMIG_PHASE_PUSH,
                                .enc = INCMIG_ENC_RAW, .first = 10,
                                .nblocks = 2, .len = 8192 }, o;
    struct incmig__rec r = R(INCMIG_REC_BLOCKS, b, sizeof b);

    assert_int_equal(incmig__enc_blocks_hdr(&x, b), INCMIG_BLOCKS_HDR);
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), 0);
    assert_int_equal(incmig__dec_blocks(&r, 4095, &o), INCMIG_EINVAL);
    r.type = INCMIG_REC_BITMAP;                         /* wrong type */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    r.type = INCMIG_REC_BLOCKS;
    r.len = INCMIG_BLOCKS_HDR - 1;                      /* short */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    r.len = sizeof b - 1;                               /* raw len */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    r.len = sizeof b;
    put32(b, INCMIG_MAX_DISKS);                         /* disk */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    put32(b, 1);
    b[4] = 4;                                           /* phase */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    b[4] = 0;
    b[5] = 4;                                           /* enc */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    b[5] = 3;                                           /* ZSTD: any */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), 0);  /* length */
    r.len = INCMIG_BLOCKS_HDR;                          /* but not none */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    r.len = sizeof b;
    b[5] = 0;
    b[7] = 1;                                           /* reserved */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    b[7] = 0;
    put32(b + 16, 0);                                   /* no blocks */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    put32(b + 16, 2);
    /* 2 blocks of 1 MiB exceed INCMIG_BLOCKS_MAX even with no data */
    b[5] = INCMIG_ENC_ZERO;
    r.len = INCMIG_BLOCKS_HDR;
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), 0);
    assert_int_equal(incmig__dec_blocks(&r, 1u << 20, &o), INCMIG_EPROTO);
    put32(b + 16, UINT32_MAX);                          /* nblocks * bs wraps */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    put32(b + 16, 2);
    r.len = INCMIG_BLOCKS_HDR + 1;                      /* zero with data */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    b[5] = INCMIG_ENC_ZLIB;
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), 0);
    r.len = INCMIG_BLOCKS_HDR;                          /* empty zlib */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    r.len = INCMIG_BLOCKS_HDR + 1;
    put64(b + 8, UINT64_MAX - 1);                       /* first wraps */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    put64(b + 8, INCMIG_DISK_MAX / 4096 - 1);           /* past any disk */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), INCMIG_EPROTO);
    put64(b + 8, INCMIG_DISK_MAX / 4096 - 2);           /* last blocks: ok */
    assert_int_equal(incmig__dec_blocks(&r, 4096, &o), 0);

    x.nblocks = 0;
    assert_int_equal(incmig__enc_blocks_hdr(&x, b), INCMIG_EINVAL);
}

static void test_dec_bitmap_bad(void **st)
{
    uint8_t b[INCMIG_BITMAP_HDR + 4] = { 0 };
    struct incmig__bitmap_rec m = { .disk = 0, .phase = INCMIG_PHASE_STOPCOPY,
                                    .first = 0, .nbits = 100 }, o;
    struct incmig__rec r = R(INCMIG_REC_BITMAP, b, sizeof b);
    const uint64_t maxbits = INCMIG_DISK_MAX / INCMIG_BS_MIN;

    assert_int_equal(incmig__enc_bitmap_hdr(&m, b), INCMIG_BITMAP_HDR);
    assert_int_equal(incmig__dec_bitmap(&r, &o), 0);
    r.len = INCMIG_BITMAP_HDR;                          /* no data */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    r.len = sizeof b;
    put32(b, INCMIG_MAX_DISKS);                         /* disk */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    put32(b, 0);
    b[4] = 9;                                           /* phase */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    b[4] = INCMIG_PHASE_PULL_BACKGROUND;
    b[6] = 1;                                           /* reserved */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    b[6] = 0;
    put64(b + 16, 0);                                   /* no bits */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    put64(b + 16, maxbits + 1);                         /* too many bits */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    put64(b + 16, 2);
    put64(b + 8, UINT64_MAX);                           /* first wraps */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    put64(b + 8, maxbits - 1);                          /* past any disk */
    assert_int_equal(incmig__dec_bitmap(&r, &o), INCMIG_EPROTO);
    put64(b + 8, maxbits - 2);                          /* the end: ok */
    assert_int_equal(incmig__dec_bitmap(&r, &o), 0);

    m.nbits = 0;
    assert_int_equal(incmig__enc_bitmap_hdr(&m, b), INCMIG_EINVAL);
}

static void test_dec_small_bad(void **st)
{
    uint8_t b[2048] = { 0 };
    struct incmig__rec r;
    struct incmig__round x;
    struct incmig__pull_req q;
    struct incmig__error_rec e;
    uint8_t id[16];

    r = R(INCMIG_REC_ROUND, b, 11);                     /* round: length */
    assert_int_equal(incmig__dec_round(&r, &x), INCMIG_EPROTO);
    r = R(INCMIG_REC_ROUND, b, 12);
    put64(b + 4, UINT64_MAX);                           /* absurd count */
    assert_int_equal(incmig__dec_round(&r, &x), INCMIG_EPROTO);

    memset(b, 0, 16);
    put32(b + 12, 1);
    r = R(INCMIG_REC_PULL_REQ, b, 16);
    assert_int_equal(incmig__dec_pull_req(&r, &q), 0);
    r.len = 17;                                         /* length */
    assert_int_equal(incmig__dec_pull_req(&r, &q), INCMIG_EPROTO);
    r.len = 16;
    put32(b, INCMIG_MAX_DISKS);                         /* disk */
    assert_int_equal(incmig__dec_pull_req(&r, &q), INCMIG_EPROTO);
    put32(b, 0);
    put32(b + 12, 0);                                   /* no blocks */
    assert_int_equal(incmig__dec_pull_req(&r, &q), INCMIG_EPROTO);
    put32(b + 12, INCMIG_BLOCKS_MAX / INCMIG_BS_MIN + 1); /* too many */
    assert_int_equal(incmig__dec_pull_req(&r, &q), INCMIG_EPROTO);
    put32(b + 12, 1);
    put64(b + 4, UINT64_MAX);                           /* first wraps */
    assert_int_equal(incmig__dec_pull_req(&r, &q), INCMIG_EPROTO);

    put32(b, (uint32_t)INCMIG_EPEER);
    b[4] = 0; b[5] = 2; b[6] = 'h'; b[7] = 'i';
    r = R(INCMIG_REC_ERROR, b, 8);
    assert_int_equal(incmig__dec_error(&r, &e), 0);
    assert_string_equal(e.msg, "hi");
    put32(b, 0);                                        /* code 0 */
    assert_int_equal(incmig__dec_error(&r, &e), INCMIG_EPROTO);
    put32(b, 5);                                        /* positive code */
    assert_int_equal(incmig__dec_error(&r, &e), INCMIG_EPROTO);
    put32(b, (uint32_t)INCMIG_EPEER);
    b[7] = '\0';                                        /* NUL in msg */
    assert_int_equal(incmig__dec_error(&r, &e), INCMIG_EPROTO);
    b[7] = 'i';
    r.len = 5;                                          /* short */
    assert_int_equal(incmig__dec_error(&r, &e), INCMIG_EPROTO);
    memset(b + 6, 'e', INCMIG_MSG_MAX + 1);
    b[4] = (INCMIG_MSG_MAX + 1) >> 8;
    b[5] = (INCMIG_MSG_MAX + 1) & 0xff;
    r.len = 6 + INCMIG_MSG_MAX + 1;                     /* msg too long */
    assert_int_equal(incmig__dec_error(&r, &e), INCMIG_EPROTO);
    struct incmig__error_rec e2 = { .code = 0, .msg = "x" };
    assert_int_equal(incmig__enc_error(&e2, b), INCMIG_EINVAL);

    r = R(INCMIG_REC_GO, b, 1);                         /* empty: length */
    assert_int_equal(incmig__dec_empty(&r), INCMIG_EPROTO);

    r = R(INCMIG_REC_RESUME, b, 15);                    /* resume: length */
    assert_int_equal(incmig__dec_resume(&r, id), INCMIG_EPROTO);
    r = R(INCMIG_REC_HELLO, b, 16);                     /* resume: type */
    assert_int_equal(incmig__dec_resume(&r, id), INCMIG_EPROTO);
}

/* ---- sending ------------------------------------------------------------- */

static void test_send_peer_gone(void **st)
{
    int p[2], sv[2];
    struct incmig__stream s;

    /* A pipe whose reader is gone must give ELINK, not kill us with
     * SIGPIPE (default disposition). */
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    assert_int_equal(incmig__stream_init(&s, -1, p[1]), 0);
    assert_int_equal(incmig__stream_send(&s, INCMIG_REC_END, NULL, 0),
                     INCMIG_ELINK);
    assert_int_equal(incmig__stream_send_header(&s), INCMIG_ELINK);
    incmig__stream_dispose(&s);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    assert_int_equal(incmig__stream_init(&s, sv[0], sv[0]), 0);
    assert_int_equal(incmig__stream_send(&s, INCMIG_REC_END, NULL, 0),
                     INCMIG_ELINK);
    incmig__stream_dispose(&s);
}

static void test_dispose(void **st)
{
    int p[2];
    struct incmig__stream s;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(incmig__stream_init(&s, p[0], p[1]), 0);
    incmig__stream_dispose(&s);
    assert_int_equal(fcntl(p[0], F_GETFD), -1);
    assert_int_equal(fcntl(p[1], F_GETFD), -1);
    incmig__stream_dispose(&s);                 /* idempotent */
    assert_int_equal(s.rfd, -1);
    assert_null(s.rbuf);
}

struct drain {
    int fd;
    uint64_t got;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    static uint8_t buf[65536];
    ssize_t r;
    while ((r = read(d->fd, buf, sizeof buf)) > 0)
        d->got += (uint64_t)r;
    return NULL;
}

static void test_bandwidth(void **st)
{
    int sv[2];
    struct incmig__stream s;
    struct drain d = { 0 };
    pthread_t th;
    static uint8_t body[25000 - 12];
    const uint64_t cap = 1000000;
    const int nrec = 20;
    const uint64_t total = (uint64_t)nrec * 25000;   /* 0.5 s at the cap */

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    d.fd = sv[1];
    assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
    assert_int_equal(incmig__stream_init(&s, -1, sv[0]), 0);
    s.bandwidth = cap;
    double t0 = incmig__now();
    for (int i = 0; i < nrec; i++)
        assert_int_equal(incmig__stream_send(&s, INCMIG_REC_XEN_STREAM, body,
                                             sizeof body), 0);
    double dt = incmig__now() - t0;
    incmig__stream_dispose(&s);
    pthread_join(th, NULL);
    close(sv[1]);
    assert_int_equal(d.got, total);
    assert_int_equal(s.bytes_out, total);
    assert_true(dt >= 0.8 * (double)total / (double)cap);
    assert_true(dt < 2.0);

    /* no cap: the same bytes go much faster (sanity of the measurement) */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    d.fd = sv[1];
    d.got = 0;
    assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
    assert_int_equal(incmig__stream_init(&s, -1, sv[0]), 0);
    t0 = incmig__now();
    for (int i = 0; i < nrec; i++)
        assert_int_equal(incmig__stream_send(&s, INCMIG_REC_XEN_STREAM, body,
                                             sizeof body), 0);
    dt = incmig__now() - t0;
    incmig__stream_dispose(&s);
    pthread_join(th, NULL);
    close(sv[1]);
    assert_true(dt < 0.4);
}

static void test_rec_name(void **st)
{
    assert_string_equal(incmig__rec_name(INCMIG_REC_HELLO), "HELLO");
    assert_string_equal(incmig__rec_name(INCMIG_REC_PULL_REQ), "PULL_REQ");
    assert_string_equal(incmig__rec_name(INCMIG_REC_REPORT), "REPORT");
    assert_string_equal(incmig__rec_name(17), "unknown");
    assert_string_equal(incmig__rec_name(0), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_header_ok),
        cmocka_unit_test(test_header_bad_magic),
        cmocka_unit_test(test_header_version),
        cmocka_unit_test(test_header_flags),
        cmocka_unit_test(test_header_eof),
        cmocka_unit_test(test_frame_bytes),
        cmocka_unit_test(test_crc_mismatch),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_max_record),
        cmocka_unit_test(test_unknown_optional),
        cmocka_unit_test(test_unknown_mandatory),
        cmocka_unit_test(test_rt_hello),
        cmocka_unit_test(test_rt_disk),
        cmocka_unit_test(test_rt_disk_ack),
        cmocka_unit_test(test_rt_blocks),
        cmocka_unit_test(test_rt_bitmap),
        cmocka_unit_test(test_rt_small),
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_dec_hello_bad),
        cmocka_unit_test(test_dec_disk_bad),
        cmocka_unit_test(test_dec_disk_ack_bad),
        cmocka_unit_test(test_dec_blocks_bad),
        cmocka_unit_test(test_dec_bitmap_bad),
        cmocka_unit_test(test_dec_small_bad),
        cmocka_unit_test(test_send_peer_gone),
        cmocka_unit_test(test_dispose),
        cmocka_unit_test(test_bandwidth),
        cmocka_unit_test(test_rec_name),
    };

    logf_ = tmpfile();
    if (!logf_)
        return 1;
    incmig_log_setup(0, logf_, "test-stream");
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fclose(logf_);
    return rc;
}
