/* tls.c: TLS (GnuTLS) for the TCP transports, and who may use TCP in clear.
 *
 * Entry points (incmig-internal.h, "security"):
 *   incmig_security_setup   (public) the process's keys and policy, once
 *   incmig__tls_on          keys were given: every TCP connection is TLS
 *   incmig__tls_check       before listening/connecting on TCP: clear TCP
 *                           off loopback needs --tls=off
 *   incmig__tls_wrap        handshake on a connected TCP fd, then hand back
 *                           a plain fd (one end of a socketpair) relayed to
 *                           the session by a thread
 *
 * The relay keeps TLS out of the stream and the NBD server: both go on
 * reading and writing an ordinary socket with their own deadlines, and
 * NBD's STARTTLS only swaps the connection's fd.  One thread per
 * connection moves bytes both ways with non-blocking I/O (a GnuTLS
 * session is not shared between threads); it ends when our side closes
 * its end (the peer then sees close_notify) or the peer goes away (our
 * side then sees EOF).  What the process wrote just before it exits (a
 * final record) is still in the socketpair or the relay: an atexit
 * handler waits (at most RELAY_DRAIN_S) until every relay has handed its
 * bytes to the kernel, as a plain socket's close would have.
 *
 * Credentials, as nbdkit and QEMU take them:
 *   PSK    a file of "username:hexkey" lines (psktool's format); the
 *          server accepts any of them, the client uses --tls-username's
 *          (default: the first line's).
 *   X.509  a directory with ca-cert.pem, server-cert.pem, server-key.pem,
 *          client-cert.pem, client-key.pem (QEMU's tls-creds-x509 layout).
 *          Both sides present their certificate and verify the other's
 *          against ca-cert.pem; the client also checks the server's name
 *          (the host it connected to).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "incmig-internal.h"

#define PRIO_PSK "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"
#define PRIO_X509 "NORMAL"
#define RELAY_BUF 16384
#define RELAY_DRAIN_S 5.0

static struct {
    bool off;                       /* --tls=off */
    gnutls_psk_server_credentials_t psk_srv;
    gnutls_psk_client_credentials_t psk_cli;
    gnutls_certificate_credentials_t x509_srv, x509_cli;
    const char *how;                /* "PSK" / "X.509", for messages */
} tls;

bool incmig__tls_on(void)
{
    return tls.how != NULL;
}

/* Secrets others can read are worth saying so (ssh refuses them; nbdkit
 * and QEMU say nothing: a warning is the middle way). */
static void check_secret(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        INFO("warning: %s is readable by other users (mode %03o): whoever "
             "reads it can pass for this host; chmod 600 it", path,
             (unsigned)(st.st_mode & 0777));
}

static int gnutls_fail(const char *what, const char *path, int r)
{
    ERR("TLS: %s %s: %s", what, path, gnutls_strerror(r));
    return INCMIG_EINVAL;
}

/* The client's key: line `user`'s of the file, or its first line's. */
static int load_psk_client(const char *file, const char *user)
{
    char line[1024], name[256];
    FILE *f = fopen(file, "re");
    int rc = INCMIG_EINVAL;
    bool found = false;

    if (!f) {
        ERR("TLS: cannot read the pre-shared key file %s: %s", file,
            strerror(errno));
        return INCMIG_EINVAL;
    }
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        line[strcspn(line, "\r\n")] = '\0';
        if (!colon || colon == line || (size_t)(colon - line) >= sizeof name)
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(colon - line), line);
        if (user && strcmp(user, name))
            continue;
        found = true;
        const char *hex = colon + 1;
        size_t n = strlen(hex);
        if (n == 0 || n % 2 || strspn(hex, "0123456789abcdefABCDEF") != n) {
            ERR("TLS: the key of '%s' in %s is not hexadecimal", name, file);
            break;
        }
        gnutls_datum_t key = { .data = (unsigned char *)hex,
                               .size = (unsigned)n };
        int r = gnutls_psk_allocate_client_credentials(&tls.psk_cli);
        if (r == 0)
            r = gnutls_psk_set_client_credentials(tls.psk_cli, name, &key,
                                                  GNUTLS_PSK_KEY_HEX);
        rc = r ? gnutls_fail("cannot use the key in", file, r) : 0;
        break;
    }
    if (!found)
        ERR("TLS: no %s%s%s line of the form USERNAME:HEXKEY in %s",
            user ? "'" : "", user ? user : "", user ? "'" : "", file);
    explicit_bzero(line, sizeof line);
    fclose(f);
    return rc;
}

static int load_psk(const char *file, const char *user)
{
    check_secret(file);
    int r = gnutls_psk_allocate_server_credentials(&tls.psk_srv);
    if (r == 0)
        r = gnutls_psk_set_server_credentials_file(tls.psk_srv, file);
    if (r)
        return gnutls_fail("cannot read the pre-shared keys in", file, r);
    return load_psk_client(file, user);
}

/* One side's certificate and key, and the CA that verifies the other's.
 * A missing pair disables that side only (a receiver needs no client
 * pair); using a side without its pair is an error at wrap time. */
static int load_x509_side(const char *dir, const char *who,
                          gnutls_certificate_credentials_t *c_r)
{
    char ca[4096], cert[4096], key[4096];
    snprintf(ca, sizeof ca, "%s/ca-cert.pem", dir);
    snprintf(cert, sizeof cert, "%s/%s-cert.pem", dir, who);
    snprintf(key, sizeof key, "%s/%s-key.pem", dir, who);
    if (access(cert, R_OK) || access(key, R_OK))
        return 0;
    check_secret(key);
    int r = gnutls_certificate_allocate_credentials(c_r);
    if (r)
        return gnutls_fail("cannot set up certificates from", dir, r);
    r = gnutls_certificate_set_x509_trust_file(*c_r, ca, GNUTLS_X509_FMT_PEM);
    if (r <= 0)
        return gnutls_fail("cannot load the CA certificate", ca,
                           r ? r : GNUTLS_E_FILE_ERROR);
    r = gnutls_certificate_set_x509_key_file(*c_r, cert, key,
                                             GNUTLS_X509_FMT_PEM);
    if (r)
        return gnutls_fail("cannot load the certificate and key", cert, r);
    return 0;
}

static int load_x509(const char *dir)
{
    int rc = load_x509_side(dir, "server", &tls.x509_srv);
    if (!rc)
        rc = load_x509_side(dir, "client", &tls.x509_cli);
    if (!rc && !tls.x509_srv && !tls.x509_cli) {
        ERR("TLS: %s holds neither server-cert.pem/server-key.pem nor "
            "client-cert.pem/client-key.pem (with ca-cert.pem)", dir);
        rc = INCMIG_EINVAL;
    }
    return rc;
}

int incmig_security_setup(const struct incmig_security *o)
{
    int rc = 0;

    if (o->tls_off + !!o->psk_file + !!o->x509_dir > 1) {
        ERR("TLS: give one of --tls=off, --tls-psk and --tls-x509");
        return INCMIG_EINVAL;
    }
    if (o->psk_user && !o->psk_file) {
        ERR("TLS: --tls-username goes with --tls-psk");
        return INCMIG_EINVAL;
    }
    tls.off = o->tls_off;
    if (o->psk_file) {
        rc = load_psk(o->psk_file, o->psk_user);
        tls.how = "PSK";
    } else if (o->x509_dir) {
        rc = load_x509(o->x509_dir);
        tls.how = "X.509";
    }
    if (!rc)
        rc = incmig__socket_group_set(o->socket_group);
    return rc;
}

/* ---- policy ------------------------------------------------------------- */

static bool addr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr)
                >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(
            &((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

bool incmig__tcp_loopback(const struct addrinfo *ai)
{
    for (; ai; ai = ai->ai_next)
        if (!addr_loopback(ai->ai_addr))
            return false;
    return true;
}

int incmig__tls_check(const char *hostport, const struct addrinfo *ai)
{
    if (tls.how || tls.off || incmig__tcp_loopback(ai))
        return 0;
    ERR("%s is not a loopback address: plain TCP would let anyone on the "
        "network read and change the guest's disks.  Give keys (--tls-psk "
        "FILE of USERNAME:HEXKEY lines, or --tls-x509 DIR with ca-cert.pem "
        "and the server/client certificates) on both sides, use the ssh "
        "transport, or accept the risk with --tls=off", hostport);
    return INCMIG_EINVAL;
}

/* ---- handshake ---------------------------------------------------------- */

static int session_new(bool server, const char *host, gnutls_session_t *s_r)
{
    gnutls_session_t s;
    int r = gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
    if (r)
        return r;
    *s_r = s;
    if (tls.psk_srv) {
        r = gnutls_priority_set_direct(s, PRIO_PSK, NULL);
        if (!r)
            r = server ? gnutls_credentials_set(s, GNUTLS_CRD_PSK, tls.psk_srv)
                       : gnutls_credentials_set(s, GNUTLS_CRD_PSK, tls.psk_cli);
        return r;
    }
    gnutls_certificate_credentials_t c = server ? tls.x509_srv : tls.x509_cli;
    if (!c) {
        ERR("TLS: the certificate directory has no %s-cert.pem and "
            "%s-key.pem", server ? "server" : "client",
            server ? "server" : "client");
        return GNUTLS_E_CERTIFICATE_ERROR;
    }
    r = gnutls_priority_set_direct(s, PRIO_X509, NULL);
    if (!r)
        r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c);
    if (r)
        return r;
    if (server)
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    else if (host)
        r = gnutls_server_name_set(s, GNUTLS_NAME_DNS, host, strlen(host));
    gnutls_session_set_verify_cert(s, server ? NULL : host, 0);
    return r;
}

/* Why a handshake failed, in words an operator can act on. */
static void handshake_error(gnutls_session_t s, int r, bool server,
                            const char *peer, bool plain)
{
    const char *hint = tls.psk_srv
        ? "the peer has another pre-shared key (or none)"
        : "the peer's certificate is not signed by our ca-cert.pem, "
          "names another host, or is missing";
    if (plain) {
        PEER_ERR("refused %s: it does not speak TLS (give it the same "
            "--tls-psk or --tls-x509 as this side)", peer);
        return;
    }
    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = { 0 };
        unsigned status = gnutls_session_get_verify_cert_status(s);
        if (gnutls_certificate_verification_status_print(
                status, GNUTLS_CRT_X509, &out, 0) == 0) {
            PEER_ERR("refused %s: TLS (X.509): %s", peer, out.data);
            gnutls_free(out.data);
            return;
        }
    }
    PEER_ERR("%s %s: TLS (%s) handshake failed: %s (%s%s)",
        server ? "refused" : "cannot talk to", peer, tls.how,
        gnutls_strerror(r), hint,
        server ? "" : ", or the receiver does not use TLS");
}

/* A TLS handshake record starts 0x16; incmig's stream, NBD, ssh do not.
 * Peeked, so the handshake still sees every byte. */
static bool peer_speaks_plain(int fd)
{
    uint8_t b[1];
    return recv(fd, b, 1, MSG_PEEK) == 1 && b[0] != 0x16;
}

/* ---- relay -------------------------------------------------------------- */

struct relay {
    struct relay *next;                       /* relays, under relays_lock */
    atomic_bool sending;                      /* uplen != 0 */
    gnutls_session_t s;
    int net, loc;
    uint8_t up[RELAY_BUF], down[RELAY_BUF];   /* loc->net, net->loc */
    size_t uplen, upoff, dlen, doff;
    bool loc_eof, net_eof, loc_shut, bye_sent;
};

static pthread_mutex_t relays_lock = PTHREAD_MUTEX_INITIALIZER;
static struct relay *relays;
static pthread_once_t drain_once = PTHREAD_ONCE_INIT;

static void relays_drain(void)
{
    double end = incmig__now() + RELAY_DRAIN_S;
    for (;;) {
        bool busy = false;
        pthread_mutex_lock(&relays_lock);
        for (struct relay *x = relays; x && !busy; x = x->next) {
            int n = 0;
            busy = atomic_load(&x->sending) ||
                   (ioctl(x->loc, FIONREAD, &n) == 0 && n > 0);
        }
        pthread_mutex_unlock(&relays_lock);
        if (!busy || incmig__now() >= end)
            return;
        usleep(5000);
    }
}

static void drain_at_exit(void)
{
    atexit(relays_drain);
}

/* Moves what it can without blocking: 1 progress, 0 none, -1 done. */
static int relay_step(struct relay *x)
{
    int moved = 0;
    ssize_t r;

    if (!x->dlen && !x->net_eof) {
        r = gnutls_record_recv(x->s, x->down, sizeof x->down);
        if (r > 0) {
            x->dlen = (size_t)r;
            x->doff = 0;
            moved = 1;
        } else if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION) {
            x->net_eof = true;
            moved = 1;
        } else if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
            DBG("TLS relay: %s", gnutls_strerror((int)r));
            return -1;
        }
    }
    if (x->dlen) {
        r = send(x->loc, x->down + x->doff, x->dlen - x->doff,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r > 0) {
            x->doff += (size_t)r;
            if (x->doff == x->dlen)
                x->dlen = 0;
            moved = 1;
        } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;                   /* our side closed */
        }
    }
    if (x->net_eof && !x->dlen && !x->loc_shut) {
        shutdown(x->loc, SHUT_WR);
        x->loc_shut = true;
    }
    if (!x->uplen && !x->loc_eof) {
        r = recv(x->loc, x->up, sizeof x->up, MSG_DONTWAIT);
        if (r > 0) {
            x->uplen = (size_t)r;
            x->upoff = 0;
            moved = 1;
        } else if (r == 0) {
            x->loc_eof = true;
            moved = 1;
        } else if (errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    if (x->uplen) {
        r = gnutls_record_send(x->s, x->up + x->upoff, x->uplen - x->upoff);
        if (r > 0) {
            x->upoff += (size_t)r;
            if (x->upoff == x->uplen)
                x->uplen = 0;
            moved = 1;
        } else if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
            return -1;
        }
    }
    if (x->loc_eof && !x->uplen && !x->bye_sent) {
        r = gnutls_bye(x->s, GNUTLS_SHUT_WR);
        if (r == 0) {
            shutdown(x->net, SHUT_WR);
            x->bye_sent = true;
            moved = 1;
        } else if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
            return -1;
        }
    }
    if (x->net_eof && x->loc_shut && x->bye_sent)
        return -1;                       /* both ways finished */
    return moved;
}

static void *relay_main(void *arg)
{
    struct relay *x = arg;

    for (;;) {
        int m = relay_step(x);
        atomic_store(&x->sending, x->uplen != 0);
        if (m < 0)
            break;
        if (m > 0 || gnutls_record_check_pending(x->s))
            continue;
        int dir = gnutls_record_get_direction(x->s);
        struct pollfd p[2] = {
            { .fd = x->net, .events = (short)(
                  (!x->dlen && !x->net_eof ? POLLIN : 0) |
                  (x->uplen || (x->loc_eof && !x->bye_sent) ? POLLOUT : 0) |
                  (dir ? POLLOUT : 0)) },
            { .fd = x->loc, .events = (short)(
                  (!x->uplen && !x->loc_eof ? POLLIN : 0) |
                  (x->dlen ? POLLOUT : 0)) },
        };
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        /* our side closed its end entirely: nothing more to deliver */
        if ((p[1].revents & (POLLHUP | POLLERR)) && x->loc_eof)
            break;
    }
    pthread_mutex_lock(&relays_lock);
    struct relay **pp = &relays;
    while (*pp != x)
        pp = &(*pp)->next;
    *pp = x->next;
    pthread_mutex_unlock(&relays_lock);
    gnutls_deinit(x->s);
    close(x->net);
    close(x->loc);
    free(x);
    return NULL;
}

int incmig__tls_wrap(int fd, bool server, const char *host,
                     const char *peer, double timeout_s, int *fd_r)
{
    gnutls_session_t s = NULL;
    struct relay *x = NULL;
    int sv[2] = { -1, -1 }, rc = INCMIG_ELINK;   /* a failed handshake */

    *fd_r = -1;
    int r = session_new(server, host, &s);
    if (r) {
        if (r != GNUTLS_E_CERTIFICATE_ERROR)
            ERR("TLS: cannot set up a session: %s", gnutls_strerror(r));
        rc = INCMIG_EINVAL;
        goto out;
    }
    /* blocking, bounded: the handshake is a peer's to finish in time */
    struct timeval tv = { .tv_sec = (time_t)timeout_s,
                          .tv_usec = (suseconds_t)((timeout_s -
                                                    (time_t)timeout_s) * 1e6) };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, (unsigned)(timeout_s * 1000));
    if (server && peer_speaks_plain(fd)) {
        handshake_error(s, 0, server, peer, true);
        goto out;
    }
    do {
        r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r) && !incmig__stop_requested);
    if (r < 0) {
        handshake_error(s, r, server, peer, false);
        goto out;
    }
    if (incmig__verbosity >= 2) {
        char *desc = gnutls_session_get_desc(s);
        DBG("TLS (%s) with %s: %s", tls.how, peer, desc ? desc : "");
        gnutls_free(desc);
    }
    tv = (struct timeval){ 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        fcntl(fd, F_SETFL, O_NONBLOCK) < 0 || !(x = calloc(1, sizeof *x))) {
        LOGE("TLS: cannot set up the relay");
        rc = INCMIG_EIO;
        goto out;
    }
    x->s = s;
    x->net = fd;
    x->loc = sv[1];
    pthread_once(&drain_once, drain_at_exit);
    pthread_mutex_lock(&relays_lock);
    x->next = relays;
    relays = x;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&t, &a, relay_main, x);
    pthread_attr_destroy(&a);
    if (r)
        relays = x->next;
    pthread_mutex_unlock(&relays_lock);
    if (r) {
        errno = r;
        LOGE("TLS: cannot start the relay thread");
        rc = INCMIG_EIO;
        goto out;
    }
    *fd_r = sv[0];
    return 0;

out:
    free(x);
    if (s)
        gnutls_deinit(s);
    close(fd);
    if (sv[0] >= 0) {
        close(sv[0]);
        close(sv[1]);
    }
    return rc;
}
