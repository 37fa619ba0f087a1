/* volume.c: where the receiver puts each disk, and the table of targets.
 *
 * Entry points (incmig-internal.h, "target backend"): incmig__target_find
 * (the table), incmig__volume_check_opts (the receiver's options, before
 * any connection), incmig__volume_map (DISK records -> volumes, all or
 * nothing, touching nothing), incmig__volume_create/close (a volume file
 * this migration creates, and removes only if it is still that file),
 * incmig__target_fail.
 *
 * The source never names a destination path: a disk goes where the
 * receiver's own mapping says (--disk NAME=PATH, or --image for a one-disk
 * domain), or it is refused.  The rules, checked for every disk before
 * anything is created:
 *
 *   rule                                        refusal
 *   the disk's name is mapped                   "disk NAME is not mapped"
 *   the parent directory resolves (realpath)    "... cannot be resolved"
 *   ... inside a root (--root, when any given)  "... is outside the roots"
 *   nothing at the path (lstat: ENOENT)         "... already exists",
 *                                               "... is a symbolic link"
 *     unless it is a proven older copy of this
 *     disk (lineage.c: same generation as the
 *     DISK's lineage, claim valid, same size):
 *     then it is reused, never removed
 *   two disks never share a path                "... mapped twice"
 *   block size power of two 4K..1M, size range  "... block size ..."
 *
 * Two other kinds of mapping (PATH is then not a file):
 *
 *   --disk NAME=shared      the disk is on shared storage for this receiver:
 *                           a DISK record for it is refused ("... is on
 *                           shared storage here"); the Xen target accepts
 *                           it, not migrated, in the domain's configuration
 *   --disk NAME=lvm:VG/LV   a logical volume the Xen target creates in the
 *                           existing volume group VG (LV must not exist);
 *                           names checked here, existence by the target;
 *                           --root is for files and does not apply
 *
 * The mapped path is rebuilt as realpath(parent) + "/" + basename, so what
 * is created is the file checked; creation is O_CREAT|O_EXCL|O_NOFOLLOW,
 * which fails on anything that appeared there since (file or symlink).
 * A volume remembers its device and inode: remove unlinks the path only
 * while it still names that file, so a failure never deletes a file this
 * migration did not create.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "incmig-internal.h"
#ifdef HAVE_XEN
#include "xen/target.h"
#endif

/* ---- the table of targets ------------------------------------------------- */

static const struct incmig__target_kind targets[] = {
    { .name = "sim", .state = true, .state_required = false,
      .open = incmig__sim_target_open },
#ifdef HAVE_XEN
    { .name = "xen", .state = true, .state_required = true,
      .open = incmig__xen_target_open },   /* xen/target.c */
#endif
};

const struct incmig__target_kind *incmig__target_find(const char *name)
{
    if (!name)
        name = "sim";
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (!strcmp(targets[i].name, name))
            return &targets[i];
    ERR("unknown target '%s' (this build has: sim%s)", name,
        sizeof targets / sizeof targets[0] > 1 ? ", xen" : "");
    return NULL;
}

int incmig__target_fail(struct incmig__target *t, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    ERR("%s", t->msg);
    return rc;
}

/* ---- the receiver's options ----------------------------------------------- */

static bool uri_valid(const char *u)
{
    return u && (!strncmp(u, "unix:", 5) || !strncmp(u, "tcp:", 4)) &&
           strlen(u) < 4096;
}

static bool name_valid(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    return len >= 1 && len <= INCMIG_NAME_MAX;
}

static bool lvm_name_ok(const char *n, size_t len)
{
    if (len < 1 || len > 127 || n[0] == '-' ||
        (len == 1 && n[0] == '.') || (len == 2 && !strncmp(n, "..", 2)))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' ||
              c == '-'))
            return false;
    }
    return true;
}

int incmig__lvm_parse(const char *spec, char vg[128], char lv[128], char *msg,
                      size_t cap)
{
    const char *slash = strchr(spec, '/');

    if (!slash || strchr(slash + 1, '/') ||
        !lvm_name_ok(spec, (size_t)(slash - spec)) ||
        !lvm_name_ok(slash + 1, strlen(slash + 1))) {
        snprintf(msg, cap, "lvm:%.200s is not lvm:VG/LV (a volume group and "
                 "a logical volume name, each 1 to 127 of A-Z a-z 0-9 . _ + "
                 "-, not starting with -)", spec);
        return INCMIG_EINVAL;
    }
    snprintf(vg, 128, "%.*s", (int)(slash - spec), spec);
    snprintf(lv, 128, "%s", slash + 1);
    return 0;
}

void incmig__volume_shared(const struct incmig_receive_opts *o,
                           struct incmig__target *t)
{
    t->nshared = 0;
    for (int i = 0; i < o->ndisks && t->nshared < (int)INCMIG_MAX_DISKS; i++)
        if (!strcmp(o->disks[i].path, INCMIG_MAP_SHARED))
            snprintf(t->shared[t->nshared++], sizeof t->shared[0], "%s",
                     o->disks[i].name);
}

int incmig__volume_check_opts(const struct incmig_receive_opts *o)
{
    char vg[128], lv[128], msg[512];
    char res[PATH_MAX];

    if (o->image || o->nbd_uri) {
        if (o->ndisks) {
            ERR("--image/--nbd is the shorthand for a one-disk domain; "
                "with --disk, map every disk with --disk");
            return INCMIG_EINVAL;
        }
        if (!o->image || !*o->image || !uri_valid(o->nbd_uri)) {
            ERR("--image PATH and --nbd unix:PATH|tcp:HOST:PORT go "
                "together");
            return INCMIG_EINVAL;
        }
        if (strlen(o->image) >= 4096) {
            ERR("--image: path too long");
            return INCMIG_EINVAL;
        }
    } else if (o->ndisks < 1) {
        ERR("the receiver has no disk mapping: give --disk NAME=PATH "
            "(or --image PATH --nbd URI for a one-disk domain)");
        return INCMIG_EINVAL;
    }
    if (o->leave_paused && (!o->target || strcmp(o->target, "xen"))) {
        ERR("-p (leave the domain paused) is for the xen target");
        return INCMIG_EINVAL;
    }
    if (o->ndisks < 0 || o->ndisks > INCMIG_RECEIVE_MAX_DISKS ||
        o->nroots < 0 || o->nroots > INCMIG_RECEIVE_MAX_ROOTS) {
        ERR("at most %d disks and %d roots", INCMIG_RECEIVE_MAX_DISKS,
            INCMIG_RECEIVE_MAX_ROOTS);
        return INCMIG_EINVAL;
    }
    for (int i = 0; i < o->ndisks; i++) {
        const struct incmig_receive_disk *d = &o->disks[i];
        if (!name_valid(d->name)) {
            ERR("--disk: a disk name is 1 to %u bytes", INCMIG_NAME_MAX);
            return INCMIG_EINVAL;
        }
        if (!d->path || !*d->path || strlen(d->path) >= 4096) {
            ERR("--disk %s: no path, or a path too long", d->name);
            return INCMIG_EINVAL;
        }
        if (d->nbd_uri && !uri_valid(d->nbd_uri)) {
            ERR("--disk %s: nbd=%s is not unix:PATH or tcp:HOST:PORT",
                d->name, d->nbd_uri);
            return INCMIG_EINVAL;
        }
        bool shared = !strcmp(d->path, INCMIG_MAP_SHARED);
        if (shared && d->nbd_uri) {
            ERR("--disk %s=shared: a disk on shared storage is not "
                "migrated and has no nbd=", d->name);
            return INCMIG_EINVAL;
        }
        if (!strncmp(d->path, INCMIG_MAP_LVM, strlen(INCMIG_MAP_LVM)) &&
            incmig__lvm_parse(d->path + strlen(INCMIG_MAP_LVM), vg, lv, msg,
                              sizeof msg)) {
            ERR("--disk %s: %s", d->name, msg);
            return INCMIG_EINVAL;
        }
        for (int j = 0; j < i; j++) {
            if (!strcmp(o->disks[j].name, d->name)) {
                ERR("--disk %s is given twice", d->name);
                return INCMIG_EINVAL;
            }
            if (!shared && !strcmp(o->disks[j].path, d->path)) {
                ERR("--disk %s and --disk %s name the same path %s",
                    o->disks[j].name, d->name, d->path);
                return INCMIG_EINVAL;
            }
        }
    }
    for (int i = 0; i < o->nroots; i++) {
        struct stat sb;
        if (!o->roots[i] || !realpath(o->roots[i], res) ||
            stat(res, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
            ERR("--root %s is not a directory",
                o->roots[i] ? o->roots[i] : "(null)");
            return INCMIG_EINVAL;
        }
    }
    return 0;
}

/* ---- mapping -------------------------------------------------------------- */

/* Resolve where disk `name` goes: out->path (parent resolved) and
 * out->nbd_uri from the mapping.  Checks the roots and that nothing is at
 * the path.  msg names the disk. */
static int map_one(const struct incmig_receive_opts *o, int ndisks,
                   const struct incmig__disk_rec *dr,
                   struct incmig__target_disk *out, char *msg, size_t cap)
{
    const char *path = NULL, *uri = NULL;
    char dir[PATH_MAX], rdir[PATH_MAX], root[PATH_MAX];
    struct stat sb;

    if (o->image) {
        if (ndisks != 1) {
            snprintf(msg, cap, "disk %s: the domain has %d disks and this "
                     "receiver maps one (--image); map each disk with "
                     "--disk NAME=PATH", dr->name, ndisks);
            return INCMIG_EINVAL;
        }
        path = o->image;
        uri = o->nbd_uri;
    } else {
        for (int i = 0; i < o->ndisks; i++)
            if (!strcmp(o->disks[i].name, dr->name)) {
                path = o->disks[i].path;
                uri = o->disks[i].nbd_uri;
            }
        if (!path) {
            snprintf(msg, cap, "disk %s is not mapped on the destination "
                     "(no --disk %s=PATH): refused, nothing created",
                     dr->name, dr->name);
            return INCMIG_EINVAL;
        }
    }
    if (!strcmp(path, INCMIG_MAP_SHARED)) {
        snprintf(msg, cap, "disk %s is on shared storage for this receiver "
                 "(--disk %s=shared), and the source migrates it: mark it "
                 "shared on the source too (migrate --shared-disk %s), or "
                 "map it to a volume: refused, nothing created", dr->name,
                 dr->name, dr->name);
        return INCMIG_EINVAL;
    }
    if (!strncmp(path, INCMIG_MAP_LVM, strlen(INCMIG_MAP_LVM))) {
        char why[512];
        if (incmig__lvm_parse(path + strlen(INCMIG_MAP_LVM), out->lvm_vg,
                              out->lvm_lv, why, sizeof why)) {
            snprintf(msg, cap, "disk %s: %s", dr->name, why);
            return INCMIG_EINVAL;
        }
        snprintf(out->path, sizeof out->path, "%s%s/%s", INCMIG_MAP_LVM,
                 out->lvm_vg, out->lvm_lv);
        goto mapped;
    }

    /* parent directory and final component */
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) {
        snprintf(msg, cap, "disk %s: %s does not name a file", dr->name,
                 path);
        return INCMIG_EINVAL;
    }
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (!realpath(dir, rdir)) {
        snprintf(msg, cap, "disk %s: the directory of %s cannot be "
                 "resolved: %s", dr->name, path, strerror(errno));
        return INCMIG_EINVAL;
    }
    bool inside = o->nroots == 0;
    for (int i = 0; i < o->nroots && !inside; i++) {
        size_t n;
        if (!realpath(o->roots[i], root))
            continue;
        n = strlen(root);
        if (!strcmp(root, "/") ||
            (!strncmp(rdir, root, n) && (rdir[n] == '\0' || rdir[n] == '/')))
            inside = true;
    }
    if (!inside) {
        snprintf(msg, cap, "disk %s: %s is outside the allowed roots (%s%s): "
                 "refused, nothing created", dr->name, path, o->roots[0],
                 o->nroots > 1 ? ", ..." : "");
        return INCMIG_EINVAL;
    }
    if ((size_t)snprintf(out->path, sizeof out->path, "%s%s%s", rdir,
                         strcmp(rdir, "/") ? "/" : "", base)
        >= sizeof out->path) {
        snprintf(msg, cap, "disk %s: path too long", dr->name);
        return INCMIG_EINVAL;
    }
    if (lstat(out->path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        struct incmig__lineage l;
        char g1[33], g2[33];
        int rc = incmig__lineage_load(out->path, -1, dr->block_size, &l);
        if (rc)
            return rc;
        bool same = l.valid && !incmig__gen_zero(dr->lineage) &&
                    !memcmp(l.gen, dr->lineage, 16);
        if (same && l.size == dr->size) {
            out->reuse = true;
            INFO("disk %s: %s is an older copy of generation %s: reused",
                 dr->name, path, incmig__gen_hex(l.gen, g1));
        } else if (same) {
            snprintf(msg, cap, "disk %s: %s is a copy of this disk but of "
                     "%" PRIu64 " bytes, not %" PRIu64 ": refused, nothing "
                     "touched", dr->name, path, l.size, dr->size);
        } else if (l.valid && incmig__gen_zero(dr->lineage)) {
            snprintf(msg, cap, "disk %s: %s already exists, and the source "
                     "keeps no lineage for this disk, so it cannot be proven "
                     "a copy of it: refused, nothing touched (remove it or "
                     "map the disk elsewhere)", dr->name, path);
        } else if (l.valid) {
            snprintf(msg, cap, "disk %s: %s already exists and holds "
                     "generation %s, unrelated to the source's %s: refused, "
                     "nothing touched (remove it or map the disk elsewhere)",
                     dr->name, path, incmig__gen_hex(l.gen, g1),
                     incmig__gen_hex(dr->lineage, g2));
        } else {
            snprintf(msg, cap, "disk %s: %s already exists and cannot be "
                     "proven a copy of this disk (%s); the receiver never "
                     "overwrites a file it did not create or cannot prove: "
                     "refused, nothing touched (remove it or map the disk "
                     "elsewhere)", dr->name, path, l.why);
        }
        incmig__lineage_dispose(&l);
        if (!out->reuse)
            return INCMIG_EINVAL;
    } else if (lstat(out->path, &sb) == 0) {
        if (S_ISLNK(sb.st_mode))
            snprintf(msg, cap, "disk %s: %s is a symbolic link; the receiver "
                     "creates its volumes and never follows a link: refused, "
                     "nothing touched", dr->name, path);
        else
            snprintf(msg, cap, "disk %s: %s already exists; the receiver "
                     "creates its volumes and never overwrites a file it "
                     "did not create: refused, nothing touched (remove it "
                     "or map the disk elsewhere)", dr->name, path);
        return INCMIG_EINVAL;
    }
    if (!out->reuse && errno != ENOENT) {
        snprintf(msg, cap, "disk %s: cannot check %s: %s", dr->name, path,
                 strerror(errno));
        return INCMIG_EIO;
    }
mapped:
    memcpy(out->lineage, dr->lineage, 16);
    snprintf(out->name, sizeof out->name, "%s", dr->name);
    snprintf(out->nbd_uri, sizeof out->nbd_uri, "%s", uri ? uri : "");
    out->size = dr->size;
    out->block_size = dr->block_size;
    return 0;
}

int incmig__volume_map(const struct incmig_receive_opts *o,
                       const struct incmig__disk_rec *recs, int n,
                       struct incmig__target_disk *out, int *bad_r,
                       char *msg, size_t cap)
{
    int rc;

    for (int i = 0; i < n; i++) {
        const struct incmig__disk_rec *dr = &recs[i];
        *bad_r = i;
        if (!incmig__block_size_valid(dr->block_size)) {
            snprintf(msg, cap, "disk %s: block size %u is not a power of "
                     "two between 4 KiB and 1 MiB", dr->name, dr->block_size);
            return INCMIG_EINVAL;
        }
        if (dr->size == 0 || dr->size > INCMIG_DISK_MAX) {
            snprintf(msg, cap, "disk %s: size %" PRIu64 " out of range (1 "
                     "to %" PRIu64 " bytes)", dr->name, dr->size,
                     (uint64_t)INCMIG_DISK_MAX);
            return INCMIG_ESIZE;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(recs[j].name, dr->name)) {
                snprintf(msg, cap, "disks %d and %d are both named %s",
                         j, i, dr->name);
                return INCMIG_EPROTO;
            }
        rc = map_one(o, n, dr, &out[i], msg, cap);
        if (rc)
            return rc;
        for (int j = 0; j < i; j++)
            if (!strcmp(out[j].path, out[i].path)) {
                snprintf(msg, cap, "disk %s: %s is also where disk %s goes",
                         dr->name, out[i].path, out[j].name);
                return INCMIG_EINVAL;
            }
    }
    *bad_r = -1;
    return 0;
}

/* ---- volume files --------------------------------------------------------- */

void incmig__volume_init(struct incmig__volume *v)
{
    memset(v, 0, sizeof *v);
    v->disk.fd = v->disk.dfd = -1;
}

int incmig__volume_create(struct incmig__volume *v, const char *path,
                          uint64_t size, char *msg, size_t cap)
{
    struct stat a, b;
    int fd, rc;

    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(msg, cap, "cannot create %s: %s%s", path, strerror(e),
                 e == EEXIST ? " (it appeared since it was checked: left "
                               "alone)" : "");
        return e == ENOSPC || e == EDQUOT ? INCMIG_ENOSPC : INCMIG_EIO;
    }
    if (fstat(fd, &a) < 0) {
        snprintf(msg, cap, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);   /* ours: O_EXCL created it a moment ago */
        return INCMIG_EIO;
    }
    snprintf(v->path, sizeof v->path, "%s", path);
    v->created = true;
    v->dev = a.st_dev;
    v->ino = a.st_ino;
    /* The whole disk must fit before a block is written: a guest may
     * write all of it after GO, and running out of space in PULL would
     * leave the data split between the hosts.  Checked here, before
     * DISK_ACK, so a refusal names the disk and nothing was pushed. */
    struct statvfs vs;
    if (fstatvfs(fd, &vs) == 0 && vs.f_frsize > 0 &&
        (uint64_t)vs.f_bavail * vs.f_frsize < size) {
        snprintf(msg, cap, "no space left on the destination for %s: the "
                 "disk needs %" PRIu64 " bytes, %" PRIu64 " are free", path,
                 size, (uint64_t)vs.f_bavail * vs.f_frsize);
        close(fd);
        return INCMIG_ENOSPC;
    }
    if (size > (uint64_t)INT64_MAX || ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        snprintf(msg, cap, "cannot size %s to %" PRIu64 " bytes: %s", path,
                 size, strerror(e));
        close(fd);
        return e == ENOSPC || e == EDQUOT || e == EFBIG ? INCMIG_ENOSPC
                                                        : INCMIG_EIO;
    }
    close(fd);
    rc = incmig__disk_open(&v->disk, path,
                           INCMIG_DISK_WRITE | INCMIG_DISK_NOFOLLOW, size);
    if (rc) {
        snprintf(msg, cap, "cannot open the new volume %s: %s", path,
                 incmig_strerror(rc));
        return rc;
    }
    /* the file opened is the one created (nothing swapped it meanwhile) */
    if (fstat(v->disk.fd, &b) < 0 || b.st_dev != v->dev ||
        b.st_ino != v->ino || v->disk.size != size) {
        snprintf(msg, cap, "%s changed while it was being created", path);
        incmig__disk_close(&v->disk);
        return INCMIG_EIO;
    }
    return 0;
}

void incmig__volume_close(struct incmig__volume *v, bool remove)
{
    const char *path = v->path;

    incmig__disk_close(&v->disk);
    if (remove && v->created) {
        struct stat sb;
        if (lstat(path, &sb) == 0 && sb.st_dev == v->dev &&
            sb.st_ino == v->ino && unlink(path) == 0)
            INFO("partial copy %s discarded; the guest stays on the source",
                 path);
        else
            ERR("partial copy %s not removed: it is no longer the file this "
                "migration created", path);
        v->created = false;
    }
}

int incmig__volume_base(const struct incmig__target_disk *td,
                        struct incmig__lineage *lin_r)
{
    int rc = incmig__lineage_load(td->path, -1, td->block_size, lin_r);
    if (!rc && lin_r->valid && memcmp(lin_r->gen, td->lineage, 16))
        lin_r->valid = false;
    return rc;
}

/* An older copy of this disk, proven at map time: opened in place (the
 * very file checked: a regular file of the disk's size), and its lineage
 * marked OPEN before anything is written, so that a failure after this
 * leaves its claim void.  Never removed. */
static int volume_reuse(struct incmig__volume *v,
                        const struct incmig__target_disk *td, char *msg,
                        size_t cap)
{
    struct stat sb;
    int rc;

    snprintf(v->path, sizeof v->path, "%s", td->path);
    v->created = false;
    if (lstat(td->path, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        snprintf(msg, cap, "%s is no longer the regular file checked",
                 td->path);
        return INCMIG_EIO;
    }
    rc = incmig__disk_open(&v->disk, td->path, INCMIG_DISK_WRITE, 0);
    if (rc) {
        snprintf(msg, cap, "cannot open %s: %s", td->path, incmig_strerror(rc));
        return rc;
    }
    struct stat b;
    if (fstat(v->disk.fd, &b) < 0 || b.st_ino != sb.st_ino ||
        b.st_dev != sb.st_dev || v->disk.size != td->size) {
        snprintf(msg, cap, "%s changed while it was being opened", td->path);
        incmig__disk_close(&v->disk);
        return INCMIG_EIO;
    }
    v->dev = b.st_dev;
    v->ino = b.st_ino;
    rc = incmig__lineage_open(td->path, v->disk.fd, td->lineage,
                              td->block_size);
    if (rc) {
        snprintf(msg, cap, "cannot mark the lineage of %s as in use",
                 td->path);
        incmig__disk_close(&v->disk);
    }
    return rc;
}

int incmig__target_prepare_volume(struct incmig__target *t, int i,
                                  struct incmig__volume *v,
                                  struct incmig__disk **disk_r)
{
    const struct incmig__target_disk *td = &t->disks[i];
    char msg[INCMIG_MSG_MAX];
    int rc;

    if (td->reuse) {
        rc = volume_reuse(v, td, msg, sizeof msg);
    } else {
        rc = incmig__volume_create(v, td->path, td->size, msg, sizeof msg);
        if (!rc)   /* metadata of a file that was here before: not ours */
            incmig__lineage_remove(td->path);
    }
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: %s", td->name, msg);
    *disk_r = &v->disk;
    return 0;
}

int incmig__target_reopen_volume(struct incmig__target *t, int i,
                                 struct incmig__volume *v,
                                 struct incmig__disk **disk_r)
{
    const struct incmig__target_disk *td = &t->disks[i];
    struct stat a, b;
    int rc;

    if (lstat(td->path, &a) < 0 || !S_ISREG(a.st_mode))
        return incmig__target_fail(t, INCMIG_EINVAL, "disk %s: %s is %s",
                                   td->name, td->path, errno == ENOENT ?
                                   "gone" : "not a regular file");
    rc = incmig__disk_open(&v->disk, td->path, INCMIG_DISK_WRITE, 0);
    if (rc)
        return incmig__target_fail(t, rc, "disk %s: cannot open %s",
                                   td->name, td->path);
    if (fstat(v->disk.fd, &b) < 0 || b.st_dev != a.st_dev ||
        b.st_ino != a.st_ino || v->disk.size != td->size) {
        incmig__disk_close(&v->disk);
        return incmig__target_fail(t, INCMIG_ESIZE, "disk %s: %s is not the "
                                   "volume of this migration (%" PRIu64
                                   " bytes expected)", td->name, td->path,
                                   td->size);
    }
    snprintf(v->path, sizeof v->path, "%s", td->path);
    v->created = false;
    *disk_r = &v->disk;
    return 0;
}
