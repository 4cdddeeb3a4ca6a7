"""Limits: 10,000 concurrent keep-alive connections on 2 workers, and a
flood of connections past a low open-files limit that never makes a worker
spin or crash.

C10K needs, on the test's side and the server's: an open-files limit above
10,000 (the master raises its own to the hard limit), local ports for 10,000
connections (net.ipv4.ip_local_port_range, 28,000 by default) and an accept
queue that absorbs the opening burst (server.backlog up to
net.core.somaxconn, 4096 by default). docs/operations.md says the same."""
import os
import resource
import selectors
import signal
import socket
import subprocess
import time

import pytest

from conftest import clean_env, cohort_bin, free_port
from rawhttp import exchange, get, wait_for

REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
RESP_END = b"Hello World\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        pytest.fail("this machine's open-files hard limit %d is below %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def open_many(port, n, deadline):
    """n connected, non-blocking sockets (connects overlap)."""
    socks = []
    while len(socks) < n:
        assert time.monotonic() < deadline, "only %d connections opened in time" % len(socks)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def round_trip(socks, deadline):
    """Sends GET / on every socket and reads every answer; returns how many
    complete 200 answers came back."""
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE, s)
        state[s] = [REQ, b""]
    done = 0
    while state and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.data
            out, got = state[s]
            try:
                if ev & selectors.EVENT_WRITE and out:
                    sent = s.send(out)
                    state[s][0] = out = out[sent:]
                    if not out:
                        sel.modify(s, selectors.EVENT_READ, s)
                elif ev & selectors.EVENT_READ:
                    chunk = s.recv(4096)
                    assert chunk, "the server closed a kept-alive connection"
                    got += chunk
                    state[s][1] = got
                    if got.endswith(RESP_END):
                        assert got.startswith(b"HTTP/1.1 200 "), got[:40]
                        sel.unregister(s)
                        del state[s]
                        done += 1
            except BlockingIOError:
                pass
    sel.close()
    return done


def test_c10k_keepalive(cohort):
    n = 10000
    raise_nofile(n + 1000)
    s = cohort(overrides={"server": {"backlog": 4096}, "timeouts": {"keepalive": "60s"}}, workers=2)
    deadline = time.monotonic() + 60
    socks = open_many(s.port, n, deadline)
    try:
        assert round_trip(socks, deadline) == n
        # every one is a live keep-alive connection: a second round on all
        assert round_trip(socks, deadline) == n
        st = wait_for(lambda: sum(1 for _ in s.workers()) == 2 and s.workers(), 2)
        assert st, s.log()
    finally:
        for so in socks:
            so.close()
    assert exchange(s.port, get("/")).status == 200


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def worker_pids(master):
    out = []
    for t in os.listdir("/proc/%d/task" % master):
        with open("/proc/%d/task/%s/children" % (master, t)) as f:
            out += [int(p) for p in f.read().split()]
    return sorted(out)


def test_fd_exhaustion_neither_spins_nor_crashes(tmp_path):
    """The server runs with 256 open files at most; 1,500 connections held
    open by the test exhaust it. Its workers must neither spin (CPU stays
    low while the flood waits) nor die, and once the flood ends it serves
    again."""
    raise_nofile(4000)
    port = free_port()
    cfg = tmp_path / "cohort.json"
    cfg.write_text('{"server": {"host": "127.0.0.1", "port": %d}, "workers": 2, '
                   '"control": {"socket": "%s/c.sock", "pid_file": "%s/c.pid"}}' % (port, tmp_path, tmp_path))
    errf = open(tmp_path / "stderr", "wb")
    proc = subprocess.Popen(["sh", "-c", 'ulimit -Sn 256 && ulimit -Hn 256 && exec "$0" serve -c "$1"',
                             cohort_bin(), str(cfg)], cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=errf, stderr=errf, env=clean_env())
    flood = []
    try:
        assert wait_for(lambda: "serving http://" in (tmp_path / "stderr").read_text(), 10)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2
        deadline = time.monotonic() + 20
        flood = open_many(port, 1500, deadline)
        time.sleep(1.0)
        before = sum(cpu_ticks(w) for w in workers)
        time.sleep(3.0)
        used = (sum(cpu_ticks(w) for w in workers) - before) / os.sysconf("SC_CLK_TCK")
        assert used < 0.6, "workers used %.2f s of CPU in 3 s while out of descriptors" % used
        assert worker_pids(proc.pid) == workers, "a worker died under the flood"
        for so in flood:
            so.close()
        flood = []
        ok = wait_for(lambda: _serves(port), 15, step=0.2)
        assert ok, (tmp_path / "stderr").read_text()[-3000:]
        assert worker_pids(proc.pid) == workers
    finally:
        for so in flood:
            so.close()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        errf.close()
    assert rc == 0, (tmp_path / "stderr").read_text()[-3000:]


def _serves(port):
    try:
        return all(exchange(port, get("/"), timeout=2).status == 200 for _ in range(20))
    except (OSError, TimeoutError, Exception):
        return False
