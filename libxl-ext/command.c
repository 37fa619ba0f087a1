/* command.c: what incmig_migrate_main and incmig_receive_main share, the
 * habits of a command run by a toolstack (xl-incmig, or xl with its
 * --incremental-storage patch): usage errors that say where the help is,
 * and the signal dispositions of a long-running command, taken for the
 * duration of the call and given back, since the caller (xl) has its own.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "incmig-internal.h"

void incmig__usage_error(const char *name, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `%s --help`)\n", name);
}

static void on_stop(int sig)
{
    (void)sig;
    incmig_stop();
}

void incmig__signals_take(struct incmig__signals *s, bool hup)
{
    struct sigaction stop = { .sa_handler = on_stop };
    struct sigaction ign = { .sa_handler = SIG_IGN };

    sigemptyset(&stop.sa_mask);
    sigemptyset(&ign.sa_mask);
    s->hup = hup;
    sigaction(SIGINT, &stop, &s->old_int);
    sigaction(SIGTERM, &stop, &s->old_term);
    /* a lost peer is an error return, never a signal */
    sigaction(SIGPIPE, &ign, &s->old_pipe);
    if (hup)
        sigaction(SIGHUP, &ign, &s->old_hup);
}

void incmig__signals_restore(const struct incmig__signals *s)
{
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
    sigaction(SIGPIPE, &s->old_pipe, NULL);
    if (s->hup)
        sigaction(SIGHUP, &s->old_hup, NULL);
}
