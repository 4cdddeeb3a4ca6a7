"""The load balancer's health: a backend killed under load costs no GET
(retries), is marked down by the master's checks within fall x interval,
and rejoins after rise passed checks. Backends are `cohort serve`
instances on free ports, killed and started again by pid."""
import json
import os
import signal
import threading
import time

import rawhttp
from proxyutil import balancer, cohort_backend, group, pybackend, servers  # noqa: F401 (fixtures)

INTERVAL = 1.0
FALL, RISE = 2, 2


class Load:
    """Threads sending GETs on keep-alive connections until stopped."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.statuses = {}
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = rawhttp.Conn(self.port, timeout=5)
                conn.send(rawhttp.get("/health"))
                r = conn.read_response()
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                if r.header("Connection") == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # any client-visible failure
                with self.lock:
                    self.errors.append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def kill_backend(s):
    """SIGKILL the master and its workers at once: a machine gone, not a stop."""
    pids = [s.pid] + s.workers()
    for p in pids:
        os.kill(p, signal.SIGKILL)
    s.proc.wait(5)


def state_of(lb, name):
    return servers(lb)[name]["state"]


def test_killed_under_load_then_back(cohort, balancer):
    a = cohort_backend(cohort)
    b = cohort_backend(cohort)
    name_a = "127.0.0.1:%d" % a.port
    lb = balancer(group(["127.0.0.1:%d" % a.port, "127.0.0.1:%d" % b.port],
                        health={"path": "/health", "interval": "%dms" % (INTERVAL * 1000), "timeout": "500ms",
                                "fall": FALL, "rise": RISE},
                        passive={"failures": 0}, retries=2, timeouts={"connect": "500ms"}))
    with Load(lb.port) as load:
        time.sleep(1.5)
        before = dict(load.statuses)
        killed_at = time.monotonic()
        kill_backend(a)
        down = rawhttp.wait_for(lambda: state_of(lb, name_a) == "down", FALL * INTERVAL + 2)
        down_after = time.monotonic() - killed_at
        time.sleep(1.0)
    assert down, servers(lb)
    # fall x interval, and up to 1 s for a loaded machine to run the checks late
    # (that it took FALL failed checks, not more, the log line below says)
    assert down_after <= FALL * INTERVAL + 1.0, "marked down %.2f s after the kill" % down_after
    assert load.errors == [], load.errors[:5]
    assert set(load.statuses) == {200}, (load.statuses, [l for l in lb.log().splitlines() if '"status":5' in l][:4])
    assert sum(load.statuses.values()) > sum(before.values()) + 100, "load kept flowing"
    assert "server %s is down: %d checks failed in a row" % (name_a, FALL) in lb.log()
    retried = [l for l in lb.log().splitlines() if "attempts=2" in l and "skipped=%s" % name_a in l]
    assert retried, "requests that met the dead server went to the other one"

    # back on the same port: it rejoins after RISE passed checks
    again = cohort_backend(cohort, port=a.port)
    back_from = time.monotonic()
    up = rawhttp.wait_for(lambda: state_of(lb, name_a) in ("up", "warming"), RISE * INTERVAL + 2)
    up_after = time.monotonic() - back_from
    assert up, servers(lb)
    assert up_after <= RISE * INTERVAL + 1.0, "rejoined %.2f s after it came back" % up_after
    assert "server %s is up: %d checks passed in a row" % (name_a, RISE) in lb.log()
    with rawhttp.Conn(lb.port) as c:
        for _ in range(20):
            c.send(rawhttp.get("/health"))
            assert c.read_response().status == 200
    served = json.loads(rawhttp.exchange(again.port, rawhttp.get("/stats")).body)["requestCount"]
    assert served >= 5, "it takes requests again (%d)" % served


def test_reload_changes_the_group(pybackend, balancer):
    """HUP with a new server in the group: no request fails meanwhile, and
    the new one takes its share once the workers are replaced."""
    a, b = pybackend("a"), pybackend("b")
    lb = balancer(group(["127.0.0.1:%d" % a.port], health={"path": "/health", "interval": "500ms"}))
    assert {get_id(lb) for _ in range(4)} == {b"a"}
    lb.config["upstreams"]["app"]["servers"].append("127.0.0.1:%d" % b.port)
    with open(lb.config_path, "w") as f:
        json.dump(lb.config, f)
    with Load(lb.port, threads=2) as load:
        lb.signal(signal.SIGHUP)
        assert rawhttp.wait_for(lambda: "reloaded: 2 worker(s) replaced" in lb.log(), 15), lb.log()[-2000:]
    assert load.errors == [] and set(load.statuses) == {200}, (load.errors[:3], load.statuses)
    assert {get_id(lb) for _ in range(8)} == {b"a", b"b"}
    assert set(servers(lb)) == {"127.0.0.1:%d" % a.port, "127.0.0.1:%d" % b.port}


def get_id(lb):
    return rawhttp.exchange(lb.port, rawhttp.get("/id")).body


def test_checks_are_made_once_per_interval_not_once_per_worker(pybackend, balancer):
    """With 3 workers, a server gets one check per interval from the whole
    cluster: over a window, about window / interval checks, not three times
    as many."""
    be = pybackend("checked")
    interval = 0.2
    lb = balancer(group(["127.0.0.1:%d" % be.port], health={"path": "/health", "interval": "200ms"}), workers=3)
    assert rawhttp.wait_for(lambda: be.count("/health") > 0, 5), "no check arrived"
    n0, t0 = be.count("/health"), time.monotonic()
    time.sleep(3.0)
    n1, t1 = be.count("/health"), time.monotonic()
    expected = (t1 - t0) / interval
    got = n1 - n0
    # a loaded machine runs checks late (fewer), never more often; once per
    # worker would be about 3 x expected
    assert expected * 0.4 <= got <= expected * 1.3 + 2, \
        "%d checks in %.2f s at one per %.1f s (%.0f expected)" % (got, t1 - t0, interval, expected)
    assert "with 3 workers" in lb.log()
