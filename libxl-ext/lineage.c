/* lineage.c: what a copy of a disk can prove about its content (spec:
 * docs/specs/incmig-stream.md, "Incremental migration").
 *
 * Entry points: incmig__lineage_load (read and prove a volume's claim),
 * incmig__lineage_open (mark it held by a tracker, before the first write),
 * incmig__lineage_close (the tracker's clean close: bitmap, then lineage),
 * incmig__lineage_remove, incmig__gen_* (generations); incmig_lineage_info
 * (public: `xl-incmig lineage`).
 *
 * Two files beside a volume PATH, each written atomically (temporary file
 * in the same directory, fsync, rename, fsync of the directory):
 *
 *   PATH.incmig         72 octets: magic, version, flags (OPEN), gen,
 *                       size, block size, inode and mtime of the volume
 *                       when it was closed, CRC-32C
 *   PATH.incmig-bitmap  magic, version, gen, nbits, encoded bitmap (the
 *                       blocks written since gen), CRC-32C
 *
 * A claim holds when the lineage is intact, not OPEN, and the volume's
 * size, inode and mtime are those recorded; it has a bitmap when the
 * bitmap file is intact, of the same gen and of the right length.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "be.h"
#include "incmig-internal.h"

#define LIN_MAGIC "INCMIGLN"
#define BM_MAGIC "INCMIGBM"
#define LIN_LEN 72
#define BM_HDR 44
#define BM_DATA_MAX (INCMIG_REC_MAX - 48)
#define FLAG_OPEN 1u

/* ---- generations ---------------------------------------------------------- */

bool incmig__gen_zero(const uint8_t gen[16])
{
    for (int i = 0; i < 16; i++)
        if (gen[i])
            return false;
    return true;
}

void incmig__gen_random(uint8_t gen[16])
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, gen, 16) == 16;
    if (fd >= 0)
        close(fd);
    if (!ok) {   /* never all zero, never twice the same in a process */
        static uint64_t n;
        double t = incmig__now();
        uint64_t seed[3] = { (uint64_t)getpid(), ++n, 0 };
        memcpy(&seed[2], &t, sizeof t);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits(seed, sizeof seed));
        memcpy(gen, c.digest, 16);
    }
    gen[0] |= 1;
}

void incmig__gen_derive(const uint8_t mig_id[16], uint32_t index,
                        uint8_t gen[16])
{
    uint8_t in[20];
    XXH128_canonical_t c;

    memcpy(in, mig_id, 16);
    put32(in + 16, index);
    XXH128_canonicalFromHash(&c, XXH3_128bits(in, sizeof in));
    memcpy(gen, c.digest, 16);
}

const char *incmig__gen_hex(const uint8_t gen[16], char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", gen[i]);
    return out;
}

int incmig__gen_parse(const char *hex, uint8_t gen[16])
{
    if (strlen(hex) != 32)
        return INCMIG_EINVAL;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return INCMIG_EINVAL;
        gen[i] = (uint8_t)v;
    }
    return 0;
}

/* ---- files ---------------------------------------------------------------- */

static void meta_path(char *out, size_t cap, const char *path, bool bitmap)
{
    snprintf(out, cap, "%s%s", path, bitmap ? ".incmig-bitmap" : ".incmig");
}

/* Write buf to `dst` atomically: temporary, fsync, rename, fsync dir. */
static int write_atomic(const char *dst, const uint8_t *buf, size_t len)
{
    char tmp[4200], dir[4200];
    int fd, rc = INCMIG_EIO;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", dst) >= sizeof tmp)
        return INCMIG_EINVAL;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        ERR("cannot write %s: %s", tmp, strerror(errno));
        return INCMIG_EIO;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = write(fd, buf + done, len - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            ERR("cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
        done += (size_t)r;
    }
    if (fsync(fd) < 0 || rename(tmp, dst) < 0) {
        ERR("cannot save %s: %s", dst, strerror(errno));
        goto out;
    }
    snprintf(dir, sizeof dir, "%s", dst);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
out:
    close(fd);
    if (rc)
        unlink(tmp);
    return rc;
}

/* Read a whole small file (at most cap bytes); -1 if absent. */
static ssize_t read_small(const char *p, uint8_t *buf, size_t cap)
{
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < cap) {
        ssize_t r = read(fd, buf + done, cap - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    close(fd);
    return (ssize_t)done;
}

static int save_lineage(const char *path, int fd, const uint8_t gen[16],
                        uint32_t bs, uint32_t flags)
{
    uint8_t b[LIN_LEN];
    struct stat sb;
    char p[4200];

    if (fstat(fd, &sb) < 0) {
        ERR("cannot stat %s: %s", path, strerror(errno));
        return INCMIG_EIO;
    }
    memset(b, 0, sizeof b);
    memcpy(b, LIN_MAGIC, 8);
    put32(b + 8, 1);
    put32(b + 12, flags);
    memcpy(b + 16, gen, 16);
    put64(b + 32, (uint64_t)sb.st_size);
    put32(b + 40, bs);
    put64(b + 44, (uint64_t)sb.st_ino);
    put64(b + 52, (uint64_t)sb.st_mtim.tv_sec);
    put32(b + 60, (uint32_t)sb.st_mtim.tv_nsec);
    put32(b + 64, 0);
    put32(b + 68, incmig__crc32c(0, b, 68));
    meta_path(p, sizeof p, path, false);
    return write_atomic(p, b, sizeof b);
}

int incmig__lineage_open(const char *path, int fd, const uint8_t gen[16],
                         uint32_t bs)
{
    return save_lineage(path, fd, gen, bs, FLAG_OPEN);
}

int incmig__lineage_close(const char *path, int fd, const uint8_t gen[16],
                          uint32_t bs, const struct incmig__bitmap *bm)
{
    uint8_t *enc = NULL, *buf = NULL;
    size_t len = 0;
    char p[4200];
    int rc;

    if (fsync(fd) < 0) {
        ERR("cannot flush %s: %s (its lineage stays void)", path,
            strerror(errno));
        return INCMIG_EIO;
    }
    meta_path(p, sizeof p, path, true);
    rc = bm ? incmig__bitmap_encode(bm, 0, bm->nbits, &enc, &len) : 0;
    if (!rc && bm && len <= BM_DATA_MAX && (buf = malloc(BM_HDR + len + 4))) {
        memcpy(buf, BM_MAGIC, 8);
        put32(buf + 8, 1);
        memcpy(buf + 12, gen, 16);
        put64(buf + 28, bm->nbits);
        put32(buf + 36, (uint32_t)len);
        put32(buf + 40, 0);
        memcpy(buf + BM_HDR, enc, len);
        put32(buf + BM_HDR + len, incmig__crc32c(0, buf, BM_HDR + len));
        rc = write_atomic(p, buf, BM_HDR + len + 4);
    } else {
        unlink(p);   /* no bitmap: the claim will say so */
        rc = 0;
    }
    free(enc);
    free(buf);
    if (!rc)
        rc = save_lineage(path, fd, gen, bs, 0);
    return rc;
}

void incmig__lineage_remove(const char *path)
{
    char p[4200];
    meta_path(p, sizeof p, path, false);
    unlink(p);
    meta_path(p, sizeof p, path, true);
    unlink(p);
}

void incmig__lineage_dispose(struct incmig__lineage *l)
{
    incmig__bitmap_dispose(&l->bm);
    memset(l, 0, sizeof *l);
}

/* The reason a claim is void or its bitmap missing (long paths cut). */
static void say(struct incmig__lineage *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(struct incmig__lineage *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->why, sizeof l->why, fmt, ap);
    va_end(ap);
}

static void load_bitmap(const char *path, uint64_t nbits,
                        struct incmig__lineage *l)
{
    char p[4200];
    size_t cap = BM_HDR + BM_DATA_MAX + 4;
    uint8_t *buf = malloc(cap);
    ssize_t n;

    meta_path(p, sizeof p, path, true);
    n = buf ? read_small(p, buf, cap) : -1;
    if (n < 0) {
        say(l, "no bitmap since the generation "
                 "(%s is missing)", p);
        goto out;
    }
    uint32_t len = n >= BM_HDR ? get32(buf + 36) : 0;
    if (n < BM_HDR + 4 || memcmp(buf, BM_MAGIC, 8) || get32(buf + 8) != 1 ||
        get32(buf + 40) || len > BM_DATA_MAX || (size_t)n != BM_HDR + len + 4 ||
        get32(buf + BM_HDR + len) != incmig__crc32c(0, buf, BM_HDR + len)) {
        say(l, "bitmap %s is corrupt", p);
        goto out;
    }
    if (memcmp(buf + 12, l->gen, 16) || get64(buf + 28) != nbits) {
        say(l, "bitmap %s is of another generation "
                 "or block size", p);
        goto out;
    }
    if (incmig__bitmap_init(&l->bm, nbits) ||
        incmig__bitmap_decode(&l->bm, 0, nbits, buf + BM_HDR, len)) {
        incmig__bitmap_dispose(&l->bm);
        say(l, "bitmap %s does not decode", p);
        goto out;
    }
    l->has_bitmap = true;
out:
    free(buf);
}

int incmig__lineage_load(const char *path, int fd, uint32_t bs,
                         struct incmig__lineage *l)
{
    uint8_t b[LIN_LEN + 1];
    struct stat sb;
    char p[4200];
    ssize_t n;

    memset(l, 0, sizeof *l);
    meta_path(p, sizeof p, path, false);
    n = read_small(p, b, sizeof b);
    if (n < 0) {
        say(l, "no lineage metadata (%s)", p);
        return 0;
    }
    l->found = true;
    if (n != LIN_LEN || memcmp(b, LIN_MAGIC, 8) || get32(b + 8) != 1 ||
        get32(b + 68) != incmig__crc32c(0, b, 68) || get32(b + 64) ||
        (get32(b + 12) & ~FLAG_OPEN)) {
        say(l, "lineage %s is corrupt", p);
        return 0;
    }
    memcpy(l->gen, b + 16, 16);
    if (get32(b + 12) & FLAG_OPEN) {
        l->open = true;
        say(l, "the tracker that held %s did not "
                 "close it (a crash?): writes may be untracked (a Xen "
                 "domain running on it holds it so: see its VBD's "
                 "incmig-track-gen)", path);
        return 0;
    }
    if ((fd >= 0 ? fstat(fd, &sb) : stat(path, &sb)) < 0) {
        say(l, "cannot stat %s: %s", path,
                 strerror(errno));
        return 0;
    }
    if (get64(b + 32) != (uint64_t)sb.st_size ||
        get64(b + 44) != (uint64_t)sb.st_ino ||
        get64(b + 52) != (uint64_t)sb.st_mtim.tv_sec ||
        get32(b + 60) != (uint32_t)sb.st_mtim.tv_nsec) {
        say(l, "%s changed after its lineage was "
                 "written (modified while nothing tracked it)", path);
        return 0;
    }
    l->valid = true;
    l->size = (uint64_t)sb.st_size;
    if (get32(b + 40) == bs && bs)
        load_bitmap(path, ((uint64_t)sb.st_size + bs - 1) / bs, l);
    else
        say(l, "its bitmap counts blocks of %u "
                 "bytes, not %u", get32(b + 40), bs);
    return 0;
}

int incmig_lineage_info(const char *image, uint32_t block_size,
                        struct incmig_lineage_info *out)
{
    struct incmig__lineage l;
    struct stat sb;
    uint32_t bs = block_size ? block_size : INCMIG_BS_DEFAULT;
    int rc;

    memset(out, 0, sizeof *out);
    if (!image || !incmig__block_size_valid(bs)) {
        ERR("an image and a block size from 4K to 1M are needed");
        return INCMIG_EINVAL;
    }
    if (stat(image, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        ERR("%s is not a regular file", image);
        return INCMIG_EINVAL;
    }
    rc = incmig__lineage_load(image, -1, bs, &l);
    if (rc)
        return rc;
    out->found = l.found;
    out->valid = l.valid;
    out->has_bitmap = l.has_bitmap;
    out->blocks = ((uint64_t)sb.st_size + bs - 1) / bs;
    if (l.found && !incmig__gen_zero(l.gen))
        incmig__gen_hex(l.gen, out->gen);
    if (l.has_bitmap)
        out->changed_blocks = incmig__bitmap_count(&l.bm);
    snprintf(out->why, sizeof out->why, "%s", l.valid && l.has_bitmap ? ""
                                                                       : l.why);
    incmig__lineage_dispose(&l);
    return 0;
}
