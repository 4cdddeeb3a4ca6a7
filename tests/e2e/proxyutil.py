"""Helpers of the load balancer's end-to-end tests (test_proxy*.py).

`pybackend(port, name)` starts tests/e2e/pybackend.py (stopped by pid at
the end of the test); `balancer(upstreams, ...)` starts `cohort serve` with a
config whose one route proxies every path to the group "app", waits until
it serves, and returns the conftest Server (stopped and checked by pid at
the end: exit 0, no sanitizer report, no worker death); `rawbackend(handler)`
starts a server scripted by the test (a RawBackend: threads on a free port,
stopped at the end of the test).
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import conftest
import rawhttp

HERE = os.path.dirname(os.path.abspath(__file__))


class PyBackend:
    def __init__(self, port, name, workdir):
        self.port, self.name = port, name
        self.log_path = os.path.join(str(workdir), "pybackend-%s.log" % name)
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "pybackend.py"), str(self.port), self.name],
                                     stdout=self.logf, stderr=self.logf, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                rawhttp.exchange(self.port, rawhttp.get("/count"), timeout=1)
                return self
            except (OSError, rawhttp.Closed, TimeoutError):
                time.sleep(0.05)
        raise AssertionError("pybackend %s did not start" % self.name)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def count(self, path=None):
        """Requests seen: all but /count, /conns and /health; or those for `path`."""
        target = "/count" if path is None else "/count?path=" + path
        return int(rawhttp.exchange(self.port, rawhttp.get(target)).body)

    def conns(self):
        """Connections accepted so far, this one asking included."""
        return int(rawhttp.exchange(self.port, rawhttp.get("/conns")).body)


@pytest.fixture
def pybackend(tmp_path):
    started = []

    def start(name, port=None):
        b = PyBackend(port or conftest.free_port(), name, tmp_path).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()
        b.logf.close()


class RawBackend:
    """A server written in the test: a thread accepts on a free port of
    127.0.0.1 and a thread per connection reads each request head and calls
    `handler(conn, head)`, which writes what it likes and returns True to
    read the next request on that connection (False closes it; `reset`
    closes with an RST). `heads` holds every request head seen."""

    def __init__(self, handler):
        self.handler = handler
        self.heads = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            c.settimeout(30)
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self.lock:
                    self.heads.append(head)
                if not self.handler(c, head):
                    return
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def paths(self):
        with self.lock:
            return [h.split(b" ")[1].decode() for h in self.heads]

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.thread.join(5)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def reset(conn):
    """Closes a connection with an RST (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    return False


def answer(conn, status=200, body=b"ok"):
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                 % (status, len(body), body))
    return True


@pytest.fixture
def rawbackend():
    """rawbackend(handler) -> a started RawBackend, stopped at the end."""
    started = []

    def start(handler):
        b = RawBackend(handler)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def group(servers, **kw):
    """An upstream group: servers are "host:port" strings or dicts."""
    g = {"servers": servers}
    g.update(kw)
    return g


def balancer_config(port, upstreams, workers=2, admin_port=None, extra=None):
    cfg = {
        "server": {"host": "127.0.0.1", "port": port},
        "workers": workers,
        "app": "none",
        "shutdown_timeout": "10s",
        "log": {"access": "stderr", "stats_interval": "0s"},
        "upstreams": upstreams,
        "routes": [{"path": "/*", "handler": "proxy", "upstream": "app"}],
    }
    if admin_port:
        cfg["admin"] = {"port": admin_port}
    if extra:
        cfg = conftest.deep_merge(cfg, extra)
    return cfg


@pytest.fixture
def balancer(tmp_path):
    """balancer(group_dict, workers=2, admin=True, extra=None) -> Server with
    .admin_port, started and serving."""
    started = []

    def start(app_group, workers=2, admin=True, extra=None, env=None):
        d = tmp_path / ("lb%d" % len(started))
        d.mkdir()
        port = conftest.free_port()
        admin_port = conftest.free_port() if admin else None
        cfg = balancer_config(port, {"app": app_group}, workers, admin_port, extra)
        s = conftest.Server(d, cfg, env)
        s.admin_port = admin_port
        started.append(s)
        s.start(ready=False)
        wait_serving(s)
        return s

    yield start
    conftest.finish_all(started)


def wait_serving(s, timeout=20.0):
    deadline = time.monotonic() + timeout
    while "serving http://" not in s.log():
        if s.proc.poll() is not None:
            raise AssertionError("cohort exited with %s:\n%s" % (s.proc.returncode, s.log()))
        if time.monotonic() > deadline:
            raise AssertionError("cohort did not start:\n%s" % s.log())
        time.sleep(0.05)
    s.workers()


def stats(s):
    """The balancer's /stats (admin listener)."""
    return json.loads(rawhttp.exchange(s.admin_port, rawhttp.get("/stats")).body)


def servers(s):
    return {u["name"]: u for u in stats(s)["upstreams"]}


def access_lines(s):
    out = []
    for line in s.log().splitlines():
        if line.startswith("{") and '"upstream"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


# Under ASan, freed memory waits in a quarantine (256 MiB by default) before
# it is reused, which a test of flat memory would measure; a small one keeps
# the sanitizer's checks and the RSS meaningful.
SMALL_QUARANTINE = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                           "quarantine_size_mb=1",
                                                           "thread_local_quarantine_size_kb=64"]))}


def cohort_backend(cohort, workers=1, port=None):
    """A `cohort serve` backend (the application server: GET /, /health, ...)."""
    over = {"log": {"stats_interval": "0s"}}
    if port:
        over["server"] = {"port": port}
    return cohort(over, workers=workers)
