/* incmig-internal.h: interfaces between libincmig's subsystems.
 *
 * One .c per subsystem (each opens with what it is for):
 *   log.c        logging back end, error strings, size parsing, clock
 *   bitmap.c     block bitmaps and their compact wire encoding
 *   diskio.c     image files and block devices: O_DIRECT + libaio,
 *                allocation map
 *   stream.c     the migration stream codec (docs/specs/incmig-stream.md)
 *   nbd.c        NBD server, for the simulated guest's source export and
 *                the destination's PULL gate
 *   tracker.c    write-tracker interface; the in-process tracker
 *   tracker-blkback.c  the tracker of a VBD served by patched blkback
 *   backends.c   the table of source domain backends (sim/, xen/)
 *   transport.c  ssh / tcp connections, bandwidth cap
 *   tls.c        TLS (GnuTLS) for the TCP transports
 *   control.c    a running migration's control socket (bandwidth)
 *   push.c       sending a disk's blocks (PUSH, stop-and-copy, PULL)
 *   compress.c   block compression (zstd, or zlib for older peers), adaptive
 *   yield.c      PUSH's cap from the guest's I/O latency (no --bandwidth)
 *   flow.c       the source's window while the state stream runs
 *   lineage.c, base.c  incremental migration: what a copy proves, and the
 *                per-disk decision
 *   owed.c       the state file of a PULL (crash-safe owed set)
 *   migrate.c    the source: state machine and incmig_migrate; its phases
 *                in migrate-{link,push,state,pull,owed}.c
 *                (migrate-internal.h)
 *   gate.c       the destination's PULL gate
 *   volume.c     where the receiver puts each disk; the targets' table
 *   receive.c    the destination: state machine and incmig_receive; its
 *                parts in receive-{link,handshake,data,pull,owed}.c
 *                (receive-internal.h)
 *   report.c     metrics: human and JSON output, progress line
 *   command*.c   the migrate / migrate-receive commands' option parsing
 *   sim/         the simulated domain: source backend, serve, state, target
 *   xen/         the Xen domain: source backend (libxl + blkback) and target
 *
 * Nothing here includes a Xen header.  Internal symbols are incmig__*.
 */
#ifndef INCMIG_INTERNAL_H
#define INCMIG_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "incmig.h"

/* ---- logging (log.c) ----------------------------------------------------- */

void incmig__log(int level, const char *file, int line, int err,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define LOG(lvl, ...) incmig__log((lvl), __FILE__, __LINE__, 0, __VA_ARGS__)
#define LOGE(...) incmig__log(0, __FILE__, __LINE__, errno, __VA_ARGS__)
#define ERR(...) LOG(0, __VA_ARGS__)
#define INFO(...) LOG(1, __VA_ARGS__)
#define DBG(...) LOG(2, __VA_ARGS__)
extern int incmig__verbosity;

/* Errors a peer can cause at will (bad handshakes, refused connections):
 * per call site, one line per interval and then "N more suppressed", so a
 * flood of bad peers cannot flood the log. */
struct incmig__ratelimit {
    pthread_mutex_t lock;
    double t0;                /* start of the current interval */
    unsigned long suppressed;
};
#define INCMIG_RATELIMIT_S 5.0
void incmig__log_limited(struct incmig__ratelimit *rl, int level,
                         const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
#define PEER_LOG(lvl, ...) do {                                             \
        static struct incmig__ratelimit rl_ = {                             \
            .lock = PTHREAD_MUTEX_INITIALIZER };                            \
        incmig__log_limited(&rl_, (lvl), __FILE__, __LINE__, __VA_ARGS__);  \
    } while (0)
#define PEER_ERR(...) PEER_LOG(0, __VA_ARGS__)
#define PEER_INFO(...) PEER_LOG(1, __VA_ARGS__)

/* Set by incmig_stop() (the CLI's signal handlers call it): every loop that
 * waits on a peer checks it and ends cleanly. */
extern volatile sig_atomic_t incmig__stop_requested;

double incmig__now(void);   /* CLOCK_MONOTONIC seconds */
/* `s` (>= 0) seconds from now on clock clk, for pthread_cond_timedwait. */
void incmig__deadline(struct timespec *ts, clockid_t clk, double s);

/* ---- bitmaps (bitmap.c) -------------------------------------------------- */

#define INCMIG_BS_MIN 4096u
#define INCMIG_BS_MAX (1u << 20)
#define INCMIG_BS_DEFAULT 4096u
/* Largest disk we accept, bounds every bitmap allocation: 16 TiB. */
#define INCMIG_DISK_MAX (UINT64_C(1) << 44)

bool incmig__block_size_valid(uint64_t bs);  /* power of two, 4K..1M */

struct incmig__bitmap {
    uint64_t nbits;
    uint64_t *words;       /* (nbits + 63) / 64 words, bits past nbits 0 */
    /* Summary: bit w set whenever words[w] may be non-zero (a superset:
     * words[w] != 0 implies it; clear/clear_range drop the bit of a word
     * they empty, stale set bits are allowed).  The set-bit
     * scans skip words whose summary bit is 0.  Code that writes words[]
     * directly must keep this: set the bit, or call incmig__bitmap_resum
     * after a bulk load.  (nwords + 63) / 64 words, at least one. */
    uint64_t *sum;
};

int incmig__bitmap_init(struct incmig__bitmap *b, uint64_t nbits);
void incmig__bitmap_dispose(struct incmig__bitmap *b);   /* idempotent */
void incmig__bitmap_set(struct incmig__bitmap *b, uint64_t bit);
void incmig__bitmap_clear(struct incmig__bitmap *b, uint64_t bit);
bool incmig__bitmap_test(const struct incmig__bitmap *b, uint64_t bit);
void incmig__bitmap_set_range(struct incmig__bitmap *b, uint64_t first,
                              uint64_t count);
void incmig__bitmap_clear_range(struct incmig__bitmap *b, uint64_t first,
                                uint64_t count);
void incmig__bitmap_clear_all(struct incmig__bitmap *b);
/* Rebuild b->sum from b->words (a full pass): after writing words[]
 * directly, e.g. loading them from a file. */
void incmig__bitmap_resum(struct incmig__bitmap *b);
uint64_t incmig__bitmap_count(const struct incmig__bitmap *b);
/* dst |= src; sizes must be equal (INCMIG_EINVAL otherwise). */
int incmig__bitmap_merge(struct incmig__bitmap *dst,
                         const struct incmig__bitmap *src);
/* dst |= src, and src is left clear (src's words are written only where
 * they were set); sizes must be equal. */
int incmig__bitmap_move(struct incmig__bitmap *dst, struct incmig__bitmap *src);
/* First set bit >= from, or b->nbits if none. */
uint64_t incmig__bitmap_next_set(const struct incmig__bitmap *b,
                                 uint64_t from);
uint64_t incmig__bitmap_next_clear(const struct incmig__bitmap *b,
                                   uint64_t from);
/* Next run of set bits starting at or after *pos: returns false when none;
 * else *start_r and *len_r describe it and *pos is moved past it. */
bool incmig__bitmap_next_run(const struct incmig__bitmap *b, uint64_t *pos,
                             uint64_t *start_r, uint64_t *len_r);
/* Swap contents of two bitmaps of equal size (for get-and-clear). */
void incmig__bitmap_swap(struct incmig__bitmap *a, struct incmig__bitmap *b);

/* Compact encoding of bits [first, first+nbits) (spec: docs/specs,
 * "Bitmap encoding").  The encoder picks the smaller of a run-length form
 * (LEB128 varints of alternating clear/set run lengths) and the raw bits.
 * encode allocates *buf_r (caller frees); decode ORs the bits into b and
 * fails with INCMIG_EPROTO on any malformed or out-of-range input. */
int incmig__bitmap_encode(const struct incmig__bitmap *b, uint64_t first,
                          uint64_t nbits, uint8_t **buf_r, size_t *len_r);
int incmig__bitmap_decode(struct incmig__bitmap *b, uint64_t first,
                          uint64_t nbits, const uint8_t *buf, size_t len);

/* ---- image files (diskio.c) ---------------------------------------------- */

struct incmig__disk {
    int fd;                /* buffered fd, for small or unaligned I/O */
    int dfd;               /* O_DIRECT fd (== fd when O_DIRECT refused) */
    uint64_t size;
    char *path;
};

/* flags: INCMIG_DISK_WRITE, INCMIG_DISK_CREATE (create if missing, then
 * ftruncate to `size` when size != 0).  With size == 0 the size is read. */
#define INCMIG_DISK_WRITE 1
#define INCMIG_DISK_CREATE 2
#define INCMIG_DISK_NOFOLLOW 4   /* refuse a symbolic link (O_NOFOLLOW) */
int incmig__disk_open(struct incmig__disk *d, const char *path, int flags,
                      uint64_t size);
void incmig__disk_close(struct incmig__disk *d);          /* idempotent */
/* Sets in `map` (one bit per block of `bs`) every block that holds data
 * according to SEEK_DATA/SEEK_HOLE (all blocks when unsupported). */
int incmig__disk_alloc_map(struct incmig__disk *d, uint32_t bs,
                           struct incmig__bitmap *map);
bool incmig__is_zero(const void *buf, size_t len);
/* Full pread/pwrite loops on the buffered fd; INCMIG_EIO / INCMIG_ENOSPC. */
int incmig__disk_pread(struct incmig__disk *d, void *buf, size_t len,
                       uint64_t off);
int incmig__disk_pwrite(struct incmig__disk *d, const void *buf, size_t len,
                        uint64_t off);
int incmig__disk_flush(struct incmig__disk *d);
/* Deallocate (punch hole, keep size) or fall back to writing zeroes. */
int incmig__disk_punch(struct incmig__disk *d, uint64_t off, uint64_t len);

/* Asynchronous I/O queue on d->dfd through libaio, `qd` in flight, each
 * request up to `maxlen` bytes (a multiple of 4096).  Buffers are owned by
 * the queue and aligned for O_DIRECT.
 *   get_buf: a free buffer; fails with INCMIG_EINVAL when all are busy
 *            (reap and put_buf first: keep inflight() < qd);
 *   submit: queue a read or write of len bytes at off using that buffer;
 *   reap:   wait for one completion (any order); returns its tag, offset,
 *           length and buffer, and the result (0 or INCMIG_EIO/ENOSPC).
 *           After reap the caller must release the buffer with put_buf.
 * Reads past EOF return zeroes for the missing part; writes past d->size
 * are refused; reap with nothing in flight is INCMIG_EINVAL. */
struct incmig__aioq;
int incmig__aioq_new(struct incmig__aioq **q, struct incmig__disk *d, int qd,
                     size_t maxlen);
void incmig__aioq_free(struct incmig__aioq *q);
int incmig__aioq_get_buf(struct incmig__aioq *q, uint8_t **buf_r);
int incmig__aioq_submit(struct incmig__aioq *q, bool write, uint8_t *buf,
                        size_t len, uint64_t off, uint64_t tag);
int incmig__aioq_inflight(const struct incmig__aioq *q);
int incmig__aioq_reap(struct incmig__aioq *q, uint64_t *tag_r,
                      uint64_t *off_r, size_t *len_r, uint8_t **buf_r,
                      int *res_r);
void incmig__aioq_put_buf(struct incmig__aioq *q, uint8_t *buf);
/* Wait for every in-flight request; first error is returned. */
int incmig__aioq_drain(struct incmig__aioq *q);
/* Background I/O: requests submitted from now on carry the IDLE I/O
 * class (the block layer serves them when nobody else waits: mq-deadline
 * and bfq honour it; on a kernel that refuses it they go at the normal
 * class).  idle_reqs counts the requests submitted so. */
void incmig__aioq_set_idle(struct incmig__aioq *q, bool idle);
uint64_t incmig__aioq_idle_reqs(const struct incmig__aioq *q);

/* ---- disk lineage (lineage.c, spec "Incremental migration") ------------- */

/* What a copy of a disk proves: valid (its claim to gen holds) and, when
 * has_bitmap, bm: the blocks written since gen.  why: the reason the
 * claim is void or the bitmap missing (or "no lineage metadata"). */
struct incmig__lineage {
    bool found;               /* PATH.incmig exists */
    bool open;                /* intact, OPEN: held by a tracker (gen set) */
    bool valid;
    bool has_bitmap;
    uint8_t gen[16];
    uint64_t size;
    struct incmig__bitmap bm;
    char why[512];
};
/* Load and prove the claim of the volume at path (fd: open on it, or -1:
 * stat the path).  0, or INCMIG_ENOMEM; a void claim is not an error. */
int incmig__lineage_load(const char *path, int fd, uint32_t bs,
                         struct incmig__lineage *l);
void incmig__lineage_dispose(struct incmig__lineage *l);
/* A tracker takes the volume: lineage gen with OPEN, before any write. */
int incmig__lineage_open(const char *path, int fd, const uint8_t gen[16],
                         uint32_t bs);
/* Its clean close: fsync the volume, save bm (NULL: no bitmap), then the
 * lineage without OPEN, with the volume's inode and mtime now. */
int incmig__lineage_close(const char *path, int fd, const uint8_t gen[16],
                          uint32_t bs, const struct incmig__bitmap *bm);
void incmig__lineage_remove(const char *path);
bool incmig__gen_zero(const uint8_t gen[16]);
void incmig__gen_random(uint8_t gen[16]);
/* The generation a migration gives disk `index`: XXH3-128(mig_id, index). */
void incmig__gen_derive(const uint8_t mig_id[16], uint32_t index,
                        uint8_t gen[16]);
const char *incmig__gen_hex(const uint8_t gen[16], char out[33]);
int incmig__gen_parse(const char *hex, uint8_t gen[16]);

/* Per-block XXH3-128 sums (base.c): blocks [first, first+count) of d, in
 * blocks of bs (the tail zero-padded), 16 octets each into out. */
#define INCMIG_SUMS_MAX 65536u    /* sums in one BASE(SUMS) record */
int incmig__sums_compute(struct incmig__disk *d, uint32_t bs, uint64_t first,
                         uint32_t count, uint8_t *out);

/* ---- migration stream (stream.c, docs/specs/incmig-stream.md) ------------ */

#define INCMIG_STREAM_MAGIC "INCMIG\r\n"  /* 8 bytes */
#define INCMIG_STREAM_VERSION 1u
/* Bound on any record body; BLOCKS bodies carry at most 1 MiB of blocks. */
#define INCMIG_REC_MAX (UINT32_C(4) << 20)
#define INCMIG_BLOCKS_MAX (UINT32_C(1) << 20)
#define INCMIG_NAME_MAX 255u
#define INCMIG_MSG_MAX 1024u
#define INCMIG_MAX_DISKS 8u
/* Type bit: a reader that does not know an optional record skips it. */
#define INCMIG_REC_OPTIONAL 0x80000000u

enum incmig__rec_type {
    INCMIG_REC_HELLO = 1,     /* both ways, first record */
    INCMIG_REC_DISK = 2,      /* src->dst, one per disk */
    INCMIG_REC_DISK_ACK = 3,  /* dst->src, one per disk */
    INCMIG_REC_BLOCKS = 4,    /* src->dst */
    INCMIG_REC_ROUND = 5,     /* src->dst, end of a PUSH round */
    INCMIG_REC_SUSPEND = 6,   /* src->dst, guest paused, bitmaps follow */
    INCMIG_REC_BITMAP = 7,    /* src->dst (dirty) and dst->src (missing) */
    INCMIG_REC_READY = 8,     /* dst->src, gates armed */
    INCMIG_REC_GO = 9,        /* src->dst, point of no return */
    INCMIG_REC_PULL_REQ = 10, /* dst->src, demand fetch */
    INCMIG_REC_PULL_END = 11, /* src->dst, every marked block was sent */
    INCMIG_REC_COMPLETE = 12, /* dst->src, nothing marked any more */
    INCMIG_REC_ERROR = 13,    /* either way, then the sender closes */
    INCMIG_REC_RESUME = 14,   /* src->dst after reconnecting in PULL */
    INCMIG_REC_END = 15,      /* src->dst, last record */
    INCMIG_REC_XEN_STREAM = 16, /* src->dst, a chunk of libxl's stream */
    INCMIG_REC_BASE = 18,     /* dst->src, CAP_BASE: its copy, or sums */
    INCMIG_REC_DECIDE = 19,   /* src->dst, CAP_BASE: round 0 per disk */
    INCMIG_REC_FLOW = 21,     /* dst->src, CAP_FLOW: stream acted on */
    INCMIG_REC_REPORT = 17 | INCMIG_REC_OPTIONAL, /* dst->src, figures */
};

enum incmig__phase {
    INCMIG_PHASE_PUSH = 0,
    INCMIG_PHASE_STOPCOPY = 1,
    INCMIG_PHASE_PULL_DEMAND = 2,
    INCMIG_PHASE_PULL_BACKGROUND = 3,
};

enum incmig__enc {
    INCMIG_ENC_RAW = 0,
    INCMIG_ENC_ZLIB = 1,
    INCMIG_ENC_ZERO = 2,      /* the blocks are all zero; no data */
    INCMIG_ENC_ZSTD = 3,      /* one zstd frame (INCMIG_CAP_ZSTD) */
};

struct incmig__hello {
    uint32_t version;
    uint32_t role;            /* 0 source, 1 destination */
    uint64_t caps;            /* INCMIG_CAP_* */
    uint8_t mig_id[16];       /* source picks; destination echoes */
    uint32_t ndisks;          /* <= INCMIG_MAX_DISKS */
    char name[INCMIG_NAME_MAX + 1];  /* domain name */
};
#define INCMIG_CAP_ZLIB 1u
#define INCMIG_CAP_RESUME 2u
/* The source sends the domain's own state stream as XEN_STREAM records
 * during PUSH, ended by an empty one, before SUSPEND. */
#define INCMIG_CAP_STATE 4u
/* Incremental migration: BASE and DECIDE after DISK_ACK. */
#define INCMIG_CAP_BASE 8u
/* FLOW records bound the stream in flight while the state stream runs. */
#define INCMIG_CAP_FLOW 32u
/* May send ENC_ZSTD (preferred to ENC_ZLIB when both sides have it). */
#define INCMIG_CAP_ZSTD 64u

struct incmig__disk_rec {
    uint32_t index;
    uint32_t block_size;
    uint64_t size;
    uint8_t lineage[16];
    char name[INCMIG_NAME_MAX + 1];
};

/* BASE: kind REPORT (flags, gen, bitmap) or SUMS (first, count, sums). */
enum { INCMIG_BASE_REPORT = 0, INCMIG_BASE_SUMS = 1 };
#define INCMIG_BASE_HAVE 1u
#define INCMIG_BASE_BITMAP 2u
struct incmig__base_rec {
    uint32_t index;
    uint8_t kind;
    uint32_t flags;           /* REPORT */
    uint8_t gen[16];
    uint64_t nbits;
    uint64_t first;           /* SUMS */
    uint32_t count;
    const uint8_t *data;      /* bitmap encoding, or 16 * count sums */
    uint32_t len;
};
#define INCMIG_BASE_REPORT_HDR 36
#define INCMIG_BASE_SUMS_HDR 20
enum { INCMIG_MODE_FULL = 0, INCMIG_MODE_UNION = 1, INCMIG_MODE_CHECKSUM = 2 };
struct incmig__decide {
    uint32_t index;
    uint8_t mode;
    char reason[INCMIG_MSG_MAX + 1];
};

struct incmig__disk_ack {
    uint32_t index;
    int32_t status;           /* 0 or INCMIG_E* */
    char msg[INCMIG_MSG_MAX + 1];
};

/* A BLOCKS record: `nblocks` consecutive blocks starting at `first`.
 * data/len: raw bytes (nblocks * bs), zlib bytes, or none for ENC_ZERO.
 * The decoded data pointer points into the record buffer. */
struct incmig__blocks {
    uint32_t disk;
    uint8_t phase;
    uint8_t enc;
    uint64_t first;
    uint32_t nblocks;
    const uint8_t *data;
    uint32_t len;
};

struct incmig__bitmap_rec {
    uint32_t disk;
    uint8_t phase;
    uint64_t first;           /* first bit of this chunk */
    uint64_t nbits;
    const uint8_t *data;      /* incmig__bitmap_encode output */
    uint32_t len;
};

struct incmig__round {
    uint32_t round;
    uint64_t blocks;          /* blocks sent in that round, all disks */
};

struct incmig__pull_req {
    uint32_t disk;
    uint64_t first;
    uint32_t nblocks;         /* <= INCMIG_BLOCKS_MAX / block size */
};

struct incmig__error_rec {
    int32_t code;
    char msg[INCMIG_MSG_MAX + 1];
};

/* One received record: type, body length and body (owned by the reader,
 * valid until the next read). */
struct incmig__rec {
    uint32_t type;
    uint32_t len;
    const uint8_t *body;
};

/* A stream endpoint over a pair of fds.  Writes are serialised by a mutex
 * (several threads may send); one thread reads.  Counts bytes, and paces
 * writes to `bandwidth` bytes/s when set. */
struct incmig__stream {
    int rfd, wfd;
    pthread_mutex_t wlock;
    uint8_t *rbuf;            /* INCMIG_REC_MAX + framing */
    uint64_t bytes_out, bytes_in;
    uint64_t bandwidth;       /* atomic: incmig__stream_set_bandwidth */
    uint64_t pace_bw;         /* the cap pace_t0/pace_bytes count under */
    double pace_t0;
    uint64_t pace_bytes;
    /* Deadlines (0: none), set by the owner: reads and socket writes fail
     * with INCMIG_ELINK once incmig__now() passes `deadline` (e.g. the
     * handshake's), or when the peer made no progress for `idle_s`
     * seconds.  With stop_cancels, reads end with INCMIG_ECANCEL on
     * incmig__stop_requested (before the point of no return). */
    double deadline;
    double idle_s;
    bool stop_cancels;
};

/* CRC-32C of buf, continuing from crc (0 to start): the record checksum. */
uint32_t incmig__crc32c(uint32_t crc, const void *buf, size_t n);
int incmig__stream_init(struct incmig__stream *s, int rfd, int wfd);
/* A new cap (0: none) from any thread; the next record is paced by it
 * (a record already waiting re-checks every 0.1 s). */
void incmig__stream_set_bandwidth(struct incmig__stream *s, uint64_t bw);
void incmig__stream_dispose(struct incmig__stream *s);   /* closes fds */
int incmig__stream_send_header(struct incmig__stream *s);
int incmig__stream_recv_header(struct incmig__stream *s); /* EVERSION etc. */
/* Frame and send one record (type, body) with its CRC. */
int incmig__stream_send(struct incmig__stream *s, uint32_t type,
                        const void *body, uint32_t len);
/* The same, with the body in two pieces (a header and data that need not
 * be copied next to it). */
int incmig__stream_send2(struct incmig__stream *s, uint32_t type,
                         const void *body, uint32_t len, const void *data,
                         uint32_t dlen);
/* Read one record; unknown optional records are skipped, unknown
 * mandatory ones fail with INCMIG_EPROTO; EOF -> INCMIG_ELINK. */
int incmig__stream_recv(struct incmig__stream *s, struct incmig__rec *r);

/* Body codecs: enc_* fill a caller buffer of INCMIG_REC_MAX bytes at most
 * and return the body length (or a negative code); dec_* validate every
 * field and bound (INCMIG_EPROTO with a logged reason on failure). */
int incmig__enc_hello(const struct incmig__hello *h, uint8_t *buf);
int incmig__dec_hello(const struct incmig__rec *r, struct incmig__hello *h);
int incmig__enc_disk(const struct incmig__disk_rec *d, uint8_t *buf);
int incmig__dec_disk(const struct incmig__rec *r, struct incmig__disk_rec *d);
int incmig__enc_disk_ack(const struct incmig__disk_ack *a, uint8_t *buf);
int incmig__dec_disk_ack(const struct incmig__rec *r,
                         struct incmig__disk_ack *a);
/* enc_blocks writes the header; the caller appends `b->len` data bytes
 * (the header is INCMIG_BLOCKS_HDR bytes). */
#define INCMIG_BLOCKS_HDR 20
int incmig__enc_blocks_hdr(const struct incmig__blocks *b, uint8_t *buf);
int incmig__dec_blocks(const struct incmig__rec *r, uint32_t block_size,
                       struct incmig__blocks *b);
#define INCMIG_BITMAP_HDR 24
int incmig__enc_bitmap_hdr(const struct incmig__bitmap_rec *m, uint8_t *buf);
int incmig__dec_bitmap(const struct incmig__rec *r,
                       struct incmig__bitmap_rec *m);
int incmig__enc_round(const struct incmig__round *x, uint8_t *buf);
int incmig__dec_round(const struct incmig__rec *r, struct incmig__round *x);
int incmig__enc_pull_req(const struct incmig__pull_req *p, uint8_t *buf);
int incmig__dec_pull_req(const struct incmig__rec *r,
                         struct incmig__pull_req *p);
int incmig__enc_error(const struct incmig__error_rec *e, uint8_t *buf);
int incmig__dec_error(const struct incmig__rec *r, struct incmig__error_rec *e);
/* BASE: enc writes the header (REPORT or SUMS by b->kind); the caller
 * appends b->len data octets.  dec checks every field but the index
 * and block counts against the migration's disks (the caller's). */
int incmig__enc_base_hdr(const struct incmig__base_rec *b, uint8_t *buf);
int incmig__dec_base(const struct incmig__rec *r, struct incmig__base_rec *b);
int incmig__enc_decide(const struct incmig__decide *x, uint8_t *buf);
int incmig__dec_decide(const struct incmig__rec *r, struct incmig__decide *x);
const char *incmig__mode_name(int mode);
/* The source's side of one disk's decision (base.c). */
struct incmig__base_src {
    const char *name;
    struct incmig__disk *disk;
    uint32_t bs;
    uint64_t nblocks;
    uint8_t gen[16];              /* the source copy's generation */
    bool has_bitmap;              /* mine holds every write since gen */
    struct incmig__bitmap mine;
    char why[512];                /* why not (the backend's words) */
    int mode;                     /* INCMIG_MODE_* */
    char reason[INCMIG_MSG_MAX];
    struct incmig__bitmap send;   /* round 0's set, UNION and CHECKSUM */
    uint64_t sums_next;           /* CHECKSUM: next block expected */
};
/* From the destination's REPORT: mode, reason, and for UNION send =
 * theirs | mine.  INCMIG_EPROTO when the report contradicts the DISK. */
int incmig__base_decide(struct incmig__base_src *b,
                        const struct incmig__base_rec *rep);
/* One SUMS chunk, in order: hash the same blocks here, mark differing
 * ones in send. */
int incmig__base_compare(struct incmig__base_src *b,
                         const struct incmig__base_rec *sums);
/* Records with an empty body (SUSPEND, READY, GO, PULL_END, COMPLETE, END)
 * are checked with this: INCMIG_EPROTO unless r->len == 0. */
int incmig__dec_empty(const struct incmig__rec *r);
/* FLOW: u64, the octets of the stream the destination acted on. */
int incmig__enc_flow(uint64_t acted, uint8_t *buf);
int incmig__dec_flow(const struct incmig__rec *r, uint64_t *acted_r);

/* The source's window while the state stream runs (flow.c). */
#define INCMIG_FLOW_RING 256u
struct incmig__flow {
    uint64_t base;            /* octets written when the state stream began */
    uint64_t sent, acked;     /* written; covered by FLOW (or base) */
    uint64_t last_flow;       /* the last FLOW's value */
    struct { uint64_t end; double t; } ring[INCMIG_FLOW_RING];
    unsigned head, len;
    double min_rtt, rate;     /* seconds; octets/s (0: not yet known) */
    double rate_t;
    uint64_t rate_b;
    uint64_t window;
};
void incmig__flow_init(struct incmig__flow *f, uint64_t sent, double now);
void incmig__flow_sent(struct incmig__flow *f, uint64_t sent, double now);
/* INCMIG_EPROTO when acted goes back or beyond what was written. */
int incmig__flow_acked(struct incmig__flow *f, uint64_t acted, double now);
bool incmig__flow_open(const struct incmig__flow *f);

/* RESUME carries the 16-byte migration id. */
int incmig__dec_resume(const struct incmig__rec *r, uint8_t mig_id[16]);
const char *incmig__rec_name(uint32_t type);

/* ---- the owed set on disk (owed.c, spec "Crash-safe PULL") ------------------- */

/* The blocks still owed after GO, per disk, in a state file that survives
 * kill -9 at any instant, with the migration's key/value text (what a
 * resume needs).  `file` is what the file says, `mem` that minus the
 * blocks written since (done); sync makes mem durable, flushing `vol`
 * (the destination's volumes, when set) first.  Bits only ever clear. */
#define INCMIG_OWED_TEXT_MAX 60000u
struct incmig__owed {
    int fd;                                  /* -1: no file */
    char path[4096];
    int nd;
    uint64_t nblocks[INCMIG_MAX_DISKS];
    uint64_t off[INCMIG_MAX_DISKS];          /* each bitmap's offset */
    struct incmig__bitmap file[INCMIG_MAX_DISKS];   /* under sync_lock */
    struct incmig__bitmap mem[INCMIG_MAX_DISKS];    /* under lock */
    struct incmig__bitmap snap[INCMIG_MAX_DISKS];   /* sync's, sync_lock */
    struct incmig__disk *vol[INCMIG_MAX_DISKS];
    pthread_mutex_t lock, sync_lock;
    bool lock_ok;
    bool go;                                 /* GO was acted on (mark_go) */
    double t_sync;
    uint64_t unsynced;
    bool unsettled;          /* under sync_lock: written, not fdatasynced */
    pthread_t syncer;        /* sync_maybe's thread, once started */
    pthread_cond_t syncer_cond;
    bool syncer_on, syncer_stop;
    int syncer_rc;           /* its first error, under lock */
};
void incmig__owed_init(struct incmig__owed *o);
bool incmig__owed_active(const struct incmig__owed *o);
/* DIR/ROLE-ID.state (DIR NULL: the runtime directory); resolve takes a
 * path (with a '/') or a migration id (32 hex digits). */
int incmig__owed_path(const char *dir, const char *role, const uint8_t id[16],
                      char *buf, size_t cap);
int incmig__owed_resolve(const char *dir, const char *role, const char *arg,
                         char *buf, size_t cap);
/* Written whole (temporary file, fsync, rename, directory fsync), with
 * the bitmaps `sets`; prepare: with every block owed, before the
 * downtime; arm: then, in it, down to `sets`, written but not
 * fdatasynced (settle does that, after GO). */
int incmig__owed_create(struct incmig__owed *o, const char *path, int nd,
                        const struct incmig__bitmap *sets, const char *text);
int incmig__owed_prepare(struct incmig__owed *o, const char *path, int nd,
                         const uint64_t *nblocks, const char *text);
/* sets: narrow the file to them (NULL: leave every word as it is); mark:
 * the GO mark (source) too. */
int incmig__owed_arm(struct incmig__owed *o, const struct incmig__bitmap *sets,
                     bool mark);
/* Validated (magic, version, bounds, checksum, size); *text_r malloc'd.
 * The file locked by another process: waits up to wait_s seconds for it
 * to let go (one killed a moment ago), then INCMIG_EINVAL. */
int incmig__owed_open(struct incmig__owed *o, const char *path, int wait_s,
                      char **text_r);
/* The text of a new state file, built a line at a time (incmig__kv_add);
 * the first error sticks in rc, so that the caller checks once. */
struct incmig__kv {
    char buf[INCMIG_OWED_TEXT_MAX + 1];
    size_t len;
    int rc;
};
void incmig__kv_add(struct incmig__kv *kv, const char *key, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));
/* A new migration's file DIR/ROLE-ID.state (o->path, set before it is
 * written), prepared with every block owed; its text is the role, the
 * id, then kv's lines. */
int incmig__owed_start(struct incmig__owed *o, const char *dir,
                       const char *role, const uint8_t id[16], int nd,
                       const uint64_t *nblocks, const struct incmig__kv *kv);
/* --resume ARG (a path, or an id in DIR): the file of a migration of this
 * role, opened (waiting for a killed process to let go), checked (its
 * role, the GO mark, its id in id_r); *text_r malloc'd. */
int incmig__owed_resume(struct incmig__owed *o, const char *dir,
                        const char *role, const char *arg, uint8_t id_r[16],
                        char **text_r);
/* The destination, at GO, before the domain runs: the file now stands for
 * a PULL in progress (a file without the mark is never resumed). */
int incmig__owed_mark_go(struct incmig__owed *o);
/* fdatasync what arm and mark_go wrote, if not yet: after GO, outside
 * the downtime, and before a guest flush or FUA write is answered. */
int incmig__owed_settle(struct incmig__owed *o);
void incmig__owed_done(struct incmig__owed *o, int disk, uint64_t first,
                       uint64_t n);
bool incmig__owed_durable(struct incmig__owed *o, int disk, uint64_t first,
                          uint64_t n);
int incmig__owed_sync(struct incmig__owed *o);
/* Every 0.2 s, by a thread started on the first call (stopped by close);
 * returns that thread's first error. */
int incmig__owed_sync_maybe(struct incmig__owed *o);
/* mem &= still (the source, after the destination said what it lacks). */
int incmig__owed_keep(struct incmig__owed *o, int disk,
                      const struct incmig__bitmap *still);
int incmig__owed_get(struct incmig__owed *o, int disk,
                     struct incmig__bitmap *out);
uint64_t incmig__owed_count(struct incmig__owed *o);
void incmig__owed_close(struct incmig__owed *o, bool remove);
/* "key value" lines, values %XX-escaped; get: INCMIG_EINVAL if absent. */
int incmig__kv_put(char *buf, size_t cap, size_t *len, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int incmig__kv_get(const char *text, const char *key, char *out, size_t cap);
/* The number under key, at most max: 0, or INCMIG_EINVAL said (naming
 * the state file at path). */
int incmig__kv_num(const char *path, const char *text, const char *key,
                   uint64_t max, uint64_t *v_r);

/* ---- transports (transport.c) -------------------------------------------- */

/* "HOST:PORT" (HOST may be a name, an IPv4 address or [IPv6]). */
int incmig__tcp_connect(const char *hostport, int *fd_r);
int incmig__tcp_listen(const char *hostport, int *fd_r);
/* Accept one connection, waiting at most timeout_s (< 0: forever);
 * INCMIG_ECANCEL on timeout. */
int incmig__tcp_accept(int lfd, double timeout_s, int *fd_r);
/* Run `ssh_cmd host remote_cmd` (through /bin/sh) with its stdin/stdout
 * on a socketpair; *fd_r is our end, *pid_r the child. */
int incmig__ssh_spawn(const char *ssh_cmd, const char *host,
                      const char *remote_cmd, int *fd_r, pid_t *pid_r);
/* Unix sockets (control, NBD, rendezvous): listen refuses to replace
 * anything at path that is not a socket. */
int incmig__unix_listen(const char *path, int *fd_r);
int incmig__unix_connect(const char *path, int *fd_r);
/* Sockets' group (--socket-group; NULL: owner only), and the check of a
 * unix socket peer's credentials at accept: false (logged) = close it. */
int incmig__socket_group_set(const char *group);
bool incmig__peer_allowed(int fd, const char *what);
/* The private directory for runtime files (runtime-dir.c), made if
 * missing and checked: ours, not a symlink, writable by us only. */
int incmig__runtime_dir(char *buf, size_t cap);

/* ---- TLS (tls.c) ----------------------------------------------------------- */

struct addrinfo;
/* Keys were given (incmig_security_setup): TCP connections use TLS. */
bool incmig__tls_on(void);
/* Before a TCP listen/connect to hostport (resolved as ai): refused with a
 * clear error off loopback without keys, unless --tls=off. */
int incmig__tls_check(const char *hostport, const struct addrinfo *ai);
bool incmig__tcp_loopback(const struct addrinfo *ai);
/* TLS handshake on a connected TCP fd (server side, or client checking
 * the certificate's name against host), within timeout_s; then *fd_r is a
 * plain socket relayed to the session.  fd is taken over (closed on
 * failure); failures are logged naming peer. */
int incmig__tls_wrap(int fd, bool server, const char *host, const char *peer,
                     double timeout_s, int *fd_r);

/* Write all of buf to a domain backend's state stream fd (a pipe the
 * engine reads); INCMIG_ELINK, logged, when the reader is gone. */
int incmig__write_state(int fd, const void *buf, size_t len);
/* Host names and addresses we accept on a command line. */
bool incmig__host_valid(const char *host);
/* s in single quotes for /bin/sh; malloc'd (NULL: out of memory). */
char *incmig__shell_quote(const char *s);

/* ---- what the two commands share (command.c) ------------------------------ */

/* "NAME: message" and where the help is, on stderr. */
void incmig__usage_error(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The signal dispositions a command runs with: SIGINT/SIGTERM call
 * incmig_stop(), SIGPIPE ignored, SIGHUP ignored if hup; _restore puts
 * back what was there before. */
struct incmig__signals {
    struct sigaction old_int, old_term, old_pipe, old_hup;
    bool hup;
};
void incmig__signals_take(struct incmig__signals *s, bool hup);
void incmig__signals_restore(const struct incmig__signals *s);
/* The log's prefix, verbosity and file unchanged. */
void incmig__log_name(const char *prefix);

/* ---- a migration's control socket (control.c) ---------------------------- */

/* set_bw applies a new cap (0: none) and gives the bytes sent so far;
 * it runs on the control thread. */
typedef int (*incmig__mctl_bw_fn)(void *opaque, uint64_t bw,
                                  uint64_t *bytes_sent_r);
struct incmig__mctl;
int incmig__mctl_start(struct incmig__mctl **c_r, const char *path,
                       incmig__mctl_bw_fn set_bw, void *opaque);
void incmig__mctl_stop(struct incmig__mctl *c);   /* NULL: nothing */

/* ---- compression (compress.c) --------------------------------------------- */

enum { INCMIG_COMP_OFF, INCMIG_COMP_AUTO, INCMIG_COMP_ALWAYS };
struct incmig__comp {
    int mode;                 /* INCMIG_COMP_* */
    int enc;                  /* INCMIG_ENC_ZSTD or INCMIG_ENC_ZLIB */
    void *cctx;               /* ZSTD_CCtx */
    uint8_t *buf;             /* compressed output */
    double speed;             /* compression, input bytes/s (EWMA) */
    double ratio;             /* compressed / raw (EWMA) */
    double link;              /* records out, bytes/s (EWMA) */
    uint64_t runs;
    uint64_t in_bytes, out_bytes;  /* runs sent compressed */
};
int incmig__comp_init(struct incmig__comp *c, int mode, int enc);
void incmig__comp_dispose(struct incmig__comp *c);        /* idempotent */
/* Whether AUTO would compress now (the link is the bottleneck). */
bool incmig__comp_worth(const struct incmig__comp *c);
/* len bytes of non-zero blocks: the compressed length (data in *out_r,
 * valid until the next call), or 0: send them raw. */
size_t incmig__comp_encode(struct incmig__comp *c, const uint8_t *data,
                           size_t len, const uint8_t **out_r);
/* A record of `bytes` took `seconds` to send (pacing included). */
void incmig__comp_sent(struct incmig__comp *c, size_t bytes, double seconds);
/* One zstd frame that must inflate to exactly `want` bytes. */
int incmig__zstd_decode(uint8_t *dst, size_t want, const uint8_t *src,
                        size_t len);

/* ---- PUSH (push.c) -------------------------------------------------------- */

/* Sends blocks of one disk as BLOCKS records: all-zero runs as ZERO
 * markers, the rest raw or compressed (compress.c decides). */
struct incmig__sender {
    struct incmig__stream *st;
    struct incmig__disk *disk;
    uint32_t disk_index;
    uint32_t bs;
    uint64_t nblocks;
    struct incmig__comp comp;  /* mode OFF until incmig__sender_compress */
    uint8_t *rec;              /* BLOCKS header buffer */
    struct incmig__aioq *q;    /* read-ahead on the O_DIRECT fd */
    uint64_t blocks, zero_blocks, data_bytes;
    uint64_t wire[4];          /* bytes on the wire by INCMIG_PHASE_* */
};
int incmig__sender_init(struct incmig__sender *s, struct incmig__stream *st,
                        struct incmig__disk *disk, uint32_t disk_index,
                        uint32_t bs);
/* Once the capabilities are known: mode INCMIG_COMP_*, enc ZSTD or ZLIB. */
int incmig__sender_compress(struct incmig__sender *s, int mode, int enc);
void incmig__sender_dispose(struct incmig__sender *s);
/* n blocks starting at first, data = n * bs bytes in memory. */
int incmig__send_blocks(struct incmig__sender *s, uint8_t phase,
                        uint64_t first, uint64_t n, const uint8_t *data);
/* Read (synchronously) and send blocks [first, first+n). */
int incmig__send_range_sync(struct incmig__sender *s, uint8_t phase,
                            uint64_t first, uint64_t n);
/* Send every block set in bm, reading ahead with libaio, extents of at
 * most max_extent bytes.  When `poll` is given it is called between
 * extents: a positive return stops early (the extents already read ahead
 * are still sent, and their bits cleared, so a later call carries on) and
 * is returned; a negative one is an error, returned at once. */
int incmig__send_bitmap(struct incmig__sender *s, uint8_t phase,
                        struct incmig__bitmap *bm, size_t max_extent,
                        int (*poll)(void *opaque), void *opaque);
/* A whole bitmap as BITMAP records (chunked); buf: INCMIG_REC_MAX bytes. */
int incmig__send_bitmap_recs(struct incmig__stream *st, uint32_t disk,
                             uint8_t phase, const struct incmig__bitmap *bm,
                             uint8_t *buf);

/* ---- PUSH yielding to the guest (yield.c) -------------------------------- */

struct incmig__yield {
    bool have;                /* a first sample was taken */
    double t, busy;           /* the last window's start: time, busy s */
    uint64_t reqs;            /*   and requests */
    double base;              /* the guest's latency alone (s), or -1 */
    double base_rate;         /* its requests per second alone, or 0 */
    double rate_avg;          /* its requests per second lately, or 0 */
    double t_probe;           /* when base was measured */
    bool probe_due;           /* the caller should probe (step sets it) */
    double cap;               /* bytes/s while the guest is busy, or 0 */
    uint64_t out;             /* the last cap returned (0: none) */
    uint64_t backoffs;        /* times the cap shrank */
    uint64_t backoffs_lat;    /*   of them for the latency (else the rate) */
    uint64_t probes;
    double probe_s;           /* PUSH time spent in probes */
};
void incmig__yield_init(struct incmig__yield *y);
/* A sample of the guest's cumulative requests and busy seconds at `now`:
 * the cap PUSH should keep (bytes/s, 0: none).  Then, if y->probe_due:
 * stop PUSH for about 0.1 s, sampling before and after, and pass both
 * samples to incmig__yield_probe. */
uint64_t incmig__yield_step(struct incmig__yield *y, double now,
                            uint64_t reqs, double busy_s);
void incmig__yield_probe(struct incmig__yield *y, double t0, uint64_t reqs0,
                         double busy0, double t1, uint64_t reqs1,
                         double busy1);

/* ---- NBD server (nbd.c) -------------------------------------------------- */

/* Callbacks run on worker threads, several at once; they may block (the
 * PULL gate does).  Return 0 or a negative errno value (-EIO, -ENOSPC...),
 * which the server maps to the NBD error code. */
struct incmig__nbd_ops {
    int (*pread)(void *opaque, void *buf, uint32_t count, uint64_t offset);
    int (*pwrite)(void *opaque, const void *buf, uint32_t count,
                  uint64_t offset, bool fua);
    int (*flush)(void *opaque);
    int (*trim)(void *opaque, uint32_t count, uint64_t offset, bool fua);
    int (*zero)(void *opaque, uint32_t count, uint64_t offset, bool may_trim,
                bool fua);
};

struct incmig__nbd_server;
/* listen_uri: "unix:/path" or "tcp:HOST:PORT".  The socket is bound and
 * listening when this returns (clients queue in the backlog); requests
 * are served only after incmig__nbd_start. */
int incmig__nbd_new(struct incmig__nbd_server **s, const char *listen_uri,
                    uint64_t size, const struct incmig__nbd_ops *ops,
                    void *opaque, int workers);
int incmig__nbd_start(struct incmig__nbd_server *s);
/* Staged serving (the destination, before GO): workers and threads
 * started, clients accepted and through their handshake, their requests
 * read and queued but none executed until incmig__nbd_start, which then
 * only flips a flag.  A quiesce (or free) before that start drops the
 * queued requests unanswered: nothing was acknowledged. */
int incmig__nbd_hold(struct incmig__nbd_server *s);
/* Pause: stop accepting and reading requests, wait until every request
 * already read has been executed and answered (a client that does not
 * read its replies is cut, not waited for), then close every connection
 * (clients see their connection end).  The listening socket is closed (a
 * unix socket is removed) so that new clients are refused at once;
 * incmig__nbd_start listens again.  Before the first start, clients wait
 * in the backlog (the destination stages its export that way).  start and
 * quiesce are called from one thread. */
int incmig__nbd_quiesce(struct incmig__nbd_server *s);
/* The pause in two steps, so that a caller with several exports, or other
 * work to do while the requests in flight finish, waits only once:
 * _begin stops accepting and reading (steps 1-2, returns at once), _wait
 * waits until every request read is answered and the connections are
 * closed.  _quiesce is both.  No start in between. */
void incmig__nbd_quiesce_begin(struct incmig__nbd_server *s);
void incmig__nbd_quiesce_wait(struct incmig__nbd_server *s);
int incmig__nbd_clients(struct incmig__nbd_server *s);  /* connected now */
void incmig__nbd_free(struct incmig__nbd_server *s);    /* stops, unlinks */

/* The server's parsers, without sockets or threads: its reader calls them
 * on bytes it has read, and so does tests/fuzz/fuzz-nbd.c.  An export is
 * its size and which ops are set (uri is for messages). */
#define INCMIG_NBD_OPT_MAX 4096u                 /* option payload bound */
#define INCMIG_NBD_DATA_MAX (UINT32_C(32) << 20) /* READ/WRITE bound */
#define INCMIG_NBD_REPLY_MAX 134                 /* replies to one option */
enum { INCMIG_NBD_MORE, INCMIG_NBD_SERVE, INCMIG_NBD_QUEUE,
       INCMIG_NBD_REJECT, INCMIG_NBD_CLOSE, INCMIG_NBD_STARTTLS };
/* tls: a TCP export with keys (incmig__tls_on) requires STARTTLS before
 * any other option but ABORT, as nbdkit --tls=require does. */
enum { INCMIG_NBD_TLS_NONE, INCMIG_NBD_TLS_REQUIRED, INCMIG_NBD_TLS_ACTIVE };
struct incmig__nbd_export {
    const char *uri;
    uint64_t size;
    const struct incmig__nbd_ops *ops;
    int tls;             /* INCMIG_NBD_TLS_*, for this connection */
};
struct incmig__nbd_req {
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t count;
    uint32_t payload;    /* data bytes that follow the header (WRITE) */
    uint32_t error;      /* NBD error to reply, for REJECT */
};
/* 0, or -1: close. */
int incmig__nbd_client_flags(const struct incmig__nbd_export *e,
                             uint32_t cflags, bool *no_zeroes_r);
/* 0: read *len_r bytes of payload; -1 (bad magic, payload over
 * INCMIG_NBD_OPT_MAX): close. */
int incmig__nbd_opt_header(const struct incmig__nbd_export *e,
                           const uint8_t h[16], uint32_t *opt_r,
                           uint32_t *len_r);
/* Puts the replies to send in reply[INCMIG_NBD_REPLY_MAX]; returns MORE
 * (next option), SERVE (transmission), CLOSE, or STARTTLS (send the ACK,
 * then the TLS handshake). */
int incmig__nbd_option(const struct incmig__nbd_export *e, bool no_zeroes,
                       uint32_t opt, const uint8_t *data, uint32_t len,
                       uint8_t *reply, size_t *reply_len_r);
/* QUEUE: read r->payload bytes, execute; REJECT: skip r->payload bytes,
 * reply r->error; CLOSE: DISC, bad magic, or a WRITE over DATA_MAX. */
int incmig__nbd_request(const struct incmig__nbd_export *e,
                        const uint8_t h[28], struct incmig__nbd_req *r);

/* ---- destination PULL gate (gate.c) -------------------------------------- */

/* The gate of one disk on the destination, armed with the stop-and-copy
 * bitmap ("missing": blocks whose current data is still on the source).
 * The guest's NBD requests go through it (incmig__gate_nbd_ops, opaque =
 * gate): a read, or a write/trim/zero that covers a missing block only
 * partly, waits until that block has arrived, and the block is requested
 * from the source first (request callback, coalesced, once per block).  A
 * write/trim/zero covering a whole missing block makes it current without
 * fetching it; a copy of that block arriving later is dropped.  Blocks from
 * the source (demand answers and background pushes) enter via fill, which
 * writes only blocks still missing.  Thread safe. */
struct incmig__gate;
typedef int (*incmig__gate_request_fn)(void *opaque, uint32_t disk,
                                       uint64_t first, uint32_t nblocks);
int incmig__gate_new(struct incmig__gate **g, struct incmig__disk *d,
                     uint32_t disk_index, uint32_t block_size,
                     incmig__gate_request_fn request, void *opaque);
void incmig__gate_free(struct incmig__gate *g);
/* OR blocks into the missing set (the stop-and-copy bitmap); before the
 * guest's I/O starts, or a guest write could be marked missing again. */
int incmig__gate_mark_missing(struct incmig__gate *g,
                              const struct incmig__bitmap *m);
/* The still-missing set replaces the contents of out (which is sized to
 * the disk, or zeroed: then the gate sets it up). */
int incmig__gate_get_missing(struct incmig__gate *g, struct incmig__bitmap *out);
uint64_t incmig__gate_missing_count(struct incmig__gate *g);
/* Keep the state file's owed set in step (gate.c, "Crash safety"): set
 * before the guest's I/O starts; NULL: none. */
void incmig__gate_set_owed(struct incmig__gate *g, struct incmig__owed *o);
/* Blocks arriving from the source; data NULL means all zeroes.  Blocks no
 * longer missing are skipped.  INCMIG_EIO/ENOSPC on write failure. */
int incmig__gate_fill(struct incmig__gate *g, uint64_t first, uint32_t n,
                      const uint8_t *data);
/* After a reconnect: forget which blocks were requested and request again
 * every missing block a guest request is waiting for. */
void incmig__gate_relink(struct incmig__gate *g);
/* The source is gone for good (reconnect time used up, or shutdown):
 * guest requests waiting for missing blocks, and later ones, fail with
 * EIO instead of waiting forever.  Call before freeing the NBD server. */
void incmig__gate_abort(struct incmig__gate *g);
/* Wait until nothing is missing: 0, or INCMIG_ECANCEL after timeout_s
 * (< 0: forever). */
int incmig__gate_wait_complete(struct incmig__gate *g, double timeout_s);
struct incmig__gate_stats {
    uint64_t demand_requests;  /* request callbacks made */
    uint64_t demand_blocks;    /* blocks asked for by those */
    uint64_t waits;            /* guest requests that had to wait */
    uint64_t overwritten;      /* missing blocks made current by the guest */
    uint64_t dropped;          /* arrivals skipped: block already current */
    double max_wait_ms;        /* longest a guest request waited */
};
void incmig__gate_get_stats(struct incmig__gate *g, struct incmig__gate_stats *st);
extern const struct incmig__nbd_ops incmig__gate_nbd_ops;

/* ---- write trackers (tracker.c) ------------------------------------------ */

/* The write tracker of one disk: the simulated guest's in-process tracker
 * and blkback's bitmap (xen backend) implement the same operations. */
struct incmig__tracker;
struct incmig__tracker_ops {
    /* Swap in a clean bitmap and OR the old one into `out` (atomic with
     * respect to concurrent writes: no write is lost between two calls). */
    int (*get_and_clear)(struct incmig__tracker *t, struct incmig__bitmap *out);
    /* OR a saved bitmap in. */
    int (*load)(struct incmig__tracker *t, const struct incmig__bitmap *in);
    void (*dispose)(struct incmig__tracker *t);
};
struct incmig__tracker {
    const struct incmig__tracker_ops *ops;
    uint32_t block_size;
    uint64_t nblocks;
};

/* In-process tracker: writers call mark; thread safe. */
struct incmig__memtracker {
    struct incmig__tracker t;
    pthread_mutex_t lock;          /* bm: the marks */
    struct incmig__bitmap bm;
    pthread_mutex_t take;          /* spare: one get_and_clear at a time */
    struct incmig__bitmap spare;   /* clear, swapped in by get_and_clear */
};
int incmig__memtracker_init(struct incmig__memtracker *m, uint64_t disk_size,
                            uint32_t block_size);
void incmig__memtracker_mark(struct incmig__memtracker *m, uint64_t off,
                             uint64_t len);
/* get_and_clear straight to the wire encoding (incmig__bitmap_encode of
 * the whole disk; *enc malloc'd), and how many blocks it holds (count may
 * be NULL): what a backend hands the toolstack. */
int incmig__memtracker_take(struct incmig__memtracker *m, uint8_t **enc,
                            size_t *len, uint64_t *count);

/* ---- the domain backend the toolstack drives (source) --------------------- */

/* A "domain" as migrate sees it: its disks, their write trackers, its own
 * state stream, and resume/commit/release.  Backends are entries of the
 * table in backends.c, chosen by the form of the DOMAIN argument:
 * "sim:CONTROL_SOCKET" is the simulated domain (sim/domain.c, talking to
 * an incmig_serve process); any other name is a Xen domain (built with
 * libxen; refused with a clear error until that backend exists). */
struct incmig__dom_disk {
    char name[64];
    char path[4096];          /* volume the toolstack reads blocks from */
    uint64_t size;
    uint32_t block_size;
};

struct incmig__domain;
struct incmig__domain_ops {
    /* OR the blocks written since the last call into out (read-and-clear).
     * May be called while suspend runs on another thread. */
    int (*get_and_clear)(struct incmig__domain *d, int disk,
                         struct incmig__bitmap *out);
    /* Write the domain's own state stream to state_fd (for Xen: libxl's,
     * from libxl_domain_suspend(LIVE)): pre-copy while the domain runs,
     * then the pause, then the rest.  Returns once the stream is complete
     * and the domain is paused with its disk I/O drained; *t_paused_r is
     * incmig__now() at the moment the domain stopped running (the
     * downtime starts there).  Runs on its own thread while the engine
     * keeps pushing dirty blocks.  state_fd stays the caller's. */
    int (*suspend)(struct incmig__domain *d, int state_fd,
                   double *t_paused_r);
    /* Optional (NULL: PUSH cannot yield to the guest): the guest's disk
     * requests completed so far, all disks, and the seconds spent serving
     * them (cumulative; the engine takes differences). */
    int (*activity)(struct incmig__domain *d, uint64_t *reqs_r,
                    double *busy_s_r);
    int (*resume)(struct incmig__domain *d);   /* failure before GO */
    int (*commit)(struct incmig__domain *d);   /* point of no return */
    int (*release)(struct incmig__domain *d);  /* migration complete */
    void (*close)(struct incmig__domain *d);
    /* Lineage (lineage.c; NULL: the backend keeps none, every disk is
     * copied in full): the copy's generation (zero: none) and, when
     * *bitmap_r, every block written since it ORed into out; otherwise
     * why says what is missing.  Called after a get_and_clear. */
    int (*lineage)(struct incmig__domain *d, int disk, uint8_t gen[16],
                   bool *bitmap_r, struct incmig__bitmap *out, char *why,
                   size_t cap);
    /* After commit: the generation the source copy holds once released
     * (NULL with lineage). */
    int (*adopt)(struct incmig__domain *d, int disk, const uint8_t gen[16]);
};
struct incmig__domain {
    const struct incmig__domain_ops *ops;
    char name[INCMIG_NAME_MAX + 1];
    int ndisks;
    struct incmig__dom_disk disks[INCMIG_MAX_DISKS];
};

/* What migrate's options ask of a Xen domain: the disks on shared storage
 * (not tracked, not pushed) and the configuration file sent instead of
 * the stored one (a simulated domain refuses both), libxl's debug
 * suspend (ignored by it). */
struct incmig__domain_args {
    int nshared;
    const char *const *shared;
    const char *config_file;
    bool debug;
};
/* backends.c: open DOMAIN through the backend its form selects. */
int incmig__domain_open(const char *spec, const struct incmig__domain_args *a,
                        struct incmig__domain **d_r);

/* ---- the simulated domain (sim/) ---------------------------------------- */

/* Control protocol between the toolstack (sim/domain.c) and the serving
 * process (sim/serve.c): line-based requests on a unix socket.
 *   INFO            -> "OK <ndisks> <domain name>"
 *   DISK <i>        -> "OK <size> <block size> <name> <image path>"
 *   GETCLEAR <i>    -> "OK <nbits> <len>" then <len> bytes of
 *                      incmig__bitmap_encode output
 *   ACTIVITY        -> "OK <requests> <ns>": the guest's reads and writes
 *                      completed so far, and the nanoseconds they took
 *   SUSPEND         with a file descriptor attached (SCM_RIGHTS): the
 *                   domain's state stream is written to it (pre-copy, the
 *                   pause, the rest); -> "OK <t_paused>" (incmig__now() of
 *                   the pause) once the export is drained and closed.  It
 *                   runs on its own connection, so that GETCLEAR keeps
 *                   working on the first one meanwhile.
 *   LINEAGE <i>     -> "OK <gen hex> <0|1 bitmap> <nbits> <len> <why>" then
 *                      <len> bytes of incmig__bitmap_encode output (the
 *                      blocks written since gen; len 0 without bitmap)
 *   ADOPT <i> <hex> -> "OK": the generation disk i records at RELEASE
 *   COMMIT          -> "OK": point of no return; the export will not resume
 *   RESUME          -> "OK" serving again (refused after COMMIT)
 *   RELEASE         -> "OK", then the serving process exits
 * Errors: "ERR <message>".  When the last control connection ends while
 * the export is suspended and not committed, it is resumed: a dead
 * toolstack must not leave the guest paused before the point of no
 * return. */
#define INCMIG_CTL_LINE_MAX 4608
int incmig__ctl_readline(int fd, char *buf, size_t cap);
int incmig__ctl_readline_fd(int fd, char *buf, size_t cap, int *passed_r);
int incmig__ctl_writeall(int fd, const void *buf, size_t len);
int incmig__ctl_readall(int fd, void *buf, size_t len);

int incmig__sim_domain_open(struct incmig__domain **d, const char *ctl_path);

/* The simulated domain's memory and its state stream (sim/state.c). */
#define INCMIG_SIMSTATE_PAGE 4096u
#define INCMIG_SIMSTATE_MAX_PAGES 65536u     /* 256 MiB */
struct incmig__simmem {
    pthread_mutex_t lock;
    uint8_t *pages;
    uint64_t npages;
    uint64_t cpu;                  /* "CPU state": writes seen */
    struct incmig__bitmap dirty;   /* pages touched since the last round */
    bool frozen;                   /* paused: touches change nothing */
};
int incmig__simmem_init(struct incmig__simmem *m, uint64_t bytes);
void incmig__simmem_dispose(struct incmig__simmem *m);   /* idempotent */
/* A guest write: dirty the page `key` selects. */
void incmig__simmem_touch(struct incmig__simmem *m, uint64_t key);
/* Paused (true) or running again (false): a write the guest issued before
 * the pause and the export finishes after it dirtied its page when it was
 * issued, so once frozen, touches are ignored. */
void incmig__simmem_freeze(struct incmig__simmem *m, bool frozen);
/* Write the state stream to fd: pre-copy rounds, then pause(opaque), then
 * the last pages and END.  corrupt: fault injection for tests. */
int incmig__simstate_save(struct incmig__simmem *m, int fd,
                          int (*pause)(void *opaque), void *opaque,
                          bool corrupt);
struct incmig__simstate_info {
    uint64_t bytes, pages, npages, cpu;
    uint32_t crc;
};
/* Read a state stream from fd to EOF and prove it intact: INCMIG_EPROTO
 * (with the reason logged) for anything malformed, truncated or corrupt. */
int incmig__simstate_restore(int fd, struct incmig__simstate_info *info);

/* ---- target backend (destination) ---------------------------------------- */

/* The destination's counterpart of the domain backend.  receive.c (the
 * engine) drives a target and never names one; the receiver picks it by
 * name from the table in volume.c: "sim" (sim/target.c) serves the
 * simulated guest's disks over NBD.  A Xen target creates files or LVs,
 * serves each disk's PULL gate over NBD on a private unix socket to
 * dom0's nbd client with device-mapper on top, and restores the domain
 * with libxl_domain_create_restore reading the state stream from a pipe.
 *
 * Calls, in this order (receive.c, one thread unless said):
 *   open       once every DISK record is in and the receiver's mapping
 *              checked (volume.c): checks what this target needs of the
 *              disks; creates nothing
 *   prepare(i) every disk, before any DISK_ACK: create disk i's volume
 *              (never open one this migration did not create) and give
 *              the engine an open disk to write PUSH blocks into; the
 *              target owns it until close
 *   stage(i)   every disk, after prepare: set up the PULL path before the
 *              downtime, the domain's I/O going through gate g from
 *              unpause on (sim: bind the NBD export of g, not served yet)
 *   restore    with INCMIG_CAP_STATE only, on its own thread while PUSH
 *              runs: read the domain's state stream from fd to EOF
 *              (fd stays the caller's); the domain then exists, paused
 *   unpause    at GO: the domain runs, its disks through the gates
 *   reopen(i)  instead of prepare, when a receiver restarts on its state
 *              file after GO (migrate-receive --resume): open disk i's
 *              existing volume (never create one); then stage and unpause
 *              as at GO, the domain being already there.  NULL: the
 *              target cannot resume
 *   disk_done(i) after GO, once disk i has nothing missing: the PULL path
 *              may be left (Xen: swap the dm table to the volume)
 *   in_use     polled after the migration is done: > 0 while the domain
 *              still needs this process (sim: NBD clients connected)
 *   stop       no gate callback is running or will run once it returns;
 *              called before the gates are freed, on every exit path
 *   abort      a failure before GO: destroy what restore built, remove
 *              the volumes this migration created, nothing else
 *   close      close the volumes, free the target
 * Ops return 0 or INCMIG_E*; the reason is logged and kept in t->msg,
 * which the engine sends to the source (DISK_ACK or ERROR). */
struct incmig__target_disk {
    /* from the source's DISK record */
    char name[INCMIG_NAME_MAX + 1];
    uint64_t size;
    uint32_t block_size;
    /* from the receiver's own mapping, never from the wire */
    char path[4096];          /* the volume; its directory fully resolved,
                               * or "lvm:VG/LV" */
    /* --disk NAME=lvm:VG/LV: a logical volume this migration creates
     * (xen target only); both "" for a file */
    char lvm_vg[128];
    char lvm_lv[128];
    char nbd_uri[4096];       /* sim: the guest's export after GO, or "" */
    /* incremental migration (lineage.c): the volume at path is an older
     * copy proven to be of this disk's generation, reused, not created */
    bool reuse;
    uint8_t lineage[16];      /* the source's generation (DISK) */
    uint8_t gen_next[16];     /* what both copies share after this one */
};

struct incmig__target;
struct incmig__gate;
struct incmig__target_ops {
    int (*prepare)(struct incmig__target *t, int i,
                   struct incmig__disk **disk_r);
    int (*stage)(struct incmig__target *t, int i, struct incmig__gate *g);
    int (*restore)(struct incmig__target *t, int fd);
    int (*unpause)(struct incmig__target *t);
    int (*reopen)(struct incmig__target *t, int i,
                  struct incmig__disk **disk_r);
    int (*disk_done)(struct incmig__target *t, int i);
    int (*in_use)(struct incmig__target *t);
    void (*stop)(struct incmig__target *t);
    void (*abort)(struct incmig__target *t);
    void (*close)(struct incmig__target *t);
};

struct incmig__target {
    const struct incmig__target_ops *ops;
    char domain[INCMIG_NAME_MAX + 1];
    int ndisks;
    struct incmig__target_disk disks[INCMIG_MAX_DISKS];
    char msg[INCMIG_MSG_MAX];
    /* Set by receive.c after open, from the receiver's options: disks of
     * the domain the receiver maps as shared storage (--disk NAME=shared:
     * not migrated, attached as the configuration says), and -p (leave
     * the domain paused at GO; xen target only). */
    int nshared;
    char shared[INCMIG_MAX_DISKS][INCMIG_NAME_MAX + 1];
    bool paused;
};
/* Log a failure once and keep it in t->msg; returns rc. */
int incmig__target_fail(struct incmig__target *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The table of targets (volume.c). */
struct incmig__target_kind {
    const char *name;
    bool state;               /* restore takes a state stream (CAP_STATE) */
    bool state_required;      /* refuses a source that offers none */
    /* The target's domain, ndisks and disks are copied from the
     * arguments; on refusal *bad_r is the disk refused and msg names it. */
    int (*open)(struct incmig__target **t_r, const char *domain, int ndisks,
                const struct incmig__target_disk *disks, int *bad_r,
                char *msg, size_t cap);
};
/* NULL (with a logged reason) for a name not in the table. */
const struct incmig__target_kind *incmig__target_find(const char *name);
int incmig__sim_target_open(struct incmig__target **t_r, const char *domain,
                            int ndisks, const struct incmig__target_disk *disks,
                            int *bad_r, char *msg, size_t cap);

/* The receiver's disk mapping (volume.c).  check_opts: the options alone,
 * before any connection (INCMIG_EINVAL with the reason logged).  map: the
 * DISK records onto the receiver's volumes, all or nothing and touching
 * nothing; on refusal *bad_r is the refused disk and msg names it. */
int incmig__volume_check_opts(const struct incmig_receive_opts *o);
/* A mapping's PATH: "shared" (the disk is on shared storage: not
 * migrated), "lvm:VG/LV" (a logical volume to create), or a file. */
#define INCMIG_MAP_SHARED "shared"
#define INCMIG_MAP_LVM "lvm:"
/* "VG/LV" (after "lvm:") into vg and lv (each 1..127 bytes of
 * [A-Za-z0-9._+-], not starting with '-', not "." or ".."): 0, or
 * INCMIG_EINVAL with msg saying what is wrong. */
int incmig__lvm_parse(const char *spec, char vg[128], char lv[128], char *msg,
                      size_t cap);
/* The receiver's --disk NAME=shared names into t (nshared, shared). */
void incmig__volume_shared(const struct incmig_receive_opts *o,
                           struct incmig__target *t);
int incmig__volume_map(const struct incmig_receive_opts *o,
                       const struct incmig__disk_rec *recs, int n,
                       struct incmig__target_disk *out, int *bad_r,
                       char *msg, size_t cap);
/* After map: the claim of the volume out[i] reuses (lineage.c), loaded
 * again for the BASE report; lin_r->valid false if it no longer holds. */
int incmig__volume_base(const struct incmig__target_disk *td,
                        struct incmig__lineage *lin_r);
/* A volume file this migration creates: O_CREAT|O_EXCL|O_NOFOLLOW, sized,
 * opened (O_DIRECT too) into v->disk.  remove unlinks it only while the
 * path still names the very file created (device and inode). */
struct incmig__volume {
    struct incmig__disk disk;
    char path[4096];
    bool created;
    dev_t dev;
    ino_t ino;
};
void incmig__volume_init(struct incmig__volume *v);
int incmig__volume_create(struct incmig__volume *v, const char *path,
                          uint64_t size, char *msg, size_t cap);
void incmig__volume_close(struct incmig__volume *v, bool remove);
/* A target's prepare(i) for a file volume: create v at disk i's mapped
 * path and size, hand the engine its disk; the reason goes to t->msg. */
int incmig__target_prepare_volume(struct incmig__target *t, int i,
                                  struct incmig__volume *v,
                                  struct incmig__disk **disk_r);
/* A target's reopen(i): disk i's existing volume, a regular file (not a
 * symbolic link) of the disk's size; it is never removed. */
int incmig__target_reopen_volume(struct incmig__target *t, int i,
                                 struct incmig__volume *v,
                                 struct incmig__disk **disk_r);

/* The destination's state machine (receive.c, spec "Destination states"):
 * which source record each state takes, and the state it leads to. */
enum incmig__dst_state {
    INCMIG_DST_HELLO, INCMIG_DST_DISKS, INCMIG_DST_BASE,
    INCMIG_DST_RECEIVING, INCMIG_DST_PAUSED, INCMIG_DST_READY,
    INCMIG_DST_PULL, INCMIG_DST_DONE, INCMIG_DST_WAIT_LINK,
    INCMIG_DST_RESUMING, INCMIG_DST_NSTATES
};
/* 0 and *next_r, or INCMIG_EPROTO: `type` is not allowed in `state`. */
int incmig__dst_transition(int state, uint32_t type, int *next_r);
const char *incmig__dst_state_name(int state);

/* The source's state machine (migrate.c, spec "Source states"): which
 * destination records each state accepts (0, or INCMIG_EPROTO). */
enum incmig__src_state {
    INCMIG_SRC_HANDSHAKE, INCMIG_SRC_PUSH, INCMIG_SRC_STATE,
    INCMIG_SRC_STOPCOPY, INCMIG_SRC_PULL, INCMIG_SRC_RECONNECT,
    INCMIG_SRC_DONE, INCMIG_SRC_FAILED, INCMIG_SRC_NSTATES
};
int incmig__src_accepts(int state, uint32_t type);
const char *incmig__src_state_name(int state);

#endif
