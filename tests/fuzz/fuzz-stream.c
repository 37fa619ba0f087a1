/* fuzz-stream.c: libFuzzer harness for the migration stream reader.
 *
 * Plays a hostile peer: the input is everything the peer sends on one
 * direction of the connection.  It is placed in a memfd that serves as the
 * stream's read fd, then the harness does what a receiver does: check the
 * stream header, read records until an error or EOF, and decode each with
 * the matching incmig__dec_* (BITMAP bodies also through
 * incmig__bitmap_decode, BLOCKS with the block size of the DISK record
 * seen for that disk).  Each input runs twice: as is, and with the CRC
 * of every complete frame corrected, so that mutated bodies get past the
 * checksum and reach the decoders.
 *
 * Besides "no crash, no leak, no UB", it checks one property: whatever a
 * decoder accepts, the encoder writes back byte for byte (the encoding is
 * canonical), so decoder and encoder cannot drift apart.
 *
 * Build and run: `make -C tests fuzz`, or by hand
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -Ilibxl-ext \
 *     tests/fuzz/fuzz-stream.c libxl-ext/{stream,bitmap,log}.c -lz -lpthread
 *   ./a.out tests/fuzz/corpus/stream
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "incmig-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bits of a BITMAP chunk we are willing to allocate per record: the
 * decoder's own bounds allow 2^32, far more than a fuzzer run should. */
#define FUZZ_BITMAP_MAX_BITS (UINT64_C(1) << 20)

static uint8_t enc_buf[INCMIG_REC_MAX];

/* Encoder output must equal the accepted body (or its first `n` bytes). */
static void same(int len, const struct incmig__rec *r, uint32_t n)
{
    if (len < 0 || (uint32_t)len != n || n > r->len ||
        memcmp(enc_buf, r->body, n) != 0)
        abort();
}

static void check_record(const struct incmig__rec *r, uint32_t *bs)
{
    switch (r->type) {
    case INCMIG_REC_HELLO: {
        struct incmig__hello h;
        if (incmig__dec_hello(r, &h) == 0)
            same(incmig__enc_hello(&h, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_DISK: {
        struct incmig__disk_rec d;
        if (incmig__dec_disk(r, &d) == 0) {
            same(incmig__enc_disk(&d, enc_buf), r, r->len);
            bs[d.index] = d.block_size;
        }
        break;
    }
    case INCMIG_REC_DISK_ACK: {
        struct incmig__disk_ack a;
        if (incmig__dec_disk_ack(r, &a) == 0)
            same(incmig__enc_disk_ack(&a, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_BLOCKS: {
        struct incmig__blocks b;
        /* Decode with the block size of the DISK record of that disk, as
         * the receiver does; the disk index is the first field. */
        uint32_t disk = r->len >= 4 ? (uint32_t)r->body[0] << 24 |
                        (uint32_t)r->body[1] << 16 | r->body[2] << 8 |
                        r->body[3] : 0;
        uint32_t disk_bs = disk < INCMIG_MAX_DISKS ? bs[disk] : INCMIG_BS_MIN;
        if (incmig__dec_blocks(r, disk_bs, &b) == 0) {
            same(incmig__enc_blocks_hdr(&b, enc_buf), r, INCMIG_BLOCKS_HDR);
            if (b.len != r->len - INCMIG_BLOCKS_HDR ||
                (uint64_t)b.nblocks * disk_bs > INCMIG_BLOCKS_MAX ||
                (b.enc == INCMIG_ENC_RAW && b.len != b.nblocks * disk_bs))
                abort();
        }
        break;
    }
    case INCMIG_REC_BITMAP: {
        struct incmig__bitmap_rec m;
        if (incmig__dec_bitmap(r, &m) != 0)
            break;
        same(incmig__enc_bitmap_hdr(&m, enc_buf), r, INCMIG_BITMAP_HDR);
        if (m.first + m.nbits <= FUZZ_BITMAP_MAX_BITS) {
            struct incmig__bitmap bm = { 0 };
            if (incmig__bitmap_init(&bm, m.first + m.nbits) == 0) {
                if (incmig__bitmap_decode(&bm, m.first, m.nbits, m.data,
                                          m.len) == 0 &&
                    incmig__bitmap_next_set(&bm, 0) < m.first)
                    abort();        /* bits set before the chunk */
                incmig__bitmap_dispose(&bm);
            }
        }
        break;
    }
    case INCMIG_REC_ROUND: {
        struct incmig__round x;
        if (incmig__dec_round(r, &x) == 0)
            same(incmig__enc_round(&x, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_PULL_REQ: {
        struct incmig__pull_req q;
        if (incmig__dec_pull_req(r, &q) == 0)
            same(incmig__enc_pull_req(&q, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_ERROR: {
        struct incmig__error_rec e;
        if (incmig__dec_error(r, &e) == 0)
            same(incmig__enc_error(&e, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_RESUME: {
        uint8_t id[16];
        if (incmig__dec_resume(r, id) == 0 && memcmp(id, r->body, 16) != 0)
            abort();
        break;
    }
    case INCMIG_REC_BASE: {
        struct incmig__base_rec b;
        if (incmig__dec_base(r, &b) == 0)
            same(incmig__enc_base_hdr(&b, enc_buf), r,
                 b.kind == INCMIG_BASE_REPORT ? INCMIG_BASE_REPORT_HDR
                                              : INCMIG_BASE_SUMS_HDR);
        break;
    }
    case INCMIG_REC_DECIDE: {
        struct incmig__decide x;
        if (incmig__dec_decide(r, &x) == 0)
            same(incmig__enc_decide(&x, enc_buf), r, r->len);
        break;
    }
    case INCMIG_REC_XEN_STREAM:
    case INCMIG_REC_REPORT:
        break;                      /* opaque to the codec */
    default:
        if (incmig__dec_empty(r) == 0 && r->len != 0)
            abort();
        break;
    }
}

/* Feed `size` bytes to the reader as one connection's worth of input. */
static void run(struct incmig__stream *s, int memfd, const uint8_t *data,
                size_t size)
{
    struct incmig__rec r;
    uint32_t bs[INCMIG_MAX_DISKS];

    if (ftruncate(memfd, 0) != 0 ||
        (size && pwrite(memfd, data, size, 0) != (ssize_t)size) ||
        lseek(memfd, 0, SEEK_SET) != 0)
        abort();
    s->bytes_in = 0;

    for (unsigned i = 0; i < INCMIG_MAX_DISKS; i++)
        bs[i] = INCMIG_BS_DEFAULT;
    if (incmig__stream_recv_header(s) != 0)
        return;
    while (incmig__stream_recv(s, &r) == 0) {
        if (r.len > INCMIG_REC_MAX || (r.type & ~INCMIG_REC_OPTIONAL) == 0)
            abort();
        check_record(&r, bs);
    }
    if (s->bytes_in > size)
        abort();
}

/* A copy of the input with every complete frame's CRC made right, so that
 * mutations of bodies reach the decoders instead of dying at the CRC. */
static uint8_t *fix_crcs(const uint8_t *data, size_t size)
{
    uint8_t *c = malloc(size ? size : 1);
    size_t off = 16;

    if (!c)
        abort();
    memcpy(c, data, size);
    while (off + 8 <= size) {
        uint32_t len = (uint32_t)c[off + 4] << 24 | (uint32_t)c[off + 5] << 16
                       | (uint32_t)c[off + 6] << 8 | c[off + 7];
        if (len > size - off - 8 || size - off - 8 - len < 4)
            break;
        uint32_t crc = incmig__crc32c(0, c + off, 8 + len);
        uint8_t *p = c + off + 8 + len;
        p[0] = crc >> 24; p[1] = crc >> 16; p[2] = crc >> 8; p[3] = crc;
        off += 12 + (size_t)len;
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct incmig__stream s;
    static int memfd = -1;

    /* One stream and one memfd for the whole run: the 4 MiB receive buffer
     * is allocated once, not per input. */
    if (memfd < 0) {
        incmig_log_setup(-1, NULL, "fuzz");     /* silence error logs */
        memfd = memfd_create("fuzz-stream", 0);
        if (memfd < 0 || incmig__stream_init(&s, memfd, -1) != 0)
            abort();
    }
    run(&s, memfd, data, size);
    uint8_t *fixed = fix_crcs(data, size);
    run(&s, memfd, fixed, size);
    free(fixed);
    return 0;
}
