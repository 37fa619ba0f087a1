/* xen/dm.h: device-mapper and loop devices for the Xen target, through
 * dmsetup(8) and losetup(8) (xen/dm.c). */
#ifndef INCMIG_XEN_DM_H
#define INCMIG_XEN_DM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Run a helper program (argv[0] a bare name: found in /usr/sbin, /sbin,
 * /usr/bin, /bin), stdin from /dev/null, stdout and stderr captured.
 * 0 when it exits 0, with its stdout in out (NUL-terminated, may be
 * NULL); else INCMIG_EIO (INCMIG_ENOTSUP when the program is missing) and
 * msg = "PROG ARGS...: <what it said or how it ended>". */
int incmig__dm_run(const char *const argv[], char *out, size_t outcap,
                   char *msg, size_t cap);
/* Is the program installed? */
bool incmig__dm_have(const char *prog);

/* "incmig-<domain>-<disk>", every byte outside [A-Za-z0-9._+-] replaced by
 * '_' (udev and /dev/mapper want tame names), at most 127 bytes; suffix
 * > 0 appends "-<suffix>" (a name already taken). */
void incmig__dm_name(char *out, size_t cap, const char *domain,
                     const char *disk, int suffix);
bool incmig__dm_exists(const char *name);
/* dmsetup create NAME --table "0 SECTORS linear DEV 0" */
int incmig__dm_create(const char *name, uint64_t sectors, const char *dev,
                      char *msg, size_t cap);
/* The table of a live device, replaced: suspend, load, resume (resumed on
 * the old table if the load fails). */
int incmig__dm_swap(const char *name, uint64_t sectors, const char *dev,
                    char *msg, size_t cap);
/* dmsetup remove --retry NAME */
int incmig__dm_remove(const char *name, char *msg, size_t cap);

/* losetup --find --show --direct-io=on PATH: *dev_r = "/dev/loopN". */
int incmig__loop_attach(const char *path, char *dev_r, size_t devcap,
                        char *msg, size_t cap);
/* losetup -d DEV: while device-mapper holds it, the kernel only marks it
 * autoclear, and it goes when its last user does. */
int incmig__loop_detach(const char *dev, char *msg, size_t cap);

/* PATH a device incmig made (/dev/mapper/incmig-*, a linear table):
 * remove it, then the loop device under it if it was on one.  0 at once
 * for any other path (not incmig's to remove). */
int incmig__dm_teardown(const char *path, char *msg, size_t cap);
/* PATH /dev/mapper/incmig-* on a loop device (a disk whose PULL is
 * complete): the loop device's backing file, as the kernel names it.
 * INCMIG_EINVAL with msg for anything else. */
int incmig__dm_backing_file(const char *path, char *out, size_t outcap,
                            char *msg, size_t cap);

#endif
