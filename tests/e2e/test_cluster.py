"""The master and its workers: supervision, signals, schedules, the command
line and config errors."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import cohort_bin, clean_env, cmdline, finish_all, make_server, pid_alive
from rawhttp import Closed, Conn, ProtocolError, exchange, get, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- load clients ---------------------------------------------------------

class Load:
    """Client threads doing keep-alive GET / in a loop, bounded by time and
    count. Classifies every request by what came back."""

    def __init__(self, port, threads, seconds, max_requests=50000):
        self.port = port
        self.t_end = time.monotonic() + seconds
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.ok_times = []          # monotonic time of each full 200
        self.failures = []          # partial responses, wrong answers
        self.clean_closes = 0       # closed by the server before any byte
        self.resets_before = 0      # reset before any byte of a response
        self.refused = 0
        self.stopping = threading.Event()  # set once the server is being stopped
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(timeout=max(1.0, self.t_end - time.monotonic() + 10))
        assert not any(t.is_alive() for t in self.threads), "load thread stuck"

    def fail(self, what):
        with self.lock:
            self.failures.append(what)

    def run(self):
        conn = None
        n = 0
        while time.monotonic() < self.t_end and n < self.max_requests:
            if conn is None:
                try:
                    conn = Conn(self.port, timeout=5)
                except ConnectionRefusedError:
                    with self.lock:
                        self.refused += 1
                    if self.stopping.is_set():
                        return  # the server is gone: done
                    time.sleep(0.01)
                    continue
                except ConnectionResetError as e:
                    if not self.stopping.is_set():
                        self.fail("connect: %r" % e)
                    else:
                        # queued by the kernel, then reset when the last listening
                        # socket closed, before this thread came back from connect()
                        with self.lock:
                            self.resets_before += 1
                    time.sleep(0.01)
                    continue
                except OSError as e:
                    self.fail("connect: %r" % e)
                    time.sleep(0.01)
                    continue
            n += 1
            try:
                conn.send(get("/"))
            except OSError:
                # the server closed the connection before reading this
                with self.lock:
                    self.clean_closes += 1
                conn.close()
                conn = None
                continue
            try:
                r = conn.read_response(timeout=5)
            except Closed as e:
                if e.partial:
                    self.fail("cut off after %d response bytes (%s): %r" % (
                        len(e.partial), "reset" if e.reset else "closed", e.partial[:80]))
                else:
                    with self.lock:
                        if e.reset:
                            self.resets_before += 1
                        else:
                            self.clean_closes += 1
                conn.close()
                conn = None
                continue
            except (TimeoutError, ProtocolError) as e:
                self.fail("%s: %s" % (type(e).__name__, e))
                conn.close()
                conn = None
                continue
            if r.status != 200 or r.body != b"Hello World\n":
                self.fail("wrong answer %r" % r)
            else:
                with self.lock:
                    self.ok_times.append(time.monotonic())
            if r.has_token("Connection", "close"):
                conn.close()
                conn = None
        if conn:
            conn.close()

    def summary(self):
        return "ok=%d failures=%d clean_closes=%d resets_before=%d refused=%d" % (
            len(self.ok_times), len(self.failures), self.clean_closes, self.resets_before, self.refused)


def assert_serves(port, n=20):
    """n requests, each on a new connection, all answered."""
    for _ in range(n):
        r = exchange(port, get("/"), timeout=5)
        assert r.status == 200 and r.body == b"Hello World\n"


# --- workers ----------------------------------------------------------------

def test_workers_are_the_masters_children(cohort):
    s = cohort(workers=3)
    kids = wait_for(lambda: len(s.workers()) == 3 and s.workers(), 5)
    assert kids and len(kids) == 3, s.workers()
    for k in kids:
        cl = cmdline(k)
        assert os.path.realpath(cl[0].decode()) == os.path.realpath(cohort_bin()), cl
        assert cl[1] == b"__worker", cl
    # they stay 3: no worker restarts while idle
    time.sleep(0.5)
    assert s.workers() == kids
    assert_serves(s.port, 10)


def test_workers_flag_overrides_config(cohort):
    s = cohort(workers=1, args=["-w", "3"])
    assert len(wait_for(lambda: len(s.workers()) == 3 and s.workers(), 5) or []) == 3
    assert "with 3 workers" in s.log()


def test_workers_env_overrides_config(cohort):
    s = cohort(workers=1, env={"WORKERS": "2"})
    assert len(wait_for(lambda: len(s.workers()) == 2 and s.workers(), 5) or []) == 2


def test_kill_9_worker_under_load(cohort):
    s = cohort(workers=2)
    s.worker_deaths_ok = True
    before = s.workers()
    assert len(before) == 2
    load = Load(s.port, threads=4, seconds=4).start()
    time.sleep(1.0)
    victim = before[0]
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: (lambda w: len(w) == 2 and victim not in w and w)(s.workers()), 10)
    t_replaced = time.monotonic()
    assert replaced, "no replacement worker within 10 s: %s" % s.workers()
    assert before[1] in replaced, "the other worker was disturbed"
    load.join()
    # the server kept answering during and after the kill
    after = [t for t in load.ok_times if t > t_replaced]
    assert len(after) > 50, load.summary()
    assert len(load.ok_times) > 200, load.summary()
    # a killed worker's clients may see resets, but nobody gets a wrong answer
    wrong = [f for f in load.failures if f.startswith("wrong answer")]
    assert not wrong, wrong[:3]
    assert_serves(s.port, 40)
    log = s.log()
    assert re.search(r"worker \d+ \(pid %d\) killed by signal 9\b" % victim, log), log
    assert re.search(r"worker \d+ started \(pid %d\)" % (set(replaced) - set(before)).pop(), log), log
    assert t_replaced - t_kill < 5, "replaced %.1f s after the kill" % (t_replaced - t_kill)
    assert "restarting in" not in log, "a worker that ran over min_uptime is restarted at once, not backed off"
    print(load.summary())


def test_kill_9_worker_connections_queued_meanwhile(cohort):
    """reuseport: connections made while a worker is gone are served by its
    replacement (the master keeps the socket)."""
    s = cohort(workers=2, overrides={"schedule": "reuseport"})
    s.worker_deaths_ok = True
    victim = s.workers()[0]
    os.kill(victim, signal.SIGKILL)
    # immediately: new connections, some hashed to the dead worker's socket
    assert_serves(s.port, 30)


def test_worker_that_exits_is_restarted(cohort):
    """A worker stopped by itself (SIGTERM to the worker, not the master)
    drains, exits 0, and the master starts another."""
    s = cohort(workers=2)
    s.worker_deaths_ok = True
    victim = s.workers()[0]
    os.kill(victim, signal.SIGTERM)
    new = wait_for(lambda: (lambda w: len(w) == 2 and victim not in w and w)(s.workers()), 10)
    assert new, s.log()
    assert re.search(r"worker \d+ \(pid %d\) exited with status 0" % victim, s.log()), s.log()
    assert_serves(s.port, 20)


def test_workers_exit_when_master_is_killed(cohort):
    s = cohort(workers=2)
    kids = s.workers()
    assert len(kids) == 2
    s.proc.kill()
    s.wait_exit(5)
    gone = wait_for(lambda: not any(pid_alive(k) for k in kids), 5)
    assert gone, "workers %s outlived the master by 5 s" % [k for k in kids if pid_alive(k)]
    with pytest.raises(ConnectionRefusedError):
        Conn(s.port, timeout=2)


def test_workers_finish_requests_when_master_is_killed(cohort):
    """An orphaned worker still answers the request it was reading."""
    s = cohort(workers=1, overrides={"timeouts": {"body": "10s"}})
    kids = s.workers()
    with Conn(s.port, timeout=5) as c:
        c.send(get("/health"))
        assert c.read_response().status == 200  # a worker has the connection
        c.send(get("/health", headers=[("Content-Length", "4")]) + b"ab")
        time.sleep(0.3)
        s.proc.kill()
        s.wait_exit(5)
        time.sleep(0.3)
        c.send(b"cd")
        r = c.read_response()
        assert r.status == 200
        assert r.has_token("Connection", "close")
    assert wait_for(lambda: not any(pid_alive(k) for k in kids), 5)


# --- graceful stop ----------------------------------------------------------

@pytest.mark.parametrize("schedule", ["reuseport", "shared"])
def test_graceful_stop_under_load(cohort, schedule):
    s = cohort(workers=2, overrides={"shutdown_timeout": "5s", "schedule": schedule})
    kids = s.workers()
    load = Load(s.port, threads=8, seconds=8).start()
    time.sleep(1.5)
    before_stop = len(load.ok_times)
    load.stopping.set()
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    rc = s.wait_exit(5 + 2)
    elapsed = time.monotonic() - t0
    load.join()
    assert rc == 0, "exit %s after SIGTERM\n%s" % (rc, s.log())
    assert elapsed < 5, elapsed
    assert before_stop > 100, load.summary()
    assert not load.failures, "%s\n%s" % (load.summary(), "\n".join(load.failures[:10]))
    assert not any(pid_alive(k) for k in kids)
    log = s.log()
    assert re.search(r"stopping gracefully", log)
    for k in kids:
        assert re.search(r"worker \d+ \(pid %d\) (drained and )?exited with status 0" % k, log), log
    print(load.summary())


@pytest.mark.parametrize("sig,name", [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "Interrupt"),
                                      (signal.SIGQUIT, "Quit")])
def test_stop_signals(cohort, sig, name):
    s = cohort(workers=2)
    kids = s.workers()
    with Conn(s.port) as idle:
        idle.send(get("/"))
        assert idle.read_response().status == 200
        t0 = time.monotonic()
        s.signal(sig)
        rc = s.wait_exit(12)
        assert rc == 0, "exit %s after %s\n%s" % (rc, name, s.log())
        # an idle keep-alive connection does not hold the stop until shutdown_timeout (10 s)
        assert time.monotonic() - t0 < 8
        gone, extra = idle.wait_closed(1)
        assert gone and extra == b""
    assert not any(pid_alive(k) for k in kids)
    assert re.search(r"%s: stopping gracefully" % name, s.log()), s.log()
    with pytest.raises(ConnectionRefusedError):
        Conn(s.port, timeout=2)


def stalled_request(port):
    """A request whose body never completes: in flight until timeouts.body.
    A whole request first, so that a worker has taken the connection."""
    c = Conn(port, timeout=10)
    c.send(get("/health"))
    assert c.read_response().status == 200
    c.send(get("/health", headers=[("Content-Length", "10")]) + b"abc")
    return c


def test_in_flight_request_finishes_during_stop(cohort):
    s = cohort(workers=1, overrides={"timeouts": {"body": "20s"}, "shutdown_timeout": "10s"})
    with stalled_request(s.port) as c:
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert s.proc.poll() is None, "the master did not wait for a request in flight"
        # new connections are refused meanwhile
        with pytest.raises(OSError):
            with Conn(s.port, timeout=2) as c2:
                c2.send(get("/"))
                c2.read_response()
        c.send(b"defghij")
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert r.has_token("Connection", "close")
    assert s.wait_exit(5) == 0


def test_second_signal_stops_at_once(cohort):
    s = cohort(workers=2, overrides={"timeouts": {"body": "30s"}, "shutdown_timeout": "20s"})
    kids = s.workers()
    conns = [stalled_request(s.port) for _ in range(4)]
    try:
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert s.proc.poll() is None, "the master did not wait for requests in flight"
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        rc = s.wait_exit(8)
        assert rc is not None, "a second SIGTERM did not stop the master at once"
        assert rc >= 0, "the master died of signal %d" % -rc
        assert time.monotonic() - t0 < 8, "not at once: shutdown_timeout is 20 s, the body timeout 30 s"
        assert wait_for(lambda: not any(pid_alive(k) for k in kids), 10), "workers survive a second SIGTERM"
        assert "second" in s.log()
    finally:
        for c in conns:
            c.close()


def test_shutdown_timeout_kills_stragglers(cohort):
    s = cohort(workers=1, overrides={"timeouts": {"body": "30s"}, "shutdown_timeout": "2s"})
    kids = s.workers()
    with stalled_request(s.port):
        time.sleep(0.3)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        rc = s.wait_exit(2 + 3)
        elapsed = time.monotonic() - t0
        assert rc is not None, "still running %.1f s after a 2 s shutdown_timeout" % elapsed
        assert rc == 0, s.log()
        assert 1.5 <= elapsed <= 2 + 1.5, elapsed
    assert not any(pid_alive(k) for k in kids)
    assert "shutdown_timeout reached" in s.log()


# --- schedules ----------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["reuseport", "shared"])
def test_schedules_serve(cohort, schedule):
    s = cohort(workers=2, overrides={"schedule": schedule})
    assert "schedule %s" % schedule in s.log()
    assert len(s.workers()) == 2
    assert_serves(s.port, 40)
    load = Load(s.port, threads=4, seconds=3.0).start()
    load.join()
    assert len(load.ok_times) > 50 and not load.failures, load.summary()


@pytest.mark.parametrize("schedule", ["reuseport", "shared"])
def test_schedules_survive_worker_kill(cohort, schedule):
    s = cohort(workers=2, overrides={"schedule": schedule})
    s.worker_deaths_ok = True
    victim = s.workers()[1]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(s.workers()) == 2 and victim not in s.workers(), 10)
    assert_serves(s.port, 30)


# --- crash loop ---------------------------------------------------------------

def test_crash_loop_backs_off(cohort):
    """A worker that cannot start (its static root is gone) is restarted with
    growing delays, not in a tight loop; once the cause is gone it serves."""
    s = cohort(workers=1, overrides={"min_uptime": "1s"})
    s.worker_deaths_ok = True
    root = s.root
    first = s.workers()[0]
    moved = root + ".away"
    os.rename(root, moved)
    os.kill(first, signal.SIGKILL)
    cpu0 = proc_cpu_seconds(s.pid)
    time.sleep(3.0)
    cpu = proc_cpu_seconds(s.pid) - cpu0
    log = s.log()
    delays = [int(d) for d in re.findall(r"crash loop\?\); restarting in (\d+) ms", log)]
    assert 2 <= len(delays) <= 8, "restarts in 3 s: %d\n%s" % (len(delays), log)
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert cpu < 0.5, "the master spent %.2f s CPU in 3 s of crash loop" % cpu
    os.rename(moved, root)
    def serving():
        w = s.workers()
        if len(w) != 1 or w[0] == first:
            return False
        try:
            return exchange(s.port, get("/health"), timeout=2).status == 200
        except (OSError, Closed, TimeoutError):
            return False

    ok = wait_for(serving, 2 * delays[-1] / 1000 + 3, step=0.2)
    assert ok, s.log()


def test_stop_during_crash_loop(cohort):
    """SIGTERM while workers are waiting to be restarted: the master stops
    at once and cleanly, starting nothing more."""
    s = cohort(workers=2)
    s.worker_deaths_ok = True
    os.rename(s.root, s.root + ".away")
    for w in s.workers():
        os.kill(w, signal.SIGKILL)
    assert wait_for(lambda: "crash loop?); restarting in 200 ms" in s.log(), 3), s.log()
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait_exit(8) == 0, s.log()
    assert time.monotonic() - t0 < 5, "not at once"
    assert "started" not in s.log().split("stopping gracefully")[1]


def test_workers_zero_means_cpus(cohort):
    s = cohort(workers=0)
    n = min(len(os.sched_getaffinity(0)), 64)
    assert len(wait_for(lambda: len(s.workers()) == n and s.workers(), 5) or []) == n, s.workers()
    assert "with %d workers" % n in s.log()


# --- command line and config --------------------------------------------------

def run_cli(args, cwd, timeout=10, env=None):
    p = subprocess.run([cohort_bin()] + args, cwd=cwd, capture_output=True, timeout=timeout,
                       env=clean_env(env), stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def write_json_text(path, text):
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("text,pattern", [
    ('{\n  "server": {\n    "host": "127.0.0.1",\n    "port": 70000\n  }\n}\n',
     r"^cohort: bad\.json:4:13: server\.port: 70000 is out of range 1\.\.65535$"),
    ('{\n  "server": {\n    "prot": 3000\n  }\n}\n',
     r"^cohort: bad\.json:3:5: server\.prot: unknown key \(did you mean server\.port\?\)$"),
    ('{\n  "schedule": "fast"\n}\n', r"^cohort: bad\.json:2:15: schedule: .*fast.*reuseport, shared"),
    ('{\n  "timeouts": {"header": "10x"}\n}\n', r"^cohort: bad\.json:2:26: timeouts\.header: .*10x.*duration"),
    ('{\n  "workers": 2,\n  "x": [1,\n}\n', r"^cohort: bad\.json:\d+:\d+: "),
    ('{\n  "routes": [{"path": "/s/*", "handler": "static"}]\n}\n', r"^cohort: bad\.json:2:\d+: routes\[0\]"),
], ids=["port-range", "unknown-key", "bad-enum", "bad-duration", "bad-json", "route-no-root"])
@pytest.mark.parametrize("cmd", ["serve", "check-config"])
def test_bad_config_exits_78(tmp_path, text, pattern, cmd):
    write_json_text(tmp_path / "bad.json", text)
    rc, out, err = run_cli([cmd, "-c", "bad.json"], tmp_path)
    assert rc == 78, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


def test_missing_config_file_exits_78(tmp_path):
    rc, out, err = run_cli(["serve", "-c", "nope.json"], tmp_path)
    assert rc == 78
    assert "nope.json" in err


def test_bad_env_value_exits_78(tmp_path):
    write_json_text(tmp_path / "c.json", "{}")
    rc, out, err = run_cli(["serve", "-c", "c.json"], tmp_path, env={"PORT": "abc"})
    assert rc == 78
    assert re.search(r"PORT.*server\.port.*abc", err), err


def test_bad_flag_value_exits_78(tmp_path):
    write_json_text(tmp_path / "c.json", "{}")
    rc, out, err = run_cli(["serve", "-c", "c.json", "-p", "70000"], tmp_path)
    assert rc == 78
    assert re.search(r"command line: server\.port: 70000 is out of range", err), err


def test_check_config_prints_effective_config(tmp_path):
    write_json_text(tmp_path / "c.json", '{"server": {"port": 4321}, "timeouts": {"header": 0.25}}')
    rc, out, err = run_cli(["check-config", "-c", "c.json", "-w", "3"], tmp_path)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["server"]["port"] == 4321
    assert doc["workers"] == 3
    assert doc["timeouts"]["header"] == "250ms"


def test_port_in_use_fails(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        write_json_text(tmp_path / "c.json", json.dumps({"server": {"host": "127.0.0.1", "port": port},
                                                        "workers": 1}))
        rc, out, err = run_cli(["serve", "-c", "c.json"], tmp_path)
        assert rc == 1, (rc, err)
        assert "cannot listen on 127.0.0.1:%d" % port in err, err
    finally:
        busy.close()


@pytest.mark.parametrize("args,usage", [
    (["serve", "--bogus"], "usage: cohort serve"),
    (["serve", "-p"], "usage: cohort serve"),
    (["serve", "stray"], "usage: cohort serve"),
    (["check-config", "--nope"], "usage: cohort check-config"),
    (["--bogus"], "usage: cohort <command>"),
    (["frobnicate"], "usage: cohort <command>"),
    ([], "usage: cohort <command>"),
])
def test_bad_usage_exits_2(tmp_path, args, usage):
    rc, out, err = run_cli(args, tmp_path)
    assert rc == 2, (rc, out, err)
    assert usage in err, err
    assert out == ""


@pytest.mark.parametrize("args,expect", [
    (["--help"], "usage: cohort <command>"),
    (["-h"], "usage: cohort <command>"),
    (["serve", "--help"], "usage: cohort serve"),
    (["check-config", "--help"], "usage: cohort check-config"),
])
def test_help_exits_0(tmp_path, args, expect):
    rc, out, err = run_cli(args, tmp_path)
    assert rc == 0, (rc, err)
    assert expect in out
    assert err == ""


def test_version(tmp_path):
    with open(os.path.join(REPO, "VERSION")) as f:
        version = f.read().strip()
    for flag in ("--version", "-V"):
        rc, out, err = run_cli([flag], tmp_path)
        assert rc == 0
        assert out.strip() == "cohort %s" % version


def test_serve_does_not_depend_on_repo_cwd(tmp_path):
    """Started with cwd = a temp dir and only -c: it serves, with a static
    root given relative to that cwd."""
    s = make_server(tmp_path, {"routes": [{"path": "/files/*", "handler": "static", "root": "files"}]})
    os.makedirs(os.path.join(s.workdir, "files"))
    with open(os.path.join(s.workdir, "files", "a.txt"), "wb") as f:
        f.write(b"relative root\n")
    try:
        s.start()
        assert os.getcwd() != s.workdir
        r = exchange(s.port, get("/files/a.txt"))
        assert r.status == 200 and r.body == b"relative root\n"
    finally:
        finish_all([s])
