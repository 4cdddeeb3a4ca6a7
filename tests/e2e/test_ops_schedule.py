"""round_robin and least_loaded (the master accepts and hands connections
over), and the IPC broadcast route (issue 5)."""
import json
import os
import signal
import socket
import statistics
import time

import pytest

from opsutil import Conn, cohort_test_bin, get, ops, parallel, short_get, wait_for, whoami  # noqa: F401

RAW_GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def one_short_connection(port):
    """A new TCP connection, GET / with Connection: close, the whole answer
    read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(RAW_GET)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200 ") or not data.endswith(b"Hello World\n"):
        raise AssertionError("bad answer %r" % data[:200])
    return True


def requests_by_worker(s):
    return {w["id"]: (w["pid"], w["requests"]) for w in s.status()["workers"]}


@pytest.mark.parametrize("schedule", ["round_robin", "least_loaded"])
def test_short_connections_spread_evenly(ops, schedule):
    """10,000 short connections from 8 threads: each of 3 workers' share is
    within 15% of the mean."""
    n = 10000
    s = ops({"schedule": schedule}, workers=3)
    before = requests_by_worker(s)
    results, errors = parallel(lambda i: one_short_connection(s.port), range(n), threads=8)
    assert not errors, "%d of %d connections failed: %s" % (len(errors), n, errors[:3])
    after = requests_by_worker(s)
    assert {i: p for i, (p, _) in after.items()} == {i: p for i, (p, _) in before.items()}, \
        "a worker was replaced meanwhile"
    counts = [after[i][1] - before[i][1] for i in sorted(after)]
    assert sum(counts) == n, "the workers counted %d requests for %d connections: %s" % (sum(counts), n, counts)
    mean = n / 3
    worst = max(abs(c - mean) / mean for c in counts)
    assert worst <= 0.15, "shares %s (stdev %.0f): one is %.0f%% off the mean" % (
        counts, statistics.pstdev(counts), worst * 100)


@pytest.mark.parametrize("schedule,most", [("least_loaded", 0.25), ("round_robin", None)])
def test_least_loaded_steers_away_from_busy_worker(ops, schedule, most):
    """One worker holds 20 slow requests (6 s); 200 short connections then
    go mostly to the other with least_loaded (< 25%), while round_robin
    (the control) keeps giving the busy one about half."""
    s = ops({"schedule": schedule}, workers=2, binary=cohort_test_bin())
    conns = [Conn(s.port, timeout=10) for _ in range(44)]
    try:
        by_pid = {}
        for c in conns:
            _, pid, _ = whoami(c)
            by_pid.setdefault(pid, []).append(c)
        busy_pid = max(by_pid, key=lambda p: len(by_pid[p]))
        busy = by_pid[busy_pid][:20]
        assert len(busy) == 20, {p: len(v) for p, v in by_pid.items()}
        for c in conns:
            if c not in busy:
                c.close()
        t_sent = time.monotonic()
        for c in busy:
            c.send(get("/__test/sleep?ms=6000"))

        def inflight():
            return {w["pid"]: w["inflight"] for w in s.status()["workers"]}
        assert wait_for(lambda: inflight().get(busy_pid) == 20, 5), inflight()
        got = {}
        for _ in range(200):
            r = short_get(s.port, "/api/broadcast")
            assert r.status == 200, r
            pid = r.json()["pid"]
            got[pid] = got.get(pid, 0) + 1
        assert time.monotonic() - t_sent < 6, "the probe outlasted the slow requests"
        share = got.get(busy_pid, 0) / 200
        for c in busy:
            r = c.read_response()
            assert r.status == 200 and r.json() == {"slept": True}, r
    finally:
        for c in conns:
            c.close()
    if most is not None:
        assert share < most, "the busy worker (20 in flight) got %.0f%% of 200 new connections: %s" % (
            share * 100, got)
    else:
        assert 0.4 <= share <= 0.6, "round_robin gave the busy worker %.0f%%: %s" % (share * 100, got)


# --- IPC ----------------------------------------------------------------------

def test_broadcast_reaches_every_other_worker(ops):
    """POST /api/broadcast on one worker: every other worker's GET
    /api/broadcast shows the message with the sender's id; the sender does
    not get its own."""
    s = ops({"schedule": "round_robin"}, workers=3)
    token = "ops-%d" % time.monotonic_ns()
    payload = {"token": token, "n": [1, 2, 3], "s": "\u00e9\u4e2d"}
    with Conn(s.port) as c:
        sender, sender_pid, _ = whoami(c)
        body = json.dumps({"data": payload}).encode()
        c.send(b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert r.status == 202, r
        assert r.json() == {"sent": True, "from": sender}, r.json()

    def views():
        """worker id -> (pid, received) from new connections until all 3
        workers answered (round_robin: 3 connections suffice)."""
        seen = {}
        for _ in range(9):
            j = short_get(s.port, "/api/broadcast").json()
            seen[j["worker"]] = (j["pid"], j["received"])
            if len(seen) == 3:
                break
        return seen

    def delivered():
        v = views()
        return len(v) == 3 and all(any(m.get("data", {}).get("token") == token for m in rec)
                                   for wid, (_, rec) in v.items() if wid != sender) and v
    v = wait_for(delivered, 3, 0.1)
    assert v, "not delivered to every other worker: %s" % views()
    assert sorted(v) == [0, 1, 2] and len({p for p, _ in v.values()}) == 3
    assert v[sender][0] == sender_pid
    for wid, (pid, rec) in v.items():
        mine = [m for m in rec if isinstance(m.get("data"), dict) and m["data"].get("token") == token]
        if wid == sender:
            assert mine == [], "the sender received its own message: %s" % rec
        else:
            assert mine == [{"from": sender, "data": payload}], "worker %d got %s" % (wid, rec)


def test_broadcast_rejects_body_without_data(ops):
    s = ops({"schedule": "round_robin"}, workers=2)
    body = b'{"nodata": 1}'
    with Conn(s.port) as c:
        c.send(b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert c.read_response().status == 400
    for _ in range(2):
        assert short_get(s.port, "/api/broadcast").json()["received"] == []


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_stopped_worker_does_not_block_broadcasts(ops):
    """A worker that reads nothing (SIGSTOP) while another broadcasts 3.6 MB:
    the sender keeps answering 202, the master keeps answering `status`,
    its queue to the stopped worker stays bounded (messages dropped, said
    in the log), and the stopped worker serves again after SIGCONT."""
    s = ops(workers=2)
    rss0 = vm_rss(s.pid)
    with Conn(s.port) as c:
        wid, pid, _ = whoami(c)
        other = [w["pid"] for w in s.status()["workers"] if w["id"] != wid][0]
        os.kill(other, signal.SIGSTOP)
        try:
            big = "x" * 60000
            for i in range(60):
                body = json.dumps({"data": {"i": i, "pad": big}}).encode()
                c.send(b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                r = c.read_response(timeout=3)
                assert r.status == 202, (i, r)
            t0 = time.monotonic()
            st = s.status()
            assert time.monotonic() - t0 < 5, "the master was slow to answer status"
            assert st["master"]["pid"] == s.pid
            assert wait_for(lambda: "is not reading its channel: message dropped" in s.log(), 3), s.log()[-2000:]
            grown = vm_rss(s.pid) - rss0
            assert grown < 8 * 1024 * 1024, "the master grew by %d bytes queueing for a stopped worker" % grown
            _, pid2, _ = whoami(c)
            assert pid2 == pid
        finally:
            os.kill(other, signal.SIGCONT)

    def other_serves():
        j = short_get(s.port, "/api/broadcast").json()
        return j["pid"] == other and j
    j = wait_for(other_serves, 5, 0.02)
    assert j, "the stopped worker did not serve after SIGCONT"
    got = [m["data"]["i"] for m in j["received"] if m["from"] == wid]
    assert got and got == sorted(got), "delivered out of order or not at all: %s" % got


def test_round_robin_skips_worker_at_max_connections(ops):
    """max_connections 3: a worker holding 3 open connections is skipped;
    new connections all go to the other one until it has room again."""
    s = ops({"schedule": "round_robin", "max_connections": 3}, workers=2)
    conns = [Conn(s.port) for _ in range(6)]
    try:
        by = {}
        for c in conns:
            by.setdefault(whoami(c)[1], []).append(c)
        assert sorted(len(v) for v in by.values()) == [3, 3], {p: len(v) for p, v in by.items()}
        full, free = list(by)
        for c in by[free]:
            c.close()
        def held():
            return {w["pid"]: w["connections"] for w in s.status()["workers"]}

        def gets(want):
            """10 short connections, each once the workers hold `want` again
            (a worker counts a closed connection until it has seen the close)."""
            got = []
            for _ in range(10):
                assert wait_for(lambda: held() == want, 10), (held(), want)
                got.append(short_get(s.port, "/api/broadcast").json()["pid"])
            return got
        got = gets({full: 3, free: 0})
        assert got == [free] * 10, "the worker at max_connections got %d of 10" % got.count(full)
        by[full][0].close()
        got = gets({full: 2, free: 0})
        assert 4 <= got.count(full) <= 6, got
    finally:
        for c in conns:
            c.close()
