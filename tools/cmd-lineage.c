/* cmd-lineage.c: `xl-incmig lineage`, what a disk copy can prove.
 *
 * For each image: its generation, whether that claim holds and, if the
 * blocks written since are known, how many (incmig_lineage_info; the rules
 * are the spec's "Incremental migration").  The exit status says whether
 * every copy is proven, so a script (or an operator wondering why a
 * receiver refused a copy) can ask before a migration.
 *
 * Entry point: cmd_lineage().
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "incmig.h"
#include "xl-incmig.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: xl-incmig lineage [--block-size SIZE] [--json] IMAGE...\n"
"Show what each disk copy proves for an incremental migration: its\n"
"generation, whether the claim holds, and the blocks written since.\n"
"  --block-size SIZE  the tracking block size, 4K..1M (default 4K)\n"
"  --json             one JSON object per image, one per line\n"
"Exit status: 0 when every copy is proven, 1 otherwise, 2 usage.\n");
}

static void json_str(const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            printf("\\u%04x", (unsigned char)*p);
        else
            putchar(*p);
}

static void show(const char *image, const struct incmig_lineage_info *li,
                 int json)
{
    if (json) {
        printf("{\"image\":\"");
        json_str(image);
        printf("\",\"generation\":\"%s\",\"proven\":%s,\"bitmap\":%s,"
               "\"blocks\":%" PRIu64 ",\"changed_blocks\":%" PRIu64
               ",\"why\":\"", li->gen, li->valid ? "true" : "false",
               li->has_bitmap ? "true" : "false", li->blocks,
               li->changed_blocks);
        json_str(li->why);
        printf("\"}\n");
    } else if (li->valid && li->has_bitmap) {
        printf("%s: generation %s, proven; %" PRIu64 " of %" PRIu64
               " blocks written since\n", image, li->gen, li->changed_blocks,
               li->blocks);
    } else if (li->valid) {
        printf("%s: generation %s, proven; %s\n", image, li->gen, li->why);
    } else {
        printf("%s: not proven: %s\n", image, li->why);
    }
}

int cmd_lineage(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "block-size", required_argument, NULL, 'b' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t bs = 4096;
    int json = 0, c, ret = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (incmig_parse_size(optarg, &bs) || bs < 4096 ||
                bs > (1u << 20) || (bs & (bs - 1))) {
                xl_usage_error("lineage", "bad --block-size '%s': a power of "
                               "two from 4K to 1M", optarg);
                return 2;
            }
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        xl_usage_error("lineage", "no image given");
        return 2;
    }
    for (int i = optind; i < argc; i++) {
        struct incmig_lineage_info li;
        if (incmig_lineage_info(argv[i], (uint32_t)bs, &li)) {
            ret = 1;
            continue;
        }
        show(argv[i], &li, json);
        if (!li.valid)
            ret = 1;
    }
    return ret;
}
