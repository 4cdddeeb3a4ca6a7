#include "proc/hooks.h"

#include <errno.h>
#include <string.h>

static const struct master_hook *hooks[MASTER_HOOKS_MAX];
static int nhooks;

int master_hook_add(const struct master_hook *h)
{
    for (int i = 0; i < nhooks; i++)
        if (strcmp(hooks[i]->name, h->name) == 0)
            return -EEXIST;
    if (nhooks == MASTER_HOOKS_MAX)
        return -ENOSPC;
    hooks[nhooks++] = h;
    return 0;
}

int master_hooks_prepare(const struct master_env *env)
{
    for (int i = 0; i < nhooks; i++)
        if (hooks[i]->prepare && hooks[i]->prepare(env) < 0)
            return -1;
    return 0;
}

void master_hooks_config(const struct cfg *cfg)
{
    for (int i = 0; i < nhooks; i++)
        if (hooks[i]->config)
            hooks[i]->config(cfg);
}

void master_hooks_worker_start(master_send_fn send, void *ctx)
{
    for (int i = 0; i < nhooks; i++)
        if (hooks[i]->worker_start)
            hooks[i]->worker_start(send, ctx);
}

void master_hooks_signal(int sig)
{
    for (int i = 0; i < nhooks; i++)
        if (hooks[i]->signal)
            hooks[i]->signal(sig);
}

void master_hooks_stop(void)
{
    for (int i = nhooks - 1; i >= 0; i--)
        if (hooks[i]->stop)
            hooks[i]->stop();
}

void master_hooks_status(json_t *obj)
{
    for (int i = 0; i < nhooks; i++) {
        json_t *j = hooks[i]->status ? hooks[i]->status() : NULL;
        if (j)
            json_object_set_new(obj, hooks[i]->name, j);
    }
}

void master_hooks_free(void)
{
    for (int i = nhooks - 1; i >= 0; i--)
        if (hooks[i]->free)
            hooks[i]->free();
}
