/*
 * Routes that exist only in the test build (make's build/cohort-test,
 * compiled with -DCOHORT_TEST_ROUTES); in the normal build registering them
 * does nothing. They let end-to-end tests provoke what real traffic cannot
 * on demand:
 *   GET /__test/leak?mb=N    allocates and touches N MiB that are never freed
 *   GET /__test/fail         answers 500, as a handler fault would
 *   GET /__test/sleep?ms=N   answers after N ms without blocking the loop
 * and, with COHORT_TEST_HOLD_START=N in the environment, a worker that
 * takes N seconds to start (it blocks before it is ready); with
 * COHORT_TEST_HOLD_READY_FILE=PATH, a worker that listens and then holds
 * its READY while PATH exists (60 s at most; it creates PATH.<pid> as it
 * begins to hold).
 */
#ifndef COHORT_TESTROUTES_H
#define COHORT_TESTROUTES_H

#include <uv.h>

#include "http/router.h"

int testroutes_register(struct router *r, uv_loop_t *loop);
/* Called by a worker that listens, just before it reports ready. */
void testroutes_hold_ready(void);

#endif
