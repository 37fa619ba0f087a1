/* stamp.c: deterministic block contents (see stamp.h for the layout).
 *
 * Entry points: stamp_fill, stamp_check, stamp_identify, stamp_is_zero.
 * The body generator is splitmix64: one add, three xor-shift-multiplies
 * per 8 bytes, so filling and checking run at memory speed and the guest's
 * write rate is bounded by the NBD server, not by us.
 */
#include <endian.h>
#include <string.h>

#include "stamp.h"

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Distinct (seed, block, version) triples give unrelated streams. */
static uint64_t body_state(uint64_t seed, uint64_t block, uint64_t version)
{
    return mix64(mix64(mix64(seed) ^ block) + version);
}

static uint64_t next_word(uint64_t *st)
{
    *st += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(*st);
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void put_be64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* Checksum of the body, keyed by the seed. */
static uint64_t body_sum(const unsigned char *body, size_t len, uint64_t seed)
{
    uint64_t h = mix64(seed ^ UINT64_C(0x5354414d50535546));

    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, body + i, 8);
        h = (h ^ le64toh(w)) * UINT64_C(0x100000001b3);
        h ^= h >> 29;
    }
    return mix64(h);
}

void stamp_fill(void *buf, size_t bs, uint64_t seed, uint64_t block,
                uint64_t version)
{
    unsigned char *p = buf;
    uint64_t st = body_state(seed, block, version);

    memcpy(p, STAMP_MAGIC, 8);
    put_be64(p + 8, block);
    put_be64(p + 16, version);
    for (size_t i = STAMP_HEADER_SIZE; i + 8 <= bs; i += 8) {
        uint64_t w = htole64(next_word(&st));
        memcpy(p + i, &w, 8);
    }
    put_be64(p + 24, body_sum(p + STAMP_HEADER_SIZE, bs - STAMP_HEADER_SIZE,
                              seed));
}

/* Compare the body against the stream for (seed, block, version). */
static bool body_matches(const unsigned char *p, size_t bs, uint64_t seed,
                         uint64_t block, uint64_t version)
{
    uint64_t st = body_state(seed, block, version);

    for (size_t i = STAMP_HEADER_SIZE; i + 8 <= bs; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (le64toh(w) != next_word(&st))
            return false;
    }
    return true;
}

bool stamp_check(const void *buf, size_t bs, uint64_t seed, uint64_t block,
                 uint64_t version)
{
    const unsigned char *p = buf;

    if (bs < STAMP_BS_MIN || bs % 8 != 0)
        return false;
    if (memcmp(p, STAMP_MAGIC, 8) != 0 || get_be64(p + 8) != block ||
        get_be64(p + 16) != version)
        return false;
    /* The body comparison is the real check; the checksum is implied by
     * it, since both are functions of the same bytes. */
    return body_matches(p, bs, seed, block, version);
}

bool stamp_identify(const void *buf, size_t bs, uint64_t seed,
                    uint64_t *block_r, uint64_t *version_r)
{
    const unsigned char *p = buf;

    if (bs < STAMP_BS_MIN || bs % 8 != 0)
        return false;
    if (memcmp(p, STAMP_MAGIC, 8) != 0)
        return false;
    /* Checksum first: it rejects another seed's stamp or a torn block
     * without regenerating the stream. */
    if (get_be64(p + 24) != body_sum(p + STAMP_HEADER_SIZE,
                                     bs - STAMP_HEADER_SIZE, seed))
        return false;
    uint64_t block = get_be64(p + 8), version = get_be64(p + 16);
    if (version == 0 || !body_matches(p, bs, seed, block, version))
        return false;
    *block_r = block;
    *version_r = version;
    return true;
}

bool stamp_is_zero(const void *buf, size_t bs)
{
    const unsigned char *p = buf;

    /* memcmp against itself shifted by one byte: zero iff first byte is
     * zero and every byte equals its successor. */
    return bs == 0 || (p[0] == 0 && memcmp(p, p + 1, bs - 1) == 0);
}
