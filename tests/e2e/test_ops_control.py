"""Control (issue 5): `cohort status [--json]`, `stop`, one master per
control socket, stale sockets, exit codes; privileges dropped with
user/group; sd_notify; SIGUSR1 reopening the access log."""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from opsutil import (Conn, cohort_test_bin, get, kill_pid, nobody_and_group, notify_socket, ops, ops_bin,  # noqa: F401
                     pid_alive, proc_ids, short_get, wait_for)


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def reaping(s):
    """Reaps the master in a thread while a client waits for it to vanish:
    `cohort stop` polls kill(pid, 0), and an unreaped child of the test
    would look alive to it."""
    t = threading.Thread(target=s.wait_exit, args=(30,), daemon=True)
    t.start()
    return t


def version():
    return subprocess.run([ops_bin(), "--version"], capture_output=True).stdout.decode().split()[1]


# --- status -----------------------------------------------------------------------

def test_status_json_fields(ops):
    s = ops(workers=2)
    t_started = time.monotonic()

    def probe_closed():
        """The status once the readiness probe's connection is closed on the
        server's side too (the client's close reaches a worker a moment later)."""
        st = s.status()
        return st if all(w["connections"] == 0 for w in st["workers"]) else None
    st = wait_for(probe_closed, 5) or s.status()
    assert st["ok"] is True
    m = st["master"]
    assert m["pid"] == s.pid
    assert (m["host"], m["port"], m["schedule"], m["workers"]) == ("127.0.0.1", s.port, "reuseport", 2)
    assert m["version"] == version()
    assert m["reloading"] is False and m["stopping"] is False
    assert m["generation"] == 1 and st["exits"] == []
    assert 0 < m["uptime_s"] < 30
    ws = st["workers"]
    assert [w["id"] for w in ws] == [0, 1]
    assert sorted(w["pid"] for w in ws) == sorted(s.workers())
    for w in ws:
        assert w["state"] == "ready" and w["restarts"] == 0 and w["last_exit"] == "", w
        assert w["generation"] == 1, w
        assert 0 < w["uptime_s"] <= m["uptime_s"] + 0.01, w
        assert w["version"] == m["version"]
        assert w["connections"] == 0 and w["inflight"] == 0, w

    # rss: the worker's own, refreshed once a second
    time.sleep(1.2)
    for w in s.status()["workers"]:
        real = vm_rss(w["pid"])
        assert 0.5 * real <= w["rss"] <= 2 * real, "rss %d, /proc says %d" % (w["rss"], real)

    # requests and connections: 3 kept connections, 5 requests on each
    before = {w["pid"]: w["requests"] for w in s.status()["workers"]}
    conns = [Conn(s.port) for _ in range(3)]
    try:
        for c in conns:
            for _ in range(5):
                c.send(get("/"))
                assert c.read_response().status == 200
        st = s.status()
        assert sum(w["connections"] for w in st["workers"]) == 3, st["workers"]
        assert sum(w["requests"] - before[w["pid"]] for w in st["workers"]) == 15, (before, st["workers"])
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: sum(w["connections"] for w in s.status()["workers"]) == 0, 10)
    assert time.monotonic() - t_started < 20

    # kill -9 worker 0: restarted, counted, reason kept
    s.worker_deaths_ok = True
    victim = ws[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted():
        w0 = s.ready_workers().get(0)
        return w0 if w0 and w0["pid"] != victim else None
    w0 = wait_for(restarted, 5, 0.1)
    assert w0, s.status()
    assert w0["restarts"] == 1, w0
    assert re.search(r"killed by signal 9\b", w0["last_exit"]), w0
    assert w0["uptime_s"] < 5
    w1 = s.ready_workers()[1]
    assert w1["pid"] == ws[1]["pid"] and w1["restarts"] == 0 and w1["last_exit"] == ""
    exits = s.status()["exits"]
    assert len(exits) == 1 and exits[0]["pid"] == victim and exits[0]["id"] == 0, exits
    assert exits[0]["role"] == "serving" and exits[0]["generation"] == 1, exits
    assert exits[0]["exit"].startswith("killed by signal 9"), exits

    # the table
    rc, out, err = s.cli("status")
    assert rc == 0, (rc, out, err)
    lines = out.rstrip("\n").splitlines()
    assert re.match(r"^cohort %s  master pid %d  up \d+s  127\.0\.0\.1:%d  schedule reuseport" % (
        re.escape(version()), s.pid, s.port), lines[0]), lines[0]
    assert re.match(r"^id\s+pid\s+gen\s+state\s+uptime\s+restarts\s+last exit\s+rss\s+conns\s+requests$",
                    lines[1]), lines[1]
    rows = lines[2:lines.index("")]
    assert len(rows) == 2, out
    assert re.match(r"^0\s+%d\s+1\s+ready\s+\d+s\s+1\s+killed by signal 9 \(Killed\)\s+[\d.]+ (MiB|KiB)\s+\d+\s+\d+$"
                    % w0["pid"], rows[0]), rows[0]
    assert re.match(r"^1\s+%d\s+1\s+ready\s+\d+s\s+0\s+-\s+[\d.]+ (MiB|KiB)\s+\d+\s+\d+$" % w1["pid"], rows[1]), rows[1]
    # every exit on a row of its own: the process that exited, its role
    tail = lines[lines.index("") + 1:]
    assert tail[0] == "recent exits (newest first)", out
    assert re.match(r"^id\s+pid\s+gen\s+role\s+ago\s+exit$", tail[1]), tail[1]
    assert re.match(r"^0\s+%d\s+1\s+serving\s+\d+s\s+killed by signal 9 \(Killed\)$" % victim, tail[2]), tail[2]
    assert len(tail) == 3, out


def test_status_shows_crash_loop(ops):
    s = ops({"min_uptime": "1s"}, workers=2)
    s.worker_deaths_ok = True
    keep = s.ready_workers()[0]["pid"]
    away = s.root + ".away"
    os.rename(s.root, away)
    try:
        time.sleep(1.1)  # past min_uptime: the kill itself is not a crash
        os.kill(s.ready_workers()[1]["pid"], signal.SIGKILL)

        def looping():
            rc, out, _ = s.cli("status")
            rows = [l for l in out.splitlines() if re.match(r"^1\s", l)]
            return rows and re.match(r"^1\s+-\s+1\s+crash loop, next try in \d+ s\s", rows[0]) and out
        out = wait_for(looping, 8, 0.05)
        assert out, "no crash loop row in:\n%s\n%s" % (s.cli("status")[1], s.log()[-2000:])
        lines = out.splitlines()
        assert len(lines[:lines.index("")]) == 4, out  # title, header, a row per worker; then the exits
        j = s.status()
        w1 = [w for w in j["workers"] if w["id"] == 1]
        assert len(w1) == 1 and w1[0]["state"] in ("crash_loop", "starting"), j["workers"]
        assert w1[0]["restarts"] >= 2, w1
        assert re.search(r"exited with status [1-9]", w1[0]["last_exit"]), w1
        w0 = [w for w in j["workers"] if w["id"] == 0][0]
        assert w0["pid"] == keep and w0["state"] == "ready"
    finally:
        os.rename(away, s.root)
    assert wait_for(lambda: len(s.ready_workers()) == 2, 40, 0.25), s.status()


# --- stop and the control socket -------------------------------------------

def test_stop_answers_request_in_flight(ops):
    """`cohort stop` with a 1.5 s request in flight: the request is answered
    (200, Connection: close), stop returns 0 once the master is gone."""
    s = ops(workers=2, binary=cohort_test_bin())
    got = {}
    c = Conn(s.port, timeout=10)

    def client():
        try:
            got["r"] = c.read_response()
            got["eof"] = c.sock.recv(1)
        except Exception as e:  # noqa: BLE001
            got["err"] = e
        finally:
            c.close()
    try:
        t_sent = time.monotonic()
        c.send(get("/__test/sleep?ms=4000"))
        assert wait_for(lambda: sum(w["inflight"] for w in s.status()["workers"]) == 1, 3)
        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        reaper = reaping(s)
        rc, out, err = s.cli("stop", timeout=30)
        took = time.monotonic() - t_sent
        reader.join(10)
    finally:
        c.close()
    assert "err" not in got, got
    r = got["r"]
    assert r.status == 200 and r.json() == {"slept": True}, r
    assert r.has_token("Connection", "close"), r.headers
    assert got["eof"] == b"", "the connection stayed open after the answer during a stop"
    assert rc == 0, (rc, out, err)
    assert out.strip() == "stopping\nstopped", out
    reaper.join(5)
    assert s.proc.poll() == 0, "master exit code %s" % s.proc.poll()
    # it waited for the request, and not for the 10 s shutdown_timeout
    assert 4.0 <= took < 9.0, "stop returned %.1f s after a 4 s request was sent" % took
    assert s.reap_workers(2) == [], "workers outlived the master"
    assert not os.path.exists(s.ctl_socket), "the control socket was left behind"
    assert not os.path.exists(s.config["control"]["pid_file"])
    rc, out, err = s.cli("status")
    assert rc == 3, (rc, out, err)


def test_second_instance_refuses_to_start(ops):
    s = ops()
    p = subprocess.run([ops_bin(), "serve", "-c", s.config_path], cwd=s.workdir, capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    text = (p.stdout + p.stderr).decode()
    assert p.returncode != 0, text
    assert "another cohort master (pid %d)" % s.pid in text, text
    assert s.ctl_socket in text.replace("\\/", "/"), text
    # the first one is untouched
    assert s.status()["master"]["pid"] == s.pid
    assert open(s.config["control"]["pid_file"]).read().strip() == str(s.pid)
    assert short_get(s.port).status == 200


def test_stale_socket_file_is_taken_over(ops):
    d = tempfile.mkdtemp(prefix="cohort-ops-", dir="/tmp")
    ops.dirs.append(d)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.path.join(d, "ctl.sock"))
    stale.close()  # the file stays, nothing listens
    s = ops(workdir=d)
    assert s.status()["master"]["pid"] == s.pid


def test_socket_left_by_killed_master_is_taken_over(ops):
    s1 = ops()
    workers = s1.workers()
    s1.proc.kill()
    s1.wait_exit(5)
    assert os.path.exists(s1.ctl_socket)
    # its workers leave on their own when the master's channel closes
    if not wait_for(lambda: not any(pid_alive(p) for p in workers), 5):
        for p in workers:
            kill_pid(p)
    s2 = ops(workdir=s1.workdir, port=s1.port)
    assert s2.status()["master"]["pid"] == s2.pid
    assert open(s2.config["control"]["pid_file"]).read().strip() == str(s2.pid)
    assert short_get(s2.port).status == 200


def test_control_commands_without_master_exit_3(tmp_path):
    sock = str(tmp_path / "none.sock")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"server": {"port": 1}, "control": {"socket": sock}}))
    for cmd in (["status"], ["status", "--json"], ["reload"], ["stop"]):
        p = subprocess.run([ops_bin()] + cmd + ["-c", str(cfg)], capture_output=True, timeout=10)
        assert p.returncode == 3, (cmd, p.returncode, p.stdout, p.stderr)
        assert p.stderr.decode().strip() == "cohort: no master is running on %s" % sock, p.stderr


# --- privileges ----------------------------------------------------------------

def free_low_port():
    ports = list(range(600, 1001))
    random.shuffle(ports)
    for port in ports:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
    pytest.skip("no free port in 600..1000")


def test_workers_run_as_configured_user(ops):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    nobody, group = nobody_and_group()
    port = free_low_port()
    s = ops({"user": "nobody", "group": group.gr_name}, port=port, mode=0o777)
    assert s.port < 1024
    assert proc_ids(s.pid)["Uid"] == [0, 0, 0, 0]

    def check_workers():
        pids = s.ready_pids()
        assert len(pids) == 2
        for pid in pids:
            ids = proc_ids(pid)
            assert ids["Uid"] == [nobody.pw_uid] * 4, "worker %d: %s" % (pid, ids)
            assert ids["Gid"] == [group.gr_gid] * 4, "worker %d: %s" % (pid, ids)
            assert 0 not in ids["Groups"], "worker %d keeps root's groups: %s" % (pid, ids)
        return pids
    pids0 = check_workers()
    for _ in range(5):
        assert short_get(port).status == 200
    # a reload starts workers the same way; `user` cannot change by reload
    cfg = json.loads(json.dumps(s.config))
    cfg["user"] = "daemon"
    s.write_config(cfg)
    rc, out, err = s.cli("reload")
    assert rc == 0 and "2 worker(s) replaced" in out, (rc, out, err)
    assert "user" in out and "left as it was" in out, out
    s.wait_settled()
    assert not set(check_workers()) & set(pids0)
    assert short_get(port).status == 200


# --- sd_notify --------------------------------------------------------------------

def test_sd_notify_ready_reloading_stopping(ops):
    ns, path = notify_socket(ops)
    try:
        s = ops(env={"NOTIFY_SOCKET": path})

        def recv():
            return ns.recv(4096).decode()

        def nothing_more():
            ns.settimeout(0.3)
            try:
                return ns.recv(4096).decode()
            except socket.timeout:
                return None
            finally:
                ns.settimeout(5)
        assert recv() == "READY=1"
        assert nothing_more() is None
        rc, out, err = s.cli("reload")
        assert rc == 0, (rc, out, err)
        assert recv() == "RELOADING=1"
        assert recv() == "READY=1"
        assert nothing_more() is None
        reaper = reaping(s)
        rc, out, err = s.cli("stop")
        assert rc == 0, (rc, out, err)
        assert recv() == "STOPPING=1"
        reaper.join(5)
        assert s.proc.poll() == 0
    finally:
        ns.close()


# --- SIGUSR1 ------------------------------------------------------------------------

def access_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l)["id"] for l in f if l.strip()]


def test_usr1_reopens_access_log_of_reloaded_workers(ops):
    """SIGUSR1 reaches the workers a reload started (not only the first
    ones): after a reload and a move of the file, new requests land in a new
    file at the configured path."""
    # debug: each worker says when it has reopened ("SIGUSR1: logs reopened")
    s = ops({"schedule": "round_robin", "log": {"access": "access.log", "level": "debug"}}, workers=2)
    log = os.path.join(s.workdir, "access.log")

    def hit(rid):
        r = short_get_id(s.port, rid)
        assert r.status == 200

    for i in range(2):
        hit("before-%d" % i)
    assert wait_for(lambda: {"before-0", "before-1"} <= set(access_ids(log)), 3), access_ids(log)
    rc, out, err = s.cli("reload")
    assert rc == 0, (rc, out, err)
    s.wait_settled()
    os.rename(log, log + ".1")
    for i in range(2):
        hit("between-%d" % i)
    assert wait_for(lambda: {"between-0", "between-1"} <= set(access_ids(log + ".1")), 3)
    mark = len(s.log())
    s.signal(signal.SIGUSR1)
    assert wait_for(lambda: s.log()[mark:].count("SIGUSR1: logs reopened") == 2, 5), s.log()[mark:]
    for i in range(4):
        hit("after-%d" % i)
    want = {"after-%d" % i for i in range(4)}
    assert wait_for(lambda: want <= set(access_ids(log)), 3), \
        "new file: %s, moved file: %s" % (access_ids(log), access_ids(log + ".1"))
    assert not want & set(access_ids(log + ".1"))
    assert s.proc.poll() is None and len(s.ready_pids()) == 2


def short_get_id(port, rid):
    from rawhttp import exchange
    return exchange(port, get("/", headers=[("Connection", "close"), ("X-Request-Id", rid)]))


def test_default_control_paths_follow_the_port(ops, tmp_path):
    """Without control.*, the socket and pid file are
    $XDG_RUNTIME_DIR/cohort-<port>.sock|.pid: two instances run side by
    side and `cohort status` with each config finds its own master; the
    socket is mode 0600."""
    run = tempfile.mkdtemp(prefix="cohort-ops-xdg-", dir="/tmp")
    ops.dirs.append(run)
    env = {"XDG_RUNTIME_DIR": run}
    a = ops({"control": None}, env=env)
    b = ops({"control": None}, env=env)
    for s in (a, b):
        sock = os.path.join(run, "cohort-%d.sock" % s.port)
        assert stat_mode(sock) == 0o600, oct(stat_mode(sock))
        assert open(os.path.join(run, "cohort-%d.pid" % s.port)).read().strip() == str(s.pid)
        p = subprocess.run([ops_bin(), "status", "--json", "-c", s.config_path], capture_output=True, timeout=10,
                           env=dict(os.environ, **env))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["master"]["pid"] == s.pid
    # a.stop leaves b's files alone
    reaper = reaping(a)
    p = subprocess.run([ops_bin(), "stop", "-c", a.config_path], capture_output=True, timeout=30,
                       env=dict(os.environ, **env))
    assert p.returncode == 0, p.stderr
    reaper.join(5)
    assert sorted(os.listdir(run)) == ["cohort-%d.pid" % b.port, "cohort-%d.sock" % b.port]


def stat_mode(path):
    import stat
    return stat.S_IMODE(os.stat(path).st_mode)
