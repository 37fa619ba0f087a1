/* stamp.h: deterministic block contents for the simulated guest.
 *
 * A stamp is what the guest writes into one block: given (seed, block,
 * version) its bytes are fixed, so a reader that knows the seed can tell
 * which write a block holds without keeping a copy of the data.  Used by
 * `xl-incmig guest` (writes stamps, checks its reads) and `xl-incmig
 * verify` (checks an image against the guest's journal).
 *
 * Layout of a stamped block of `bs` bytes (bs a multiple of 8, >= 64):
 *   0   8  magic "IMGSTAMP"
 *   8   8  block number, big-endian
 *   16  8  version (>= 1; 0 is "never written"), big-endian
 *   24  8  checksum of bytes 32..bs, keyed by the seed, big-endian
 *   32  ..  64-bit words of a splitmix64 stream seeded by
 *           (seed, block, version), little-endian
 * The body makes a stale or misplaced block fail the check even when a
 * header was copied; the keyed checksum makes stamp_identify cheap to
 * reject for stamps of another seed.
 */
#ifndef INCMIG_STAMP_H
#define INCMIG_STAMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STAMP_MAGIC "IMGSTAMP"
#define STAMP_HEADER_SIZE 32
#define STAMP_BS_MIN 64

void stamp_fill(void *buf, size_t bs, uint64_t seed, uint64_t block,
                uint64_t version);
/* True when buf holds exactly the stamp (seed, block, version). */
bool stamp_check(const void *buf, size_t bs, uint64_t seed, uint64_t block,
                 uint64_t version);
/* True when buf holds a valid stamp of this seed; its block number and
 * version are returned (the block number is the one in the header, which
 * a misplaced write makes differ from where the block was read). */
bool stamp_identify(const void *buf, size_t bs, uint64_t seed,
                    uint64_t *block_r, uint64_t *version_r);
/* True when all bs bytes are zero. */
bool stamp_is_zero(const void *buf, size_t bs);

#endif
