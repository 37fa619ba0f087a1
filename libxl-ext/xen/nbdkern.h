/* xen/nbdkern.h: dom0's kernel NBD client driven from userspace (ioctl
 * interface of <linux/nbd.h>), for the Xen target (xen/nbdkern.c). */
#ifndef INCMIG_XEN_NBDKERN_H
#define INCMIG_XEN_NBDKERN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the devices are and how they are driven: the real thing by
 * default; the unit test points these at a fake. */
struct incmig__nbdkern_sys {
    const char *dev_dir;      /* "/dev": DEV_DIR/nbdN */
    const char *sys_dir;      /* "/sys/block": SYS_DIR/nbdN/{size,pid} */
    int (*ioctl)(int fd, unsigned long req, unsigned long arg);
};
extern struct incmig__nbdkern_sys incmig__nbdkern_sys;

/* The kernel's logical block size for the device: 512, as a loop device
 * has, because blkfront does not read the backend's sector-size again
 * when a domain is restored, and blkback refuses requests that are not
 * aligned to its device's logical block size. */
#define INCMIG_NBDKERN_BLKSIZE 512u

/* One connected /dev/nbdN. */
struct incmig__nbdkern {
    int index;                /* N, or -1 */
    char dev[64];             /* "/dev/nbdN" */
    int fd;                   /* the device, -1 */
    int sock;                 /* the socket the kernel uses, -1 */
    uint64_t size;
    uint16_t tflags;          /* transmission flags of the handshake */
    pthread_t thr;            /* NBD_DO_IT */
    bool thr_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool doit_done;           /* under lock */
    int doit_errno;           /* under lock */
};

void incmig__nbdkern_init(struct incmig__nbdkern *k);
/* The client side of the NBD fixed newstyle handshake on a connected
 * socket: NBD_OPT_GO for the default export (EXPORT_NAME if the server
 * does not know GO).  Gives the export's size and transmission flags.
 * INCMIG_EPROTO (with msg) for anything a server should not say. */
int incmig__nbdkern_handshake(int fd, uint64_t *size_r, uint16_t *tflags_r,
                              char *msg, size_t cap);
/* Handshake on sock (taken over, closed by disconnect or on failure), then
 * hand it to a free /dev/nbdN: NBD_SET_SOCK (which claims the device; a
 * device another task is setting up answers EBUSY and the next is tried),
 * NBD_SET_BLKSIZE, NBD_SET_SIZE, NBD_SET_FLAGS, and NBD_DO_IT on a thread
 * of its own with every signal blocked (a signal would end NBD_DO_IT and
 * the connection).  Returns once the device shows its size (sysfs): it is
 * live and the kernel may already be reading it (partition scan). */
int incmig__nbdkern_connect(struct incmig__nbdkern *k, int sock,
                            char *msg, size_t cap);
/* NBD_DISCONNECT, wait for NBD_DO_IT to return (after timeout_s, the
 * socket is shut down under it), NBD_CLEAR_SOCK, close.  Idempotent. */
void incmig__nbdkern_disconnect(struct incmig__nbdkern *k, double timeout_s);

#endif
