"""Helpers for the operations tests (tests/e2e/test_ops_*.py): servers run
from any binary (build/cohort, build/cohort-test or a copy), the control
client (`cohort status|reload|stop`), wrk runs, and which worker answered.

Every server gets its own short work directory under /tmp (Unix socket paths
are limited to 107 bytes) holding its config, its control socket and pid file,
so tests never share a control socket with anything else.
"""
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import conftest
from conftest import Server, clean_env, cohort_bin, deep_merge, finish_all, free_port, pid_alive
from rawhttp import Closed, Conn, exchange, get, wait_for  # noqa: F401 - wait_for for the ops tests

TEST_BIN = os.environ.get("COHORT_TEST_BIN")
_PRIVATE = {}
_PRIVATE_DIR = []


def _private_copy(src):
    """A private copy of a binary, made once per session and checked to run:
    other work in this tree may relink build/cohort while these tests run,
    and a reload starts workers from the binary on disk."""
    if src in _PRIVATE:
        return _PRIVATE[src]
    if not _PRIVATE_DIR:
        d = tempfile.mkdtemp(prefix="cohort-ops-bins-", dir="/tmp")
        os.chmod(d, 0o755)  # workers may run as another user (test_workers_run_as_configured_user)
        _PRIVATE_DIR.append(d)
        import atexit
        atexit.register(shutil.rmtree, d, True)
    dst = os.path.join(_PRIVATE_DIR[0], "%d-%s" % (len(_PRIVATE), os.path.basename(src)))
    last = None
    for _ in range(60):
        try:
            shutil.copy(src, dst)
            os.chmod(dst, 0o755)
            p = subprocess.run([dst, "--version"], capture_output=True, timeout=10)
            if p.returncode == 0 and p.stdout.startswith(b"cohort "):
                _PRIVATE[src] = dst
                return dst
            last = p
        except OSError as e:
            last = e
        time.sleep(1)
    pytest.fail("cannot get a working copy of %s: %r" % (src, last), pytrace=False)


def ops_bin():
    """build/cohort (COHORT_BIN), privately copied."""
    return _private_copy(cohort_bin())


def cohort_test_bin():
    """build/cohort-test (COHORT_TEST_BIN), privately copied."""
    if not TEST_BIN or not os.access(TEST_BIN, os.X_OK):
        pytest.fail("COHORT_TEST_BIN is not set to build/cohort-test", pytrace=False)
    return _private_copy(TEST_BIN)


class OpsServer(Server):
    """A Server started from `binary` (default COHORT_BIN) whose config names
    its own control socket and pid file."""

    def __init__(self, workdir, config, binary=None, env=None, args=()):
        super().__init__(workdir, config, env, args)
        self.binary = binary

    def start(self, ready=True, timeout=20.0):
        self.write_config()
        # `status` through a file that only names the control socket, so it
        # still finds the master while a test has broken the real config
        self.ctl_config_path = os.path.join(self.workdir, "ctl.json")
        with open(self.ctl_config_path, "w") as f:
            json.dump(dict({"server": {"port": self.port}},
                           **({"control": self.config["control"]} if "control" in self.config else {})), f)
        self.errf = open(self.stderr_path, "ab")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([self.binary or ops_bin(), "serve", "-c", self.config_path] + self.args,
                                     cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self.errf,
                                     stderr=self.errf, env=clean_env(self.env))
        conftest._REGISTRY.append(self)
        if ready:
            self.wait_ready(timeout)
        return self

    def write_config(self, config=None, text=None):
        """Writes the config file (atomically: temp name and rename)."""
        if config is not None:
            self.config = config
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text if text is not None else json.dumps(self.config, indent=2) + "\n")
        os.rename(tmp, self.config_path)

    @property
    def ctl_socket(self):
        if "control" in self.config:
            return self.config["control"]["socket"]
        run = (self.env or {}).get("XDG_RUNTIME_DIR") or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
        return os.path.join(run, "cohort-%d.sock" % self.port)

    # --- the control client -------------------------------------------
    def cli(self, *args, timeout=60, binary=None, config=None):
        """Runs `cohort ARGS -c <config>` in the server's directory: (rc, stdout, stderr)."""
        p = subprocess.run([binary or ops_bin()] + list(args) + ["-c", config or self.config_path], cwd=self.workdir,
                           capture_output=True, timeout=timeout, env=clean_env(self.env), stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def status(self):
        rc, out, err = self.cli("status", "--json", timeout=10, config=self.ctl_config_path)
        assert rc == 0, "cohort status --json: rc %d\n%s%s" % (rc, out, err)
        return json.loads(out)

    def ready_workers(self):
        """{worker id: row} of the serving (state ready) workers."""
        return {w["id"]: w for w in self.status()["workers"] if w["state"] == "ready"}

    def ready_pids(self):
        return sorted(w["pid"] for w in self.ready_workers().values())

    def wait_settled(self, n=None, timeout=10):
        """Until n workers (default: config's) are ready and nothing starts or drains."""
        n = n or self.config["workers"]

        def settled():
            st = self.status()
            ws = st["workers"]
            return (not st["master"]["reloading"] and len(ws) == n and all(w["state"] == "ready" for w in ws)
                    and len(self.workers()) == n)
        assert wait_for(settled, timeout, 0.1), "workers did not settle: %s\n%s" % (self.status(), self.log()[-3000:])


def ops_config(workdir, port, overrides=None, workers=2):
    root = os.path.join(workdir, "root")
    os.makedirs(root, exist_ok=True)
    cfg = {
        "server": {"host": "127.0.0.1", "port": port},
        "workers": workers,
        "shutdown_timeout": "10s",
        "routes": [{"path": "/static/*", "handler": "static", "root": root}],
        "control": {"socket": os.path.join(workdir, "ctl.sock"), "pid_file": os.path.join(workdir, "cohort.pid")},
    }
    cfg = deep_merge(cfg, overrides or {})
    if cfg.get("control") is None:  # {"control": None}: the defaults derived from the port
        cfg.pop("control", None)
    return cfg


@pytest.fixture
def ops():
    """Factory: ops(overrides=None, workers=2, binary=None, env=None, ready=True,
    port=None, workdir=None) -> a started OpsServer; each is stopped and checked
    (conftest's Server.finish) afterwards, and its directory removed."""
    started, dirs = [], []

    def start(overrides=None, workers=2, binary=None, env=None, ready=True, port=None, workdir=None, mode=None):
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="cohort-ops-", dir="/tmp")
            dirs.append(workdir)
        if mode is not None:
            os.chmod(workdir, mode)
        cfg = ops_config(workdir, port or free_port(), overrides, workers)
        s = OpsServer(workdir, cfg, binary, env)
        s.root = cfg["routes"][0].get("root") if cfg.get("routes") else None
        started.append(s)
        return s.start(ready=ready)

    start.dirs = dirs
    yield start
    try:
        finish_all(started)
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# --- wrk --------------------------------------------------------------------

class Wrk:
    """`wrk -t1 -cN -dS URL` in the background; .result() waits and parses."""

    def __init__(self, port, path="/", connections=32, seconds=6, threads=1, extra=()):
        self.cmd = ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--timeout", "10s"] + \
            list(extra) + ["http://127.0.0.1:%d%s" % (port, path)]
        self.seconds = seconds
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.t0 = time.monotonic()
        self.out = None

    def stop(self):
        """Kills wrk by pid if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def result(self):
        if self.out is None:
            try:
                out, _ = self.proc.communicate(timeout=self.seconds + 20)
            except subprocess.TimeoutExpired:
                self.stop()
                raise AssertionError("wrk did not end")
            self.out = out.decode("utf-8", "replace")
        o = self.out
        assert self.proc.returncode == 0, "wrk failed (%s):\n%s" % (self.proc.returncode, o)
        m = re.search(r"(\d+) requests in", o)
        assert m, "no request count in wrk's output:\n" + o
        res = {"requests": int(m.group(1)), "non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0,
               "text": o}
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", o)
        if m:
            res["non2xx"] = int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", o)
        if m:
            res.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)),
                       timeout=int(m.group(4)))
        res["socket_errors"] = res["connect"] + res["read"] + res["write"] + res["timeout"]
        return res

    def elapsed(self):
        return time.monotonic() - self.t0


def assert_no_failures(res, what):
    assert res["requests"] > 0
    assert res["non2xx"] == 0 and res["socket_errors"] == 0, \
        "%s: %d non-2xx, socket errors connect %d read %d write %d timeout %d over %d requests\n%s" % (
            what, res["non2xx"], res["connect"], res["read"], res["write"], res["timeout"], res["requests"],
            res["text"])


@pytest.fixture
def wrk():
    """Factory for Wrk runs; every one still running is killed at teardown."""
    runs = []

    def start(*a, **kw):
        w = Wrk(*a, **kw)
        runs.append(w)
        return w
    yield start
    for w in runs:
        w.stop()


# --- who answered -------------------------------------------------------------

def whoami(conn):
    """GET /api/broadcast on a kept connection: (worker id, pid, received)."""
    conn.send(get("/api/broadcast"))
    r = conn.read_response()
    assert r.status == 200, r
    j = r.json()
    return j["worker"], j["pid"], j["received"]


def short_get(port, path="/", timeout=5):
    """One request on a new connection with Connection: close."""
    return exchange(port, get(path, headers=[("Connection", "close")]), timeout=timeout)


def proc_ids(pid):
    """{'Uid': [real, eff, saved, fs], 'Gid': [...], 'Groups': [...]} from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                out[k] = [int(x) for x in v.split()]
    return out


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def parallel(fn, items, threads=8):
    """Runs fn(item) over items in `threads` threads; returns (results, errors)."""
    items = list(items)
    lock = threading.Lock()
    results, errors = [], []
    idx = [0]

    def run():
        while True:
            with lock:
                if idx[0] >= len(items):
                    return
                it = items[idx[0]]
                idx[0] += 1
            try:
                r = fn(it)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported by the caller
                with lock:
                    errors.append("%s: %r" % (it, e))
    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return results, errors


def master_lines(log, pattern):
    return [l for l in log.splitlines() if re.search(pattern, l)]


def queue_on_frozen_worker(port, conns, n=24, answer_within=0.1):
    """With one worker stopped (SIGSTOP) under schedule reuseport: opens n
    connections to port, each sending one GET, appended to conns (the caller
    closes them). Reads each answer for answer_within seconds: those answered
    must be 200; the rest, queued on the frozen worker's socket, are returned
    and must not be none."""
    for _ in range(n):
        c = Conn(port, timeout=5)
        c.send(get("/", headers=[("Connection", "close")]))
        conns.append(c)
    time.sleep(0.3)
    pending = []
    for c in conns:
        try:
            assert c.read_response(timeout=answer_within).status == 200
        except TimeoutError:
            pending.append(c)
    assert pending, "no connection landed on the frozen worker's socket (of %d)" % n
    return pending


def notify_socket(ops):
    """A datagram socket standing in for systemd's NOTIFY_SOCKET, in a work
    directory the ops fixture removes; reads time out after 5 s. Returns
    (socket, path); the caller closes the socket."""
    d = tempfile.mkdtemp(prefix="cohort-ops-n-", dir="/tmp")
    ops.dirs.append(d)
    path = os.path.join(d, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(5)
    return ns, path


def nobody_and_group():
    """The user nobody (a pwd entry) and the group to run it with (a grp
    entry): nogroup where there is one, else nobody's own group."""
    nobody = pwd.getpwnam("nobody")
    try:
        group = grp.getgrnam("nogroup")
    except KeyError:
        group = grp.getgrgid(nobody.pw_gid)
    return nobody, group
