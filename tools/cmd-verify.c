/* cmd-verify.c: `xl-incmig verify`, checks an image against a guest journal.
 *
 * The simulated guest (cmd-guest.c) leaves a journal naming the final
 * version of every block it wrote.  After a migration the destination
 * image must hold exactly those stamps (stamp.h); with --original, every
 * block the guest never wrote must still be byte-identical to the source
 * image as it was before the guest ran.  A lost write shows up as an older
 * version, a misplaced one as another block's stamp.
 *
 * Entry point: cmd_verify().
 *
 * Design notes:
 * - The journal is parsed completely, and distrusted, before the image is
 *   read: header fields in order, block lines strictly increasing and
 *   inside the disk, and an `end N` line that proves the file is whole.
 * - A block with a pending version (a write the guest issued but never saw
 *   acknowledged) may hold either version.
 * - A "checkpoint" journal (the guest was killed; see cmd-guest.c) lags
 *   the image by up to a second of writes: a block may then hold a newer
 *   version than listed, and an unlisted block may hold a stamp of itself.
 *   An older version is still a mismatch.
 * - The image is read in chunks of at most CHUNK bytes, whatever its size.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "incmig.h"
#include "stamp.h"
#include "xl-incmig.h"

#define CHUNK (4u << 20)
#define MAX_LISTED 20
#define MAX_LINE 256
/* Same bound as the guest: the journal never lists more blocks. */
#define MAX_ENTRIES (UINT64_C(1) << 27)
/* Largest disk incmig handles (INCMIG_DISK_MAX in the library): 16 TiB. */
#define DISK_MAX_BYTES (UINT64_C(1) << 44)

struct entry {
    uint64_t block;
    uint32_t version, pending;
};

struct journal {
    uint64_t seed, blocks;
    uint32_t bs;
    bool final;
    struct entry *e;
    uint64_t n, cap;
};

/* Parse one "KEY VALUE" header line into *v. */
static int header_u64(FILE *f, const char *path, unsigned *lineno,
                      const char *key, uint64_t *v)
{
    char line[MAX_LINE], k[32];
    unsigned long long x;
    int n = 0;

    ++*lineno;
    if (!fgets(line, sizeof line, f) ||
        sscanf(line, "%31s %llu%n", k, &x, &n) != 2 || strcmp(k, key) != 0 ||
        (line[n] != '\n' && line[n] != '\0')) {
        fprintf(stderr, "verify: %s:%u: expected \"%s NUMBER\"; is this a "
                "journal written by xl-incmig guest?\n", path, *lineno, key);
        return -1;
    }
    *v = x;
    return 0;
}

static int load_journal(const char *path, struct journal *j)
{
    char line[MAX_LINE], word[32];
    unsigned lineno = 1;
    uint64_t v;
    int rc = -1;
    FILE *f = fopen(path, "r");

    if (!f) {
        fprintf(stderr, "verify: cannot open the journal %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    if (!fgets(line, sizeof line, f) ||
        strcmp(line, "incmig-guest-journal 1\n") != 0) {
        fprintf(stderr, "verify: %s is not a guest journal (version 1)\n",
                path);
        goto out;
    }
    if (header_u64(f, path, &lineno, "seed", &j->seed) < 0 ||
        header_u64(f, path, &lineno, "block-size", &v) < 0)
        goto out;
    if (v < 512 || v > (1u << 20) || (v & (v - 1))) {
        fprintf(stderr, "verify: %s: block size %" PRIu64 " is not a power "
                "of two from 512 to 1M\n", path, v);
        goto out;
    }
    j->bs = (uint32_t)v;
    if (header_u64(f, path, &lineno, "blocks", &j->blocks) < 0)
        goto out;
    if (j->blocks == 0 || j->blocks > DISK_MAX_BYTES / j->bs) {
        fprintf(stderr, "verify: %s: implausible disk size of %" PRIu64
                " blocks\n", path, j->blocks);
        goto out;
    }
    lineno++;
    if (!fgets(line, sizeof line, f) ||
        (strcmp(line, "state final\n") != 0 &&
         strcmp(line, "state checkpoint\n") != 0)) {
        fprintf(stderr, "verify: %s:%u: expected \"state final\" or \"state "
                "checkpoint\"\n", path, lineno);
        goto out;
    }
    j->final = strcmp(line, "state final\n") == 0;

    for (;;) {
        unsigned long long b, ver, pend = 0;
        int n = 0, got;

        lineno++;
        if (!fgets(line, sizeof line, f)) {
            fprintf(stderr, "verify: %s is truncated (no \"end\" line): the "
                    "guest did not finish writing it\n", path);
            goto out;
        }
        if (sscanf(line, "%31s", word) == 1 && strcmp(word, "end") == 0) {
            if (sscanf(line, "end %llu%n", &b, &n) != 1 || line[n] != '\n' ||
                b != j->n) {
                fprintf(stderr, "verify: %s:%u: the end line does not match "
                        "the %" PRIu64 " block lines read\n", path, lineno,
                        j->n);
                goto out;
            }
            break;
        }
        got = sscanf(line, "%llu %llu %llu%n", &b, &ver, &pend, &n);
        if (got == 2) {
            pend = 0;
            n = 0;
            sscanf(line, "%llu %llu%n", &b, &ver, &n);
        }
        if (got < 2 || line[n] != '\n' || b >= j->blocks ||
            ver > UINT32_MAX || pend > UINT32_MAX ||
            (ver == 0 && pend == 0) || (pend && pend <= ver) ||
            (j->n && b <= j->e[j->n - 1].block) || j->n >= MAX_ENTRIES) {
            fprintf(stderr, "verify: %s:%u: corrupt block line (want "
                    "\"BLOCK VERSION [PENDING]\", blocks increasing and "
                    "below %" PRIu64 ")\n", path, lineno, j->blocks);
            goto out;
        }
        if (j->n == j->cap) {
            uint64_t cap = j->cap ? j->cap * 2 : 1024;
            struct entry *e = realloc(j->e, cap * sizeof *e);
            if (!e) {
                fprintf(stderr, "verify: out of memory reading %s\n", path);
                goto out;
            }
            j->e = e;
            j->cap = cap;
        }
        j->e[j->n++] = (struct entry){ b, (uint32_t)ver, (uint32_t)pend };
    }
    if (fgets(line, sizeof line, f)) {
        fprintf(stderr, "verify: %s:%u: data after the end line\n", path,
                lineno + 1);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

static int open_sized(const char *path, const char *what, uint64_t *size_r)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        fprintf(stderr, "verify: cannot open the %s %s: %s\n", what, path,
                strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        fprintf(stderr, "verify: %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, size_r) < 0) {
            fprintf(stderr, "verify: %s: cannot read the device size: %s\n",
                    path, strerror(errno));
            close(fd);
            return -1;
        }
    } else if (S_ISREG(st.st_mode)) {
        *size_r = (uint64_t)st.st_size;
    } else {
        fprintf(stderr, "verify: %s is neither a file nor a block device\n",
                path);
        close(fd);
        return -1;
    }
    return fd;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off,
                     const char *path)
{
    size_t done = 0;

    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done,
                          (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "verify: reading %s at offset %" PRIu64 " failed: "
                    "%s\n", path, off + done, r < 0 ? strerror(errno)
                                                    : "unexpected end of file");
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

/* What a block holds, for a mismatch line. */
static void describe(const unsigned char *p, const unsigned char *orig,
                     const struct journal *j, uint64_t b, char *out,
                     size_t len)
{
    uint64_t fb, fv;

    if (stamp_identify(p, j->bs, j->seed, &fb, &fv)) {
        if (fb == b)
            snprintf(out, len, "version %" PRIu64, fv);
        else
            snprintf(out, len, "block %" PRIu64 " version %" PRIu64
                     " (misplaced)", fb, fv);
    } else if (orig && memcmp(p, orig, j->bs) == 0) {
        snprintf(out, len, "original contents");
    } else if (stamp_is_zero(p, j->bs)) {
        snprintf(out, len, "zeroes");
    } else {
        snprintf(out, len, "foreign data");
    }
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: xl-incmig verify --journal FILE --image IMAGE [--original ORIG]\n"
"  checks that IMAGE holds the final version of every block the guest's\n"
"  journal lists and, with --original, that every other block is\n"
"  identical to ORIG.  Exit status 0 when nothing mismatches.\n");
}

int cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "journal", required_argument, NULL, 'j' },
        { "image", required_argument, NULL, 'i' },
        { "original", required_argument, NULL, 'o' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *jpath = NULL, *image = NULL, *original = NULL;
    struct journal j = { 0 };
    int fd = -1, ofd = -1, ret = 2, c;
    unsigned char *buf = NULL, *obuf = NULL;
    uint64_t size = 0, osize = 0, mismatches = 0, ei = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': jpath = optarg; break;
        case 'i': image = optarg; break;
        case 'o': original = optarg; break;
        case 'h': usage(stdout); ret = 0; goto out;
        default:
            fprintf(stderr, "xl-incmig verify: unknown option; see "
                    "xl-incmig verify --help\n");
            goto out;
        }
    }
    if (optind != argc || !jpath || !image) {
        fprintf(stderr, "xl-incmig verify: %s\n", optind != argc
                ? "unexpected argument" : "--journal and --image are required");
        goto out;
    }

    ret = 1;
    if (load_journal(jpath, &j) < 0)
        goto out;
    fd = open_sized(image, "image", &size);
    if (fd < 0)
        goto out;
    if (size / j.bs != j.blocks) {
        fprintf(stderr, "verify: %s holds %" PRIu64 " blocks of %" PRIu32
                " bytes but the journal describes a disk of %" PRIu64
                "; is this the guest's disk?\n", image, size / j.bs, j.bs,
                j.blocks);
        goto out;
    }
    if (original) {
        ofd = open_sized(original, "original image", &osize);
        if (ofd < 0)
            goto out;
        if (osize != size) {
            fprintf(stderr, "verify: %s is %" PRIu64 " bytes but %s is %"
                    PRIu64 "; --original must be the disk as it was before "
                    "the guest ran\n", original, osize, image, size);
            goto out;
        }
    }
    if (!j.final)
        fprintf(stderr, "verify: %s is a checkpoint (the guest did not exit "
                "cleanly): newer versions than listed are accepted\n", jpath);

    buf = malloc(CHUNK);
    obuf = original ? malloc(CHUNK) : NULL;
    if (!buf || (original && !obuf)) {
        fprintf(stderr, "verify: out of memory\n");
        goto out;
    }
    const uint64_t per_chunk = CHUNK / j.bs;
    for (uint64_t first = 0; first < j.blocks; first += per_chunk) {
        uint64_t n = j.blocks - first < per_chunk ? j.blocks - first
                                                  : per_chunk;
        if (read_full(fd, buf, n * j.bs, first * j.bs, image) < 0 ||
            (ofd >= 0 &&
             read_full(ofd, obuf, n * j.bs, first * j.bs, original) < 0))
            goto out;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t b = first + k, fb, fv;
            const unsigned char *p = buf + k * j.bs;
            const unsigned char *o = obuf ? obuf + k * j.bs : NULL;
            bool ok, stamped = stamp_identify(p, j.bs, j.seed, &fb, &fv) &&
                               fb == b;
            char expected[64], found[96];
            const struct entry *e = NULL;

            if (ei < j.n && j.e[ei].block == b)
                e = &j.e[ei++];
            if (e) {
                uint32_t lo = e->version, hi = e->pending;
                /* Version 0 with a pending write: the first write may
                 * not have reached the disk. */
                ok = (stamped && fv == lo) || (stamped && hi && fv == hi) ||
                     (!j.final && stamped && fv >= lo) ||
                     (lo == 0 && !stamped && (!o || memcmp(p, o, j.bs) == 0));
                if (hi)
                    snprintf(expected, sizeof expected, "version %" PRIu32
                             " or %" PRIu32, lo, hi);
                else
                    snprintf(expected, sizeof expected, "version %" PRIu32,
                             lo);
            } else {
                /* Never written: the original bytes; without them, at
                 * least no write of this guest the journal missed. */
                ok = o ? memcmp(p, o, j.bs) == 0 || (!j.final && stamped)
                       : !stamped || !j.final;
                snprintf(expected, sizeof expected, o ? "original contents"
                         : "no stamp (never written)");
            }
            if (ok)
                continue;
            if (++mismatches <= MAX_LISTED) {
                describe(p, o, &j, b, found, sizeof found);
                printf("block %" PRIu64 ": expected %s, found %s\n", b,
                       expected, found);
            }
        }
    }
    if (mismatches > MAX_LISTED)
        printf("(%" PRIu64 " more mismatches not listed)\n",
               mismatches - MAX_LISTED);
    printf("%" PRIu64 " blocks verified, %" PRIu64 " mismatches\n", j.blocks,
           mismatches);
    ret = mismatches ? 1 : 0;
out:
    if (fd >= 0)
        close(fd);
    if (ofd >= 0)
        close(ofd);
    free(buf);
    free(obuf);
    free(j.e);
    return ret;
}
