/* bitmap.c: block bitmaps and their compact wire encoding.
 *
 * One bit per block of a disk: the write tracker's dirty set, the blocks a
 * PUSH round sends, the blocks the PULL gate still misses.
 *
 * Entry points: incmig__bitmap_init/dispose, set/clear/test (+ ranges),
 * count, merge, move, next_set/next_clear/next_run, swap, encode/decode, and
 * incmig__block_size_valid.
 *
 * Layout: words[i] holds bits 64*i .. 64*i+63, bit k of the word = bit
 * 64*i+k.  Bits past nbits in the last word are always 0, so count and
 * next_set need no masking; next_clear clamps its answer to nbits.
 * Scans go a word at a time with __builtin_ctzll / popcount.
 *
 * Two levels: a 64 GiB disk at 4 KiB is 16M bits = 256K words, and the
 * passes between the guest's pause and GO (count, merge, next_set,
 * encode, clear_all) must not cost that much each.  So bit w of sum[] is
 * set whenever words[w] may be non-zero.  Invariant (a superset):
 * words[w] != 0 implies sum bit w set.  clear and clear_range drop the bit
 * of a word they empty; a stale set bit (a word emptied by a direct write
 * elsewhere) is allowed.  Every mutator that can
 * make a word non-zero sets its summary bit (mark()); code outside this
 * file that writes words directly calls incmig__bitmap_resum or marks
 * the words itself.  The scans for set bits walk the summary, so they
 * cost in proportion to the words in use, not the disk; next_clear and
 * the raw encoding (chosen only for dense maps) still go word by word.
 *
 * Out-of-range bits: set/clear of a bit >= nbits is ignored, ranges are
 * clamped to [0, nbits), test of such a bit answers false.  Nothing ever
 * writes past words[].
 *
 * Wire encoding of bits [first, first+nbits) (docs/specs/incmig-stream.md,
 * "Bitmap encoding"): one form byte, then
 *   form 0 "raw":  ceil(nbits/8) bytes, bit i = byte i/8, bit i%8 (LSB
 *                  first); pad bits past nbits must be 0;
 *   form 1 "runs": unsigned LEB128 varints (<= 10 bytes, value < 2^64),
 *                  alternating clear-run / set-run lengths, starting with a
 *                  clear run; only that first run may be 0; the lengths sum
 *                  to exactly nbits.
 * The encoder emits the shorter form (raw on a tie).  The decoder checks
 * everything in a first pass and ORs bits into the bitmap only in a second
 * pass, so malformed input leaves the bitmap untouched.
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

#define BITMAP_MAX_BITS (INCMIG_DISK_MAX / INCMIG_BS_MIN)
#define FORM_RAW 0
#define FORM_RUNS 1
#define VARINT_MAX 10

bool incmig__block_size_valid(uint64_t bs)
{
    return bs >= INCMIG_BS_MIN && bs <= INCMIG_BS_MAX && (bs & (bs - 1)) == 0;
}

static uint64_t nwords(uint64_t nbits)
{
    return (nbits + 63) / 64;
}

/* Summary words of a bitmap of nw words (at least one). */
static uint64_t nsumwords(uint64_t nw)
{
    return nw ? (nw + 63) / 64 : 1;
}

/* words[w] may now be non-zero. */
static void mark(struct incmig__bitmap *b, uint64_t w)
{
    b->sum[w / 64] |= UINT64_C(1) << (w % 64);
}

/* words[w] is zero again: scans may skip it (a bitmap that once held the
 * whole disk, PUSH's round 0, would otherwise be walked word by word for
 * the rest of the migration). */
static void unmark_if_zero(struct incmig__bitmap *b, uint64_t w)
{
    if (!b->words[w])
        b->sum[w / 64] &= ~(UINT64_C(1) << (w % 64));
}

/* First word >= w whose summary bit is set, or nw. */
static uint64_t next_word(const struct incmig__bitmap *b, uint64_t w,
                          uint64_t nw)
{
    if (w >= nw)
        return nw;
    uint64_t s = w / 64, ns = nsumwords(nw);
    uint64_t x = b->sum[s] & (~UINT64_C(0) << (w % 64));

    while (!x) {
        if (++s >= ns)
            return nw;
        x = b->sum[s];
    }
    w = s * 64 + (uint64_t)__builtin_ctzll(x);
    return w < nw ? w : nw;
}

/* Run the statement after it with w = each word whose summary bit is
 * set, in order (none for a disposed bitmap). */
#define FOR_EACH_SUM_WORD(b, w)                                             \
    for (uint64_t s_ = 0, x_ = 0,                                           \
         ns_ = (b)->sum ? nsumwords(nwords((b)->nbits)) : 0;                \
         s_ < ns_; s_++)                                                    \
        for (x_ = (b)->sum[s_]; x_; x_ &= x_ - 1)                           \
            for (uint64_t w = s_ * 64 + (uint64_t)__builtin_ctzll(x_),      \
                 once_ = 1; once_; once_ = 0)

void incmig__bitmap_resum(struct incmig__bitmap *b)
{
    uint64_t nw = nwords(b->nbits);

    if (!b->sum)
        return;
    memset(b->sum, 0, nsumwords(nw) * sizeof *b->sum);
    for (uint64_t w = 0; w < nw; w++)
        if (b->words[w])
            mark(b, w);
}

int incmig__bitmap_init(struct incmig__bitmap *b, uint64_t nbits)
{
    b->nbits = 0;
    b->words = NULL;
    b->sum = NULL;
    if (nbits > BITMAP_MAX_BITS) {
        ERR("bitmap of %" PRIu64 " bits is larger than the maximum %" PRIu64
            " (disk larger than 16 TiB?)", nbits, (uint64_t)BITMAP_MAX_BITS);
        return INCMIG_EINVAL;
    }
    /* At least one word, so an empty bitmap still has a valid pointer. */
    uint64_t n = nwords(nbits) ? nwords(nbits) : 1;
    b->words = calloc(n, sizeof *b->words);
    b->sum = calloc(nsumwords(nwords(nbits)), sizeof *b->sum);
    if (!b->words || !b->sum) {
        free(b->words);
        free(b->sum);
        b->words = b->sum = NULL;
        ERR("cannot allocate a bitmap of %" PRIu64 " bits", nbits);
        return INCMIG_ENOMEM;
    }
    /* Resident from now on: a large calloc is fresh pages of zeros that the
     * kernel maps on first write, one fault per 4 KiB page (512 for a 64
     * GiB disk), and the first write to many bitmaps (the stop-and-copy
     * set, the gate's missing set) falls in the downtime, where those
     * faults cost milliseconds.  Volatile: the stores must not be elided. */
    volatile uint64_t *v = b->words;
    for (uint64_t i = 0; i < n; i += 4096 / sizeof *b->words)
        v[i] = 0;
    v = b->sum;
    uint64_t ns = nsumwords(nwords(nbits));
    for (uint64_t i = 0; i < ns; i += 4096 / sizeof *b->sum)
        v[i] = 0;
    b->nbits = nbits;
    return 0;
}

void incmig__bitmap_dispose(struct incmig__bitmap *b)
{
    free(b->words);
    free(b->sum);
    b->words = NULL;
    b->sum = NULL;
    b->nbits = 0;
}

void incmig__bitmap_set(struct incmig__bitmap *b, uint64_t bit)
{
    if (bit < b->nbits) {
        b->words[bit / 64] |= UINT64_C(1) << (bit % 64);
        mark(b, bit / 64);
    }
}

void incmig__bitmap_clear(struct incmig__bitmap *b, uint64_t bit)
{
    if (bit < b->nbits) {
        b->words[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
        unmark_if_zero(b, bit / 64);
    }
}

bool incmig__bitmap_test(const struct incmig__bitmap *b, uint64_t bit)
{
    if (bit >= b->nbits)
        return false;
    return (b->words[bit / 64] >> (bit % 64)) & 1;
}

/* Mask of bits [lo, hi) within one word, 0 <= lo < hi <= 64. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
    uint64_t m = hi == 64 ? ~UINT64_C(0) : (UINT64_C(1) << hi) - 1;
    return m & ~((UINT64_C(1) << lo) - 1);
}

static void change_range(struct incmig__bitmap *b, uint64_t first,
                         uint64_t count, bool set)
{
    if (first >= b->nbits || count == 0)
        return;
    if (count > b->nbits - first)
        count = b->nbits - first;
    uint64_t end = first + count;          /* exclusive, <= nbits */
    uint64_t w = first / 64, wend = (end - 1) / 64;

    for (; w <= wend; w++) {
        unsigned lo = w == first / 64 ? first % 64 : 0;
        unsigned hi = w == wend ? (unsigned)((end - 1) % 64) + 1 : 64;
        uint64_t m = word_mask(lo, hi);
        if (set) {
            b->words[w] |= m;
            mark(b, w);
        } else {
            b->words[w] &= ~m;
            unmark_if_zero(b, w);
        }
    }
}

void incmig__bitmap_set_range(struct incmig__bitmap *b, uint64_t first,
                              uint64_t count)
{
    change_range(b, first, count, true);
}

void incmig__bitmap_clear_range(struct incmig__bitmap *b, uint64_t first,
                                uint64_t count)
{
    change_range(b, first, count, false);
}

void incmig__bitmap_clear_all(struct incmig__bitmap *b)
{
    if (!b->words)
        return;
    /* Only the words the summary says may be set, then the summary. */
    uint64_t ns = nsumwords(nwords(b->nbits));
    for (uint64_t s = 0; s < ns; s++) {
        for (uint64_t x = b->sum[s]; x; x &= x - 1)
            b->words[s * 64 + (uint64_t)__builtin_ctzll(x)] = 0;
        b->sum[s] = 0;
    }
}

uint64_t incmig__bitmap_count(const struct incmig__bitmap *b)
{
    uint64_t n = 0;

    FOR_EACH_SUM_WORD(b, w)
        n += (uint64_t)__builtin_popcountll(b->words[w]);
    return n;
}

static bool same_size(const struct incmig__bitmap *dst,
                      const struct incmig__bitmap *src)
{
    if (dst->nbits == src->nbits)
        return true;
    ERR("cannot merge bitmaps of %" PRIu64 " and %" PRIu64 " bits",
        dst->nbits, src->nbits);
    return false;
}

int incmig__bitmap_merge(struct incmig__bitmap *dst,
                         const struct incmig__bitmap *src)
{
    if (!same_size(dst, src))
        return INCMIG_EINVAL;
    FOR_EACH_SUM_WORD(src, w)
        if (src->words[w]) {
            dst->words[w] |= src->words[w];
            mark(dst, w);
        }
    return 0;
}

int incmig__bitmap_move(struct incmig__bitmap *dst, struct incmig__bitmap *src)
{
    int rc = incmig__bitmap_merge(dst, src);

    if (!rc)   /* both passes walk src's summary: the set words only */
        incmig__bitmap_clear_all(src);
    return rc;
}

/* First bit >= from whose value is `want`, or nbits. */
static uint64_t next_bit(const struct incmig__bitmap *b, uint64_t from,
                         bool want)
{
    if (from >= b->nbits)
        return b->nbits;
    uint64_t nw = nwords(b->nbits), w = from / 64;
    uint64_t x = want ? b->words[w] : ~b->words[w];

    x &= ~UINT64_C(0) << (from % 64);
    for (;;) {
        if (x) {
            uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(x);
            /* ~word shows the zero padding past nbits as clear bits; the
             * first of them is nbits itself, so this clamp is defensive. */
            return bit < b->nbits ? bit : b->nbits;
        }
        w = want ? next_word(b, w + 1, nw) : w + 1;
        if (w >= nw)
            return b->nbits;
        x = want ? b->words[w] : ~b->words[w];
    }
}

uint64_t incmig__bitmap_next_set(const struct incmig__bitmap *b,
                                 uint64_t from)
{
    return next_bit(b, from, true);
}

uint64_t incmig__bitmap_next_clear(const struct incmig__bitmap *b,
                                   uint64_t from)
{
    return next_bit(b, from, false);
}

bool incmig__bitmap_next_run(const struct incmig__bitmap *b, uint64_t *pos,
                             uint64_t *start_r, uint64_t *len_r)
{
    uint64_t s = next_bit(b, *pos, true);

    if (s >= b->nbits) {
        *pos = b->nbits;
        return false;
    }
    uint64_t e = next_bit(b, s, false);
    *start_r = s;
    *len_r = e - s;
    *pos = e;
    return true;
}

void incmig__bitmap_swap(struct incmig__bitmap *a, struct incmig__bitmap *b)
{
    /* Swapping the whole structs keeps each one consistent even if a
     * caller breaks the equal-size rule. */
    struct incmig__bitmap t = *a;
    *a = *b;
    *b = t;
}

/* ---- wire encoding ------------------------------------------------------ */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Parse one varint at buf[*i..len); 0 or -1 if truncated/too long/> 64 bit. */
static int varint_get(const uint8_t *buf, size_t len, size_t *i, uint64_t *v_r)
{
    uint64_t v = 0;

    for (unsigned k = 0; k < VARINT_MAX; k++) {
        if (*i >= len)
            return -1;
        uint8_t c = buf[(*i)++];
        /* The 10th byte carries bit 63 only. */
        if (k == VARINT_MAX - 1 && c > 1)
            return -1;
        v |= (uint64_t)(c & 0x7f) << (7 * k);
        if (!(c & 0x80)) {
            *v_r = v;
            return 0;
        }
    }
    return -1;
}

/* The runs form's body for [first, end) into out, alternating clear/set
 * run lengths starting with a (possibly empty) clear run, in one pass;
 * stops once it would pass `cap` bytes.  Returns its size, or cap + 1
 * when it does not fit (the raw form is then no larger). */
static size_t runs_put(const struct incmig__bitmap *b, uint64_t first,
                       uint64_t end, uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint64_t pos = first;
    bool set = false;

    while (pos < end) {
        uint64_t nx = next_bit(b, pos, !set);
        if (nx > end)
            nx = end;
        if (n + VARINT_MAX > cap && n + varint_len(nx - pos) > cap)
            return cap + 1;
        n += varint_put(out + n, nx - pos);
        pos = nx;
        set = !set;
    }
    return n;
}

/* The raw form of [first, first+nbits) into out (zeroed by the caller),
 * a word at a time: byte i holds bits first+8i .. first+8i+7. */
static void raw_put(const struct incmig__bitmap *b, uint64_t first,
                    uint64_t nbits, uint8_t *out)
{
    size_t nbytes = (size_t)(nbits / 8 + (nbits % 8 != 0));
    unsigned s = first % 64;
    uint64_t w0 = first / 64, nw = nwords(b->nbits);

    for (size_t i = 0; i < nbytes; i += 8) {
        uint64_t w = w0 + i / 8;
        uint64_t v = b->words[w] >> s;
        if (s && w + 1 < nw)
            v |= b->words[w + 1] << (64 - s);
        if (nbits - (uint64_t)i * 8 < 64)
            v &= (UINT64_C(1) << (nbits - (uint64_t)i * 8)) - 1;
        for (size_t k = 0; k < 8 && i + k < nbytes; k++)
            out[i + k] = (uint8_t)(v >> (8 * k));
    }
}

int incmig__bitmap_encode(const struct incmig__bitmap *b, uint64_t first,
                          uint64_t nbits, uint8_t **buf_r, size_t *len_r)
{
    *buf_r = NULL;
    *len_r = 0;
    if (first > b->nbits || nbits > b->nbits - first) {
        ERR("bitmap encode: bits %" PRIu64 "+%" PRIu64 " outside a bitmap of %"
            PRIu64 " bits", first, nbits, b->nbits);
        return INCMIG_EINVAL;
    }
    /* Runs are tried first in a buffer the size of the raw form: the
     * shorter form wins, raw on a tie. */
    size_t raw = (size_t)(nbits / 8 + (nbits % 8 != 0));
    uint8_t *buf = malloc(1 + raw + VARINT_MAX);

    if (!buf) {
        ERR("cannot allocate %zu bytes to encode a bitmap", 1 + raw);
        return INCMIG_ENOMEM;
    }
    size_t runs = raw ? runs_put(b, first, first + nbits, buf + 1, raw - 1)
                      : 1;
    if (runs < raw) {
        buf[0] = FORM_RUNS;
        *len_r = 1 + runs;
    } else {
        buf[0] = FORM_RAW;
        memset(buf + 1, 0, raw);
        raw_put(b, first, nbits, buf + 1);
        *len_r = 1 + raw;
    }
    *buf_r = buf;
    return 0;
}

/* OR raw-form bits (already validated) into b at `first`, 8 bytes at a
 * time: each little-endian 64-bit chunk lands on at most two words. */
static void apply_raw(struct incmig__bitmap *b, uint64_t first, uint64_t nbits,
                      const uint8_t *p)
{
    size_t nbytes = (size_t)(nbits / 8 + (nbits % 8 != 0));

    for (size_t i = 0; i < nbytes; i += 8) {
        uint64_t v = 0;
        for (size_t k = 0; k < 8 && i + k < nbytes; k++)
            v |= (uint64_t)p[i + k] << (8 * k);
        if (!v)
            continue;
        uint64_t pos = first + (uint64_t)i * 8;
        unsigned s = pos % 64;
        if (v << s) {
            b->words[pos / 64] |= v << s;
            mark(b, pos / 64);
        }
        /* Validation guarantees the high bits land below b->nbits. */
        if (s && (v >> (64 - s))) {
            b->words[pos / 64 + 1] |= v >> (64 - s);
            mark(b, pos / 64 + 1);
        }
    }
}

/* A validated run of set bits: within one word at once, else by range. */
static void set_run(struct incmig__bitmap *b, uint64_t at, uint64_t run)
{
    unsigned lo = at % 64;

    if (lo + run <= 64) {
        b->words[at / 64] |= word_mask(lo, lo + (unsigned)run);
        mark(b, at / 64);
    } else
        change_range(b, at, run, true);
}

int incmig__bitmap_decode(struct incmig__bitmap *b, uint64_t first,
                          uint64_t nbits, const uint8_t *buf, size_t len)
{
    if (first > b->nbits || nbits > b->nbits - first) {
        ERR("bitmap chunk %" PRIu64 "+%" PRIu64 " from peer is outside the "
            "disk's %" PRIu64 " blocks", first, nbits, b->nbits);
        return INCMIG_EPROTO;
    }
    if (len < 1) {
        ERR("bitmap chunk at %" PRIu64 " from peer is empty", first);
        return INCMIG_EPROTO;
    }
    if (buf[0] == FORM_RAW) {
        uint64_t raw = nbits / 8 + (nbits % 8 != 0);
        if (len - 1 != raw) {
            ERR("raw bitmap chunk at %" PRIu64 ": %zu bytes for %" PRIu64
                " bits, expected %" PRIu64, first, len - 1, nbits, raw);
            return INCMIG_EPROTO;
        }
        if (nbits % 8 && (buf[len - 1] >> (nbits % 8))) {
            ERR("raw bitmap chunk at %" PRIu64 ": padding bits set", first);
            return INCMIG_EPROTO;
        }
        apply_raw(b, first, nbits, buf + 1);
        return 0;
    }
    if (buf[0] != FORM_RUNS) {
        ERR("bitmap chunk at %" PRIu64 ": unknown form %u", first, buf[0]);
        return INCMIG_EPROTO;
    }
    /* Pass 1: validate.  Pass 2: apply. */
    for (int pass = 0; pass < 2; pass++) {
        size_t i = 1;
        uint64_t sum = 0, run;
        bool set = false;
        for (unsigned k = 0; i < len; k++, set = !set) {
            if (buf[i] < 0x80)
                run = buf[i++];     /* most runs: one byte */
            else if (varint_get(buf, len, &i, &run) < 0) {
                ERR("bitmap chunk at %" PRIu64 ": bad varint at byte %zu",
                    first, i);
                return INCMIG_EPROTO;
            }
            if (run == 0 && k != 0) {
                ERR("bitmap chunk at %" PRIu64 ": empty run at byte %zu",
                    first, i);
                return INCMIG_EPROTO;
            }
            if (run > nbits - sum) {
                ERR("bitmap chunk at %" PRIu64 ": runs exceed %" PRIu64
                    " bits", first, nbits);
                return INCMIG_EPROTO;
            }
            if (pass == 1 && set)
                set_run(b, first + sum, run);
            sum += run;
        }
        if (sum != nbits) {
            ERR("bitmap chunk at %" PRIu64 ": runs cover %" PRIu64
                " bits, expected %" PRIu64, first, sum, nbits);
            return INCMIG_EPROTO;
        }
    }
    return 0;
}
