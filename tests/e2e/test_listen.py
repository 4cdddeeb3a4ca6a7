"""Listeners (issue 13, `listen`): several at once -- 127.0.0.1:P1,
[::1]:P2 and a Unix socket given relative to the config file -- served
under every schedule mode; the Unix socket's mode, its removal on stop, a
stale socket file replaced and a live one refused; a bad address exits 78
naming its key; the default control socket and pid file named after the
first listener; every listener kept across `cohort reload` and `cohort
upgrade`."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import clean_env, free_port
from opsutil import kill_pid, ops, ops_bin, pid_alive, wait_for  # noqa: F401 - ops is a fixture
from test_ops_upgrade import adopted, upgrade  # noqa: F401 - adopted is a fixture

SCHEDULES = ["reuseport", "shared", "round_robin", "least_loaded"]
SOCK = "l.sock"  # relative to the config file's folder


def fetch(where, path="/health", timeout=5.0):
    """One GET on a new connection (Connection: close) to ("4", port),
    ("6", port) or ("unix", path): (status, body)."""
    kind, addr = where
    fam = {"4": socket.AF_INET, "6": socket.AF_INET6, "unix": socket.AF_UNIX}[kind]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect({"4": ("127.0.0.1", addr), "6": ("::1", addr), "unix": addr}[kind])
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def assert_clean_stop(s):
    """The master exited 0 and no worker died of a signal or an error."""
    assert s.stop() == 0, s.log()[-3000:]
    bad = [l for l in s.log().splitlines() if "killed by signal" in l or re.search(r"exited with status [1-9]", l)]
    assert not bad, bad


def worker_of(where):
    status, body = fetch(where, "/api/broadcast")
    assert status == 200, (where, status, body)
    return json.loads(body)["worker"]


def three(p1, p2, mode="0640"):
    return [{"address": "127.0.0.1:%d" % p1}, {"address": "[::1]:%d" % p2},
            {"address": "unix:" + SOCK, "mode": mode}]


def targets(s, p1, p2):
    return [("4", p1), ("6", p2), ("unix", os.path.join(s.workdir, SOCK))]


def all_serve(where_list, n=4):
    for where in where_list:
        for _ in range(n):
            status, body = fetch(where)
            assert status == 200, (where, status, body)


def start_three(ops, schedule="reuseport", mode="0640", workers=2, extra=None):
    """A server on 127.0.0.1:P1 (also server.port, which the harness polls),
    [::1]:P2 and unix:l.sock."""
    p1, p2 = free_port(), free_port()
    over = {"schedule": schedule, "listen": three(p1, p2, mode)}
    over.update(extra or {})
    s = ops(over, workers=workers, port=p1)
    return s, p1, p2


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_three_listeners_served_under_every_schedule(ops, schedule):
    """Each listener answers on new connections; with round_robin and
    least_loaded the master hands Unix and IPv6 connections to both
    workers; the Unix socket has the configured mode, the access log writes
    "unix:" for its clients, and the file is gone once the server stopped."""
    log = tempfile.mktemp(prefix="cohort-listen-access-", dir="/tmp")
    s, p1, p2 = start_three(ops, schedule, extra={"log": {"access": log}})
    try:
        where = targets(s, p1, p2)
        all_serve(where)
        path = where[2][1]
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
        if schedule == "round_robin":
            for w in where:
                seen = {worker_of(w) for _ in range(6)}
                assert seen == {0, 1}, (w, seen)
        elif schedule == "least_loaded":
            for w in where:  # nothing in flight between them: ties go in turn
                assert {worker_of(w) for _ in range(6)} == {0, 1}, w
        assert wait_for(lambda: '"client":"unix:"' in open(log).read(), 5, 0.05), open(log).read()[-2000:]
        assert '"client":"::1"' in open(log).read()
        assert_clean_stop(s)
        assert not os.path.exists(path), "the Unix socket's file outlived the server"
    finally:
        if os.path.exists(log):
            os.unlink(log)


def test_stale_socket_file_is_replaced_and_a_live_one_refused(ops):
    """A socket file nobody accepts on (left by a dead process) is replaced;
    one that a live process accepts on makes the start fail, and its file
    is left alone."""
    workdir = tempfile.mkdtemp(prefix="cohort-ops-", dir="/tmp")
    ops.dirs.append(workdir)
    path = os.path.join(workdir, SOCK)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # its file stays: stale
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    p1, p2 = free_port(), free_port()
    s = ops({"listen": three(p1, p2)}, port=p1, workdir=workdir)
    all_serve([("unix", path)])
    assert_clean_stop(s)
    assert not os.path.exists(path)

    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(4)
    try:
        p = subprocess.run([ops_bin(), "serve", "-c", s.config_path], cwd=workdir, capture_output=True,
                           timeout=30, env=clean_env(None), stdin=subprocess.DEVNULL)
        assert p.returncode != 0
        assert b"cannot listen on unix:%s: a live process accepts on it" % path.encode() in p.stderr, p.stderr
        assert stat.S_ISSOCK(os.stat(path).st_mode), "the live socket's file was removed"
    finally:
        live.close()
        os.unlink(path)


@pytest.mark.parametrize("cmd", ["check-config", "serve"])
def test_bad_listener_exits_78_naming_file_line_column_and_key(tmp_path, cmd):
    cfg = tmp_path / "c.json"
    p1 = free_port()
    cfg.write_text('{"server": {"port": %d},\n "listen": [{"address": "127.0.0.1:%d"},\n'
                   '   {"address": "::1:8080"}]}\n' % (p1, p1))
    p = subprocess.run([ops_bin(), cmd, "-c", str(cfg)], capture_output=True, timeout=30, env=clean_env(None),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert (b'c.json:3:16: listen[1].address: "::1:8080" is not host:port (an IPv6 address is written in '
            b'brackets: "[::1]:8080")') in p.stderr, p.stderr
    cfg.write_text('{"listen": [{"address": "unix:x.sock", "mod": "0600"}]}\n')
    p = subprocess.run([ops_bin(), cmd, "-c", str(cfg)], capture_output=True, timeout=30, env=clean_env(None),
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert b"c.json:1:40: listen[0].mod: unknown key (did you mean mode?)" in p.stderr, p.stderr


def test_control_socket_and_pid_file_named_after_the_first_listener(ops):
    """With listen set, server.port is not bound and does not name the
    files: a first Unix listener does ("cohort-l-HASH"), and `cohort status`
    finds the master by the same rule."""
    workdir = tempfile.mkdtemp(prefix="cohort-ops-", dir="/tmp")
    ops.dirs.append(workdir)
    p0, p1 = free_port(), free_port()
    env = {"XDG_RUNTIME_DIR": workdir}
    s = ops({"control": None, "listen": [{"address": "unix:" + SOCK}, {"address": "127.0.0.1:%d" % p1}]},
            port=p0, workdir=workdir, env=env, ready=False)
    assert wait_for(lambda: "serving http+unix:" in s.log(), 20, 0.05), s.log()[-3000:]
    all_serve([("unix", os.path.join(workdir, SOCK)), ("4", p1)])
    names = sorted(n for n in os.listdir(workdir) if n.startswith("cohort-"))
    assert len(names) == 2 and names[0].startswith("cohort-l-") and names[0].endswith(".pid") and \
        names[1] == names[0][:-4] + ".sock", names
    with open(os.path.join(workdir, names[0])) as f:
        assert int(f.read()) == s.proc.pid
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p0), timeout=2).close()  # server.port is not bound
    rc, out, err = s.cli("status", "--json")
    assert rc == 0, (rc, out, err)
    assert [l["address"] for l in json.loads(out)["master"]["listen"]] == \
        ["unix:" + os.path.realpath(os.path.join(workdir, SOCK)), "127.0.0.1:%d" % p1]
    assert_clean_stop(s)
    assert not os.path.exists(os.path.join(workdir, SOCK))
    assert [n for n in os.listdir(workdir) if n.startswith("cohort-")] == []

    # a first TCP listener: cohort-PORT, its port, not server.port's
    s2 = ops({"control": None, "listen": [{"address": "127.0.0.1:%d" % p1}]}, port=p0, workdir=workdir,
             env=env, ready=False)
    assert wait_for(lambda: os.path.exists(os.path.join(workdir, "cohort-%d.sock" % p1)), 20, 0.05), s2.log()
    assert wait_for(lambda: os.path.exists(os.path.join(workdir, "cohort-%d.pid" % p1)), 20, 0.05)
    assert not os.path.exists(os.path.join(workdir, "cohort-%d.sock" % p0))


@pytest.mark.parametrize("schedule", ["reuseport", "round_robin"])
def test_listeners_survive_reload(ops, schedule):
    """A reload replaces the workers and every listener keeps serving; a
    reload that changes `listen` keeps the running listeners and says so."""
    s, p1, p2 = start_three(ops, schedule)
    where = targets(s, p1, p2)
    before = s.ready_pids()
    rc, out, err = s.cli("reload")
    assert rc == 0, (rc, out, err)
    s.wait_settled()
    assert not set(s.ready_pids()) & set(before)
    all_serve(where)
    cfg = dict(s.config)
    cfg["listen"] = [{"address": "127.0.0.1:%d" % free_port()}]
    s.write_config(cfg)
    rc, out, err = s.cli("reload")
    assert rc == 0 and "listen: left as it was" in out + err, (rc, out, err)
    s.wait_settled()
    all_serve(where)
    assert os.path.exists(where[2][1])


@pytest.mark.parametrize("schedule", ["reuseport", "shared", "round_robin"])
def test_listeners_survive_upgrade(ops, adopted, schedule):
    """`cohort upgrade`: the new master inherits every listener's sockets;
    all serve after the old master has gone, the Unix socket's file stays
    (the old master's stop does not remove it), and the new master's stop
    does."""
    s, p1, p2 = start_three(ops, schedule)
    where = targets(s, p1, p2)
    old = s.proc.pid
    rc, ans, err = upgrade(s, adopted)
    assert rc == 0, (rc, ans, err, s.log()[-3000:])
    new = ans["pid"]
    assert wait_for(lambda: s.proc.poll() is not None, 30, 0.05), "the old master did not exit"
    assert not pid_alive(old)
    all_serve(where)
    assert os.path.exists(where[2][1])
    st = s.status()
    assert st["master"]["pid"] == new and len(st["master"]["listen"]) == 3, st["master"]
    kill_pid(new, signal.SIGTERM)
    assert wait_for(lambda: not pid_alive(new), 20, 0.05)
    assert not os.path.exists(where[2][1])


def test_upgrade_with_another_listener_fails_and_the_old_master_serves(ops, adopted):
    """Listeners are handed over as they are: a new config with another
    listener fails the upgrade (it needs a restart), and the old master
    goes on serving every listener it had."""
    s, p1, p2 = start_three(ops)
    where = targets(s, p1, p2)
    cfg = dict(s.config)
    cfg["listen"] = cfg["listen"] + [{"address": "127.0.0.1:%d" % free_port()}]
    s.write_config(cfg)
    rc, ans, err = upgrade(s, adopted)
    assert rc == 1 and "listen (or server.host, server.port) differs" in ans["message"], (rc, ans)
    assert s.status()["master"]["pid"] == s.proc.pid
    all_serve(where)
