"""Every rejection of issue 2 over a raw socket: the status, a valid HTTP
response with a JSON error body, and whether the connection is closed."""
import pytest

from rawhttp import Conn, assert_json_error, get

MAX_BODY = 1024
MAX_URI = 1024
MAX_HEAD = 4096
MAX_HEADERS = 20


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory({
        "limits": {"max_body": "1K", "max_uri": "1K", "max_header_size": "4K", "max_headers": MAX_HEADERS},
    })


H = b"Host: x\r\n"


def chunked(*chunks):
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# (id, request bytes, status, closed afterwards)
CASES = [
    ("request-line-no-version", b"GET /\r\n" + H + b"\r\n", 400, True),
    ("request-line-two-spaces", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("request-line-trailing-junk", b"GET / HTTP/1.1 x\r\n" + H + b"\r\n", 400, True),
    ("request-line-bad-version", b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400, True),
    ("request-line-lowercase-http", b"GET / http/1.1\r\n" + H + b"\r\n", 400, True),
    ("request-line-no-target", b"GET HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("request-line-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, True),
    ("target-not-origin-form", b"GET index.html HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("missing-host-1.1", b"GET / HTTP/1.1\r\n\r\n", 400, True),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
    ("two-hosts-same", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, True),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 400, True),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, True),
    ("host-bad-port", b"GET / HTTP/1.1\r\nHost: a:port\r\n\r\n", 400, True),
    ("host-userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, True),
    ("cl-and-te", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     + chunked(b"hello"), 400, True),
    ("cl-conflicting", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400, True),
    ("cl-conflicting-list", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400, True),
    ("cl-negative", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, True),
    ("cl-not-a-number", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: 5x\r\n\r\nhello", 400, True),
    ("bad-chunk-size", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     400, True),
    ("bad-chunk-size-after-good-chunk", b"GET /health HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-1\r\n", 400, True),
    ("chunk-missing-crlf", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
     400, True),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n  b\r\n\r\n", 400, True),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400, True),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\n\r\n", 400, True),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400, True),
    ("nul-in-name", b"GET / HTTP/1.1\r\n" + H + b"X-\x00A: a\r\n\r\n", 400, True),
    ("space-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : a\r\n\r\n", 400, True),
    ("empty-field-name", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400, True),
    ("control-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("del-in-target", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("tab-in-target", b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("te-in-http10", b"GET /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"hi"), 400, True),
    ("te-chunked-twice", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n"
     + chunked(b"hi"), 400, True),
    ("te-chunked-not-last", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400, True),
    ("413-content-length", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413, True),
    ("413-content-length-huge", b"GET /health HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
     413, True),
    ("413-one-big-chunk", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 1)
     + b"a" * 100, 413, True),
    ("413-many-chunks", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + chunked(*[b"a" * 300] * 4), 413, True),
    ("414", b"GET /" + b"a" * MAX_URI + b" HTTP/1.1\r\n" + H + b"\r\n", 414, True),
    ("414-way-over", b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, True),
    ("431-big-field", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * MAX_HEAD + b"\r\n\r\n", 431, True),
    ("431-fields-add-up", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 500)
                                                               for i in range(10)) + b"\r\n", 431, True),
    ("431-too-many-fields", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS))
     + b"\r\n", 431, True),
    ("501-te-gzip", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 501, True),
    ("501-te-gzip-chunked", b"GET /health HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
     + chunked(b"x"), 501, True),
    ("505-http2", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, True),
    ("505-http3", b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505, True),
    ("505-http0", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505, True),
    ("417-unknown-expectation", b"GET /health HTTP/1.1\r\n" + H + b"Expect: teapot\r\n\r\n", 417, True),
]


def exchange_and_check(port, data, status, closed, follow=True):
    """Sends data (then a valid request, so that a server that wrongly reads
    on would answer it), and checks the one answer and the close."""
    with Conn(port, timeout=5) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == status, r
        assert r.version == "HTTP/1.1"
        assert_json_error(r)
        assert r.header("Date")
        if closed:
            assert r.has_token("Connection", "close"), r
            if follow:
                try:
                    c.send(get("/"))
                except OSError:
                    pass
            gone, extra = c.wait_closed(3)
            assert extra == b"", "bytes after a closing error response: %r" % extra[:200]
            assert gone, "connection left open after a %d" % status
        else:
            assert c.is_open()
        return r


@pytest.mark.parametrize("data,status,closed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejection(srv, data, status, closed):
    exchange_and_check(srv.port, data, status, closed)


@pytest.mark.parametrize("data,status,closed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejection_after_a_good_request(srv, data, status, closed):
    """The same rejection as the second request on a keep-alive connection,
    pipelined behind a good one."""
    with Conn(srv.port, timeout=5) as c:
        c.send(get("/health") + data)
        ok = c.read_response()
        assert ok.status == 200 and ok.json() == {"status": "ok"}
        r = c.read_response()
        assert r.status == status, r
        assert_json_error(r)
        gone, extra = c.wait_closed(3)
        assert extra == b""
        assert gone == closed


@pytest.mark.parametrize("data,status,closed", [c[1:] for c in CASES if c[0] in (
    "missing-host-1.1", "obs-fold", "control-in-target", "413-content-length", "414", "431-big-field",
    "505-http2", "bad-chunk-size")], ids=lambda v: None)
def test_rejection_split_byte_by_byte(srv, data, status, closed):
    """A rejection arrives the same way when the request trickles in."""
    with Conn(srv.port, timeout=5) as c:
        try:
            c.send_slowly(data, step=max(1, len(data) // 150), delay=0.002)
        except OSError:
            pass  # the server may answer and close before the end
        r = c.read_response()
        assert r.status == status, r
        assert_json_error(r)
        gone, _ = c.wait_closed(3)
        assert gone == closed


# --- limits: just under is accepted -------------------------------------

def test_body_at_max_body_accepted(srv):
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Content-Length", str(MAX_BODY))]) + b"a" * MAX_BODY)
        assert c.read_response().status == 200
        c.send(get("/health", headers=[("Transfer-Encoding", "chunked")]) + chunked(*[b"b" * 256] * 4))
        assert c.read_response().status == 200
        assert c.is_open()


def test_target_at_max_uri_accepted(srv):
    # exactly max_uri bytes of target: not 414 (no such route: 404)
    with Conn(srv.port) as c:
        c.send(b"GET /" + b"a" * (MAX_URI - 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 404
        assert c.is_open()


def test_max_headers_accepted(srv):
    fields = [("X-F%d" % i, "v") for i in range(MAX_HEADERS - 1)]  # + Host
    with Conn(srv.port) as c:
        c.send(get("/health", headers=fields))
        assert c.read_response().status == 200
        assert c.is_open()


def test_head_just_under_max_header_size_accepted(srv):
    head = get("/health", headers=[("X-Pad", "")])
    pad = MAX_HEAD - len(head) - 1
    data = get("/health", headers=[("X-Pad", "p" * pad)])
    assert len(data) < MAX_HEAD
    with Conn(srv.port) as c:
        c.send(data)
        assert c.read_response().status == 200


def test_large_body_is_not_buffered_as_head(srv):
    """A body larger than the read buffer but within max_body, in pieces."""
    with Conn(srv.port) as c:
        c.send(get("/health", headers=[("Content-Length", str(MAX_BODY))]))
        for i in range(0, MAX_BODY, 100):
            c.send(b"z" * min(100, MAX_BODY - i))
        assert c.read_response().status == 200


def test_server_still_healthy(srv):
    # after all the rejections no worker died
    r = Conn(srv.port)
    r.send(get("/health"))
    assert r.read_response().status == 200
    r.close()
    assert "restarting" not in srv.log()
    assert len(srv.workers()) == 2
