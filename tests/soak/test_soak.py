"""The soak (`make soak`; not part of `make test`): cohort-test with the
shop in Redis mode under a steady mixed load for SOAK_SECONDS (default 240),
while faults come at random moments from a seeded generator (SOAK_SEED, or
the time; the seed is printed, so a run can be replayed):

  kill     SIGKILL the worker of slot 0 (the master starts another)
  recycle  the worker of slot 0 leaks past max_memory (/__test/leak) and is replaced
  reload   `cohort reload` (every worker replaced)
  redis    redis-server SIGKILLed, started again 0.2-2 s later (AOF, appendfsync always)

Kills and leaks hit slot 0 only, so slot 1's workers are replaced by reloads
alone and live long enough for their memory to mean something.

At the end, with the load stopped:
  - no worker leaked: the master's children are exactly `workers`, and every
    worker pid ever seen but those is gone;
  - no descriptor leaked: the master holds the same ones as after the
    warm-up; each worker (after the same warm-up load) the same sockets, pipes
    and other descriptors as the first ones, and SQLite files within the
    store's bound (its pool opens a connection per thread that ever queried:
    at most 5, two files each);
  - memory is flat: the master's RSS, and the RSS of every worker that lived
    30 s and was not made to leak: from 10 s of age on (the load reads
    100 products, so the caches are full by then), the median of the
    second half of its samples is within 2 MiB of the first half's (a
    worker's RSS swings by about 2 MiB as it gives memory back, so single
    samples say little);
  - every cart add answered 200 is in Redis with its quantity, and nothing else
    is (each add has a (user, product) pair of its own);
  - no answer but the expected ones: GET product 200, add and GET cart 200
    or 503 (Redis down), and connection errors only around a worker kill.
"""
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import conftest  # noqa: E402 (tests/e2e helpers)
import opsutil  # noqa: E402
import rawhttp  # noqa: E402
import shopload  # noqa: E402
from redisserver import RedisServer  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS") or 240)
SEED = int(os.environ.get("SOAK_SEED") or int(time.time()))
WORKERS = 2
MAX_MEMORY_MB = 64
LEAK_MB = 80
PRODUCTS = 100          # a working set the caches hold within seconds: growth after that is a leak
KILL_WINDOW = 1.0       # connection errors allowed this close to a kill
LONG_LIVED = 30.0       # seconds a worker must live for its RSS to count
WARM_AGE = 10.0         # seconds of a worker's life its caches take to fill
RSS_SLACK_KB = 2 * 1024  # growth of the median allowed over a worker's life
RSS_MAX_KB = 32 * 1024   # no worker that was not made to leak goes above
EVENTS = (("kill", 2), ("redis", 2), ("recycle", 1), ("reload", 1))


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else 0


def slot0_pid(srv):
    """The serving worker of slot 0, or None while it is being replaced."""
    row = srv.ready_workers().get(0)
    return row["pid"] if row else None


SQLITE_FDS_MAX = 2 * 5 + 1


def fd_kinds(pid):
    """{kind: count} of a process's descriptors: socket, pipe, anon_inode:[...],
    sqlite (the store's files), or the path."""
    out = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    for n in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = target.split(":")[0] if target.startswith(("socket:", "pipe:")) else target
        if target.startswith("anon_inode:"):
            kind = target
        elif "/shop.db" in target and not target.endswith("-epoch"):
            kind = "sqlite"
        elif target.startswith("/memfd:"):
            kind = target.split(" ")[0]
        out[kind] = out.get(kind, 0) + 1
    return out


class Load(shopload.PacedLoad):
    """GET a product (6 in 10), add to a cart (3 in 10), GET a cart (1 in 10)."""

    def __init__(self, port, threads=4, rate=60, tag="soak"):
        super().__init__(lambda: rawhttp.Conn(port, timeout=10), self.request, SEED, threads, rate,
                         limit=SECONDS + 300)
        self.tag = tag

    def request(self, i, k, rng):
        roll = k % 10
        if roll in (2, 5, 8):
            n = (k // 10) * 3 + (2, 5, 8).index(roll)
            return shopload.cart_add("%s-t%d-%d" % (self.tag, i, n // PRODUCTS), n % PRODUCTS + 1, rng.randint(1, 9))
        if roll == 9:
            return {"kind": "cart"}, rawhttp.get("/api/cart", headers=[("User-Id", "%s-t%d-0" % (self.tag, i))])
        return {"kind": "get"}, rawhttp.get("/api/products/%d" % rng.randint(1, PRODUCTS))


class Sampler:
    """RSS of the master and of every worker, once a second."""

    def __init__(self, srv):
        self.srv = srv
        self.samples = {}  # pid -> [(t, KiB)]
        self.first_seen = {}
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            now = time.monotonic()
            for pid in [self.srv.pid] + self.srv.workers():
                kb = conftest.rss_kib(pid)
                if kb is not None:
                    self.first_seen.setdefault(pid, now)
                    self.samples.setdefault(pid, []).append((now, kb))
            self.stop_ev.wait(1.0)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)


def warm_up(port, seconds=3):
    load = Load(port, tag="warm").start()
    time.sleep(seconds)
    load.stop()
    bad = [r for r in load.records if r["status"] != 200]
    assert not bad, "warm-up failures: %s" % bad[:3]


def wait_redis_up(srv, timeout=30):
    """Until every worker's Redis connection is up again (after a restart
    near the end, a worker may still be in its reconnect backoff)."""
    deadline = time.monotonic() + timeout
    while True:
        with rawhttp.Conn(srv.port, timeout=10) as c:
            c.send(rawhttp.get("/stats"))
            r = c.read_response()
        up = json.loads(r.body)["totals"]["redis"]["workersUp"] if r.status == 200 else -1
        if up == WORKERS:
            return
        assert time.monotonic() < deadline, "Redis connections up in %d of %d workers" % (up, WORKERS)
        time.sleep(0.2)


def settle(srv, timeout=30):
    """Until the load's connections are gone: fds are counted at rest."""
    srv.wait_settled(WORKERS, timeout=timeout)
    # the load's clients closed their connections; the workers see the closes a moment later
    assert opsutil.wait_for(lambda: all(w["connections"] == 0 for w in srv.status()["workers"]), 10), \
        srv.status()["workers"]
    time.sleep(1.0)


def fds(srv):
    return fd_kinds(srv.pid), {p: fd_kinds(p) for p in srv.workers()}


def without_sqlite(kinds):
    return {k: v for k, v in kinds.items() if k != "sqlite"}


def check_carts(redis, records):
    adds = [r for r in records if r["kind"] == "add"]
    carts = {}
    for u in sorted({r["user"] for r in adds}):
        flat = redis.call("HGETALL", "cart:" + u)
        carts[u] = {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    sent = {(r["user"], r["pid"]) for r in adds}
    problems = []
    for r in adds:
        have = carts[r["user"]].get(r["pid"])
        if r["status"] == 200 and have != r["qty"]:
            problems.append("answered 200, the cart holds %r: %r" % (have, r))
        elif r["status"] != 200 and have not in (None, r["qty"]):
            problems.append("not answered 200, the cart holds %r: %r" % (have, r))
    for u, cart in carts.items():
        for pid, qty in cart.items():
            if (u, pid) not in sent:
                problems.append("cart:%s holds %d x%d that nobody added" % (u, pid, qty))
    assert not problems, "%d cart problems: %s" % (len(problems), problems[:5])
    return sum(r["status"] == 200 for r in adds)


def test_soak():
    print("\nsoak: SOAK_SEED=%d SOAK_SECONDS=%g" % (SEED, SECONDS))
    rng = random.Random(SEED)
    workdir = tempfile.mkdtemp(prefix="cohort-soak-", dir="/tmp")
    redis = RedisServer(workdir, aof=True).start()
    cfg = opsutil.ops_config(workdir, conftest.free_port(), {
        "redis": {"url": redis.url, "command_timeout": "1s"},
        "store": {"path": os.path.join(workdir, "shop.db")},
        "max_memory": "%dM" % MAX_MEMORY_MB, "memory_check_interval": "1s",
        "log": {"access": "off", "stats_interval": "0s"},
    }, workers=WORKERS)
    srv = opsutil.OpsServer(workdir, cfg, binary=opsutil.cohort_test_bin())
    srv.worker_deaths_ok = True  # the soak kills workers
    load = sampler = None
    ok = False
    try:
        srv.start()
        wait_redis_up(srv)
        warm_up(srv.port)
        settle(srv)
        fd_master0, fd_workers0 = fds(srv)
        sampler = Sampler(srv).start()
        load = Load(srv.port).start()
        events, kills, leakers, all_workers = [], [], set(), set()
        t_end = time.monotonic() + SECONDS
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(4.0, 10.0))
            kind = rng.choices([e for e, _ in EVENTS], [w for _, w in EVENTS])[0]
            all_workers.update(srv.workers())
            t = time.monotonic()
            if kind == "kill":
                victim = slot0_pid(srv)
                if victim:
                    kills.append(time.monotonic())
                    opsutil.kill_pid(victim)
            elif kind == "reload":
                rc, out, err = srv.cli("reload", timeout=60)
                assert rc == 0, "cohort reload: %d %s %s" % (rc, out, err)
            elif kind == "recycle":
                pid = slot0_pid(srv)
                for _ in range(50):  # a connection that slot 0's worker took
                    with rawhttp.Conn(srv.port, timeout=10) as c:
                        if pid and opsutil.whoami(c)[1] == pid:
                            c.send(rawhttp.get("/__test/leak?mb=%d" % LEAK_MB))
                            assert c.read_response().status == 200
                            leakers.add(pid)
                            break
            elif kind == "redis":
                redis.kill()
                time.sleep(rng.uniform(0.2, 2.0))
                redis.start()
            events.append((round(t - sampler.first_seen[srv.pid], 1), kind))
        load.stop()
        all_workers.update(srv.workers())
        print("soak: %d events: %s" % (len(events), events))

        # --- nothing left behind -------------------------------------------
        deadline = time.monotonic() + 30  # a leak just before the end is recycled now
        while leakers & set(srv.workers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        srv.wait_settled(WORKERS, timeout=30)
        kids = srv.workers()
        assert len(kids) == WORKERS, "the master has %d children: %s" % (len(kids), kids)
        all_workers.update(srv.seen_workers)
        lingering = [p for p in all_workers - set(kids) if conftest.pid_alive(p)]
        assert not lingering, "old workers still alive: %s" % lingering
        assert not leakers & set(kids), "leaking workers were not recycled: %s" % (leakers & set(kids))
        sampler.stop()
        wait_redis_up(srv)
        warm_up(srv.port)
        settle(srv)
        fd_master1, fd_workers1 = fds(srv)
        print("soak: fds master %s -> %s, workers %s -> %s" % (fd_master0, fd_master1, fd_workers0, fd_workers1))
        assert fd_master1 == fd_master0, "the master's descriptors: %s, after the warm-up %s" % (fd_master1,
                                                                                               fd_master0)
        first = without_sqlite(next(iter(fd_workers0.values())))
        for pid, kinds in list(fd_workers0.items()) + list(fd_workers1.items()):
            assert without_sqlite(kinds) == first, "worker %d holds %s; the first one %s" % (pid, kinds, first)
            assert kinds.get("sqlite", 0) <= SQLITE_FDS_MAX, "worker %d: %s" % (pid, kinds)

        # --- memory ----------------------------------------------------------
        grown, lives = [], []
        for pid, s in sampler.samples.items():
            if pid in leakers or pid == srv.pid:
                continue
            assert max(kb for _, kb in s) <= RSS_MAX_KB, "worker %d reached %d KiB" % (pid, max(kb for _, kb in s))
            if s[-1][0] - s[0][0] < LONG_LIVED:
                continue
            warm = [kb for t, kb in s if t - s[0][0] >= WARM_AGE]
            half = len(warm) // 2
            first, second = median(warm[:half]), median(warm[half:])
            lives.append((pid, round(s[-1][0] - s[0][0]), first, second))
            print("soak: worker %d RSS KiB every 10 s: %s" % (pid, [kb for _, kb in s[::10]]))
            if second - first > RSS_SLACK_KB:
                grown.append(lives[-1])
        m = sampler.samples[srv.pid]
        print("soak: master RSS %d -> %d KiB; long-lived workers (pid, s, median KiB first half, second half): %s"
              % (m[0][1], m[-1][1], lives))
        assert lives, "no worker lived %g s without being made to leak" % LONG_LIVED
        assert not grown, "worker RSS grew (pid, lifetime s, median KiB first half, second half): %s" % grown
        assert m[-1][1] - m[0][1] <= RSS_SLACK_KB, "the master's RSS grew %d -> %d KiB" % (m[0][1], m[-1][1])

        # --- answers ---------------------------------------------------------
        recs = load.records
        near_kill = [r for r in recs if r["status"] is None and
                     any(k - KILL_WINDOW <= r["t1"] <= k + KILL_WINDOW for k in kills)]
        unexpected = [r for r in recs if not (
            (r["kind"] == "get" and r["status"] == 200) or
            (r["kind"] in ("add", "cart") and r["status"] in (200, 503)) or r in near_kill)]
        assert not unexpected, "%d unexpected answers, first: %s" % (len(unexpected), unexpected[:5])
        answered = check_carts(redis, recs)
        summary = {}
        for r in recs:
            key = "%s %s" % (r["kind"], r["status"] if r["status"] is not None else "conn-error")
            summary[key] = summary.get(key, 0) + 1
        print("soak: %d requests %s; %d adds answered 200, all in Redis" % (len(recs), summary, answered))
        assert answered > 0
        ok = True
    finally:
        if load:
            load.stop()
        if sampler:
            sampler.stop()
        problems = srv.finish() if srv.proc else []
        redis.kill()
        if ok and not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("soak: work directory kept: %s" % workdir)
    assert not problems, problems
