"""Route filters on every handler: without the shop (`app: "none"`, as
`cohort balance` runs) the response cache (routes[].cache.ttl) in front of
a proxy route, and the hello and health handlers in config routes; with the
shop, the request counters and the cache on a proxy route. The
backend is tests/e2e/pybackend.py, which counts the requests it sees per
path (GET /count?path=P)."""
import conftest
import rawhttp
from proxyutil import balancer, group, pybackend  # noqa: F401 (fixtures)
from test_shop import sqlite_counter


def routes(*extra):
    return {"routes": list(extra) + [{"path": "/*", "handler": "proxy", "upstream": "app", "cache": {"ttl": 60}}]}


def test_response_cache_on_a_proxy_route(pybackend, balancer):
    be = pybackend("c")
    lb = balancer(group(["127.0.0.1:%d" % be.port]), extra=routes())
    with rawhttp.Conn(lb.port) as c:  # one connection: one worker, its own cache
        c.send(rawhttp.get("/id"))
        r1 = c.read_response()
        c.send(rawhttp.get("/id"))
        r2 = c.read_response()
        assert r1.status == r2.status == 200 and r1.body == r2.body == b"c"
        assert r1.header("X-Cache") is None and r2.header("X-Cache") == "HIT"
        assert r2.header("X-Backend") == "c" and r2.header("Content-Length") == "1"
        assert be.count("/id") == 1, "two identical GETs within the TTL reach the upstream once"
        # HEAD is answered from the GET's entry
        c.send(rawhttp.req("HEAD", "/id"))
        h = c.read_response(head=True)
        assert h.status == 200 and h.header("X-Cache") == "HIT" and h.body == b""
        assert be.count("/id") == 1
        # the query is part of the key
        for q in ("?a=1", "?a=1", "?a=2"):
            c.send(rawhttp.get("/headers" + q))
            assert c.read_response().status == 200
        assert be.count("/headers") == 2
        # a chunked body streamed from the upstream is kept whole, and replayed with its length
        for _ in range(2):
            c.send(rawhttp.get("/download?size=70000&chunked=1"))
            r = c.read_response()
            assert r.status == 200 and len(r.body) == 70000
        assert r.header("X-Cache") == "HIT" and r.header("Content-Length") == "70000"
        assert r.header("Transfer-Encoding") is None
        assert be.count("/download") == 1
        # not kept: other statuses, other methods
        for _ in range(2):
            c.send(rawhttp.get("/status?code=404"))
            assert c.read_response().status == 404
        assert be.count("/status") == 2
        for _ in range(2):
            c.send(rawhttp.req("POST", "/upload", headers=[("Content-Length", "2")], body=b"hi"))
            assert c.read_response().json()["bytes"] == 2
        assert be.count("/upload") == 2


def test_hello_and_health_under_app_none(pybackend, balancer):
    be = pybackend("h")
    lb = balancer(group(["127.0.0.1:%d" % be.port]),
                  extra=routes({"path": "/hi", "handler": "hello"}, {"path": "/hz", "handler": "health"}))
    r = rawhttp.exchange(lb.port, rawhttp.get("/hi"))
    assert r.status == 200 and r.body == b"Hello World\n" and r.header("Content-Type") == "text/plain"
    r = rawhttp.exchange(lb.port, rawhttp.get("/hz"))
    assert r.status == 200 and r.body == b'{"status":"ok"}'
    assert be.count("/hi") == 0 and be.count("/hz") == 0
    assert rawhttp.exchange(lb.port, rawhttp.get("/id")).body == b"h"


def test_counters_and_cache_on_a_proxy_route_of_the_shop(pybackend, tmp_path):
    """With the shop, a proxy route is counted like the shop's own routes
    (request:<METHOD>:<route template>, in SQLite without Redis), a cache hit
    included, and its cache.ttl keeps the upstream's answer."""
    be = pybackend("s")
    s = conftest.make_server(tmp_path, {
        "upstreams": {"app": {"servers": ["127.0.0.1:%d" % be.port]}},
        "routes": [{"path": "/id", "handler": "proxy", "upstream": "app", "cache": {"ttl": 60}}]}, workers=1)
    try:
        s.start()
        with rawhttp.Conn(s.port) as c:
            for _ in range(3):
                c.send(rawhttp.get("/id"))
                r = c.read_response()
                assert r.status == 200 and r.body == b"s"
        assert r.header("X-Cache") == "HIT" and be.count("/id") == 1
        assert rawhttp.wait_for(lambda: sqlite_counter(s, "request:GET:/id") == 3, 8), sqlite_counter(s, "request:GET:/id")
    finally:
        conftest.finish_all([s])
