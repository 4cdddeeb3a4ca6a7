"""A tiny HTTP/1.1 and WebSocket backend the proxy tests own.

    python3 pybackend.py PORT NAME

asyncio, raw bytes, one process; every response carries `X-Backend: NAME`.
Routes:
  GET  /id                 200, body NAME
  GET  /health             200 (or the code set by /set-health?code=N)
  GET  /set-health?code=N  sets what /health answers
  GET  /slow?ms=N          answers after N ms
  GET  /headers            the request head as JSON: {"method", "target", "headers": [[name, value]...]}
  GET  /hop                a response with hop-by-hop fields (Connection: X-Hop, X-Hop, Keep-Alive)
  POST /upload             reads the body (Content-Length or chunked) without keeping it;
                           answers {"bytes": N, "sha256": HEX}
  GET  /download?size=N[&chunked=1]  N bytes of a repeating pattern
  any  /reset              reads the head, then closes the connection without answering
  any  /status?code=N      answers N
  GET  /ws                 WebSocket (RFC 6455) echo: text and binary frames come back; close ends it
Counters: GET /count answers how many requests it has seen (all paths but /count, /conns and
/health); GET /count?path=P how many requests for path P it has seen (any path, /health included);
GET /conns how many connections it has accepted (the one asking included).
"""
import asyncio
import base64
import hashlib
import json
import sys

NAME = "backend"
HEALTH = [200]
COUNT = [0]
BY_PATH = {}
CONNS = [0]
PATTERN = bytes(range(256)) * 256  # 64 KiB


def head_bytes(status, headers, body_len=None):
    reasons = {101: "Switching Protocols", 200: "OK", 404: "Not Found", 500: "Internal Server Error",
               503: "Service Unavailable"}
    lines = ["HTTP/1.1 %d %s" % (status, reasons.get(status, "Status"))]
    lines.append("X-Backend: " + NAME)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body_len is not None:
        lines.append("Content-Length: %d" % body_len)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def respond(w, status, body=b"", ctype="text/plain", extra=(), head=False):
    w.write(head_bytes(status, [("Content-Type", ctype)] + list(extra), len(body)) + (b"" if head else body))
    await w.drain()


async def hash_bytes(r, h, left):
    """Feeds the next `left` bytes of r to h as they arrive."""
    while left:
        chunk = await r.read(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("body cut short")
        h.update(chunk)
        left -= len(chunk)


async def read_body(r, headers):
    """Reads a request body as it arrives; returns (count, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    te = headers.get("transfer-encoding", "")
    if "chunked" in te.lower():
        while True:
            line = await r.readline()
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await r.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            await hash_bytes(r, h, size)
            n += size
            await r.readexactly(2)
    else:
        n = int(headers.get("content-length", "0"))
        await hash_bytes(r, h, n)
    return n, h.hexdigest()


async def websocket(r, w, headers):
    key = headers.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    w.write(head_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]))
    await w.drain()
    while True:
        b0, b1 = await r.readexactly(2)
        op, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await r.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await r.readexactly(8), "big")
        mask = await r.readexactly(4) if masked else b"\0\0\0\0"
        data = bytearray(await r.readexactly(n))
        for i in range(n):
            data[i] ^= mask[i % 4]
        if n <= 125:
            hdr = bytes([0x80 | op, n])
        elif n < 65536:
            hdr = bytes([0x80 | op, 126]) + n.to_bytes(2, "big")
        else:
            hdr = bytes([0x80 | op, 127]) + n.to_bytes(8, "big")
        w.write(hdr + bytes(data))
        await w.drain()
        if op == 8:
            return


async def handle(r, w):
    CONNS[0] += 1
    try:
        while True:
            line = await r.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            raw = []
            while True:
                h = await r.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                raw.append([k.strip(), v.strip()])
            headers = {k.lower(): v for k, v in raw}
            path, _, query = target.partition("?")
            q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if path not in ("/count", "/conns", "/health"):
                COUNT[0] += 1
            if path not in ("/count", "/conns"):
                BY_PATH[path] = BY_PATH.get(path, 0) + 1
            if path == "/reset":
                w.transport.abort()
                return
            if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                await websocket(r, w, headers)
                return
            if path == "/upload":
                n, digest = await read_body(r, headers)
                await respond(w, 200, json.dumps({"bytes": n, "sha256": digest}).encode(), "application/json")
            elif path == "/download":
                size = int(q.get("size", "0"))
                chunked = q.get("chunked") == "1"
                extra = [("Content-Type", "application/octet-stream")]
                if chunked:
                    w.write(head_bytes(200, extra + [("Transfer-Encoding", "chunked")]))
                else:
                    w.write(head_bytes(200, extra, size))
                left = size
                while left:
                    piece = PATTERN[:min(left, len(PATTERN))]
                    w.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    left -= len(piece)
                    await w.drain()
                if chunked:
                    w.write(b"0\r\n\r\n")
                await w.drain()
            else:
                await read_body(r, headers)
                if path == "/id":
                    await respond(w, 200, NAME.encode(), head=method == "HEAD")
                elif path == "/health":
                    await respond(w, HEALTH[0], b"ok")
                elif path == "/set-health":
                    HEALTH[0] = int(q.get("code", "200"))
                    await respond(w, 200, b"set")
                elif path == "/count":
                    n = BY_PATH.get(q["path"], 0) if "path" in q else COUNT[0]
                    await respond(w, 200, str(n).encode())
                elif path == "/conns":
                    await respond(w, 200, str(CONNS[0]).encode())
                elif path == "/slow":
                    await asyncio.sleep(int(q.get("ms", "1000")) / 1000)
                    await respond(w, 200, b"slow")
                elif path == "/headers":
                    body = json.dumps({"method": method, "target": target, "headers": raw}).encode()
                    await respond(w, 200, body, "application/json")
                elif path == "/hop":
                    await respond(w, 200, b"hop", extra=[("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
                                                         ("Keep-Alive", "timeout=5"), ("X-Kept", "1")])
                elif path == "/status":
                    await respond(w, int(q.get("code", "200")), b"status")
                else:
                    await respond(w, 404, b"not found")
            if headers.get("connection", "").lower() == "close":
                w.close()
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    print("listening", port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"
    asyncio.run(main(int(sys.argv[1])))
