/* owed.c: the set of blocks still owed after GO, kept on disk so that a
 * PULL survives the death of either process (kill -9 at any instant).
 *
 * Entry points: incmig__owed_path/resolve (where a migration's file is),
 * start (a new migration's file, before GO), resume (a --resume: find,
 * open and check it), done (blocks written), sync (make those clears
 * durable), keep (the source: shrink to what the destination confirmed
 * it still lacks), count, close; incmig__kv_add/get/num for the file's
 * key/value text.
 *
 * File layout (host-local, never on the wire; spec: "Crash-safe PULL"):
 *
 *   offset  size          field
 *   0       8             magic "INCMIGST"
 *   8       4             version, 1 (big-endian, as every integer here)
 *   12      4             ndisks, 1..INCMIG_MAX_DISKS
 *   16      4             text_len, <= INCMIG_OWED_TEXT_MAX
 *   20      4             CRC-32C of bytes 0..87 (this field zero) + text
 *   24      8 * 8         nblocks of each disk (unused ones 0)
 *   88      text_len      key/value lines (incmig__kv_put)
 *   65535   1             'G' once the destination acted on GO, or the
 *                         source armed it (outside the checksum)
 *   65536   per disk      its bitmap, (nblocks + 63) / 64 * 8 bytes, bit b
 *                         in byte b / 8 (mask 1 << b % 8), disk after disk
 *
 * The header and text are written once, to a temporary file that is
 * fsynced and renamed into place (then the directory fsynced): a file
 * that exists is whole.  That costs tens of milliseconds on a loaded
 * disk, so a migration prepares its file before the downtime with every
 * block owed (prepare: a superset is always safe) and, in the downtime,
 * only arms it: the destination with the stop-and-copy bitmaps (words
 * written in place; the GO mark at GO), the source with the GO mark alone
 * (its words narrowed just after GO), without an fdatasync: what is
 * written is in the page cache, which outlives a killed process; `settle`
 * makes it durable against the loss of the host right after GO, outside
 * the downtime, and before a guest's flush is acknowledged).  Afterwards only bitmap words change, in place,
 * and only from 1 to 0: a word torn by a kill is a mix of its old and new
 * bits, a superset of what is owed, so it is never wrong, at worst a
 * block is fetched again.  A bit is cleared in the file only after the
 * block's data is durable: `done` clears it in memory (`mem`) once the
 * data is written; `sync` fdatasyncs the volumes first (destination),
 * then writes the words that changed and fdatasyncs the file (`file`
 * then equals mem).  The process using a file holds an exclusive flock
 * on it (released by the kernel however the process ends; the descriptor
 * is close-on-exec, so no program it runs inherits the lock), so a second
 * `--resume` of a migration still running is refused.  A process killed
 * a moment ago still holds the lock until it has exited, which takes a
 * while when one of its threads is in an fdatasync on a loaded disk:
 * open waits for it, up to LOCK_WAIT_S, and says so.  Thread safe:
 * `lock` guards mem, `sync_lock` makes syncs one at a time (and guards
 * file).
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
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "be.h"
#include "incmig-internal.h"

#define MAGIC "INCMIGST"
#define HDR 88
#define BITMAPS_OFF 65536u
#define SYNC_EVERY_S 0.2
#define LOCK_WAIT_S 10       /* a killed process's exit, on a loaded host */

static int sync_words(struct incmig__owed *o, bool durable);

static uint64_t nwords(uint64_t nbits)
{
    return (nbits + 63) / 64;
}
static void word_out(uint8_t *p, uint64_t w)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(w >> (8 * i));
}
static uint64_t word_in(const uint8_t *p)
{
    uint64_t w = 0;
    for (int i = 0; i < 8; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return w;
}

/* ---- key/value text ------------------------------------------------------ */

/* One line "key value\n"; the value is %XX-escaped where it holds '%',
 * white space or a control character, so any string survives. */
int incmig__kv_put(char *buf, size_t cap, size_t *len, const char *key,
                   const char *fmt, ...)
{
    char val[8192];
    va_list ap;
    size_t n = *len;

    va_start(ap, fmt);
    int k = vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof val)
        return INCMIG_EINVAL;
    k = snprintf(buf + n, cap - n, "%s ", key);
    if (k < 0 || (size_t)k >= cap - n)
        return INCMIG_EINVAL;
    n += (size_t)k;
    for (const unsigned char *p = (const unsigned char *)val; *p; p++) {
        bool esc = *p <= ' ' || *p == '%' || *p >= 0x7f;
        if (n + (esc ? 3 : 1) + 2 > cap)
            return INCMIG_EINVAL;
        n += esc ? (size_t)sprintf(buf + n, "%%%02X", *p) : 1;
        if (!esc)
            buf[n - 1] = (char)*p;
    }
    buf[n++] = '\n';
    buf[n] = '\0';
    *len = n;
    return 0;
}

/* The value of `key` (its first line), unescaped: 0, or INCMIG_EINVAL
 * when missing, malformed or longer than cap - 1. */
int incmig__kv_get(const char *text, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);

    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1
                                                       : l + strlen(l)) {
        if (strncmp(l, key, kl) || l[kl] != ' ')
            continue;
        size_t n = 0;
        for (const char *p = l + kl + 1; *p && *p != '\n'; p++) {
            unsigned v = (unsigned char)*p;
            if (*p == '%') {
                if (sscanf(p + 1, "%2X", &v) != 1 || !p[1] || !p[2])
                    return INCMIG_EINVAL;
                p += 2;
            }
            if (n + 1 >= cap || v == 0)
                return INCMIG_EINVAL;
            out[n++] = (char)v;
        }
        out[n] = '\0';
        return 0;
    }
    return INCMIG_EINVAL;
}

void incmig__kv_add(struct incmig__kv *kv, const char *key, const char *fmt,
                    ...)
{
    char val[8192];
    va_list ap;

    if (kv->rc)
        return;
    va_start(ap, fmt);
    int k = vsnprintf(val, sizeof val, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof val)
        kv->rc = INCMIG_EINVAL;
    else
        kv->rc = incmig__kv_put(kv->buf, sizeof kv->buf, &kv->len, key, "%s",
                                val);
}

int incmig__kv_num(const char *path, const char *text, const char *key,
                   uint64_t max, uint64_t *v_r)
{
    char v[32], *end;

    if (incmig__kv_get(text, key, v, sizeof v) || !v[0]) {
        ERR("state file %s: no %s", path, key);
        return INCMIG_EINVAL;
    }
    errno = 0;
    *v_r = strtoull(v, &end, 10);
    if (errno || *end || *v_r > max) {
        ERR("state file %s: bad %s '%s'", path, key, v);
        return INCMIG_EINVAL;
    }
    return 0;
}

/* ---- where the files are ------------------------------------------------- */

/* 0 and id, or INCMIG_EINVAL: hex is not 32 hexadecimal digits. */
static int hex_id(const char *hex, uint8_t id[16])
{
    if (strspn(hex, "0123456789abcdefABCDEF") != 32)
        return INCMIG_EINVAL;
    return incmig__gen_parse(hex, id);
}

int incmig__owed_path(const char *dir, const char *role, const uint8_t id[16],
                      char *buf, size_t cap)
{
    char rd[4096], hex[33];
    int rc;

    if (!dir) {
        rc = incmig__runtime_dir(rd, sizeof rd);
        if (rc)
            return rc;
        dir = rd;
    }
    if ((size_t)snprintf(buf, cap, "%s/%s-%s.state", dir, role,
                         incmig__gen_hex(id, hex)) >= cap) {
        ERR("state file path in %s too long", dir);
        return INCMIG_EINVAL;
    }
    return 0;
}

int incmig__owed_resolve(const char *dir, const char *role, const char *arg,
                         char *buf, size_t cap)
{
    uint8_t id[16];

    if (strchr(arg, '/')) {
        if ((size_t)snprintf(buf, cap, "%s", arg) >= cap)
            return INCMIG_EINVAL;
        return 0;
    }
    if (hex_id(arg, id)) {
        ERR("'%s' is neither a state file (a path) nor a migration id "
            "(32 hexadecimal digits)", arg);
        return INCMIG_EINVAL;
    }
    return incmig__owed_path(dir, role, id, buf, cap);
}

/* ---- the file ------------------------------------------------------------ */

static int init_common(struct incmig__owed *o, int nd, const uint64_t *nb)
{
    uint64_t off = BITMAPS_OFF;
    int rc = 0;

    o->nd = nd;
    for (int i = 0; i < nd && !rc; i++) {
        o->nblocks[i] = nb[i];
        o->off[i] = off;
        off += nwords(nb[i]) * 8;
        rc = incmig__bitmap_init(&o->file[i], nb[i]);
        if (!rc)
            rc = incmig__bitmap_init(&o->mem[i], nb[i]);
        if (!rc)
            rc = incmig__bitmap_init(&o->snap[i], nb[i]);
        /* touched now, not on its first sync: in the downtime */
        if (!rc)
            incmig__bitmap_set_range(&o->snap[i], 0, nb[i]);
    }
    if (!rc && !o->lock_ok) {
        pthread_mutex_init(&o->lock, NULL);
        pthread_mutex_init(&o->sync_lock, NULL);
        pthread_cond_init(&o->syncer_cond, NULL);
        o->lock_ok = true;
    }
    return rc;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return errno == ENOSPC || errno == EDQUOT ? INCMIG_ENOSPC
                                                      : INCMIG_EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return INCMIG_EIO;
    int r = fsync(fd);
    close(fd);
    return r < 0 ? INCMIG_EIO : 0;
}

/* The file with the bitmaps `sets`, or every block owed (sets NULL). */
static int create_file(struct incmig__owed *o, const char *path, int nd,
                       const uint64_t *nblocks,
                       const struct incmig__bitmap *sets, const char *text)
{
    uint8_t *hdr = NULL, buf[65536];
    char tmp[4096 + 8];
    size_t tl = strlen(text);
    uint64_t nb[INCMIG_MAX_DISKS] = {0};
    int fd = -1, rc;

    if (nd < 1 || nd > (int)INCMIG_MAX_DISKS || tl > INCMIG_OWED_TEXT_MAX ||
        strlen(path) >= sizeof o->path) {
        ERR("state file %s: bad arguments", path);
        return INCMIG_EINVAL;
    }
    for (int i = 0; i < nd; i++)
        nb[i] = sets ? sets[i].nbits : nblocks[i];
    rc = init_common(o, nd, nb);
    if (rc)
        goto out;
    hdr = calloc(1, BITMAPS_OFF);
    if (!hdr) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    memcpy(hdr, MAGIC, 8);
    put32(hdr + 8, 1);
    put32(hdr + 12, (uint32_t)nd);
    put32(hdr + 16, (uint32_t)tl);
    for (int i = 0; i < nd; i++)
        put64(hdr + 24 + 8 * i, nb[i]);
    memcpy(hdr + HDR, text, tl);
    put32(hdr + 20, incmig__crc32c(0, hdr, HDR + tl));

    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        LOGE("cannot create the state file %s", tmp);
        rc = INCMIG_EIO;
        goto out;
    }
    rc = write_all(fd, hdr, BITMAPS_OFF, 0);
    for (int i = 0; i < nd && !rc; i++) {
        if (sets) {
            incmig__bitmap_merge(&o->file[i], &sets[i]);
            incmig__bitmap_merge(&o->mem[i], &sets[i]);
        } else {
            incmig__bitmap_set_range(&o->file[i], 0, nb[i]);
            incmig__bitmap_set_range(&o->mem[i], 0, nb[i]);
        }
        for (uint64_t w = 0; w < nwords(nb[i]) && !rc;) {
            size_t k = 0;
            for (; w < nwords(nb[i]) && k < sizeof buf; w++, k += 8)
                word_out(buf + k, o->file[i].words[w]);
            rc = write_all(fd, buf, k, o->off[i] + (w * 8 - k));
        }
    }
    if (!rc && fsync(fd) < 0)
        rc = INCMIG_EIO;
    if (!rc && rename(tmp, path) < 0)
        rc = INCMIG_EIO;
    if (!rc)
        rc = fsync_dir(path);
    if (rc) {
        ERR("cannot write the state file %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    snprintf(o->path, sizeof o->path, "%s", path);
    o->fd = fd;
    fd = -1;
    o->t_sync = incmig__now();
out:
    if (fd >= 0)
        close(fd);
    free(hdr);
    return rc;
}

int incmig__owed_create(struct incmig__owed *o, const char *path, int nd,
                        const struct incmig__bitmap *sets, const char *text)
{
    return create_file(o, path, nd, NULL, sets, text);
}

int incmig__owed_prepare(struct incmig__owed *o, const char *path, int nd,
                         const uint64_t *nblocks, const char *text)
{
    return create_file(o, path, nd, nblocks, NULL, text);
}

int incmig__owed_arm(struct incmig__owed *o, const struct incmig__bitmap *sets,
                     bool mark)
{
    int rc = 0;

    for (int i = 0; i < o->nd && !rc && sets; i++)
        rc = incmig__owed_keep(o, i, &sets[i]);
    if (!rc && mark) {
        pthread_mutex_lock(&o->sync_lock);
        rc = write_all(o->fd, "G", 1, BITMAPS_OFF - 1);
        o->unsettled = true;
        pthread_mutex_unlock(&o->sync_lock);
    }
    if (!rc && sets)
        rc = sync_words(o, false);   /* incmig__owed_settle makes it durable */
    if (!rc && mark)
        o->go = true;
    return rc;
}

/* The exclusive lock on the file: at once, or once the process holding
 * it lets go, within wait_s seconds. */
static int lock_file(int fd, const char *path, int wait_s)
{
    const struct timespec tick = { 0, 50 * 1000 * 1000 };
    double t0 = incmig__now();
    bool said = false;

    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK) {
            LOGE("cannot lock the state file %s", path);
            return INCMIG_EIO;
        }
        if (incmig__stop_requested) {
            ERR("stopped while waiting for the state file %s", path);
            return INCMIG_ECANCEL;
        }
        if (incmig__now() - t0 >= wait_s) {
            ERR("the state file %s is in use by another process (a migrate "
                "or receiver still running this migration)", path);
            return INCMIG_EINVAL;
        }
        if (!said)
            INFO("the state file %s is locked by another process: waiting "
                 "up to %d s for it to let go (a process killed a moment ago "
                 "holds it until it has exited)", path, wait_s);
        said = true;
        nanosleep(&tick, NULL);
    }
    if (said)
        INFO("the state file %s is free after %.1f s", path,
             incmig__now() - t0);
    return 0;
}

int incmig__owed_open(struct incmig__owed *o, const char *path, int wait_s,
                      char **text_r)
{
    uint8_t *hdr = NULL;
    uint64_t nb[INCMIG_MAX_DISKS] = {0};
    char *text = NULL;
    int fd, rc = INCMIG_EINVAL;
    struct stat st;

    *text_r = NULL;
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        LOGE("cannot open the state file %s", path);
        return INCMIG_EINVAL;
    }
    rc = lock_file(fd, path, wait_s);
    if (rc)
        goto out;
    rc = INCMIG_EINVAL;
    hdr = malloc(BITMAPS_OFF);
    if (!hdr) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        pread(fd, hdr, BITMAPS_OFF, 0) != BITMAPS_OFF ||
        memcmp(hdr, MAGIC, 8)) {
        ERR("%s is not an incmig state file", path);
        goto out;
    }
    uint32_t nd = get32(hdr + 12), tl = get32(hdr + 16), crc = get32(hdr + 20);
    if (get32(hdr + 8) != 1 || nd < 1 || nd > INCMIG_MAX_DISKS ||
        tl > INCMIG_OWED_TEXT_MAX) {
        ERR("state file %s: unknown version or bad header", path);
        goto out;
    }
    put32(hdr + 20, 0);
    if (incmig__crc32c(0, hdr, HDR + tl) != crc) {
        ERR("state file %s: header checksum mismatch (damaged)", path);
        goto out;
    }
    uint64_t end = BITMAPS_OFF;
    for (uint32_t i = 0; i < nd; i++) {
        nb[i] = get64(hdr + 24 + 8 * i);
        if (nb[i] < 1 || nb[i] > INCMIG_DISK_MAX / INCMIG_BS_MIN) {
            ERR("state file %s: disk %u has %" PRIu64 " blocks", path, i,
                nb[i]);
            goto out;
        }
        end += nwords(nb[i]) * 8;
    }
    if ((uint64_t)st.st_size != end) {
        ERR("state file %s: %" PRIu64 " bytes, its header says %" PRIu64,
            path, (uint64_t)st.st_size, end);
        goto out;
    }
    text = malloc(tl + 1);
    if (!text) {
        rc = INCMIG_ENOMEM;
        goto out;
    }
    memcpy(text, hdr + HDR, tl);
    text[tl] = '\0';
    if (strlen(text) != tl) {
        ERR("state file %s: NUL in its text", path);
        goto out;
    }
    o->go = hdr[BITMAPS_OFF - 1] == 'G';
    rc = init_common(o, (int)nd, nb);
    for (uint32_t i = 0; i < nd && !rc; i++) {
        for (uint64_t w = 0; w < nwords(nb[i]) && !rc;) {
            size_t k = 0, want = (size_t)(nwords(nb[i]) - w) * 8;
            if (want > BITMAPS_OFF)
                want = BITMAPS_OFF;
            if (pread(fd, hdr, want, (off_t)(o->off[i] + w * 8)) !=
                (ssize_t)want) {
                ERR("state file %s: cannot read disk %u's bitmap", path, i);
                rc = INCMIG_EIO;
                break;
            }
            for (; k < want; k += 8, w++)
                o->file[i].words[w] = word_in(hdr + k);
        }
        if (!rc && nb[i] % 64 &&
            o->file[i].words[nwords(nb[i]) - 1] >> (nb[i] % 64)) {
            ERR("state file %s: disk %u's bitmap has bits past its end", path,
                i);
            rc = INCMIG_EINVAL;
        }
        if (!rc) {
            incmig__bitmap_resum(&o->file[i]);   /* words loaded directly */
            incmig__bitmap_merge(&o->mem[i], &o->file[i]);
        }
    }
    if (rc)
        goto out;
    snprintf(o->path, sizeof o->path, "%s", path);
    o->fd = fd;
    fd = -1;
    o->t_sync = incmig__now();
    *text_r = text;
    text = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(hdr);
    free(text);
    return rc;
}

/* ---- a migration's file: started, resumed ------------------------------- */

int incmig__owed_start(struct incmig__owed *o, const char *dir,
                       const char *role, const uint8_t id[16], int nd,
                       const uint64_t *nblocks, const struct incmig__kv *kv)
{
    char path[4096], hex[33];
    char *text = malloc(INCMIG_OWED_TEXT_MAX + 1);
    size_t n = 0;
    int rc;

    if (!text)
        return INCMIG_ENOMEM;
    rc = incmig__owed_path(dir, role, id, path, sizeof path);
    if (!rc)
        snprintf(o->path, sizeof o->path, "%s", path);
    if (!rc)
        rc = incmig__kv_put(text, INCMIG_OWED_TEXT_MAX + 1, &n, "role", "%s",
                            role);
    if (!rc)
        rc = incmig__kv_put(text, INCMIG_OWED_TEXT_MAX + 1, &n, "id", "%s",
                            incmig__gen_hex(id, hex));
    if (!rc && (kv->rc || n + kv->len > INCMIG_OWED_TEXT_MAX)) {
        ERR("state file %s: its text does not fit in %u bytes", path,
            INCMIG_OWED_TEXT_MAX);
        rc = INCMIG_EINVAL;
    }
    if (!rc) {
        memcpy(text + n, kv->buf, kv->len + 1);
        rc = incmig__owed_prepare(o, path, nd, nblocks, text);
    }
    free(text);
    return rc;
}

int incmig__owed_resume(struct incmig__owed *o, const char *dir,
                        const char *role, const char *arg, uint8_t id_r[16],
                        char **text_r)
{
    char path[4096], v[64];
    int rc;

    *text_r = NULL;
    rc = incmig__owed_resolve(dir, role, arg, path, sizeof path);
    if (!rc)
        rc = incmig__owed_open(o, path, LOCK_WAIT_S, text_r);
    if (rc)
        return rc;
    rc = INCMIG_EINVAL;
    if (incmig__kv_get(*text_r, "role", v, sizeof v) || strcmp(v, role))
        ERR("%s is not the state file of a %s", path,
            strcmp(role, "receive") ? role : "receiver");
    else if (!o->go)
        ERR("%s: this migration stopped before GO, the point of no return, "
            "so the guest stayed on the source; nothing to resume (remove "
            "the file)", path);
    else if (incmig__kv_get(*text_r, "id", v, sizeof v) || hex_id(v, id_r))
        ERR("state file %s: no migration id", path);
    else
        rc = 0;
    if (rc) {
        free(*text_r);
        *text_r = NULL;
    }
    return rc;
}

int incmig__owed_mark_go(struct incmig__owed *o)
{
    pthread_mutex_lock(&o->sync_lock);
    int rc = write_all(o->fd, "G", 1, BITMAPS_OFF - 1);
    if (!rc)
        o->unsettled = true;
    pthread_mutex_unlock(&o->sync_lock);
    if (rc)
        ERR("cannot mark GO in the state file %s", o->path);
    o->go = !rc;
    return rc;
}

int incmig__owed_settle(struct incmig__owed *o)
{
    int rc = 0;

    if (o->fd < 0)
        return 0;
    pthread_mutex_lock(&o->sync_lock);
    if (o->unsettled) {
        if (fdatasync(o->fd) < 0) {
            LOGE("cannot make the state file %s durable", o->path);
            rc = INCMIG_EIO;
        } else {
            o->unsettled = false;
        }
    }
    pthread_mutex_unlock(&o->sync_lock);
    return rc;
}

void incmig__owed_init(struct incmig__owed *o)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
}

bool incmig__owed_active(const struct incmig__owed *o)
{
    return o->fd >= 0;
}

void incmig__owed_done(struct incmig__owed *o, int disk, uint64_t first,
                       uint64_t n)
{
    if (o->fd < 0 || disk < 0 || disk >= o->nd || first >= o->nblocks[disk])
        return;
    if (n > o->nblocks[disk] - first)
        n = o->nblocks[disk] - first;
    pthread_mutex_lock(&o->lock);
    incmig__bitmap_clear_range(&o->mem[disk], first, n);
    o->unsynced += n;
    pthread_mutex_unlock(&o->lock);
}

/* Is any of the blocks still owed in the file (the durable state)? */
bool incmig__owed_durable(struct incmig__owed *o, int disk, uint64_t first,
                          uint64_t n)
{
    bool any = false;

    if (o->fd < 0 || disk < 0 || disk >= o->nd || first >= o->nblocks[disk])
        return false;
    pthread_mutex_lock(&o->sync_lock);
    uint64_t s = incmig__bitmap_next_set(&o->file[disk], first);
    any = s < o->nblocks[disk] && s - first < n;
    pthread_mutex_unlock(&o->sync_lock);
    return any;
}

/* Write the words of snap that differ from file, in runs (a few equal
 * words inside a run are written too: the same value again), and make
 * file equal snap.  Under sync_lock.  A little-endian host writes the
 * words as they are, a run in one pwrite. */
#define SYNC_GAP_WORDS 8
#define SYNC_RUN_WORDS 2048     /* the bounce buffer's, big-endian hosts */
static int write_run(struct incmig__owed *o, int i, uint64_t w, uint64_t n)
{
    const uint64_t *s = o->snap[i].words + w;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return write_all(o->fd, s, 8 * n, o->off[i] + w * 8);
#else
    uint8_t buf[8 * SYNC_RUN_WORDS];
    for (uint64_t k = 0; k < n; k += SYNC_RUN_WORDS) {
        uint64_t m = n - k < SYNC_RUN_WORDS ? n - k : SYNC_RUN_WORDS;
        for (uint64_t j = 0; j < m; j++)
            word_out(buf + 8 * j, s[k + j]);
        int rc = write_all(o->fd, buf, 8 * m, o->off[i] + (w + k) * 8);
        if (rc)
            return rc;
    }
    return 0;
#endif
}

static int write_changes(struct incmig__owed *o)
{
    for (int i = 0; i < o->nd; i++) {
        const uint64_t *s = o->snap[i].words;
        uint64_t *f = o->file[i].words, nw = nwords(o->nblocks[i]);
        for (uint64_t w = 0; w < nw;) {
            if (s[w] == f[w]) {
                w++;
                continue;
            }
            uint64_t last = w, end = w + 1;
            for (; end < nw && end - last <= SYNC_GAP_WORDS; end++)
                if (s[end] != f[end])
                    last = end;
            end = last + 1;
            int rc = write_run(o, i, w, end - w);
            if (rc)
                return rc;
            memcpy(f + w, s + w, (end - w) * sizeof *f);
            w = end;
        }
    }
    return 0;
}

/* Write the words mem cleared since the last time into the file; with
 * `durable`, flush the volumes before and fdatasync the file after (a
 * bit cleared durably only once its block's data is durable), else
 * leave both to incmig__owed_settle (the page cache already outlives a
 * killed process).  The words to write are snapshotted (snap) before
 * the flush: a bit mem loses after it waits for the next sync.  At 64
 * GiB (2 MiB of words, nearly all changing when a migration arms its
 * file in the downtime) this is a scan, a copy and one 2 MiB write. */
static int sync_words(struct incmig__owed *o, bool durable)
{
    uint64_t n = 0;
    int rc = 0;

    if (o->fd < 0)
        return 0;
    pthread_mutex_lock(&o->sync_lock);
    /* the words mem changed since the last sync (file only changes here,
     * under sync_lock): their blocks' data was written before this */
    pthread_mutex_lock(&o->lock);
    for (int i = 0; i < o->nd; i++) {
        const uint64_t *f = o->file[i].words, *m = o->mem[i].words;
        uint64_t *s = o->snap[i].words, nw = nwords(o->nblocks[i]);
        for (uint64_t w = 0; w < nw; w++) {
            s[w] = f[w] & m[w];
            n += s[w] != f[w];
        }
        /* snap is a subset of file: file's summary covers it */
        memcpy(o->snap[i].sum, o->file[i].sum,
               (nw + 63) / 64 * sizeof *o->snap[i].sum);
    }
    o->unsynced = 0;
    pthread_mutex_unlock(&o->lock);
    /* durable data first, then the clears */
    double t0 = incmig__now(), t1;
    for (int i = 0; i < o->nd && !rc && n && durable; i++)
        if (o->vol[i])
            rc = incmig__disk_flush(o->vol[i]);
    t1 = incmig__now();
    if (!rc && n)
        rc = write_changes(o);
    if (!rc && (n || o->unsettled) && durable) {
        if (fdatasync(o->fd) < 0)
            rc = INCMIG_EIO;
        else
            o->unsettled = false;
    } else if (!rc && n) {
        o->unsettled = true;
    }
    if (incmig__now() - t0 > 0.05)
        DBG("state file %s: %" PRIu64 " words synced in %.1f ms (the volumes' "
            "flush %.1f ms)", o->path, n, (incmig__now() - t0) * 1000,
            (t1 - t0) * 1000);
    if (rc)
        ERR("cannot update the state file %s: %s", o->path,
            incmig_strerror(rc));
    o->t_sync = incmig__now();
    pthread_mutex_unlock(&o->sync_lock);
    return rc;
}

int incmig__owed_sync(struct incmig__owed *o)
{
    return sync_words(o, true);
}

/* The receiver's periodic syncs, off its record loop: a sync flushes the
 * volumes, which on a disk being filled costs 50-150 ms, and blocks the
 * loop reading the source's answers to the guest's reads for as long. */
static void *syncer_main(void *opaque)
{
    struct incmig__owed *o = opaque;

    pthread_mutex_lock(&o->lock);
    while (!o->syncer_stop) {
        if (!o->unsynced || incmig__now() - o->t_sync < SYNC_EVERY_S) {
            struct timespec ts;
            incmig__deadline(&ts, CLOCK_REALTIME, 0.05);
            pthread_cond_timedwait(&o->syncer_cond, &o->lock, &ts);
            continue;
        }
        pthread_mutex_unlock(&o->lock);
        int rc = sync_words(o, true);
        pthread_mutex_lock(&o->lock);
        if (rc && !o->syncer_rc)
            o->syncer_rc = rc;
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

static void syncer_stop(struct incmig__owed *o)
{
    if (!o->syncer_on)
        return;
    pthread_mutex_lock(&o->lock);
    o->syncer_stop = true;
    pthread_cond_broadcast(&o->syncer_cond);
    pthread_mutex_unlock(&o->lock);
    pthread_join(o->syncer, NULL);
    o->syncer_on = false;
}

int incmig__owed_sync_maybe(struct incmig__owed *o)
{
    bool due, start;
    int rc;

    if (o->fd < 0)
        return 0;
    pthread_mutex_lock(&o->lock);
    rc = o->syncer_rc;
    due = o->unsynced && incmig__now() - o->t_sync >= SYNC_EVERY_S;
    start = !o->syncer_on && !rc;
    if (start) {
        o->syncer_stop = false;
        o->syncer_on = pthread_create(&o->syncer, NULL, syncer_main, o) == 0;
    }
    pthread_mutex_unlock(&o->lock);
    if (rc)
        return rc;
    /* no thread to be had: in line, as due */
    return !o->syncer_on && due ? incmig__owed_sync(o) : 0;
}

int incmig__owed_keep(struct incmig__owed *o, int disk,
                      const struct incmig__bitmap *still)
{
    if (o->fd < 0)
        return 0;
    if (disk < 0 || disk >= o->nd || still->nbits != o->nblocks[disk])
        return INCMIG_EINVAL;
    pthread_mutex_lock(&o->lock);
    for (uint64_t w = 0; w < nwords(o->nblocks[disk]); w++)
        o->mem[disk].words[w] &= still->words[w];
    o->unsynced++;
    pthread_mutex_unlock(&o->lock);
    return 0;
}

int incmig__owed_get(struct incmig__owed *o, int disk,
                     struct incmig__bitmap *out)
{
    if (!o->lock_ok || disk < 0 || disk >= o->nd ||
        out->nbits != o->nblocks[disk])
        return INCMIG_EINVAL;
    incmig__bitmap_clear_all(out);
    pthread_mutex_lock(&o->lock);
    int rc = incmig__bitmap_merge(out, &o->mem[disk]);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

uint64_t incmig__owed_count(struct incmig__owed *o)
{
    uint64_t n = 0;

    if (!o->lock_ok)
        return 0;
    pthread_mutex_lock(&o->lock);
    for (int i = 0; i < o->nd; i++)
        n += incmig__bitmap_count(&o->mem[i]);
    pthread_mutex_unlock(&o->lock);
    return n;
}

void incmig__owed_close(struct incmig__owed *o, bool remove)
{
    syncer_stop(o);
    if (o->fd >= 0) {
        close(o->fd);
        if (remove && unlink(o->path) == 0)
            fsync_dir(o->path);
    }
    o->fd = -1;
    for (int i = 0; i < (int)INCMIG_MAX_DISKS; i++) {
        incmig__bitmap_dispose(&o->file[i]);
        incmig__bitmap_dispose(&o->mem[i]);
        incmig__bitmap_dispose(&o->snap[i]);
    }
    if (o->lock_ok) {
        pthread_mutex_destroy(&o->lock);
        pthread_mutex_destroy(&o->sync_lock);
        pthread_cond_destroy(&o->syncer_cond);
        o->lock_ok = false;
    }
}
