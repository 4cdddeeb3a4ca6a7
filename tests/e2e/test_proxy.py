"""The load balancer: forwarding, headers, distribution, retries and the
retry budget, timeouts, stickiness, WebSocket, keep-alive pools, malformed
answers, max_conns, `cohort balance`. Backends are `cohort serve` instances
and tests/e2e/pybackend.py, all on 127.0.0.1 free ports, stopped by pid, and
servers scripted in the test (proxyutil.RawBackend, threads of the test,
stopped at its end)."""
import base64
import json
import os
import select
import socket
import subprocess
import threading
import time

import conftest
import rawhttp
from proxyutil import (access_lines, answer, balancer, reset, cohort_backend, group, pybackend,  # noqa: F401 (fixtures)
                       rawbackend, servers, stats, wait_serving)


def get(port, path, headers=(), timeout=5.0):
    return rawhttp.exchange(port, rawhttp.get(path, headers=headers), timeout=timeout)


def test_distribution_by_weight(cohort, balancer):
    a = cohort_backend(cohort)
    b = cohort_backend(cohort)
    lb = balancer(group([{"address": "127.0.0.1:%d" % a.port, "weight": 1},
                         {"address": "127.0.0.1:%d" % b.port, "weight": 3}]))
    base = [json.loads(get(x.port, "/stats").body)["requestCount"] for x in (a, b)]
    with rawhttp.Conn(lb.port) as c:  # one connection: one worker's round robin
        for _ in range(400):
            c.send(rawhttp.get("/health"))
            assert c.read_response().status == 200
    by = servers(lb)
    na, nb = by["127.0.0.1:%d" % a.port]["requests"], by["127.0.0.1:%d" % b.port]["requests"]
    assert (na, nb) == (100, 300), "smooth weighted round robin gives exactly 1:3 (%d, %d)" % (na, nb)
    # the backends agree
    ca = json.loads(get(a.port, "/stats").body)["requestCount"] - base[0] - 1
    cb = json.loads(get(b.port, "/stats").body)["requestCount"] - base[1] - 1
    assert (ca, cb) == (100, 300), (ca, cb)
    st = by["127.0.0.1:%d" % b.port]
    assert st["group"] == "app" and st["state"] == "up" and st["weight"] == 3 and st["up"] is True
    assert st["responses"] == 300 and st["failures"] == 0 and st["inflight"] == 0 and st["ejections"] == 0
    m = rawhttp.exchange(lb.admin_port, rawhttp.get("/metrics")).body.decode()
    assert 'cohort_upstream_requests_total{upstream="127.0.0.1:%d"} 300' % b.port in m
    assert 'cohort_upstream_in_flight{upstream="127.0.0.1:%d"} 0' % b.port in m


def test_headers_both_ways(pybackend, balancer):
    be = pybackend("h")
    lb = balancer(group(["127.0.0.1:%d" % be.port]))
    r = get(lb.port, "/headers?x=1", headers=[
        ("Connection", "keep-alive, X-Drop"), ("X-Drop", "1"), ("Keep-Alive", "timeout=9"), ("TE", "trailers"),
        ("Proxy-Authorization", "Basic x"), ("Proxy-Connection", "keep-alive"), ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"), ("X-Request-Id", "abc-123"), ("Via", "1.0 edge"), ("X-Keep", "yes"),
        ("Upgrade", "h2c")])
    assert r.status == 200
    seen = json.loads(r.body)
    h = {}
    for k, v in seen["headers"]:
        h.setdefault(k.lower(), []).append(v)
    assert seen["target"] == "/headers?x=1"
    for gone in ("x-drop", "keep-alive", "te", "proxy-authorization", "proxy-connection", "upgrade"):
        assert gone not in h, (gone, h)
    assert "connection" not in h or h["connection"] == ["close"], h
    assert h["x-keep"] == ["yes"]
    assert h["host"] == ["x"]
    assert h["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["x"]
    assert h["x-request-id"] == ["abc-123"]
    assert h["via"] == ["1.0 edge, 1.1 cohort"]
    assert r.header("X-Request-Id") == "abc-123"
    # without an id, one is generated, the same on both sides
    r = get(lb.port, "/headers")
    rid = r.header("X-Request-Id")
    assert rid and [v for k, v in json.loads(r.body)["headers"] if k.lower() == "x-request-id"] == [rid]
    # the response's hop-by-hop fields stay behind
    r = get(lb.port, "/hop")
    assert r.status == 200 and r.body == b"hop"
    assert r.header("X-Hop") is None and r.header("Keep-Alive") is None
    assert r.header("X-Kept") == "1" and r.header("X-Backend") == "h"
    assert r.header("Via") == "1.1 cohort"
    assert r.header("Server") == "cohort" and len(r.header_all("Date")) == 1


def test_framing_cases(pybackend, balancer):
    be = pybackend("f")
    lb = balancer(group(["127.0.0.1:%d" % be.port]), workers=1)
    with rawhttp.Conn(lb.port) as c:
        # HEAD: the length a GET would have, no body; the connection goes on
        c.send(rawhttp.req("HEAD", "/id"))
        r = c.read_response(head=True)
        assert r.status == 200 and r.header("Content-Length") == "1" and r.body == b""
        # two pipelined requests: answered in order
        c.send(rawhttp.get("/id") + rawhttp.get("/headers?n=2"))
        assert c.read_response().body == b"f"
        assert json.loads(c.read_response().body)["target"] == "/headers?n=2"
        # absolute-form target: origin-form upstream
        c.send(rawhttp.get("http://example.com/headers?abs=1", host="example.com"))
        seen = json.loads(c.read_response().body)
        assert seen["target"] == "/headers?abs=1" and ["Host", "example.com"] in seen["headers"]
        # Expect: 100-continue is answered by the balancer before the body moves
        c.send(rawhttp.req("POST", "/upload", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        interim = c.read_response(head=True)
        assert interim.status == 100
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.json()["bytes"] == 5
        # a chunked response to an HTTP/1.1 client stays chunked
        c.send(rawhttp.get("/download?size=70000&chunked=1"))
        r = c.read_response()
        assert r.header("Transfer-Encoding") == "chunked" and len(r.body) == 70000
    # ... and to an HTTP/1.0 client it is delimited by the close
    with rawhttp.Conn(lb.port) as c:
        c.send(b"GET /download?size=70000&chunked=1 HTTP/1.0\r\n\r\n")
        c.sock.settimeout(5)
        data = b""
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            data += d
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head and b"Content-Length" not in head and len(body) == 70000, head


def test_request_bodies_that_cannot_be_read(pybackend, balancer):
    be = pybackend("b")
    lb = balancer(group(["127.0.0.1:%d" % be.port]), workers=1)
    # malformed chunked coding: 400 from the balancer, the connection closes
    with rawhttp.Conn(lb.port) as c:
        c.send(rawhttp.req("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]) + b"zz\r\nhello\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 400 and r.json() == {"error": "malformed request body"}, (r.status, r.body)
        assert r.header("Connection") == "close"
    # the client stops sending mid-body (half-closes): it still gets its 400
    with rawhttp.Conn(lb.port) as c:
        c.send(rawhttp.req("POST", "/upload", headers=[("Content-Length", "100")]) + b"0123456789")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(timeout=5)
        assert r.status == 400 and r.json() == {"error": "malformed request body"}, (r.status, r.body)


def test_retries_and_the_access_log(pybackend, balancer):
    be = pybackend("alive")
    dead = conftest.free_port()  # nothing listens there
    lb = balancer(group(["127.0.0.1:%d" % dead, "127.0.0.1:%d" % be.port], retries=1,
                        passive={"failures": 0}), workers=1)
    for method in ("GET", "POST", "DELETE"):  # nothing was sent to a refused server: any method retries
        for _ in range(4):
            r = rawhttp.exchange(lb.port, rawhttp.req(method, "/id", headers=[("Content-Length", "2")], body=b"hi"))
            assert r.status == 200 and r.body == b"alive", r
    def id_lines():
        return [l for l in access_lines(lb) if l["path"] == "/id"]
    # the worker writes its access log out every 100 ms: wait for all 12 lines
    rawhttp.wait_for(lambda: len(id_lines()) >= 12, 5)
    lines = id_lines()
    assert len(lines) == 12, lines
    retried = [l for l in lines if "attempts=2" in l["upstream"]]
    assert len(retried) == 6, "round robin sends every other request to the dead server first"
    assert all(l["upstream"] == "127.0.0.1:%d attempts=2 skipped=127.0.0.1:%d:refused" % (be.port, dead)
               for l in retried), retried
    assert all(l["upstream"] == "127.0.0.1:%d attempts=1" % be.port for l in lines if l not in retried)
    # servers that reset after reading the request: GET goes to the other one, POST does not (it was sent)
    be2 = pybackend("alive2")
    lb2 = balancer(group(["127.0.0.1:%d" % be.port, "127.0.0.1:%d" % be2.port], retries=2, passive={"failures": 0}),
                   workers=1)
    before = be.count() + be2.count()
    r = rawhttp.exchange(lb2.port, rawhttp.req("POST", "/reset", headers=[("Content-Length", "0")]))
    assert r.status == 502
    rawhttp.assert_json_error(r)
    assert be.count() + be2.count() == before + 1, "a POST that reached a server is never sent twice"
    r = get(lb2.port, "/reset")
    assert r.status == 502 and r.json() == {"error": "upstream failed"}
    assert be.count() + be2.count() == before + 3, "GET: tried on both servers (a retry goes to another one)"
    line = rawhttp.wait_for(lambda: [l for l in access_lines(lb2) if l["method"] == "GET"], 5)[0]
    assert line["status"] == 502 and "attempts=2" in line["upstream"] and line["upstream"].count(":reset") == 2, line


def test_all_down_is_503_at_once(balancer):
    p1, p2 = conftest.free_port(), conftest.free_port()
    lb = balancer(group(["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2],
                        health={"path": "/health", "interval": "200ms", "timeout": "100ms", "fall": 1}))
    # before the checks ran: both tried, refused
    assert rawhttp.wait_for(lambda: all(s["state"] == "down" for s in servers(lb).values()), 5), servers(lb)
    for _ in range(5):
        t0 = time.monotonic()
        r = get(lb.port, "/anything")
        took = time.monotonic() - t0
        assert r.status == 503 and r.json() == {"error": "no healthy upstream"}, r
        assert took < 1.0, "at once, not after a timeout: %.3f s" % took
    line = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["path"] == "/anything"], 5)[-1]
    assert line["status"] == 503 and line["upstream"] == "- attempts=0", line


def test_slow_backend_is_504(pybackend, balancer):
    be = pybackend("slow")
    lb = balancer(group(["127.0.0.1:%d" % be.port], timeouts={"first_byte": "500ms"}), workers=1)
    t0 = time.monotonic()
    r = get(lb.port, "/slow?ms=3000")
    took = time.monotonic() - t0
    assert r.status == 504 and r.json() == {"error": "upstream timed out"}, r
    assert 0.45 < took < 1.0, took
    assert get(lb.port, "/slow?ms=100").status == 200, "a quicker answer is in time"
    st = servers(lb)["127.0.0.1:%d" % be.port]
    assert st["failures"] == 1 and st["requests"] == 2
    first = rawhttp.wait_for(lambda: access_lines(lb), 5)[0]
    assert "attempts=1 skipped=127.0.0.1:%d:timeout" % be.port in first["upstream"], first


def test_sticky_by_cookie(pybackend, balancer):
    bes = [pybackend("b%d" % i) for i in range(3)]
    lb = balancer(group(["127.0.0.1:%d" % b.port for b in bes], algorithm="hash",
                        hash={"on": "cookie", "name": "sid"}))
    owners = {}
    for sid in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"):
        got = set()
        for _ in range(6):  # new connections: either worker
            r = get(lb.port, "/id", headers=[("Cookie", "theme=dark; sid=%s; lang=en" % sid)])
            assert r.status == 200
            got.add(r.body)
        assert len(got) == 1, "session %s went to %s" % (sid, got)
        owners[sid] = got.pop()
    assert len(set(owners.values())) >= 2, owners
    # the owner down: its sessions move, the others stay
    victim = owners["alice"]
    next(b for b in bes if b.name.encode() == victim).kill()
    for sid, owner in owners.items():
        r = get(lb.port, "/id", headers=[("Cookie", "sid=%s" % sid)])
        assert r.status == 200
        if owner != victim:
            assert r.body == owner, "session %s moved from a server that stayed" % sid
        else:
            assert r.body != victim


def ws_frame(op, payload, mask=b"\x11\x22\x33\x44"):
    n = len(payload)
    hdr = bytes([0x80 | op])
    if n <= 125:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        hdr += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_read(sock_file):
    b0, b1 = sock_file.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(sock_file.read(2), "big")
    elif n == 127:
        n = int.from_bytes(sock_file.read(8), "big")
    return b0 & 0x0F, sock_file.read(n)


def test_websocket_echo(pybackend, balancer):
    be = pybackend("ws")
    lb = balancer(group(["127.0.0.1:%d" % be.port], timeouts={"idle": "5s"}))
    s = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    first = ws_frame(1, b"sent with the handshake")
    s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode() + first)
    f = s.makefile("rb")
    status = f.readline()
    assert status.startswith(b"HTTP/1.1 101"), status
    head = {}
    while True:
        line = f.readline()
        if line == b"\r\n":
            break
        k, _, v = line.decode().partition(":")
        head[k.strip().lower()] = v.strip()
    assert head["upgrade"].lower() == "websocket" and head["connection"].lower() == "upgrade"
    assert head["x-backend"] == "ws"
    assert ws_read(f) == (1, b"sent with the handshake")
    for i in range(20):
        msg = ("message %d" % i).encode()
        s.sendall(ws_frame(1, msg))
        assert ws_read(f) == (1, msg)
    big = os.urandom(200000)
    s.sendall(ws_frame(2, big))
    assert ws_read(f) == (2, big)
    s.sendall(ws_frame(8, b"\x03\xe8"))
    assert ws_read(f)[0] == 8
    s.settimeout(3)
    assert f.read() == b"", "the tunnel closes when the server does"
    s.close()
    line = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["path"] == "/ws"], 3)[0]
    assert line["status"] == 101 and line["upstream"].startswith("127.0.0.1:%d" % be.port)


def test_passive_ejection_on_5xx(pybackend, balancer):
    bad, good = pybackend("bad"), pybackend("good")
    lb = balancer(group(["127.0.0.1:%d" % bad.port, "127.0.0.1:%d" % good.port],
                        passive={"failures": 3, "on_5xx": True, "ejection_time": "4s"}), workers=1)
    rawhttp.exchange(bad.port, rawhttp.get("/set-health?code=500"))
    codes = []
    with rawhttp.Conn(lb.port) as c:
        for _ in range(6):  # round robin: three to each, the bad one answers 500
            c.send(rawhttp.get("/health"))
            codes.append(c.read_response().status)
    assert codes.count(500) == 3
    st = rawhttp.wait_for(lambda: servers(lb)["127.0.0.1:%d" % bad.port]["state"] == "ejected" and servers(lb), 2)
    assert st, servers(lb)
    assert st["127.0.0.1:%d" % bad.port]["ejections"] == 1
    assert "ejected for 4000 ms after 3 failures in a row" in lb.log()
    for _ in range(10):
        r = get(lb.port, "/id")
        assert r.body == b"good", "an ejected server gets nothing"
    assert rawhttp.wait_for(lambda: servers(lb)["127.0.0.1:%d" % bad.port]["state"] == "up", 8), servers(lb)
    seen = {get(lb.port, "/id").body for _ in range(6)}
    assert seen == {b"bad", b"good"}, "back after ejection_time"


def test_balance_command(cohort, tmp_path):
    a = cohort_backend(cohort)
    b = cohort_backend(cohort)
    port, admin = conftest.free_port(), conftest.free_port()
    env = conftest.clean_env({"WORKERS": "1"})
    errf = open(str(tmp_path / "balance.log"), "wb")
    p = subprocess.Popen([conftest.cohort_bin(), "balance", "--port", str(port), "--upstream",
                          "127.0.0.1:%d,weight=2" % a.port, "-u", "127.0.0.1:%d" % b.port,
                          "--algorithm", "round_robin", "--health-path", "/health", "--admin-port", str(admin)],
                         stdout=errf, stderr=errf, env=env, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 10
        while "serving http://127.0.0.1:%d/ with 1 worker" % port not in open(str(tmp_path / "balance.log")).read():
            assert p.poll() is None and time.monotonic() < deadline, open(str(tmp_path / "balance.log")).read()
            time.sleep(0.05)
        # every path goes upstream, /stats and /health included
        for path in ("/health", "/stats", "/", "/api/products"):
            r = get(port, path)
            assert r.header("Via") == "1.1 cohort", (path, r)
        assert json.loads(get(port, "/stats").body).get("upstreams") == [], "that /stats is a backend's"
        st = json.loads(get(admin, "/stats").body)
        names = {u["name"]: u for u in st["upstreams"]}
        assert set(names) == {"127.0.0.1:%d" % a.port, "127.0.0.1:%d" % b.port}
        assert names["127.0.0.1:%d" % a.port]["weight"] == 2
        assert get(admin, "/metrics").status == 200 and get(admin, "/status").status == 200
        assert not os.path.exists(str(tmp_path / "data")), "no shop store for a balancer"
    finally:
        p.terminate()
        assert p.wait(10) == 0
        errf.close()
    assert subprocess.run([conftest.cohort_bin(), "balance"], capture_output=True).returncode == 2
    bad = subprocess.run([conftest.cohort_bin(), "balance", "-u", "nowhere"], capture_output=True)
    assert bad.returncode == 78 and b"upstreams.balance.servers[0]" in bad.stderr


def test_upstream_connections_are_kept_alive_and_reused(pybackend, balancer):
    """Requests one after another, each on a new client connection: the
    server sees one connection per worker (the pool's), not one per request.
    With keepalive.size 0 the same count shows a connection per request."""
    be = pybackend("ka")
    # an idle_timeout no pause of a loaded machine reaches
    lb = balancer(group(["127.0.0.1:%d" % be.port], keepalive={"idle_timeout": "60s"}), workers=2)
    seen0 = be.count()
    conns0 = be.conns()
    for i in range(40):
        r = get(lb.port, "/id?n=%d" % i)
        assert r.status == 200 and r.body == b"ka", r
    opened = be.conns() - conns0 - 1  # less the one asking
    assert be.count() - seen0 == 40
    assert 1 <= opened <= 2, "40 requests through 2 workers opened %d upstream connections" % opened

    lb0 = balancer(group(["127.0.0.1:%d" % be.port], keepalive={"size": 0}), workers=1)
    conns0 = be.conns()
    for i in range(10):
        assert get(lb0.port, "/id?m=%d" % i).status == 200
    assert be.conns() - conns0 - 1 == 10, "keepalive.size 0: a connection per request"


def test_a_malformed_upstream_response_is_502(rawbackend, balancer):
    bad = {
        "/status-line": b"HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\nok",
        "/not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        "/field": b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok",
        "/length": b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
        "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    }

    def handler(conn, head):
        path = head.split(b" ")[1].decode()
        if path in bad:
            conn.sendall(bad[path])
            return False
        return answer(conn, 200, b"fine")

    be = rawbackend(handler)
    lb = balancer(group(["127.0.0.1:%d" % be.port], passive={"failures": 0}), workers=1)
    with rawhttp.Conn(lb.port) as c:
        for path in bad:
            c.send(rawhttp.get(path))
            r = c.read_response()
            assert r.status == 502, (path, r)
            rawhttp.assert_json_error(r)
            assert r.json() == {"error": "bad response from upstream"}, (path, r)
        c.send(rawhttp.get("/ok"))  # the client's connection goes on
        r = c.read_response()
        assert r.status == 200 and r.body == b"fine", r
    assert be.paths() == list(bad) + ["/ok"], "each sent once"
    lines = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["path"] in bad][len(bad) - 1:] and
                             [l for l in access_lines(lb) if l["path"] in bad], 5)
    assert lines and all(l["status"] == 502 and "skipped=127.0.0.1:%d:bad_response" % be.port in l["upstream"]
                         for l in lines), lines
    assert lb.log().count("sent a bad response") == len(bad)


def test_every_server_at_max_conns_is_503(rawbackend, balancer):
    gate = threading.Event()

    def hold(conn, head):
        gate.wait(30)
        return answer(conn, 200, b"done")

    a, b = rawbackend(hold), rawbackend(hold)
    lb = balancer(group([{"address": "127.0.0.1:%d" % a.port, "max_conns": 1},
                         {"address": "127.0.0.1:%d" % b.port, "max_conns": 1}]), workers=1)
    held = [rawhttp.Conn(lb.port, timeout=30) for _ in range(2)]
    try:
        for i, c in enumerate(held):
            c.send(rawhttp.get("/held%d" % i))
        assert rawhttp.wait_for(lambda: len(a.paths()) == len(b.paths()) == 1, 5), (a.paths(), b.paths())
        for i in range(3):
            t0 = time.monotonic()
            r = get(lb.port, "/full%d" % i)
            took = time.monotonic() - t0
            assert r.status == 503, r
            rawhttp.assert_json_error(r)
            assert r.json() == {"error": "upstream servers are all at max_conns"}, r
            assert took < 1.5, "at once, not when a server frees up: %.2f s" % took
        assert len(a.paths()) + len(b.paths()) == 2, "the 503s reached no server"
        gate.set()
        for c in held:
            assert c.read_response().status == 200
    finally:
        gate.set()
        for c in held:
            c.close()
    r = get(lb.port, "/after")
    assert r.status == 200 and r.body == b"done", "below max_conns again"
    line = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["status"] == 503], 5)
    assert line and line[0]["upstream"].startswith("- attempts=0"), line


def test_retries_stop_at_the_retry_budget(rawbackend, balancer):
    """Server R resets /r requests after reading them (a GET it saw: its
    retry counts against the budget), server S holds every request until
    the test lets it go, so a retried request stays retrying. /r requests
    are sent one at a time: each one held (first sent to S, or retried
    there) or answered 502 (its retry refused). A retry is allowed while
    fewer than retry_budget.min (3) are retrying, or while the retrying
    are fewer than retry_budget.percent (20 %) of the requests in flight;
    /hold requests held on both servers beforehand raise that number."""
    gate = [threading.Event()]  # a new one for each phase

    def r_handler(conn, head):
        if head.split(b" ")[1].startswith(b"/r"):
            return reset(conn)
        gate[0].wait(30)
        return answer(conn, 200, b"R")

    def s_handler(conn, head):
        gate[0].wait(30)
        return answer(conn, 200, b"S")

    rb, sb = rawbackend(r_handler), rawbackend(s_handler)
    lb = balancer(group([{"address": "127.0.0.1:%d" % rb.port, "weight": 3}, "127.0.0.1:%d" % sb.port],
                        passive={"failures": 0}), workers=1)  # one worker: one budget

    def phase(tag, fillers, sends):
        conns, retried, refused, s_first = [], 0, 0, 0
        try:
            for i in range(fillers):
                c = rawhttp.Conn(lb.port, timeout=30)
                conns.append(c)
                c.send(rawhttp.get("/hold?%s%d" % (tag, i)))
            assert rawhttp.wait_for(lambda: sum(p.startswith("/hold?" + tag) for p in rb.paths() + sb.paths())
                                    == fillers, 10), "the fillers are held"
            held = 0
            for j in range(sends):
                path = "/r?%s%d" % (tag, j)
                c = rawhttp.Conn(lb.port, timeout=30)
                c.send(rawhttp.get(path))
                deadline, outcome = time.monotonic() + 10, None
                while outcome is None and time.monotonic() < deadline:
                    if path in sb.paths():
                        outcome = "held"
                    elif select.select([c.sock], [], [], 0.01)[0]:
                        outcome = c.read_response()
                assert outcome is not None, "%s: neither held nor answered" % path
                if path not in rb.paths():  # S first: held there, no retry
                    assert outcome == "held", (path, outcome)
                    s_first += 1
                    held += 1
                    conns.append(c)
                    continue
                inflight = fillers + held + 1
                allowed = retried < 3 or retried * 100 < inflight * 20
                if allowed:
                    assert outcome == "held", "%s: a retry refused with %d retrying of %d in flight" % (
                        path, retried, inflight)
                    retried += 1
                    held += 1
                    conns.append(c)
                else:
                    assert outcome != "held", "%s: retried beyond the budget: %d retrying of %d in flight" % (
                        path, retried, inflight)
                    assert outcome.status == 502 and outcome.json() == {"error": "upstream failed"}, outcome
                    refused += 1
                    c.close()
            gate[0].set()
            for c in conns:
                assert c.read_response().status == 200
        finally:
            gate[0].set()
            for c in conns:
                c.close()
        gate[0] = threading.Event()
        return retried, refused, s_first

    # nothing else in flight: the minimum, 3 retrying at once
    retried, refused, _ = phase("a", 0, 8)
    assert retried == 3 and refused >= 1, (retried, refused)
    # 20 requests held first: 20 % of those in flight is more than 3
    retried, refused, s_first = phase("b", 20, 16)
    assert retried > 3 and refused >= 1, (retried, refused, s_first)
    resets = [p for p in rb.paths() if p.startswith("/r")]
    assert len(resets) == len(set(resets)), "a request reached R twice"
