/*
 * The response cache of config routes with cache.ttl: a GET or HEAD is
 * looked up under response:GET:<path>?<query>; a hit is replayed (with
 * X-Cache: HIT), a miss runs the route's own handler and keeps its 200
 * answer, watched through the exchange's tap, for the route's TTL.
 */
#ifndef COHORT_APP_RESPCACHE_H
#define COHORT_APP_RESPCACHE_H

#include "app/shop_int.h"

/* Serves x for the wrapped route w (w->ttl_ms > 0). */
void respcache_handle(struct shop_wrapped *w, struct http_exchange *x);

#endif
