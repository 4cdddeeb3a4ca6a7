"""Recycling (issue 5): a worker over max_memory, max_requests or max_errors
is replaced like a reload (the new one first, then the old drains), under
load, without a failed request. Uses build/cohort-test's /__test routes."""
import re
import time

from opsutil import Conn, assert_no_failures, cohort_test_bin, get, ops, pid_alive, wait_for, whoami, wrk  # noqa: F401


def replaced(s, wid, old_pid, timeout):
    """Waits until worker `wid` is served by another pid and the old one is gone."""
    def done():
        row = s.ready_workers().get(wid)
        return row is not None and row["pid"] != old_pid and not pid_alive(old_pid) and row["pid"]
    return wait_for(done, timeout, 0.1)


def test_memory_recycle_under_load(ops, wrk):
    s = ops({"max_memory": "30M", "memory_check_interval": "1s"}, binary=cohort_test_bin())
    w = wrk(s.port, "/", connections=16, seconds=5)
    time.sleep(0.5)
    with Conn(s.port) as c:
        wid, pid, _ = whoami(c)
        others = {i: r["pid"] for i, r in s.ready_workers().items() if i != wid}
        c.send(get("/__test/leak?mb=40"))
        r = c.read_response()
        assert r.status == 200 and r.json()["leaked_mb"] == 40, r
    new = replaced(s, wid, pid, 15)
    assert new, "worker %d (pid %d) holding 40 MB over max_memory 30M was not replaced:\n%s" % (
        wid, pid, s.status())
    res = w.result()
    assert_no_failures(res, "wrk while a worker was recycled for memory")
    lines = [l for l in s.log().splitlines() if "worker %d (pid %d) asks to be replaced" % (wid, pid) in l]
    assert lines, s.log()
    m = re.search(r"memory: RSS (\d+) bytes is above max_memory (\d+)", lines[0])
    assert m, lines[0]
    assert int(m.group(2)) == 30 * 1024 * 1024
    assert int(m.group(1)) > 40 * 1024 * 1024, "the RSS logged is not the leaking worker's: %s" % lines[0]
    assert re.search(r"worker %d \(pid %d\) replaced by pid %d \(recycle\)" % (wid, pid, new), s.log()), s.log()
    # only the leaking worker was replaced
    now = s.ready_workers()
    assert {i: now[i]["pid"] for i in others} == others, (others, now)


def test_max_requests_recycle_under_load(ops, wrk):
    s = ops({"max_requests": 2000}, binary=cohort_test_bin())
    pids0 = s.ready_pids()
    w = wrk(s.port, "/", connections=16, seconds=4)
    res = w.result()
    assert_no_failures(res, "wrk while workers were recycled by max_requests")
    assert res["requests"] > 8000, res["requests"]
    asked = re.findall(r"asks to be replaced: max_requests: served (\d+) requests", s.log())
    assert len(asked) >= 2, "%d requests and %d recycles:\n%s" % (res["requests"], len(asked), s.log()[-3000:])
    assert all(int(n) >= 2000 for n in asked), asked
    s.wait_settled(timeout=15)
    assert not set(s.ready_pids()) & set(pids0), (pids0, s.ready_pids())


def test_max_errors_recycle_under_load(ops, wrk):
    s = ops({"max_errors": 3, "error_window": "10s"}, binary=cohort_test_bin())
    w = wrk(s.port, "/", connections=16, seconds=5)
    time.sleep(0.3)
    with Conn(s.port) as c:
        wid, pid, _ = whoami(c)
        for _ in range(2):
            c.send(get("/__test/fail"))
            assert c.read_response().status == 500
        time.sleep(1.5)  # the limits are checked once a second
        assert s.ready_workers()[wid]["pid"] == pid, "replaced after 2 errors with max_errors 3"
        assert "asks to be replaced" not in s.log()
        c.send(get("/__test/fail"))
        assert c.read_response().status == 500
    new = replaced(s, wid, pid, 15)
    assert new, "worker %d (pid %d) was not replaced after 3 internal errors:\n%s" % (wid, pid, s.log())
    res = w.result()
    assert_no_failures(res, "wrk while a worker was recycled for errors")
    assert re.search(r"worker %d \(pid %d\) asks to be replaced: max_errors: 3 internal errors within 10000 ms"
                     % (wid, pid), s.log()), s.log()
