/* test-xen-target.c: unit tests of the Xen target's parts that need no
 * Xen (built only with libxen, HAVE_XEN):
 *   - the Xen state stream's header (xen/target-config.c): good, bad
 *     magic, other version, lengths 0 and over 1 MiB;
 *   - the configuration rewrite: the migrated disk attached from its dm
 *     device (phy, raw, no script), another disk untouched, the name
 *     NAME--incoming, the domid left to Xen; refusals; disks on shared
 *     storage: by the receiver's --disk NAME=shared or by their type
 *     (hotplug script, network target) left alone, any other disk not
 *     migrated refused, naming it; the hotplug hook
 *     set on the migrated disk only (block-incmig is not a network script);
 *   - the kernel NBD client (xen/nbdkern.c): the handshake against
 *     nbd.c's own server, and against scripted hostile servers; connect
 *     and disconnect against a fake /dev + /sys/block and a fake ioctl
 *     that plays the kernel (a busy device skipped, one claimed with
 *     EBUSY skipped, the ioctl sequence, NBD_DO_IT on its own thread);
 *   - dm.c's names and its helper runner;
 *   - the Xen source's claim to a volume's lineage (xen/claim.c), one
 *     case per row of its table, and the key of a volume's parked bitmap,
 *     which must be block-incmig's (sha256sum of the path).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "incmig-internal.h"
#include "xen/claim.h"
#include "xen/dm.h"
#include "xen/nbdkern.h"
#include "xen/target-config.h"
#include "xen/xen.h"

/* ---- the state stream's header ------------------------------------------- */

static void hdr(uint8_t h[16], const char *magic, uint32_t v, uint32_t n)
{
    memcpy(h, magic, 8);
    h[8] = v >> 24; h[9] = v >> 16; h[10] = v >> 8; h[11] = v;
    h[12] = n >> 24; h[13] = n >> 16; h[14] = n >> 8; h[15] = n;
}

static void test_header(void **state)
{
    uint8_t h[16];
    uint32_t n = 0;
    char msg[256];

    (void)state;
    hdr(h, "INCMIGXC", 1, 1234);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg), 0);
    assert_int_equal(n, 1234);
    hdr(h, "INCMIGXC", 1, INCMIG_XEN_CONFIG_MAX);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg), 0);
    assert_int_equal(n, INCMIG_XEN_CONFIG_MAX);

    hdr(h, "INCMIGXD", 1, 10);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "INCMIGXC"));
    hdr(h, "INCMIGXC", 2, 10);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "version 2"));
    hdr(h, "INCMIGXC", 1, 0);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg),
                     INCMIG_EPROTO);
    hdr(h, "INCMIGXC", 1, INCMIG_XEN_CONFIG_MAX + 1);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg),
                     INCMIG_EPROTO);
    hdr(h, "INCMIGXC", 1, UINT32_MAX);
    assert_int_equal(incmig__xen_state_header(h, &n, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "bytes long"));
}

/* ---- the configuration rewrite ------------------------------------------- */

static void add_disk(libxl_domain_config *c, const char *vdev,
                     const char *pdev, libxl_disk_backend be)
{
    c->disks = realloc(c->disks, (size_t)(c->num_disks + 1) *
                                 sizeof *c->disks);
    assert_non_null(c->disks);
    libxl_device_disk *d = &c->disks[c->num_disks++];
    libxl_device_disk_init(d);
    d->vdev = strdup(vdev);
    d->pdev_path = strdup(pdev);
    d->backend = be;
    d->format = LIBXL_DISK_FORMAT_QCOW2;
    d->script = strdup("block-custom");
    d->readwrite = 1;
}

static void make_config(libxl_domain_config *c)
{
    libxl_domain_config_init(c);
    c->c_info.name = strdup("guest");
    c->c_info.domid = 7;
    add_disk(c, "xvda", "/srv/guest.img", LIBXL_DISK_BACKEND_PHY);
    add_disk(c, "xvdb", "/shared/data.img", LIBXL_DISK_BACKEND_QDISK);
}

static void test_rewrite(void **state)
{
    libxl_domain_config c;
    const char *names[] = { "xvda" };
    const char *devs[] = { "/dev/mapper/incmig-guest-xvda" };
    char name[64], msg[256];

    (void)state;
    make_config(&c);
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg),
                     0);
    assert_string_equal(name, "guest");
    assert_string_equal(c.c_info.name, "guest--incoming");
    assert_int_equal(c.c_info.domid, (uint32_t)INVALID_DOMID);
    assert_string_equal(c.disks[0].pdev_path, devs[0]);
    assert_int_equal(c.disks[0].backend, LIBXL_DISK_BACKEND_PHY);
    assert_int_equal(c.disks[0].format, LIBXL_DISK_FORMAT_RAW);
    assert_null(c.disks[0].script);
    assert_int_equal(c.disks[0].readwrite, 1);
    /* not migrated by incmig (shared storage): as it was */
    assert_string_equal(c.disks[1].pdev_path, "/shared/data.img");
    assert_int_equal(c.disks[1].backend, LIBXL_DISK_BACKEND_QDISK);
    assert_int_equal(c.disks[1].format, LIBXL_DISK_FORMAT_QCOW2);
    assert_string_equal(c.disks[1].script, "block-custom");
    /* the hook that saves the bitmap at shutdown, on the migrated disk only */
    assert_int_equal(incmig__xen_config_hook(&c, 1, names, "block-incmig"), 0);
    assert_string_equal(c.disks[0].script, "block-incmig");
    assert_string_equal(c.disks[1].script, "block-custom");
    libxl_domain_config_dispose(&c);
}

static void test_rewrite_refusals(void **state)
{
    libxl_domain_config c;
    const char *names[] = { "xvdz" };
    const char *devs[] = { "/dev/mapper/x" };
    char name[64], msg[256];

    (void)state;
    make_config(&c);
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "xvdz"));
    libxl_domain_config_dispose(&c);

    make_config(&c);                 /* two disks with one vdev */
    add_disk(&c, "xvda", "/other.img", LIBXL_DISK_BACKEND_PHY);
    names[0] = "xvda";
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "two disks"));
    libxl_domain_config_dispose(&c);

    make_config(&c);                 /* a CD-ROM is not a migrated disk */
    c.disks[0].is_cdrom = 1;
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg),
                     INCMIG_EPROTO);
    libxl_domain_config_dispose(&c);

    make_config(&c);                 /* no name */
    free(c.c_info.name);
    c.c_info.name = NULL;
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg),
                     INCMIG_EPROTO);
    libxl_domain_config_dispose(&c);
}

static void test_disk_network(void **state)
{
    libxl_device_disk d;

    (void)state;
    libxl_device_disk_init(&d);
    d.pdev_path = strdup("/dev/vg0/guest");
    assert_null(incmig__xen_disk_network(&d));            /* phy LV */
    d.script = strdup("block");
    assert_null(incmig__xen_disk_network(&d));
    free(d.script);
    d.script = strdup("/etc/xen/scripts/block");
    assert_null(incmig__xen_disk_network(&d));
    free(d.script);
    d.script = strdup("block-incmig");      /* set by an earlier migration */
    assert_null(incmig__xen_disk_network(&d));
    free(d.script);
    d.script = strdup("block-iscsi");
    assert_non_null(incmig__xen_disk_network(&d));
    free(d.script);
    d.script = NULL;
    free(d.pdev_path);
    d.pdev_path = strdup("rbd:pool/guest");                /* qdisk on rbd */
    d.backend = LIBXL_DISK_BACKEND_QDISK;
    assert_non_null(incmig__xen_disk_network(&d));
    free(d.pdev_path);
    d.pdev_path = NULL;
    assert_non_null(incmig__xen_disk_network(&d));
    libxl_device_disk_dispose(&d);
}

static void test_rewrite_shared(void **state)
{
    libxl_domain_config c;
    const char *names[] = { "xvda" };
    const char *devs[] = { "/dev/mapper/incmig-guest-xvda" };
    const char *shared[] = { "xvdc" };
    char name[64], msg[512];

    (void)state;
    /* xvdb: a hotplug script (shared by its type); xvdc: a phy disk the
     * source did not migrate, which this receiver does not map shared */
    make_config(&c);
    add_disk(&c, "xvdc", "/srv/data.img", LIBXL_DISK_BACKEND_PHY);
    free(c.disks[2].script);
    c.disks[2].script = NULL;
    c.disks[2].format = LIBXL_DISK_FORMAT_RAW;
    msg[0] = '\0';
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg), INCMIG_EINVAL);
    assert_non_null(strstr(msg, "disk xvdc (/srv/data.img)"));
    assert_non_null(strstr(msg, "--disk xvdc=shared"));
    libxl_domain_config_dispose(&c);

    /* mapped shared by the receiver: left as it is */
    make_config(&c);
    add_disk(&c, "xvdc", "/srv/data.img", LIBXL_DISK_BACKEND_PHY);
    free(c.disks[2].script);
    c.disks[2].script = NULL;
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 1, shared,
                                                name, sizeof name, msg,
                                                sizeof msg), 0);
    assert_string_equal(c.disks[2].pdev_path, "/srv/data.img");
    assert_null(c.disks[2].script);
    assert_string_equal(c.disks[1].pdev_path, "/shared/data.img");
    assert_string_equal(c.disks[0].pdev_path, devs[0]);
    libxl_domain_config_dispose(&c);

    /* a CD-ROM is never in the way */
    make_config(&c);
    add_disk(&c, "xvdd", "/srv/boot.iso", LIBXL_DISK_BACKEND_PHY);
    free(c.disks[2].script);
    c.disks[2].script = NULL;
    c.disks[2].is_cdrom = 1;
    assert_int_equal(incmig__xen_config_rewrite(&c, 1, names, devs, 0, NULL,
                                                name, sizeof name, msg,
                                                sizeof msg), 0);
    libxl_domain_config_dispose(&c);
}

/* ---- NBD handshake ------------------------------------------------------- */

#define EXPORT_SIZE (UINT64_C(1) << 20)

static int mem_pread(void *opaque, void *buf, uint32_t count, uint64_t off)
{
    (void)opaque; (void)off;
    memset(buf, 0, count);
    return 0;
}

static int mem_pwrite(void *opaque, const void *buf, uint32_t count,
                      uint64_t off, bool fua)
{
    (void)opaque; (void)buf; (void)count; (void)off; (void)fua;
    return 0;
}

static int mem_flush(void *opaque)
{
    (void)opaque;
    return 0;
}

static const struct incmig__nbd_ops mem_ops = {
    .pread = mem_pread, .pwrite = mem_pwrite, .flush = mem_flush,
};

struct srv {
    char dir[64], path[128];
    struct incmig__nbd_server *s;
};

static void srv_start(struct srv *v)
{
    char uri[160];
    snprintf(v->dir, sizeof v->dir, "/tmp/test-xen-XXXXXX");
    assert_non_null(mkdtemp(v->dir));
    snprintf(v->path, sizeof v->path, "%s/s", v->dir);
    snprintf(uri, sizeof uri, "unix:%s", v->path);
    assert_int_equal(incmig__nbd_new(&v->s, uri, EXPORT_SIZE, &mem_ops, NULL,
                                     4), 0);
    assert_int_equal(incmig__nbd_start(v->s), 0);
}

static void srv_stop(struct srv *v)
{
    incmig__nbd_free(v->s);
    rmdir(v->dir);
}

static void test_handshake_ours(void **state)
{
    struct srv v;
    uint64_t size = 0;
    uint16_t fl = 0;
    char msg[256];
    int fd;

    (void)state;
    srv_start(&v);
    assert_int_equal(incmig__unix_connect(v.path, &fd), 0);
    assert_int_equal(incmig__nbdkern_handshake(fd, &size, &fl, msg,
                                               sizeof msg), 0);
    assert_int_equal(size, EXPORT_SIZE);
    assert_true(fl & 1);                     /* HAS_FLAGS */
    assert_true(fl & (1 << 2));              /* SEND_FLUSH: ops->flush */
    assert_false(fl & (1 << 1));             /* not read-only */
    close(fd);
    srv_stop(&v);
}

static size_t put(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
    return (size_t)bytes;
}

/* A scripted server: its bytes are in the socket before the client reads. */
static int scripted(const uint8_t *bytes, size_t len, bool close_after,
                    uint64_t *size_r, uint16_t *fl_r, char *msg, size_t cap)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], bytes, len), (ssize_t)len);
    if (close_after)
        shutdown(sv[1], SHUT_WR);
    int rc = incmig__nbdkern_handshake(sv[0], size_r, fl_r, msg, cap);
    close(sv[0]);
    close(sv[1]);
    return rc;
}

static size_t greeting(uint8_t *b, uint16_t hflags)
{
    size_t n = 0;
    n += put(b + n, UINT64_C(0x4e42444d41474943), 8);
    n += put(b + n, UINT64_C(0x49484156454f5054), 8);
    n += put(b + n, hflags, 2);
    return n;
}

static size_t reply(uint8_t *b, uint32_t opt, uint32_t type, uint32_t len)
{
    size_t n = 0;
    n += put(b + n, UINT64_C(0x0003e889045565a9), 8);
    n += put(b + n, opt, 4);
    n += put(b + n, type, 4);
    n += put(b + n, len, 4);
    return n;
}

static void test_handshake_hostile(void **state)
{
    uint8_t b[512];
    uint64_t size;
    uint16_t fl;
    char msg[256];
    size_t n;

    (void)state;
    /* not NBD */
    memset(b, 'x', 18);
    assert_int_equal(scripted(b, 18, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "fixed newstyle"));
    /* old style (no FIXED_NEWSTYLE) */
    n = greeting(b, 0);
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    /* closes after the greeting */
    n = greeting(b, 3);
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "closed"));
    /* a reply too long to be read */
    n = greeting(b, 3);
    n += reply(b + n, 7, 3, 100000);
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    /* ACK without the export's size */
    n = greeting(b, 3);
    n += reply(b + n, 7, 1, 0);
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "size"));
    /* reply to another option */
    n = greeting(b, 3);
    n += reply(b + n, 1, 1, 0);
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    /* an error */
    n = greeting(b, 3);
    n += reply(b + n, 7, UINT32_C(0x80000006), 4);
    memcpy(b + n, "nope", 4);
    n += 4;
    assert_int_equal(scripted(b, n, true, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
    assert_non_null(strstr(msg, "nope"));
    /* GO unknown: EXPORT_NAME, without zeroes */
    n = greeting(b, 3);
    n += reply(b + n, 7, UINT32_C(0x80000001), 0);
    n += put(b + n, 8192, 8);
    n += put(b + n, 1 | 4, 2);
    assert_int_equal(scripted(b, n, false, &size, &fl, msg, sizeof msg), 0);
    assert_int_equal(size, 8192);
    assert_int_equal(fl, 5);
    /* GO: an unknown info skipped, then EXPORT, then ACK */
    n = greeting(b, 3);
    n += reply(b + n, 7, 3, 4);
    n += put(b + n, 0x0003, 2);
    n += put(b + n, 0, 2);
    n += reply(b + n, 7, 3, 12);
    n += put(b + n, 0, 2);
    n += put(b + n, 4096 * 3, 8);
    n += put(b + n, 1, 2);
    n += reply(b + n, 7, 1, 0);
    assert_int_equal(scripted(b, n, false, &size, &fl, msg, sizeof msg), 0);
    assert_int_equal(size, 4096 * 3);
    assert_int_equal(fl, 1);
    /* an export of size 0 */
    n = greeting(b, 3);
    n += reply(b + n, 7, 3, 12);
    n += put(b + n, 0, 2);
    n += put(b + n, 0, 8);
    n += put(b + n, 1, 2);
    n += reply(b + n, 7, 1, 0);
    assert_int_equal(scripted(b, n, false, &size, &fl, msg, sizeof msg),
                     INCMIG_EPROTO);
}

/* ---- the kernel client, against a fake kernel ---------------------------- */

struct fakekern {
    char root[64], dev[96], sys[96];
    ino_t ino[3];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool disconnect;
    unsigned long calls[16];
    unsigned long args[16];
    int ncalls;
    int claimed;            /* index SET_SOCK accepted */
    uint64_t size;
} fk;

static int index_of(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (fk.ino[i] == sb.st_ino)
            return i;
    return -1;
}

static void sys_write(int n, const char *name, const char *val)
{
    char p[192];
    snprintf(p, sizeof p, "%s/nbd%d/%s", fk.sys, n, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(val, f);
    fclose(f);
}

static int fake_ioctl(int fd, unsigned long req, unsigned long arg)
{
    int idx = index_of(fd);
    char b[32];

    pthread_mutex_lock(&fk.lock);
    if (fk.ncalls < 16) {
        fk.calls[fk.ncalls] = req;
        fk.args[fk.ncalls++] = arg;
    }
    pthread_mutex_unlock(&fk.lock);
    if (req == NBD_SET_SOCK) {
        if (idx == 1) {               /* another task is setting it up */
            errno = EBUSY;
            return -1;
        }
        fk.claimed = idx;
    } else if (req == NBD_SET_SIZE) {
        fk.size = arg;
    } else if (req == NBD_DO_IT) {
        snprintf(b, sizeof b, "%lu\n", (unsigned long)(fk.size / 512));
        sys_write(idx, "size", b);
        sys_write(idx, "pid", "1\n");
        pthread_mutex_lock(&fk.lock);
        while (!fk.disconnect)
            pthread_cond_wait(&fk.cond, &fk.lock);
        pthread_mutex_unlock(&fk.lock);
    } else if (req == NBD_DISCONNECT) {
        pthread_mutex_lock(&fk.lock);
        fk.disconnect = true;
        pthread_cond_broadcast(&fk.cond);
        pthread_mutex_unlock(&fk.lock);
    }
    return 0;
}

static void test_connect(void **state)
{
    struct incmig__nbdkern k;
    struct srv v;
    char msg[256], p[192];
    int fd;

    (void)state;
    memset(&fk, 0, sizeof fk);
    pthread_mutex_init(&fk.lock, NULL);
    pthread_cond_init(&fk.cond, NULL);
    fk.claimed = -1;
    snprintf(fk.root, sizeof fk.root, "/tmp/test-xen-kern-XXXXXX");
    assert_non_null(mkdtemp(fk.root));
    snprintf(fk.dev, sizeof fk.dev, "%s/dev", fk.root);
    snprintf(fk.sys, sizeof fk.sys, "%s/sys", fk.root);
    assert_int_equal(mkdir(fk.dev, 0700), 0);
    assert_int_equal(mkdir(fk.sys, 0700), 0);
    for (int i = 0; i < 3; i++) {
        struct stat sb;
        snprintf(p, sizeof p, "%s/nbd%d", fk.dev, i);
        fclose(fopen(p, "w"));
        assert_int_equal(stat(p, &sb), 0);
        fk.ino[i] = sb.st_ino;
        snprintf(p, sizeof p, "%s/nbd%d", fk.sys, i);
        assert_int_equal(mkdir(p, 0700), 0);
        sys_write(i, "size", "0\n");
    }
    sys_write(0, "pid", "123\n");       /* nbd0 is connected already */
    incmig__nbdkern_sys.dev_dir = fk.dev;
    incmig__nbdkern_sys.sys_dir = fk.sys;
    incmig__nbdkern_sys.ioctl = fake_ioctl;

    srv_start(&v);
    assert_int_equal(incmig__unix_connect(v.path, &fd), 0);
    incmig__nbdkern_init(&k);
    assert_int_equal(incmig__nbdkern_connect(&k, fd, msg, sizeof msg), 0);
    assert_int_equal(k.index, 2);
    snprintf(p, sizeof p, "%s/nbd2", fk.dev);
    assert_string_equal(k.dev, p);
    assert_int_equal(k.size, EXPORT_SIZE);
    /* SET_SOCK on nbd1 (EBUSY), then nbd2 and its setup, then DO_IT */
    assert_true(fk.ncalls >= 6);
    assert_int_equal(fk.calls[0], NBD_SET_SOCK);
    assert_int_equal(fk.calls[1], NBD_SET_SOCK);
    assert_int_equal(fk.args[1], (unsigned long)fd);
    assert_int_equal(fk.calls[2], NBD_SET_BLKSIZE);
    assert_int_equal(fk.args[2], 512);
    assert_int_equal(fk.calls[3], NBD_SET_SIZE);
    assert_int_equal(fk.args[3], EXPORT_SIZE);
    assert_int_equal(fk.calls[4], NBD_SET_FLAGS);
    assert_true(fk.args[4] & 1);
    assert_int_equal(fk.calls[5], NBD_DO_IT);
    assert_int_equal(fk.claimed, 2);

    incmig__nbdkern_disconnect(&k, 5);
    assert_int_equal(fk.ncalls, 9);
    assert_int_equal(fk.calls[6], NBD_DISCONNECT);
    assert_int_equal(fk.calls[7], NBD_CLEAR_QUE);
    assert_int_equal(fk.calls[8], NBD_CLEAR_SOCK);
    assert_int_equal(k.fd, -1);
    assert_int_equal(k.sock, -1);
    incmig__nbdkern_disconnect(&k, 5);     /* idempotent */
    assert_int_equal(fk.ncalls, 9);

    /* every device busy now: a clear refusal, the socket closed */
    sys_write(2, "pid", "1\n");
    assert_int_equal(incmig__unix_connect(v.path, &fd), 0);
    incmig__nbdkern_init(&k);
    assert_int_equal(incmig__nbdkern_connect(&k, fd, msg, sizeof msg),
                     INCMIG_EIO);
    assert_non_null(strstr(msg, "no free NBD device"));
    assert_int_equal(k.sock, -1);
    srv_stop(&v);

    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fk.root);
    assert_int_equal(system(cmd), 0);
}

/* ---- dm.c --------------------------------------------------------------- */

static void test_dm_name(void **state)
{
    char n[128], longname[300];

    (void)state;
    incmig__dm_name(n, sizeof n, "web01", "xvda", 0);
    assert_string_equal(n, "incmig-web01-xvda");
    incmig__dm_name(n, sizeof n, "web01", "xvda", 2);
    assert_string_equal(n, "incmig-web01-xvda-2");
    incmig__dm_name(n, sizeof n, "a b/c\"d", "xvd$", 0);
    assert_string_equal(n, "incmig-a_b_c_d-xvd_");
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    incmig__dm_name(n, sizeof n, longname, longname, 99);
    assert_true(strlen(n) <= 127);
}

static void test_dm_run(void **state)
{
    char out[64], msg[256];
    const char *ok[] = { "sh", "-c", "echo hello", NULL };
    const char *bad[] = { "sh", "-c", "echo out; echo 'it broke' >&2; exit 3",
                          NULL };
    const char *none[] = { "no-such-program-incmig", NULL };

    (void)state;
    assert_int_equal(incmig__dm_run(ok, out, sizeof out, msg, sizeof msg), 0);
    assert_string_equal(out, "hello\n");
    assert_int_equal(incmig__dm_run(bad, NULL, 0, msg, sizeof msg),
                     INCMIG_EIO);
    assert_non_null(strstr(msg, "exit status 3: it broke"));
    assert_int_equal(incmig__dm_run(none, NULL, 0, msg, sizeof msg),
                     INCMIG_ENOTSUP);
    assert_non_null(strstr(msg, "not installed"));
    assert_false(incmig__dm_have("no-such-program-incmig"));
    assert_true(incmig__dm_have("sh"));
}

static void test_track_key(void **state)
{
    const char *vol = "/srv/incmig/vm1.img";
    char key[INCMIG_XEN_KEY_LEN + 1], want[64] = "p-", cmd[128];
    FILE *f;

    (void)state;
    assert_int_equal(incmig__xen_track_key(vol, key), 0);
    snprintf(cmd, sizeof cmd, "printf %%s '%s' | sha256sum | cut -c1-32", vol);
    f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(want + 2, sizeof want - 2, f));
    pclose(f);
    want[strcspn(want, "\n")] = '\0';
    assert_int_equal(strlen(want), INCMIG_XEN_KEY_LEN);
    assert_string_equal(key, want);
}

static void test_claim(void **state)
{
    char dir[] = "/tmp/incmig-claim-XXXXXX", vol[64], why[512], cmd[128];
    uint8_t g[16], other[16], got[16];
    char ghex[33], ohex[33];
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(vol, sizeof vol, "%s/vol.img", dir);
    fd = open(vol, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    incmig__gen_random(g);
    incmig__gen_random(other);
    incmig__gen_hex(g, ghex);
    incmig__gen_hex(other, ohex);

    /* no lineage */
    assert_false(incmig__xen_claim(vol, 4096, true, ghex, got, why,
                                   sizeof why));
    assert_non_null(strstr(why, "no lineage metadata"));
    /* OPEN with G, tracked since, the VBD says G: holds */
    assert_int_equal(incmig__lineage_open(vol, fd, g, 4096), 0);
    memset(got, 0, sizeof got);
    assert_true(incmig__xen_claim(vol, 4096, true, ghex, got, why,
                                  sizeof why));
    assert_memory_equal(got, g, 16);
    assert_string_equal(why, "");
    /* tracking was off when the migration began */
    assert_false(incmig__xen_claim(vol, 4096, false, ghex, got, why,
                                   sizeof why));
    assert_non_null(strstr(why, "was not tracking"));
    /* no proof on the VBD, or another generation's */
    assert_false(incmig__xen_claim(vol, 4096, true, "", got, why,
                                   sizeof why));
    assert_non_null(strstr(why, "not proven"));
    assert_false(incmig__xen_claim(vol, 4096, true, ohex, got, why,
                                   sizeof why));
    assert_non_null(strstr(why, ohex));
    /* a copy that was let go (closed), a domain running on it since */
    assert_int_equal(incmig__lineage_close(vol, fd, g, 4096, NULL), 0);
    assert_false(incmig__xen_claim(vol, 4096, true, ghex, got, why,
                                   sizeof why));
    assert_non_null(strstr(why, "let go"));
    close(fd);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_track_key),
        cmocka_unit_test(test_claim),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_rewrite_refusals),
        cmocka_unit_test(test_disk_network),
        cmocka_unit_test(test_rewrite_shared),
        cmocka_unit_test(test_handshake_ours),
        cmocka_unit_test(test_handshake_hostile),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_dm_name),
        cmocka_unit_test(test_dm_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
