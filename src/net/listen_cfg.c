/*
 * The listeners' keys: "listen", an array of listener objects. Checked
 * here as they load (net/listen.c parses them the same way), so a bad
 * address names its file, line, column and key.
 */
#include "net/listen_cfg.h"

#include <stddef.h>

#include "core/config_module.h"
#include "net/listen.h"

static const char *check_address(const char *in, const char **out)
{
    struct listen_addr a;
    (void)out;
    return listen_parse(in, &a);
}

static const char *check_mode(const char *in, const char **out)
{
    unsigned mode;
    (void)out;
    return listen_parse_mode(in, &mode);
}

#define LST(f) offsetof(struct cfg_listener, f)

static const struct cfg_key keys[] = {
    {.name = "listen", .type = CFG_T_LISTENERS, .store = CFG_S_LISTENERS, .off = offsetof(struct cfg, listeners),
     .def = "[]", .bounds = "at most " CFG_MAX_LISTENERS_TEXT " listeners",
     .desc = "Sockets to serve on, each an object of listen[] keys. Empty: one plain listener at "
             "server.host:server.port; when set, those two (and PORT, HOST, -p) are not bound. The first "
             "listener names the default control socket and pid file."},
    {.name = CFG_LISTEN_PREFIX "address", .type = CFG_T_STRING, .store = CFG_S_STR, .off = LST(address),
     .check = check_address, .flags = CFG_REQUIRED | CFG_UNIX_PATH,
     .bounds = "\"host:port\", \"[ipv6]:port\" or \"unix:PATH\"",
     .desc = "Where to listen: an IPv4 address (or localhost) and port, an IPv6 address in brackets and "
             "port, or a Unix socket (a relative PATH is relative to the config file)."},
    {.name = CFG_LISTEN_PREFIX "tls", .type = CFG_T_BOOL, .store = CFG_S_INT, .off = LST(tls), .def = "false",
     .bounds = "true or false",
     .desc = "Connections on this listener speak TLS."},
    {.name = CFG_LISTEN_PREFIX "mode", .type = CFG_T_STRING, .store = CFG_S_STR, .off = LST(mode),
     .check = check_mode, .def = LISTEN_MODE_DEFAULT, .bounds = "octal, 0000..0777",
     .desc = "Permission bits of a Unix socket's file (who may connect); not used for TCP."},
};

int listen_cfg_register(void)
{
    return cfg_keys_register(keys, sizeof keys / sizeof keys[0]);
}
