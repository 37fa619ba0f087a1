/* mkcorpus-nbd.c: writes the seed corpus of fuzz-nbd.
 *
 * Each file is what one NBD client sends on one connection (doc/proto.md,
 * fixed newstyle), so the fuzzer starts from inputs that reach every
 * option and command:
 *   go-session       flags, GO, READ, WRITE, FLUSH, FUA WRITE, TRIM,
 *                    WRITE_ZEROES (NO_HOLE|FUA), DISC
 *   exportname       flags without NO_ZEROES, EXPORT_NAME "disk", READ, DISC
 *   info-go          INFO with a name and two info requests, then GO
 *   list-abort       LIST, ABORT
 *   abort            ABORT
 *   unsupported      STARTTLS, STRUCTURED_REPLY, LIST with a payload,
 *                    then GO
 *   bad-go           malformed GOs and INFOs, then a good GO
 *   bad-flags        client flags 0
 *   bad-opt-magic    an option with the wrong magic
 *   opt-too-long     an option longer than the 4096 byte limit
 *   bad-req-magic    GO, then a request with the wrong magic
 *   write-too-long   GO, then a WRITE over the 32 MiB maximum
 *   rejected         GO, then requests that are refused (out of range,
 *                    bad flags, unknown command, WRITE with its payload,
 *                    FLUSH with a length), then a READ that must still be
 *                    in step
 * Not built by `make`; regenerate by hand after a protocol change:
 *   cc tests/fuzz/mkcorpus-nbd.c -o mkcorpus-nbd
 *   ./mkcorpus-nbd tests/fuzz/corpus/nbd
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IHAVEOPT UINT64_C(0x49484156454f5054)
#define REQUEST_MAGIC 0x25609513u

enum { OPT_EXPORT_NAME = 1, OPT_ABORT = 2, OPT_LIST = 3, OPT_STARTTLS = 5,
       OPT_INFO = 6, OPT_GO = 7, OPT_STRUCTURED_REPLY = 8 };
enum { CMD_READ = 0, CMD_WRITE = 1, CMD_DISC = 2, CMD_FLUSH = 3,
       CMD_TRIM = 4, CMD_WRITE_ZEROES = 6 };
enum { FUA = 1, NO_HOLE = 2 };

static uint8_t buf[65536];
static size_t n;
static uint64_t cookie;

static void u8(uint8_t v)
{
    if (n >= sizeof buf) {
        fprintf(stderr, "mkcorpus-nbd: seed too large\n");
        exit(1);
    }
    buf[n++] = v;
}
static void u16(uint16_t v) { u8(v >> 8); u8((uint8_t)v); }
static void u32(uint32_t v) { u16(v >> 16); u16((uint16_t)v); }
static void u64(uint64_t v) { u32(v >> 32); u32((uint32_t)v); }

static void flags(uint32_t f) { n = 0; cookie = 1; u32(f); }

static void opt(uint32_t o, const void *data, uint32_t len)
{
    u64(IHAVEOPT);
    u32(o);
    u32(len);
    for (uint32_t i = 0; i < len; i++)
        u8(((const uint8_t *)data)[i]);
}

/* INFO/GO payload: name, then info requests. */
static void opt_info(uint32_t o, const char *name, int nreq,
                     const uint16_t *req)
{
    uint8_t d[256];
    size_t l = strlen(name), k = 0;
    d[k++] = (uint8_t)(l >> 24); d[k++] = (uint8_t)(l >> 16);
    d[k++] = (uint8_t)(l >> 8); d[k++] = (uint8_t)l;
    memcpy(d + k, name, l);
    k += l;
    d[k++] = (uint8_t)(nreq >> 8); d[k++] = (uint8_t)nreq;
    for (int i = 0; i < nreq; i++) {
        d[k++] = (uint8_t)(req[i] >> 8);
        d[k++] = (uint8_t)req[i];
    }
    opt(o, d, (uint32_t)k);
}

static void go(void) { flags(3); opt_info(OPT_GO, "", 0, NULL); }

static void req(uint16_t f, uint16_t type, uint64_t off, uint32_t count)
{
    u32(REQUEST_MAGIC);
    u16(f);
    u16(type);
    u64(cookie++);
    u64(off);
    u32(count);
}

static void write_req(uint16_t f, uint64_t off, uint32_t count)
{
    req(f, CMD_WRITE, off, count);
    for (uint32_t i = 0; i < count; i++)
        u8((uint8_t)(i * 7 + 1));
}

static void out(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *dir;
    static const uint16_t infos[2] = { 0, 3 };
    static const uint8_t junk[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];

    go();
    req(0, CMD_READ, 0, 4096);
    write_req(0, 512, 512);
    req(0, CMD_FLUSH, 0, 0);
    write_req(FUA, 4096, 100);
    req(0, CMD_TRIM, 8192, 4096);
    req(NO_HOLE | FUA, CMD_WRITE_ZEROES, 12288, 4096);
    req(0, CMD_DISC, 0, 0);
    out(dir, "go-session");

    flags(1);
    opt(OPT_EXPORT_NAME, "disk", 4);
    req(0, CMD_READ, 1000, 1000);
    req(0, CMD_DISC, 0, 0);
    out(dir, "exportname");

    flags(3);
    opt_info(OPT_INFO, "disk", 2, infos);
    opt_info(OPT_GO, "disk", 2, infos);
    req(0, CMD_READ, 0, 512);
    out(dir, "info-go");

    flags(3);
    opt(OPT_LIST, NULL, 0);
    opt(OPT_ABORT, NULL, 0);
    out(dir, "list-abort");

    flags(3);
    opt(OPT_ABORT, NULL, 0);
    out(dir, "abort");

    flags(3);
    opt(OPT_STARTTLS, NULL, 0);
    opt(OPT_STRUCTURED_REPLY, NULL, 0);
    opt(OPT_LIST, junk, sizeof junk);
    opt_info(OPT_GO, "", 0, NULL);
    req(FUA, CMD_WRITE_ZEROES, 0, 65536);
    out(dir, "unsupported");

    flags(3);
    opt(OPT_GO, junk, 3);                      /* shorter than 6 */
    {
        uint8_t d[10] = { 0, 0, 0, 200, 'a', 'b', 0, 0, 0, 0 };
        opt(OPT_GO, d, sizeof d);              /* name longer than data */
        d[3] = 2; d[6] = 0; d[7] = 5;
        opt(OPT_INFO, d, sizeof d);            /* request count wrong */
    }
    opt_info(OPT_GO, "", 0, NULL);
    out(dir, "bad-go");

    flags(0);
    opt(OPT_GO, NULL, 0);
    out(dir, "bad-flags");

    flags(3);
    u64(IHAVEOPT ^ 1);
    u32(OPT_GO);
    u32(0);
    out(dir, "bad-opt-magic");

    flags(3);
    u64(IHAVEOPT);
    u32(OPT_GO);
    u32(4097);
    out(dir, "opt-too-long");

    go();
    u32(REQUEST_MAGIC ^ 0x100);
    u16(0); u16(CMD_READ); u64(1); u64(0); u32(512);
    out(dir, "bad-req-magic");

    go();
    req(0, CMD_WRITE, 0, (UINT32_C(32) << 20) + 1);
    out(dir, "write-too-long");

    go();
    req(0, CMD_READ, UINT64_MAX - 10, 512);     /* offset + count wraps */
    req(0, CMD_READ, 0, 0);                     /* empty */
    req(FUA, CMD_READ, 0, 512);                 /* flag not allowed */
    req(NO_HOLE, CMD_TRIM, 0, 512);
    req(0, 5, 0, 512);                          /* unknown command */
    write_req(0, UINT64_C(1) << 40, 300);       /* past the end: skipped */
    req(0, CMD_FLUSH, 0, 512);
    req(0, CMD_READ, 0, 512);                   /* still in step */
    req(0, CMD_DISC, 0, 0);
    out(dir, "rejected");
    return 0;
}
