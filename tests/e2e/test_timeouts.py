"""Timeouts: slowloris heads, idle keep-alive, stalled bodies, clients that
do not read. The server checks its timeouts once a second, so a timeout of
T fires between T and T + 1 s; the tests allow T + 2.5 s (a loaded machine
may run the check late), far below any default the server would fall back
to (10 s and more)."""
import os
import select
import socket
import time

import pytest

from rawhttp import Conn, assert_json_error, get

HEADER_S = 2.0
KEEPALIVE_S = 2.0
BODY_S = 2.0
SEND_S = 2.0
SLACK = 2.5


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory({
        "timeouts": {"header": "2s", "keepalive": "2s", "body": "2000ms", "send": "2s"},
    })


def readable(sock, wait):
    r, _, _ = select.select([sock], [], [], wait)
    return bool(r)


def trickle_until_answer(c, data, interval, limit):
    """Sends data one byte per `interval` until the server says something or
    `limit` seconds pass. Returns the time the answer became readable
    (monotonic), or None."""
    end = time.monotonic() + limit
    i = 0
    while time.monotonic() < end:
        if i < len(data):
            try:
                c.sock.sendall(data[i:i + 1])
            except OSError:
                return time.monotonic()
            i += 1
        if readable(c.sock, interval):
            return time.monotonic()
    return None


def test_slowloris_head_gets_408(srv):
    with Conn(srv.port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t = trickle_until_answer(c, b"X-Slow: " + b"s" * 20, 1.0, HEADER_S + SLACK + 1)
        assert t is not None, "no answer to a head trickling in for %.1f s" % (HEADER_S + SLACK + 1)
        elapsed = t - t0
        assert HEADER_S - 0.1 <= elapsed <= HEADER_S + SLACK, elapsed
        r = c.read_response()
        assert r.status == 408
        assert_json_error(r)
        assert r.has_token("Connection", "close")
        gone, extra = c.wait_closed(2)
        assert gone and extra == b""


def test_slowloris_on_second_request(srv):
    """The head timeout also applies to the next request of a keep-alive
    connection, counted from its first byte."""
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        c.send(b"GET /health HTTP/1.1\r\n")
        t = trickle_until_answer(c, b"Host: xxxxxxxxxxxxxxxxxxxxxxxx", 0.5, HEADER_S + SLACK + 1)
        assert t is not None
        assert HEADER_S - 0.1 <= t - t0 <= HEADER_S + SLACK, t - t0
        r = c.read_response()
        assert r.status == 408
        gone, _ = c.wait_closed(2)
        assert gone


def test_silent_connection_closed(srv):
    """A connection that never sends a byte is closed after the head
    timeout (a 408 is allowed, but nothing else)."""
    with Conn(srv.port, timeout=10) as c:
        t0 = time.monotonic()
        assert readable(c.sock, HEADER_S + SLACK + 1), "silent connection still open"
        elapsed = time.monotonic() - t0
        assert HEADER_S - 0.1 <= elapsed <= HEADER_S + SLACK, elapsed
        gone, extra = c.wait_closed(2)
        assert gone
        assert extra == b"" or extra.startswith(b"HTTP/1.1 408 "), extra


def test_idle_keepalive_closed(srv):
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/health"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        gone, extra = c.wait_closed(KEEPALIVE_S + SLACK + 1)
        elapsed = time.monotonic() - t0
        assert gone, "idle keep-alive connection still open after %.1f s" % elapsed
        assert extra == b"", "an idle close sends nothing: %r" % extra
        assert KEEPALIVE_S - 0.1 <= elapsed <= KEEPALIVE_S + SLACK, elapsed


def test_active_keepalive_stays_open(srv):
    """Requests every 0.25 s keep a connection open well past keepalive."""
    with Conn(srv.port, timeout=10) as c:
        for _ in range(20):
            c.send(get("/"))
            assert c.read_response().status == 200
            time.sleep(0.25)
        c.send(get("/"))
        assert c.read_response().body == b"Hello World\n"


def test_stalled_body_408(srv):
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/health", headers=[("Content-Length", "10")]) + b"abc")
        t0 = time.monotonic()
        assert readable(c.sock, BODY_S + SLACK + 1), "no answer to a stalled body"
        elapsed = time.monotonic() - t0
        assert BODY_S - 0.1 <= elapsed <= BODY_S + SLACK, elapsed
        r = c.read_response()
        assert r.status == 408
        assert_json_error(r)
        assert r.has_token("Connection", "close")
        gone, extra = c.wait_closed(2)
        assert gone and extra == b""


def test_stalled_chunked_body_408(srv):
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/health", headers=[("Transfer-Encoding", "chunked")]) + b"5\r\nhel")
        t0 = time.monotonic()
        assert readable(c.sock, BODY_S + SLACK + 1)
        assert BODY_S - 0.1 <= time.monotonic() - t0 <= BODY_S + SLACK
        r = c.read_response()
        assert r.status == 408
        gone, _ = c.wait_closed(2)
        assert gone


def test_slow_but_steady_body_is_fine(srv):
    """timeouts.body bounds a pause, not the whole body: 14 bytes 0.25 s
    apart (3.5 s in all, over the 2 s timeout) are read to the end."""
    with Conn(srv.port, timeout=10) as c:
        c.send(get("/health", headers=[("Content-Length", "14")]))
        for b in b"abcdefghijklmn":
            time.sleep(0.25)
            assert not readable(c.sock, 0), "answered before the body was complete"
            c.send(bytes([b]))
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}


def test_client_that_never_reads_is_dropped(srv):
    """timeouts.send: a client that stops reading a large file is cut off;
    it never gets the whole file."""
    size = 16 << 20
    data = os.urandom(size)
    with open(os.path.join(srv.root, "big.bin"), "wb") as f:
        f.write(data)
    with Conn(srv.port, timeout=10, rcvbuf=4096) as c:
        c.send(get("/static/big.bin"))
        # read the head only
        while b"\r\n\r\n" not in c.buf:
            c._fill(time.monotonic() + 5)
        assert c.buf.startswith(b"HTTP/1.1 200 "), c.buf[:200]
        time.sleep(SEND_S + SLACK + 1.5)
        got = len(c.buf)
        c.sock.settimeout(5)
        ended = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                chunk = c.sock.recv(1 << 20)
            except (ConnectionResetError, BrokenPipeError):
                ended = True
                break
            except socket.timeout:
                break
            if not chunk:
                ended = True
                break
            got += len(chunk)
        assert ended, "connection neither finished nor dropped"
        head_len = c.buf.index(b"\r\n\r\n") + 4
        assert got - head_len < size, "the whole file arrived: the send timeout did not fire"


def test_keepalive_zero_turns_keepalive_off(cohort):
    s = cohort({"timeouts": {"keepalive": "0s"}})
    with Conn(s.port) as c:
        c.send(get("/"))
        r = c.read_response()
        assert r.status == 200
        assert r.has_token("Connection", "close")
        gone, _ = c.wait_closed(2)
        assert gone
