#include "http/accesslog.h"

#include <signal.h>
#include <string.h>
#include <time.h>

#include "core/jsonw.h"
#include "core/log.h"
#include "core/logbuf.h"
#include "http/reqid.h"

#define BUF_SIZE (64 * 1024)

int accesslog_enabled;

static struct {
    struct logbuf sink;
    uv_timer_t flush_timer;
    uv_signal_t usr1;
    int worker_id;
    int handles; /* 1 once the handles were initialised */
} alog = {.sink = {.fd = -1}};

/* --- formatting ---------------------------------------------------------- */

#define LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* A JSON string of at most `max` escaped bytes, or null. */
static char *put_str(char *p, const char *s, size_t len, size_t max)
{
    if (!s)
        return LIT(p, "null");
    *p++ = '"';
    p += jw_escape(p, max, s, len, NULL);
    *p++ = '"';
    return p;
}

/* Field budgets keep the worst case within LOGBUF_LINE_MAX: 24 + 64 + 32 +
 * 2048 + 256 + 64 + 512 + 128 escaped bytes, ~330 of names and numbers. */
size_t accesslog_format(char *buf, const struct accesslog_fields *f)
{
    char *p = buf;
    p = LIT(p, "{\"time\":\"");
    log_format_time(p, &f->time);
    p += LOG_TIME_LEN;
    p = LIT(p, "\",\"id\":");
    p = put_str(p, f->id, f->id_len, REQID_MAX);
    p = LIT(p, ",\"method\":");
    p = put_str(p, f->method, f->method_len, 32);
    p = LIT(p, ",\"path\":");
    p = put_str(p, f->path, f->path_len, ACCESSLOG_PATH_MAX);
    p = LIT(p, ",\"route\":");
    p = put_str(p, f->route, f->route_len, 256);
    p = LIT(p, ",\"status\":");
    p = put_u64(p, (uint64_t)(f->status < 0 ? 0 : f->status));
    p = LIT(p, ",\"bytes_in\":");
    p = put_u64(p, f->bytes_in);
    p = LIT(p, ",\"bytes_out\":");
    p = put_u64(p, f->bytes_out);
    p = LIT(p, ",\"duration_us\":");
    p = put_u64(p, f->duration_us);
    p = LIT(p, ",\"worker\":");
    p = put_u64(p, (uint64_t)(f->worker < 0 ? 0 : f->worker));
    p = LIT(p, ",\"client\":");
    p = put_str(p, f->client, f->client_len, 64);
    p = LIT(p, ",\"user_agent\":");
    p = put_str(p, f->user_agent, f->user_agent_len, ACCESSLOG_UA_MAX);
    p = LIT(p, ",\"upstream\":");
    p = put_str(p, f->upstream, f->upstream_len, 128);
    p = LIT(p, "}\n");
    return (size_t)(p - buf);
}

void accesslog_write(struct accesslog_fields *f)
{
    char *dst = logbuf_reserve(&alog.sink);
    if (!dst)
        return;
    f->worker = alog.worker_id;
    clock_gettime(CLOCK_REALTIME, &f->time);
    logbuf_commit(&alog.sink, accesslog_format(dst, f));
}

/* --- the sink's life ----------------------------------------------------- */

static void flush_cb(uv_timer_t *t)
{
    (void)t;
    logbuf_flush(&alog.sink);
}

/* Log rotation: the files were moved away; open them again by name. */
static void usr1_cb(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    int r1 = logbuf_reopen(&alog.sink), r2 = log_reopen();
    if (r1 < 0 || r2 < 0)
        log_error("SIGUSR1: cannot reopen %s: %s", r1 < 0 ? "the access log" : "the error log",
                  strerror(-(r1 < 0 ? r1 : r2)));
    else
        log_debug("SIGUSR1: logs reopened");
}

void accesslog_flush(void)
{
    logbuf_flush(&alog.sink);
}

int accesslog_open(uv_loop_t *loop, const struct cfg *cfg, int worker_id, char *err, size_t errlen)
{
    int r = log_configure(cfg->log.error, (enum log_level)cfg->log.level, err, errlen);
    if (r < 0)
        return r;
    reqid_init(worker_id);
    alog.worker_id = worker_id;
    r = logbuf_open(&alog.sink, cfg->log.access, BUF_SIZE);
    if (r < 0) {
        snprintf(err, errlen, "log.access: cannot open %s: %s", cfg->log.access, strerror(-r));
        return r;
    }
    accesslog_enabled = logbuf_on(&alog.sink);
    uv_timer_init(loop, &alog.flush_timer);
    uv_signal_init(loop, &alog.usr1);
    alog.handles = 1;
    if (accesslog_enabled)
        uv_timer_start(&alog.flush_timer, flush_cb, ACCESSLOG_FLUSH_MS, ACCESSLOG_FLUSH_MS);
    uv_signal_start(&alog.usr1, usr1_cb, SIGUSR1);
    uv_unref((uv_handle_t *)&alog.flush_timer);
    uv_unref((uv_handle_t *)&alog.usr1);
    return 0;
}

void accesslog_close(void)
{
    accesslog_enabled = 0;
    logbuf_close(&alog.sink);
    if (alog.handles) {
        alog.handles = 0;
        uv_close((uv_handle_t *)&alog.flush_timer, NULL);
        uv_close((uv_handle_t *)&alog.usr1, NULL);
    }
}
