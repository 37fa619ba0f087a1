/* base.c: the per-disk decision of an incremental migration and its
 * checksum fallback (spec: docs/specs/incmig-stream.md, "Incremental
 * migration"; records BASE and DECIDE).
 *
 * Entry points:
 *   incmig__sums_compute  XXH3-128 of each block of a range (both sides)
 *   incmig__base_decide   source: FULL, UNION or CHECKSUM from the
 *                         destination's BASE(REPORT) and the source's own
 *                         claim; UNION fills the round-0 set
 *   incmig__base_compare  source: one BASE(SUMS) chunk against the same
 *                         blocks of its own disk, marking those that differ
 *
 * The two sides hash at once: the destination streams its chunks while
 * the source hashes each chunk's blocks as it arrives, so the hashing
 * costs about what reading one disk costs, and memory stays at one chunk
 * (INCMIG_SUMS_MAX sums) a side whatever the disk's size.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "incmig-internal.h"

#define READ_MAX (1u << 20)

int incmig__sums_compute(struct incmig__disk *d, uint32_t bs, uint64_t first,
                         uint32_t count, uint8_t *out)
{
    uint32_t per = READ_MAX / bs ? READ_MAX / bs : 1;
    uint8_t *buf = malloc((size_t)per * bs);
    int rc = 0;

    if (!buf)
        return INCMIG_ENOMEM;
    for (uint32_t done = 0; done < count && !rc;) {
        uint32_t n = count - done < per ? count - done : per;
        uint64_t off = (first + done) * bs;
        size_t len = (size_t)n * bs;
        memset(buf, 0, len);
        if (off < d->size) {
            size_t have = d->size - off < len ? (size_t)(d->size - off) : len;
            rc = incmig__disk_pread(d, buf, have, off);
        }
        for (uint32_t i = 0; i < n && !rc; i++) {
            XXH128_canonical_t c;
            XXH128_canonicalFromHash(&c, XXH3_128bits(buf + (size_t)i * bs, bs));
            memcpy(out + (size_t)(done + i) * 16, c.digest, 16);
        }
        done += n;
    }
    free(buf);
    return rc;
}

int incmig__base_decide(struct incmig__base_src *b,
                        const struct incmig__base_rec *rep)
{
    char g1[33], g2[33];

    b->mode = INCMIG_MODE_FULL;
    if (!(rep->flags & INCMIG_BASE_HAVE)) {
        snprintf(b->reason, sizeof b->reason, "the destination holds no "
                 "proven copy of this disk");
        return 0;
    }
    if (memcmp(rep->gen, b->gen, 16) || incmig__gen_zero(b->gen)) {
        ERR("the receiver reuses a copy of generation %s for disk %s, whose "
            "generation is %s", incmig__gen_hex(rep->gen, g1), b->name,
            incmig__gen_hex(b->gen, g2));
        return INCMIG_EPROTO;
    }
    if ((rep->flags & INCMIG_BASE_BITMAP) && rep->nbits != b->nblocks) {
        ERR("the receiver's bitmap of disk %s has %" PRIu64 " bits, the "
            "disk %" PRIu64 " blocks", b->name, rep->nbits, b->nblocks);
        return INCMIG_EPROTO;
    }
    if (!b->has_bitmap || !(rep->flags & INCMIG_BASE_BITMAP)) {
        b->mode = INCMIG_MODE_CHECKSUM;
        snprintf(b->reason, sizeof b->reason, "both copies descend from "
                 "generation %s but %s: per-block checksums decide",
                 incmig__gen_hex(b->gen, g1),
                 b->has_bitmap ? "the destination's bitmap is missing"
                               : b->why);
        return 0;
    }
    int rc = incmig__bitmap_decode(&b->send, 0, rep->nbits, rep->data,
                                   rep->len);
    if (rc) {
        ERR("the receiver's bitmap of disk %s does not decode", b->name);
        return rc;
    }
    uint64_t theirs = incmig__bitmap_count(&b->send);
    rc = incmig__bitmap_merge(&b->send, &b->mine);
    if (rc)
        return rc;
    b->mode = INCMIG_MODE_UNION;
    snprintf(b->reason, sizeof b->reason, "both copies descend from "
             "generation %s and both tracked every write since: %" PRIu64
             " block(s) changed here, %" PRIu64 " there",
             incmig__gen_hex(b->gen, g1), incmig__bitmap_count(&b->mine),
             theirs);
    return 0;
}

int incmig__base_compare(struct incmig__base_src *b,
                         const struct incmig__base_rec *sums)
{
    if (sums->first != b->sums_next ||
        sums->count > b->nblocks - sums->first) {
        ERR("BASE(SUMS) for disk %s covers blocks %" PRIu64 "+%" PRIu32
            ", expected block %" PRIu64 " of %" PRIu64, b->name, sums->first,
            sums->count, b->sums_next, b->nblocks);
        return INCMIG_EPROTO;
    }
    uint8_t *mine = malloc((size_t)sums->count * 16);
    if (!mine)
        return INCMIG_ENOMEM;
    int rc = incmig__sums_compute(b->disk, b->bs, sums->first, sums->count,
                                  mine);
    for (uint32_t i = 0; i < sums->count && !rc; i++)
        if (memcmp(mine + (size_t)i * 16, sums->data + (size_t)i * 16, 16))
            incmig__bitmap_set(&b->send, sums->first + i);
    free(mine);
    b->sums_next += sums->count;
    return rc;
}
