/* mkcorpus-stream.c: writes the seed corpus of fuzz-stream.
 *
 * Each file is one direction of a well-formed migration stream, made with
 * the real encoders (stream.c, bitmap.c), so the fuzzer starts from inputs
 * that reach every decoder:
 *   src-full      source side: HELLO, 2 DISKs, PUSH BLOCKS (raw, zero,
 *                 zlib), ROUND, SUSPEND, BITMAP (STOPCOPY), GO, PULL
 *                 BLOCKS, XEN_STREAM, PULL_END, END
 *   dst-full      destination side: HELLO, DISK_ACKs, READY, PULL_REQs,
 *                 REPORT, COMPLETE
 *   src-resume    a reconnect in PULL: HELLO, RESUME
 *   dst-resume    BITMAPs of what is still missing, READY
 *   dst-error     DISK_ACK with an error, then ERROR
 *   src-optional  an unknown optional record, then END
 * Not built by `make`; regenerate by hand after a format change:
 *   cc -I. -Ilibxl-ext tests/fuzz/mkcorpus-stream.c \
 *      libxl-ext/{stream,bitmap,log}.c -lz -lpthread -o mkcorpus
 *   ./mkcorpus tests/fuzz/corpus/stream
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "incmig-internal.h"

static uint8_t buf[INCMIG_REC_MAX];
static struct incmig__stream s;

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "mkcorpus: %s failed: %s\n", what,
                incmig_strerror(rc));
        exit(1);
    }
}

static void open_out(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    check(incmig__stream_init(&s, -1, fd), "stream init");
    check(incmig__stream_send_header(&s), "header");
}

static void rec(uint32_t type, int len)
{
    check(len, incmig__rec_name(type));
    check(incmig__stream_send(&s, type, buf, (uint32_t)len),
          incmig__rec_name(type));
}

static void hello(uint32_t role, uint32_t ndisks)
{
    struct incmig__hello h = { .version = INCMIG_STREAM_VERSION, .role = role,
                               .caps = INCMIG_CAP_ZLIB | INCMIG_CAP_RESUME,
                               .ndisks = ndisks, .name = "guest1" };
    memcpy(h.mig_id, "0123456789abcdef", 16);
    rec(INCMIG_REC_HELLO, incmig__enc_hello(&h, buf));
}

static void blocks(uint32_t disk, uint8_t phase, uint8_t enc, uint64_t first,
                   uint32_t nblocks, const void *data, uint32_t len)
{
    struct incmig__blocks b = { .disk = disk, .phase = phase, .enc = enc,
                                .first = first, .nblocks = nblocks,
                                .len = len };
    check(incmig__enc_blocks_hdr(&b, buf), "blocks header");
    if (len)
        memcpy(buf + INCMIG_BLOCKS_HDR, data, len);
    rec(INCMIG_REC_BLOCKS, INCMIG_BLOCKS_HDR + (int)len);
}

static void bitmap(uint32_t disk, uint8_t phase, uint64_t nbits,
                   const uint64_t *set, int nset)
{
    struct incmig__bitmap bm = { 0 };
    uint8_t *enc = NULL;
    size_t len;

    check(incmig__bitmap_init(&bm, nbits), "bitmap init");
    for (int i = 0; i < nset; i++)
        incmig__bitmap_set(&bm, set[i]);
    check(incmig__bitmap_encode(&bm, 0, nbits, &enc, &len), "bitmap encode");
    struct incmig__bitmap_rec m = { .disk = disk, .phase = phase, .first = 0,
                                    .nbits = nbits };
    check(incmig__enc_bitmap_hdr(&m, buf), "bitmap header");
    memcpy(buf + INCMIG_BITMAP_HDR, enc, len);
    rec(INCMIG_REC_BITMAP, INCMIG_BITMAP_HDR + (int)len);
    free(enc);
    incmig__bitmap_dispose(&bm);
}

static void empty(uint32_t type)
{
    check(incmig__stream_send(&s, type, NULL, 0), incmig__rec_name(type));
}

int main(int argc, char **argv)
{
    static uint8_t block[4096], zblock[4096];
    const char *dir = argc > 1 ? argv[1] : ".";

    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus-stream DIR\n");
        return 1;
    }
    for (size_t i = 0; i < sizeof block; i++)
        block[i] = (uint8_t)(i * 31);

    open_out(dir, "src-full");
    hello(0, 2);
    for (uint32_t i = 0; i < 2; i++) {
        struct incmig__disk_rec d = { .index = i, .block_size = 4096,
                                      .size = 64 << 20 };
        memset(d.lineage, 0x10 + i, 16);
        snprintf(d.name, sizeof d.name, "xvd%c", 'a' + i);
        rec(INCMIG_REC_DISK, incmig__enc_disk(&d, buf));
    }
    blocks(0, INCMIG_PHASE_PUSH, INCMIG_ENC_RAW, 0, 1, block, sizeof block);
    blocks(1, INCMIG_PHASE_PUSH, INCMIG_ENC_ZERO, 16, 256, NULL, 0);
    uLongf zlen = sizeof zblock;
    check(compress2(zblock, &zlen, block, sizeof block, 1) == Z_OK ? 0 : -1,
          "compress");
    blocks(0, INCMIG_PHASE_PUSH, INCMIG_ENC_ZLIB, 7, 1, zblock,
           (uint32_t)zlen);
    struct incmig__round x = { .round = 0, .blocks = 258 };
    rec(INCMIG_REC_ROUND, incmig__enc_round(&x, buf));
    empty(INCMIG_REC_SUSPEND);
    static const uint64_t dirty0[] = { 1, 2, 3, 100, 16383 };
    bitmap(0, INCMIG_PHASE_STOPCOPY, 16384, dirty0, 5);
    static const uint64_t dirty1[] = { 5 };
    bitmap(1, INCMIG_PHASE_STOPCOPY, 16384, dirty1, 1);
    empty(INCMIG_REC_GO);
    blocks(0, INCMIG_PHASE_PULL_DEMAND, INCMIG_ENC_ZERO, 100, 1, NULL, 0);
    blocks(0, INCMIG_PHASE_PULL_BACKGROUND, INCMIG_ENC_ZLIB, 1, 1, zblock,
           (uint32_t)zlen);
    memcpy(buf, "libxl stream bytes", 18);
    rec(INCMIG_REC_XEN_STREAM, 18);
    empty(INCMIG_REC_PULL_END);
    empty(INCMIG_REC_END);
    incmig__stream_dispose(&s);

    open_out(dir, "dst-full");
    hello(1, 2);
    for (uint32_t i = 0; i < 2; i++) {
        struct incmig__disk_ack a = { .index = i, .status = 0 };
        rec(INCMIG_REC_DISK_ACK, incmig__enc_disk_ack(&a, buf));
    }
    empty(INCMIG_REC_READY);
    struct incmig__pull_req q = { .disk = 0, .first = 100, .nblocks = 1 };
    rec(INCMIG_REC_PULL_REQ, incmig__enc_pull_req(&q, buf));
    q.disk = 1;
    q.first = 0;
    q.nblocks = 256;
    rec(INCMIG_REC_PULL_REQ, incmig__enc_pull_req(&q, buf));
    memcpy(buf, "{\"pull_s\":0.5}", 14);
    rec(INCMIG_REC_REPORT, 14);
    empty(INCMIG_REC_COMPLETE);
    incmig__stream_dispose(&s);

    open_out(dir, "src-resume");
    hello(0, 2);
    memcpy(buf, "0123456789abcdef", 16);
    rec(INCMIG_REC_RESUME, 16);
    incmig__stream_dispose(&s);

    open_out(dir, "dst-resume");
    hello(1, 2);
    static const uint64_t missing[] = { 3, 4, 5, 6, 7, 9000 };
    bitmap(0, INCMIG_PHASE_PULL_BACKGROUND, 16384, missing, 6);
    bitmap(1, INCMIG_PHASE_PULL_BACKGROUND, 16384, NULL, 0);
    empty(INCMIG_REC_READY);
    incmig__stream_dispose(&s);

    open_out(dir, "dst-error");
    hello(1, 1);
    struct incmig__disk_ack a = { .index = 0, .status = INCMIG_ENOSPC,
                                  .msg = "disk xvda: 64 MiB needed" };
    rec(INCMIG_REC_DISK_ACK, incmig__enc_disk_ack(&a, buf));
    struct incmig__error_rec e = { .code = INCMIG_ENOSPC,
                                   .msg = "destination out of space" };
    rec(INCMIG_REC_ERROR, incmig__enc_error(&e, buf));
    incmig__stream_dispose(&s);

    open_out(dir, "src-optional");
    hello(0, 1);
    memcpy(buf, "from the future", 15);
    rec(INCMIG_REC_OPTIONAL | 0x42, 15);
    empty(INCMIG_REC_END);
    incmig__stream_dispose(&s);
    return 0;
}
