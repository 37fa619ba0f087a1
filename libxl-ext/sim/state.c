/* sim/state.c: the simulated domain's own state, and its state stream.
 *
 * A Xen domain has memory and CPU state besides its disks, and libxl
 * moves them as one opaque stream (memory pre-copy, then the pause, then
 * the last pages and the CPU state) that incmig carries in XEN_STREAM
 * records.  The simulated domain has the same: `npages` pages of
 * "memory" that the guest's writes dirty (serve.c touches one page per
 * write, within a working set of 1/16 of the pages, spread over all of
 * them), and a small "CPU state" (a write counter).  incmig__simstate_save
 * writes its stream the way libxl does (pre-copy rounds while the domain
 * runs, then pause, then the rest); incmig__simstate_restore, on the
 * destination, reads it back and proves it intact, so the state channel
 * is exercised by every simulated migration without Xen.
 *
 * Stream (all integers big-endian):
 *   header  "INCMIGST" u32 version (1) u32 page size (4096) u64 npages
 *   PAGE    u32 1, u64 index (< npages), 4096 octets
 *   END     u32 2, u64 cpu (the write counter at the pause),
 *           u32 CRC-32C of every page in index order, u64 pages sent
 * END is last: anything after it, a truncated record, an unknown type, an
 * index out of range or a checksum that does not match the pages received
 * is a corrupt stream.  npages is bounded (SIMSTATE_MAX_PAGES) before
 * anything is allocated.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "be.h"
#include "incmig-internal.h"

#define MAGIC "INCMIGST"
#define STATE_VERSION 1u
#define T_PAGE 1u
#define T_END 2u
#define PRECOPY_ROUNDS 5
#define PRECOPY_DONE_PAGES 16   /* few enough to send while paused */

int incmig__simmem_init(struct incmig__simmem *m, uint64_t bytes)
{
    int rc;

    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->npages = (bytes + INCMIG_SIMSTATE_PAGE - 1) / INCMIG_SIMSTATE_PAGE;
    if (m->npages == 0 || m->npages > INCMIG_SIMSTATE_MAX_PAGES) {
        ERR("simulated memory of %" PRIu64 " bytes: 4 KiB to %u MiB", bytes,
            (unsigned)(INCMIG_SIMSTATE_MAX_PAGES * INCMIG_SIMSTATE_PAGE >> 20));
        return INCMIG_EINVAL;
    }
    m->pages = calloc(m->npages, INCMIG_SIMSTATE_PAGE);
    if (!m->pages)
        return INCMIG_ENOMEM;
    /* Distinct contents per page, so a page put in the wrong place shows. */
    for (uint64_t i = 0; i < m->npages; i++)
        put64(m->pages + i * INCMIG_SIMSTATE_PAGE, i * 0x9e3779b97f4a7c15u);
    rc = incmig__bitmap_init(&m->dirty, m->npages);
    if (rc)
        incmig__simmem_dispose(m);
    return rc;
}

void incmig__simmem_dispose(struct incmig__simmem *m)
{
    free(m->pages);
    m->pages = NULL;
    incmig__bitmap_dispose(&m->dirty);
    if (m->npages)
        pthread_mutex_destroy(&m->lock);
    m->npages = 0;
}

void incmig__simmem_touch(struct incmig__simmem *m, uint64_t key)
{
    if (!m->pages)
        return;
    pthread_mutex_lock(&m->lock);
    if (m->frozen) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    /* Writes dirty a working set of 1/16 of memory, as a guest's busy
     * pages are a small part of its memory: pre-copy converges to it. */
    uint64_t hot = m->npages >= 16 ? m->npages / 16 : m->npages;
    uint64_t pg = key % hot * (m->npages / hot);
    uint8_t *p = m->pages + pg * INCMIG_SIMSTATE_PAGE;
    m->cpu++;
    put64(p + 8 + (m->cpu % 500) * 8, m->cpu ^ key);
    incmig__bitmap_set(&m->dirty, pg);
    pthread_mutex_unlock(&m->lock);
}

void incmig__simmem_freeze(struct incmig__simmem *m, bool frozen)
{
    if (!m->pages)
        return;
    pthread_mutex_lock(&m->lock);
    m->frozen = frozen;
    pthread_mutex_unlock(&m->lock);
}

/* ---- save ---------------------------------------------------------------- */

/* Send the pages set in `set` (a snapshot taken under the lock; the copy
 * of each page is taken under the lock too, one page at a time). */
static int send_pages(struct incmig__simmem *m, int fd,
                      const struct incmig__bitmap *set, uint64_t *sent)
{
    uint8_t rec[12 + INCMIG_SIMSTATE_PAGE];
    for (uint64_t pg = incmig__bitmap_next_set(set, 0); pg < set->nbits;
         pg = incmig__bitmap_next_set(set, pg + 1)) {
        put32(rec, T_PAGE);
        put64(rec + 4, pg);
        pthread_mutex_lock(&m->lock);
        memcpy(rec + 12, m->pages + pg * INCMIG_SIMSTATE_PAGE,
               INCMIG_SIMSTATE_PAGE);
        pthread_mutex_unlock(&m->lock);
        int rc = incmig__write_state(fd, rec, sizeof rec);
        if (rc)
            return rc;
        (*sent)++;
    }
    return 0;
}

static void take_dirty(struct incmig__simmem *m, struct incmig__bitmap *out)
{
    incmig__bitmap_clear_all(out);
    pthread_mutex_lock(&m->lock);
    incmig__bitmap_swap(&m->dirty, out);
    pthread_mutex_unlock(&m->lock);
}

int incmig__simstate_save(struct incmig__simmem *m, int fd,
                          int (*pause)(void *opaque), void *opaque,
                          bool corrupt)
{
    struct incmig__bitmap set = {0};
    uint8_t hdr[24];
    uint64_t sent = 0;
    int rc;

    rc = incmig__bitmap_init(&set, m->npages);
    if (rc)
        return rc;
    memcpy(hdr, MAGIC, 8);
    put32(hdr + 8, STATE_VERSION);
    put32(hdr + 12, INCMIG_SIMSTATE_PAGE);
    put64(hdr + 16, m->npages);
    rc = incmig__write_state(fd, hdr, sizeof hdr);
    if (rc)
        goto out;
    /* Round 0: everything; what is dirtied meanwhile goes in later rounds. */
    take_dirty(m, &set);
    incmig__bitmap_set_range(&set, 0, m->npages);
    for (int round = 0;; round++) {
        rc = send_pages(m, fd, &set, &sent);
        if (rc)
            goto out;
        take_dirty(m, &set);
        uint64_t n = incmig__bitmap_count(&set);
        DBG("state pre-copy round %d: %" PRIu64 " pages dirtied meanwhile",
            round, n);
        if (n <= PRECOPY_DONE_PAGES || round + 1 >= PRECOPY_ROUNDS)
            break;
    }
    rc = pause(opaque);
    if (rc)
        goto out;
    /* Paused: nothing dirties memory any more (the guest's requests still
     * in flight were issued before the pause). */
    incmig__simmem_freeze(m, true);
    struct incmig__bitmap last = {0};
    rc = incmig__bitmap_init(&last, m->npages);
    if (rc)
        goto out;
    take_dirty(m, &last);
    incmig__bitmap_merge(&set, &last);
    incmig__bitmap_dispose(&last);
    rc = send_pages(m, fd, &set, &sent);
    if (rc)
        goto out;
    uint8_t end[24];
    pthread_mutex_lock(&m->lock);
    uint32_t crc = incmig__crc32c(0, m->pages, m->npages * INCMIG_SIMSTATE_PAGE);
    uint64_t cpu = m->cpu;
    pthread_mutex_unlock(&m->lock);
    if (corrupt) {
        /* Fault injection for tests: one page again, one bit flipped. */
        uint8_t rec[12 + INCMIG_SIMSTATE_PAGE];
        put32(rec, T_PAGE);
        put64(rec + 4, m->npages / 2);
        memcpy(rec + 12, m->pages + m->npages / 2 * INCMIG_SIMSTATE_PAGE,
               INCMIG_SIMSTATE_PAGE);
        rec[12 + 100] ^= 0x10;
        rc = incmig__write_state(fd, rec, sizeof rec);
        if (rc)
            goto out;
        sent++;
        ERR("state stream deliberately corrupted (--fault corrupt-state)");
    }
    put32(end, T_END);
    put64(end + 4, cpu);
    put32(end + 12, crc);
    put64(end + 16, sent);
    rc = incmig__write_state(fd, end, sizeof end);
    if (!rc)
        INFO("state stream: %" PRIu64 " pages of %" PRIu64 " sent, CPU state %"
             PRIu64, sent, m->npages, cpu);
out:
    incmig__bitmap_dispose(&set);
    return rc;
}

/* ---- restore ------------------------------------------------------------- */

/* The stream through a buffer: a page record is three reads, and the
 * restore must keep up with the stream (its lag is downtime). */
struct rdbuf {
    int fd;
    size_t pos, len;
    uint64_t *bytes;
    uint8_t buf[65536];
};

/* Read exactly len bytes; 1 at a clean EOF before the first byte. */
static int rd(struct rdbuf *b, void *dst, size_t len)
{
    uint8_t *p = dst;
    size_t got = 0;
    while (got < len) {
        if (b->pos == b->len) {
            ssize_t n = read(b->fd, b->buf, sizeof b->buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                LOGE("reading the state stream");
                return INCMIG_EIO;
            }
            if (n == 0)
                return got == 0 ? 1 : INCMIG_EPROTO;
            b->pos = 0;
            b->len = (size_t)n;
        }
        size_t k = b->len - b->pos < len - got ? b->len - b->pos : len - got;
        memcpy(p + got, b->buf + b->pos, k);
        b->pos += k;
        got += k;
    }
    *b->bytes += len;
    return 0;
}

int incmig__simstate_restore(int fd, struct incmig__simstate_info *info)
{
    uint8_t hdr[24], *mem = NULL;
    uint64_t npages, pages = 0;
    struct rdbuf *b = malloc(sizeof *b);
    int rc;

    memset(info, 0, sizeof *info);
    if (!b)
        return INCMIG_ENOMEM;
    b->fd = fd;
    b->pos = b->len = 0;
    b->bytes = &info->bytes;
    rc = rd(b, hdr, sizeof hdr);
    if (rc) {
        ERR("state stream: %s", rc == 1 ? "empty" : "truncated header");
        rc = rc == 1 ? INCMIG_EPROTO : rc;
        goto out;
    }
    npages = get64(hdr + 16);
    if (memcmp(hdr, MAGIC, 8) || get32(hdr + 8) != STATE_VERSION ||
        get32(hdr + 12) != INCMIG_SIMSTATE_PAGE || npages == 0 ||
        npages > INCMIG_SIMSTATE_MAX_PAGES) {
        ERR("state stream: bad header (not a simulated domain's state, or "
            "%" PRIu64 " pages out of range)", npages);
        rc = INCMIG_EPROTO;
        goto out;
    }
    mem = calloc(npages, INCMIG_SIMSTATE_PAGE);
    if (!mem) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    for (;;) {
        uint8_t th[4], ix[8];
        rc = rd(b, th, 4);
        if (rc == 1) {
            ERR("state stream: ended without END");
            rc = INCMIG_EPROTO;
        }
        if (rc)
            goto out;
        uint32_t type = get32(th);
        if (type == T_PAGE) {
            rc = rd(b, ix, 8);
            uint64_t pg = rc ? 0 : get64(ix);
            if (!rc && pg >= npages) {
                ERR("state stream: page %" PRIu64 " beyond %" PRIu64, pg, npages);
                rc = INCMIG_EPROTO;
            }
            if (!rc)
                rc = rd(b, mem + pg * INCMIG_SIMSTATE_PAGE,
                        INCMIG_SIMSTATE_PAGE);
            if (rc)
                goto truncated;
            pages++;
            continue;
        }
        if (type != T_END) {
            ERR("state stream: unknown record type %u", type);
            rc = INCMIG_EPROTO;
            goto out;
        }
        uint8_t end[20], extra;
        rc = rd(b, end, sizeof end);
        if (rc)
            goto truncated;
        info->cpu = get64(end);
        info->crc = get32(end + 8);
        if (get64(end + 12) != pages) {
            ERR("state stream: END says %" PRIu64 " pages, %" PRIu64
                " received", get64(end + 12), pages);
            rc = INCMIG_EPROTO;
            goto out;
        }
        /* The checksum first: it is done while the end of the stream
         * (its EOF) is still on its way. */
        uint32_t crc = incmig__crc32c(0, mem, npages * INCMIG_SIMSTATE_PAGE);
        if (crc != info->crc) {
            ERR("state stream corrupt: the memory received has checksum "
                "%08x, the source's was %08x", crc, info->crc);
            rc = INCMIG_EPROTO;
            goto out;
        }
        rc = rd(b, &extra, 1);
        if (rc != 1) {
            ERR("state stream: data after END");
            rc = INCMIG_EPROTO;
            goto out;
        }
        break;
    }
    info->npages = npages;
    info->pages = pages;
    rc = 0;
    goto out;
truncated:
    if (rc == 1 || rc == INCMIG_EPROTO) {
        if (rc == 1)
            ERR("state stream: truncated record");
        rc = INCMIG_EPROTO;
    }
out:
    free(mem);
    free(b);
    return rc;
}
