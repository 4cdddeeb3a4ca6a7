"""HTTP/1.1 behaviour of the built-in routes over raw sockets."""
import http.client
import os
import signal
import socket
import threading
import time

import pytest

from conftest import rss_kib
from rawhttp import Closed, Conn, assert_json_error, exchange, get, parse_http_date, req, wait_for


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory()


def test_get_root(srv):
    r = exchange(srv.port, get("/"))
    assert r.version == "HTTP/1.1"
    assert (r.status, r.reason) == (200, "OK")
    assert r.body == b"Hello World\n"
    assert r.header("Content-Type").split(";")[0] == "text/plain"
    assert r.header("Content-Length") == "12"


def test_health(srv):
    r = exchange(srv.port, get("/health"))
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    assert r.header("Content-Type").split(";")[0] == "application/json"
    assert int(r.header("Content-Length")) == len(r.body)


def test_http_client_library(srv):
    """The standard library's client (its own parser) agrees."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for _ in range(3):
            c.request("GET", "/")
            r = c.getresponse()
            assert r.status == 200
            assert r.read() == b"Hello World\n"
    finally:
        c.close()


def test_head_has_no_body_and_pipelines(srv):
    with Conn(srv.port) as c:
        c.send(req("HEAD", "/") + get("/health"))
        h = c.read_response(head=True)
        assert h.status == 200
        assert h.header("Content-Length") == "12"
        assert h.header("Content-Type").split(";")[0] == "text/plain"
        # the next response follows the head directly: no body bytes between
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.json() == {"status": "ok"}, nxt
        assert c.is_open()


def test_head_of_health(srv):
    with Conn(srv.port) as c:
        c.send(req("HEAD", "/health"))
        h = c.read_response(head=True)
        assert h.status == 200
        assert h.header("Content-Length") == str(len(b'{"status":"ok"}'))
        # nothing else arrives
        assert c.is_open(0.3)


def test_404_json(srv):
    with Conn(srv.port) as c:
        c.send(get("/no/such/thing"))
        r = c.read_response()
        assert r.status == 404
        assert_json_error(r)
        # not a framing error: the connection stays usable
        c.send(get("/"))
        assert c.read_response().body == b"Hello World\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_405_allow(srv, method):
    with Conn(srv.port) as c:
        c.send(req(method, "/health"))
        r = c.read_response()
        assert r.status == 405
        allow = [m.strip() for m in r.header("Allow").split(",")]
        assert allow == ["GET", "HEAD"]
        assert_json_error(r)
        c.send(get("/health"))
        assert c.read_response().status == 200


def test_unknown_method_501(srv):
    with Conn(srv.port) as c:
        c.send(req("BREW", "/"))
        r = c.read_response()
        assert r.status == 501
        assert_json_error(r)


def test_methods_are_case_sensitive(srv):
    # "get" is a valid token but not GET
    r = exchange(srv.port, req("get", "/"))
    assert r.status == 501
    assert_json_error(r)


def test_keep_alive_http11_default(srv):
    with Conn(srv.port) as c:
        for i in range(10):
            c.send(get("/" if i % 2 else "/health"))
            r = c.read_response()
            assert r.status == 200
            assert not r.has_token("Connection", "close")
        assert c.is_open()


def test_http10_closes_by_default(srv):
    with Conn(srv.port) as c:
        c.send(get("/", version="HTTP/1.0", host=None))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello World\n"
        assert r.has_token("Connection", "close")
        closed, extra = c.wait_closed(2)
        assert closed and extra == b""


def test_http10_keep_alive(srv):
    with Conn(srv.port) as c:
        for _ in range(3):
            c.send(get("/", version="HTTP/1.0", host=None, headers=[("Connection", "keep-alive")]))
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello World\n"
            assert r.has_token("Connection", "keep-alive")
        assert c.is_open()


def test_connection_close(srv):
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200
        assert r.has_token("Connection", "close")
        closed, extra = c.wait_closed(2)
        assert closed and extra == b""


def test_connection_close_stops_the_pipeline(srv):
    """Requests after one with Connection: close are not answered."""
    with Conn(srv.port) as c:
        c.send(get("/") + get("/health", headers=[("Connection", "close")]) + get("/"))
        assert c.read_response().body == b"Hello World\n"
        r = c.read_response()
        assert r.status == 200 and r.has_token("Connection", "close")
        closed, extra = c.wait_closed(2)
        assert closed and extra == b"", extra


def test_pipelining_20_in_order(srv):
    paths = []
    for i in range(20):
        paths.append(["/", "/health", "/missing-%d" % i][i % 3])
    with Conn(srv.port) as c:
        c.send(b"".join(get(p) for p in paths))
        for p in paths:
            r = c.read_response()
            if p == "/":
                assert (r.status, r.body) == (200, b"Hello World\n"), (p, r)
            elif p == "/health":
                assert r.status == 200 and r.json() == {"status": "ok"}, (p, r)
            else:
                assert r.status == 404, (p, r)
                assert_json_error(r)
        assert c.is_open()


def test_pipelining_deep(srv):
    """200 pipelined requests: more than one read buffer and output buffer."""
    n = 200
    with Conn(srv.port, timeout=10) as c:
        c.send(b"".join(get("/" if i % 2 else "/health") for i in range(n)))
        for i in range(n):
            r = c.read_response()
            assert r.status == 200
            assert (r.body == b"Hello World\n") if i % 2 else (r.json() == {"status": "ok"})


def test_request_split_byte_by_byte(srv):
    data = get("/health", headers=[("User-Agent", "split-test"), ("Accept", "*/*")])
    with Conn(srv.port) as c:
        c.send_slowly(data, step=1, delay=0.003)
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        # and a body split byte by byte
        c.send_slowly(get("/health", headers=[("Content-Length", "7")]) + b"abcdefg", step=1, delay=0.003)
        assert c.read_response().status == 200


def test_get_with_body_is_consumed(srv):
    """A body on GET is read and skipped: the next request parses."""
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Content-Length", "11")]) + b"GET / HTTP/" + get("/"))
        assert c.read_response().status == 200
        r = c.read_response()
        assert r.body == b"Hello World\n"


def test_chunked_request_body(srv):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Transfer-Encoding", "chunked")]) + body + get("/"))
        assert c.read_response().status == 200
        assert c.read_response().body == b"Hello World\n"


def test_expect_continue_on_405_answers_at_once_and_closes(srv):
    with Conn(srv.port) as c:
        c.send(req("POST", "/", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        t0 = time.monotonic()
        r = c.read_response(timeout=5)
        # not after the body timeout: the body is never sent
        assert time.monotonic() - t0 < 5
        assert r.status == 405, "expected the final answer, not %r" % r
        assert_json_error(r)
        assert r.has_token("Connection", "close")
        closed, extra = c.wait_closed(3)
        assert closed and extra == b"", extra


def test_expect_continue_then_body(srv):
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        r = c.read_response(timeout=3)
        assert (r.status, r.reason) == (100, "Continue")
        assert r.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert c.is_open()


def test_expect_continue_with_body_already_sent(srv):
    """The client sent the body along: no 100 needed, but the answer is right."""
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Content-Length", "5"), ("Expect", "100-continue")]) + b"hello")
        r = c.read_response(timeout=3)
        if r.status == 100:
            r = c.read_response(timeout=3)
        assert r.status == 200 and r.json() == {"status": "ok"}
        c.send(get("/"))
        assert c.read_response().body == b"Hello World\n"


def test_date_header(srv):
    r = exchange(srv.port, get("/"))
    dates = r.header_all("Date")
    assert len(dates) == 1
    ts = parse_http_date(dates[0])
    assert abs(ts - time.time()) < 5


def test_date_header_advances(srv):
    with Conn(srv.port) as c:
        c.send(get("/"))
        d1 = parse_http_date(c.read_response().header("Date"))
        time.sleep(2.1)
        c.send(get("/"))
        d2 = parse_http_date(c.read_response().header("Date"))
        assert 1 <= d2 - d1 <= 4


def test_absolute_form_target(srv):
    r = exchange(srv.port, get("http://example.com/health", host="example.com"))
    assert r.status == 200 and r.json() == {"status": "ok"}


def test_query_string_ignored_by_router(srv):
    r = exchange(srv.port, get("/health?x=1&y=2"))
    assert r.status == 200 and r.json() == {"status": "ok"}


def test_error_bodies_are_json(srv):
    cases = [get("/nope"), req("DELETE", "/"), req("BREW", "/"), get("/", host=None),
             b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"]
    for data in cases:
        r = exchange(srv.port, data)
        assert r.status >= 400, r
        assert_json_error(r)


def test_server_survives_abrupt_clients(srv):
    """Clients that vanish mid-request or mid-response do not hurt a worker."""
    mark = len(srv.log())
    for i in range(30):
        c = Conn(srv.port)
        c.send([b"GET / HTT", get("/health", headers=[("Content-Length", "100")]) + b"abc",
                get("/") * 50][i % 3])
        c.close()
    r = exchange(srv.port, get("/"))
    assert r.status == 200
    assert "restarting" not in srv.log()[mark:]


def test_half_close_after_pipelined_batch(srv):
    """A client that sends 2000 pipelined requests and then its FIN still
    gets all 2000 answers."""
    n = 2000
    with Conn(srv.port, timeout=10) as c:
        def send():
            c.sock.sendall(get("/") * n)
            c.sock.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        got = 0
        try:
            for _ in range(n):
                assert c.read_response().body == b"Hello World\n"
                got += 1
        finally:
            t.join(10)
        assert got == n
        gone, extra = c.wait_closed(3)
        assert gone and extra == b""


def test_half_close_single_request(srv):
    # half-close after a full request: the answer still arrives
    with Conn(srv.port) as c:
        c.send(get("/"))
        c.sock.shutdown(1)  # SHUT_WR
        try:
            r = c.read_response()
        except Closed as e:
            pytest.fail("no answer after the client's FIN: %r" % e.partial)
        assert r.body == b"Hello World\n"


def sleep_until_fraction(frac):
    """Sleeps until the wall clock's fraction of a second is `frac` (within
    the next second)."""
    now = time.time()
    wait = (frac - (now - int(now))) % 1.0
    time.sleep(wait)


def test_date_header_is_current(srv):
    """Date is the current second, not a cached older one: responses late
    in one second and late in the next carry the second they were sent in
    (between the clock read before the request and after the answer; a
    pause of the machine widens that window, never fails the test)."""
    with Conn(srv.port) as c:
        c.send(get("/"))
        c.read_response()
        time.sleep(1.2)  # whatever the worker cached is now over a second old
        seen = []
        for frac in (0.92, 0.80, 0.95):
            sleep_until_fraction(frac)
            t0 = time.time()
            c.send(get("/"))
            date = parse_http_date(c.read_response().header("Date"))
            t1 = time.time()
            seen.append((int(t0), date, int(t1)))
    assert all(lo <= d <= hi for lo, d, hi in seen), "Date outside [clock before, clock after]: %s" % seen


def sanitized(pid):
    """ASan keeps freed memory in quarantine: RSS bounds are looser there."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def send_until_blocked(sock, data, seconds):
    """Non-blocking sends for at most `seconds`; returns the bytes taken."""
    sock.setblocking(False)
    sent = 0
    t_end = time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < t_end:
        try:
            sent += sock.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    sock.setblocking(True)
    return sent


def test_backpressure_client_not_reading(srv):
    """A client that pipelines without reading does not make the worker
    buffer its answers without bound; once it reads, every answer arrives."""
    workers = srv.workers()
    slack = (64 if sanitized(workers[0]) else 4) * 1024
    before = sum(rss_kib(w) for w in workers)
    one = get("/")
    data = one * 80000  # 2.2 MB of requests, 10 MB of answers
    with Conn(srv.port, timeout=10, rcvbuf=4096) as c:
        sent = send_until_blocked(c.sock, data, 3)
        time.sleep(0.5)
        grown = sum(rss_kib(w) for w in workers) - before
        assert grown < slack, "workers grew by %d KiB for one client that does not read" % grown
        c.sock.settimeout(10)
        want = sent // len(one)
        status = b"HTTP/1.1 200 OK\r\n"
        got, tail = 0, b""
        deadline = time.monotonic() + 30
        while got < want and time.monotonic() < deadline:
            chunk = c.sock.recv(1 << 20)
            assert chunk, "closed after %d of %d answers" % (got, want)
            buf = tail + chunk
            got += buf.count(status)
            tail = buf[-(len(status) - 1):]
        assert got == want


def test_backpressure_stops_reading(srv):
    """While a large answer waits for a client that does not read, the
    worker stops reading that connection: the client's pipelined requests
    pile up in the kernel, not in the worker."""
    with open(os.path.join(srv.root, "mib.bin"), "wb") as f:
        f.write(b"m" * (1 << 20))
    workers = srv.workers()
    slack = (64 if sanitized(workers[0]) else 4) * 1024
    before = sum(rss_kib(w) for w in workers)
    one = get("/static/mib.bin")
    data = one * 400000  # 12 MB of requests
    with Conn(srv.port, timeout=10, rcvbuf=4096) as c:
        sent = send_until_blocked(c.sock, data, 3)
        assert sent < len(data), "the server read 12 MB of requests from a client that does not read"
        grown = sum(rss_kib(w) for w in workers) - before
        assert grown < slack, "workers grew by %d KiB" % grown
    assert exchange(srv.port, get("/")).status == 200


def test_head_larger_than_read_buffer(srv):
    """Default limits: a 12 KiB head (more than one 8 KiB read buffer),
    pipelined behind a small request, parses."""
    with Conn(srv.port) as c:
        c.send(get("/") + get("/health", headers=[("X-Big", "a" * 12000)]) + get("/"))
        assert c.read_response().status == 200
        assert c.read_response().json() == {"status": "ok"}
        assert c.read_response().body == b"Hello World\n"


def test_default_limits(srv):
    """Defaults: 16 KiB head, 100 fields, 8 KiB target, 1 MiB body."""
    cases = [
        (get("/health", headers=[("X-F%d" % i, "a" * 1000) for i in range(17)]), 431),
        (get("/health", headers=[("X-F%d" % i, "v") for i in range(99)]), 200),
        (get("/health", headers=[("X-F%d" % i, "v") for i in range(100)]), 431),
        (get("/" + "a" * 8191), 404),
        (get("/" + "a" * 8192), 414),
        (get("/health", headers=[("Content-Length", str(1 << 20))]) + b"b" * (1 << 20), 200),
        (get("/health", headers=[("Content-Length", str((1 << 20) + 1))]), 413),
    ]
    for data, status in cases:
        with Conn(srv.port, timeout=10) as c:
            c.send(data)
            r = c.read_response()
            assert r.status == status, (data[:60], r)


def test_large_chunked_body(srv):
    n, step = 1 << 20, 7000
    body = b""
    left = n
    while left:
        k = min(step, left)
        body += b"%x\r\n" % k + b"y" * k + b"\r\n"
        left -= k
    body += b"0\r\n\r\n"
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/health", headers=[("Transfer-Encoding", "chunked")]) + body + get("/"))
        assert c.read_response().status == 200
        assert c.read_response().body == b"Hello World\n"
        # one byte over max_body
        over = body[:-5] + b"1\r\nz\r\n0\r\n\r\n"
        c.send(get("/health", headers=[("Transfer-Encoding", "chunked")]) + over)
        r = c.read_response()
        assert r.status == 413
        assert_json_error(r)


def test_bodies_pipelined_across_reads(srv):
    """Requests with bodies, pipelined and cut at odd places, all answered."""
    one = get("/health", headers=[("Content-Length", "5000")]) + b"z" * 5000 + get("/")
    with Conn(srv.port, timeout=10) as c:
        c.send_slowly(one * 20, step=997, delay=0.001)
        for _ in range(20):
            assert c.read_response().status == 200
            assert c.read_response().body == b"Hello World\n"


def test_head_on_errors_has_no_body(srv):
    with Conn(srv.port) as c:
        c.send(req("HEAD", "/nope") + get("/"))
        r = c.read_response(head=True)
        assert r.status == 404
        assert c.read_response().body == b"Hello World\n"


def test_signal_hup_reloads(cohort):
    """HUP re-reads the config and replaces every worker; the master stays."""
    s = cohort()
    kids = s.workers()
    s.signal(signal.SIGHUP)
    new = wait_for(lambda: (lambda w: len(w) == len(kids) and not set(w) & set(kids) and w)(s.workers()), 10)
    assert new, s.log()
    assert s.proc.poll() is None
    assert exchange(s.port, get("/")).status == 200
    assert "SIGHUP: reloading" in s.log()


def test_ipv6(cohort):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    s = cohort(overrides={"server": {"host": "::1"}}, ready=False)
    deadline = time.monotonic() + 15
    while "serving http://[::1]:%d/" % s.port not in s.log():
        assert s.proc.poll() is None, s.log()
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.05)
    with Conn(s.port, host="::1") as c:
        c.send(get("/", host="[::1]:%d" % s.port))
        assert c.read_response().body == b"Hello World\n"


@pytest.mark.parametrize("kind", ["partial-head", "content-length", "chunked", "expect-100"])
def test_no_leak_when_client_leaves_during_body(cohort, kind):
    """Clients that send a head with a body and leave before the body ends
    must not cost the worker memory: 3000 of them, then RSS compared."""
    s = cohort(workers=1)
    w = s.workers()[0]
    head = {
        "content-length": get("/health", headers=[("Content-Length", "100")]) + b"abc",
        "chunked": get("/health", headers=[("Transfer-Encoding", "chunked")]) + b"5\r\nab",
        "expect-100": get("/health", headers=[("Content-Length", "5"), ("Expect", "100-continue")]),
        "partial-head": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Partial: ",
    }[kind]

    def abort_many(n):
        for _ in range(n):
            c = Conn(s.port)
            c.send(head)
            c.close()
        # the server has seen every close once a request on a new
        # connection is answered... per worker; there is one
        assert exchange(s.port, get("/")).status == 200
        time.sleep(1.2)  # a sweep (malloc_trim) runs once a second

    abort_many(300)  # warm up pools and allocator
    before = rss_kib(w)
    abort_many(3000)
    limit = 64 * 1024 if sanitized(w) else 2 * 1024
    wait_for(lambda: rss_kib(w) - before < limit, 5)  # in case a sweep ran late
    grown = rss_kib(w) - before
    assert grown < limit, "worker grew by %d KiB after 3000 aborted %s bodies" % (grown, kind)
