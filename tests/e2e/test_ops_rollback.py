"""A reload is all or nothing (issue 11): when a replacement never becomes
ready, the workers already replaced are replaced back with the generation in
force, started from the master's own binary (not the file now on disk, which
is what failed), and `cohort reload` exits 1 once that is done. Workers
restarted after a crash run the generation in force; `cohort status` gives
every worker its generation and every exit its own row."""
import json
import os
import re
import signal
import time

import pytest

from opsutil import assert_no_failures, ops, ops_bin, short_get, wait_for, wrk  # noqa: F401 - fixtures
from test_ops_reload import install, server_then_script

SCHEDULES = ["reuseport", "shared", "round_robin", "least_loaded"]


def hang_for_worker(ops, overrides, hang_id):
    """A server started from its own copy of build/cohort, whose binary on
    disk is then a script that runs the real one, except worker `hang_id`,
    which it holds forever before anything starts (never ready)."""
    s, real, path = server_then_script(
        ops, overrides, ops_bin(),
        lambda real: '#!/bin/sh\nif [ "$1" = __worker ] && [ "$2" = %d ]; then exec sleep 120; fi\nexec %s "$@"\n'
        % (hang_id, real))
    s.real, s.path = real, path
    s.worker_deaths_ok = True
    return s


def statuses(port, path, n):
    """Status codes of n requests, each on a new connection (so reuseport's
    hash spreads them over both sockets)."""
    return [short_get(port, path).status for _ in range(n)]


def with_extra_route(s, root):
    cfg = json.loads(json.dumps(s.config))
    cfg["routes"] = cfg["routes"] + [{"path": "/extra/*", "handler": "static", "root": root}]
    return cfg


def gens(st):
    return sorted((w["id"], w["generation"]) for w in st["workers"])


def master_exe(s):
    return os.readlink("/proc/%d/exe" % s.pid)


def kill_and_wait(s, wid):
    """kill -9 of worker wid; returns (old pid, its successor's pid) once
    the successor is ready."""
    old = s.ready_workers()[wid]["pid"]
    os.kill(old, signal.SIGKILL)

    def replaced():
        w = s.ready_workers().get(wid)
        return w and w["pid"] != old and w["pid"]
    new = wait_for(replaced, 10, 0.05)
    assert new, "worker %d was not restarted: %s" % (wid, s.status())
    return old, new


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_failed_reload_rolls_back_under_load(ops, wrk, schedule):
    s = hang_for_worker(ops, {"schedule": schedule, "ready_timeout": "1500ms", "min_uptime": "100ms"}, hang_id=1)
    extra = os.path.join(s.workdir, "extra")
    os.makedirs(extra)
    with open(os.path.join(extra, "x.txt"), "w") as f:
        f.write("new\n")
    assert gens(s.status()) == [(0, 1), (1, 1)]
    assert s.status()["master"]["generation"] == 1
    pids0 = s.ready_pids()
    w = wrk(s.port, "/", connections=16, seconds=7)
    time.sleep(1.0)
    s.write_config(with_extra_route(s, extra))
    t0 = time.monotonic()
    rc, out, err = s.cli("reload", timeout=60)
    took = time.monotonic() - t0
    # the reload said what happened and only returned when it was undone
    assert rc == 1, "a reload whose replacement never got ready: rc %d %r %r" % (rc, out, err)
    assert "worker 1's replacement did not become ready (ready_timeout)" in err, err
    assert "1 worker(s) replaced and 1 replaced back" in err, err
    assert "every worker serves the old config (generation 1)" in err, err
    assert 1.4 <= took < 15, "the reload took %.1f s with ready_timeout 1.5 s" % took
    assert s.status()["master"]["reloading"] is False
    s.wait_settled()  # the new worker replaced back has drained
    st = s.status()
    assert gens(st) == [(0, 1), (1, 1)], st["workers"]
    assert [w["state"] for w in st["workers"]] == ["ready", "ready"], st["workers"]
    now = s.ready_pids()
    assert pids0[1] in now and pids0[0] not in now, \
        "worker 0 should have been replaced (new config) and replaced back; worker 1 kept: %s -> %s" % (pids0, now)
    # the worker replaced back runs the master's own binary, not the script on disk
    back = s.ready_workers()[0]["pid"]
    assert os.readlink("/proc/%d/exe" % back) == master_exe(s), (os.readlink("/proc/%d/exe" % back), master_exe(s))
    # every worker serves the old config: no 200 from the new route, ever
    codes = statuses(s.port, "/extra/x.txt", 30)
    assert set(codes) == {404}, "after the rollback /extra/x.txt answered %s" % codes
    res = w.result()
    assert_no_failures(res, "wrk during a reload rolled back (schedule %s)" % schedule)
    assert res["requests"] > 1000, res["requests"]
    # the failed replacement's exit is on its own row, not on the serving worker's
    assert all(w["last_exit"] == "" for w in st["workers"]), st["workers"]
    failed = [e for e in st["exits"] if e["role"] == "replacement"]
    assert len(failed) == 1, st["exits"]
    assert failed[0]["id"] == 1 and failed[0]["generation"] == 2 and failed[0]["pid"] not in now, failed
    assert "killed by signal 9" in failed[0]["exit"] and "ready_timeout" in failed[0]["exit"], failed
    rc, text, _ = s.cli("status", config=s.ctl_config_path)
    assert rc == 0
    row = [l for l in text.splitlines() if re.match(r"^1\s+%d\s" % failed[0]["pid"], l)]
    assert row and "replacement" in row[0] and "ready_timeout" in row[0], text
    assert re.search(r"^1\s+%d\s+1\s+ready\s+\S+\s+0\s+-\s" % pids0[1], text, re.M), text

    # a crash restart runs the generation in force (old config, master's binary)
    for wid in (1, 0):
        old, new = kill_and_wait(s, wid)
        st = s.status()
        row = [w for w in st["workers"] if w["id"] == wid][0]
        assert row["generation"] == 1 and row["restarts"] == 1, row
        assert row["last_exit"].startswith("killed by signal 9"), row
        assert os.readlink("/proc/%d/exe" % new) == master_exe(s)
        assert any(e["pid"] == old and e["role"] == "serving" for e in st["exits"]), st["exits"]
    codes = statuses(s.port, "/extra/x.txt", 30)
    assert set(codes) == {404}, "after crash restarts /extra/x.txt answered %s" % codes

    # with the binary back, the same reload works: generation 2, and a crash
    # restart then runs generation 2
    install(s.real, s.path)
    rc, out, err = s.cli("reload", timeout=60)
    assert rc == 0 and "2 worker(s) replaced" in out, (rc, out, err)
    s.wait_settled()
    assert gens(s.status()) == [(0, 2), (1, 2)]
    assert s.status()["master"]["generation"] == 2
    assert set(statuses(s.port, "/extra/x.txt", 20)) == {200}
    kill_and_wait(s, 1)
    assert gens(s.status()) == [(0, 2), (1, 2)]
    assert set(statuses(s.port, "/extra/x.txt", 20)) == {200}


def test_crash_during_reload_is_replaced_with_the_new_generation(ops):
    """Worker 0 already runs the new config when it is killed during the
    reload; its restart (old config, the generation in force then) is
    replaced again before the reload reports success: every worker ends on
    generation 2."""
    from test_ops_reload import slow_start_server
    s = slow_start_server(ops, {"schedule": "round_robin", "min_uptime": "100ms"}, 2.5)
    s.worker_deaths_ok = True
    import threading
    box = {}
    t = threading.Thread(target=lambda: box.update(r=s.cli("reload", timeout=60)))
    t.start()

    m = wait_for(lambda: re.search(r"worker 0 \(pid \d+\) replaced by pid (\d+) \(reload\): generation 2", s.log()),
                 15, 0.02)
    assert m, s.log()
    os.kill(int(m.group(1)), signal.SIGKILL)
    assert "reloaded" not in s.log(), "too late: the reload was over before worker 0 was killed"
    t.join(60)
    rc, out, err = box["r"]
    assert rc == 0, (rc, out, err)
    s.wait_settled(timeout=15)
    assert gens(s.status()) == [(0, 2), (1, 2)], s.status()["workers"]
