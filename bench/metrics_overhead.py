#!/usr/bin/python3
"""Overhead of the metrics on the request path.

    /usr/bin/python3 bench/metrics_overhead.py [--tetherd build/tetherd] [--rounds 5]
                                               [--scrape-interval 1.0] [--duration 5]

wrk -t1 -c32 (keep-alive) against tetherd with one worker in front of a local nginx (fixed
100-byte response), with the admin endpoint enabled and /metrics scraped every interval, versus
not enabled. Runs alternate (off, on, off, on, ...) so machine noise falls on both; prints every
run and the medians. Everything runs on 127.0.0.1 in a scratch directory; every process is
stopped at the end. Counting itself is always on (see docs/metrics.md, "Overhead").
"""

import argparse
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_nginx(scratch, port):
    temps = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    for name in temps:
        (scratch / name).mkdir()
    paths = "\n".join(f"    {name}_temp_path {scratch / name};" for name in temps)
    (scratch / "nginx.conf").write_text(f"""user root;
worker_processes 1;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{paths}
    keepalive_timeout 60s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{'x' * 99}\\n"; }}
    }}
}}
""")
    proc = subprocess.Popen(["/usr/sbin/nginx", "-p", str(scratch), "-c",
                             str(scratch / "nginx.conf"), "-e", str(scratch / "nginx-error.log"),
                             "-g", "daemon off;"])
    wait_port(port)
    return proc


def one_run(args, scratch, upstream_port, admin_on):
    listen, admin = free_port(), free_port()
    config = "[tether]\nworkers = 1\nlog_level = warn\n"
    if admin_on:
        config += f"admin = 127.0.0.1:{admin}\n"
    config += (f"\n[upstream default]\nurl = http://127.0.0.1:{upstream_port}\n"
               f"listen = 127.0.0.1:{listen}\n")
    path = scratch / ("admin-on.ini" if admin_on else "admin-off.ini")
    path.write_text(config)
    tetherd = subprocess.Popen([args.tetherd, "-c", str(path)])
    try:
        wait_port(listen)
        done = threading.Event()
        scrapes = []

        def scraper():
            while not done.wait(args.scrape_interval):
                t0 = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                    r.read()
                scrapes.append(time.perf_counter() - t0)

        thread = None
        if admin_on:
            wait_port(admin)
            thread = threading.Thread(target=scraper)
            thread.start()
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{args.duration}s",
                              f"http://127.0.0.1:{listen}/"], capture_output=True, text=True).stdout
        done.set()
        if thread:
            thread.join()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return rps, scrapes
    finally:
        stop(tetherd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tetherd", default=str(ROOT / "build" / "tetherd"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    for tool in ("wrk", "/usr/sbin/nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (scripts/setup.sh installs it)")
    scratch = Path(tempfile.mkdtemp(prefix="tether-metrics-overhead."))
    upstream_port = free_port()
    nginx = start_nginx(scratch, upstream_port)
    results = {False: [], True: []}
    try:
        for rnd in range(args.rounds):
            for admin_on in (False, True):
                rps, scrapes = one_run(args, scratch, upstream_port, admin_on)
                results[admin_on].append(rps)
                note = (f"  ({len(scrapes)} scrapes, slowest {max(scrapes) * 1000:.1f} ms)"
                        if scrapes else "")
                print(f"round {rnd}: admin {'on ' if admin_on else 'off'} {rps:10.1f} req/s{note}",
                      flush=True)
    finally:
        stop(nginx)
        shutil.rmtree(scratch, ignore_errors=True)
    off, on = statistics.median(results[False]), statistics.median(results[True])
    print(f"admin off: median {off:.1f} req/s (min {min(results[False]):.1f}, "
          f"max {max(results[False]):.1f})")
    print(f"admin on, /metrics every {args.scrape_interval:g} s: median {on:.1f} req/s "
          f"(min {min(results[True]):.1f}, max {max(results[True]):.1f})")
    print(f"difference: {100 * (on - off) / off:+.2f}%")


if __name__ == "__main__":
    main()
