#!/usr/bin/python3
"""Feeds the framing table of tests/integration/test_framing.py to tetherd, nginx and HAProxy on
loopback and prints what each did, as a Markdown table (docs/internals/framing.md).

    scripts/framing_compare.py [--tetherd build/tetherd] [--all]

For every bad request: the status the client got (or "close"/"reset" when nothing came back),
and "+fwd" when any of it reached the upstream. For every bad response: the status the client
got, "relayed" when the upstream's own status went through. Without --all only the rows where
the three differ are printed. Every process it starts is stopped; everything stays on 127.0.0.1.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from badpeer import BadPeer  # noqa: E402
from helpers import free_port, read_status  # noqa: E402
from test_framing import BAD_REQUESTS, BAD_RESPONSES, OK_RESPONSE  # noqa: E402

NGINX_CONF = """daemon off; pid {dir}/nginx.pid; error_log {dir}/nginx.log; worker_processes 1;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  upstream app {{ server 127.0.0.1:{peer}; keepalive 4; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_read_timeout 2s; }}
  }}
}}
"""

HAPROXY_CONF = """global
  maxconn 100
defaults
  mode http
  timeout connect 2s
  timeout client 3s
  timeout server 2s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server app 127.0.0.1:{peer}
"""

TETHER_CONF = """[tether]
workers = 1
[upstream app]
url = http://127.0.0.1:{peer}
listen = 127.0.0.1:{port}
response_timeout = 2s
"""


def wait_listening(port, proc):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("not listening")


def start(kind, peer_port, workdir, tetherd):
    port = free_port()
    if kind == "tetherd":
        path = os.path.join(workdir, "tether.ini")
        with open(path, "w") as fh:
            fh.write(TETHER_CONF.format(peer=peer_port, port=port))
        argv = [tetherd, "-c", path]
    elif kind == "nginx":
        path = os.path.join(workdir, "nginx.conf")
        with open(path, "w") as fh:
            fh.write(NGINX_CONF.format(dir=workdir, peer=peer_port, port=port))
        argv = ["nginx", "-p", workdir, "-c", path, "-e", os.path.join(workdir, "nginx.log")]
    else:
        path = os.path.join(workdir, "haproxy.cfg")
        with open(path, "w") as fh:
            fh.write(HAPROXY_CONF.format(peer=peer_port, port=port))
        argv = ["haproxy", "-db", "-f", path]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def exchange(port, raw):
    """The status line's code of the first response, or what ended the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            return "reset"
        outcome = read_status(sock, 3)
    return {"eof": "close", "garbled": "junk"}.get(outcome, outcome)


def run_case(kind, tetherd, raw, reply):
    peer = BadPeer("reply", reply=reply)
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = start(kind, peer.port, workdir, tetherd)
        try:
            got = exchange(port, raw)
            time.sleep(0.05)
        finally:
            stop(proc)
            peer.close()
    return got, peer.bytes_received > 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tetherd", default=os.path.join(ROOT, "build", "tetherd"))
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    kinds = ["tetherd", "nginx", "haproxy"]
    print("| request | tetherd | nginx 1.22 | HAProxy 2.6 |")
    print("| --- | --- | --- | --- |")
    for name, raw, _ in BAD_REQUESTS:
        cells = []
        for kind in kinds:
            got, forwarded = run_case(kind, args.tetherd, raw, OK_RESPONSE)
            cells.append(got + (" +fwd" if forwarded else ""))
        if args.all or len(set(cells)) > 1:
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print()
    print("| response | tetherd | nginx 1.22 | HAProxy 2.6 |")
    print("| --- | --- | --- | --- |")
    request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
    for name, raw in BAD_RESPONSES:
        cells = []
        upstream_status = raw.split(b" ")[1].decode(errors="replace")
        for kind in kinds:
            got, _ = run_case(kind, args.tetherd, request, raw)
            cells.append("relayed " + got if got == upstream_status and got != "502" else got)
        if args.all or len(set(cells)) > 1:
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
