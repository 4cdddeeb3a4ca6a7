"""Paths in config files: a relative path is taken from the folder of the
file that wrote it, whatever the working directory; `check-config` prints
absolute paths; `serve` and `check-config` refuse a static root that is
missing, not a folder or not readable by the workers (exit 78, the file's
line and column and the key), and a reload refuses one too."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import conftest
from conftest import Server, clean_env, cohort_bin, finish_all, free_port
from opsutil import ops  # noqa: F401 - fixture
from rawhttp import exchange, get, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run_cli(args, cwd, timeout=20):
    p = subprocess.run([cohort_bin()] + args, cwd=cwd, capture_output=True, timeout=timeout,
                       env=clean_env(), stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class FileServer(Server):
    """`cohort serve -c FILE -p PORT` with the file as written (not one the
    test rewrote) and the working directory given."""

    def __init__(self, workdir, config_file, cwd):
        port = free_port()
        super().__init__(workdir, {"server": {"port": port}}, None, ["-p", str(port), "-w", "1"])
        self.config_path = config_file
        self.cwd = cwd

    def start(self, ready=True, timeout=20.0):
        self.errf = open(self.stderr_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([cohort_bin(), "serve", "-c", self.config_path] + self.args, cwd=self.cwd,
                                     stdin=subprocess.DEVNULL, stdout=self.errf, stderr=self.errf, env=clean_env())
        conftest._REGISTRY.append(self)
        if ready:
            self.wait_ready(timeout)
        return self


def effective(args, cwd):
    rc, out, err = run_cli(["check-config"] + args, cwd)
    assert rc == 0, (rc, err)
    return json.loads(out)


# --- resolving -----------------------------------------------------------------

def test_default_config_serves_the_repositorys_public_folder(tmp_path):
    """config/default.json's "../public" is the repository's public/, from the
    repository (as `make run`) and from any other working directory."""
    public = os.path.realpath(os.path.join(REPO, "public"))
    default = os.path.join(REPO, "config", "default.json")
    with open(default) as f:
        assert json.load(f)["routes"][0]["root"] == "../public"
    assert effective([], REPO)["routes"][0]["root"] == public
    assert effective(["-c", default], str(tmp_path))["routes"][0]["root"] == public
    assert effective(["-c", os.path.relpath(default, str(tmp_path))], str(tmp_path))["routes"][0]["root"] == public

    s = FileServer(tmp_path, default, str(tmp_path))
    try:
        s.start()
        with open(os.path.join(public, "hello.txt"), "rb") as f:
            want = f.read()
        r = exchange(s.port, get("/static/hello.txt"))
        assert r.status == 200 and r.body == want, (r.status, r.body[:200])
    finally:
        finish_all([s])


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path):
    app = str(tmp_path / "app")
    elsewhere = str(tmp_path / "elsewhere")
    os.makedirs(os.path.join(app, "logs"))
    os.makedirs(elsewhere)
    write(os.path.join(app, "www", "a.txt"), "from www\n")
    write(os.path.join(app, "config", "c.json"), json.dumps({
        "routes": [{"path": "/files/*", "handler": "static", "root": "../www"}],
        "store": {"path": "../data/shop.db"},
        "log": {"access": "../logs/access.log"},
    }, indent=2))
    conf = os.path.join("..", "app", "config", "c.json")

    doc = effective(["-c", conf], elsewhere)
    assert doc["routes"][0]["root"] == os.path.join(app, "www")
    assert doc["store"]["path"] == os.path.join(app, "data", "shop.db")
    assert doc["log"]["access"] == os.path.join(app, "logs", "access.log")
    assert doc["log"]["error"] == "stderr"

    s = FileServer(tmp_path, conf, elsewhere)
    try:
        s.start()
        r = exchange(s.port, get("/files/a.txt"))
        assert r.status == 200 and r.body == b"from www\n", (r.status, r.body[:200])
        assert os.path.exists(os.path.join(app, "data", "shop.db")), os.listdir(app)
    finally:
        finish_all([s])
    with open(os.path.join(app, "logs", "access.log")) as f:
        assert "/files/a.txt" in f.read()
    assert os.listdir(elsewhere) == [], "nothing is written relative to the working directory"


# --- static roots that cannot be served ------------------------------------------

MISSING = '{\n  "routes": [\n    {"path": "/s/*", "handler": "static", "root": "../nowhere"}\n  ]\n}\n'


def refused(cmd, conf, cwd, pattern_tail):
    """Runs cmd; it must exit 78 with one line naming file:line:col and the key."""
    port = free_port()
    t0 = time.monotonic()
    rc, out, err = run_cli([cmd, "-c", conf, "-p", str(port)], cwd)
    assert rc == 78, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    want = "cohort: %s:3:51: routes[0].root: %s" % (conf, pattern_tail)
    assert lines[0] == want, "\n got: %s\nwant: %s" % (lines[0], want)
    assert time.monotonic() - t0 < 10
    with socket.socket() as c:  # serve never bound the port
        assert c.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("cmd", ["serve", "check-config"])
def test_missing_root_exits_78(tmp_path, cmd):
    write(str(tmp_path / "conf" / "c.json"), MISSING)
    os.makedirs(str(tmp_path / "other"))
    refused(cmd, "../conf/c.json", str(tmp_path / "other"),
            '"../nowhere" (%s) does not exist' % (tmp_path / "nowhere"))


@pytest.mark.parametrize("cmd", ["serve", "check-config"])
def test_root_that_is_a_file_exits_78(tmp_path, cmd):
    write(str(tmp_path / "conf" / "c.json"), MISSING)
    write(str(tmp_path / "nowhere"), "a file, not a folder\n")
    refused(cmd, "conf/c.json", str(tmp_path), '"../nowhere" (%s) is not a folder' % (tmp_path / "nowhere"))


@pytest.fixture
def open_dir():
    """A folder under /tmp that any user may enter (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="cohort-paths-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    os.chmod(d, 0o755)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("cmd", ["serve", "check-config"])
def test_unreadable_root_exits_78(open_dir, cmd):
    """As root: not readable by `user` (the workers'); otherwise by this user."""
    if os.geteuid() == 0:
        text = MISSING.replace("]\n}", '],\n  "user": "nobody"\n}')
        mode, why = 0o700, "is not readable by user nobody (the workers' user): Permission denied"
    else:
        text = MISSING
        mode, why = 0, "is not readable: Permission denied"
    write(os.path.join(open_dir, "conf", "c.json"), text)
    nowhere = os.path.join(open_dir, "nowhere")
    os.makedirs(nowhere)
    os.chmod(nowhere, mode)
    try:
        refused(cmd, "conf/c.json", open_dir, '"../nowhere" (%s) %s' % (nowhere, why))
    finally:
        os.chmod(nowhere, 0o755)
    rc, out, err = run_cli(["check-config", "-c", "conf/c.json"], open_dir)
    assert rc == 0, "readable again, the same config loads: %s" % err


def test_reload_refuses_a_missing_root(ops):
    """A reload loads the config as serve does: with the root gone it is
    refused and the old workers keep serving; status works meanwhile."""
    s = ops(workers=2)
    before = s.ready_pids()
    away = s.root + ".away"
    os.rename(s.root, away)
    try:
        rc, out, err = s.cli("reload")
        assert rc == 1, (rc, out, err)
        assert "routes[0].root" in out + err and "does not exist" in out + err, (out, err)
        assert "cohort.json:" in out + err, "the message names the file: %s%s" % (out, err)
        assert s.ready_pids() == before
        assert exchange(s.port, get("/health")).status == 200
    finally:
        os.rename(away, s.root)
    rc, out, err = s.cli("reload")
    assert rc == 0, (rc, out, err)
    assert wait_for(lambda: len(s.ready_pids()) == 2 and not set(s.ready_pids()) & set(before), 20, 0.1), s.status()
