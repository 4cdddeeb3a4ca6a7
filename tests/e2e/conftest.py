"""Fixtures that run the real cohort binary on a free port.

`cohort` (function scope) is a factory: cohort(config_overrides, workers=2)
writes <tmp>/cohort.json, starts `COHORT_BIN serve -c <tmp>/cohort.json` with
cwd = <tmp>, waits until every worker is up and GET /health answers, and on
teardown stops it by pid (SIGTERM, wait, SIGKILL if it lingers) and checks
that it exited 0, that its workers are gone and that no worker died
unexpectedly. The server's stderr goes to <tmp>/cohort.stderr and is added
to the report of any failing test.
"""
import copy
import json
import os
import re
import signal as sig_mod
import socket
import subprocess
import time

import pytest

import rawhttp

BIN = os.environ.get("COHORT_BIN")
_REGISTRY = []  # every Server started in this session


def cohort_bin():
    if not BIN:
        pytest.fail("COHORT_BIN is not set: run through `make e2e` or set it to build/cohort", pytrace=False)
    if not os.access(BIN, os.X_OK):
        pytest.fail("COHORT_BIN=%s is not an executable" % BIN, pytrace=False)
    return BIN


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST", "WORKERS", "COHORT_ENV", "REDIS_URL")}
    if extra:
        env.update(extra)
    return env


def rss_kib(pid):
    """A process's resident memory (VmRSS) in KiB; None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pid_alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(")") + 2]
    return state not in ("Z", "X")


def children_of(pid):
    """Direct children of a process, from /proc/<pid>/task/*/children."""
    kids = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return []
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return sorted(p for p in set(kids) if pid_alive(p))


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except FileNotFoundError:
        return []


def is_checker(pid):
    """A master's child that is its health checker (`cohort __checker`), not a worker."""
    cl = cmdline(pid)
    return len(cl) > 1 and cl[1] == b"__checker"


SANITIZER_RE = re.compile(r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: \w+Sanitizer)")


class Server:
    def __init__(self, workdir, config, env=None, args=()):
        self.workdir = str(workdir)
        self.args = list(args)
        self.config = config
        self.port = config["server"]["port"]
        self.config_path = os.path.join(self.workdir, "cohort.json")
        self.stderr_path = os.path.join(self.workdir, "cohort.stderr")
        self.env = env
        self.proc = None
        self.rc = None
        self.t_start = None
        self.t_end = None
        self.seen_workers = set()
        # checks made on teardown; a test that provokes these turns them off
        self.expect_exit = 0
        self.worker_deaths_ok = False

    # --- life cycle ---------------------------------------------------
    def start(self, ready=True, timeout=20.0):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.errf = open(self.stderr_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([cohort_bin(), "serve", "-c", self.config_path] + self.args, cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf,
                                     env=clean_env(self.env))
        _REGISTRY.append(self)
        if ready:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=20.0):
        """Until the master announced that all workers are up and /health
        answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.rc = self.proc.returncode
                raise AssertionError("cohort exited with %s before serving:\n%s" % (self.rc, self.log()))
            if "serving http://" in self.log():
                try:
                    r = rawhttp.exchange(self.port, rawhttp.get("/health"), timeout=2)
                    if r.status == 200:
                        break
                except (OSError, rawhttp.Closed, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError("cohort not ready in %.0f s:\n%s" % (timeout, self.log()))
            time.sleep(0.05)
        self.workers()

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def workers(self):
        """The master's live workers: its children but the health checker."""
        if self.proc.poll() is not None:
            return []
        kids = children_of(self.pid)
        self.seen_workers.update(kids)  # the checker too: teardown checks that none lingers
        return [p for p in kids if not is_checker(p)]

    def checkers(self):
        """The master's live health checker processes (a replaced one may linger a moment)."""
        if self.proc.poll() is not None:
            return []
        kids = children_of(self.pid)
        self.seen_workers.update(kids)
        return [p for p in kids if is_checker(p)]

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.t_end is None:
            self.t_end = time.monotonic()
        return self.rc

    def stop(self, sig=sig_mod.SIGTERM, timeout=None):
        """Stops by pid; returns the exit code (negative: killed by a signal).
        SIGKILLs the master if it lingers (and then the code is -9)."""
        if self.proc.poll() is not None:
            self.wait_exit(0)
            return self.rc
        self.workers()
        if timeout is None:
            timeout = 15.0
        self.signal(sig)
        if self.wait_exit(timeout) is None:
            self.proc.kill()
            self.wait_exit(10)
        return self.rc

    def reap_workers(self, timeout=5.0):
        """Waits for every worker ever seen to be gone; SIGKILLs (by pid)
        those that linger and returns their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.seen_workers):
            time.sleep(0.05)
        lingering = [p for p in self.seen_workers if pid_alive(p) and self._is_ours(p)]
        for p in lingering:
            try:
                os.kill(p, sig_mod.SIGKILL)
            except ProcessLookupError:
                pass
        return lingering

    def _is_ours(self, pid):
        cl = cmdline(pid)
        return len(cl) > 1 and cl[1] in (b"__worker", b"__checker")

    def finish(self):
        """Teardown: stop, then the checks. Returns a list of problems."""
        problems = []
        if self.proc is None:
            return problems
        running = self.proc.poll() is None
        rc = self.stop()
        lingering = self.reap_workers()
        self.errf.close()
        log = self.log()
        if running and self.expect_exit is not None and rc != self.expect_exit:
            problems.append("cohort exited with %s on SIGTERM, expected %s" % (rc, self.expect_exit))
        if lingering:
            problems.append("workers %s outlived the master" % lingering)
        if SANITIZER_RE.search(log):
            problems.append("sanitizer report in the server's stderr")
        # a fault signal is a crash of ours whatever the test did (tests kill
        # with KILL, TERM or STOP, never these)
        faults = [l for l in log.splitlines()
                  if re.search(r"killed by signal (4|6|7|8|11) ", l)]
        if faults:
            problems.append("a process crashed: %s" % faults[0])
        if not self.worker_deaths_ok:
            deaths = [l for l in log.splitlines() if "restarting" in l]
            if deaths:
                problems.append("a worker died unexpectedly: %s" % deaths[0])
        if running and self.expect_exit == 0:
            # a clean stop: every worker left with status 0
            stop_at = log.find("stopping gracefully")
            bad = [l for l in log[max(stop_at, 0):].splitlines()
                   if re.search(r"worker \d+ \(pid \d+\) (drained and )?(killed by signal|exited with status [1-9])", l)]
            if bad:
                problems.append("a worker did not stop cleanly: %s" % bad[0])
        return problems


def base_config(port, root):
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "workers": 2,
        "shutdown_timeout": "10s",
        "routes": [{"path": "/static/*", "handler": "static", "root": str(root)}],
    }


def make_server(workdir, overrides=None, workers=2, env=None, args=()):
    """A Server (not started) in workdir with a static root workdir/root."""
    root = os.path.join(str(workdir), "root")
    os.makedirs(root, exist_ok=True)
    cfg = base_config(free_port(), root)
    cfg["workers"] = workers
    if overrides:
        cfg = deep_merge(cfg, overrides)
    s = Server(workdir, cfg, env, args)
    s.root = root
    return s


def finish_all(servers):
    problems = []
    for s in servers:
        problems += s.finish()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def cohort(tmp_path):
    """Factory: cohort(overrides=None, workers=2, ready=True, files=None)
    returns a started Server. `files` maps paths under the static root to
    bytes."""
    started = []

    def start(overrides=None, workers=2, ready=True, files=None, env=None, args=()):
        d = tmp_path / ("srv%d" % len(started))
        d.mkdir()
        s = make_server(d, overrides, workers, env, args)
        for name, data in (files or {}).items():
            p = os.path.join(s.root, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        started.append(s)
        return s.start(ready=ready)

    yield start
    finish_all(started)


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    """For module-scoped servers: start(overrides, workers, files)."""
    started = []

    def start(overrides=None, workers=2, files=None):
        d = tmp_path_factory.mktemp("cohort")
        s = make_server(d, overrides, workers)
        for name, data in (files or {}).items():
            p = os.path.join(s.root, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        started.append(s)
        return s.start()

    yield start
    finish_all(started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    t0 = getattr(item, "_cohort_t0", None)
    for s in _REGISTRY:
        if s.t_end is not None and t0 is not None and s.t_end < t0:
            continue
        text = s.log()
        if len(text) > 20000:
            text = "...\n" + text[-20000:]
        rep.sections.append(("cohort stderr (%s, port %d)" % (s.stderr_path, s.port), text))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._cohort_t0 = time.monotonic()
