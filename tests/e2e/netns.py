"""Hosts made of network namespaces, for tests that need several machines
(test_multihost.py). Needs root and iproute2 (`ip netns`, veth, bridge).

    net = Network()                      # namespaces named ch<pid>-<host>
    lb = net.host("lb", "10.77.0.10")
    app = net.host("app1", "10.77.0.11")
    net.up()                             # a switch (a bridge in its own namespace), one veth per host
    p = app.spawn([...], log_path)       # a process in the host (`ip netns exec`: the pid is the program's)
    with lb.entered():                   # this thread's sockets now live in the host
        socket.create_connection(("10.77.0.11", 3000))
    net.cut(app); net.restore(app)       # the host's cable, pulled at the switch and put back
    net.destroy()                        # every process spawned killed by pid, every namespace deleted

Nothing is created in the namespace the test runs in: both ends of each veth
are made inside namespaces, so whatever the hosts run listens only there.
"""
import contextlib
import ctypes
import os
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args, check=True):
    p = subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), p.stderr.strip()))
    return p


def available():
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    try:
        p = subprocess.run(["ip", "-V"], capture_output=True, timeout=10)
    except FileNotFoundError:
        return "needs iproute2 (`ip`): scripts/deps.sh test installs it"
    return None if p.returncode == 0 else "`ip` does not run"


class Proc:
    """A process spawned in a host; stopped by pid."""

    def __init__(self, host, argv, log_path, cwd=None, env=None):
        self.host, self.argv, self.log_path = host, list(argv), log_path
        self.logf = open(log_path, "ab")
        self.popen = subprocess.Popen(["ip", "netns", "exec", host.ns] + self.argv, cwd=cwd, env=env,
                                      stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def close(self):
        self.logf.close()


class Host:
    def __init__(self, net, name, addr):
        self.net, self.name, self.addr = net, name, addr
        self.ns = "%s-%s" % (net.prefix, name)

    def spawn(self, argv, log_path, cwd=None, env=None):
        p = Proc(self, argv, log_path, cwd, env)
        self.net.procs.append(p)
        return p

    def run(self, argv, timeout=60):
        """Runs a command in the host to its end: CompletedProcess (text)."""
        return subprocess.run(["ip", "netns", "exec", self.ns] + list(argv), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    @contextlib.contextmanager
    def entered(self):
        """The calling thread is in this host's network until the block ends
        (setns(2) on a network namespace is per thread)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open("/run/netns/%s" % self.ns, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns into %s: %s" % (self.ns, os.strerror(e)))
            yield self
        finally:
            _libc.setns(own, CLONE_NEWNET)
            os.close(fd)
            os.close(own)

    def netns_inode(self):
        return os.stat("/run/netns/%s" % self.ns).st_ino


class Network:
    """Hosts on one switch (10.77.0.0/24 by default)."""

    def __init__(self, prefix=None, prefixlen=24):
        self.prefix = prefix or "ch%d" % os.getpid()
        self.prefixlen = prefixlen
        self.switch = "%s-sw" % self.prefix
        self.hosts = []
        self.procs = []
        self.made = []  # namespaces created, for destroy()

    def host(self, name, addr):
        h = Host(self, name, addr)
        self.hosts.append(h)
        return h

    def up(self):
        _ip("netns", "add", self.switch)
        self.made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for h in self.hosts:
            _ip("netns", "add", h.ns)
            self.made.append(h.ns)
            # both ends are born inside namespaces: the switch's port is named after the host
            _ip("-n", self.switch, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
            _ip("-n", self.switch, "link", "set", h.name, "master", "br0", "up")
            _ip("-n", h.ns, "addr", "add", "%s/%d" % (h.addr, self.prefixlen), "dev", "eth0")
            _ip("-n", h.ns, "link", "set", "eth0", "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
        return self

    def cut(self, host):
        """The host's cable pulled at the switch: its packets are dropped,
        nobody gets a reset."""
        _ip("-n", self.switch, "link", "set", host.name, "down")

    def restore(self, host):
        _ip("-n", self.switch, "link", "set", host.name, "up")

    def destroy(self):
        """Kills every process spawned (SIGKILL by pid; a graceful stop is the
        caller's business before this), then deletes every namespace.
        Returns the problems met (never raises)."""
        problems = []
        for p in self.procs:
            try:
                p.kill()
                p.close()
            except Exception as e:  # noqa: BLE001 - teardown goes on
                problems.append("killing %s: %r" % (p.argv[0], e))
        for ns in reversed(self.made):
            p = _ip("netns", "del", ns, check=False)
            if p.returncode != 0:
                problems.append("ip netns del %s: %s" % (ns, p.stderr.strip()))
        self.made = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.path.exists("/run/netns/%s" % h.ns) for h in self.hosts):
            time.sleep(0.05)
        return problems
