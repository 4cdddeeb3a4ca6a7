"""Large bodies through the load balancer, both ways, with flat memory: the
worker's RSS (sampled all along) grows by less than 10 MiB while 256 MiB
(PROXY_STREAM_MIB to change it; docs/proxy.md has 1 GiB) go up with
Content-Length and down with Content-Length, and smaller bodies go chunked
both ways; every byte arrives intact (SHA-256 on both sides)."""
import hashlib
import os
import threading
import time

import rawhttp
from conftest import rss_kib
from proxyutil import SMALL_QUARANTINE, balancer, group, pybackend  # noqa: F401 (fixtures)

MIB = 1 << 20
SIZE = int(os.environ.get("PROXY_STREAM_MIB", "256")) * MIB
PATTERN = bytes(range(256)) * 256  # what pybackend's /download sends
BLOCK = os.urandom(MIB)


class RssWatch:
    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)

    def __enter__(self):
        self.base = rss_kib(self.pid)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        self.peak = max(self.peak, rss_kib(self.pid))

    @property
    def growth_mib(self):
        return (self.peak - self.base) / 1024


def upload(port, size, chunked=False):
    h = hashlib.sha256()
    with rawhttp.Conn(port, timeout=60) as c:
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
        c.send(rawhttp.req("POST", "/upload", headers=[framing, ("Content-Type", "application/octet-stream")]))
        left = size
        while left:
            piece = BLOCK[:min(left, MIB)]
            h.update(piece)
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=60)
    return r, h.hexdigest()


def download(port, size, chunked=False):
    """Reads the body as it comes (never whole in memory); returns (status, bytes, sha256)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(rawhttp.get("/download?size=%d%s" % (size, "&chunked=1" if chunked else "")))
    f = s.makefile("rb", buffering=MIB)
    status = int(f.readline().split()[1])
    length, te = None, None
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
        if k.lower() == "transfer-encoding":
            te = v.strip()
    h, n = hashlib.sha256(), 0
    if te == "chunked":
        while True:
            sz = int(f.readline().split(b";")[0], 16)
            if sz == 0:
                f.readline()
                break
            left = sz
            while left:
                d = f.read(min(left, MIB))
                h.update(d)
                n += len(d)
                left -= len(d)
            f.readline()
    else:
        left = length
        while left:
            d = f.read(min(left, MIB))
            assert d, "cut short"
            h.update(d)
            n += len(d)
            left -= len(d)
    s.close()
    return status, n, h.hexdigest()


def pattern_sha(size):
    h = hashlib.sha256()
    left = size
    while left:
        piece = PATTERN[:min(left, len(PATTERN))]
        h.update(piece)
        left -= len(piece)
    return h.hexdigest()


def test_large_bodies_both_ways_flat_memory(pybackend, balancer):
    be = pybackend("big")
    lb = balancer(group(["127.0.0.1:%d" % be.port]), workers=1, env=SMALL_QUARANTINE)
    worker = lb.workers()[0]
    # warm up: pools, buffers and the allocator's arenas as in steady state
    r, _ = upload(lb.port, 4 * MIB)
    assert r.status == 200
    assert download(lb.port, 4 * MIB)[0] == 200

    with RssWatch(worker) as w:
        r, sha = upload(lb.port, SIZE)
    assert r.status == 200, r
    assert r.json() == {"bytes": SIZE, "sha256": sha}
    print("upload of %d MiB: worker RSS %d KiB before, %d KiB at most (+%.2f MiB)" % (SIZE // MIB, w.base, w.peak,
                                                                                  w.growth_mib))
    assert w.growth_mib < 10, "upload of %d MiB grew the worker by %.1f MiB" % (SIZE // MIB, w.growth_mib)

    with RssWatch(worker) as w:
        status, n, sha = download(lb.port, SIZE)
    assert status == 200 and n == SIZE and sha == pattern_sha(SIZE)
    print("download of %d MiB: worker RSS %d KiB before, %d KiB at most (+%.2f MiB)" % (SIZE // MIB, w.base, w.peak,
                                                                                    w.growth_mib))
    assert w.growth_mib < 10, "download of %d MiB grew the worker by %.1f MiB" % (SIZE // MIB, w.growth_mib)

    small = 32 * MIB
    with RssWatch(worker) as w:
        r, sha = upload(lb.port, small, chunked=True)
        assert r.status == 200 and r.json() == {"bytes": small, "sha256": sha}
        status, n, sha = download(lb.port, small, chunked=True)
        assert status == 200 and n == small and sha == pattern_sha(small)
    assert w.growth_mib < 10, w.growth_mib


def test_slow_reader_pauses_the_server(pybackend, balancer):
    """A client that does not read: the balancer stops reading the server
    instead of buffering (its memory stays flat), and catches up later."""
    be = pybackend("big")
    lb = balancer(group(["127.0.0.1:%d" % be.port]), workers=1, env=SMALL_QUARANTINE)
    worker = lb.workers()[0]
    download(lb.port, MIB)
    with RssWatch(worker) as w:
        with rawhttp.Conn(lb.port, timeout=30, rcvbuf=64 * 1024) as c:
            c.send(rawhttp.get("/download?size=%d" % (64 * MIB)))
            time.sleep(1.5)  # the server could have sent everything by now
            got = 0
            while got < 64 * MIB:
                d = c.sock.recv(MIB)
                assert d
                got += len(d)
    assert w.growth_mib < 10, w.growth_mib
