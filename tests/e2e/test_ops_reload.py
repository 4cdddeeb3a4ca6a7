"""Reload (issue 5): under load in every schedule mode, by SIGHUP, with a bad
config, with a key that needs a restart, with a new binary on disk, and with
a replacement that never becomes ready."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import free_port
from opsutil import (assert_no_failures, ops, ops_bin, pid_alive, queue_on_frozen_worker, short_get,  # noqa: F401 - fixtures
                     wait_for, wrk)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCHEDULES = ["reuseport", "shared", "round_robin", "least_loaded"]
RELOADED_RE = re.compile(r"^reloaded: 2 worker\(s\) replaced, (\d+) request\(s\) failed meanwhile")


def serves(port, n=10):
    for _ in range(n):
        r = short_get(port, "/")
        assert r.status == 200 and r.body == b"Hello World\n", r


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_reload_under_load_drops_nothing(ops, wrk, schedule):
    """wrk -t1 -c32 for 6 s; 3 `cohort reload` meanwhile: each replaces both
    workers and says so; wrk sees no non-2xx answer and no socket error."""
    s = ops({"schedule": schedule})
    pids0 = s.ready_pids()
    assert len(pids0) == 2
    w = wrk(s.port, "/", connections=32, seconds=6)
    time.sleep(1.0)
    seen = set(pids0)
    for i in range(3):
        rc, out, err = s.cli("reload")
        assert rc == 0, "reload %d: rc %d\n%s%s" % (i, rc, out, err)
        m = RELOADED_RE.match(out.strip())
        assert m, "reload %d said %r" % (i, out + err)
        assert int(m.group(1)) == 0, "the master counted failed requests during reload %d: %r" % (i, out)
        now = s.ready_pids()
        assert len(now) == 2 and not (set(now) & seen), "reload %d kept a worker: %s -> %s" % (i, seen, now)
        seen |= set(now)
        time.sleep(1.2)
    res = w.result()
    assert_no_failures(res, "wrk over 3 reloads (schedule %s)" % schedule)
    assert res["requests"] > 2000, "too little load to mean anything: %d requests" % res["requests"]
    s.wait_settled()
    assert len(s.workers()) == 2, "old workers still running: %s" % s.workers()
    assert len(re.findall(r"replaced by pid \d+ \(reload\)", s.log())) == 6


def test_sighup_reloads(ops):
    s = ops()
    pids0 = s.ready_pids()
    s.signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded: 2 worker(s) replaced" in s.log(), 10), s.log()
    assert "SIGHUP: reloading" in s.log()
    s.wait_settled()
    pids1 = s.ready_pids()
    assert not set(pids1) & set(pids0), (pids0, pids1)
    serves(s.port)


def test_concurrent_reload_requests_are_all_answered(ops):
    """Three `cohort reload` at once: one runs, the others queue; each
    client gets an answer that says the workers were replaced."""
    s = ops()
    pids0 = s.ready_pids()
    results = [None] * 3

    def run(i):
        results[i] = s.cli("reload", timeout=60)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    s.signal(signal.SIGHUP)
    for t in ts:
        t.join(70)
    for i, (rc, out, err) in enumerate(results):
        assert rc == 0 and RELOADED_RE.match(out.strip()), "client %d: rc %d %r %r" % (i, rc, out, err)
    s.wait_settled()
    assert not set(s.ready_pids()) & set(pids0)
    serves(s.port)


def config_text_with(s, path, value):
    """The server's config as indented JSON with the key at `path` set to
    `value`, and the (line, column) where the value (or the key, when
    `at_key`) starts."""
    cfg = json.loads(json.dumps(s.config))
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    text = json.dumps(cfg, indent=2) + "\n"
    needle = '"%s": %s' % (path[-1], json.dumps(value))
    for n, line in enumerate(text.splitlines(), 1):
        i = line.find(needle)
        if i >= 0:
            return text, n, i + 1, i + 1 + len('"%s": ' % path[-1])
    raise AssertionError("not found")


def test_bad_config_on_reload_keeps_serving(ops):
    s = ops()
    pids0 = s.ready_pids()
    good = open(s.config_path).read()

    # a bad value through the command
    text, line, key_col, val_col = config_text_with(s, ["server", "port"], "x")
    s.write_config(text=text)
    rc, out, err = s.cli("reload")
    assert rc != 0, "a reload with a bad config exited 0: %r %r" % (out, err)
    want = "cohort.json:%d:%d: server.port:" % (line, val_col)
    assert want in err, "the answer does not point at the value (%s): %r" % (want, out + err)
    assert "not an integer" in err, err
    assert s.ready_pids() == pids0, "a refused reload replaced workers"
    serves(s.port)

    # an unknown key through SIGHUP: the master's log says why
    text, line, key_col, _ = config_text_with(s, ["workerz"], 3)
    s.write_config(text=text)
    s.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in s.log(), 5), s.log()
    refused = [l for l in s.log().splitlines() if "reload refused" in l][0]
    assert "still serving the old config" in refused, refused
    assert "cohort.json:%d:%d: workerz: unknown key" % (line, key_col) in refused, refused
    assert s.ready_pids() == pids0
    serves(s.port)
    st = s.status()
    assert st["master"]["reloading"] is False

    # fixed: the next reload works
    s.write_config(text=good)
    rc, out, err = s.cli("reload")
    assert rc == 0 and RELOADED_RE.match(out.strip()), (rc, out, err)
    assert not set(s.ready_pids()) & set(pids0)
    serves(s.port)


def test_bad_config_reload_exit_code_is_78(ops):
    """`cohort reload` reads the config before it asks the master: an invalid
    one is a configuration error (exit 78, as everywhere), and the master is
    not asked, so it keeps serving what it has."""
    s = ops()
    pids0 = s.ready_pids()
    text, _, _, _ = config_text_with(s, ["server", "port"], "x")
    s.write_config(text=text)
    rc, out, err = s.cli("reload")
    assert rc == 78, "cohort reload with an invalid config exited %d (expected 78): %r" % (rc, out + err)
    assert "server.port" in err, err
    assert s.ready_pids() == pids0


def test_non_reloadable_key_is_left_as_it_was(ops):
    s = ops()
    pids0 = s.ready_pids()
    old_port = s.port
    new_port = free_port()
    cfg = json.loads(json.dumps(s.config))
    cfg["server"]["port"] = new_port
    s.write_config(cfg)
    rc, out, err = s.cli("reload")
    assert rc == 0, (rc, out, err)
    assert "2 worker(s) replaced" in out, out
    assert "server.port" in out and "left as it was" in out, "the answer does not name the kept key: %r" % out
    s.wait_settled()
    assert not set(s.ready_pids()) & set(pids0)
    serves(old_port)
    with pytest.raises(ConnectionRefusedError):
        short_get(new_port, "/")
    st = s.status()
    assert st["master"]["port"] == old_port


def unanswered(port, n=12):
    """How many of n new connections get no answer to GET / within 5 s
    (one queued on a socket nobody accepts from is never answered)."""
    bad = 0
    for _ in range(n):
        try:
            r = short_get(port, "/", timeout=5)
            assert r.status == 200, r
        except (TimeoutError, OSError):
            bad += 1
    return bad


@pytest.mark.parametrize("schedule", ["reuseport", "round_robin"])
def test_reload_changes_worker_count(ops, schedule):
    """workers 2 -> 3 -> 1 by reload; every new connection is answered.
    (With reuseport, the sockets of slots no longer in use must close, or
    the kernel keeps queueing connections on them.)"""
    s = ops({"schedule": schedule}, workers=2)
    cfg = json.loads(json.dumps(s.config))
    cfg["workers"] = 3
    s.write_config(cfg)
    rc, out, err = s.cli("reload")
    assert rc == 0 and "3 worker(s) replaced" in out, (rc, out, err)
    s.wait_settled(3)
    assert sorted(s.ready_workers()) == [0, 1, 2]
    assert unanswered(s.port) == 0
    cfg["workers"] = 1
    s.write_config(cfg)
    rc, out, err = s.cli("reload")
    assert rc == 0 and "1 worker(s) replaced" in out, (rc, out, err)
    s.wait_settled(1)
    assert sorted(s.ready_workers()) == [0]
    n = unanswered(s.port)
    assert n == 0, "after a reload from 3 workers to 1, %d of 12 new connections got no answer in 5 s" % n


# --- a new binary on disk -----------------------------------------------------

NEW_VERSION = "0.1.0-reloaded"


@pytest.fixture(scope="module")
def new_build(tmp_path_factory):
    """build/cohort as built from this tree with another VERSION."""
    d = str(tmp_path_factory.mktemp("newbuild"))
    shutil.copytree(os.path.join(REPO, "src"), os.path.join(d, "src"))
    shutil.copy(os.path.join(REPO, "Makefile"), d)
    with open(os.path.join(d, "VERSION"), "w") as f:
        f.write(NEW_VERSION + "\n")
    # a plain build whatever the outer make was asked for (SANITIZE and the
    # like arrive through MAKEFLAGS)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SANITIZE")}
    p = subprocess.run(["make", "-j2", "SANITIZE=", "build/cohort"], cwd=d, capture_output=True, timeout=300,
                       stdin=subprocess.DEVNULL, env=env)
    assert p.returncode == 0, "building the new binary failed:\n" + p.stderr.decode()[-3000:]
    b = os.path.join(d, "build", "cohort")
    out = subprocess.run([b, "--version"], capture_output=True).stdout.decode().strip()
    assert out == "cohort " + NEW_VERSION, out
    return b


def install(src, dst):
    """Replaces dst as a deploy does: a copy under a temp name, then rename."""
    tmp = dst + ".new"
    shutil.copy(src, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dst)


def install_script(text, dst):
    """Replaces dst, as install does, with a shell script holding text."""
    src = dst + ".sh"
    with open(src, "w") as f:
        f.write(text)
    install(src, dst)


def own_binary(s_dir):
    d = os.path.join(s_dir, "bin")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "cohort")
    install(ops_bin(), path)
    return path


def test_reload_picks_up_new_binary(ops, new_build, wrk):
    old_version = subprocess.run([ops_bin(), "--version"], capture_output=True).stdout.decode().split()[1]
    assert old_version != NEW_VERSION
    import tempfile
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    try:
        path = own_binary(d)
        s = ops(binary=path)
        st = s.status()
        assert st["master"]["version"] == old_version
        assert [w["version"] for w in st["workers"]] == [old_version] * 2
        pids0 = s.ready_pids()
        install(new_build, path)
        w = wrk(s.port, "/", connections=16, seconds=3)
        time.sleep(0.5)
        rc, out, err = s.cli("reload")
        assert rc == 0 and RELOADED_RE.match(out.strip()), (rc, out, err)
        assert_no_failures(w.result(), "wrk during a reload to a new binary")
        s.wait_settled()
        st = s.status()
        assert [w["version"] for w in st["workers"]] == [NEW_VERSION] * 2, st["workers"]
        assert st["master"]["version"] == old_version  # the master itself is not replaced
        assert not set(s.ready_pids()) & set(pids0)
        for pid in s.ready_pids():
            exe = os.readlink("/proc/%d/exe" % pid)
            assert exe == path, exe
        serves(s.port)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_replacement_never_ready_stops_the_reload(ops):
    """The binary on disk never reports ready (a script that sleeps):
    after ready_timeout the reload stops, says so, exits 1, and the old
    workers keep serving; with the binary back a reload works."""
    import tempfile
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    try:
        path = own_binary(d)
        s = ops({"ready_timeout": "1s"}, binary=path)
        s.worker_deaths_ok = False
        pids0 = s.ready_pids()
        install_script("#!/bin/sh\nexec sleep 60\n", path)
        t0 = time.monotonic()
        rc, out, err = s.cli("reload", timeout=30)
        took = time.monotonic() - t0
        assert rc == 1, "reload with a replacement that never gets ready: rc %d %r %r" % (rc, out, err)
        assert "did not become ready" in err and "ready_timeout" in err, err
        assert "0 worker(s) replaced" in err, err
        assert 0.9 <= took < 6, "the reload took %.1f s with ready_timeout 1s" % took
        assert s.ready_pids() == pids0
        serves(s.port)
        # the hanging replacement was killed, nothing else is left
        assert wait_for(lambda: sorted(s.workers()) == sorted(pids0), 3), (s.workers(), pids0)
        st = s.status()
        assert st["master"]["reloading"] is False and len(st["workers"]) == 2
        install(ops_bin(), path)
        rc, out, err = s.cli("reload")
        assert rc == 0 and RELOADED_RE.match(out.strip()), (rc, out, err)
        s.wait_settled()
        assert not set(s.ready_pids()) & set(pids0)
        serves(s.port)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_reuseport_connections_queued_on_replaced_workers_socket_are_served(ops):
    """reuseport: worker 0 is frozen (SIGSTOP), so connections the kernel
    put on its socket wait in its accept queue. A reload replaces it: the
    replacement takes over the same socket and answers them, none is reset,
    even before the old one wakes up."""
    s = ops({"schedule": "reuseport"}, workers=2)
    old0 = s.ready_workers()[0]["pid"]
    os.kill(old0, signal.SIGSTOP)
    conns = []
    try:
        pending = queue_on_frozen_worker(s.port, conns)
        rc, out, err = s.cli("reload")
        assert rc == 0 and RELOADED_RE.match(out.strip()), (rc, out, err)
        for c in pending:
            r = c.read_response(timeout=3)  # raises Closed on a reset
            assert r.status == 200, r
        assert pid_alive(old0), "the frozen worker is gone already"
    finally:
        os.kill(old0, signal.SIGCONT)
        for c in conns:
            c.close()
    assert wait_for(lambda: not pid_alive(old0), 5), "the old worker did not drain after SIGCONT"
    s.wait_settled()


# --- replacements that take a while to get ready ----------------------------------

def server_then_script(ops, overrides, binary, script):
    """A server started from its own copy of `binary` (kept as d/real), whose
    binary on disk (d/cohort) is then replaced by the shell script
    script(real), so what the master starts from now on runs that. Returns
    (server, real, path)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    ops.dirs.append(d)
    real = os.path.join(d, "real")
    install(binary, real)
    path = os.path.join(d, "cohort")
    install(real, path)
    s = ops(overrides, binary=path)
    install_script(script(real), path)
    return s, real, path


def slow_start_server(ops, overrides, delay):
    """A server started from its own copy of build/cohort-test, whose binary
    on disk is then a wrapper that waits `delay` s before exec'ing the real
    one: every replacement a reload or recycle starts takes that long to get
    ready (as an app with a slow start would)."""
    from opsutil import cohort_test_bin
    s, _, _ = server_then_script(ops, overrides, cohort_test_bin(),
                                 lambda real: '#!/bin/sh\nsleep %s\nexec %s "$@"\n' % (delay, real))
    return s


def test_reload_status_failed_count_and_queued_hup(ops):
    """During a (slow) reload: status says reloading and shows the starting
    replacement; 500s answered meanwhile are counted in the reload's answer;
    a SIGHUP meanwhile is queued and runs after it."""
    from rawhttp import Conn, get
    s = slow_start_server(ops, {"schedule": "round_robin"}, 3)
    pids0 = s.ready_pids()
    box = {}
    t = threading.Thread(target=lambda: box.update(r=s.cli("reload", timeout=60)))
    t.start()
    st = wait_for(lambda: (lambda j: j["master"]["reloading"] and j)(s.status()), 5, 0.02)
    assert st, "status never said reloading"
    assert [w["state"] for w in st["workers"]].count("starting") == 1, st["workers"]
    with Conn(s.port) as c:
        for _ in range(5):
            c.send(get("/__test/fail"))
            assert c.read_response().status == 500
    s.signal(signal.SIGHUP)
    t.join(30)
    rc, out, err = box["r"]
    assert rc == 0, (rc, out, err)
    m = RELOADED_RE.match(out.strip())
    assert m, out
    assert int(m.group(1)) == 5, "5 requests failed (500) during the reload; it said %r" % out
    assert wait_for(lambda: s.log().count("reloaded: 2 worker(s) replaced") == 2, 30), s.log()
    log = s.log()
    assert "SIGHUP during a reload: queued" in log and "starting the reload that was queued" in log, log
    s.wait_settled()
    assert len(re.findall(r"replaced by pid \d+ \(reload\)", s.log())) == 4
    assert not set(s.ready_pids()) & set(pids0)


def test_reload_while_a_recycle_is_under_way(ops):
    """Worker 0 asked to be recycled (max_errors) and its replacement is
    still starting when `cohort reload` arrives: the reload must still
    replace every worker (wait for the recycle, or take it over), not fail."""
    from rawhttp import Conn, get
    from opsutil import whoami
    s = slow_start_server(ops, {"schedule": "round_robin", "max_errors": 3, "error_window": "10s"}, 1.5)
    conns = [Conn(s.port) for _ in range(2)]
    try:
        ids = [whoami(c)[0] for c in conns]
        assert sorted(ids) == [0, 1], ids
        c = conns[ids.index(0)]
        for _ in range(3):
            c.send(get("/__test/fail"))
            assert c.read_response().status == 500
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: re.search(r"worker 0 started \(pid \d+\) as a replacement", s.log()), 3), s.log()
    rc, out, err = s.cli("reload", timeout=60)
    assert rc == 0 and "2 worker(s) replaced" in out, \
        "cohort reload during worker 0's recycle: rc %d, %r" % (rc, (out + err).strip())
    s.wait_settled()


# --- keys that need a restart --------------------------------------------------------

def reload_with(s, **changes):
    cfg = json.loads(json.dumps(s.config))
    for dotted, v in changes.items():
        node = cfg
        parts = dotted.split("__")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = v
    s.write_config(cfg)
    return s.cli("reload")


def test_reload_names_every_key_that_needs_a_restart(ops):
    """server.port and schedule both changed: the answer names both."""
    s = ops({"schedule": "reuseport"})
    rc, out, err = reload_with(s, server__port=free_port(), schedule="round_robin")
    assert rc == 0, (rc, out, err)
    assert "server.port" in out and "schedule" in out, "not every kept key is named: %r" % out
    assert s.status()["master"]["schedule"] == "reuseport"
    serves(s.port)


def test_reload_leaves_admin_listener_as_it_was(ops):
    """admin.port cannot change by reload (docs/config.md: Reloadable no):
    a reload that sets it to 0 names it and the admin listener keeps
    answering /metrics."""
    from rawhttp import exchange, get
    ap = free_port()
    s = ops({"admin": {"port": ap}})
    assert exchange(ap, get("/metrics")).status == 200
    rc, out, err = reload_with(s, admin__port=0)
    assert rc == 0, (rc, out, err)
    s.wait_settled()
    for _ in range(4):
        try:
            r = exchange(ap, get("/metrics", headers=[("Connection", "close")]), timeout=5)
        except TimeoutError:
            raise AssertionError("after a reload with admin.port 0, the admin listener on %d (still bound by the "
                                 "master) no longer answers; the reload said %r" % (ap, out))
        assert r.status == 200, r
    assert "admin.port" in out and "left as it was" in out, out


def test_reload_leaves_error_log_as_it_was(ops):
    """log.error cannot change by reload: the answer says it was left as it
    was, so no process may start writing to the new file."""
    s = ops()
    rc, out, err = reload_with(s, log__error="err.log")
    assert rc == 0, (rc, out, err)
    assert "log.error" in out and "left as it was" in out, out
    s.wait_settled()
    serves(s.port)
    s.signal(signal.SIGHUP)  # the new workers log to stderr
    assert wait_for(lambda: s.log().count("reloaded: 2 worker(s) replaced") == 2, 5)
    path = os.path.join(s.workdir, "err.log")
    assert not os.path.exists(path), "log.error was 'left as it was' but err.log now holds:\n%s" % open(path).read()
