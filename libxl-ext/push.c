/* push.c: sending blocks of a disk, the engine of PUSH (and of PULL's
 * background copy and demand answers).
 *
 * incmig__send_bitmap walks the runs of a bitmap, cuts them into extents
 * (at most max_extent bytes, never across a run), reads them ahead through
 * libaio on the O_DIRECT fd, and hands each completed extent, in the order
 * read, to incmig__send_blocks.  That splits an extent into runs of
 * all-zero blocks (one ZERO marker record, no data) and data runs (raw, or
 * compressed when compress.c finds it worth it), each record at most
 * INCMIG_BLOCKS_MAX bytes of blocks.
 *
 * Completion order: the aio queue may complete out of order, but records
 * for a block never race with each other here (one sender per disk), and
 * the destination applies records in stream order, so order of extents
 * does not matter for correctness.
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

#define PUSH_QD 8

int incmig__sender_init(struct incmig__sender *s, struct incmig__stream *st,
                        struct incmig__disk *disk, uint32_t disk_index,
                        uint32_t bs)
{
    int rc;

    memset(s, 0, sizeof *s);
    s->st = st;
    s->disk = disk;
    s->disk_index = disk_index;
    s->bs = bs;
    s->nblocks = (disk->size + bs - 1) / bs;
    s->rec = malloc(INCMIG_BLOCKS_HDR);
    if (!s->rec) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    rc = incmig__aioq_new(&s->q, disk, PUSH_QD, INCMIG_BLOCKS_MAX);
out:
    if (rc)
        incmig__sender_dispose(s);
    return rc;
}

void incmig__sender_dispose(struct incmig__sender *s)
{
    if (s->q)
        incmig__aioq_free(s->q);
    s->q = NULL;
    free(s->rec);
    s->rec = NULL;
    incmig__comp_dispose(&s->comp);
}

int incmig__sender_compress(struct incmig__sender *s, int mode, int enc)
{
    incmig__comp_dispose(&s->comp);
    return incmig__comp_init(&s->comp, mode, enc);
}

static int send_record(struct incmig__sender *s, uint8_t phase, uint8_t enc,
                       uint64_t first, uint32_t n, const uint8_t *data,
                       uint32_t len)
{
    struct incmig__blocks b = {
        .disk = s->disk_index, .phase = phase, .enc = enc,
        .first = first, .nblocks = n, .data = data, .len = len,
    };
    int hl = incmig__enc_blocks_hdr(&b, s->rec);
    if (hl < 0)
        return hl;
    s->blocks += n;
    if (enc == INCMIG_ENC_ZERO)
        s->zero_blocks += n;
    else
        s->data_bytes += (uint64_t)n * s->bs;
    uint64_t before = s->st->bytes_out;
    double t0 = incmig__now();
    int rc = incmig__stream_send2(s->st, INCMIG_REC_BLOCKS, s->rec,
                                (uint32_t)hl, data, len);
    if (len)
        incmig__comp_sent(&s->comp, len, incmig__now() - t0);
    if (phase < 4)
        s->wire[phase] += s->st->bytes_out - before;
    return rc;
}

static int send_data_run(struct incmig__sender *s, uint8_t phase,
                         uint64_t first, uint32_t n, const uint8_t *data)
{
    uint32_t len = n * s->bs;
    const uint8_t *z;
    size_t zlen = incmig__comp_encode(&s->comp, data, len, &z);

    if (zlen)
        return send_record(s, phase, (uint8_t)s->comp.enc, first, n, z,
                           (uint32_t)zlen);
    return send_record(s, phase, INCMIG_ENC_RAW, first, n, data, len);
}

int incmig__send_blocks(struct incmig__sender *s, uint8_t phase,
                        uint64_t first, uint64_t n, const uint8_t *data)
{
    uint32_t per_rec = INCMIG_BLOCKS_MAX / s->bs;
    uint64_t i = 0;
    int rc = 0;

    while (i < n && !rc) {
        bool zero = incmig__is_zero(data + i * s->bs, s->bs);
        uint64_t j = i + 1;
        while (j < n && j - i < per_rec &&
               incmig__is_zero(data + j * s->bs, s->bs) == zero)
            j++;
        if (zero)
            rc = send_record(s, phase, INCMIG_ENC_ZERO, first + i,
                             (uint32_t)(j - i), NULL, 0);
        else
            rc = send_data_run(s, phase, first + i, (uint32_t)(j - i),
                               data + i * s->bs);
        i = j;
    }
    return rc;
}

int incmig__send_range_sync(struct incmig__sender *s, uint8_t phase,
                            uint64_t first, uint64_t n)
{
    uint32_t per = INCMIG_BLOCKS_MAX / s->bs;
    uint8_t *buf = malloc(INCMIG_BLOCKS_MAX);
    int rc = 0;

    if (!buf)
        return INCMIG_ENOMEM;
    if (first >= s->nblocks)
        n = 0;
    else if (n > s->nblocks - first)
        n = s->nblocks - first;
    while (n && !rc) {
        uint32_t k = n < per ? (uint32_t)n : per;
        uint64_t off = first * s->bs;
        size_t len = (size_t)k * s->bs;
        memset(buf, 0, len);
        if (off + len > s->disk->size)
            len = s->disk->size - off;  /* tail of an unaligned disk */
        rc = incmig__disk_pread(s->disk, buf, len, off);
        if (!rc)
            rc = incmig__send_blocks(s, phase, first, k, buf);
        first += k;
        n -= k;
    }
    free(buf);
    return rc;
}

/* Send one completed extent and return its buffer. */
static int reap_one(struct incmig__sender *s, uint8_t phase)
{
    uint64_t tag, off;
    size_t len;
    uint8_t *buf;
    int res, rc;

    rc = incmig__aioq_reap(s->q, &tag, &off, &len, &buf, &res);
    if (rc)
        return rc;
    if (res) {
        ERR("reading disk %u (%s) at offset %" PRIu64 " failed",
            s->disk_index, s->disk->path, off);
        rc = res;
    } else {
        rc = incmig__send_blocks(s, phase, off / s->bs, tag, buf);
    }
    incmig__aioq_put_buf(s->q, buf);
    return rc;
}

int incmig__send_bitmap(struct incmig__sender *s, uint8_t phase,
                        struct incmig__bitmap *bm, size_t max_extent,
                        int (*poll)(void *opaque), void *opaque)
{
    uint64_t pos = 0, start, len;
    uint64_t per = max_extent / s->bs;
    int rc = 0, stop = 0;

    if (per == 0)
        per = 1;
    if (per > INCMIG_BLOCKS_MAX / s->bs)
        per = INCMIG_BLOCKS_MAX / s->bs;
    while (!rc && !stop && incmig__bitmap_next_run(bm, &pos, &start, &len)) {
        while (len && !rc) {
            uint64_t k = len < per ? len : per;
            uint8_t *buf;
            /* A positive answer is a request to stop early: what is read
             * ahead (its bits are cleared) is still sent below. */
            if (poll && (rc = poll(opaque)) > 0) {
                stop = rc;
                rc = 0;
                break;
            }
            if (rc)
                break;
            while (incmig__aioq_inflight(s->q) >= PUSH_QD && !rc)
                rc = reap_one(s, phase);
            if (rc)
                break;
            rc = incmig__aioq_get_buf(s->q, &buf);
            if (rc)
                break;
            uint64_t off = start * s->bs;
            size_t blen = (size_t)k * s->bs;
            /* the tag carries the block count; the queue zero-fills a
             * read past the end of an unaligned disk */
            rc = incmig__aioq_submit(s->q, false, buf, blen, off, k);
            if (rc) {
                incmig__aioq_put_buf(s->q, buf);
                break;
            }
            incmig__bitmap_clear_range(bm, start, k);
            start += k;
            len -= k;
        }
    }
    /* What is still in flight is sent only while nothing has failed. */
    while (incmig__aioq_inflight(s->q) > 0) {
        if (!rc) {
            rc = reap_one(s, phase);
            continue;
        }
        uint64_t tag, roff;
        size_t rlen;
        uint8_t *buf;
        int res;
        if (incmig__aioq_reap(s->q, &tag, &roff, &rlen, &buf, &res))
            break;
        incmig__aioq_put_buf(s->q, buf);
    }
    return rc ? rc : stop;
}

int incmig__send_bitmap_recs(struct incmig__stream *st, uint32_t disk,
                             uint8_t phase, const struct incmig__bitmap *bm,
                             uint8_t *buf)
{
    /* chunks small enough that even the raw form fits one record */
    const uint64_t chunk = (uint64_t)(INCMIG_REC_MAX - INCMIG_BITMAP_HDR - 64) * 8;
    int rc = 0;

    for (uint64_t first = 0; first < bm->nbits && !rc; first += chunk) {
        uint64_t n = bm->nbits - first < chunk ? bm->nbits - first : chunk;
        uint8_t *enc = NULL;
        size_t elen = 0;
        rc = incmig__bitmap_encode(bm, first, n, &enc, &elen);
        if (rc)
            break;
        struct incmig__bitmap_rec br = {
            .disk = disk, .phase = phase, .first = first, .nbits = n,
            .data = enc, .len = (uint32_t)elen,
        };
        int hl = incmig__enc_bitmap_hdr(&br, buf);
        if (hl < 0 || hl + elen > INCMIG_REC_MAX) {
            rc = hl < 0 ? hl : INCMIG_EINVAL;
        } else {
            memcpy(buf + hl, enc, elen);
            rc = incmig__stream_send(st, INCMIG_REC_BITMAP, buf,
                                     (uint32_t)(hl + elen));
        }
        free(enc);
    }
    return rc;
}
