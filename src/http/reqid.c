#include "http/reqid.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static char next_id[REQID_GEN_LEN + 1];
static int seeded;

int reqid_valid(const char *v, size_t len)
{
    static const char ok[] = ".:_-@+/=";
    if (len == 0 || len > REQID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && memchr(ok, c, sizeof(ok) - 1))))
            return 0;
    }
    return 1;
}

void reqid_init(int worker_id)
{
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL);
    snprintf(next_id, sizeof(next_id), "%08x-%02x-%010x", r, (unsigned)worker_id & 0xff, 0u);
    seeded = 1;
}

/* The counter is kept as text and counted up in place, like an odometer. */
void reqid_next(char *out)
{
    if (!seeded)
        reqid_init(0);
    for (int i = REQID_GEN_LEN - 1; i > REQID_GEN_LEN - 11; i--) {
        char c = next_id[i];
        if (c == '9') {
            next_id[i] = 'a';
            break;
        }
        if (c != 'f') {
            next_id[i] = (char)(c + 1);
            break;
        }
        next_id[i] = '0';
    }
    memcpy(out, next_id, REQID_GEN_LEN);
}
