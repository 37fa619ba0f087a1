/* xen/dm.c: device-mapper and loop devices for the Xen target.
 *
 * The Xen target (xen/target.c) puts a device-mapper linear device between
 * a domain's blkback and its disk: first on the kernel's NBD client (the
 * PULL gate), then, once PULL is complete, on a loop device over the local
 * volume.  The table swap (suspend, load, resume) is what lets incmig
 * leave the I/O path while the guest runs: blkback keeps the same device.
 *
 * Entry points (xen/dm.h): incmig__dm_run (a helper program, output
 * captured), incmig__dm_name/_exists/_create/_swap/_remove, and
 * incmig__loop_attach/_detach.  dmsetup and losetup do the work
 * (packages dmsetup and mount, both in a Debian dom0); dmsetup's udev
 * synchronisation means /dev/mapper/NAME exists when create returns.
 * Programs are spawned with posix_spawn, so this is safe in a threaded
 * process, and reaped with waitpid on their own pid only (the Xen target
 * sets libxl to reap only its own children).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../incmig-internal.h"
#include "dm.h"

extern char **environ;

static const char *const tool_dirs[] = { "/usr/sbin", "/sbin", "/usr/bin",
                                         "/bin" };

static bool find_tool(const char *prog, char *path, size_t cap)
{
    if (strchr(prog, '/')) {
        snprintf(path, cap, "%s", prog);
        return access(path, X_OK) == 0;
    }
    for (size_t i = 0; i < sizeof tool_dirs / sizeof tool_dirs[0]; i++) {
        snprintf(path, cap, "%s/%s", tool_dirs[i], prog);
        if (access(path, X_OK) == 0)
            return true;
    }
    return false;
}

bool incmig__dm_have(const char *prog)
{
    char path[256];
    return find_tool(prog, path, sizeof path);
}

/* "prog arg1 arg2" for messages */
static void cmdline(const char *const argv[], char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; argv[i] && n < cap; i++) {
        int k = snprintf(buf + n, cap - n, "%s%s", i ? " " : "", argv[i]);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

int incmig__dm_run(const char *const argv[], char *out, size_t outcap,
                   char *msg, size_t cap)
{
    char path[256], cmd[512], err[1024];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, def;
    int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
    size_t no = 0, ne = 0;
    pid_t pid;
    int st, r, rc = INCMIG_EIO;

    cmdline(argv, cmd, sizeof cmd);
    if (out && outcap)
        out[0] = '\0';
    err[0] = '\0';
    if (!find_tool(argv[0], path, sizeof path)) {
        snprintf(msg, cap, "%s: %s is not installed (looked in /usr/sbin, "
                 "/sbin, /usr/bin, /bin)", cmd, argv[0]);
        return INCMIG_ENOTSUP;
    }
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        snprintf(msg, cap, "%s: pipe: %s", cmd, strerror(errno));
        goto out;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGCHLD);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                  POSIX_SPAWN_SETSIGDEF);
    r = posix_spawn(&pid, path, &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (r) {
        snprintf(msg, cap, "%s: cannot run it: %s", cmd, strerror(r));
        goto out;
    }
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    /* both pipes until EOF: the program never blocks on a full one */
    for (bool oo = true, eo = true; oo || eo;) {
        struct pollfd p[2] = { { .fd = oo ? po[0] : -1, .events = POLLIN },
                               { .fd = eo ? pe[0] : -1, .events = POLLIN } };
        char junk[512];
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents) {
            char *dst = out && no + 1 < outcap ? out + no : junk;
            size_t room = out && no + 1 < outcap ? outcap - no - 1
                                                 : sizeof junk;
            ssize_t n = read(po[0], dst, room);
            if (n > 0 && dst != junk)
                no += (size_t)n;
            else if (n == 0 || (n < 0 && errno != EINTR))
                oo = false;
        }
        if (p[1].revents) {
            char *dst = ne + 1 < sizeof err ? err + ne : junk;
            size_t room = ne + 1 < sizeof err ? sizeof err - ne - 1
                                              : sizeof junk;
            ssize_t n = read(pe[0], dst, room);
            if (n > 0 && dst != junk)
                ne += (size_t)n;
            else if (n == 0 || (n < 0 && errno != EINTR))
                eo = false;
        }
    }
    if (out && outcap)
        out[no < outcap ? no : outcap - 1] = '\0';
    err[ne] = '\0';
    while (ne && (err[ne - 1] == '\n' || err[ne - 1] == ' '))
        err[--ne] = '\0';
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    if (r < 0) {
        snprintf(msg, cap, "%s: waitpid: %s", cmd, strerror(errno));
        goto out;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        DBG("ran %s", cmd);
        rc = 0;
    } else if (WIFEXITED(st)) {
        snprintf(msg, cap, "%s: exit status %d%s%s", cmd, WEXITSTATUS(st),
                 ne ? ": " : "", err);
    } else {
        snprintf(msg, cap, "%s: killed by signal %d", cmd,
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
out:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    return rc;
}

void incmig__dm_name(char *out, size_t cap, const char *domain,
                     const char *disk, int suffix)
{
    char buf[128];
    size_t n;

    if (suffix > 0)
        snprintf(buf, sizeof buf, "incmig-%.60s-%.40s-%d", domain, disk,
                 suffix);
    else
        snprintf(buf, sizeof buf, "incmig-%.60s-%.40s", domain, disk);
    n = strlen(buf);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '+' ||
              c == '-'))
            buf[i] = '_';
    }
    snprintf(out, cap, "%s", buf);
}

bool incmig__dm_exists(const char *name)
{
    const char *argv[] = { "dmsetup", "info", name, NULL };
    char msg[256];
    return incmig__dm_run(argv, NULL, 0, msg, sizeof msg) == 0;
}

static void table(char *buf, size_t cap, uint64_t sectors, const char *dev)
{
    snprintf(buf, cap, "0 %" PRIu64 " linear %s 0", sectors, dev);
}

int incmig__dm_create(const char *name, uint64_t sectors, const char *dev,
                      char *msg, size_t cap)
{
    char t[512];
    table(t, sizeof t, sectors, dev);
    const char *argv[] = { "dmsetup", "create", name, "--table", t, NULL };
    return incmig__dm_run(argv, NULL, 0, msg, cap);
}

int incmig__dm_swap(const char *name, uint64_t sectors, const char *dev,
                    char *msg, size_t cap)
{
    char t[512], m2[256];
    int rc;

    table(t, sizeof t, sectors, dev);
    const char *load[] = { "dmsetup", "load", name, "--table", t, NULL };
    const char *susp[] = { "dmsetup", "suspend", name, NULL };
    const char *res[] = { "dmsetup", "resume", name, NULL };
    const char *clr[] = { "dmsetup", "clear", name, NULL };

    rc = incmig__dm_run(load, NULL, 0, msg, cap);   /* inactive table */
    if (rc)
        return rc;
    rc = incmig__dm_run(susp, NULL, 0, msg, cap);
    if (rc) {
        incmig__dm_run(clr, NULL, 0, m2, sizeof m2);
        return rc;
    }
    rc = incmig__dm_run(res, NULL, 0, msg, cap);    /* the new table live */
    if (rc) {
        /* still suspended: the guest's I/O waits; try again once */
        if (incmig__dm_run(res, NULL, 0, m2, sizeof m2) == 0)
            rc = 0;
    }
    return rc;
}

int incmig__dm_remove(const char *name, char *msg, size_t cap)
{
    const char *argv[] = { "dmsetup", "remove", "--retry", name, NULL };
    return incmig__dm_run(argv, NULL, 0, msg, cap);
}

int incmig__loop_attach(const char *path, char *dev_r, size_t devcap,
                        char *msg, size_t cap)
{
    const char *argv[] = { "losetup", "--find", "--show", "--direct-io=on",
                           path, NULL };
    char out[256];
    int rc = incmig__dm_run(argv, out, sizeof out, msg, cap);
    if (rc)
        return rc;
    out[strcspn(out, "\n")] = '\0';
    if (strncmp(out, "/dev/loop", 9) || strlen(out) >= devcap) {
        snprintf(msg, cap, "losetup --find --show %s: unexpected answer '%s'",
                 path, out);
        return INCMIG_EIO;
    }
    snprintf(dev_r, devcap, "%s", out);
    return 0;
}

int incmig__loop_detach(const char *dev, char *msg, size_t cap)
{
    const char *argv[] = { "losetup", "-d", dev, NULL };
    return incmig__dm_run(argv, NULL, 0, msg, cap);
}

/* The device under incmig's linear device NAME: *maj_r:*min_r, and in
 * loop (cap 64) "loopN" when it is a loop device still set up, else "". */
static int dm_lower(const char *name, unsigned *maj_r, unsigned *min_r,
                    char *loop, char *msg, size_t cap)
{
    char out[512], sys[64], link[256];
    const char *tbl[] = { "dmsetup", "table", name, NULL };
    int rc = incmig__dm_run(tbl, out, sizeof out, msg, cap);

    loop[0] = '\0';
    if (rc)
        return rc;
    if (sscanf(out, "%*u %*u linear %u:%u", maj_r, min_r) != 2) {
        snprintf(msg, cap, "%s: not one linear table ('%.100s'): left alone",
                 name, out);
        return INCMIG_EINVAL;
    }
    snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", *maj_r, *min_r);
    ssize_t n = readlink(sys, link, sizeof link - 1);
    if (n <= 0)
        return 0;
    link[n] = '\0';
    const char *base = strrchr(link, '/');
    base = base ? base + 1 : link;
    if (strncmp(base, "loop", 4) || strlen(base) > 20)
        return 0;
    /* a loop device set to clear itself at last close is gone already */
    snprintf(sys, sizeof sys, "/sys/block/%s/loop/backing_file", base);
    if (access(sys, F_OK) == 0)
        snprintf(loop, 64, "%s", base);
    return 0;
}

int incmig__dm_backing_file(const char *path, char *out, size_t outcap,
                            char *msg, size_t cap)
{
    static const char pfx[] = "/dev/mapper/incmig-";
    char loop[64], sys[96];
    unsigned maj, min;
    int rc;

    if (strncmp(path, pfx, sizeof pfx - 1)) {
        snprintf(msg, cap, "%s is not a device incmig made", path);
        return INCMIG_EINVAL;
    }
    rc = dm_lower(path + strlen("/dev/mapper/"), &maj, &min, loop, msg, cap);
    if (rc)
        return rc;
    if (!loop[0]) {
        snprintf(msg, cap, "%s is not on a loop device (%u:%u): its PULL "
                 "is not complete, or it is on a block device", path, maj,
                 min);
        return INCMIG_EINVAL;
    }
    snprintf(sys, sizeof sys, "/sys/block/%s/loop/backing_file", loop);
    FILE *f = fopen(sys, "r");
    if (!f || !fgets(out, (int)outcap, f)) {
        snprintf(msg, cap, "cannot read %s", sys);
        if (f)
            fclose(f);
        return INCMIG_EIO;
    }
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    size_t n = strlen(out);
    if (out[0] != '/' || (n > 10 && !strcmp(out + n - 10, " (deleted)"))) {
        snprintf(msg, cap, "%s's backing file \"%.200s\" is not a file in "
                 "place", loop, out);
        return INCMIG_EINVAL;
    }
    return 0;
}

int incmig__dm_teardown(const char *path, char *msg, size_t cap)
{
    static const char pfx[] = "/dev/mapper/incmig-";
    char loop[64], dev[128];
    unsigned maj, min;
    int rc;

    msg[0] = '\0';
    if (strncmp(path, pfx, sizeof pfx - 1))
        return 0;                       /* not a device incmig made */
    const char *name = path + strlen("/dev/mapper/");
    rc = dm_lower(name, &maj, &min, loop, msg, cap);
    if (rc)
        return rc;
    rc = incmig__dm_remove(name, msg, cap);
    if (rc)
        return rc;
    /* the loop device under it, if that is what it was on */
    if (!loop[0])
        return 0;
    snprintf(dev, sizeof dev, "/sys/block/%s/loop/backing_file", loop);
    if (access(dev, F_OK))
        return 0;
    snprintf(dev, sizeof dev, "/dev/%s", loop);
    return incmig__loop_detach(dev, msg, cap);
}
