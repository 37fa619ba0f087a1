/* xen/claim.c: the Xen source's claim to a disk's lineage, and the key
 * that names a volume's parked bitmap (xen/claim.h).
 *
 * A running domain's file volume has its lineage OPEN (lineage.c): the
 * tracker holding it is blkback, in dom0's kernel, and what proves that
 * blkback's bitmap holds every write since the lineage's generation is
 * the VBD's incmig-track-gen node (spec "Xen: blkback is the tracker"):
 *
 *   lineage of the volume     tracking before us   incmig-track-gen   claim
 *   none, corrupt             any                  any                void
 *   closed (not OPEN)         any                  any                void:
 *                             a domain runs on a copy that was let go
 *   OPEN, generation G        off / other size     any                void
 *   OPEN, generation G        on                   absent, not G      void
 *   OPEN, generation G        on                   G                  holds
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "../incmig-internal.h"
#include "claim.h"

int incmig__xen_track_key(const char *volume, char out[INCMIG_XEN_KEY_LEN + 1])
{
    unsigned char d[32];

    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, volume, strlen(volume), d) < 0) {
        ERR("cannot hash %s for its bitmap's name", volume);
        return INCMIG_EIO;
    }
    out[0] = 'p';
    out[1] = '-';
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", d[i]);
    return 0;
}

bool incmig__xen_claim(const char *volume, uint32_t block_size, bool was_on,
                       const char *vbd_gen_hex, uint8_t gen_r[16], char *why,
                       size_t cap)
{
    struct incmig__lineage l;
    char hex[33];
    bool ok = false;

    if (incmig__lineage_load(volume, -1, block_size, &l)) {
        snprintf(why, cap, "the lineage of %s cannot be read", volume);
        return false;
    }
    incmig__gen_hex(l.gen, hex);
    if (!l.found || (!l.open && !l.valid))
        snprintf(why, cap, "%.400s", l.why);
    else if (!l.open)
        snprintf(why, cap, "%.300s was let go with generation %s (a "
                 "migration released it) and a domain runs on it since: "
                 "its writes are not proven tracked", volume, hex);
    else if (!was_on)
        snprintf(why, cap, "blkback was not tracking the disk at %u-byte "
                 "blocks when this migration began (dom0 restarted, the "
                 "domain started without its saved bitmap, or tracking was "
                 "switched off): writes since generation %s may be "
                 "untracked", block_size, hex);
    else if (strcmp(vbd_gen_hex, hex))
        snprintf(why, cap, "blkback's bitmap is not proven to hold every "
                 "write since generation %s (incmig-track-gen is \"%s\": "
                 "tracking restarted without that bitmap, the hook's "
                 "restore failed or was not proven, or an earlier "
                 "migration from here stopped before putting it back)",
                 hex, vbd_gen_hex);
    else
        ok = true;
    if (ok) {
        memcpy(gen_r, l.gen, 16);
        why[0] = '\0';
    }
    incmig__lineage_dispose(&l);
    return ok;
}
