/* Helpers for unit tests that drive a libuv loop of their own. */
#ifndef COHORT_TESTS_TESTLOOP_H
#define COHORT_TESTS_TESTLOOP_H

#include <stdint.h>
#include <uv.h>

static inline void testloop_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs loop for ms milliseconds (or until something stops it sooner). */
static inline void run_for(uv_loop_t *loop, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, testloop_stop, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

#endif
