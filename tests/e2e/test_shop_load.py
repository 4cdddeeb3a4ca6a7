"""Cart adds under load, in both data modes, and through a Redis crash.

- 20,000 adds over 64 keep-alive connections, spread over every worker:
  the totals per (user, product) are exact, read back through GET
  /api/cart and from the store itself.
- Redis killed (SIGKILL) in the middle of a load and started again: no add
  that was answered 200 is lost, no add is counted that was not asked for,
  reads keep working, writes answer 503 while Redis is away, and cohort
  reconnects by itself (same master, same workers).
"""
import collections
import json
import os
import re
import sqlite3
import threading
import time

import pytest

from rawhttp import Closed, Conn, exchange, req, wait_for
from redisserver import RedisServer

TOTAL_ADDS = 20000
CONNS = 64
USERS = ["load-%d" % i for i in range(8)]
PRODUCTS = [1, 2, 3, 7, 42]


def add_request(user, pid, qty):
    body = json.dumps({"productId": pid, "quantity": qty}).encode()
    return req("POST", "/api/cart/add", headers=[("User-Id", user), ("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body)))], body=body)


def run_adds(port, total, conns):
    """Each connection sends its share of adds one after another; returns
    (answered totals per (user, product), status counts, answering workers)."""
    shares = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
    results = [None] * conns
    errors = []

    def work(i):
        ok = collections.Counter()
        statuses = collections.Counter()
        workers = set()
        try:
            with Conn(port, timeout=30) as c:
                for k in range(shares[i]):
                    user, pid, qty = USERS[(i + k) % len(USERS)], PRODUCTS[(i * 3 + k) % len(PRODUCTS)], 1 + (i + k) % 4
                    c.send(add_request(user, pid, qty))
                    r = c.read_response()
                    statuses[r.status] += 1
                    if r.status == 200:
                        ok[(user, pid)] += qty
                        workers.add(r.header("X-Request-Id").split("-")[0])
        except Exception as e:  # reported below, with the thread
            errors.append("connection %d: %r" % (i, e))
        results[i] = (ok, statuses, workers)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a load connection is stuck"
    assert not errors, errors[:5]
    ok, statuses, workers = collections.Counter(), collections.Counter(), set()
    for o, s, w in results:
        ok.update(o)
        statuses.update(s)
        workers |= w
    return ok, statuses, workers


def cart_totals(port, user):
    r = exchange(port, req("GET", "/api/cart", headers=[("User-Id", user)]))
    assert r.status == 200, r
    return {(user, i["productId"]): i["quantity"] for i in r.json()["items"]}


@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_20000_concurrent_adds_are_exact(cohort, tmp_path, mode):
    redis = RedisServer(tmp_path).start() if mode == "redis" else None
    try:
        # (the default 1 s command timeout would make a paused machine an outage: 503s)
        s = cohort({"redis": {"url": redis.url, "command_timeout": "5s"}} if redis else {}, workers=2)
        t0 = time.monotonic()
        ok, statuses, workers = run_adds(s.port, TOTAL_ADDS, CONNS)
        took = time.monotonic() - t0
        assert statuses == {200: TOTAL_ADDS}, statuses
        assert len(workers) == 2, "the adds reached workers %s only" % workers
        seen = {}
        for u in USERS:
            seen.update(cart_totals(s.port, u))
        assert seen == dict(ok), "GET /api/cart differs from the answered adds"
        if redis:
            stored = {}
            for u in USERS:
                h = redis.call("HGETALL", "cart:" + u)
                for f, v in zip(h[::2], h[1::2]):
                    stored[(u, int(f))] = int(v)
        else:
            db = sqlite3.connect(os.path.join(s.workdir, "data", "shop.db"), timeout=10)
            try:
                stored = {(u, p): q for u, p, q in db.execute("SELECT user, product_id, quantity FROM cart_items")}
            finally:
                db.close()
        assert stored == dict(ok), "the store differs from the answered adds"
        print("%s: %d adds in %.1f s" % (mode, TOTAL_ADDS, took))
    finally:
        if redis:
            redis.stop()


class Clients:
    """Adders (one user each, product 1, quantity 1) and a reader, until
    stopped; every answer is recorded with the time it came."""

    def __init__(self, port, adders=12):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.adds = []    # (user, t_sent, t_answered, status)
        self.reads = []   # (t, status)
        self.failures = []
        self.threads = [threading.Thread(target=self.adder, args=("crash-%d" % i,), daemon=True)
                        for i in range(adders)]
        self.threads.append(threading.Thread(target=self.reader, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a client is stuck"

    def adder(self, user):
        conn = None
        while not self.stop.is_set():
            try:
                conn = conn or Conn(self.port, timeout=10)
                t = time.monotonic()
                conn.send(add_request(user, 1, 1))
                r = conn.read_response()
                with self.lock:
                    self.adds.append((user, t, time.monotonic(), r.status))
                if r.header("Connection") == "close":
                    conn.close()
                    conn = None
            except (OSError, Closed, TimeoutError) as e:
                with self.lock:
                    self.failures.append("add %s: %r" % (user, e))
                if conn:
                    conn.close()
                conn = None
            time.sleep(0.002)

    def reader(self):
        paths = ["/api/products/7", "/api/products?limit=3", "/api/products/%d"]
        n = 0
        while not self.stop.is_set():
            n += 1
            path = paths[n % 3] if n % 3 != 2 else "/api/products/%d" % (100 + n % 800)
            try:
                r = exchange(self.port, req("GET", path), timeout=10)
                with self.lock:
                    self.reads.append((time.monotonic(), r.status))
            except (OSError, Closed, TimeoutError) as e:
                with self.lock:
                    self.failures.append("read %s: %r" % (path, e))
            time.sleep(0.005)


def test_redis_killed_mid_load_and_restarted(cohort, tmp_path):
    redis = RedisServer(tmp_path, aof=True).start()
    try:
        s = cohort({"redis": {"url": redis.url, "command_timeout": "1s"}}, workers=2)
        workers_before = set(s.workers())
        clients = Clients(s.port).start()
        time.sleep(1.0)
        t_kill = time.monotonic()
        redis.kill()
        ready_down = wait_for(lambda: exchange(s.port, req("GET", "/health/ready")).status == 503, 1.2)
        live = exchange(s.port, req("GET", "/health")).status
        time.sleep(max(0.0, t_kill + 1.5 - time.monotonic()))
        t_restart = time.monotonic()
        redis.start()  # same port and folder: the AOF has every acknowledged add
        t_up = time.monotonic()
        # each worker tries again after its backoff (100 ms more each time, up to 3 s): recovered
        # once the last 20 adds since the restart were 200
        recovered = wait_for(lambda: (lambda a: len(a) >= 20 and all(x[3] == 200 for x in a[-20:]))(
            [x for x in list(clients.adds) if x[1] > t_up]), 8)
        t_recovered = time.monotonic()
        time.sleep(1.0)
        clients.join()

        assert live == 200 and ready_down, "liveness stays up (%s), readiness reports Redis down" % live
        assert not clients.failures, clients.failures[:5]
        assert {st for _, st in clients.reads} == {200}, "reads fall through to SQLite during the outage"
        statuses = collections.Counter(st for _, _, _, st in clients.adds)
        assert set(statuses) <= {200, 503}, statuses
        outage = [st for _, t0, t1, st in clients.adds if t0 > t_kill + 0.05 and t1 < t_restart]
        assert outage and set(outage) == {503}, "writes answer 503 while Redis is away: %s" % collections.Counter(outage)
        assert recovered, "adds not 200 again within 8 s of Redis's restart"
        late = [st for _, t0, _, st in clients.adds if t0 > t_recovered]
        assert late and set(late) == {200}, "recovered without a restart: %s" % collections.Counter(late)

        for user in {u for u, _, _, _ in clients.adds}:
            answered = sum(1 for u, _, _, st in clients.adds if u == user and st == 200)
            refused = sum(1 for u, _, _, st in clients.adds if u == user and st == 503)
            stored = int(redis.call("HGET", "cart:" + user, "1") or 0)
            assert answered <= stored <= answered + refused, \
                "%s: %d answered 200, %d answered 503, %d stored" % (user, answered, refused, stored)

        assert set(s.workers()) == workers_before, "cohort was not restarted"
        log = s.log()
        for pid in workers_before:
            lost = [l for l in log.splitlines() if '"pid":%d,' % pid in l and "redis: lost the connection" in l]
            assert len(lost) == 1, "logged once per outage, not per request: %s" % lost
            assert re.search(r'"pid":%d,.*redis: connected to .* again' % pid, log)
    finally:
        redis.stop()
