/* badpeer.c: a misbehaving migration peer for the failure tests.
 *
 * usage: badpeer source MODE HOST:PORT
 *        badpeer receiver MODE PORT
 *
 * As a source it connects to `xl-incmig migrate-receive --listen` and, in
 * every mode but `version` and `magic`, first plays a correct prefix:
 * header, HELLO (role 0, one disk), DISK (16 MiB, 4096-byte blocks), reads
 * the DISK_ACK, sends a few valid PUSH BLOCKS, then the fault:
 *   crc       a BLOCKS record with one body byte flipped after framing
 *   truncate  half of a BLOCKS record, then close
 *   oversize  a record header claiming INCMIG_REC_MAX + 1 bytes
 *   version   stream header with version 2 (no prefix)
 *   magic     garbage instead of the magic (no prefix)
 *   unknown   an unknown mandatory record type 99
 *   range     a BLOCKS record reaching past the disk's end
 *   bitmap    ROUND, SUSPEND, then a BITMAP whose run encoding is malformed
 *   order     GO before SUSPEND
 *   nocap-state     an XEN_STREAM record, no INCMIG_CAP_STATE negotiated
 *   suspend-early   (offers INCMIG_CAP_STATE) part of a state stream, then
 *                   SUSPEND before the empty XEN_STREAM that ends it
 *   bitmap-order    ROUND, SUSPEND, a BITMAP chunk that does not start at
 *                   block 0
 *   ready-early     ROUND, SUSPEND, READY with no bitmap at all
 *   bitmap-late     ROUND, SUSPEND, the whole (empty) bitmap, READY, then
 *                   one more BITMAP chunk
 *   go-noready      ROUND, SUSPEND, the whole bitmap, GO without READY
 *   silent          nothing more (sleeps 30 s): a source that stalls
 * Afterwards it reads what the receiver sends until the connection ends
 * and prints "peer ERROR <code>: <msg>" for an ERROR record.
 *
 * As a receiver it listens on 127.0.0.1:PORT (prints "ready") for
 * `xl-incmig migrate -s ""`:
 *   version            answers with stream version 2
 *   nack               answers DISK_ACK with INCMIG_ENOSPC "test: no space"
 *   corrupt            a corrupted record instead of its HELLO
 *   close-during-push  handshakes, acks the disk, reads a few BLOCKS, closes
 *   silent             accepts and never sends a byte (sleeps 30 s)
 *   ready-in-push      handshakes, acks the disk, then READY during PUSH
 *
 * Exit status: 0 when the scenario was played, 1 when the peer did not
 * behave as expected up to the fault, 2 on a usage error.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include "incmig-internal.h"

#define DISK_SIZE (16u << 20)
#define BS 4096u

static uint8_t *ebuf;   /* INCMIG_REC_MAX */
static uint64_t src_caps;   /* what the fake source offers in HELLO */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int die(const char *what)
{
    fprintf(stderr, "badpeer: %s\n", what);
    return 1;
}

static int write_raw(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            perror("badpeer: write");
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Frame a record by hand: u32 type, u32 len, body, u32 crc (big-endian).
 * Returns a malloc'd buffer of *len_r bytes. */
static uint8_t *frame(uint32_t type, const uint8_t *body, uint32_t len,
                      size_t *len_r)
{
    uint8_t *f = malloc((size_t)len + 12);
    if (!f)
        abort();
    put32(f, type);
    put32(f + 4, len);
    if (len)
        memcpy(f + 8, body, len);
    put32(f + 8 + len, incmig__crc32c(0, f, 8 + len));
    *len_r = (size_t)len + 12;
    return f;
}

static void raw_header(uint8_t hdr[16], uint32_t version)
{
    memcpy(hdr, INCMIG_STREAM_MAGIC, 8);
    put32(hdr + 8, version);
    put32(hdr + 12, 0);
}

/* Read records until the connection ends; report ERROR records. */
static void drain_peer(struct incmig__stream *st)
{
    struct incmig__rec r;
    while (incmig__stream_recv(st, &r) == 0) {
        if (r.type == INCMIG_REC_ERROR) {
            struct incmig__error_rec e;
            if (incmig__dec_error(&r, &e) == 0)
                printf("peer ERROR %d: %s\n", e.code, e.msg);
        } else {
            printf("peer sent %s\n", incmig__rec_name(r.type));
        }
        fflush(stdout);
    }
}

static void set_timeout(int fd, int secs)
{
    struct timeval tv = { .tv_sec = secs };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A BLOCKS body with `n` raw blocks from `first` (pattern data). */
static uint32_t blocks_body(uint8_t *buf, uint64_t first, uint32_t n)
{
    struct incmig__blocks b = {
        .disk = 0, .phase = INCMIG_PHASE_PUSH, .enc = INCMIG_ENC_RAW,
        .first = first, .nblocks = n, .len = n * BS,
    };
    int hl = incmig__enc_blocks_hdr(&b, buf);
    if (hl != INCMIG_BLOCKS_HDR)
        abort();
    for (uint32_t i = 0; i < n * BS; i++)
        buf[hl + i] = (uint8_t)(i * 7 + first);
    return (uint32_t)hl + n * BS;
}

/* ---- source --------------------------------------------------------------- */

static int source_prefix(struct incmig__stream *st)
{
    struct incmig__rec r;
    struct incmig__hello h = {
        .version = INCMIG_STREAM_VERSION, .role = 0, .caps = src_caps,
        .ndisks = 1,
    };
    struct incmig__disk_rec d = {
        .index = 0, .block_size = BS, .size = DISK_SIZE,
    };
    int len;

    for (int i = 0; i < 16; i++)
        h.mig_id[i] = (uint8_t)(0xb0 + i);
    snprintf(h.name, sizeof h.name, "badpeer");
    snprintf(d.name, sizeof d.name, "xvda");
    if (incmig__stream_send_header(st) || incmig__stream_recv_header(st))
        return die("stream header exchange failed");
    len = incmig__enc_hello(&h, ebuf);
    if (len < 0 || incmig__stream_send(st, INCMIG_REC_HELLO, ebuf, (uint32_t)len))
        return die("sending HELLO failed");
    if (incmig__stream_recv(st, &r) || r.type != INCMIG_REC_HELLO)
        return die("no HELLO from the receiver");
    len = incmig__enc_disk(&d, ebuf);
    if (len < 0 || incmig__stream_send(st, INCMIG_REC_DISK, ebuf, (uint32_t)len))
        return die("sending DISK failed");
    struct incmig__disk_ack a;
    if (incmig__stream_recv(st, &r) || incmig__dec_disk_ack(&r, &a))
        return die("no DISK_ACK from the receiver");
    if (a.status != 0) {
        fprintf(stderr, "badpeer: the receiver refused the disk: %s\n", a.msg);
        return 1;
    }
    /* a few valid PUSH blocks: the partial copy exists on the destination */
    for (uint64_t first = 0; first < 64; first += 16) {
        uint32_t bl = blocks_body(ebuf, first, 16);
        if (incmig__stream_send(st, INCMIG_REC_BLOCKS, ebuf, bl))
            return die("sending BLOCKS failed");
    }
    return 0;
}

static int source_fault(struct incmig__stream *st, int fd, const char *mode)
{
    uint8_t *f;
    size_t flen;
    int rc = 0;

    if (!strcmp(mode, "crc")) {
        uint32_t bl = blocks_body(ebuf, 100, 4);
        f = frame(INCMIG_REC_BLOCKS, ebuf, bl, &flen);
        f[8 + INCMIG_BLOCKS_HDR + 1000] ^= 0x10;   /* a data byte */
        rc = write_raw(fd, f, flen);
        free(f);
    } else if (!strcmp(mode, "truncate")) {
        uint32_t bl = blocks_body(ebuf, 100, 4);
        f = frame(INCMIG_REC_BLOCKS, ebuf, bl, &flen);
        rc = write_raw(fd, f, flen / 2);
        free(f);
        usleep(100 * 1000);
        shutdown(fd, SHUT_WR);
    } else if (!strcmp(mode, "oversize")) {
        uint8_t hdr[8];
        put32(hdr, INCMIG_REC_BLOCKS);
        put32(hdr + 4, INCMIG_REC_MAX + 1);
        rc = write_raw(fd, hdr, sizeof hdr);
        /* some body bytes: the receiver must stop before reading them */
        memset(ebuf, 0xaa, 4096);
        if (!rc)
            write_raw(fd, ebuf, 4096);
    } else if (!strcmp(mode, "unknown")) {
        memset(ebuf, 0, 16);
        f = frame(99, ebuf, 16, &flen);
        rc = write_raw(fd, f, flen);
        free(f);
    } else if (!strcmp(mode, "range")) {
        /* blocks 4095 and 4096 of a 4096-block disk: the second is past
         * the end (the first block alone would be valid) */
        uint32_t bl = blocks_body(ebuf, DISK_SIZE / BS - 1, 2);
        rc = incmig__stream_send(st, INCMIG_REC_BLOCKS, ebuf, bl);
    } else if (!strcmp(mode, "bitmap")) {
        struct incmig__round x = { .round = 0, .blocks = 64 };
        int len = incmig__enc_round(&x, ebuf);
        rc = len < 0 ? -1 : incmig__stream_send(st, INCMIG_REC_ROUND, ebuf,
                                                (uint32_t)len);
        if (!rc)
            rc = incmig__stream_send(st, INCMIG_REC_SUSPEND, NULL, 0);
        /* runs form: 3 clear, 0 set (a zero run that is not the first),
         * then the rest: invalid */
        uint8_t data[] = { 1, 3, 0, 0x80 | ((DISK_SIZE / BS - 3) & 0x7f),
                           (uint8_t)((DISK_SIZE / BS - 3) >> 7) };
        struct incmig__bitmap_rec br = {
            .disk = 0, .phase = INCMIG_PHASE_STOPCOPY, .first = 0,
            .nbits = DISK_SIZE / BS, .data = data, .len = sizeof data,
        };
        len = incmig__enc_bitmap_hdr(&br, ebuf);
        if (!rc && len < 0)
            rc = -1;
        if (!rc) {
            memcpy(ebuf + len, data, sizeof data);
            rc = incmig__stream_send(st, INCMIG_REC_BITMAP, ebuf,
                                     (uint32_t)(len + sizeof data));
        }
    } else if (!strcmp(mode, "silent")) {
        sleep(30);         /* a source that stalls after its handshake */
    } else if (!strcmp(mode, "order")) {
        rc = incmig__stream_send(st, INCMIG_REC_GO, NULL, 0);
    } else if (!strcmp(mode, "nocap-state")) {
        memset(ebuf, 0x5a, 4096);
        rc = incmig__stream_send(st, INCMIG_REC_XEN_STREAM, ebuf, 4096);
    } else if (!strcmp(mode, "suspend-early")) {
        memset(ebuf, 0x5a, 4096);
        rc = incmig__stream_send(st, INCMIG_REC_XEN_STREAM, ebuf, 4096);
        if (!rc)
            rc = incmig__stream_send(st, INCMIG_REC_SUSPEND, NULL, 0);
    } else if (!strcmp(mode, "bitmap-order") || !strcmp(mode, "ready-early") ||
               !strcmp(mode, "bitmap-late") || !strcmp(mode, "go-noready")) {
        struct incmig__round x = { .round = 0, .blocks = 64 };
        int len = incmig__enc_round(&x, ebuf);
        rc = len < 0 ? -1 : incmig__stream_send(st, INCMIG_REC_ROUND, ebuf,
                                                (uint32_t)len);
        if (!rc)
            rc = incmig__stream_send(st, INCMIG_REC_SUSPEND, NULL, 0);
        struct incmig__bitmap bm = {0};
        if (!rc)
            rc = incmig__bitmap_init(&bm, DISK_SIZE / BS);
        if (!rc && !strcmp(mode, "bitmap-order")) {
            /* the chunk of bits 100..199, before the one of 0..99 */
            uint8_t *enc = NULL;
            size_t elen = 0;
            rc = incmig__bitmap_encode(&bm, 100, 100, &enc, &elen);
            struct incmig__bitmap_rec br = {
                .disk = 0, .phase = INCMIG_PHASE_STOPCOPY, .first = 100,
                .nbits = 100, .data = enc, .len = (uint32_t)elen,
            };
            len = rc ? -1 : incmig__enc_bitmap_hdr(&br, ebuf);
            if (len < 0) {
                rc = -1;
            } else {
                memcpy(ebuf + len, enc, elen);
                rc = incmig__stream_send(st, INCMIG_REC_BITMAP, ebuf,
                                         (uint32_t)(len + elen));
            }
            free(enc);
        } else if (!rc && !strcmp(mode, "ready-early")) {
            rc = incmig__stream_send(st, INCMIG_REC_READY, NULL, 0);
        } else if (!rc && !strcmp(mode, "go-noready")) {
            /* the whole bitmap, then GO without READY */
            rc = incmig__send_bitmap_recs(st, 0, INCMIG_PHASE_STOPCOPY, &bm,
                                          ebuf);
            if (!rc)
                rc = incmig__stream_send(st, INCMIG_REC_GO, NULL, 0);
        } else if (!rc) {
            rc = incmig__send_bitmap_recs(st, 0, INCMIG_PHASE_STOPCOPY, &bm,
                                          ebuf);
            if (!rc)
                rc = incmig__stream_send(st, INCMIG_REC_READY, NULL, 0);
            if (!rc)
                rc = incmig__send_bitmap_recs(st, 0, INCMIG_PHASE_STOPCOPY,
                                              &bm, ebuf);
        }
        incmig__bitmap_dispose(&bm);
    } else {
        fprintf(stderr, "badpeer: unknown source mode %s\n", mode);
        return 2;
    }
    return rc ? 1 : 0;
}

static int play_source(const char *mode, const char *hostport)
{
    struct incmig__stream st;
    int fd, rc;

    if (incmig__tcp_connect(hostport, &fd))
        return die("cannot connect");
    set_timeout(fd, 15);
    if (incmig__stream_init(&st, fd, fd))
        return die("stream init failed");
    if (!strcmp(mode, "suspend-early"))
        src_caps = INCMIG_CAP_STATE;
    if (!strcmp(mode, "version") || !strcmp(mode, "magic")) {
        uint8_t hdr[16];
        raw_header(hdr, 2);
        if (!strcmp(mode, "magic"))
            memcpy(hdr, "SSH-2.0-OpenSSH_9", 16);
        rc = write_raw(fd, hdr, sizeof hdr) ? 1 : 0;
        if (!rc && incmig__stream_recv_header(&st))
            rc = die("no header from the receiver");
    } else {
        rc = source_prefix(&st);
        if (!rc)
            rc = source_fault(&st, fd, mode);
    }
    if (rc == 2) {
        incmig__stream_dispose(&st);
        return 2;
    }
    drain_peer(&st);
    incmig__stream_dispose(&st);
    return rc;
}

/* ---- receiver ------------------------------------------------------------- */

static int play_receiver(const char *mode, const char *port)
{
    struct incmig__stream st;
    struct incmig__rec r;
    struct incmig__hello h;
    char addr[64];
    int lfd, fd, rc = 0;
    bool known = !strcmp(mode, "version") || !strcmp(mode, "nack") ||
                 !strcmp(mode, "corrupt") || !strcmp(mode, "close-during-push") ||
                 !strcmp(mode, "silent") || !strcmp(mode, "ready-in-push");

    if (!known) {
        fprintf(stderr, "badpeer: unknown receiver mode %s\n", mode);
        return 2;
    }
    snprintf(addr, sizeof addr, "127.0.0.1:%s", port);
    if (incmig__tcp_listen(addr, &lfd))
        return die("cannot listen");
    printf("ready\n");
    fflush(stdout);
    if (incmig__tcp_accept(lfd, 30, &fd))
        return die("no source connected");
    close(lfd);
    set_timeout(fd, 15);
    if (incmig__stream_init(&st, fd, fd))
        return die("stream init failed");

    if (!strcmp(mode, "silent")) {
        sleep(30);         /* accepts, then never says a word */
        incmig__stream_dispose(&st);
        return 0;
    }
    if (!strcmp(mode, "version")) {
        uint8_t hdr[16];
        raw_header(hdr, 2);
        rc = write_raw(fd, hdr, sizeof hdr) ? 1 : 0;
        goto drain;
    }
    if (incmig__stream_send_header(&st) || incmig__stream_recv_header(&st)) {
        rc = die("stream header exchange failed");
        goto drain;
    }
    if (incmig__stream_recv(&st, &r) || incmig__dec_hello(&r, &h)) {
        rc = die("no HELLO from the source");
        goto drain;
    }
    h.role = 1;
    /* what the real receiver answers: the source's capabilities that it
     * also has (the state stream, compression, resume) */
    h.caps &= INCMIG_CAP_ZLIB | INCMIG_CAP_RESUME | INCMIG_CAP_STATE;
    int len = incmig__enc_hello(&h, ebuf);
    if (len < 0)
        abort();
    if (!strcmp(mode, "corrupt")) {
        size_t flen;
        uint8_t *f = frame(INCMIG_REC_HELLO, ebuf, (uint32_t)len, &flen);
        f[8 + 2] ^= 0x01;   /* inside the version field */
        rc = write_raw(fd, f, flen) ? 1 : 0;
        free(f);
        goto drain;
    }
    if (incmig__stream_send(&st, INCMIG_REC_HELLO, ebuf, (uint32_t)len)) {
        rc = die("sending HELLO failed");
        goto drain;
    }
    struct incmig__disk_rec d;
    if (incmig__stream_recv(&st, &r) || incmig__dec_disk(&r, &d)) {
        rc = die("no DISK from the source");
        goto drain;
    }
    printf("disk %s: %" PRIu64 " bytes, %u-byte blocks\n", d.name, d.size,
           d.block_size);
    struct incmig__disk_ack a = { .index = d.index };
    if (!strcmp(mode, "nack")) {
        a.status = INCMIG_ENOSPC;
        snprintf(a.msg, sizeof a.msg, "test: no space");
    } else {
        snprintf(a.msg, sizeof a.msg, "ok");
    }
    len = incmig__enc_disk_ack(&a, ebuf);
    if (len < 0 || incmig__stream_send(&st, INCMIG_REC_DISK_ACK, ebuf,
                                       (uint32_t)len)) {
        rc = die("sending DISK_ACK failed");
        goto drain;
    }
    if (!strcmp(mode, "ready-in-push")) {
        /* READY where only a ROUND echo may come: the source's table */
        if (incmig__stream_send(&st, INCMIG_REC_READY, NULL, 0))
            rc = die("sending READY failed");
        goto drain;
    }
    if (!strcmp(mode, "close-during-push")) {
        int n = 0;
        while (n < 4 && incmig__stream_recv(&st, &r) == 0)
            if (r.type == INCMIG_REC_BLOCKS)
                n++;
        printf("read %d BLOCKS records, closing\n", n);
        fflush(stdout);
        if (n < 4)
            rc = die("the source sent fewer BLOCKS than expected");
        incmig__stream_dispose(&st);   /* unread data pending: RST */
        return rc;
    }
drain:
    drain_peer(&st);
    incmig__stream_dispose(&st);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 4) {
        fprintf(stderr, "usage: badpeer source MODE HOST:PORT\n"
                        "       badpeer receiver MODE PORT\n");
        return 2;
    }
    ebuf = malloc(INCMIG_REC_MAX);
    if (!ebuf)
        return 1;
    if (!strcmp(argv[1], "source"))
        return play_source(argv[2], argv[3]);
    if (!strcmp(argv[1], "receiver"))
        return play_receiver(argv[2], argv[3]);
    fprintf(stderr, "usage: badpeer source|receiver MODE ADDR\n");
    return 2;
}
