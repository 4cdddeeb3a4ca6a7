"""The shop API on the real binary, in both data modes: "embedded" (SQLite
and a per-worker cache) and "redis" (a real redis-server of its own).

Every endpoint and validation error; UTF-8 names; the response cache of
config routes; request counters (flushed every second and on a clean
stop, kept while Redis is down); and a PUT seen by every worker.
"""
import json
import os
import sqlite3
import time

import pytest

from conftest import Server, finish_all, make_server
from rawhttp import Conn, exchange, req, wait_for
from redisserver import RedisServer

TOKEN = "s3cret-token"
PRODUCT_1 = {"id": 1, "name": "商品1", "price": 100, "stock": 5}
PRODUCT_2 = {"id": 2, "name": "商品2", "price": 200, "stock": 10}


def shop_config(redis_url=None):
    cfg = {
        "admin_token": TOKEN,
        "routes": [
            {"path": "/cached/products/:id", "handler": "product", "cache": {"ttl": 3}},
            {"path": "/cached/hello", "handler": "hello", "cache": {"ttl": 60}},
            {"path": "/kept/products/:id", "handler": "product", "cache": {"ttl": 60}},
            {"path": "/count/me", "handler": "hello"},
        ],
    }
    if redis_url:
        cfg["redis"] = {"url": redis_url, "command_timeout": "2s"}
    return cfg


@pytest.fixture(scope="module", params=["embedded", "redis"])
def shop(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("shop-" + request.param)
    redis = RedisServer(d).start() if request.param == "redis" else None
    s = make_server(d, shop_config(redis.url if redis else None), workers=2)
    s.mode = request.param
    s.redis = redis
    try:
        s.start()
        yield s
    finally:
        try:
            finish_all([s])
        finally:
            if redis:
                redis.stop()


def call(s, method, path, body=None, headers=(), ctype="application/json", conn=None):
    hdrs = list(headers)
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if ctype:
            hdrs.append(("Content-Type", ctype))
        hdrs.append(("Content-Length", str(len(data))))
    raw = req(method, path, headers=hdrs, body=data)
    if conn is not None:
        conn.send(raw)
        return conn.read_response()
    return exchange(s.port, raw)


def ok_json(r, status=200):
    assert r.status == status, r
    assert r.header("Content-Type") == "application/json; charset=utf-8", r
    return r.json()


def bad(r, field, status=400, words=""):
    doc = ok_json(r, status)
    assert doc.get("field") == field, doc
    assert words in doc["error"], doc
    return doc


def worker_of(r):
    """The process that answered: generated request ids start with a
    per-process prefix."""
    return r.header("X-Request-Id").split("-")[0]


def sqlite_counter(s, name):
    """Counter `name` as server s keeps it in SQLite (the shop without Redis)."""
    db = sqlite3.connect(os.path.join(s.workdir, "data", "shop.db"), timeout=10)
    try:
        row = db.execute("SELECT count FROM request_counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0
    finally:
        db.close()


def counter(s, name):
    if s.redis:
        v = s.redis.call("GET", name)
        return int(v) if v is not None else 0
    return sqlite_counter(s, name)


# --- products ---------------------------------------------------------------

def test_products_list_default_and_paging(shop):
    items = ok_json(call(shop, "GET", "/api/products"))
    assert [p["id"] for p in items] == list(range(1, 51)), "default limit 50, in id order"
    assert items[0] == PRODUCT_1
    assert ok_json(call(shop, "GET", "/api/products?limit=2")) == [PRODUCT_1, PRODUCT_2]
    page = ok_json(call(shop, "GET", "/api/products?limit=3&offset=10"))
    assert [p["id"] for p in page] == [11, 12, 13]
    assert all(isinstance(p["price"], int) for p in page), "prices are integers"
    assert len(ok_json(call(shop, "GET", "/api/products?limit=500"))) == 500
    assert ok_json(call(shop, "GET", "/api/products?limit=10&offset=995"))[-1]["id"] == 1000
    assert ok_json(call(shop, "GET", "/api/products?offset=5000")) == []
    for _ in range(3):  # served again (now from the cache): the same bytes
        assert ok_json(call(shop, "GET", "/api/products?limit=2")) == [PRODUCT_1, PRODUCT_2]


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("limit=-1", "limit"), ("limit=2.5", "limit"), ("offset=-1", "offset"), ("offset=x", "offset"),
    ("limit=5&offset=1e3", "offset"),
])
def test_products_bad_numbers(shop, query, field):
    bad(call(shop, "GET", "/api/products?" + query), field)


def test_product_by_id_utf8(shop):
    r = call(shop, "GET", "/api/products/1")
    assert ok_json(r) == PRODUCT_1
    assert "商品1".encode("utf-8") in r.body, "names are UTF-8 in the JSON, not mangled"
    assert ok_json(call(shop, "GET", "/api/products/2")) == PRODUCT_2
    assert ok_json(call(shop, "GET", "/api/products/1000"))["name"] == "商品1000"
    head = exchange(shop.port, req("HEAD", "/api/products/1"), head=True)
    assert head.status == 200 and head.body == b""


@pytest.mark.parametrize("path,status", [
    ("/api/products/1001", 404), ("/api/products/424242", 404), ("/api/products/0", 400),
    ("/api/products/abc", 400), ("/api/products/-1", 400), ("/api/products/1.5", 400),
    ("/api/products/99999999999999999999", 400),
])
def test_product_not_found_or_bad_id(shop, path, status):
    r = call(shop, "GET", path)
    doc = ok_json(r, status)
    assert doc["error"]


# --- PUT ----------------------------------------------------------------------

def test_put_requires_the_token(shop):
    for headers in ([], [("Authorization", "Bearer wrong")], [("Authorization", "Basic " + TOKEN)],
                    [("Authorization", "Bearer " + TOKEN + "x")]):
        r = call(shop, "PUT", "/api/products/900", {"price": 1}, headers=headers)
        assert ok_json(r, 401)["error"].startswith("unauthorized")
        assert r.header("WWW-Authenticate") == "Bearer"
    assert ok_json(call(shop, "GET", "/api/products/900"))["price"] != 1, "a refused PUT changes nothing"


AUTH = [("Authorization", "Bearer " + TOKEN)]


@pytest.mark.parametrize("body,field", [
    ({}, "body"), ([], "body"), ({"price": -1}, "price"), ({"price": "100"}, "price"), ({"stock": 1.5}, "stock"),
    ({"name": ""}, "name"), ({"name": "   "}, "name"), ({"name": 5}, "name"), ({"colour": "red"}, "colour"),
    (b"{not json", "body"), ({"name": "x" * 201}, "name"),
])
def test_put_validation(shop, body, field):
    bad(call(shop, "PUT", "/api/products/901", body, headers=AUTH), field)


def test_put_unknown_and_bad_id(shop):
    ok_json(call(shop, "PUT", "/api/products/5000", {"price": 1}, headers=AUTH), 404)
    bad(call(shop, "PUT", "/api/products/x", {"price": 1}, headers=AUTH), "id")


def fresh_connections_until_both(s, path, want_workers=2, tries=200):
    """GETs on new connections until `want_workers` processes answered;
    returns {worker: [bodies]}."""
    seen = {}
    for _ in range(tries):
        r = call(s, "GET", path)
        seen.setdefault(worker_of(r), []).append(ok_json(r))
        if len(seen) >= want_workers and all(len(v) >= 2 for v in seen.values()):
            break
    assert len(seen) >= want_workers, "connections reached only %s" % list(seen)
    return seen


def test_put_is_seen_by_every_worker(shop):
    pid = 902
    before = ok_json(call(shop, "GET", "/api/products/%d" % pid))
    # every worker caches the old product and a list holding it
    fresh_connections_until_both(shop, "/api/products/%d" % pid)
    fresh_connections_until_both(shop, "/api/products?limit=3&offset=%d" % (pid - 2))
    change = {"name": "改名商品", "price": before["price"] + 7, "stock": 42}
    r = call(shop, "PUT", "/api/products/%d" % pid, change, headers=AUTH)
    want = dict(before, **change)
    assert ok_json(r) == want
    for worker, bodies in fresh_connections_until_both(shop, "/api/products/%d" % pid).items():
        assert all(b == want for b in bodies), "worker %s served %s" % (worker, bodies)
    for worker, bodies in fresh_connections_until_both(shop, "/api/products?limit=3&offset=%d" % (pid - 2)).items():
        assert all(b[1] == want for b in bodies), "worker %s served a stale list %s" % (worker, bodies)
    # a partial change keeps the other fields
    assert ok_json(call(shop, "PUT", "/api/products/%d" % pid, {"stock": 0}, headers=AUTH)) == dict(want, stock=0)


# --- carts --------------------------------------------------------------------

def add(s, user, body, ctype="application/json", conn=None):
    return call(s, "POST", "/api/cart/add", body, headers=[("User-Id", user)] if user else [], ctype=ctype,
                conn=conn)


def test_cart_add_get_delete(shop):
    user = "alice-" + shop.mode
    assert ok_json(add(shop, user, {"productId": 2, "quantity": 2})) == \
        {"success": True, "productId": 2, "quantity": 2}
    assert ok_json(add(shop, user, {"productId": 2, "quantity": 3}))["quantity"] == 5
    assert ok_json(add(shop, user, b"productId=1&quantity=4", ctype="application/x-www-form-urlencoded")) == \
        {"success": True, "productId": 1, "quantity": 4}
    cart = ok_json(call(shop, "GET", "/api/cart", headers=[("User-Id", user)]))
    assert cart == {"items": [
        {"productId": 1, "name": "商品1", "price": 100, "quantity": 4, "lineTotal": 400},
        {"productId": 2, "name": "商品2", "price": 200, "quantity": 5, "lineTotal": 1000},
    ], "total": 1400}
    assert ok_json(call(shop, "DELETE", "/api/cart/2", headers=[("User-Id", user)])) == \
        {"success": True, "productId": 2}
    ok_json(call(shop, "DELETE", "/api/cart/2", headers=[("User-Id", user)]), 404)
    bad(call(shop, "DELETE", "/api/cart/zero", headers=[("User-Id", user)]), "productId")
    cart = ok_json(call(shop, "GET", "/api/cart", headers=[("User-Id", user)]))
    assert [i["productId"] for i in cart["items"]] == [1] and cart["total"] == 400
    assert ok_json(call(shop, "GET", "/api/cart", headers=[("User-Id", "nobody-" + shop.mode)])) == \
        {"items": [], "total": 0}


def test_cart_default_user_is_anonymous(shop):
    before = ok_json(call(shop, "GET", "/api/cart"))
    line = [i for i in before["items"] if i["productId"] == 3]
    had = line[0]["quantity"] if line else 0
    assert ok_json(add(shop, None, {"productId": 3, "quantity": 1}))["quantity"] == had + 1
    after = ok_json(call(shop, "GET", "/api/cart", headers=[("User-Id", "anonymous")]))
    assert [i["quantity"] for i in after["items"] if i["productId"] == 3] == [had + 1]


@pytest.mark.parametrize("body,ctype,field,words", [
    (b"{\"productId\": 1", "application/json", "body", "not valid JSON"),
    (b"", "application/json", "body", "empty"),
    ([1, 2], "application/json", "body", "JSON object"),
    ("just a string", "application/json", "body", "JSON object"),
    ({"quantity": 1}, "application/json", "productId", "required"),
    ({"productId": 1}, "application/json", "quantity", "required"),
    ({"productId": "1", "quantity": 1}, "application/json", "productId", "integer"),
    ({"productId": 0, "quantity": 1}, "application/json", "productId", "integer"),
    ({"productId": 1.5, "quantity": 1}, "application/json", "productId", "integer"),
    ({"productId": 1, "quantity": 0}, "application/json", "quantity", "1 to 1000"),
    ({"productId": 1, "quantity": 1001}, "application/json", "quantity", "1 to 1000"),
    ({"productId": 1, "quantity": -5}, "application/json", "quantity", "1 to 1000"),
    ({"productId": 1, "quantity": "2"}, "application/json", "quantity", "integer"),
    (b"quantity=1", "application/x-www-form-urlencoded", "productId", "required"),
    (b"productId=1&quantity=abc", "application/x-www-form-urlencoded", "quantity", "1 to 1000"),
    (b"productId=1&quantity=%ZZ", "application/x-www-form-urlencoded", "body", "form"),
])
def test_cart_add_validation(shop, body, ctype, field, words):
    bad(add(shop, "val-" + shop.mode, body, ctype=ctype), field, words=words)


def test_cart_add_unknown_product_and_bad_user(shop):
    doc = ok_json(add(shop, "u-" + shop.mode, {"productId": 5000, "quantity": 1}), 404)
    assert "5000" in doc["error"]
    bad(add(shop, "has space", {"productId": 1, "quantity": 1}), "User-Id")
    bad(call(shop, "GET", "/api/cart", headers=[("User-Id", "x" * 129)]), "User-Id")
    assert ok_json(call(shop, "GET", "/api/cart", headers=[("User-Id", "u-" + shop.mode)])) == \
        {"items": [], "total": 0}, "a 404 add leaves no line"


def keyed_add(s, user, key, body):
    return call(s, "POST", "/api/cart/add", body, headers=[("User-Id", user), ("Idempotency-Key", key)])


def line_qty(s, user, pid):
    cart = ok_json(call(s, "GET", "/api/cart", headers=[("User-Id", user)]))
    return {i["productId"]: i["quantity"] for i in cart["items"]}.get(pid)


def test_cart_add_with_an_idempotency_key_is_made_once(shop):
    user = "idem-" + shop.mode
    first = ok_json(keyed_add(shop, user, "order-1", {"productId": 2, "quantity": 3}))
    assert first == {"success": True, "productId": 2, "quantity": 3}
    for key in ["order-1"] * 6 + ['"order-1"']:  # fresh connections: both workers see the key
        assert ok_json(keyed_add(shop, user, key, {"productId": 2, "quantity": 3})) == first
    assert line_qty(shop, user, 2) == 3, "made once"
    bad(keyed_add(shop, user, "order-1", {"productId": 2, "quantity": 4}), "Idempotency-Key", status=422,
        words="different add")
    bad(keyed_add(shop, user, "order 1", {"productId": 2, "quantity": 4}), "Idempotency-Key")
    assert line_qty(shop, user, 2) == 3, "neither a conflicting nor a malformed key adds"
    assert ok_json(keyed_add(shop, user, "order-2", {"productId": 2, "quantity": 1}))["quantity"] == 4
    assert ok_json(add(shop, user, {"productId": 2, "quantity": 1}))["quantity"] == 5, "no key: always added"
    assert ok_json(keyed_add(shop, "other-" + shop.mode, "order-1", {"productId": 2, "quantity": 4}))["quantity"] \
        == 4, "keys are per user"
    ok_json(keyed_add(shop, user, "order-3", {"productId": 5000, "quantity": 1}), 404)
    assert ok_json(keyed_add(shop, user, "order-3", {"productId": 1, "quantity": 2}))["quantity"] == 2, \
        "a 404 keeps no key"
    assert line_qty(shop, user, 2) == 5 and line_qty(shop, user, 1) == 2
    # User-Id and key may both hold ':': ("a:b", "c") and ("a", "b:c") are two keys
    assert ok_json(keyed_add(shop, "colon:b", "c", {"productId": 1, "quantity": 1}))["quantity"] == 1
    assert ok_json(keyed_add(shop, "colon", "b:c", {"productId": 1, "quantity": 1}))["quantity"] == 1
    assert line_qty(shop, "colon", 1) == 1 and line_qty(shop, "colon:b", 1) == 1


def test_an_add_retried_after_a_503_is_made_once(cohort, tmp_path):
    """With redis.wait_replicas and no replica, an add is made on the primary
    but answered 503 (its WAIT found no replica). A client that retries with
    the same Idempotency-Key gets the same answer without a second add; once
    a replica keeps up, the retry is answered 200 with the first add's
    quantity."""
    primary = RedisServer(tmp_path / "primary").start()
    replica = None
    try:
        cfg = shop_config(primary.url)
        cfg["redis"].update({"wait_replicas": 1, "wait_timeout": "200ms"})
        s = cohort(cfg)
        user, body = "retry-503", {"productId": 1, "quantity": 7}
        for _ in range(3):
            r = keyed_add(s, user, "attempt-1", body)
            assert r.status == 503, r
        assert primary.call("HGET", "cart:" + user, "1") == b"7", "made once, on the primary"
        replica = RedisServer(tmp_path / "replica").start()
        assert replica.call("REPLICAOF", "127.0.0.1", str(primary.port)) == "OK"
        # the replica's first sync waits for Redis's diskless-sync delay (5 s)
        assert wait_for(lambda: all(keyed_add(s, user, "attempt-1", body).status == 200 for _ in range(4)), 20), \
            "never 200 with a replica"
        assert ok_json(keyed_add(s, user, "attempt-1", body)) == {"success": True, "productId": 1, "quantity": 7}
        assert primary.call("HGET", "cart:" + user, "1") == b"7"
        assert replica.call("HGET", "cart:" + user, "1") == b"7"
    finally:
        if replica:
            replica.stop()
        primary.stop()


# --- health ---------------------------------------------------------------------

def test_health_and_ready(shop):
    r = call(shop, "GET", "/health")
    assert r.status == 200 and r.header("Content-Type") == "application/json", r
    assert r.json() == {"status": "ok"}
    doc = ok_json(call(shop, "GET", "/health/ready"))
    assert doc == {"status": "ready", "checks": {
        "sqlite": "up", "redis": "up" if shop.redis else "not configured"}}


# --- response cache -------------------------------------------------------------

def test_response_cache(shop):
    with Conn(shop.port) as c:  # one connection: one worker (its cache, without Redis)
        r1 = call(shop, "GET", "/cached/products/950", conn=c)
        assert r1.status == 200 and r1.header("X-Cache") is None
        r2 = call(shop, "GET", "/cached/products/950", conn=c)
        assert r2.header("X-Cache") == "HIT" and r2.body == r1.body
        assert r2.header("Content-Type") == r1.header("Content-Type")
        # the query is part of the key
        assert call(shop, "GET", "/cached/products/950?a=1", conn=c).header("X-Cache") is None
        assert call(shop, "GET", "/cached/products/950?a=1", conn=c).header("X-Cache") == "HIT"
        assert call(shop, "GET", "/cached/products/950?a=2", conn=c).header("X-Cache") is None
        # errors are not kept
        assert call(shop, "GET", "/cached/products/5000", conn=c).status == 404
        r = call(shop, "GET", "/cached/products/5000", conn=c)
        assert r.status == 404 and r.header("X-Cache") is None
        # HEAD is served from the GET entry
        c.send(req("HEAD", "/cached/products/950"))
        h = c.read_response(head=True)
        assert h.status == 200 and h.header("X-Cache") == "HIT" and h.body == b""
        # after the ttl (3 s: the hits above all fall inside it, even on a slow machine) a change shows
        call(shop, "PUT", "/api/products/950", {"price": 4321}, headers=AUTH)
        time.sleep(3.1)
        r3 = call(shop, "GET", "/cached/products/950", conn=c)
        assert r3.header("X-Cache") is None and r3.json()["price"] == 4321
        h1 = call(shop, "GET", "/cached/hello", conn=c)
        h2 = call(shop, "GET", "/cached/hello", conn=c)
        assert h2.header("X-Cache") == "HIT" and h2.body == h1.body == b"Hello World\n"
        assert h2.header("Content-Type") == "text/plain"


def cache_counts(s):
    doc = json.loads(call(s, "GET", "/stats").body)["totals"]["cache"]
    return doc["hits"], doc["misses"]


def test_a_response_cache_hit_does_not_reach_the_store(shop):
    """A route with cache.ttl 60, asked again after its product changed in
    the store, still answers the first answer, from the cache: X-Cache: HIT,
    the old body, and one cache hit with no miss counted for it (a miss
    would have run the handler, which reads the catalog). With Redis the
    change is a PUT: it drops the catalog's entry (the handler would read
    the new price, as /api/products shows) but not the response cache's,
    which lives out its TTL. Without Redis a PUT empties the worker's whole
    cache (docs/shop.md), so the change is written into SQLite behind the
    server's back."""
    pid = 971
    path = "/kept/products/%d" % pid
    with Conn(shop.port) as c:  # one connection: one worker (its cache, without Redis)
        first = call(shop, "GET", path, conn=c)
        assert first.status == 200 and first.header("X-Cache") is None, first
        old = first.json()
        new_price = old["price"] + 11
        if shop.redis:
            ok_json(call(shop, "PUT", "/api/products/%d" % pid, {"price": new_price}, headers=AUTH))
            assert wait_for(lambda: ok_json(call(shop, "GET", "/api/products/%d" % pid, conn=c))["price"] ==
                            new_price, 5), "the handler's catalog never saw the change"
        else:
            db = sqlite3.connect(os.path.join(shop.workdir, "data", "shop.db"), timeout=10)
            try:
                with db:
                    assert db.execute("UPDATE products SET price = ? WHERE id = ?", (new_price, pid)).rowcount == 1
            finally:
                db.close()
        hits, misses = cache_counts(shop)
        again = call(shop, "GET", path, conn=c)
        assert (again.status, again.header("X-Cache")) == (200, "HIT"), again
        assert again.json() == old and again.body == first.body, "served from the cache, not the store"
        assert cache_counts(shop) == (hits + 1, misses), "one cache hit, nothing looked up after it"


def test_static_files_are_not_response_cached(cohort):
    s = cohort({"routes": [{"path": "/files/*", "handler": "static", "root": "root", "cache": {"ttl": 60}}]},
               files={"a.txt": b"one"})
    with Conn(s.port) as c:
        for _ in range(3):
            r = call(s, "GET", "/files/a.txt", conn=c)
            assert r.status == 200 and r.body == b"one" and r.header("X-Cache") is None


# --- request counters ------------------------------------------------------------

def test_counters_by_route_template(shop):
    before = counter(shop, "request:GET:/count/me")
    for _ in range(7):
        assert call(shop, "GET", "/count/me").status == 200
    for i in (11, 12, 13):
        call(shop, "GET", "/api/products/%d" % i)
    assert wait_for(lambda: counter(shop, "request:GET:/count/me") == before + 7 and
                    counter(shop, "request:GET:/api/products/:id") >= 3, 6), \
        "counts are flushed at least once a second"
    assert counter(shop, "request:GET:/api/products/11") == 0, "keyed by the route template, not the URL"


@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_counters_flushed_on_clean_stop(cohort, tmp_path, mode):
    redis = RedisServer(tmp_path).start() if mode == "redis" else None
    try:
        s = cohort(shop_config(redis.url if redis else None))
        s.redis = redis
        for _ in range(5):
            assert call(s, "GET", "/count/me").status == 200
        assert s.stop() == 0  # at once: no flush timer has run since
        assert counter(s, "request:GET:/count/me") == 5
    finally:
        if redis:
            redis.stop()


def test_counters_kept_while_redis_is_down(cohort, tmp_path):
    redis = RedisServer(tmp_path).start()
    try:
        s = cohort(shop_config(redis.url))
        s.redis = redis
        redis.stop()
        for _ in range(3):
            assert call(s, "GET", "/count/me").status == 200
        time.sleep(1.2)  # a flush fails while Redis is away
        redis.start()  # empty: no persistence
        assert wait_for(lambda: counter(s, "request:GET:/count/me") == 3, 8), "kept, then flushed"
    finally:
        redis.stop()


def test_counters_saved_to_sqlite_when_redis_is_down_at_stop(cohort, tmp_path):
    redis = RedisServer(tmp_path).start()
    try:
        s = cohort(shop_config(redis.url))
        redis.stop()
        for _ in range(4):
            assert call(s, "GET", "/count/me").status == 200
        assert s.stop() == 0
        s.redis = None
        assert counter(s, "request:GET:/count/me") == 4, "not lost: kept in SQLite"
        # the next start, with Redis up, moves them there (once)
        redis.start()
        again = Server(s.workdir, s.config).start()
        try:
            again.redis = redis
            assert wait_for(lambda: counter(again, "request:GET:/count/me") == 4, 6), "moved to Redis"
            again.redis = None
            assert counter(again, "request:GET:/count/me") == 0, "and taken out of SQLite"
        finally:
            problems = again.finish()
            assert not problems, problems
    finally:
        redis.stop()


# --- data folder and startup -----------------------------------------------------

def test_store_created_relative_to_the_working_directory(cohort):
    s = cohort({"store": {"path": "deep/er/cat.db"}})
    assert call(s, "GET", "/api/products/2").json() == PRODUCT_2
    assert os.path.exists(os.path.join(s.workdir, "deep", "er", "cat.db"))
    db = sqlite3.connect(os.path.join(s.workdir, "deep", "er", "cat.db"))
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM products").fetchone()[0] == 1000
    finally:
        db.close()


def test_many_workers_start_on_a_new_store_at_once(cohort):
    s = cohort({}, workers=6)
    db = sqlite3.connect(os.path.join(s.workdir, "data", "shop.db"))
    try:
        assert db.execute("SELECT count(*) FROM products").fetchone()[0] == 1000, "seeded once"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        db.close()
