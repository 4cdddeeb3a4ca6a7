"""Workers that cannot start (issue 11). A first start whose workers cannot
start exits 1 with the workers' own error and leaves the port; at runtime,
while a slot has no live worker (crash-loop backoff), no client hangs: its
connection goes to a live worker, or it is refused when none is live, in
every schedule mode."""
import os
import re
import signal
import time

import pytest

from opsutil import ops, queue_on_frozen_worker, short_get, wait_for  # noqa: F401 - fixtures
from rawhttp import Closed

SCHEDULES = ["reuseport", "shared", "round_robin", "least_loaded"]


def test_first_start_that_cannot_start_exits_with_the_workers_error(ops):
    """The workers run as nobody and cannot open their access log inside the
    master's 0700 work directory (a check-config cannot see that: the file
    is the workers' to open): the master exits 1 at once, its log gives the
    workers' own reason, and nothing listens on the port afterwards."""
    import tempfile
    pub = tempfile.mkdtemp(prefix="cohort-ops-pub-", dir="/tmp")
    ops.dirs.append(pub)
    os.chmod(pub, 0o755)
    workdir = tempfile.mkdtemp(prefix="cohort-ops-", dir="/tmp")  # mode 0700, root's
    ops.dirs.append(workdir)
    log_path = os.path.join(workdir, "access.log")
    s2 = ops({"user": "nobody", "ready_timeout": "5s", "log": {"access": log_path},
              "routes": [{"path": "/static/*", "handler": "static", "root": pub}]}, ready=False,
             workdir=workdir)
    assert oct(os.stat(s2.workdir).st_mode & 0o777) == "0o700"
    s2.worker_deaths_ok = True
    s2.expect_exit = None
    rc = s2.wait_exit(10)
    took = time.monotonic() - s2.t_start
    assert rc == 1, "the master did not exit 1 within 10 s (rc %r)\n%s" % (rc, s2.log()[-3000:])
    assert took < 5, "the start took %.1f s to fail (ready_timeout 5 s)" % took
    want = "could not start: log.access: cannot open %s: Permission denied" % log_path
    assert want in s2.log(), "the master's log does not give the worker's reason (%s):\n%s" % (want, s2.log())
    with pytest.raises(ConnectionRefusedError):
        short_get(s2.port, "/", timeout=2)
    assert "serving http://" not in s2.log()


def break_root(s):
    away = s.root + ".away"
    os.rename(s.root, away)
    return away


def crash_looping(s, wid, min_wait=0.3):
    """Until worker wid is in backoff with at least min_wait s to go."""
    def looping():
        for w in s.status()["workers"]:
            if w["id"] == wid and w["state"] == "crash_loop" and w.get("next_try_s", 0) >= min_wait:
                return True
        return False
    assert wait_for(looping, 20, 0.02), "worker %d never waited in backoff: %s\n%s" % (wid, s.status(),
                                                                                      s.log()[-2000:])


def answered_quickly(port, n, timeout=3.0):
    """n requests, each on a new connection: [(outcome, seconds)] where the
    outcome is a status code, "refused", "closed" or "timeout"."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            r = short_get(port, "/", timeout=timeout)
            out.append((r.status, time.monotonic() - t0))
        except ConnectionRefusedError:
            out.append(("refused", time.monotonic() - t0))
        except (TimeoutError, OSError, Closed) as e:
            out.append(("timeout" if isinstance(e, TimeoutError) else "closed", time.monotonic() - t0))
    return out


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_crash_loop_slot_sends_clients_to_live_workers(ops, schedule):
    """Worker 1 crash-loops (its static root is gone), worker 0 still
    serves: 40 new connections are all answered 200 at once; none waits in
    the dead slot's queue."""
    s = ops({"schedule": schedule, "min_uptime": "1s"}, workers=2)
    s.worker_deaths_ok = True
    away = break_root(s)
    try:
        time.sleep(1.1)  # past min_uptime: the kill itself is not a crash
        os.kill(s.ready_workers()[1]["pid"], signal.SIGKILL)
        crash_looping(s, 1)
        res = answered_quickly(s.port, 40)
        bad = [r for r in res if r[0] != 200 or r[1] > 2]
        assert not bad, "with worker 1 in backoff (schedule %s): %s" % (schedule, bad)
    finally:
        os.rename(away, s.root)
    assert wait_for(lambda: len(s.ready_workers()) == 2, 40, 0.25), s.status()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_no_live_worker_refuses_connections(ops, schedule):
    """Both workers crash-loop: new connections are refused (no one is
    left waiting for a worker that comes back after the backoff); once a
    worker starts again they are served."""
    s = ops({"schedule": schedule, "min_uptime": "1s"}, workers=2)
    s.worker_deaths_ok = True
    away = break_root(s)
    try:
        time.sleep(1.1)
        for w in s.ready_workers().values():
            os.kill(w["pid"], signal.SIGKILL)
        def both_waiting():
            ws = s.status()["workers"]
            return len(ws) == 2 and all(w["state"] == "crash_loop" and w["next_try_s"] >= 0.5 for w in ws)
        assert wait_for(both_waiting, 20, 0.02), s.status()
        # (a worker that starts meanwhile fails before it listens: still refused)
        res = answered_quickly(s.port, 10)
        assert all(r[0] == "refused" for r in res), \
            "no worker is live (schedule %s), yet connections were not refused: %s" % (schedule, res)
    finally:
        os.rename(away, s.root)
    assert wait_for(lambda: len(s.ready_workers()) == 2, 40, 0.25), s.status()
    res = answered_quickly(s.port, 10)
    assert all(r[0] == 200 for r in res), res


def test_reuseport_connections_queued_on_a_dying_slot_go_to_a_live_worker(ops):
    """reuseport: worker 1 is frozen, so connections the kernel hashed to
    its socket wait in its queue; it is then killed and cannot start again
    (crash loop). The master hands what was queued to worker 0: every one
    is answered, long before the backoff ends."""
    s = ops({"schedule": "reuseport", "min_uptime": "1s"}, workers=2)
    s.worker_deaths_ok = True
    away = break_root(s)
    conns = []
    try:
        time.sleep(1.1)
        victim = s.ready_workers()[1]["pid"]
        os.kill(victim, signal.SIGSTOP)
        pending = queue_on_frozen_worker(s.port, conns, answer_within=0.2)
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        for c in pending:
            r = c.read_response(timeout=5)
            assert r.status == 200, r
        assert time.monotonic() - t0 < 4
        assert "queued connection(s) handed over" in s.log()
    finally:
        for c in conns:
            c.close()
        os.rename(away, s.root)
    assert wait_for(lambda: len(s.ready_workers()) == 2, 40, 0.25), s.status()


def test_first_start_whose_workers_never_get_ready_exits_at_ready_timeout(ops):
    """build/cohort-test's workers hold 60 s before they are ready: the
    master kills them at ready_timeout and exits 1, saying so; nothing
    listens afterwards."""
    from opsutil import cohort_test_bin
    s = ops({"ready_timeout": "1500ms"}, binary=cohort_test_bin(), env={"COHORT_TEST_HOLD_START": "60"},
            ready=False)
    s.worker_deaths_ok = True
    s.expect_exit = None
    rc = s.wait_exit(15)
    took = time.monotonic() - s.t_start
    assert rc == 1, "the master did not exit 1 within 15 s (rc %r)\n%s" % (rc, s.log()[-3000:])
    assert 1.4 < took < 6, "exited %.1f s after its start (ready_timeout 1.5 s)" % took
    assert re.search(r"worker \d \(pid \d+\) could not start: killed by signal 9 \(Killed\), not ready within "
                     r"ready_timeout", s.log()), s.log()
    with pytest.raises(ConnectionRefusedError):
        short_get(s.port, "/", timeout=2)
