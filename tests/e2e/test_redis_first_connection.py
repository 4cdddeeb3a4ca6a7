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
    srv = cohort({"redis": {"url": redis.url, "command_timeout": "3s"}}, workers=1)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=add(srv.port, "early", 7, 2)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "answered before Redis existed: %r" % (out,)
    try:
        redis.start()
        t.join(10)
        r, took = out["r"]
        assert r.status == 200 and r.json()["quantity"] == 2, r
        assert took > 0.45
        assert redis.call("HGET", "cart:early", "7") == b"2"
        # once it was up, an outage answers at once
        redis.kill()
        rawhttp.wait_for(lambda: add(srv.port, "late", 8)[0].status == 503, 5)
        r, took = add(srv.port, "late", 9)
        assert r.status == 503 and r.json() == {"error": "cart store unavailable"}, r
        assert took < 0.2, took
    finally:
        redis.kill()


def test_the_wait_ends_at_the_command_timeout(cohort, tmp_path):
    port = conftest.free_port()  # nothing listens there
    srv = cohort({"redis": {"url": "redis://127.0.0.1:%d" % port, "command_timeout": "1500ms"}}, workers=1)
    r, took = add(srv.port, "nobody", 3)
    assert r.status == 503 and r.json() == {"error": "cart store unavailable"}, r
    assert 0.3 < took < 2.0, "waited for the rest of the command timeout: %.2f s" % took
    r, took = add(srv.port, "nobody", 4)
    assert r.status == 503 and took < 0.2, "the wait is over for good: %.2f s" % took
