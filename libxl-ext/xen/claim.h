/* xen/claim.h: what a Xen disk's file volume proves about its content,
 * with blkback as its tracker (xen/claim.c; spec "Xen: blkback is the
 * tracker").  No libxl here: the unit test reaches it without Xen. */
#ifndef INCMIG_XEN_CLAIM_H
#define INCMIG_XEN_CLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The name blkback parks a volume's bitmap under (incmig-track-key), the
 * hook's KEY: "p-" and the first 32 hex digits of SHA-256 of the volume's
 * resolved path.  out: 35 bytes.  0 or INCMIG_EIO. */
#define INCMIG_XEN_KEY_LEN 34
int incmig__xen_track_key(const char *volume, char out[INCMIG_XEN_KEY_LEN + 1]);

/* The source's claim for a running domain's disk on the file volume
 * `volume`, from what the VBD said before this migration asked for
 * tracking (incmig__blkback_prior): true when the volume's lineage is
 * intact and OPEN with generation G, tracking was already on at this block
 * size, and incmig-track-gen was G; then gen_r = G.  Otherwise false and
 * why says which link of the proof is missing (gen_r untouched). */
bool incmig__xen_claim(const char *volume, uint32_t block_size, bool was_on,
                       const char *vbd_gen_hex, uint8_t gen_r[16], char *why,
                       size_t cap);

#endif
