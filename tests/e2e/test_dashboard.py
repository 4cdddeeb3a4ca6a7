"""The /status dashboard in a real browser: headless Chromium (Debian's
chromium package) driven over the DevTools protocol on a pipe (fds 3 and 4,
messages ended by NUL), against a running server under light load. The
test reads the live page: tiles, the worker table, the upstream panel, and
the pixels the charts drew on their canvases.

COHORT_SCREENSHOT=PATH saves a PNG of the page (docs/dashboard.png is made
that way)."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time

from rawhttp import Conn, exchange, get

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
                  "--mute-audio", "--window-size=1280,1100", "--remote-debugging-pipe"]


def chromium_path():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    raise AssertionError("no chromium: install Debian's chromium package (scripts/deps.sh test)")


class BrowserGone(Exception):
    """Chromium itself died or closed its pipe: the tool failed, not the page."""


class Browser:
    """One headless Chromium; CDP over --remote-debugging-pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="cohort-chromium-")
        self.stderr = open(os.path.join(self.profile, "chromium.stderr"), "w+b")
        to_r, self.to_w = os.pipe()    # we write commands; chromium reads fd 3
        self.from_r, from_w = os.pipe()  # chromium writes fd 4; we read

        def fds():  # in the child: the pipe ends at 3 and 4, whatever numbers they had
            r, w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen([chromium_path()] + CHROMIUM_FLAGS + ["--user-data-dir=" + self.profile,
                                                                          "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        except OSError as e:
            raise self.gone("cannot send %s: %s" % (method, e)) from e
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    assert "error" not in reply, "%s: %s" % (method, reply["error"])
                    return reply["result"]
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.from_r], [], [], left)[0], "no answer to %s" % method
            chunk = os.read(self.from_r, 1 << 16)
            if not chunk:
                raise self.gone("no answer to %s: chromium closed its pipe" % method)
            self.buf += chunk

    def gone(self, what):
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace").splitlines()[-15:]
        return BrowserGone("%s (exit status %s); its stderr ends:\n%s" % (what, self.proc.returncode, "\n".join(err)))

    def open(self, url):
        target = self.send("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Runtime.enable")
        deadline = time.monotonic() + 20
        while self.eval("location.href + ' ' + document.readyState") != url + " complete":
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.1)

    def eval(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (AssertionError, BrowserGone):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.to_w)
        os.close(self.from_r)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def in_browser(look):
    """look(browser) in a fresh Chromium; once more in another if that
    Chromium died under it (it did once, on a loaded machine), so that only
    the page's own failures fail the test."""
    for attempt in (1, 2):
        browser = Browser()
        try:
            return look(browser)
        except BrowserGone as e:
            if attempt == 2:
                raise AssertionError("chromium died twice; the second time: %s" % e) from e
            print("chromium died; starting another: %s" % e)
        finally:
            browser.close()


def light_load(port, stop, counter, rate=80, limit=120):
    """About `rate` GET / a second on one keep-alive connection, until
    stopped or for `limit` seconds."""
    t_end = time.monotonic() + limit
    with Conn(port, timeout=5) as c:
        while not stop.is_set() and time.monotonic() < t_end:
            c.send(get("/"))
            assert c.read_response().status == 200
            counter[0] += 1
            time.sleep(1.0 / rate)


# Pixels of a canvas in a colour near (r, g, b): what a chart line drew.
COUNT_PIXELS = """(function (id, r, g, b) {
  var c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, n = 0;
  for (var i = 0; i < d.length; i += 4)
    if (d[i + 3] > 200 && Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
  return n;
})(%s)"""


def test_dashboard_shows_live_values(cohort):
    srv = cohort(workers=2)
    r = exchange(srv.port, get("/status"))
    assert r.status == 200 and r.header("Content-Type").startswith("text/html")
    body = r.body.decode()
    assert "<canvas" in body and "fetch(" in body and "http://" not in body.replace("http://www.w3.org", ""), \
        "self-contained: nothing loaded from elsewhere"
    stop, counter = threading.Event(), [0]
    load = threading.Thread(target=light_load, args=(srv.port, stop, counter), daemon=True)
    load.start()

    def look(browser):
        browser.open("http://127.0.0.1:%d/status" % srv.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if int(browser.eval("document.getElementById('updates').textContent") or 0) >= 6:
                break
        updates = int(browser.eval("document.getElementById('updates').textContent"))
        assert updates >= 6, "the page polled /stats %d times" % updates
        state = browser.eval("document.getElementById('state').textContent")
        assert state == "live", state
        # tiles: the request rate of the light load and the request total
        rps = float(browser.eval("document.getElementById('t-rps').textContent"))
        assert 10 <= rps <= 400, rps
        shown_total = int(browser.eval("document.getElementById('t-requests').textContent").replace(",", ""))
        assert shown_total >= counter[0] - 200 and shown_total > 100, (shown_total, counter[0])
        assert browser.eval("document.getElementById('t-p99').textContent").endswith(("µs", "ms"))
        assert browser.eval("document.getElementById('t-redis').textContent") == "not in use"
        assert browser.eval("document.getElementById('t-cache').textContent") == "no lookups"
        # the worker table lists the live workers with their RSS and uptime
        rows = browser.eval("""Array.from(document.querySelectorAll('#workers tr')).map(function (tr) {
            return Array.from(tr.children).map(function (td) { return td.textContent; }); })""")
        pids = sorted(srv.workers())
        assert sorted(int(r[1]) for r in rows) == pids, rows
        assert sorted(r[0] for r in rows) == ["0", "1"]
        assert all(r[4].endswith("MiB") and r[3] == "0" and r[2].endswith("s") for r in rows), rows
        assert all(r[8].endswith(("µs", "ms")) for r in rows), rows
        assert browser.eval("document.getElementById('upstreams').textContent.trim()") == "no upstreams"
        routes = browser.eval("document.getElementById('routes').textContent")
        assert "/status" in routes and "/stats" in routes
        # the charts: points plotted, and lines drawn in the series' colours
        assert int(browser.eval("document.getElementById('c-rps').getAttribute('data-points')")) >= 4
        assert int(browser.eval("document.getElementById('c-lat').getAttribute('data-points')")) >= 4
        assert browser.eval(COUNT_PIXELS % "'c-rps', 0x5f, 0xb3, 0xf9") > 20, "no req/s line on the canvas"
        assert browser.eval(COUNT_PIXELS % "'c-lat', 0xf7, 0xa3, 0x5c") > 20, "no p99 line on the canvas"
        assert browser.eval(COUNT_PIXELS % "'c-lat', 0x7b, 0xd8, 0x8f") > 20, "no p50 line on the canvas"
        legend = browser.eval("document.getElementById('rps-last').textContent")
        assert legend and float(legend) > 0, legend
        shot = os.environ.get("COHORT_SCREENSHOT")
        if shot:
            browser.screenshot(shot)
    try:
        in_browser(look)
    finally:
        stop.set()
        load.join(10)


def test_dashboard_says_when_the_server_is_gone(cohort):
    srv = cohort(workers=1)

    def look(browser):
        browser.open("http://127.0.0.1:%d/status" % srv.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and browser.eval("document.getElementById('state').textContent") != "live":
            time.sleep(0.2)
        assert browser.eval("document.getElementById('state').textContent") == "live"
        # a browser that dies from here on cannot be retried: the server is stopped
        assert srv.stop() == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "no answer" not in browser.eval(
                "document.getElementById('state').textContent"):
            time.sleep(0.2)
        assert "no answer" in browser.eval("document.getElementById('state').textContent")
        assert browser.eval("document.getElementById('live').className") == "err"
    in_browser(look)
