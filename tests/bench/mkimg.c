/* mkimg.c: fast benchmark disk images.
 *
 *   mkimg PATH SIZE_MIB ALLOC_PERCENT [SEED]
 *
 * PATH becomes a SIZE_MIB MiB file whose 1 MiB extents are either random
 * data (ALLOC_PERCENT of them, spread evenly: extent i is allocated when
 * (i * 37) % 100 < ALLOC_PERCENT, as in tests/integration/lib.sh) or holes.
 * xorshift64* output, not /dev/urandom, so 16 GiB takes seconds; it does
 * not compress and has no zero blocks, which is what matters here.
 * Prints the allocated byte count on stdout.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: mkimg PATH SIZE_MIB ALLOC_PERCENT [SEED]\n");
        return 2;
    }
    uint64_t mib = strtoull(argv[2], NULL, 0);
    int pct = atoi(argv[3]);
    uint64_t x = argc > 4 ? strtoull(argv[4], NULL, 0) : 88172645463325252ull;
    if (x == 0)
        x = 1;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)(mib << 20)) < 0) {
        perror(argv[1]);
        return 1;
    }
    static uint64_t buf[(1 << 20) / 8];
    uint64_t alloc = 0;
    for (uint64_t i = 0; i < mib; i++) {
        if (pct < 100 && (int)((i * 37) % 100) >= pct)
            continue;
        for (size_t k = 0; k < sizeof buf / 8; k++) {
            x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
            buf[k] = x * 0x2545F4914F6CDD1Dull;
        }
        if (pwrite(fd, buf, sizeof buf, (off_t)(i << 20)) != sizeof buf) {
            perror("pwrite");
            return 1;
        }
        alloc += sizeof buf;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        perror("close");
        return 1;
    }
    printf("%llu\n", (unsigned long long)alloc);
    return 0;
}
