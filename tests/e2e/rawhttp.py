"""Raw-socket HTTP/1.1 client helpers for the end-to-end tests.

Nothing here trusts the server: responses are parsed strictly (status line,
CRLF-terminated fields, Content-Length or chunked framing) so that a
malformed answer fails the test that received it.
"""
import email.utils
import json
import re
import socket
import time

CRLF = b"\r\n"


class Closed(Exception):
    """The server closed the connection (FIN or reset).

    `partial` holds the bytes of a response that had begun arriving, so a
    caller can tell "closed before any byte" from "cut off mid-response".
    """

    def __init__(self, msg, partial=b"", reset=False):
        super().__init__(msg)
        self.partial = partial
        self.reset = reset


class ProtocolError(AssertionError):
    """The server sent bytes that are not a valid HTTP/1.1 response."""


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as sent
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        """The value of a field (case-insensitive); asserts it is not repeated."""
        vals = self.header_all(name)
        assert len(vals) <= 1, "field %s repeated: %r" % (name, vals)
        return vals[0] if vals else default

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def has_token(self, name, token):
        """True when a comma-separated field holds `token` (case-insensitive)."""
        for v in self.header_all(name):
            if token.lower() in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %s %r body=%r>" % (self.status, self.reason, self.headers, self.body[:200])


TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
STATUS_RE = re.compile(rb"^(HTTP/1\.[01]) ([0-9]{3}) ([\t !-~\x80-\xff]*)$")


class Conn:
    """One TCP connection with a receive buffer."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_slowly(self, data, step=1, delay=0.005):
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            time.sleep(delay)

    def _fill(self, deadline, partial_from=0):
        """Reads more bytes into buf; raises Closed on EOF/reset, TimeoutError
        when the deadline passes."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete response in time; have %r" % self.buf[:300])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no complete response in time; have %r" % self.buf[:300])
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed("connection reset: %s" % e, self.buf[partial_from:], reset=True)
        if not chunk:
            raise Closed("connection closed by the server", self.buf[partial_from:])
        self.buf += chunk

    def _take_line(self, deadline, limit=65536):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[:i + 1]
                self.buf = self.buf[i + 1:]
                if not line.endswith(CRLF):
                    raise ProtocolError("line not ended by CRLF: %r" % line)
                return line[:-2]
            if len(self.buf) > limit:
                raise ProtocolError("line too long")
            self._fill(deadline)

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False, timeout=None):
        """Reads one whole response. `head`: the request was HEAD (no body
        follows whatever the framing fields say). Interim 1xx responses are
        returned as they are: call again for the final one."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        try:
            return self._read_response(head, deadline)
        except Closed as e:
            # everything consumed since the start belongs to this response
            raise Closed(str(e), self._consumed + e.partial, e.reset) from None

    def _read_response(self, head, deadline):
        self._consumed = b""
        if not self.buf:
            self._fill(deadline)
        status_line = self._take_line(deadline)
        self._consumed += status_line + CRLF
        m = STATUS_RE.match(status_line)
        if not m:
            raise ProtocolError("bad status line %r" % status_line)
        version, status, reason = m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")
        headers = []
        raw = status_line + CRLF
        while True:
            line = self._take_line(deadline)
            self._consumed += line + CRLF
            raw += line + CRLF
            if line == b"":
                break
            if b":" not in line:
                raise ProtocolError("bad field line %r" % line)
            name, value = line.split(b":", 1)
            if not TOKEN_RE.match(name):
                raise ProtocolError("bad field name %r" % name)
            if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
                raise ProtocolError("control byte in field value %r" % line)
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        resp = Response(version, status, reason, headers, b"", raw)
        if 100 <= status < 200 or status in (204, 304) or head:
            return resp
        te = resp.header_all("Transfer-Encoding")
        cl = resp.header_all("Content-Length")
        if te:
            if cl:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            if te[-1].split(",")[-1].strip().lower() != "chunked":
                raise ProtocolError("unknown transfer coding %r" % te)
            resp.body = self._read_chunked(deadline)
        elif cl:
            if len(cl) != 1 or not cl[0].isdigit():
                raise ProtocolError("bad Content-Length %r" % cl)
            n = int(cl[0])
            while len(self.buf) < n:
                try:
                    self._fill(deadline)
                except Closed as e:
                    raise Closed("closed after %d of %d body bytes" % (len(self.buf), n),
                                 self.buf, e.reset) from None
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            # delimited by close
            while True:
                try:
                    self._fill(deadline)
                except Closed:
                    break
            resp.body, self.buf = self.buf, b""
        return resp

    def _read_chunked(self, deadline):
        body = b""
        while True:
            line = self._take_line(deadline)
            self._consumed += line + CRLF
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            data = self._take(size, deadline)
            self._consumed += data
            body += data
            if self._take(2, deadline) != CRLF:
                raise ProtocolError("chunk not followed by CRLF")
        while self._take_line(deadline) != b"":
            pass
        return body

    def wait_closed(self, timeout=3.0):
        """Waits until the server closes the connection. Returns (closed,
        extra): closed is True on EOF or reset within the timeout; extra is
        any bytes that arrived meanwhile (there should be none)."""
        deadline = time.monotonic() + timeout
        extra = self.buf
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, extra
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, extra
            except (ConnectionResetError, BrokenPipeError):
                return True, extra
            if not chunk:
                return True, extra
            extra += chunk

    def is_open(self, wait=0.2):
        """True when the server has not closed the connection within `wait`
        seconds (and sent nothing unasked)."""
        closed, extra = self.wait_closed(wait)
        assert extra == b"", "unexpected bytes %r" % extra
        return not closed


def req(method, path, host="x", version="HTTP/1.1", headers=(), body=b""):
    """Builds request bytes."""
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(path, **kw):
    return req("GET", path, **kw)


def exchange(port, data, head=False, timeout=5.0):
    """Sends data on a new connection and reads one response."""
    with Conn(port, timeout=timeout) as c:
        c.send(data)
        return c.read_response(head=head)


def assert_json_error(resp):
    """Every error body is JSON {"error": "..."}."""
    ct = resp.header("Content-Type") or ""
    assert ct.split(";")[0].strip() == "application/json", "error Content-Type %r" % ct
    doc = json.loads(resp.body.decode("utf-8"))
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert isinstance(doc["error"], str) and doc["error"], doc


DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
                     r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                     r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$")


def parse_http_date(s):
    assert DATE_RE.match(s), "not an IMF-fixdate: %r" % s
    return email.utils.parsedate_to_datetime(s).timestamp()


def wait_for(pred, timeout=5.0, step=0.05):
    """Polls pred until it returns something true or timeout seconds pass;
    returns pred's last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
