"""A paced load on the shop for tests that judge every answer afterwards
(the multi-host test, the soak): client threads, each on its own keep-alive
connection, paced to `rate` requests a second; every request is recorded
with its start and end times and its status (None, with the error, when the
connection failed)."""
import json
import random
import threading
import time

import rawhttp


def cart_add(user, product, qty):
    """(record, request bytes) of an add whose answer check_carts judges."""
    body = json.dumps({"productId": product, "quantity": qty}).encode()
    data = rawhttp.req("POST", "/api/cart/add", headers=[("User-Id", user), ("Content-Type", "application/json"),
                                                         ("Content-Length", str(len(body)))], body=body)
    return {"kind": "add", "user": user, "pid": product, "qty": qty}, data


class PacedLoad:
    """`make(i, k, rng)` gives the k-th (record, request bytes) of thread i;
    `connect()` opens a rawhttp.Conn; `around()`, when given, is a context
    manager each thread runs in (a network namespace, say). A thread stops
    by itself after `limit` seconds if nobody stopped it before."""

    def __init__(self, connect, make, seed, threads=4, rate=60, around=None, limit=300):
        self.connect, self.make, self.seed, self.rate, self.around = connect, make, seed, rate, around
        self.limit = limit
        self.stop_ev = threading.Event()
        self.records = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.thread, args=(i,), daemon=True) for i in range(threads)]

    def thread(self, i):
        if self.around:
            with self.around():
                self.run(i)
        else:
            self.run(i)

    def run(self, i):
        rng = random.Random("%s-%d" % (self.seed, i))
        conn, k, period = None, 0, 1.0 / self.rate
        t_end = time.monotonic() + self.limit
        while not self.stop_ev.is_set() and time.monotonic() < t_end:
            t_next = time.monotonic() + period
            rec, data = self.make(i, k, rng)
            rec["t0"] = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect()
                conn.send(data)
                r = conn.read_response()
                rec.update(t1=time.monotonic(), status=r.status, body=r.body[:200])
                if r.header("Connection") == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every client-visible failure is recorded
                rec.update(t1=time.monotonic(), status=None, err=repr(e)[:200])
                if conn:
                    conn.close()
                conn = None
            with self.lock:
                self.records.append(rec)
            k += 1
            time.sleep(max(0.0, t_next - time.monotonic()))
        if conn:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)

    def of(self, kind):
        return [r for r in self.records if r["kind"] == kind]
