/* tracker-blkback.h: the write tracker of a VBD served by incmig's
 * patched xen-blkback (blkback-patch/, interface in
 * blkback-patch/ABI-sysfs-xen-blkback-tracking.txt).
 *
 * Entry points: open (enable tracking and wait for blkback's answer),
 * drain_wait (after the domain is suspended), disable; the
 * get_and_clear / load / dispose operations of struct incmig__tracker.
 *
 * Built only with libxen (HAVE_XEN).  sysfs is reached under a root
 * prefix and xenstore through a small ops table, so the unit test runs
 * against a fake directory and a fake store.
 */
#ifndef INCMIG_TRACKER_BLKBACK_H
#define INCMIG_TRACKER_BLKBACK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "incmig-internal.h"

/* xenstore access.  write: one transaction, retried on EAGAIN.  read:
 * 0 with *val_r malloc'd, 1 when the node does not exist, or an
 * INCMIG_E* code. */
struct incmig__blkback_xs_ops {
    int (*write)(void *opaque, const char *path, const char *val);
    int (*read)(void *opaque, const char *path, char **val_r);
    void (*close)(void *opaque);
};

struct incmig__blkback_opts {
    /* Prepended to /sys/...; NULL: $INCMIG_SYSFS_ROOT, else "". */
    const char *sysfs_root;
    /* Backend directory; NULL: /local/domain/0/backend/vbd/DOMID/DEVID. */
    const char *backend_path;
    /* incmig-track-key (parks the bitmap when the VBD goes away); NULL:
     * none.  [A-Za-z0-9._-], at most 64 characters. */
    const char *key;
    /* incmig-track-volume, written with the key: the volume's resolved
     * path (the hook stats it when it saves a parked bitmap); NULL: none. */
    const char *volume;
    /* The VBD's size in bytes, when known: a VBD whose frontend has not
     * connected yet (a domain restored, still paused) has no sectors node
     * yet; with one, the two must agree.  0: sectors is required. */
    uint64_t size;
    /* NULL: libxenstore (xs_open).  Called on dispose: close(opaque). */
    const struct incmig__blkback_xs_ops *xs;
    void *xs_opaque;
    double timeout_s;        /* blkback's answer to enable; 0: 10 s */
};

/* Enable tracking at block_size (power of two, 4K..1M) and wait, bounded,
 * for incmig-tracking to report it.  INCMIG_ENOTSUP with a message naming
 * the fix when the loaded xen-blkback is the stock one; INCMIG_EINVAL
 * with blkback's reason when it refuses. */
int incmig__blkback_tracker_open(struct incmig__tracker **t, uint32_t domid,
                                 uint32_t devid, uint32_t block_size,
                                 const struct incmig__blkback_opts *opts);
/* Wait until the VBD has no request in flight (call after the domain is
 * suspended, before the final get_and_clear).  INCMIG_ECANCEL on
 * timeout. */
int incmig__blkback_drain_wait(struct incmig__tracker *t, double timeout_s);
/* Stop tracking (the kernel frees the bitmap); incmig-track-gen is
 * emptied first, the bitmap it spoke for being gone. */
int incmig__blkback_disable(struct incmig__tracker *t);

/* What the VBD said before open asked for tracking (spec "Xen: blkback is
 * the tracker"): *was_on_r, tracking was already on at this block size
 * (blkback's bitmap then runs from an earlier enable); gen_hex_r, the
 * value of incmig-track-gen then ("" when absent or empty). */
void incmig__blkback_prior(struct incmig__tracker *t, bool *was_on_r,
                           char gen_hex_r[33]);
/* incmig-track-gen := gen (hex); NULL empties it (no proof). */
int incmig__blkback_set_gen(struct incmig__tracker *t, const uint8_t *gen);

/* The guest's requests on the VBD, for PUSH yielding (the domain's
 * activity op): those completed by the device blkback serves it from
 * (physical_device; /sys/dev/block/MAJ:MIN/stat) and the seconds they
 * took, cumulative.  push_dev: the block device PUSH reads, 0 for a file;
 * when it is the same device its reads are PUSH's, and only writes count. */
int incmig__blkback_activity(struct incmig__tracker *t, dev_t push_dev,
                             uint64_t *reqs_r, double *busy_s_r);

#endif
