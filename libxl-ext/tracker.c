/* tracker.c: the write-tracker interface and its in-process implementation.
 *
 * A tracker records which blocks of a disk were written since it was last
 * read.  migrate reads it with get_and_clear at each PUSH round and once
 * more after the guest is suspended.  Two implementations share the ops:
 *   - the in-process "memtracker" below, fed by the simulated guest's NBD
 *     export (serve.c) before each write reaches the image;
 *   - blkback's per-VBD bitmap (tracker-blkback.c, Xen only).
 *
 * Ordering rule (the same as the patched blkback's): a write is marked
 * before it is issued to the image AND again when it has completed.  A
 * reader swaps in a clean bitmap, then reads the blocks of the old one.
 * The first mark makes a write that started before the swap show up in
 * this round; the second catches the case where the reader copied the
 * block before that write reached the image: the write is marked in the
 * new bitmap and the block is sent again in the next round.  Marking only
 * before would lose such a write.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "incmig-internal.h"

/* The marks go on in `spare` (clear, resident) while the old ones are
 * handed over: no allocation, no page faults.  Under m->take. */
static void swap_marks(struct incmig__memtracker *m)
{
    pthread_mutex_lock(&m->lock);
    incmig__bitmap_swap(&m->bm, &m->spare);
    pthread_mutex_unlock(&m->lock);
}

static int mem_get_and_clear(struct incmig__tracker *t,
                             struct incmig__bitmap *out)
{
    struct incmig__memtracker *m = (struct incmig__memtracker *)t;

    if (out->nbits != m->spare.nbits)
        return incmig__bitmap_merge(out, &m->spare);   /* says why */
    pthread_mutex_lock(&m->take);
    swap_marks(m);
    int rc = incmig__bitmap_move(out, &m->spare);
    pthread_mutex_unlock(&m->take);
    return rc;
}

int incmig__memtracker_take(struct incmig__memtracker *m, uint8_t **enc,
                            size_t *len, uint64_t *count)
{
    int rc;

    pthread_mutex_lock(&m->take);
    swap_marks(m);
    rc = incmig__bitmap_encode(&m->spare, 0, m->spare.nbits, enc, len);
    if (rc) {   /* the marks go back */
        pthread_mutex_lock(&m->lock);
        incmig__bitmap_merge(&m->bm, &m->spare);
        pthread_mutex_unlock(&m->lock);
    } else if (count) {
        *count = incmig__bitmap_count(&m->spare);
    }
    incmig__bitmap_clear_all(&m->spare);
    pthread_mutex_unlock(&m->take);
    return rc;
}

static int mem_load(struct incmig__tracker *t, const struct incmig__bitmap *in)
{
    struct incmig__memtracker *m = (struct incmig__memtracker *)t;
    int rc;

    pthread_mutex_lock(&m->lock);
    rc = incmig__bitmap_merge(&m->bm, in);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static void mem_dispose(struct incmig__tracker *t)
{
    struct incmig__memtracker *m = (struct incmig__memtracker *)t;

    if (!m->t.ops)
        return;
    incmig__bitmap_dispose(&m->bm);
    incmig__bitmap_dispose(&m->spare);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->take);
    m->t.ops = NULL;
}

static const struct incmig__tracker_ops mem_ops = {
    .get_and_clear = mem_get_and_clear,
    .load = mem_load,
    .dispose = mem_dispose,
};

int incmig__memtracker_init(struct incmig__memtracker *m, uint64_t disk_size,
                            uint32_t block_size)
{
    int rc;

    memset(m, 0, sizeof *m);
    if (!incmig__block_size_valid(block_size)) {
        ERR("tracker block size %u is not a power of two between %u and %u",
            block_size, INCMIG_BS_MIN, INCMIG_BS_MAX);
        return INCMIG_EINVAL;
    }
    m->t.block_size = block_size;
    m->t.nblocks = (disk_size + block_size - 1) / block_size;
    rc = incmig__bitmap_init(&m->bm, m->t.nblocks);
    if (!rc)
        rc = incmig__bitmap_init(&m->spare, m->t.nblocks);
    if (rc) {
        incmig__bitmap_dispose(&m->bm);
        return rc;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->take, NULL);
    m->t.ops = &mem_ops;
    return 0;
}

void incmig__memtracker_mark(struct incmig__memtracker *m, uint64_t off,
                             uint64_t len)
{
    if (!len)
        return;
    uint64_t first = off / m->t.block_size;
    uint64_t last = (off + len - 1) / m->t.block_size;
    pthread_mutex_lock(&m->lock);
    incmig__bitmap_set_range(&m->bm, first, last - first + 1);
    pthread_mutex_unlock(&m->lock);
}
