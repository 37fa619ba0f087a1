/* fuzz-bitmap.c: libFuzzer harness for incmig__bitmap_decode, the parser
 * of the bitmap chunks a peer sends.
 *
 * Input: 8-byte header, then the encoded bytes.  Header bytes 0..3 (LE)
 * give `first` and 4..7 give `nbits`, each modulo BOUND + 64 so that
 * out-of-range chunks are exercised too.  The target bitmap has BOUND
 * bits and starts empty.  Checks: a failed decode changes nothing; a
 * successful one sets bits only inside [first, first+nbits), and
 * re-encoding that range then decoding it again gives the same bitmap.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

#define BOUND (UINT64_C(1) << 20)

static struct incmig__bitmap a, b;

static uint64_t get_le32(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!a.words) {
        incmig__verbosity = -1;
        if (incmig__bitmap_init(&a, BOUND) || incmig__bitmap_init(&b, BOUND))
            abort();
    }
    if (size < 8)
        return 0;
    uint64_t first = get_le32(data) % (BOUND + 64);
    uint64_t nbits = get_le32(data + 4) % (BOUND + 64);

    incmig__bitmap_clear_all(&a);
    if (incmig__bitmap_decode(&a, first, nbits, data + 8, size - 8)) {
        if (incmig__bitmap_count(&a) != 0)
            abort();               /* a failed decode changed the bitmap */
        return 0;
    }
    if (first + nbits > BOUND)
        abort();                   /* out-of-range chunk accepted */
    uint64_t n = incmig__bitmap_count(&a);
    if (n && (incmig__bitmap_next_set(&a, 0) < first ||
              incmig__bitmap_next_set(&a, first + nbits) != BOUND))
        abort();                   /* bits set outside the chunk */

    uint8_t *enc;
    size_t len;
    if (incmig__bitmap_encode(&a, first, nbits, &enc, &len))
        abort();
    /* The encoder must never do worse than raw. */
    if (len > 1 + nbits / 8 + (nbits % 8 != 0))
        abort();
    incmig__bitmap_clear_all(&b);
    if (incmig__bitmap_decode(&b, first, nbits, enc, len))
        abort();
    if (memcmp(a.words, b.words, BOUND / 8) != 0)
        abort();
    free(enc);
    return 0;
}
