"""The health checker process (issue 11, item 5): the active health checks
run in a child of the master that runs as `user`, never in the master,
which stays root. The backend here finds which process holds the other end
of each check's connection (the socket's inode in /proc/net/tcp, then the
process whose descriptors include it) and that process's uid. The checker
is listed by `cohort status`, restarted when killed, replaced on reload
when the checked groups change, and not started when no group has checks."""
import json
import os
import pwd
import signal
import socketserver
import subprocess
import sys
import threading
import time

import pytest

import conftest
from opsutil import kill_pid, nobody_and_group, ops, proc_ids, short_get, wait_for  # noqa: F401 (fixture)

HC_PATH = "/hc"


def socket_inode(local_port, remote_port):
    """The inode of the 127.0.0.1 TCP socket local_port -> remote_port."""
    want_local = "0100007F:%04X" % local_port
    want_remote = "0100007F:%04X" % remote_port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                return fields[9]
    return None


def socket_owner(inode, pids):
    """Which of `pids` has socket:[inode] open."""
    target = "socket:[%s]" % inode
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                    return pid
            except (FileNotFoundError, PermissionError):
                continue
    return None


class Backend:
    """An HTTP/1.1 server in this process: every path answers `status` (GET
    /hc: `hc_status`); each GET /hc is recorded as (time, owner pid, owner
    uid) of the connection's other end, looked up among the master and its
    children while the checker waits for the answer."""

    def __init__(self):
        self.hc_status = 200
        self.master = None
        self.checks = []
        self.lock = threading.Lock()
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(4096)
                while self.rfile.readline(4096) not in (b"\r\n", b"\n", b""):
                    pass
                is_check = line.startswith(b"GET " + HC_PATH.encode() + b" ")
                if is_check:
                    backend.record(self.client_address[1])
                status = backend.hc_status if is_check else 200
                self.wfile.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" % status)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, peer_port):
        owner = uid = None
        if self.master:
            inode = socket_inode(peer_port, self.port)
            pids = [self.master] + conftest.children_of(self.master)
            owner = socket_owner(inode, pids) if inode else None
            if owner:
                try:
                    uid = proc_ids(owner)["Uid"]
                except FileNotFoundError:
                    pass
        with self.lock:
            self.checks.append((time.monotonic(), owner, uid))

    def checks_since(self, t):
        with self.lock:
            return [c for c in self.checks if c[0] >= t]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


def lb_config(backend, health=True, user=None):
    g = {"servers": ["127.0.0.1:%d" % backend.port], "passive": {"failures": 0}}
    if health:
        g["health"] = {"path": HC_PATH, "interval": "300ms", "timeout": "3s", "fall": 2, "rise": 1}
    cfg = {"app": "none", "upstreams": {"app": g}, "routes": [{"path": "/*", "handler": "proxy", "upstream": "app"}]}
    if user:
        cfg["user"], cfg["group"] = user
    return cfg


def checker_row(s):
    return s.status()["checker"]


def running_checker(s, other_than=None, timeout=15):
    """Waits for a running checker (another than `other_than`); its status row."""
    row = {}

    def ready():
        row.clear()
        row.update(checker_row(s) or {})
        return row.get("state") == "running" and row.get("pid") not in (0, None, other_than)
    assert wait_for(ready, timeout, 0.1), "no running checker: %s\n%s" % (s.status(), s.log()[-2000:])
    return dict(row)


def wait_checks_by(backend, pid, since, n=3, timeout=15):
    """Waits for n checks after `since` whose connection `pid` held; returns them all."""
    assert wait_for(lambda: len([c for c in backend.checks_since(since) if c[1] == pid]) >= n, timeout, 0.1), \
        "no checks from pid %d: %s" % (pid, backend.checks_since(since)[-5:])
    return backend.checks_since(since)


def test_checks_run_as_user_in_the_checker(ops, backend):
    if os.geteuid() != 0:
        pytest.skip("needs root: the checker's user is nobody")
    nobody, group = nobody_and_group()
    s = ops(lb_config(backend, user=("nobody", group.gr_name)), workers=2, mode=0o777)
    s.worker_deaths_ok = True  # the test kills the checker, which logs "restarting"
    backend.master = s.pid
    assert proc_ids(s.pid)["Uid"] == [0, 0, 0, 0], "the master stays root"

    row = running_checker(s)
    pid = row["pid"]
    assert row["user"] == "nobody" and row["restarts"] == 0, row
    ids = proc_ids(pid)
    assert ids["Uid"] == [nobody.pw_uid] * 4 and ids["Gid"] == [group.gr_gid] * 4, ids
    assert 0 not in ids["Groups"], "the checker keeps root's groups: %s" % ids
    assert s.checkers() == [pid] and pid not in s.workers() and len(s.workers()) == 2
    rc, out, err = s.cli("status")
    assert rc == 0 and "health checker  pid %d  user nobody  running" % pid in out, (out, err)

    # every check's connection is held by the checker, running as nobody
    t0 = time.monotonic()
    checks = wait_checks_by(backend, pid, t0)
    for when, owner, uid in checks:
        assert owner == pid and uid == [nobody.pw_uid] * 4, \
            "a check from pid %s (uid %s), not the checker %d; the master is %d" % (owner, uid, pid, s.pid)

    # its verdicts reach the workers through the master: down, then up again
    assert short_get(s.port).status == 200
    backend.hc_status = 503
    assert wait_for(lambda: short_get(s.port).status == 503, 10, 0.1), s.log()[-2000:]
    assert short_get(s.port).json() == {"error": "no healthy upstream"}
    backend.hc_status = 200
    assert wait_for(lambda: short_get(s.port).status == 200, 10, 0.1), s.log()[-2000:]

    # killed, it is started again and the checks go on from the new one
    kill_pid(pid, signal.SIGKILL)
    row = running_checker(s, other_than=pid)
    assert row["restarts"] == 1 and "signal 9" in row["last_exit"] and row["user"] == "nobody", row
    t1 = time.monotonic()
    checks = wait_checks_by(backend, row["pid"], t1)
    assert {c[1] for c in checks} == {row["pid"]}, checks
    assert proc_ids(row["pid"])["Uid"] == [nobody.pw_uid] * 4
    assert "health checker (pid %d) killed by signal 9" % pid in s.log()


def test_checker_follows_the_config(ops, backend):
    """Not started without checks; started, kept or replaced by reload as the
    checked groups say; stopped when none has checks; gone after stop."""
    s = ops(lb_config(backend, health=False), workers=1)
    assert checker_row(s) is None and s.checkers() == []
    assert short_get(s.port).status == 200

    def reload(cfg):
        s.write_config(conftest.deep_merge(s.config, cfg) if cfg else None)
        rc, out, err = s.cli("reload")
        assert rc == 0 and "reloaded" in out, (rc, out, err)

    s.config = conftest.deep_merge(s.config, lb_config(backend))
    reload(None)
    first = running_checker(s)
    assert first["restarts"] == 0 and first["user"] == pwd.getpwuid(os.getuid()).pw_name, first
    assert wait_for(lambda: s.checkers() == [first["pid"]], 5, 0.1), s.checkers()

    # a change that is not about the checks keeps it
    reload({"upstreams": {"app": {"retries": 1}}})
    assert checker_row(s)["pid"] == first["pid"]

    # another interval: another checker, and the first one goes
    reload({"upstreams": {"app": {"health": {"interval": "400ms"}}}})
    second = running_checker(s, other_than=first["pid"])
    assert wait_for(lambda: s.checkers() == [second["pid"]], 10, 0.1), s.checkers()
    assert "the checked groups changed; replacing it" in s.log()

    # no checks any more: no checker
    cfg = json.loads(json.dumps(s.config))
    del cfg["upstreams"]["app"]["health"]
    s.config = cfg
    reload(None)
    assert checker_row(s) is None
    assert wait_for(lambda: s.checkers() == [], 10, 0.1), s.checkers()
    assert short_get(s.port).status == 200


def test_host_names_resolve_outside_root(tmp_path):
    """An upstream host name is resolved at config load by a child running
    as nobody, never by the root process that loads the config: in a
    network and mount namespace of its own, a DNS server here sees which
    process asks."""
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, and a loader that is root")
    nobody = pwd.getpwnam("nobody")
    cfg_path = tmp_path / "cohort.json"
    cfg_path.write_text(json.dumps({"app": "none", "upstreams": {"app": {"servers": ["backend.cohort-test:8123"]}},
                                    "routes": [{"path": "/*", "handler": "proxy", "upstream": "app"}]}))
    probe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dnsprobe.py")
    p = subprocess.run(["unshare", "--net", "--mount", sys.executable, probe, conftest.cohort_bin(), str(cfg_path),
                        "backend.cohort-test", str(tmp_path)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(p.stdout)
    assert r["rc"] == 0, r
    assert json.loads(r["stdout"])["upstreams"]["app"]["servers"][0]["address"] == "127.0.0.9:8123", r["stdout"]
    assert r["queries"], "the name was not looked up through DNS: %s" % r
    for q in r["queries"]:
        assert q["pid"] not in (None, r["pid"]) and q["uid"] == [nobody.pw_uid] * 4, \
            "a DNS query from pid %s (uid %s); the loader, root, is %d" % (q["pid"], q["uid"], r["pid"])
