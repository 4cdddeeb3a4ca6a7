"""The balancer's `retry_on_timeout` (an upstream group key): a request
that got no response byte within timeouts.first_byte goes to another server
when its method is idempotent, as when a host drops off the network with
requests in flight to it (tests/e2e/test_multihost.py pulls a cable). A POST
is never retried; with no other server the answer stays 504."""
import socket
import time

import rawhttp
from proxyutil import access_lines, balancer, group, pybackend  # noqa: F401 (fixtures)


def black_hole():
    """A server that completes the TCP handshake (the kernel does) and never
    answers: the listening socket is never accepted from."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def send(port, method, path, body=b""):
    headers = [("Content-Length", str(len(body)))] if method == "POST" else []
    t0 = time.monotonic()
    r = rawhttp.exchange(port, rawhttp.req(method, path, headers=headers, body=body), timeout=10)
    return r, time.monotonic() - t0


def test_an_idempotent_request_that_timed_out_goes_to_another_server(pybackend, balancer):
    hole = black_hole()
    try:
        fast = pybackend("fast")
        dead = "127.0.0.1:%d" % hole.getsockname()[1]
        lb = balancer(group([dead, "127.0.0.1:%d" % fast.port], retry_on_timeout=True,
                            timeouts={"first_byte": "300ms"}, passive={"failures": 0}), workers=1)
        slow_ones = 0
        for _ in range(4):  # round robin: every other request meets the black hole first
            r, took = send(lb.port, "GET", "/id")
            assert r.status == 200 and r.body == b"fast", r
            assert took < 5, took
            slow_ones += took > 0.25
        # (a pause of the machine can only make more of them look slow)
        assert slow_ones >= 2, "two GETs waited for the timeout, then went on: %d" % slow_ones
        lines = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["path"] == "/id"][3:] and
                                 [l for l in access_lines(lb) if l["path"] == "/id"], 5)
        assert lines and sum("skipped=%s:timeout" % dead in l["upstream"] for l in lines) == 2, lines

        # a POST is not idempotent (the first server may have acted on it):
        # a 504 when it met the black hole, never a retry on the other
        seen_before, answers = fast.count(), []
        for _ in range(4):
            r, took = send(lb.port, "POST", "/upload", b"x" * 10)
            answers.append((r.status, took))
        assert all(s == 200 or s == 504 and 0.25 < t < 5 for s, t in answers), answers
        assert any(s == 504 for s, _ in answers), answers
        assert fast.count() - seen_before == sum(s == 200 for s, _ in answers), "a POST was retried"
    finally:
        hole.close()


def test_with_no_other_server_the_timeout_is_504(balancer):
    hole = black_hole()
    try:
        lb = balancer(group(["127.0.0.1:%d" % hole.getsockname()[1]], retry_on_timeout=True,
                            timeouts={"first_byte": "300ms"}), workers=1)
        r, took = send(lb.port, "GET", "/x")
        assert r.status == 504 and r.json() == {"error": "upstream timed out"}, r
        assert 0.25 < took < 5, took
        line = rawhttp.wait_for(lambda: [l for l in access_lines(lb) if l["path"] == "/x"], 5)
        assert line and line[0]["upstream"] == "- attempts=1 skipped=127.0.0.1:%d:timeout" % hole.getsockname()[1], \
            "one timeout, not two: %s" % line
    finally:
        hole.close()
