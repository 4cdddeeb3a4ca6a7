#!/usr/bin/env python3
"""Memory cost of idle keep-alive connections and of an idle worker.

  idle_conns.py PID PORT [CONNS]

PID is the server's top process (master); its whole process tree is
measured. Opens CONNS connections (default 8000) to 127.0.0.1:PORT, sends one
`GET /` on each and reads the answer, so every connection is an idle
keep-alive connection afterwards; waits 3 s, then prints the tree's RSS
before and after and the cost per connection. The server's keep-alive
timeout must be longer than the run (about 10 s)."""
import os, resource, socket, sys, time


def tree(root):
    kids = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                s = open(f'/proc/{d}/stat').read()
                kids.setdefault(int(s[s.rindex(')') + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_kib(pid):
    for line in open(f'/proc/{pid}/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0


def tree_rss(root):
    return {p: rss_kib(p) for p in tree(root)}


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    before = tree_rss(pid)
    req = b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
    socks = []
    deadline = time.time() + 60
    for i in range(n):
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        s.sendall(req)
        socks.append(s)
        if len(socks) % 500 == 0 or i == n - 1:
            for t in socks[-500:]:
                got = b''
                while b'\r\n\r\n' not in got:
                    chunk = t.recv(4096)
                    if not chunk:
                        sys.exit(f'connection closed early after {len(socks)} connections')
                    got += chunk
        if time.time() > deadline:
            sys.exit('too slow: gave up')
    time.sleep(3)
    after = tree_rss(pid)
    for s in socks:
        s.close()
    b, a = sum(before.values()), sum(after.values())
    print(f'processes: {len(after)}; RSS KiB before: {before}; after: {after}')
    print(f'tree RSS before {b} KiB, after {a} KiB, {n} idle connections: '
          f'{(a - b) * 1024 / n:.0f} bytes each')


if __name__ == '__main__':
    main()
