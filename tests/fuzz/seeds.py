#!/usr/bin/python3
"""Writes the seed corpora in tests/fuzz/corpus/<harness>/ (small, hand-picked inputs that reach
every part of each harness). Run after changing an input layout; the files are committed.

Every harness's input starts with its selector bytes (see the harness), then the message."""

import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))
# Captured from a real kernel by tests/unit/data/record_churn.py (the unit tests' fixtures).
CHURN_DATA = os.path.join(os.path.dirname(HERE), "unit", "data")


def save(harness, data):
    folder = os.path.join(HERE, "corpus", harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, hashlib.sha1(data).hexdigest()[:16]), "wb") as fh:
        fh.write(data)


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET http://a.test:8080/p?q=1 HTTP/1.1\r\nHost: b.test\r\nConnection: keep-alive\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\n"
    b"X-Hop: 1\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nHost: [::1]:9000\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\nKeep-Alive: timeout=5\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose delimited",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
    b"HTTP/1.1 503 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
]
BODIES = [  # (selector, body): bit 0 response, bits 1-2 framing, bit 3 de-chunk
    (0, b"5\r\nhello\r\n0\r\n\r\n"),
    (0, b"a;x=\"q\"\r\n0123456789\r\n0\r\nT: v\r\n\r\nGET"),
    (2, b"hello"), (3, b"abc"), (5, b"no end"), (8, b"3\r\nabc\r\n0\r\n\r\n"),
    (9, b"5\r\nhello\r\n0\r\n\r\n"),
]
CONFIGS = [
    b"[tether]\nworkers = 2\nadmin = 127.0.0.1:9901\nproxy_listen = 127.0.0.1:15001\n\n"
    b"[upstream users]\nurl = http://127.0.0.1:8080\nhosts = users.internal\n"
    b"listen = 127.0.0.1:9001\nmax_connections = 100\nidle_timeout = auto\n",
    b"[upstream a]\nurl = https://a.example:8443\nlisten = unix:/run/t.sock\n"
    b"tls_ca = /etc/ssl/certs/ca-certificates.crt\nqueue_timeout = 500ms\nretry_buffer = 64k\n",
    b"[tether]\nlog_level = debug\nmax_head_size = 32k\nlingering_timeout = off\n"
    b"[upstream b]\nurl = http://[::1]:80\npreserve_host = yes\nmax_lifetime = 10m\n",
]
ADMIN = [
    b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
    b"HEAD /stats HTTP/1.1\r\n\r\n",
    b"GET /ready HTTP/1.0\r\n\r\n",
    b"GET /pools HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /config HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /nope HTTP/1.1\r\n\r\n",
]


def churn_fixture(name):
    with open(os.path.join(CHURN_DATA, name), "rb") as fh:
        return fh.read()


def netlink_messages(dump):
    """The netlink messages of a recorded sock_diag dump, each with its padding."""
    out, off = [], 0
    while off + 4 <= len(dump):
        length = int.from_bytes(dump[off:off + 4], "little")
        step = max(16, (length + 3) & ~3)
        out.append(dump[off:off + step])
        off += step
    return out


def main():
    for i, r in enumerate(REQUESTS):
        save("request_head", bytes([i, 3 * i + 1]) + r)
    for i, r in enumerate(RESPONSES):
        for flags in (0, 1, 4, 8):  # close, keep-alive for 1.0, de-chunk, answer to HEAD
            save("response_head", bytes([flags, i, 7 * i + 2]) + r)
    for i, (sel, body) in enumerate(BODIES):
        save("body", bytes([sel, 5, i, i + 9]) + body)
    for c in CONFIGS:
        save("config", c)
    for i, r in enumerate(ADMIN):
        save("admin", bytes([i, 5 * i + 3]) + r)
    fmt, header = churn_fixture("churn_format.txt"), churn_fixture("churn_header_page.txt")
    trace = churn_fixture("churn_trace.raw")
    save("tracefs", fmt + b"\0" + header + b"\0" + trace)
    save("tracefs", fmt + b"\0" + header + b"\0" + trace[:600])  # a page cut short
    save("tracefs", fmt + b"\0" + header + b"\0")  # the format files alone
    for name in ("churn_diag4.bin", "churn_diag6.bin"):
        dump = churn_fixture(name)
        save("sockdiag", dump)
        messages = netlink_messages(dump)
        save("sockdiag", messages[0])  # one socket, no NLMSG_DONE: more to come
        save("sockdiag", messages[-1])  # NLMSG_DONE alone
    # An NLMSG_ERROR reply (EACCES), as an unprivileged dump in another namespace gets.
    save("sockdiag", (36).to_bytes(4, "little") + (2).to_bytes(2, "little") + bytes(10)
         + (-13).to_bytes(4, "little", signed=True) + bytes(16))


if __name__ == "__main__":
    main()
