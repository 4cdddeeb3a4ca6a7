"""`cohort upgrade` and SIGUSR2 (issue 11): a new master, exec'd from the
binary on disk, takes the listening sockets, the admin listener, the control
socket and the counters over; the old master's workers drain and it exits.
Under wrk in every schedule mode, by signal, twice in a row, to a new build,
and with new masters that fail (a bad config, workers that never get ready,
a binary that exits or hangs) while the old master goes on serving."""
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time

import pytest

from conftest import children_of, cmdline, free_port
from opsutil import (assert_no_failures, kill_pid, notify_socket, ops, ops_bin, pid_alive,  # noqa: F401
                     queue_on_frozen_worker, short_get, wait_for, wrk)
from test_ops_reload import (NEW_VERSION, install, install_script, new_build,  # noqa: F401 - new_build is a fixture
                             own_binary)

SCHEDULES = ["reuseport", "shared", "round_robin", "least_loaded"]


@pytest.fixture
def adopted():
    """Masters the tests did not start (made by an upgrade): each is stopped
    by pid at teardown (TERM, then KILL), with its workers."""
    pids = []
    yield pids
    problems = []
    for pid in pids:
        kids = children_of(pid)
        if not pid_alive(pid):
            continue
        kill_pid(pid, signal.SIGTERM)
        if not wait_for(lambda: not pid_alive(pid), 15, 0.05):
            problems.append("master %d did not stop on SIGTERM" % pid)
            kill_pid(pid)
        if not wait_for(lambda: not any(pid_alive(k) for k in kids), 5, 0.05):
            problems.append("workers %s outlived master %d" % ([k for k in kids if pid_alive(k)], pid))
            for k in kids:
                kill_pid(k)
    assert not problems, problems


def pid_file(s):
    with open(s.config["control"]["pid_file"]) as f:
        return int(f.read().strip())


def upgrade(s, adopted, timeout=60):
    """`cohort upgrade --json`: (rc, answer, stderr); a new master it names
    is stopped at teardown."""
    rc, out, err = s.cli("upgrade", "--json", timeout=timeout, config=s.ctl_config_path)
    try:
        ans = json.loads(out)
    except ValueError:
        raise AssertionError("cohort upgrade: rc %d, no JSON answer %r %r" % (rc, out, err))
    if rc == 0:
        adopted.append(ans["pid"])
    return rc, ans, err


def requests_total(port):
    """Sum of cohort_http_requests_total over every route and class."""
    r = short_get(port, "/metrics")
    assert r.status == 200, r
    n = 0
    for line in r.body.decode().splitlines():
        if line.startswith("cohort_http_requests_total{"):
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def ready_pids_of(s):
    return sorted(w["pid"] for w in s.status()["workers"] if w["state"] == "ready")


def worker_children(pid):
    return sorted(k for k in children_of(pid) if cmdline(k)[1:2] == [b"__worker"])


def assert_took_over(s, old, new, old_workers, n=2):
    """The pid file and status name the new master; the old master and its
    workers are gone; the new master's own children serve."""
    assert new != old
    assert pid_file(s) == new, "pid file says %d, the new master is %d" % (pid_file(s), new)
    assert s.status()["master"]["pid"] == new
    assert wait_for(lambda: not pid_alive(old), 20, 0.05), "the old master %d is still running:\n%s" % (
        old, s.log()[-3000:])
    assert wait_for(lambda: not any(pid_alive(p) for p in old_workers), 10, 0.05), \
        "old workers %s still running" % [p for p in old_workers if pid_alive(p)]
    assert wait_for(lambda: len(ready_pids_of(s)) == n, 10, 0.1), s.status()
    assert sorted(ready_pids_of(s)) == worker_children(new), (s.status(), children_of(new))
    assert not set(ready_pids_of(s)) & set(old_workers)


def serves(port, n=5):
    for _ in range(n):
        r = short_get(port, "/")
        assert r.status == 200 and r.body == b"Hello World\n", r


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_upgrade_under_load_drops_nothing(ops, wrk, adopted, schedule):
    """wrk -c32 for 6 s with an upgrade in the middle: the command returns
    once a new master took over; no failed request; the old master and its
    workers are gone; the counters on the admin listener carry over (the
    total counts at least every request wrk saw answered)."""
    admin = free_port()
    s = ops({"schedule": schedule, "admin": {"host": "127.0.0.1", "port": admin}})
    old, old_workers = s.proc.pid, s.ready_pids()
    assert pid_file(s) == old and len(old_workers) == 2
    w = wrk(s.port, "/", connections=32, seconds=6)
    time.sleep(1.5)
    before = requests_total(admin)
    assert before > 0
    rc, ans, err = upgrade(s, adopted)
    assert rc == 0 and ans["ok"] is True, (rc, ans, err)
    assert ans["old_pid"] == old and ans["pid"] != old, ans
    assert re.match(r"upgraded: master pid %d took over from pid %d" % (ans["pid"], old), ans["message"]), ans
    assert_took_over(s, old, ans["pid"], old_workers)
    assert s.proc.wait(5) == 0, "the old master's exit status"
    res = w.result()
    assert_no_failures(res, "wrk over an upgrade (schedule %s)" % schedule)
    assert res["requests"] > 1000, "too little load to mean anything: %d requests" % res["requests"]
    after = requests_total(admin)
    assert after >= before and after >= res["requests"], \
        "requests counted: %d before the upgrade, %d after; wrk had %d answered" % (before, after, res["requests"])
    serves(s.port)
    assert "schedule %s" % schedule in s.log()


def test_reuseport_connections_queued_on_the_old_workers_socket_are_served(ops, adopted):
    """reuseport: old worker 0 is frozen (SIGSTOP), so connections the kernel
    put on its socket wait in its accept queue. After an upgrade the new
    master's worker 0 serves on that same socket and answers them, none is
    reset, while the frozen worker still holds its copy."""
    s = ops({"schedule": "reuseport"}, workers=2)
    old, old_workers = s.proc.pid, s.ready_pids()
    old0 = s.ready_workers()[0]["pid"]
    os.kill(old0, signal.SIGSTOP)
    conns = []
    try:
        pending = queue_on_frozen_worker(s.port, conns)
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        for c in pending:
            r = c.read_response(timeout=3)  # raises Closed on a reset
            assert r.status == 200, r
        assert pid_alive(old0), "the frozen worker is gone already"
    finally:
        os.kill(old0, signal.SIGCONT)
        for c in conns:
            c.close()
    assert_took_over(s, old, ans["pid"], old_workers)


def test_sigusr2_upgrades_and_the_new_master_upgrades_again(ops, adopted):
    """SIGUSR2 to the master upgrades it (no client to answer); the new
    master takes `cohort upgrade` in turn, and `cohort stop` stops the last."""
    s = ops()
    old, old_workers = s.proc.pid, s.ready_pids()
    s.signal(signal.SIGUSR2)
    assert wait_for(lambda: pid_file(s) != old, 20, 0.05), s.log()[-3000:]
    new = pid_file(s)
    adopted.append(new)
    assert "SIGUSR2: upgrading the master" in s.log()
    assert_took_over(s, old, new, old_workers)
    serves(s.port)
    workers2 = ready_pids_of(s)
    rc, ans, err = upgrade(s, adopted)
    assert rc == 0, (rc, ans, err)
    third = ans["pid"]
    assert ans["old_pid"] == new and third not in (old, new)
    assert_took_over(s, new, third, workers2)
    serves(s.port)
    rc, out, err = s.cli("stop")
    assert rc == 0 and "stopped" in out, (rc, out, err)
    assert not pid_alive(third)
    assert not os.path.exists(s.config["control"]["pid_file"])
    assert not os.path.exists(s.config["control"]["socket"])


def assert_still_serving(s, old, old_workers):
    assert pid_file(s) == old
    st = s.status()
    assert st["master"]["pid"] == old
    assert ready_pids_of(s) == sorted(old_workers)
    # the failed new master and its workers are gone; only the old workers are children
    assert wait_for(lambda: sorted(children_of(old)) == sorted(old_workers), 20, 0.1), \
        (children_of(old), old_workers, s.log()[-3000:])
    serves(s.port)


def test_bad_config_upgrade_fails_and_the_old_master_serves(ops, adopted):
    s = ops()
    old, old_workers = s.proc.pid, s.ready_pids()
    good = json.loads(json.dumps(s.config))
    bad = json.loads(json.dumps(s.config))
    bad["workers"] = "two"
    s.write_config(bad)
    rc, ans, err = upgrade(s, adopted)
    assert rc == 1 and ans["ok"] is False, (rc, ans, err)
    msg = ans["message"]
    assert msg.startswith("upgrade failed; master pid %d goes on serving: " % old), msg
    assert "cohort.json:" in msg and "workers:" in msg, msg
    assert_still_serving(s, old, old_workers)
    # plain output names the reason too
    rc, out, err = s.cli("upgrade", config=s.ctl_config_path)
    assert rc == 1 and "upgrade failed" in err and "workers:" in err, (rc, out, err)
    # a changed port cannot be handed over: refused, the old master serves
    moved = json.loads(json.dumps(good))
    moved["server"]["port"] = free_port()
    s.write_config(moved)
    rc, ans, err = upgrade(s, adopted)
    assert rc == 1 and "server.port" in ans["message"] and "needs a restart" in ans["message"], ans
    assert_still_serving(s, old, old_workers)
    # the config back: the upgrade goes through
    s.write_config(good)
    rc, ans, err = upgrade(s, adopted)
    assert rc == 0, (rc, ans, err)
    assert_took_over(s, old, ans["pid"], old_workers)


def test_new_workers_never_ready_fail_the_upgrade(ops, adopted):
    """The new config's workers exit at start (an access log they cannot
    open): after ready_timeout the new master gives up and says why; the
    old master and workers serve on; reloads still work."""
    s = ops({"ready_timeout": "1s"})
    s.worker_deaths_ok = True  # the new master's workers crash-loop
    old, old_workers = s.proc.pid, s.ready_pids()
    cfg = json.loads(json.dumps(s.config))
    good = json.loads(json.dumps(cfg))
    cfg["log"] = {"access": os.path.join(s.workdir, "missing", "dir", "access.log")}
    s.write_config(cfg)
    t0 = time.monotonic()
    rc, ans, err = upgrade(s, adopted)
    took = time.monotonic() - t0
    assert rc == 1, (rc, ans, err)
    msg = ans["message"]
    assert msg.startswith("upgrade failed; master pid %d goes on serving: " % old), msg
    # the new master's reason: its ready_timeout, or its workers' own error as it exits
    assert "ready_timeout" in msg or "access.log" in msg or "exited with status" in msg, msg
    assert took < 15, "the failed upgrade took %.1f s with ready_timeout 1s" % took
    assert_still_serving(s, old, old_workers)
    s.write_config(good)
    rc, out, err = s.cli("reload")
    assert rc == 0 and "reloaded: 2 worker(s) replaced" in out, (rc, out, err)


@pytest.mark.parametrize("script,want", [("exit 3", "exited with status 3"),
                                          ("exec sleep 60", "did not report ready in time")])
def test_new_binary_that_fails_leaves_the_old_master(ops, adopted, script, want):
    """The binary on disk is broken (exits at once, or hangs): the upgrade
    fails with the reason within its deadline and the old master serves."""
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    try:
        path = own_binary(d)
        s = ops({"ready_timeout": "1s"}, binary=path)
        old, old_workers = s.proc.pid, s.ready_pids()
        install_script("#!/bin/sh\n%s\n" % script, path)
        t0 = time.monotonic()
        rc, ans, err = upgrade(s, adopted, timeout=40)
        took = time.monotonic() - t0
        assert rc == 1 and want in ans["message"], (rc, ans, err)
        assert took < 20, "the failed upgrade took %.1f s" % took
        assert_still_serving(s, old, old_workers)
        install(ops_bin(), path)
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        assert_took_over(s, old, ans["pid"], old_workers)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_upgrade_runs_the_new_build(ops, new_build, adopted, wrk):
    """A new build installed over the binary: after `cohort upgrade` the
    master itself (not only its workers) runs it, as status shows."""
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    try:
        path = own_binary(d)
        s = ops(binary=path)
        old_version = s.status()["master"]["version"]
        assert old_version != NEW_VERSION
        old, old_workers = s.proc.pid, s.ready_pids()
        install(new_build, path)
        w = wrk(s.port, "/", connections=16, seconds=3)
        time.sleep(0.5)
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        assert_took_over(s, old, ans["pid"], old_workers)
        assert_no_failures(w.result(), "wrk during an upgrade to a new build")
        st = s.status()
        assert st["master"]["version"] == NEW_VERSION, st["master"]
        assert [x["version"] for x in st["workers"]] == [NEW_VERSION] * 2, st["workers"]
        assert os.readlink("/proc/%d/exe" % ans["pid"]) == path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_upgrade_refused_during_a_reload_and_reload_refused_during_an_upgrade(ops, adopted):
    """One change of the workers at a time: an upgrade asked while a reload
    runs is refused with a reason, and the reverse."""
    d = tempfile.mkdtemp(prefix="cohort-ops-bin-", dir="/tmp")
    try:
        path = own_binary(d)
        s = ops({"ready_timeout": "2s"}, binary=path)
        old, old_workers = s.proc.pid, s.ready_pids()
        install_script("#!/bin/sh\nexec sleep 60\n", path)
        box = {}
        # a reload whose replacement hangs until ready_timeout: no upgrade meanwhile
        t = threading.Thread(target=lambda: box.update(reload=s.cli("reload", timeout=40)))
        t.start()
        assert wait_for(lambda: s.status()["master"]["reloading"], 10, 0.05), s.log()[-2000:]
        rc, ans, err = upgrade(s, adopted)
        assert rc == 1 and "a reload is under way" in ans["message"], (rc, ans, err)
        t.join(40)
        assert box["reload"][0] == 1, box
        # an upgrade whose new master hangs until its deadline: no reload meanwhile
        t = threading.Thread(target=lambda: box.update(upgrade=upgrade(s, adopted, timeout=40)))
        t.start()
        assert wait_for(lambda: "upgrading: new master pid" in s.log(), 10, 0.05), s.log()[-2000:]
        rc, out, err = s.cli("reload", config=s.ctl_config_path)
        assert rc == 1 and "an upgrade is under way" in err, (rc, out, err)
        t.join(40)
        assert box["upgrade"][0] == 1, box
        assert_still_serving(s, old, old_workers)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sd_notify_follows_the_new_master(ops, adopted):
    """With NOTIFY_SOCKET set, systemd hears MAINPID=<new master> (from the
    old master, which systemd still takes as the main process, and from the
    new one), never STOPPING=1 from the old master that hands over; the new
    master says STOPPING=1 when it stops."""
    import socket
    ns, path = notify_socket(ops)
    try:
        s = ops(env={"NOTIFY_SOCKET": path})
        assert ns.recv(4096).decode() == "READY=1"
        old, old_workers = s.proc.pid, s.ready_pids()
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        new = ans["pid"]
        assert_took_over(s, old, new, old_workers)
        got = []
        ns.settimeout(0.5)
        while True:
            try:
                got.append(ns.recv(4096).decode())
            except socket.timeout:
                break
        assert got.count("MAINPID=%d" % new) == 2, got
        assert "STOPPING=1" not in got, got
        ns.settimeout(5)
        rc, out, err = s.cli("stop")
        assert rc == 0, (rc, out, err)
        assert ns.recv(4096).decode() == "STOPPING=1"
    finally:
        ns.close()


@pytest.mark.parametrize("schedule", ["reuseport", "round_robin"])
def test_upgrade_changes_worker_count(ops, adopted, schedule):
    """The new master starts the workers its config asks for: with reuseport
    it binds sockets for new slots beside the inherited ones, and leaves the
    sockets of slots it no longer has to the old workers as they drain."""
    s = ops({"schedule": schedule}, workers=2)
    cfg = json.loads(json.dumps(s.config))
    for n in (3, 1):
        old, old_workers = pid_file(s), ready_pids_of(s)
        cfg["workers"] = n
        s.write_config(cfg)
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        assert_took_over(s, old, ans["pid"], old_workers, n=n)
        assert sorted(w["id"] for w in s.status()["workers"]) == list(range(n))
        for _ in range(12):
            r = short_get(s.port, "/", timeout=5)
            assert r.status == 200, r


def test_upgrade_hands_health_checks_to_the_new_masters_checker(ops, adopted):
    """With active health checks, the new master runs its own checker (shown
    in its status); the old master's checker is gone with it, and checks go
    on, made by the new checker."""
    from test_proxy_checker import Backend, lb_config, running_checker, wait_checks_by
    b = Backend()
    try:
        s = ops(lb_config(b))
        b.master = s.proc.pid
        old, old_workers = s.proc.pid, s.ready_pids()
        old_chk = running_checker(s)["pid"]
        assert old_chk in children_of(old)
        rc, ans, err = upgrade(s, adopted)
        assert rc == 0, (rc, ans, err)
        new = ans["pid"]
        assert_took_over(s, old, new, old_workers)
        assert wait_for(lambda: not pid_alive(old_chk), 10, 0.05), "the old checker %d lives on" % old_chk
        row = running_checker(s, other_than=old_chk)
        assert row["pid"] in children_of(new), (row, children_of(new))
        b.master = new
        wait_checks_by(b, row["pid"], time.monotonic(), n=3)
        r = short_get(s.port, "/anything")
        assert r.status == 200, r
    finally:
        b.close()


def listening_sockets(port):
    """How many TCP sockets listen on 127.0.0.1:port (a reuseport group
    counts each of its sockets)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "0100007F:%04X" % port and fields[3] == "0A":
                n += 1
    return n


def new_master_of(old, old_workers):
    kids = [k for k in children_of(old) if k not in old_workers and cmdline(k)[1:2] == [b"serve"]]
    return kids[0] if len(kids) == 1 else None


@pytest.mark.parametrize("schedule,workers", [("reuseport", 2), ("shared", 1)])
def test_crash_loops_around_an_upgrade_leave_the_new_masters_sockets_listening(ops, adopted, schedule, workers):
    """The new master's workers listen on the sockets they share with the
    old master's and hold their READY; meanwhile the old master's worker of
    the last slot dies and cannot start again (its generation's static root
    is gone). The old master must not stop the shared socket from listening
    while the upgrade is under way: after the takeover every socket of the
    new master listens and it answers every connection. Then a slot of the
    new master crash-loops: the new master, not the old one, now makes the
    sockets follow its workers (a live worker answers, or the connection is
    refused; none hangs)."""
    from opsutil import cohort_test_bin
    hold = os.path.join(tempfile.mkdtemp(prefix="cohort-hold-", dir="/tmp"), "hold")
    ops.dirs.append(os.path.dirname(hold))
    s = ops({"schedule": schedule, "min_uptime": "1s"}, workers=workers, binary=cohort_test_bin(),
            env={"COHORT_TEST_HOLD_READY_FILE": hold})
    s.worker_deaths_ok = True
    old, old_workers = s.proc.pid, s.ready_pids()
    assert listening_sockets(s.port) == workers
    cfg = json.loads(json.dumps(s.config))
    root2 = os.path.join(s.workdir, "root2")
    os.makedirs(root2)
    cfg["routes"][0]["root"] = root2  # the new master's generation serves from root2
    s.write_config(cfg)
    open(hold, "w").close()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=upgrade(s, adopted)))
    t.start()
    try:
        def holding():
            new = new_master_of(old, old_workers)
            kids = worker_children(new) if new else []
            return len(kids) == workers and all(os.path.exists("%s.%d" % (hold, k)) for k in kids)
        assert wait_for(holding, 30, 0.02), "the new master's workers never held READY:\n%s" % s.log()[-3000:]
        # the old master's last slot dies and cannot start again
        os.rename(s.root, s.root + ".away")
        victim = s.ready_workers()[workers - 1]["pid"]
        os.kill(victim, signal.SIGKILL)

        def looping():
            return any(w["id"] == workers - 1 and w["state"] == "crash_loop" for w in s.status()["workers"])
        assert wait_for(looping, 20, 0.05), s.status()
    finally:
        os.unlink(hold)
        t.join(90)
    rc, ans, err = result["r"]
    assert rc == 0 and ans["ok"] is True, (rc, ans, err)
    new = ans["pid"]
    assert wait_for(lambda: not pid_alive(old), 20, 0.05), s.log()[-3000:]
    assert listening_sockets(s.port) == workers, \
        "after the upgrade %d of the new master's %d socket(s) listen:\n%s" % (
            listening_sockets(s.port), workers, s.log()[-3000:])
    for _ in range(40):
        r = short_get(s.port, "/", timeout=3)
        assert r.status == 200, r
    if schedule == "reuseport":
        per_worker = [w["requests"] for w in s.status()["workers"]]
        assert all(n > 0 for n in per_worker), "a new worker's socket took no connection: %s" % per_worker

    # the new master's own slot crash-loops (min_uptime 1 s: its kill is a crash)
    time.sleep(1.1)
    os.rename(root2, root2 + ".away")
    victim = s.ready_workers()[workers - 1]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: any(w["id"] == workers - 1 and w["state"] == "crash_loop" and w.get("next_try_s", 0)
                                >= 0.5 for w in s.status()["workers"]), 20, 0.02), s.status()
    for _ in range(20):
        t0 = time.monotonic()
        try:
            out = short_get(s.port, "/", timeout=3).status
        except ConnectionRefusedError:
            out = "refused"
        took = time.monotonic() - t0
        assert out == (200 if workers > 1 else "refused") and took < 2, (out, took, s.log()[-2000:])
    os.rename(root2 + ".away", root2)
    assert wait_for(lambda: len(s.ready_workers()) == workers, 40, 0.25), s.status()
    assert s.status()["master"]["pid"] == new
