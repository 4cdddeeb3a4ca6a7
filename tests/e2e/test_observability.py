"""Observability: the JSON access and error logs, request ids, /metrics
(checked by a strict parser of the Prometheus text format written here),
/stats, event-loop lag, the admin listener and the master's summary line."""
import json
import math
import os
import re
import signal
import threading
import time

import pytest

import rawhttp
from conftest import finish_all, make_server
from rawhttp import Conn, exchange, get, wait_for

ACCESS_FIELDS = ["time", "id", "method", "path", "route", "status", "bytes_in", "bytes_out", "duration_us",
                 "worker", "client", "user_agent", "upstream"]
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GEN_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{2}-[0-9a-f]{10}$")


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    assert data == b"" or data.endswith(b"\n"), "a log ends in the middle of a line: %r" % data[-200:]
    return data.split(b"\n")[:-1]


def json_lines(path):
    out = []
    for raw in read_lines(path):
        try:
            out.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as e:
            raise AssertionError("not a JSON line (%s): %r" % (e, raw[:300]))
    return out


def access_lines(path, path_filter=None):
    lines = json_lines(path)
    return [l for l in lines if path_filter is None or l.get("path") == path_filter]


# --- a strict parser of the Prometheus text exposition format (0.0.4) ------

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.match(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$", s), "bad sample value %r" % s
    return float(s)


def parse_prometheus(text):
    """Returns {family: {"type", "help", "samples": {(name, labels): value}}}.
    Asserts the rules promtool checks: HELP and TYPE once per family and
    before its samples, valid names and labels, a family's samples together,
    counters named *_total, no duplicate series, histograms with ascending
    le, cumulative counts, a +Inf bucket equal to _count, and _sum."""
    assert text.endswith("\n"), "exposition must end with a newline"
    fams, current, closed = {}, None, set()
    for ln, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (ln, line)
        assert line and line == line.strip(), "empty line or stray whitespace, " + where
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) ([^ ]+) (.*)$", line)
            assert m, "bad comment, " + where
            kind, name, rest = m.groups()
            assert NAME_RE.match(name), where
            if current and current != name:
                closed.add(current)
            assert name not in closed, "family %s split, %s" % (name, where)
            f = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
            if kind == "HELP":
                assert f["help"] is None and not f["samples"], "HELP twice or late, " + where
                f["help"] = rest
            else:
                assert f["type"] is None and not f["samples"], "TYPE twice or late, " + where
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), where
                f["type"] = rest
            current = name
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([^ ]+)$", line)
        assert m, "bad sample, " + where
        name, labels_text, value = m.groups()
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and fams.get(base, {}).get("type") == "histogram":
                fam = base
        assert fam in fams and fams[fam]["type"], "sample without TYPE, " + where
        assert fam == current, "sample away from its family, " + where
        labels = ()
        if labels_text:
            inner = labels_text[1:-1]
            pos, items = 0, []
            while pos < len(inner):
                lm = LABEL_RE.match(inner, pos)
                assert lm, "bad labels, " + where
                items.append((lm.group(1), lm.group(2)))
                pos = lm.end()
            assert len({k for k, _ in items}) == len(items), "label twice, " + where
            labels = tuple(sorted(items))
        key = (name, labels)
        f = fams[fam]
        assert key not in f["samples"], "duplicate series, " + where
        f["samples"][key] = parse_value(value)
    for name, f in fams.items():
        assert f["help"] is not None and f["type"], "family %s lacks HELP or TYPE" % name
        if f["type"] == "counter":
            assert name.endswith("_total"), "counter %s not named _total" % name
            assert all(v >= 0 for v in f["samples"].values())
        if f["type"] == "histogram":
            check_histogram(name, f["samples"])
    return fams


def check_histogram(name, samples):
    groups = {}
    for (sname, labels), v in samples.items():
        rest = tuple(l for l in labels if l[0] != "le")
        groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        g = groups[rest]
        if sname == name + "_bucket":
            le = dict(labels)["le"]
            g["buckets"].append((parse_value(le), v))
        elif sname == name + "_sum":
            g["sum"] = v
        elif sname == name + "_count":
            g["count"] = v
        else:
            raise AssertionError("histogram %s: stray sample %s" % (name, sname))
    for g in groups.values():
        b = g["buckets"]
        assert b and b[-1][0] == math.inf, "histogram %s lacks +Inf" % name
        assert [le for le, _ in b] == sorted(le for le, _ in b) and len({le for le, _ in b}) == len(b)
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "buckets not cumulative"
        assert g["count"] == b[-1][1], "_count %s != +Inf bucket %s" % (g["count"], b[-1][1])
        assert g["sum"] is not None and g["sum"] >= 0


def scrape(port):
    r = exchange(port, get("/metrics"))
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4"), r.header("Content-Type")
    return parse_prometheus(r.body.decode("utf-8"))


def sample(fams, family, name=None, **labels):
    want = tuple(sorted(labels.items()))
    return fams[family]["samples"].get((name or family, want), 0.0)


def total(fams, family):
    return sum(fams[family]["samples"].values())


def stats(port):
    r = exchange(port, get("/stats"))
    assert r.status == 200
    return r.json()


# --- tests -----------------------------------------------------------------

def test_prometheus_parser_rejects_what_it_must():
    good = ("# HELP a_total x\n# TYPE a_total counter\na_total{r=\"/\"} 1\n"
            "# HELP h y\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n")
    parse_prometheus(good)
    bad = [
        good.replace("# TYPE a_total counter\n", ""),                     # no TYPE
        good.replace("a_total{r=\"/\"} 1\n", "a_total{r=\"/\"} 1\na_total{r=\"/\"} 2\n"),  # duplicate
        good.replace("h_count 2", "h_count 3"),                           # count != +Inf
        good.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"),  # not cumulative
        good.replace("a_total{r=\"/\"}", "a_total{r=/}"),                 # bad label
        good.replace("# HELP a_total x\n# TYPE a_total counter\na_total", "# HELP a x\n# TYPE a counter\na"),
        good + "a_total{r=\"x\"} 1\n",                                    # family split
        good.replace(" 1\n", " one\n", 1),                                # bad value
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_prometheus(text)


def test_access_log_lines_carry_every_field(cohort):
    srv = cohort({"log": {"access": "access.log"}})
    log = os.path.join(srv.workdir, "access.log")
    ua = 'probe "quoted" \\ back\ttab \xe9'  # latin-1 on the wire: é is an invalid UTF-8 byte
    target = '/?x=1&y="q"\\z'
    r = exchange(srv.port, get(target, headers=[("User-Agent", ua), ("X-Request-Id", "req-42.a:b")]))
    assert r.status == 200 and r.header("X-Request-Id") == "req-42.a:b"
    r2 = exchange(srv.port, get("/missing", headers=[("X-Request-Id", "bad id with spaces")]))
    assert r2.status == 404
    gen = r2.header("X-Request-Id")
    assert GEN_ID_RE.match(gen), gen
    r3 = exchange(srv.port, rawhttp.req("POST", "/static/x", body=b"abcde", headers=[("Content-Length", "5")]))
    assert r3.status == 405
    # flushed within 100 ms, without stopping the server
    want = {target, "/missing", "/static/x"}
    lines = wait_for(lambda: want <= {l["path"] for l in access_lines(log)} and access_lines(log), 5)
    assert lines, "not every request has its line 2 s later: %s" % access_lines(log)
    by_path = {l["path"]: l for l in lines}
    for l in lines:
        assert list(l.keys()) == ACCESS_FIELDS, l
        assert TIME_RE.match(l["time"]), l
        assert l["worker"] in (0, 1) and l["client"] == "127.0.0.1" and l["upstream"] is None
        assert isinstance(l["duration_us"], int) and 0 <= l["duration_us"] < 5000000
    a = by_path[target]
    assert a["id"] == "req-42.a:b" and a["method"] == "GET" and a["route"] == "/" and a["status"] == 200
    assert a["user_agent"] == 'probe "quoted" \\ back\ttab \ufffd', a["user_agent"]
    assert a["bytes_out"] == len(r.raw_head) + len(r.body), (a, len(r.raw_head), len(r.body))
    assert a["bytes_in"] == len(get(target, headers=[("User-Agent", ua), ("X-Request-Id", "req-42.a:b")]))
    b = by_path["/missing"]
    assert b["id"] == gen and b["status"] == 404 and b["route"] is None
    c = by_path["/static/x"]
    assert c["method"] == "POST" and c["status"] == 405 and c["route"] is None  # no route took it
    # every raw line is bounded and escaped: one physical line each
    for raw in read_lines(log):
        assert len(raw) < 4096 and b"\t" not in raw


def test_long_untrusted_fields_are_cut_not_torn(cohort):
    srv = cohort({"log": {"access": "access.log"}, "limits": {"max_header_size": "64K", "max_uri": "16K"}})
    log = os.path.join(srv.workdir, "access.log")
    with Conn(srv.port) as c:  # \xff is no UTF-8: each becomes \ufffd, 6 bytes
        c.send(("GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: %s\r\n\r\n" % ("/" + "a" * 12000, "\xff" * 20000)).encode("latin-1"))
        assert c.read_response().status == 404
    lines = wait_for(lambda: [l for l in access_lines(log) if l["path"].startswith("/a")], 5)
    assert len(lines) == 1
    raw = [r for r in read_lines(log) if b'"path":"/a' in r][0]
    assert len(raw) <= 4095, len(raw)
    l = lines[0]
    assert l["path"].startswith("/aaaa") and 1000 < len(l["path"]) < 12001
    assert set(l["user_agent"]) == {"\ufffd"} and len(l["user_agent"]) < 200
    assert l["status"] == 404


def test_access_log_off_by_default(cohort):
    srv = cohort()
    exchange(srv.port, get("/"))
    time.sleep(0.3)
    assert '"path":"/"' not in srv.log()
    assert not [f for f in os.listdir(srv.workdir) if f.endswith(".log")]


def test_access_log_to_stderr_from_the_environment(cohort):
    srv = cohort(env={"LOG_ACCESS": "stderr"})
    r = exchange(srv.port, get("/health"))
    assert r.status == 200
    line = wait_for(lambda: [l for l in srv.log().splitlines() if '"path":"/health"' in l and '"status":200' in l], 5)
    assert line, srv.log()


def test_no_torn_lines_with_two_workers_under_load(cohort):
    # round_robin: the 6 connections go 3 and 3 (with reuseport's hash all 6 land on one worker in about 1 run of 32)
    srv = cohort({"log": {"access": "access.log"}, "schedule": "round_robin"}, workers=2)
    log = os.path.join(srv.workdir, "access.log")
    threads, per_thread = 6, 800
    errors, seen = [], set()
    lock = threading.Lock()

    def run(t):
        try:
            with Conn(srv.port, timeout=10) as c:
                for i in range(per_thread):
                    rid = "t%d-%d" % (t, i)
                    c.send(get("/?" + "p" * (i % 300), headers=[("X-Request-Id", rid), ("User-Agent", "u" * (i % 700))]))
                    r = c.read_response()
                    assert r.status == 200 and r.header("X-Request-Id") == rid
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:3]
    assert srv.stop() == 0
    lines = json_lines(log)  # every line parses: none torn or interleaved
    ids = [l["id"] for l in lines if l["id"].startswith("t")]
    assert len(ids) == threads * per_thread, "lost or doubled lines: %d" % len(ids)
    assert len(set(ids)) == len(ids)
    workers = {l["worker"] for l in lines if l["id"].startswith("t")}
    assert workers == {0, 1}, "both workers wrote: %s" % workers


def test_sigusr1_reopens_moved_logs(cohort, tmp_path):
    # debug: each worker says when it has reopened ("SIGUSR1: logs reopened")
    srv = cohort({"log": {"access": "access.log", "error": "error.log", "level": "debug"}}, ready=False)
    err = os.path.join(srv.workdir, "error.log")
    assert wait_for(lambda: "serving http://" in open(err).read() if os.path.exists(err) else False, 20), srv.log()
    log = os.path.join(srv.workdir, "access.log")
    assert exchange(srv.port, get("/", headers=[("X-Request-Id", "before")])).status == 200
    assert wait_for(lambda: access_lines(log), 5)
    os.rename(log, log + ".1")
    os.rename(err, err + ".1")
    assert exchange(srv.port, get("/", headers=[("X-Request-Id", "between")])).status == 200
    time.sleep(0.3)  # flushed to the moved file: its descriptor is still open
    srv.signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(err), 3), "the master did not reopen error.log"
    # the workers reopen on the signal the master passes on, a moment later
    assert wait_for(lambda: open(err).read().count("SIGUSR1: logs reopened") == 2, 5), open(err).read()
    ok = wait_for(lambda: (exchange(srv.port, get("/", headers=[("X-Request-Id", "after")])).status == 200
                           and time.sleep(0.2) is None and os.path.exists(log)
                           and [l for l in access_lines(log) if l["id"] == "after"]), 5)
    assert ok, "no line for the request after SIGUSR1 in a new access.log"
    old = [l["id"] for l in access_lines(log + ".1")]
    assert "before" in old and "between" in old and "after" not in old
    assert srv.proc.poll() is None and len(srv.workers()) == 2, "USR1 killed something"
    for l in json_lines(err + ".1") + json_lines(err):
        assert set(l) >= {"time", "level", "role", "pid", "msg"} and TIME_RE.match(l["time"])


def test_error_log_is_json_with_levels(cohort):
    quiet = cohort({"log": {"level": "warn"}}, ready=False)
    loud = cohort({"log": {"level": "debug"}})
    # "serving" is an info line: it is not written at level warn
    assert wait_for(lambda: len(quiet.workers()) == 2 and exchange(quiet.port, get("/health")).status == 200, 20)
    time.sleep(0.3)
    assert quiet.log() == "", "info lines at level warn: %s" % quiet.log()
    lines = [json.loads(l) for l in loud.log().splitlines()]
    assert {"debug", "info"} <= {l["level"] for l in lines}, lines
    for l in lines:
        assert list(l)[:5] == ["time", "level", "role", "pid", "msg"] and TIME_RE.match(l["time"]), l
        assert l["role"] == "master" or l["role"].startswith("worker ")
    serving = [l for l in lines if l["msg"].startswith("serving http://127.0.0.1:%d/" % loud.port)]
    assert serving and serving[0]["role"] == "master" and serving[0]["pid"] == loud.pid


def test_request_ids_are_unique_across_workers(cohort):
    srv = cohort(workers=2)
    ids = set()
    for _ in range(60):
        r = exchange(srv.port, get("/"))
        ids.add(r.header("X-Request-Id"))
    assert len(ids) == 60 and all(GEN_ID_RE.match(i) for i in ids)
    assert len({i.split("-")[1] for i in ids}) == 2, "both workers answered: %s" % sorted(ids)[:4]


def test_metrics_count_exactly_the_requests_sent(cohort):
    srv = cohort(workers=2)
    before = scrape(srv.port)
    n = 137
    for i in range(n):
        r = exchange(srv.port, get("/health" if i % 2 else "/"))
        assert r.status == 200
    for _ in range(5):
        assert exchange(srv.port, get("/nope")).status == 404
    after = scrape(srv.port)
    fam = "cohort_http_requests_total"
    d = lambda **l: sample(after, fam, **l) - sample(before, fam, **l)  # noqa: E731
    assert d(route="/", code="2xx") == (n + 1) // 2
    assert d(route="/health", code="2xx") == n // 2
    assert d(route="none", code="4xx") == 5
    # the first scrape is counted once it was answered; the second is not yet
    assert d(route="/metrics", code="2xx") == 1
    assert total(after, fam) - total(before, fam) == n + 5 + 1
    h = "cohort_http_request_duration_seconds"
    count = lambda f: sample(f, h, h + "_count")  # noqa: E731
    assert count(after) - count(before) == n + 5 + 1
    assert count(after) == total(after, fam), "histogram and counter agree"
    assert sample(after, h, h + "_sum") > sample(before, h, h + "_sum")
    # per-worker gauges name every live worker
    pids = sorted(srv.workers())
    rss = after["cohort_worker_resident_memory_bytes"]["samples"]
    assert sorted(int(dict(l)["pid"]) for (_, l) in rss) == pids
    assert all(v > 100000 for v in rss.values())
    assert sorted(dict(l)["worker"] for (_, l) in after["cohort_worker_event_loop_lag_max_seconds"]["samples"]) == ["0", "1"]
    assert sample(after, "cohort_http_connections_open") >= 1
    # /stats agrees, with the seed's names
    st = stats(srv.port)
    assert st["requestCount"] == total(after, fam) + 1
    assert st["errorCount"] == 0 and st["avgResponseTime"] > 0
    assert sorted(w["pid"] for w in st["workers"]) == pids
    assert sum(st["histogram"]["counts"]) == st["requestCount"]


def test_counters_survive_a_killed_worker(cohort):
    srv = cohort(workers=2)
    srv.worker_deaths_ok = True
    for _ in range(40):
        exchange(srv.port, get("/"))
    before = scrape(srv.port)
    victim = srv.workers()[0]
    stop = threading.Event()
    seen = []

    def poll():  # scrapes while the master folds the dead worker's slot
        while not stop.is_set():
            try:
                seen.append(total(scrape(srv.port), "cohort_http_requests_total"))
            except (OSError, rawhttp.Closed):
                pass

    t = threading.Thread(target=poll)
    t.start()
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(srv.workers()) == 2 and victim not in srv.workers(), 10)
    time.sleep(0.3)
    stop.set()
    t.join(10)
    after = scrape(srv.port)
    fam = "cohort_http_requests_total"
    assert sample(after, fam, route="/", code="2xx") >= sample(before, fam, route="/", code="2xx") == 40
    assert all(seen[i] <= seen[i + 1] for i in range(len(seen) - 1)), "a total went backwards: %s" % seen
    restarts = after["cohort_worker_restarts_total"]["samples"]
    assert sum(restarts.values()) == 1, restarts
    st = stats(srv.port)
    assert st["totals"]["restarts"] == 1 and sum(w["restarts"] for w in st["workers"]) == 1


def test_event_loop_lag_rises_when_the_loop_is_blocked(cohort):
    bin_ = os.environ.get("COHORT_TEST_BIN")
    assert bin_ and os.access(bin_, os.X_OK), "COHORT_TEST_BIN (build/cohort-test) is needed: run `make e2e`"
    import conftest
    saved = conftest.BIN
    conftest.BIN = bin_
    try:
        srv = cohort(workers=1)
    finally:
        conftest.BIN = saved

    def lag_ms():
        return stats(srv.port)["workers"][0]["loopLagMaxMs"]
    # quiet: under 100 ms over a whole second (a pause of the machine lifts it for a second)
    assert wait_for(lambda: lag_ms() < 100, 5), stats(srv.port)["workers"]
    r = exchange(srv.port, get("/__test/block?ms=400"), timeout=5)
    assert r.status == 200
    assert wait_for(lambda: lag_ms() >= 300, 3), "loop lag did not rise: %s" % stats(srv.port)["workers"]
    fams = scrape(srv.port)
    assert len(fams["cohort_worker_event_loop_lag_avg_seconds"]["samples"]) == 1
    # and it falls back once the loop is free again
    assert wait_for(lambda: lag_ms() < 100, 10)


def test_test_routes_are_not_in_the_production_binary(cohort):
    srv = cohort(workers=1)
    assert exchange(srv.port, get("/__test/block?ms=1")).status == 404


def test_admin_listener_takes_the_observability_routes(cohort):
    from conftest import free_port
    admin = free_port()
    srv = cohort({"admin": {"host": "127.0.0.1", "port": admin}})
    for path in ("/metrics", "/stats", "/status"):
        assert exchange(srv.port, get(path)).status == 404, path
        assert exchange(admin, get(path)).status == 200, path
    exchange(srv.port, get("/"))
    fams = scrape(admin)
    assert sample(fams, "cohort_http_requests_total", route="/", code="2xx") == 1
    assert not [k for k in fams["cohort_http_requests_total"]["samples"] if dict(k[1])["route"] == "/metrics"]


def test_master_logs_a_summary_every_interval(cohort):
    srv = cohort({"log": {"stats_interval": "1s"}}, workers=2)
    for _ in range(10):
        exchange(srv.port, get("/"))
    pids = srv.workers()

    def summaries():
        return [json.loads(l) for l in srv.log().splitlines() if '"msg":"stats: ' in l]

    got = wait_for(lambda: [s for s in summaries() if s["requests"] >= 10], 4)
    assert got, srv.log()
    s = got[-1]
    assert s["level"] == "info" and s["role"] == "master"
    assert {"requests", "requests_delta", "errors", "errors_delta", "avg_ms", "p99_ms", "workers"} <= set(s)
    assert sorted(w["pid"] for w in s["workers"]) == sorted(pids) and all(w["rss"] > 0 for w in s["workers"])
    assert "p99" in s["msg"] and "rss" in s["msg"]
