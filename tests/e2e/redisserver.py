"""A real redis-server for the shop's tests: its own free port and folder,
stopped by pid; and a minimal RESP client (no redis-py needed).

    r = RedisServer(tmpdir, aof=True).start()
    r.call("HGETALL", "cart:u1")
    r.kill()          # SIGKILL, like a crash
    r.start()         # same port and folder: the AOF brings the data back
    r.stop()
"""
import os
import shutil
import signal
import socket
import subprocess
import time

from conftest import free_port, pid_alive

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RespError(Exception):
    pass


class RespClient:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ValueError("bad RESP reply %r" % line)

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()


class RedisServer:
    def __init__(self, workdir, aof=False, port=None):
        self.dir = os.path.join(str(workdir), "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.aof = aof
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10.0):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--logfile", self.log_path]
        if self.aof:
            # every acknowledged write is on disk before Redis answers, so a
            # SIGKILL loses nothing that cohort answered 200 for
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = RespClient(self.port, timeout=1)
                try:
                    if c.call("PING") == "PONG":
                        return self
                finally:
                    c.close()
            except (OSError, ConnectionError, RespError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("redis-server did not start on port %d: %s" % (self.port, self.log()))
            time.sleep(0.05)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except FileNotFoundError:
            return ""

    def call(self, *args):
        c = RespClient(self.port)
        try:
            return c.call(*args)
        finally:
            c.close()

    def _end(self, sig):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self):
        """SIGKILL: a crash, no shutdown work."""
        self._end(signal.SIGKILL)

    def stop(self):
        self._end(signal.SIGTERM)
