/* compress.c: block compression for BLOCKS records, adaptive.
 *
 * Entry points (incmig-internal.h, "compression"): incmig__comp_init,
 * _dispose, _encode (what push.c calls for each data run), _sent (how long
 * a record took to go out) and incmig__zstd_decode (the receiver).
 *
 * Encodings: ENC_ZSTD (level 1) when both sides announced INCMIG_CAP_ZSTD,
 * else ENC_ZLIB (level 1, the older peers' form) when they announced
 * INCMIG_CAP_ZLIB.  All-zero blocks never get here (push.c sends them as
 * ZERO markers), and a run that does not shrink by SKIP_RATIO goes raw.
 *
 * Modes: INCMIG_COMP_ALWAYS compresses every run; INCMIG_COMP_AUTO only
 * when the link is the bottleneck.  Compressing a run of len bytes costs
 * len / c seconds of CPU (c: compression speed) and saves (1 - r) * len
 * bytes on the link (r: compressed / raw); with the link at L bytes/s it
 * pays when len / c < (1 - r) * len / L, that is
 *
 *     L < c * (1 - r)
 *
 * L is what records take to go out (bytes / seconds in the stream's send,
 * pacing included): a link with room swallows a record into the socket
 * buffer at memory speed, a full one makes the send wait.  c and r come
 * from the runs compressed; while AUTO decides against it, one run in
 * PROBE_EVERY is still compressed to keep them current (a disk's data
 * changes compressibility from region to region).  Estimates are
 * exponential moving averages (weight EWMA).
 */
#include "config.h"

#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "incmig-internal.h"

#define ZSTD_LEVEL 1
#define SKIP_RATIO 0.97
#define PROBE_EVERY 16
#define EWMA 0.2

int incmig__comp_init(struct incmig__comp *c, int mode, int enc)
{
    *c = (struct incmig__comp){ .mode = mode, .enc = enc };
    if (mode == INCMIG_COMP_OFF)
        return 0;
    c->buf = malloc(ZSTD_compressBound(INCMIG_BLOCKS_MAX) >
                    compressBound(INCMIG_BLOCKS_MAX)
                        ? ZSTD_compressBound(INCMIG_BLOCKS_MAX)
                        : compressBound(INCMIG_BLOCKS_MAX));
    if (enc == INCMIG_ENC_ZSTD)
        c->cctx = ZSTD_createCCtx();
    if (!c->buf || (enc == INCMIG_ENC_ZSTD && !c->cctx)) {
        incmig__comp_dispose(c);
        return INCMIG_ENOMEM;
    }
    return 0;
}

void incmig__comp_dispose(struct incmig__comp *c)
{
    ZSTD_freeCCtx(c->cctx);
    free(c->buf);
    c->cctx = NULL;
    c->buf = NULL;
}

static void ewma(double *v, double x)
{
    *v = *v > 0 ? *v * (1 - EWMA) + x * EWMA : x;
}

bool incmig__comp_worth(const struct incmig__comp *c)
{
    if (c->mode == INCMIG_COMP_ALWAYS)
        return true;
    if (c->mode != INCMIG_COMP_AUTO)
        return false;
    if (c->speed <= 0 || c->link <= 0)
        return true;              /* nothing known yet: measure */
    return c->link < c->speed * (1 - c->ratio);
}

size_t incmig__comp_encode(struct incmig__comp *c, const uint8_t *data,
                           size_t len, const uint8_t **out_r)
{
    size_t z;

    if (c->mode == INCMIG_COMP_OFF || len == 0)
        return 0;
    c->runs++;
    if (!incmig__comp_worth(c) && c->runs % PROBE_EVERY != 0)
        return 0;
    double t0 = incmig__now();
    if (c->enc == INCMIG_ENC_ZSTD) {
        z = ZSTD_compressCCtx(c->cctx, c->buf, ZSTD_compressBound(len), data,
                              len, ZSTD_LEVEL);
        if (ZSTD_isError(z))
            z = 0;
    } else {
        uLongf zl = compressBound(len);
        z = compress2(c->buf, &zl, data, len, 1) == Z_OK ? zl : 0;
    }
    double t = incmig__now() - t0;
    if (t > 0)
        ewma(&c->speed, (double)len / t);
    ewma(&c->ratio, z ? (double)z / (double)len : 1.0);
    if (!z || (double)z > (double)len * SKIP_RATIO)
        return 0;                 /* incompressible: raw */
    c->in_bytes += len;
    c->out_bytes += z;
    *out_r = c->buf;
    return z;
}

void incmig__comp_sent(struct incmig__comp *c, size_t bytes, double seconds)
{
    if (c->mode == INCMIG_COMP_AUTO && bytes > 0 && seconds > 0)
        ewma(&c->link, (double)bytes / seconds);
}

int incmig__zstd_decode(uint8_t *dst, size_t want, const uint8_t *src,
                        size_t len)
{
    size_t n = ZSTD_decompress(dst, want, src, len);
    return ZSTD_isError(n) || n != want ? INCMIG_EPROTO : 0;
}
