"""Run inside `unshare --net --mount` by test_proxy_checker.py: a private
loopback and /etc/resolv.conf pointing at a DNS server here on
127.0.0.1:53 that answers NAME with 127.0.0.9 and records, for every query,
which process sent it and its uid (the UDP socket's inode in
/proc/net/udp, then the process holding it). Then runs
`COHORT check-config -c CONFIG` and prints one JSON object: its exit code,
output, pid, and the queries.

usage: dnsprobe.py COHORT CONFIG NAME WORKDIR"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time


def children(pid):
    kids = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                kids += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return kids


def udp_inode(port):
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1].endswith(":%04X" % port):
                return fields[9]
    return None


def owner(inode, root_pid):
    target = "socket:[%s]" % inode
    pids = [root_pid]
    for p in pids:  # the process and its descendants
        pids += [k for k in children(p) if k not in pids]
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                    with open("/proc/%d/status" % pid) as f:
                        uid = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
                    return pid, [int(x) for x in uid]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return None, None


def answer(query, name):
    qid, _flags, qd = struct.unpack("!HHH", query[:6])
    i = 12
    labels = []
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode())
        i += 1 + query[i]
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    question = query[12:i + 5]
    if ".".join(labels) == name and qtype == 1:
        rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton("127.0.0.9")
        return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr
    rcode = 0 if ".".join(labels) == name else 3  # no AAAA; any other name: NXDOMAIN
    return struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 0, 0, 0) + question


def main():
    cohort, config, name, workdir = sys.argv[1:5]
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 53))
    queries = []
    state = {"pid": None}

    def serve():
        while True:
            data, peer = srv.recvfrom(4096)
            inode = udp_inode(peer[1])
            deadline = time.monotonic() + 2
            while state["pid"] is None and time.monotonic() < deadline:
                time.sleep(0.01)
            pid, uid = owner(inode, state["pid"]) if inode and state["pid"] else (None, None)
            queries.append({"pid": pid, "uid": uid})
            srv.sendto(answer(data, name), peer)

    threading.Thread(target=serve, daemon=True).start()
    p = subprocess.Popen([cohort, "check-config", "-c", config], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state["pid"] = p.pid
    out, err = p.communicate(timeout=60)
    print(json.dumps({"rc": p.returncode, "stdout": out.decode(), "stderr": err.decode(), "pid": p.pid,
                      "queries": queries}))


if __name__ == "__main__":
    main()
