/* command-security.c: the options that say who may connect (--tls,
 * --tls-psk, --tls-username, --tls-x509, --socket-group), parsed the same
 * way by every command that opens a transport: migrate and migrate-receive
 * here in the library (so xl's --incremental-storage gets them too), and
 * xl-incmig serve.  Each puts INCMIG_SECURITY_OPTIONS in its getopt table,
 * hands the codes to incmig_security_option, and calls
 * incmig_security_setup before its work. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "incmig-internal.h"

const char *incmig_security_help(void)
{
    return
    "  --tls-psk FILE     TLS with pre-shared keys (USERNAME:HEXKEY lines,\n"
    "                     as psktool writes them) on every TCP connection\n"
    "  --tls-username NAME  the key of FILE to use as a client (default: "
    "first)\n"
    "  --tls-x509 DIR     TLS with certificates: DIR/ca-cert.pem and\n"
    "                     {server,client}-{cert,key}.pem\n"
    "  --tls=off          plain TCP even off loopback (trusted networks only)\n"
    "  --socket-group G   unix sockets 0660 for group G (default 0600)\n";
}

int incmig_security_option(struct incmig_security *s, const char *cmd,
                           int code, const char *arg)
{
    switch (code) {
    case INCMIG_OPT_TLS:
        if (strcmp(arg, "off")) {
            incmig__usage_error(cmd, "--tls takes 'off' (TLS is on when keys "
                                "are given with --tls-psk or --tls-x509)");
            return -1;
        }
        s->tls_off = 1;
        return 1;
    case INCMIG_OPT_TLS_PSK: s->psk_file = arg; return 1;
    case INCMIG_OPT_TLS_USER: s->psk_user = arg; return 1;
    case INCMIG_OPT_TLS_X509: s->x509_dir = arg; return 1;
    case INCMIG_OPT_SOCKET_GROUP: s->socket_group = arg; return 1;
    default: return 0;
    }
}
