"""The static-file handler (contract: src/http/static.h) on a temp root."""
import hashlib
import os
import socket
import threading
import time

import pytest

from rawhttp import Conn, assert_json_error, exchange, get, parse_http_date, req

BIG_SIZE = 8 << 20
SECRET = b"TOP SECRET: never served\n"

FILES = {
    "hello.txt": b"hello static\n",
    "index.html": b"<h1>root index</h1>\n",
    "page.html": b"<p>page</p>\n",
    "style.css": b"body{color:red}\n",
    "app.js": b"console.log(1)\n",
    "data.json": b'{"a":1}\n',
    "img.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "noext": b"no extension\n",
    "UPPER.TXT": b"upper case extension\n",
    "hello world.txt": b"with a space\n",
    "empty.txt": b"",
    "digits.txt": b"0123456789abcdefghij",
    "sub/index.html": b"<h1>sub index</h1>\n",
    "sub/deeper/file.txt": b"deep file\n",
    "emptydir/.keep": b"",
}


@pytest.fixture(scope="module")
def big():
    return os.urandom(BIG_SIZE)


@pytest.fixture(scope="module")
def srv(module_server_factory, big):
    files = dict(FILES)
    files["big.bin"] = big
    s = module_server_factory(files=files)
    work = s.workdir
    with open(os.path.join(work, "secret.txt"), "wb") as f:
        f.write(SECRET)
    os.makedirs(os.path.join(work, "outside"))
    with open(os.path.join(work, "outside", "secret2.txt"), "wb") as f:
        f.write(SECRET)
    # "root" is a sibling of secret.txt; a sibling sharing the root's name as
    # a prefix must not count as inside either
    os.makedirs(os.path.join(work, "root-evil"))
    with open(os.path.join(work, "root-evil", "x.txt"), "wb") as f:
        f.write(SECRET)
    r = s.root
    os.symlink("../secret.txt", os.path.join(r, "link_out"))
    os.symlink(os.path.join(work, "secret.txt"), os.path.join(r, "abs_out"))
    os.symlink(os.path.join(work, "outside"), os.path.join(r, "dir_out"))
    os.symlink("../root-evil/x.txt", os.path.join(r, "link_evil"))
    os.symlink("hello.txt", os.path.join(r, "link_in"))
    os.symlink(os.path.join(r, "hello.txt"), os.path.join(r, "abs_in"))
    os.symlink("sub", os.path.join(r, "dir_in"))
    os.symlink("nowhere", os.path.join(r, "dangling"))
    os.mkfifo(os.path.join(r, "fifo"))
    return s


def fetch(port, path, headers=(), method="GET"):
    with Conn(port, timeout=10) as c:
        c.send(req(method, path, headers=headers))
        return c.read_response(head=method == "HEAD")


def test_get_file(srv):
    r = fetch(srv.port, "/static/hello.txt")
    assert r.status == 200
    assert r.body == FILES["hello.txt"]
    assert r.header("Content-Length") == str(len(FILES["hello.txt"]))
    assert r.header("Content-Type").split(";")[0].strip() == "text/plain"
    etag = r.header("ETag")
    assert etag and etag.startswith('"') and etag.endswith('"') and len(etag) > 2, etag
    st = os.stat(os.path.join(srv.root, "hello.txt"))
    assert parse_http_date(r.header("Last-Modified")) == int(st.st_mtime)


@pytest.mark.parametrize("name,ctype", [
    ("page.html", "text/html"), ("index.html", "text/html"), ("style.css", "text/css"),
    ("app.js", ("text/javascript", "application/javascript")), ("data.json", "application/json"),
    ("img.png", "image/png"), ("noext", "application/octet-stream"), ("UPPER.TXT", "text/plain"),
    ("big.bin", "application/octet-stream"),
])
def test_content_type_by_extension(srv, name, ctype, big):
    r = fetch(srv.port, "/static/" + name)
    assert r.status == 200
    got = r.header("Content-Type").split(";")[0].strip()
    assert got in (ctype if isinstance(ctype, tuple) else (ctype,)), got
    assert r.body == (big if name == "big.bin" else FILES[name])


def test_empty_file(srv):
    r = fetch(srv.port, "/static/empty.txt")
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "0"


def test_percent_encoded_name_and_query(srv):
    assert fetch(srv.port, "/static/hello%20world.txt").body == FILES["hello world.txt"]
    r = fetch(srv.port, "/static/hello.txt?v=123&x")
    assert r.status == 200 and r.body == FILES["hello.txt"]
    assert fetch(srv.port, "/static/%68ello.txt").body == FILES["hello.txt"]


def test_if_none_match_304(srv):
    r = fetch(srv.port, "/static/hello.txt")
    etag = r.header("ETag")
    with Conn(srv.port) as c:
        # pipelined: a 304 must carry no body, or the next response is garbled
        c.send(get("/static/hello.txt", headers=[("If-None-Match", etag)]) + get("/health"))
        nm = c.read_response()
        assert nm.status == 304
        assert nm.header("ETag") == etag
        assert nm.header("Content-Length") in (None, str(len(FILES["hello.txt"])))
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.json() == {"status": "ok"}, nxt
    for value in ('"nope", ' + etag, "W/" + etag, "*"):
        assert fetch(srv.port, "/static/hello.txt", [("If-None-Match", value)]).status == 304, value
    r = fetch(srv.port, "/static/hello.txt", [("If-None-Match", '"something-else"')])
    assert r.status == 200 and r.body == FILES["hello.txt"]


def test_if_modified_since_304(srv):
    r = fetch(srv.port, "/static/page.html")
    lm = r.header("Last-Modified")
    nm = fetch(srv.port, "/static/page.html", [("If-Modified-Since", lm)])
    assert nm.status == 304 and nm.body == b""
    assert nm.header("Last-Modified") == lm
    later = fetch(srv.port, "/static/page.html", [("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")])
    assert later.status == 304
    earlier = fetch(srv.port, "/static/page.html", [("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")])
    assert earlier.status == 200 and earlier.body == FILES["page.html"]
    # If-None-Match decides when both are present
    both = fetch(srv.port, "/static/page.html", [("If-None-Match", '"other"'), ("If-Modified-Since", lm)])
    assert both.status == 200


def test_etag_changes_with_the_file(srv):
    p = os.path.join(srv.root, "changing.txt")
    with open(p, "wb") as f:
        f.write(b"version one\n")
    r1 = fetch(srv.port, "/static/changing.txt")
    with open(p, "wb") as f:
        f.write(b"version two, longer\n")
    r2 = fetch(srv.port, "/static/changing.txt")
    assert r2.body == b"version two, longer\n"
    assert r1.header("ETag") != r2.header("ETag")
    assert fetch(srv.port, "/static/changing.txt", [("If-None-Match", r1.header("ETag"))]).status == 200


@pytest.mark.parametrize("rng,first,last", [
    ("bytes=0-4", 0, 4), ("bytes=-3", 17, 19), ("bytes=5-", 5, 19), ("bytes=10-10", 10, 10),
    ("bytes=15-1000", 15, 19), ("bytes=-100", 0, 19),
])
def test_range_206(srv, rng, first, last):
    data = FILES["digits.txt"]
    r = fetch(srv.port, "/static/digits.txt", [("Range", rng)])
    assert r.status == 206, r
    assert r.body == data[first:last + 1]
    assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, len(data))
    assert r.header("Content-Length") == str(last - first + 1)


@pytest.mark.parametrize("rng", ["bytes=100000-", "bytes=20-", "bytes=-0"])
def test_range_416(srv, rng):
    r = fetch(srv.port, "/static/digits.txt", [("Range", rng)])
    assert r.status == 416, r
    assert r.header("Content-Range") == "bytes */%d" % len(FILES["digits.txt"])
    assert_json_error(r)


@pytest.mark.parametrize("rng", ["bytes=0-1,3-4", "bytes=5-2", "items=0-1", "bytes=x-y"])
def test_range_ignored_answers_whole(srv, rng):
    r = fetch(srv.port, "/static/digits.txt", [("Range", rng)])
    assert r.status == 200 and r.body == FILES["digits.txt"]


def test_range_in_big_file(srv, big):
    r = fetch(srv.port, "/static/big.bin", [("Range", "bytes=1000000-1999999")])
    assert r.status == 206
    assert r.body == big[1000000:2000000]
    r = fetch(srv.port, "/static/big.bin", [("Range", "bytes=-10")])
    assert r.body == big[-10:]


def test_head(srv):
    with Conn(srv.port) as c:
        c.send(req("HEAD", "/static/big.bin") + req("HEAD", "/static/hello.txt") + get("/static/hello.txt"))
        h1 = c.read_response(head=True)
        assert h1.status == 200 and h1.header("Content-Length") == str(BIG_SIZE)
        assert h1.header("ETag")
        h2 = c.read_response(head=True)
        assert h2.status == 200 and h2.header("Content-Length") == str(len(FILES["hello.txt"]))
        g = c.read_response()
        assert g.body == FILES["hello.txt"]
        assert c.is_open()


def test_big_file_intact(srv, big):
    r = fetch(srv.port, "/static/big.bin")
    assert r.status == 200
    assert r.header("Content-Length") == str(BIG_SIZE)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big).hexdigest()


def test_big_file_slow_reader(srv, big):
    """A client that reads slowly at first (small window: sendfile meets a
    full socket and must wait for it to drain)."""
    with Conn(srv.port, timeout=20, rcvbuf=8192) as c:
        c.send(get("/static/big.bin"))
        got = b""
        t_end = time.monotonic() + 0.8
        while time.monotonic() < t_end:
            got += c.sock.recv(4096)
            time.sleep(0.005)
        c.buf = got
        r = c.read_response(timeout=20)
        assert r.status == 200
        assert len(r.body) == BIG_SIZE
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(big).digest()
        # the connection is still good for another request
        c.send(get("/static/hello.txt"))
        assert c.read_response().body == FILES["hello.txt"]


def test_big_file_pipelined(srv, big):
    with Conn(srv.port, timeout=20) as c:
        c.send(get("/static/big.bin") + get("/health") + get("/static/big.bin", headers=[("Range", "bytes=0-9")])
               + get("/static/hello.txt"))
        r1 = c.read_response()
        assert r1.status == 200 and hashlib.sha256(r1.body).digest() == hashlib.sha256(big).digest()
        r2 = c.read_response()
        assert r2.status == 200 and r2.json() == {"status": "ok"}
        r3 = c.read_response()
        assert r3.status == 206 and r3.body == big[:10]
        assert c.read_response().body == FILES["hello.txt"]


def test_big_file_concurrent(srv, big):
    want = hashlib.sha256(big).digest()
    results = []

    def one():
        try:
            r = fetch(srv.port, "/static/big.bin")
            results.append(r.status == 200 and hashlib.sha256(r.body).digest() == want)
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True] * 6, results


def test_client_gone_mid_file(srv):
    """Clients that leave in the middle of a big file do not hurt the worker."""
    mark = len(srv.log())
    for _ in range(6):
        c = Conn(srv.port, rcvbuf=8192)
        c.send(get("/static/big.bin"))
        c.sock.recv(1000)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # reset
    assert fetch(srv.port, "/static/hello.txt").body == FILES["hello.txt"]
    assert "restarting" not in srv.log()[mark:]


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/../../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/sub/..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/%252e%252e/secret.txt",
    "/static/./../secret.txt",
    "/static//../secret.txt",
    "/static/link_out",
    "/static/abs_out",
    "/static/dir_out/secret2.txt",
    "/static/link_evil",
    "/static/../root-evil/x.txt",
    "/static/dangling",
    "/static/fifo",
    "/static/missing.txt",
    "/static/hello.txt%00.png",
    "/static/hello.txt/",
    "/static/emptydir/",
    "/static/%zz",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_outside_or_missing_is_404(srv, path):
    with Conn(srv.port, timeout=5) as c:
        c.send(get(path))
        r = c.read_response()
        assert r.status == 404, r
        assert SECRET not in r.body
        assert_json_error(r)
        # not a framing error: the connection stays usable
        c.send(get("/health"))
        assert c.read_response().status == 200


@pytest.mark.parametrize("path", ["http://x/static/../secret.txt", "http://x/static/%2e%2e/secret.txt"])
def test_traversal_in_absolute_form(srv, path):
    r = exchange(srv.port, get(path))
    assert r.status in (400, 404), r
    assert SECRET not in r.body


def test_never_serves_outside(srv):
    """Whatever the path, the secret's bytes never come back."""
    paths = [p + s for p in ("/static/", "/static/sub/", "/static/dir_in/") for s in (
        "..", "../", "../secret.txt", "%2e%2e/secret.txt", "../../secret.txt", "..%2f..%2fsecret.txt",
        "....//secret.txt", "..;/secret.txt", "%c0%ae%c0%ae/secret.txt")]
    with Conn(srv.port, timeout=5) as c:
        for p in paths:
            c.send(get(p))
            r = c.read_response()
            assert SECRET not in r.body, p
            assert r.status in (200, 404), (p, r)
            if r.status == 200:  # only a directory index of the root or sub
                assert r.body in (FILES["index.html"], FILES["sub/index.html"]), (p, r.body[:100])


def test_symlinks_inside_the_root_are_followed(srv):
    assert fetch(srv.port, "/static/link_in").body == FILES["hello.txt"]
    assert fetch(srv.port, "/static/abs_in").body == FILES["hello.txt"]
    assert fetch(srv.port, "/static/dir_in/deeper/file.txt").body == FILES["sub/deeper/file.txt"]


def test_directory_index(srv):
    r = fetch(srv.port, "/static/")
    assert r.status == 200 and r.body == FILES["index.html"]
    assert r.header("Content-Type").split(";")[0] == "text/html"
    r = fetch(srv.port, "/static/sub/")
    assert r.status == 200 and r.body == FILES["sub/index.html"]
    assert fetch(srv.port, "/static/sub/deeper/file.txt").body == FILES["sub/deeper/file.txt"]
    # a directory without index.html is not listed
    assert fetch(srv.port, "/static/sub/deeper/").status == 404


def test_static_methods(srv):
    r = fetch(srv.port, "/static/hello.txt", method="POST")
    assert r.status == 405
    assert [m.strip() for m in r.header("Allow").split(",")] == ["GET", "HEAD"]
    assert_json_error(r)
    r = fetch(srv.port, "/static/hello.txt", method="HEAD")
    assert r.status == 200 and r.body == b""


def test_fifo_does_not_block_the_worker(srv):
    t0 = time.monotonic()
    for _ in range(4):
        assert fetch(srv.port, "/static/fifo").status == 404
    assert time.monotonic() - t0 < 3
    assert fetch(srv.port, "/static/hello.txt").status == 200
