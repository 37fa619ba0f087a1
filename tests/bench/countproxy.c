/* countproxy.c: a TCP proxy that counts the bytes it carries (benchmarks).
 *
 *   countproxy LISTEN_PORT TARGET_HOST:PORT STATS_FILE [RATE_BPS]
 *
 * Listens on 127.0.0.1:LISTEN_PORT; each accepted connection is joined to
 * a new connection to the target, one thread per direction.  Every tool's
 * migration link goes through it, so "bytes on the wire" is counted the
 * same way for all of them (payload of the TCP streams, both directions).
 * RATE_BPS (optional, 0 = none) caps each direction with a token bucket:
 * a "link" cap for tools that have no cap of their own (nbdcopy).
 * STATS_FILE gets "up down connections" (up = client to target) every
 * 100 ms and at SIGTERM/SIGINT.  Prints "ready" on stdout when listening.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *target_host, *target_port, *stats_path;
static double rate;                     /* bytes/s per direction, 0 = none */
static _Atomic uint64_t count[2], conns;
static volatile sig_atomic_t stop;

struct bucket { pthread_mutex_t mu; double tokens, last; };
static struct bucket buckets[2] = {
    { PTHREAD_MUTEX_INITIALIZER, 0, 0 }, { PTHREAD_MUTEX_INITIALIZER, 0, 0 } };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Take n bytes' worth of tokens, sleeping while the bucket is in debt. */
static void take(struct bucket *b, size_t n)
{
    double wait;
    pthread_mutex_lock(&b->mu);
    double t = now_s();
    if (b->last == 0)
        b->last = t, b->tokens = rate / 50;
    b->tokens += (t - b->last) * rate;
    if (b->tokens > rate / 50)          /* burst: 20 ms of the rate */
        b->tokens = rate / 50;
    b->last = t;
    b->tokens -= n;
    wait = b->tokens < 0 ? -b->tokens / rate : 0;
    pthread_mutex_unlock(&b->mu);
    if (wait > 0) {
        struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

static void write_stats(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", stats_path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%llu %llu %llu\n", (unsigned long long)count[0],
            (unsigned long long)count[1], (unsigned long long)conns);
    if (fclose(f) == 0)
        rename(tmp, stats_path);
}

struct pump { int from, to, dir; };

static void *pump(void *arg)
{
    struct pump *p = arg;
    static __thread char buf[1 << 18];
    for (;;) {
        ssize_t r = read(p->from, buf, sizeof buf);
        if (r <= 0)
            break;
        if (rate > 0)
            take(&buckets[p->dir], (size_t)r);
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(p->to, buf + off, (size_t)(r - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                goto out;
            }
            off += w;
            count[p->dir] += (uint64_t)w;
        }
    }
out:
    shutdown(p->to, SHUT_WR);
    shutdown(p->from, SHUT_RD);
    return NULL;
}

static void *conn_thread(void *arg)
{
    int c = (int)(intptr_t)arg, t = -1, one = 1;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(target_host, target_port, &hints, &ai) != 0) {
        close(c);
        return NULL;
    }
    t = socket(ai->ai_family, SOCK_STREAM, 0);
    if (t < 0 || connect(t, ai->ai_addr, ai->ai_addrlen) < 0) {
        fprintf(stderr, "countproxy: connect to %s:%s: %s\n", target_host,
                target_port, strerror(errno));
        freeaddrinfo(ai);
        close(c);
        if (t >= 0)
            close(t);
        return NULL;
    }
    freeaddrinfo(ai);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A hop that counts bytes must not also queue them: with the
     * kernel's autotuned buffers (megabytes each way) a PULL demand
     * answer waited behind that much background data in this proxy
     * (64 GiB sparse: longest wait 82-198 ms; 10-41 ms with these). */
    int sz = 128 << 10;
    setsockopt(c, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(t, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(t, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    conns++;
    struct pump up = { c, t, 0 }, down = { t, c, 1 };
    pthread_t th;
    pthread_create(&th, NULL, pump, &down);
    pump(&up);
    pthread_join(th, NULL);
    close(c);
    close(t);
    write_stats();
    return NULL;
}

static void *stats_thread(void *arg)
{
    (void)arg;
    while (!stop) {
        write_stats();
        usleep(100000);
    }
    return NULL;
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    static char host[256];
    int one = 1;
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: countproxy LISTEN_PORT TARGET_HOST:PORT "
                "STATS_FILE [RATE_BPS]\n");
        return 2;
    }
    const char *colon = strrchr(argv[2], ':');
    if (!colon || (size_t)(colon - argv[2]) >= sizeof host)
        return 2;
    memcpy(host, argv[2], (size_t)(colon - argv[2]));
    target_host = host;
    target_port = colon + 1;
    stats_path = argv[3];
    rate = argc == 5 ? atof(argv[4]) : 0;

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET,
        .sin_port = htons((uint16_t)atoi(argv[1])),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 16) < 0) {
        perror("countproxy: listen");
        return 1;
    }
    struct sigaction act = { .sa_handler = on_signal };
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t st;
    pthread_create(&st, NULL, stats_thread, NULL);
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        int c = accept(l, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        pthread_t th;
        if (pthread_create(&th, NULL, conn_thread, (void *)(intptr_t)c) == 0)
            pthread_detach(th);
        else
            close(c);
    }
    write_stats();
    return 0;
}
