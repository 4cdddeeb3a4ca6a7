"""Several machines, under faults (issue 7; docs/scaling.md).

The test builds its own hosts out of network namespaces on one switch
(tests/e2e/netns.py):

    cl    10.77.0.5    the test's load client
    lb    10.77.0.10   `cohort balance` (health checks every 300 ms, fall 2, rise 2)
    app1  10.77.0.11   `cohort serve`: the shop, carts in Redis found through Sentinel,
    app2  10.77.0.12     every cart change waiting for 1 replica (WAIT, 300 ms)
    app3  10.77.0.13
    rd1   10.77.0.20   redis-server primary (6379) and Sentinel 26379 (the first
                       in every app host's redis.sentinels)
    rd2   10.77.0.21   redis-server replica (6380) and Sentinel 26380
    rd3   10.77.0.22   Sentinel 26381
                       (both servers appendonly yes + appendfsync always;
                       Sentinels quorum 2, down-after 1 s)

Each scenario runs under a bounded mixed load from `cl` (GETs of products
and cart adds, every add to a (user, product) pair of its own, so each
answered add can be found exactly), then compares the carts in Redis with
every add answered 2xx:

1. an app host's cable pulled and put back: the balancer ejects it and
   takes it back; no GET fails;
2. the Redis primary killed: Sentinel promotes the replica, cohort follows;
   adds during the outage are 503, none answered 200 is lost;
3. the Redis primary's host cut off for 8 s (its cable pulled, with the
   first Sentinel), after thousands of adds (the primary put back on rd1
   first): every request is answered within redis.command_timeout (+
   wait_timeout) and a margin, every worker's +switch-master subscription
   moves to a live Sentinel, the workers follow the failover within 1 s of
   the other Sentinels' announcement, none answered 200 is lost;
4. `cohort reload` on each app host in turn, under load: nothing fails.

The figures each scenario measures are printed (pytest -s) and written to
figures.json in the work directory, which is kept only when a scenario
failed or the teardown found a problem. docs/scaling.md quotes them.
Everything is torn down by pid and `ip netns del`, also when a test fails.
"""
import json
import os
import shutil
import signal
import tempfile
import time

import pytest

import conftest
import netns
import opsutil
import rawhttp
import shopload
from redisserver import REDIS_SERVER, RespClient

SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
# A Sentinel whose timer finds more than 2 s gone since its last run (the
# machine paused, the wall clock stepped) enters TILT mode and does nothing
# for 30 s; it then takes up to 10 s (its INFO period) plus 8 s to turn a
# returned primary into a replica. The test waits for that, not for 10 s.
SENTINEL_ACTS_WITHIN = 90
NET = "10.77.0"
CL_IP, LB_IP = NET + ".5", NET + ".10"
APPS = (("app1", NET + ".11"), ("app2", NET + ".12"), ("app3", NET + ".13"))
RDS = (("rd1", NET + ".20"), ("rd2", NET + ".21"), ("rd3", NET + ".22"))
APP_PORT, LB_PORT, LB_ADMIN = 3000, 8080, 8081
PRIMARY, REPLICA = 6379, 6380
SENTINELS = (26379, 26380, 26381)
# which rd host runs each server: the primary with the first Sentinel
HOST_OF = {PRIMARY: "rd1", REPLICA: "rd2", 26379: "rd1", 26380: "rd2", 26381: "rd3"}
MASTER = "mymaster"
PASSWORD = "multihost-secret"
WORKERS = 2
COMMAND_TIMEOUT_MS = 1000
WAIT_TIMEOUT_MS = 300
HEALTH_INTERVAL_MS, FALL, RISE = 300, 2, 2
PRODUCTS = 1000


def wait_for(pred, timeout, step=0.05, what="condition", story=None):
    """rawhttp.wait_for that fails the test when pred never holds; `story()`,
    when given, tells what happened meanwhile."""
    v = rawhttp.wait_for(pred, timeout, step)
    if not v:
        raise AssertionError("%s not met within %.1f s%s" % (what, timeout, "\n" + story() if story else ""))
    return v


def tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


# --- the hosts' programs -----------------------------------------------------

class Cohort:
    """A `cohort serve` or `cohort balance` master in a host."""

    def __init__(self, cluster, host, name, config, command="serve"):
        self.cluster, self.host, self.name = cluster, host, name
        self.dir = os.path.join(cluster.dir, name)
        os.makedirs(self.dir, exist_ok=True)
        config = conftest.deep_merge(config, {"control": {"socket": os.path.join(self.dir, "ctl.sock"),
                                                          "pid_file": os.path.join(self.dir, "pid")}})
        self.config_path = os.path.join(self.dir, "cohort.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.command = command
        self.proc = None
        self.seen = set()

    def start(self):
        self.proc = self.host.spawn([self.cluster.bin, self.command, "-c", self.config_path],
                                    os.path.join(self.dir, "stderr.log"), cwd=self.dir, env=conftest.clean_env())
        wait_for(lambda: "serving http://" in self.log() or not self.proc.alive(), 20,
                 what="%s serving" % self.name)
        assert self.proc.alive(), "%s exited:\n%s" % (self.name, tail(self.log()))
        self.workers()
        return self

    def log(self):
        return self.proc.log() if self.proc else ""

    def workers(self):
        kids = conftest.children_of(self.proc.pid) if self.proc and self.proc.alive() else []
        self.seen.update(kids)
        return kids

    def reload(self):
        """`cohort reload` in the host; (exit code, output, seconds)."""
        t0 = time.monotonic()
        p = self.host.run([self.cluster.bin, "reload", "-c", self.config_path], timeout=60)
        return p.returncode, (p.stdout + p.stderr).strip(), time.monotonic() - t0

    def stop(self):
        """Graceful stop; the problems seen (exit code, lingering workers,
        sanitizer reports, workers that died)."""
        problems = []
        if not self.proc:
            return problems
        self.workers()
        if self.proc.alive():
            self.proc.signal(signal.SIGTERM)
            rc = self.proc.wait(20)
            if rc is None:
                self.proc.kill()
                problems.append("%s did not stop within 20 s" % self.name)
            elif rc != 0:
                problems.append("%s exited with %s on SIGTERM" % (self.name, rc))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(conftest.pid_alive(p) for p in self.seen):
            time.sleep(0.05)
        for p in self.seen:
            if conftest.pid_alive(p) and conftest.cmdline(p)[1:2] == [b"__worker"]:
                os.kill(p, signal.SIGKILL)
                problems.append("%s: worker %d outlived its master" % (self.name, p))
        log = self.log()
        if conftest.SANITIZER_RE.search(log):
            problems.append("%s: sanitizer report in its stderr" % self.name)
        deaths = [l for l in log.splitlines() if "restarting" in l]
        if deaths:
            problems.append("%s: a worker died: %s" % (self.name, deaths[0]))
        return problems


class Cluster:
    def __init__(self, workdir):
        self.dir = workdir
        self.bin = opsutil.ops_bin()
        self.net = netns.Network()
        self.cl = self.net.host("cl", CL_IP)
        self.lb_host = self.net.host("lb", LB_IP)
        self.app_hosts = [self.net.host(n, ip) for n, ip in APPS]
        self.rd_hosts = {n: self.net.host(n, ip) for n, ip in RDS}
        self.redis = {}       # port -> netns.Proc
        self.redis_argv = {}
        self.sentinels = []
        self.apps = []
        self.lb = None
        self.figures = {}

    # --- Redis -----------------------------------------------------------
    def rd(self, port):
        """The host that runs the server (or Sentinel) on port."""
        return self.rd_hosts[HOST_OF[port]]

    def rcall(self, port, *args, timeout=2.0):
        """A command to the server on port, from inside its own host (so
        it answers while the host is cut off)."""
        with self.rd(port).entered():
            c = RespClient(port, timeout=timeout)
            try:
                if port not in SENTINELS:
                    c.call("AUTH", PASSWORD)
                return c.call(*args)
            finally:
                c.close()

    def rping(self, port):
        try:
            return self.rcall(port, "PING", timeout=0.5) == "PONG"
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def start_redis(self, port, replica_of=None):
        d = os.path.join(self.dir, "redis-%d" % port)
        os.makedirs(d, exist_ok=True)
        if port not in self.redis_argv:
            # what makes "an answered add is never lost" true (docs/scaling.md)
            argv = [REDIS_SERVER, "--port", str(port), "--bind", self.rd(port).addr, "127.0.0.1", "--dir", d,
                    "--save", "",
                    "--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0",
                    "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                    "--daemonize", "no", "--logfile", os.path.join(d, "redis.log")]
            if replica_of:
                argv += ["--replicaof", self.rd(replica_of).addr, str(replica_of)]
            self.redis_argv[port] = argv
        self.redis[port] = self.rd(port).spawn(self.redis_argv[port], os.path.join(d, "stdout.log"))
        wait_for(lambda: self.rping(port), 10, what="redis on %d" % port)

    def primary(self, sentinels=SENTINELS):
        """The primary's port, as most of the Sentinels that answer name it
        (one cut off from the others may name the old one)."""
        votes = {}
        for s in sentinels:
            try:
                ip, port = self.rcall(s, "SENTINEL", "get-master-addr-by-name", MASTER, timeout=1.0)
                votes[int(port)] = votes.get(int(port), 0) + 1
            except Exception:  # noqa: BLE001 - the next one
                continue
        if not votes:
            raise AssertionError("no Sentinel answers")
        return max(votes, key=lambda p: (votes[p], p == PRIMARY))

    def worker_conns(self, ports, subscribers=False):
        """Connections to the servers (or Sentinels) on ports from each app
        host: the subscribers (flag P) or the others. To a Redis server,
        the others are the workers' command connections; to a Sentinel, the
        subscribers are the workers' +switch-master ones."""
        out = {ip: 0 for _, ip in APPS}
        for port in ports:
            for line in self.rcall(port, "CLIENT", "LIST").decode().splitlines():
                f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                ip = f.get("addr", "").rsplit(":", 1)[0]
                if ip in out and ("P" in f.get("flags", "")) == subscribers:
                    out[ip] += 1
        return out

    def replica_online(self, port):
        try:
            info = self.rcall(port, "INFO", "replication").decode()
        except Exception:  # noqa: BLE001
            return False
        return "role:master" in info and "state=online" in info

    def sentinel_story(self):
        """The Sentinels' events that decide a failover's pace, from their logs."""
        out = []
        for port in SENTINELS:
            try:
                with open(os.path.join(self.dir, "sentinel-%d" % port, "sentinel.log"), errors="replace") as f:
                    lines = [ln.rstrip() for ln in f if any(k in ln for k in (
                        "tilt", "switch-master", "convert-to-slave", "sdown", "odown", "failover"))]
            except OSError as e:
                lines = [repr(e)]
            out.append("--- sentinel %d\n%s" % (port, "\n".join(lines[-15:])))
        return "\n".join(out)

    def start_sentinels(self):
        for port in SENTINELS:
            d = os.path.join(self.dir, "sentinel-%d" % port)
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind %s 127.0.0.1\ndir %s\nlogfile %s\n"
                        "sentinel monitor %s %s %d 2\n"
                        "sentinel auth-pass %s %s\n"
                        "sentinel down-after-milliseconds %s 1000\n"
                        "sentinel failover-timeout %s 4000\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (port, self.rd(port).addr, d, os.path.join(d, "sentinel.log"), MASTER,
                           self.rd(PRIMARY).addr, PRIMARY, MASTER, PASSWORD, MASTER, MASTER, MASTER))
            self.sentinels.append(self.rd(port).spawn([SENTINEL, conf], os.path.join(d, "stdout.log")))
        for port in SENTINELS:
            wait_for(lambda: self.rping(port), 10, what="sentinel on %d" % port)

        def known():
            for port in SENTINELS:
                m = self.rcall(port, "SENTINEL", "master", MASTER)
                kv = {k.decode(): v.decode() for k, v in zip(m[::2], m[1::2])}
                if int(kv["num-slaves"]) != 1 or int(kv["num-other-sentinels"]) != 2:
                    return False
            return True
        # each Sentinel knows the replica and the two others: a failover can be voted
        wait_for(known, 20, step=0.2, what="Sentinels knowing each other and the replica")

    # --- cohort ----------------------------------------------------------
    def app_config(self, ip):
        return {
            "server": {"host": ip, "port": APP_PORT},
            "workers": WORKERS,
            "shutdown_timeout": "10s",
            "store": {"path": "shop.db"},
            # with Sentinels the URL gives only the password (and database): its host names nothing
            "redis": {"url": "redis://:%s@%s" % (PASSWORD, MASTER),
                      "sentinels": ["%s:%d" % (self.rd(p).addr, p) for p in SENTINELS], "master_name": MASTER,
                      "command_timeout": "%dms" % COMMAND_TIMEOUT_MS, "wait_replicas": 1,
                      "wait_timeout": "%dms" % WAIT_TIMEOUT_MS},
            "log": {"access": "off", "stats_interval": "0s"},
        }

    def lb_config(self):
        return {
            "server": {"host": LB_IP, "port": LB_PORT},
            "workers": 2,
            "shutdown_timeout": "10s",
            "admin": {"host": "127.0.0.1", "port": LB_ADMIN},
            "log": {"access": "off", "stats_interval": "0s"},
            "upstreams": {"app": {
                "servers": ["%s:%d" % (ip, APP_PORT) for _, ip in APPS],
                "health": {"path": "/health", "interval": "%dms" % HEALTH_INTERVAL_MS, "timeout": "250ms",
                           "fall": FALL, "rise": RISE},
                "passive": {"failures": 3, "ejection_time": "1s"},
                "timeouts": {"connect": "300ms", "first_byte": "2s"},
                # a host that drops off leaves GETs in flight that only the timeout ends
                "retries": 2, "retry_on_timeout": True, "retry_budget": {"min": 32},
            }},
            "routes": [{"path": "/*", "handler": "proxy", "upstream": "app"}],
            "app": "none",
        }

    def lb_servers(self):
        with self.lb_host.entered():
            st = json.loads(rawhttp.exchange(LB_ADMIN, rawhttp.get("/stats"), timeout=3).body)
        return {u["name"]: u for u in st["upstreams"]}

    def app_ready(self, host):
        with self.lb_host.entered():
            try:
                c = rawhttp.Conn(APP_PORT, host=host.addr, timeout=2)
            except OSError:
                return False
            with c:
                c.send(rawhttp.get("/health/ready"))
                return c.read_response().status == 200

    # --- life ------------------------------------------------------------
    def start(self):
        self.net.up()
        self.start_redis(PRIMARY)
        self.start_redis(REPLICA, replica_of=PRIMARY)
        wait_for(lambda: self.replica_online(PRIMARY), 10, what="replica online")
        self.start_sentinels()
        for h in self.app_hosts:
            self.apps.append(Cohort(self, h, h.name, self.app_config(h.addr)).start())
        for h in self.app_hosts:
            wait_for(lambda: self.app_ready(h), 20, what="%s ready (Redis through Sentinel)" % h.name)
        self.lb = Cohort(self, self.lb_host, "lb", self.lb_config(), command="balance").start()
        wait_for(lambda: all(s["state"] == "up" for s in self.lb_servers().values()), 20,
                 what="every app host up at the balancer")
        return self

    def healthy(self):
        """Back to the full topology: every app host up at the balancer, a
        primary with its replica online."""
        wait_for(lambda: all(s["state"] == "up" for s in self.lb_servers().values()), 20,
                 what="every app host up at the balancer")
        wait_for(lambda: self.replica_online(self.primary()), SENTINEL_ACTS_WITHIN, step=0.2, what="a replica online",
                 story=self.sentinel_story)

    def teardown(self):
        problems = []
        for c in [self.lb] + self.apps:
            if c:
                problems += c.stop()
        problems += self.net.destroy()
        return problems

    def logs(self):
        out = []
        for c in [self.lb] + self.apps:
            if c:
                out.append("--- %s\n%s" % (c.name, tail(c.log(), 25)))
        return "\n".join(out)


def workdir_parent():
    """tmpfs when there is one: the test kills processes, not the machine,
    and a write in the page cache survives SIGKILL. On a busy disk an fsync
    (Redis's appendfsync always, Sentinel's rewrite of its config on every
    state change) can block a server for a second, longer than WAIT's
    300 ms and Sentinel's down-after: the scenarios would measure the disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else "/tmp"


@pytest.fixture(scope="module")
def cluster(request):
    why = netns.available()
    if why:
        pytest.fail("the multi-host test %s" % why, pytrace=False)
    d = tempfile.mkdtemp(prefix="cohort-mh-", dir=workdir_parent())
    c = Cluster(d)
    failed_before = request.session.testsfailed
    try:
        c.start()
        yield c
    finally:
        problems = c.teardown()
        print("\nmulti-host figures: %s" % json.dumps(c.figures, indent=1, sort_keys=True))
        with open(os.path.join(d, "figures.json"), "w") as f:
            json.dump(c.figures, f, indent=1, sort_keys=True)
        if problems or request.session.testsfailed > failed_before:
            print("multi-host work directory kept: %s" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    assert not problems, "; ".join(problems)


# --- the load ------------------------------------------------------------------

class Load(shopload.PacedLoad):
    """Client threads in `cl`, each on its own keep-alive connection to the
    balancer, paced to `rate` requests a second: GETs of products and, every
    third request, a cart add for a (user, product) pair used once."""

    def __init__(self, cluster, tag, threads=4, rate=80):
        super().__init__(lambda: rawhttp.Conn(LB_PORT, host=LB_IP, timeout=10), self.request, tag, threads, rate,
                         around=cluster.cl.entered)
        self.tag = tag

    def request(self, i, k, rng):
        """The k-th request of thread i: (record, bytes)."""
        if k % 3 == 2:
            n = k // 3
            return shopload.cart_add("%s-t%d-%d" % (self.tag, i, n // PRODUCTS), n % PRODUCTS + 1, rng.randint(1, 9))
        return {"kind": "get"}, rawhttp.get("/api/products/%d" % rng.randint(1, PRODUCTS))

    def __enter__(self):
        self.t0 = time.monotonic()
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self.t1 = time.monotonic()


class Adds(Load):
    """Cart adds only, as fast as `rate` allows: a worker's connection
    serves thousands of WAITs."""

    def request(self, i, k, rng):
        return shopload.cart_add("%s-t%d-%d" % (self.tag, i, k // PRODUCTS), k % PRODUCTS + 1, rng.randint(1, 9))


def summary(records):
    out = {}
    for r in records:
        key = str(r["status"]) if r["status"] is not None else "error"
        out[key] = out.get(key, 0) + 1
    return out


def check_carts(cluster, load):
    """Every add answered 2xx is in its cart with its quantity; an add not
    answered 2xx is there with its quantity or not at all; nothing else is
    there. Read from the primary the Sentinels name now."""
    adds = [r for r in load.of("add") if "user" in r]
    port = cluster.primary()
    carts = {}
    for u in sorted({r["user"] for r in adds}):
        flat = cluster.rcall(port, "HGETALL", "cart:" + u)
        carts[u] = {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    problems, present_unanswered = [], 0
    sent = {(r["user"], r["pid"]) for r in adds}
    for r in adds:
        have = carts[r["user"]].get(r["pid"])
        if r["status"] is not None and 200 <= r["status"] < 300:
            if have != r["qty"]:
                problems.append("answered %d but the cart holds %r: %r" % (r["status"], have, r))
            elif json.loads(r["body"])["quantity"] != r["qty"]:
                problems.append("answered with the wrong quantity: %r" % r)
        elif have is not None:
            present_unanswered += 1
            if have != r["qty"]:
                problems.append("an add not answered 2xx left %r: %r" % (have, r))
    for u, cart in carts.items():
        for pid, qty in cart.items():
            if (u, pid) not in sent:
                problems.append("cart:%s holds product %d (%d) that nobody added" % (u, pid, qty))
    assert not problems, "%d cart problems, first: %s" % (len(problems), problems[:5])
    answered = sum(1 for r in adds if r["status"] == 200)
    assert answered > 0, "no add was answered 200: %s" % summary(adds)
    return {"adds_answered_200": answered, "adds_not_2xx": len(adds) - answered,
            "not_2xx_but_applied": present_unanswered}


def assert_gets_all_ok(load, what):
    gets = load.of("get")
    bad = [r for r in gets if r["status"] != 200]
    assert gets and not bad, "%s: %d of %d GETs failed, first: %s" % (what, len(bad), len(gets), bad[:3])
    return max(r["t1"] - r["t0"] for r in gets)


# --- the scenarios -------------------------------------------------------------

def test_app_host_link_cut_and_restored(cluster):
    c = cluster
    c.healthy()
    victim = c.app_hosts[1]
    name = "%s:%d" % (victim.addr, APP_PORT)
    with Load(c, "cut") as load:
        time.sleep(2)
        requests_before = c.lb_servers()[name]["requests"]
        t_cut = time.monotonic()
        c.net.cut(victim)
        wait_for(lambda: c.lb_servers()[name]["state"] != "up", 10, step=0.02, what="the balancer ejecting it")
        t_out = time.monotonic()
        time.sleep(2)
        t_restore = time.monotonic()
        c.net.restore(victim)
        wait_for(lambda: c.lb_servers()[name]["state"] == "up", 15, step=0.02, what="the balancer taking it back")
        t_back = time.monotonic()
        served_at_back = c.lb_servers()[name]["requests"]
        time.sleep(2)
    assert c.lb_servers()[name]["requests"] > served_at_back, "the host got no request after it came back"
    assert served_at_back >= requests_before
    slowest_get = assert_gets_all_ok(load, "a cable pulled and put back")
    adds = load.of("add")
    # once it was out, and until it came back, no add went to it
    during = [r for r in adds if t_out + 0.05 < r["t0"] and r["t1"] < t_restore]
    assert during and all(r["status"] == 200 for r in during), summary(during)
    bad = [r for r in adds if r["status"] != 200]
    assert all(r["status"] in (502, 503, 504) or r["status"] is None for r in bad), summary(adds)
    carts = check_carts(c, load)
    c.figures["link_cut"] = dict(carts, ejected_after_s=round(t_out - t_cut, 2),
                                 readmitted_after_s=round(t_back - t_restore, 2),
                                 slowest_get_s=round(slowest_get, 3), gets=len(load.of("get")),
                                 adds=summary(adds), seconds=round(load.t1 - load.t0, 1))


def test_redis_primary_killed(cluster):
    c = cluster
    c.healthy()
    old = c.primary()
    new = REPLICA if old == PRIMARY else PRIMARY
    with Load(c, "failover") as load:
        time.sleep(2)
        t_kill = time.monotonic()
        c.redis[old].kill()
        wait_for(lambda: c.primary() == new, SENTINEL_ACTS_WITHIN, step=0.05, what="Sentinel promoting the replica",
                 story=c.sentinel_story)
        t_switch = time.monotonic()
        # it comes back as a primary of nothing; Sentinel makes it the new
        # primary's replica. If the new primary stalls past down-after (1 s)
        # meanwhile (a busy machine, a slow fsync), the Sentinels may fail
        # back over to the restarted one instead: either way the pair ends as
        # a primary with its replica online, and cohort follows.
        t_restarted = time.monotonic()
        c.start_redis(old)
        wait_for(lambda: c.replica_online(c.primary()), SENTINEL_ACTS_WITHIN, step=0.05,
                 what="a primary with the other server as its replica online", story=c.sentinel_story)
        t_synced = time.monotonic()
        final_primary = c.primary()
        wait_for(lambda: any(r["status"] == 200 and r["t0"] > t_synced for r in load.of("add")), 10,
                 what="adds answered 200 again")
        time.sleep(2)
    slowest_get = assert_gets_all_ok(load, "a Redis failover")
    adds = load.of("add")
    assert all(r["status"] in (200, 503) for r in adds), "adds are 200 or 503: %s" % summary(adds)
    for r in adds:
        if r["status"] == 503:
            assert json.loads(r["body"]) == {"error": "cart store unavailable"}, r
    # from the kill until the old primary is started again, no replica exists anywhere
    outage = [r for r in adds if r["t0"] > t_kill + 0.05 and r["t1"] < t_restarted]
    assert outage, "no add during the outage"
    false_ok = [r for r in outage if r["status"] == 200]
    assert not false_ok, "200 while no replica could have the add: %s" % false_ok[:3]
    failed = [r for r in adds if r["status"] == 503]
    assert failed and min(r["t0"] for r in failed) > t_kill - 0.5, "503 before the kill: %s" % summary(adds)
    last_503 = max(r["t1"] for r in failed)
    carts = check_carts(c, load)
    c.figures["redis_failover"] = dict(
        carts, failover_s=round(t_switch - t_kill, 2), old_primary_restarted_after_s=round(t_restarted - t_kill, 2),
        replica_back_after_s=round(t_synced - t_kill, 2), adds_failing_s=round(last_503 - t_kill, 2),
        failed_back_to_the_restarted_one=final_primary == old,
        slowest_get_s=round(slowest_get, 3), gets=len(load.of("get")), adds=summary(adds),
        seconds=round(load.t1 - load.t0, 1))


def ensure_primary(c, port):
    """The pair back to `port` as the primary (a Sentinel-run failover)
    when an earlier scenario left the other one there."""
    if c.primary() == port:
        return
    c.rcall(SENTINELS[1], "SENTINEL", "FAILOVER", MASTER)
    wait_for(lambda: c.primary() == port and c.replica_online(port), SENTINEL_ACTS_WITHIN, step=0.2,
             what="the primary back on %d" % port, story=c.sentinel_story)


def test_redis_primary_host_cut_off(cluster):
    """rd1 (the primary and the first Sentinel of every worker's list)
    loses its network for 8 s after the workers served thousands of adds."""
    c = cluster
    c.healthy()
    ensure_primary(c, PRIMARY)
    c.healthy()
    rd1, cut_s = c.rd(PRIMARY), 8.0
    others = tuple(p for p in SENTINELS if HOST_OF[p] != HOST_OF[PRIMARY])
    with Adds(c, "warm", threads=8, rate=150) as warm:
        wait_for(lambda: sum(1 for r in warm.records if r["status"] == 200) >= 3000, 60, step=0.2,
                 what="3000 adds served before the cut")
    warm_200 = sum(1 for r in warm.records if r["status"] == 200)
    # a replica held up for WAIT's 300 ms on a busy machine refuses a few
    assert all(r["status"] in (200, 503) for r in warm.records), summary(warm.records)
    with Load(c, "partition") as load:
        time.sleep(2)
        t_cut = time.monotonic()
        c.net.cut(rd1)
        t_cut_done = time.monotonic()  # `ip` may take a while on a busy machine
        marks = {}

        def progress():
            now = time.monotonic()
            if "listening" not in marks and all(
                    n >= WORKERS for n in c.worker_conns(others, subscribers=True).values()):
                marks["listening"] = now
            if "switch" not in marks and c.primary(others) == REPLICA:
                marks["switch"] = now
            if "switch" in marks and "followed" not in marks and all(
                    n >= WORKERS for n in c.worker_conns([REPLICA]).values()):
                marks["followed"] = now
            # the subscriptions are judged below: waiting longer for them proves nothing
            return "followed" in marks and ("listening" in marks or now - t_cut > 10)
        wait_for(progress, SENTINEL_ACTS_WITHIN, step=0.05, what="the workers following the failover",
                 story=lambda: "%r commands %r, subscriptions %r\n%s" % (
                     marks, c.worker_conns([REPLICA]), c.worker_conns(others, subscribers=True),
                     c.sentinel_story()))
        time.sleep(max(0.0, t_cut + cut_s - time.monotonic()))
        t_restore = time.monotonic()
        c.net.restore(rd1)
        # the old primary returns a primary of nothing; the Sentinels make it a replica
        wait_for(lambda: c.primary() == REPLICA and c.replica_online(REPLICA), SENTINEL_ACTS_WITHIN, step=0.05,
                 what="the old primary a replica online", story=c.sentinel_story)
        t_synced = time.monotonic()
        wait_for(lambda: any(r["status"] == 200 and r["t0"] > t_synced for r in load.of("add")), 10,
                 what="adds answered 200 again")
        time.sleep(1)
    assert "listening" in marks, "the +switch-master subscriptions stayed on the lost Sentinel: %r" % (
        c.worker_conns(others, subscribers=True))
    t_switch, t_followed, t_listening = marks["switch"], marks["followed"], marks["listening"]
    gets, adds = load.of("get"), load.of("add")
    # every request answered, within the Redis deadlines: a GET's MGET (also
    # when sent behind a WAIT) is failed within command_timeout + wait_timeout,
    # an add's write and WAIT as much; a tick (100 ms) and the hops on top
    bound = (COMMAND_TIMEOUT_MS + WAIT_TIMEOUT_MS) / 1000.0 + 0.5
    slow = [r for r in gets + adds if r["status"] is None or r["t1"] - r["t0"] > bound]
    assert not slow, "%d requests unanswered or held longer than %.1f s, first: %s\n%s" % (
        len(slow), bound, slow[:3], c.logs())
    slowest_get = assert_gets_all_ok(load, "the primary's host cut off")
    assert all(r["status"] in (200, 503) for r in adds), "adds are 200 or 503: %s" % summary(adds)
    # while rd1 is cut off no replica can acknowledge: no 200
    cut = [r for r in adds if r["t0"] > t_cut_done and r["t1"] < t_restore]
    ok_in_cut = [dict(r, t0=round(r["t0"] - t_cut, 3), t1=round(r["t1"] - t_cut, 3)) for r in cut if r["status"] == 200]
    assert cut and not ok_in_cut, "%s during the cut (%.2f s), first: %s" % (summary(cut), t_restore - t_cut,
                                                                           ok_in_cut[:3])
    # every worker's +switch-master subscription left the lost Sentinel for a
    # live one: noticed by a SUBSCRIBE unconfirmed for command_timeout, sent
    # every half of it (a 100 ms tick, our 50 ms polls and slack on top)
    assert t_listening - t_cut <= 1.5 * COMMAND_TIMEOUT_MS / 1000.0 + 0.6, \
        "the subscriptions reached live Sentinels %.2f s after the cut" % (t_listening - t_cut)
    # the failover heard within 1 s of the Sentinels' (our polls add at most a step each)
    assert t_followed - t_switch <= 1.0 + 0.2, "followed %.2f s after the Sentinels switched (%.2f s after the " \
        "cut)" % (t_followed - t_switch, t_followed - t_cut)
    # once on the new primary, an add fails at WAIT's timeout (no replica), not twice that
    refused = sorted(r["t1"] - r["t0"] for r in adds
                     if r["status"] == 503 and r["t0"] > t_followed + 0.5 and r["t1"] < t_restore)
    assert refused, "no add refused on the new primary: %s" % summary(adds)
    median_503 = refused[len(refused) // 2]
    assert median_503 <= WAIT_TIMEOUT_MS / 1000.0 + 0.15, "a 503'd add took %.3f s (median)" % median_503
    carts = check_carts(c, load)
    check_carts(c, warm)
    c.figures["primary_host_cut"] = dict(
        carts, adds_before_cut=warm_200, cut_s=round(t_restore - t_cut, 2),
        failover_s=round(t_switch - t_cut, 2), followed_s=round(t_followed - t_cut, 2),
        resubscribed_s=round(t_listening - t_cut, 2),
        replica_back_after_s=round(t_synced - t_cut, 2),
        slowest_get_s=round(slowest_get, 3), slowest_add_s=round(max(r["t1"] - r["t0"] for r in adds), 3),
        add_503_median_s=round(median_503, 3), add_503_max_s=round(refused[-1], 3),
        gets=len(gets), adds=summary(adds), seconds=round(load.t1 - load.t0, 1))


def test_rolling_reload(cluster):
    c = cluster
    c.healthy()
    before = {a.name: set(a.workers()) for a in c.apps}
    took = {}
    with Load(c, "reload") as load:
        time.sleep(1.5)
        for a in c.apps:
            rc, out, secs = a.reload()
            assert rc == 0, "%s: cohort reload exited %d: %s" % (a.name, rc, out)
            took[a.name] = round(secs, 2)
            time.sleep(0.5)
        time.sleep(1.5)
    for a in c.apps:
        now = set(a.workers())
        assert now and not (now & before[a.name]), "%s: workers not replaced: %s -> %s" % (a.name, before[a.name],
                                                                                           now)
    slowest_get = assert_gets_all_ok(load, "a rolling reload")
    adds = load.of("add")
    bad = [r for r in adds if r["status"] != 200]
    assert not bad, "adds failed during a rolling reload: %s, first %s\n%s" % (summary(adds), bad[:3], c.logs())
    carts = check_carts(c, load)
    c.figures["rolling_reload"] = dict(carts, reload_s=took, slowest_get_s=round(slowest_get, 3),
                                       gets=len(load.of("get")), adds=summary(adds),
                                       seconds=round(load.t1 - load.t0, 1))


def test_nothing_listens_outside_the_hosts(cluster):
    """Every process the test started lives in one of its namespaces."""
    own = os.stat("/proc/self/ns/net").st_ino
    hosts = {h.netns_inode() for h in cluster.net.hosts}
    pids = [p.pid for p in cluster.net.procs if p.alive()]
    for a in [cluster.lb] + cluster.apps:
        pids += a.workers()
    assert len(pids) >= 5 + 4 * 2
    for pid in pids:
        ino = os.stat("/proc/%d/ns/net" % pid).st_ino
        assert ino != own and ino in hosts, "pid %d (%s) is not in a host namespace" % (pid, conftest.cmdline(pid))
