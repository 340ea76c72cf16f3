#!/usr/bin/python3
"""An upstream written the way many real servers are: Python's http.server with
protocol_version HTTP/1.1 and Nagle's algorithm on (the default), which writes a response's
head and its body in two separate writes.

    nagle_upstream.py [--host ADDR] [--body-size N]

Prints "PORT <n>" once it listens, then serves every connection on its own thread until
killed. Every GET gets 200 with a body of N bytes (default 2) and keep-alive. A GET with
"Upgrade" gets 101, then "one" and "two" in two more writes; then it reads, answers "got 2"
once two bytes have arrived, and keeps the connection until the client closes it.

The second write is small and the first is not yet acknowledged, so Nagle's algorithm holds it
until the peer's ACK: a peer that delays its ACKs sees each response stall for its
delayed-ACK timer (40 ms or more on Linux).
"""

import argparse
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"ok"

    def do_GET(self):
        if self.headers.get("Upgrade"):
            self.send_response(101)
            self.send_header("Upgrade", self.headers["Upgrade"])
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.write(b"one")
            self.wfile.write(b"two")
            received = b""
            while len(received) < 2:
                data = self.rfile.read1(65536)
                if not data:
                    return
                received += data
            self.wfile.write(b"got %d" % len(received))
            while self.rfile.read1(65536):
                pass
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()  # the head: one write
        self.wfile.write(self.body)  # the body: a second write

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body-size", type=int, default=2)
    args = parser.parse_args()
    Handler.body = (b"ok" * (args.body_size // 2 + 1))[: args.body_size]
    server = http.server.ThreadingHTTPServer((args.host, 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
