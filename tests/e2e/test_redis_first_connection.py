"""A worker's first Redis connection (src/app/shop.c, cart_go): a fresh
worker serves before Redis answered it (a reload's new worker takes
connections at once), so a cart request that comes first waits for the
connection, until redis.command_timeout after the worker started, instead of
failing; after that, an outage is answered 503 at once."""
import json
import threading
import time

import conftest
import rawhttp
from redisserver import RedisServer


def add(port, user, pid, qty=1):
    body = json.dumps({"productId": pid, "quantity": qty}).encode()
    t0 = time.monotonic()
    r = rawhttp.exchange(port, rawhttp.req("POST", "/api/cart/add", headers=[
        ("User-Id", user), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body=body),
        timeout=10)
    return r, time.monotonic() - t0


def test_an_add_before_the_first_connection_waits_for_it(cohort, tmp_path):
    redis = RedisServer(tmp_path, port=conftest.free_port())  # not started yet
    srv = cohort({"redis": {"url": redis.url, "command_timeout": "10s"}}, workers=1)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=add(srv.port, "early", 7, 2)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "answered before Redis existed: %r" % (out,)
    try:
        redis.start()
        t.join(15)
        r, took = out["r"]
        assert r.status == 200 and r.json()["quantity"] == 2, r
        assert took > 0.45
        assert redis.call("HGET", "cart:early", "7") == b"2"
        # once it was up, an outage answers at once
        redis.kill()
        rawhttp.wait_for(lambda: add(srv.port, "late", 8)[0].status == 503, 5)
        r, took = add(srv.port, "late", 9)
        assert r.status == 503 and r.json() == {"error": "cart store unavailable"}, r
        assert took < 1.0, "at once, not after the 10 s command timeout: %.2f s" % took
    finally:
        redis.kill()


def test_the_wait_ends_at_the_command_timeout(cohort, tmp_path):
    port = conftest.free_port()  # nothing listens there
    t_started = time.monotonic()
    srv = cohort({"redis": {"url": "redis://127.0.0.1:%d" % port, "command_timeout": "5s"}}, workers=1)
    t_sent = time.monotonic()
    r, took = add(srv.port, "nobody", 3)
    assert r.status == 503 and r.json() == {"error": "cart store unavailable"}, r
    # until 5 s after the worker started: after t_started, before the answer
    assert 5.0 - (t_sent - t_started) - 0.1 < took < 6.0, \
        "waited for the rest of the command timeout: %.2f s (%.2f s after the start)" % (took, t_sent - t_started)
    r, took = add(srv.port, "nobody", 4)
    assert r.status == 503 and took < 2.0, "the wait is over for good: %.2f s" % took
