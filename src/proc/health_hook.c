/*
 * The upstream health checks in the master (a master hook, proc/hooks.h):
 * the servers' state and ejections (proxy/health.h, HC_STATE), the checker
 * process that runs the checks (proc/checker.h), the workers' reports in
 * (HC_MSG_REPORT) and the state out to every worker (HC_MSG_STATE).
 */
#include "proc/health_hook.h"

#include "core/log.h"
#include "core/msg.h"
#include "proc/checker.h"
#include "proxy/health.h"

static struct hc *hc;        /* NULL once stopping */
static struct checker *chk;

/* Every change reaches every worker, starting and draining ones too. */
static void state_to_all(void *arg, const void *msg, size_t len)
{
    (void)arg;
    msg_broadcast(HC_MSG_STATE, -1, MSG_TO_ALL, msg, len);
}

static void on_report(void *arg, int from, const void *payload, size_t len)
{
    (void)arg;
    (void)from;
    if (hc)
        hc_report(hc, payload, len);
}

/* the checks run in the checker process, as `user`; the master keeps the state */
static int health_prepare(const struct master_env *env)
{
    if (!(hc = hc_new_role(HC_STATE, env->loop, env->cfg, env->shm, state_to_all, NULL)) ||
        !(chk = checker_new(env->loop, env->exe, hc)) || checker_config(chk, env->cfg) < 0 ||
        msg_register(HC_MSG_REPORT, "upstream report", on_report, NULL) < 0) {
        log_error("cannot set up upstream health checks: out of memory");
        return -1;
    }
    return 0;
}

static void health_config(const struct cfg *cfg)
{
    if (hc && hc_reload(hc, cfg) < 0)
        log_error("upstream health checks: out of memory; the groups checked before stay checked");
    if (checker_config(chk, cfg) < 0)
        log_error("health checker: cannot hand it the config: out of memory");
}

struct one {
    master_send_fn send;
    void *ctx;
};

static void state_to_one(void *arg, const void *msg, size_t len)
{
    struct one *o = arg;
    o->send(o->ctx, HC_MSG_STATE, msg, len);
}

/* before its first request, as far as the pipe goes */
static void health_worker_start(master_send_fn send, void *ctx)
{
    struct one o = {send, ctx};
    if (hc)
        hc_snapshot(hc, state_to_one, &o);
}

static void health_signal(int sig)
{
    checker_signal(chk, sig);
}

static void health_stop(void)
{
    checker_stop(chk);
    hc_close(hc);
    hc = NULL;
}

static json_t *health_status(void)
{
    return checker_status(chk);
}

static void health_free(void)
{
    checker_free(chk);
    chk = NULL;
    hc_close(hc);
    hc = NULL;
}

const struct master_hook health_hook = {
    .name = "checker",
    .prepare = health_prepare,
    .config = health_config,
    .worker_start = health_worker_start,
    .signal = health_signal,
    .stop = health_stop,
    .status = health_status,
    .free = health_free,
};
