#!/usr/bin/python3
"""Soak with faults: mixed traffic against a sanitizer build of tetherd while upstreams die.

    tests/soak/soak.py --tetherd build-asan/tetherd [--seconds 900] [--out DIR] [--seed N]

Starts three real upstreams (tests/integration/upstream.py, each with its own journal) behind
one tetherd (two workers, a dedicated port per upstream) and, for --seconds:

- traffic: keep-alive clients and close-per-request clients sending small GETs, large
  downloads (2-6 MB, checked byte for byte), POSTs with bodies and chunked uploads (each with a
  unique X-Request-Id, checked against the digest the upstream computed), and slow readers of a
  4 MB response;
- faults, one at a time on a random upstream: SIGKILL then a restart on the same port, a stall
  (SIGSTOP, then SIGCONT), a reset of every open upstream connection (upstream.py /__reset);
- a flood of bad input at tetherd: malformed heads, oversized heads, garbage, CL+TE smuggling,
  half-open connections holding half a head, connections closed without a byte.

Every loop is bounded in time and count. At the end it asserts:

- tetherd never died, exits 0 on SIGTERM and its log holds no sanitizer report (leak detection
  on: LeakSanitizer fails the exit status);
- fd count and RSS, sampled every second from /proc, are flat after warm-up: the second half of
  the samples is compared with the first half (medians and peaks, generous bounds);
- no POST reached an upstream twice (the journals of every upstream process are read, across
  restarts), and every POST answered 200 arrived exactly once with the right digest;
- no bad input reached an upstream, each got the answer it should (400, 431, 408 or a close);
- every failed client request is explained by an injected fault: a fault on the upstream it
  went to, active during the request or just before it (SLACK seconds), of a kind that can cause
  that failure (kill: 502/503/cut response; stall: 503/504; reset: 502/cut response). A cut
  response is one the upstream ended after tetherd relayed its head: no error response is
  possible then, the close is the signal (the client sees the body end short).

Writes samples.csv (t, fds, rss_kib, requests done, active fault), faults.csv, failures.csv,
summary.json, summary.txt and soak.png (gnuplot: fds and RSS over time, faults shaded) to
--out (default bench/results/soak-<UTC time>/). Exit status 0 when every check passed.
"""

import argparse
import collections
import csv
import hashlib
import json
import os
import random
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from helpers import (Client, ConnectionClosed, build_request, free_port, read_status,  # noqa: E402
                     stop_process)
from upstream import body_pattern  # noqa: E402

UPSTREAMS = 3
CLIENT_TIMEOUT = 30.0  # far above every fault's length: a timeout is a failure to explain
SLACK = 5.0  # seconds after a fault during which its after-effects still explain a failure
# The circuit breaker ejects an upstream whose connects fail (a kill, a stall's connect
# timeouts) and answers 503 at once until its cooldown ends, doubling on each re-ejection up to
# this: a 503 that long after such a fault is still its after-effect.
BREAKER_COOLDOWN_S = 2
BREAKER_MAX_COOLDOWN_S = 8
HEADER_TIMEOUT = 2  # tetherd's client_header_timeout in the soak, seconds
LARGE_SIZES = (2 << 20, 4 << 20, 6 << 20)
SLOW_SIZE = 4 << 20
EXPLAINS = {
    "kill": {"502", "503", "cut"},
    # A stall never cuts a response: before the head it is a 504 at response_timeout, after it
    # the body waits for the upstream (stalls last at most 6 s, response_idle_timeout is 60 s).
    # A cut under a stall is a bug.
    "stall": {"503", "504"},
    "reset": {"502", "cut"},
}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "AddressSanitizer:")
DIGESTS = {size: hashlib.sha256(body_pattern(size)).hexdigest()
           for size in LARGE_SIZES + (SLOW_SIZE,)}


def now():
    return time.monotonic()


class UpstreamProc:
    """One upstream.py on a fixed port, restartable after a SIGKILL; all its incarnations append
    to one journal."""

    def __init__(self, index, workdir):
        self.name = f"u{index}"
        self.port = free_port()
        self.journal = workdir / f"{self.name}.journal"
        # The journal is appended to across restarts of this run; one left by an earlier run
        # (an interrupted one too) would read as POSTs sent twice.
        self.journal.unlink(missing_ok=True)
        self.log = workdir / f"{self.name}.log"
        self.proc = None
        self.control_port = None
        self.starts = 0

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests/integration/upstream.py"), "--port",
                 str(self.port), "--name", self.name, "--record", str(self.journal),
                 "--keep-heads", "0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(15):
                raise RuntimeError(f"{self.name} did not start")
        lines = [self.proc.stdout.readline().decode() for _ in range(2)]
        self.control_port = int(lines[1].split()[1])
        self.starts += 1

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def reset_connections(self):
        with Client(self.control_port, timeout=10) as client:
            client.request("GET", "/__reset", [("Connection", "close")])

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a stalled upstream cannot act on SIGTERM
        stop_process(self.proc)


class Faults:
    """The injected faults: (upstream, kind, start, end), one at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done = []
        self.active = None

    def begin(self, upstream, kind):
        with self.lock:
            self.active = [upstream, kind, now(), None]

    def end(self):
        with self.lock:
            self.active[3] = now()
            self.done.append(tuple(self.active))
            self.active = None

    def active_kind(self):
        with self.lock:
            return f"{self.active[1]}:{self.active[0]}" if self.active else ""

    def explain(self, upstream, kind, t0, t1):
        """The fault that explains a failure of `kind` on `upstream` during [t0, t1], or None."""
        with self.lock:
            faults = self.done + ([tuple(self.active[:3]) + (now(),)] if self.active else [])
        for up, fkind, start, end in faults:
            slack = SLACK + (BREAKER_MAX_COOLDOWN_S if kind == "503" else 0)
            if up == upstream and kind in EXPLAINS[fkind] and t0 <= end + slack and t1 >= start:
                return (up, fkind, start, end)
        return None


class Results:
    """What the clients saw; thread-safe."""

    def __init__(self, t_start):
        self.lock = threading.Lock()
        self.t_start = t_start
        self.ops = collections.Counter()  # (op, outcome)
        self.failures = []  # (t0, t1, upstream, op, kind, detail)
        self.posts = {}  # X-Request-Id -> (sha256, answered 200)
        self.flood = collections.Counter()  # (kind, outcome)
        self.flood_unexpected = []
        self.done = 0

    def record(self, op, outcome):
        with self.lock:
            self.ops[(op, outcome)] += 1
            self.done += 1

    def fail(self, t0, t1, upstream, op, kind, detail):
        with self.lock:
            self.failures.append((t0, t1, upstream, op, kind, detail))
            self.ops[(op, "failed:" + kind)] += 1
            self.done += 1

    def post(self, request_id, digest, ok):
        with self.lock:
            self.posts[request_id] = (digest, ok)

    def flooded(self, kind, outcome, expected):
        with self.lock:
            self.flood[(kind, outcome)] += 1
            if outcome not in expected:
                self.flood_unexpected.append((now() - self.t_start, kind, outcome))


class BadAnswer(Exception):
    """The response was wrong in a way no fault may cause (wrong bytes, wrong digest)."""


def classify(err):
    """The failure kind of an exception raised by an exchange."""
    if isinstance(err, BadAnswer):
        return "wrong-answer"
    if isinstance(err, (ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        return "cut"
    if isinstance(err, socket.timeout):
        return "timeout"
    return "error:" + type(err).__name__


class LoadClient(threading.Thread):
    """One client loop: `style` is "keepalive", "close" or "slow"."""

    def __init__(self, soak, index, style):
        super().__init__(daemon=True, name=f"{style}-{index}")
        self.soak = soak
        self.style = style
        self.rng = random.Random(soak.seed * 1000 + index)
        self.index = index
        self.client = None
        self.client_port = None
        self.serial = 0

    def run(self):
        try:
            while not self.soak.stopping.is_set() and self.serial < self.soak.max_ops:
                self.serial += 1
                self.one()
                time.sleep(self.rng.uniform(0.005, 0.03))
        finally:
            self.drop()

    def drop(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def one(self):
        up = self.rng.randrange(UPSTREAMS)
        port = self.soak.listen_ports[up]
        if self.style == "slow":
            op = "slow-read"
        else:
            op = self.rng.choices(["get", "large", "post", "chunked"], [5, 1, 3, 1])[0]
        t0 = now()
        try:
            if self.style != "keepalive" or self.client is None or self.client_port != port:
                self.drop()
                self.client = Client(port, timeout=CLIENT_TIMEOUT)
                self.client_port = port
            status = getattr(self, "op_" + op.replace("-", "_"))(self.client)
        except Exception as err:  # noqa: BLE001 - every failure is classified and judged
            self.drop()
            self.soak.results.fail(t0, now(), up, op, classify(err), repr(err)[:200])
            return
        if self.style != "keepalive":
            self.drop()
        if status == 200:
            self.soak.results.record(op, "200")
        else:
            self.soak.results.fail(t0, now(), up, op, str(status), "")

    def headers(self):
        return [("Connection", "close")] if self.style != "keepalive" else []

    def request(self, client, method, target, headers=(), body=b""):
        resp = client.request(method, target, list(headers) + self.headers(), body)
        if resp.header("Connection") == "close" or self.style != "keepalive":
            self.drop()
        return resp

    def op_get(self, client):
        resp = self.request(client, "GET", f"/get/{self.name}/{self.serial}")
        if resp.status == 200 and resp.body != b"ok\n":
            raise BadAnswer(f"body {resp.body[:40]!r}")
        return resp.status

    def op_large(self, client):
        size = self.rng.choice(LARGE_SIZES)
        resp = self.request(client, "GET", f"/large/{self.name}/{self.serial}",
                            [("X-Body-Size", str(size))])
        if resp.status == 200 and hashlib.sha256(resp.body).hexdigest() != DIGESTS[size]:
            raise BadAnswer(f"large body of {len(resp.body)} bytes differs")
        return resp.status

    def post_body(self):
        size = self.rng.choice((0, 1, 100, 4000, 20000, 70000, 200000))
        return self.rng.randbytes(size)

    def check_post(self, request_id, body, resp):
        digest = hashlib.sha256(body).hexdigest()
        ok = resp.status == 200
        if ok and resp.header("X-Request-Body-Sha256") != digest:
            raise BadAnswer(f"upstream saw another body for {request_id}")
        self.soak.results.post(request_id, digest, ok)

    def op_post(self, client):
        body = self.post_body()
        request_id = f"{self.name}-{self.serial}"
        self.soak.results.post(request_id, hashlib.sha256(body).hexdigest(), False)
        resp = self.request(client, "POST", f"/post/{request_id}",
                            [("X-Request-Id", request_id)], body)
        self.check_post(request_id, body, resp)
        return resp.status

    def op_chunked(self, client):
        body = self.post_body()
        request_id = f"{self.name}-{self.serial}"
        self.soak.results.post(request_id, hashlib.sha256(body).hexdigest(), False)
        out, pos = bytearray(), 0
        while pos < len(body):
            piece = body[pos : pos + self.rng.choice((1, 17, 1000, 16384, 65536))]
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
            pos += len(piece)
        out += b"0\r\n\r\n"
        resp = self.request(client, "POST", f"/chunked/{request_id}",
                            [("X-Request-Id", request_id), ("Transfer-Encoding", "chunked")],
                            bytes(out))
        self.check_post(request_id, body, resp)
        return resp.status

    def op_slow_read(self, client):
        """A 4 MB response read 16 KiB at a time over 3-6 s: tetherd must stop reading the
        upstream while the client's socket is full, and resume."""
        client.send(build_request("GET", f"/slow/{self.name}/{self.serial}",
                                  [("X-Body-Size", str(SLOW_SIZE)), ("Connection", "close")]))
        resp = client.read_head()
        if resp.status != 200:
            client.read_body(resp)  # the body of the error response
            return resp.status
        length = int(resp.header("Content-Length"))
        pause = self.rng.uniform(3, 6) / (length / 16384)
        digest, got = hashlib.sha256(), 0
        while got < length:
            data = client.read_exact(min(16384, length - got), "a slowly read body")
            digest.update(data)
            got += len(data)
            time.sleep(pause)
        if digest.hexdigest() != DIGESTS[SLOW_SIZE]:
            raise BadAnswer("slowly read body differs")
        self.drop()
        return 200

    @property
    def name(self):
        return f"{self.style[0]}{self.index}"


class Flood(threading.Thread):
    """Bad input at tetherd's ports, one connection at a time; each kind must get its answer."""

    KINDS = {
        "malformed": {"400"},
        "garbage": {"400"},
        "oversized": {"431", "reset"},  # tetherd may reset while the client is still sending
        "smuggle": {"400"},
        "silent-close": {"eof"},
        "nul": {"400"},
    }

    def __init__(self, soak):
        super().__init__(daemon=True, name="flood")
        self.soak = soak
        self.rng = random.Random(soak.seed + 7)

    def payload(self, kind):
        if kind == "malformed":
            return b"GET /flood HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"
        if kind == "garbage":
            return b"\x16\x03\x01" + self.rng.randbytes(300).replace(b"\r\n", b"..") + b"\r\n\r\n"
        if kind == "oversized":
            return b"GET /flood HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        if kind == "smuggle":
            return (b"POST /flood HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /flood-2 HTTP/1.1\r\n\r\n")
        if kind == "nul":
            return b"GET /flood HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"
        return b""

    def run(self):
        for _ in range(self.soak.max_ops):
            if self.soak.stopping.is_set():
                return
            kind = self.rng.choice(sorted(self.KINDS))
            port = self.rng.choice(self.soak.listen_ports)
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as err:
                self.soak.results.flooded(kind, "connect:" + type(err).__name__, ())
                continue
            with sock:
                try:
                    if kind == "silent-close":
                        sock.shutdown(socket.SHUT_WR)
                    else:
                        sock.sendall(self.payload(kind))
                    outcome = read_status(sock, HEADER_TIMEOUT + 10)
                except (ConnectionResetError, BrokenPipeError):
                    outcome = "reset"
            self.soak.results.flooded(kind, outcome, self.KINDS[kind])
            time.sleep(self.rng.uniform(0.02, 0.1))


class HalfOpen(threading.Thread):
    """Batches of connections that send half a request head and stop: each must get 408 within
    client_header_timeout (plus a generous margin), while traffic goes on."""

    BATCH = 20

    def __init__(self, soak):
        super().__init__(daemon=True, name="half-open")
        self.soak = soak

    def run(self):
        for _ in range(self.soak.max_ops):
            if self.soak.stopping.is_set():
                return
            socks = []
            for i in range(self.BATCH):
                port = self.soak.listen_ports[i % UPSTREAMS]
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    sock.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\nX-Half: ")
                    socks.append(sock)
                except OSError as err:
                    self.soak.results.flooded("half-head", "connect:" + type(err).__name__, ())
            for sock in socks:
                with sock:
                    self.soak.results.flooded("half-head", read_status(sock, HEADER_TIMEOUT + 15),
                                              {"408"})
            self.soak.stopping.wait(1)


class Sampler(threading.Thread):
    """fd count and VmRSS of tetherd, every second."""

    def __init__(self, soak):
        super().__init__(daemon=True, name="sampler")
        self.soak = soak
        self.rows = []  # (t, fds, rss_kib, done, fault)

    def sample(self):
        pid = self.soak.tetherd.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = 0
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        self.rows.append((round(now() - self.soak.t_start, 2), fds, rss, self.soak.results.done,
                          self.soak.faults.active_kind()))

    def run(self):
        while not self.soak.sampling_done.is_set():
            if self.soak.tetherd.poll() is not None:
                return
            try:
                self.sample()
            except OSError:
                return
            self.soak.sampling_done.wait(1)


class FaultInjector(threading.Thread):
    """One fault at a time on a random upstream, every 2-5 s, until QUIET seconds before the
    end (so the run ends with every upstream up)."""

    QUIET = 8

    def __init__(self, soak):
        super().__init__(daemon=True, name="faults")
        self.soak = soak
        self.rng = random.Random(soak.seed + 13)
        self.counts = collections.Counter()

    def run(self):
        soak = self.soak
        for _ in range(soak.max_ops):
            if soak.stopping.wait(self.rng.uniform(2, 5)):
                return
            if now() > soak.t_end - self.QUIET:
                return
            index = self.rng.randrange(UPSTREAMS)
            up = soak.upstreams[index]
            kind = self.rng.choice(("kill", "stall", "reset"))
            soak.faults.begin(index, kind)
            try:
                if kind == "kill":
                    up.kill()
                    soak.stopping.wait(self.rng.uniform(0.5, 3))
                    up.start()
                elif kind == "stall":
                    up.signal(signal.SIGSTOP)
                    soak.stopping.wait(self.rng.uniform(1, 6))
                    up.signal(signal.SIGCONT)
                else:
                    up.reset_connections()
            finally:
                soak.faults.end()
            self.counts[kind] += 1


def tetherd_config(listen_ports, upstream_ports, admin_port):
    text = (f"[tether]\nworkers = 2\nadmin = 127.0.0.1:{admin_port}\n"
            f"client_header_timeout = {HEADER_TIMEOUT}s\nclient_idle_timeout = 10s\n"
            "drain_timeout = 5s\nlog_level = warn\n")
    for i, (listen, port) in enumerate(zip(listen_ports, upstream_ports)):
        text += (f"\n[upstream u{i}]\nurl = http://127.0.0.1:{port}\nlisten = 127.0.0.1:{listen}\n"
                 "max_connections = 32\nmax_idle = 16\nconnect_timeout = 1s\n"
                 "response_timeout = 3s\nqueue_timeout = 2s\n"
                 f"breaker_cooldown = {BREAKER_COOLDOWN_S}s\n"
                 f"breaker_max_cooldown = {BREAKER_MAX_COOLDOWN_S}s\n")
    return text


def halves(values):
    """(first half, second half) of `values`."""
    mid = len(values) // 2
    return values[:mid], values[mid:]


def judge_flat(rows, warmup, seconds):
    """Checks that fds and RSS after warm-up and before the load stopped do not grow from the
    first half to the second; returns (figures, problems)."""
    steady = [row for row in rows if warmup <= row[0] <= seconds]
    if len(steady) < 10:
        return {}, [f"only {len(steady)} samples after the {warmup:.0f} s warm-up"]
    figures, problems = {}, []
    for label, col, abs_slack, rel in (("fds", 1, 24, 0.5), ("rss_kib", 2, 12 * 1024, 0.25)):
        first, second = halves([row[col] for row in steady])
        m1, m2 = statistics.median(first), statistics.median(second)
        p1, p2 = max(first), max(second)
        figures[label] = {"first_half_median": m1, "second_half_median": m2,
                          "first_half_max": p1, "second_half_max": p2,
                          "min": min(first + second), "max": max(p1, p2)}
        if m2 > m1 + max(abs_slack, rel * m1):
            problems.append(f"{label}: median grew from {m1} to {m2} (second half vs first)")
        if p2 > p1 + max(2 * abs_slack, rel * p1):
            problems.append(f"{label}: peak grew from {p1} to {p2} (second half vs first)")
    return figures, problems


def read_journals(upstreams):
    """{id: count} of POST heads and of bodies received, and the heads of bad input."""
    heads, bodies, flood = collections.Counter(), collections.defaultdict(list), []
    for up in upstreams:
        if not up.journal.exists():
            continue
        for line in up.journal.read_text(errors="replace").splitlines():
            parts = line.split(" ")
            if parts[0] == "H" and len(parts) >= 4:
                if parts[2].startswith("/flood"):
                    flood.append(line)
                if parts[1] == "POST" and parts[3] != "-":
                    heads[parts[3]] += 1
            elif parts[0] == "B" and len(parts) >= 4 and parts[1] != "-":
                bodies[parts[1]].append(parts[2])
    return heads, bodies, flood


def plot(out, rows, faults, t_start):
    script = out / "soak.gp"
    lines = [
        "set terminal pngcairo size 1200,600 font ',10'",
        f"set output '{out / 'soak.png'}'",
        "set datafile separator ','",
        "set title 'tetherd (ASan+UBSan) under the soak: fds and RSS; faults shaded "
        "(red kill, orange stall, blue reset)'",
        "set xlabel 'seconds'", "set ylabel 'open fds'", "set y2label 'RSS (MiB)'",
        "set ytics nomirror", "set y2tics", "set key top left", "set grid",
        "set yrange [0:*]", "set y2range [0:*]",
    ]
    colors = {"kill": "#ff9999", "stall": "#ffd27f", "reset": "#99bbff"}
    for i, (_, kind, start, end) in enumerate(faults, 1):
        lines.append(f"set object {i} rect from {start - t_start:.2f}, graph 0 to "
                     f"{max(end, start + 0.3) - t_start:.2f}, graph 1 behind "
                     f"fc rgb '{colors[kind]}' fs solid 0.35 noborder")
    lines.append(f"plot '{out / 'samples.csv'}' every ::1 using 1:2 with lines lw 2 title 'fds', "
                 f"'' every ::1 using 1:($3/1024) axes x1y2 with lines lw 2 title 'RSS MiB'")
    script.write_text("\n".join(lines) + "\n")
    result = subprocess.run(["gnuplot", str(script)], capture_output=True, text=True)
    return result.returncode == 0, result.stderr.strip()


class Soak:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.max_ops = args.max_ops
        self.stopping = threading.Event()
        self.sampling_done = threading.Event()
        self.faults = Faults()
        self.out = Path(args.out) if args.out else (
            ROOT / "bench/results" / time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime()))
        self.out.mkdir(parents=True, exist_ok=True)
        self.upstreams = [UpstreamProc(i, self.out) for i in range(UPSTREAMS)]
        self.listen_ports = [free_port() for _ in range(UPSTREAMS)]
        self.admin_port = free_port()
        self.tetherd = None
        self.t_start = self.t_end = None
        self.results = None

    def start_tetherd(self):
        config = self.out / "tetherd.ini"
        config.write_text(tetherd_config(self.listen_ports, [u.port for u in self.upstreams],
                                         self.admin_port))
        env = dict(os.environ,
                   # A small quarantine: ASan's default (256 MiB of freed memory held back)
                   # would show as RSS growth for minutes and hide a real leak's slope.
                   ASAN_OPTIONS="detect_leaks=1:exitcode=23:quarantine_size_mb=8:"
                                "abort_on_error=0",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
        self.tetherd_log = self.out / "tetherd.log"
        with open(self.tetherd_log, "wb") as log:
            self.tetherd = subprocess.Popen([self.args.tetherd, "-c", str(config)],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env)
        deadline = now() + 20
        for port in self.listen_ports + [self.admin_port]:
            while True:
                if self.tetherd.poll() is not None:
                    raise RuntimeError(f"tetherd exited at startup: {self.tetherd_log}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if now() > deadline:
                        raise RuntimeError("tetherd does not listen") from None
                    time.sleep(0.05)

    def run(self):
        for up in self.upstreams:
            up.start()
        self.start_tetherd()
        self.t_start = now()
        self.t_end = self.t_start + self.args.seconds
        self.results = Results(self.t_start)
        sampler = Sampler(self)
        injector = FaultInjector(self)
        clients = ([LoadClient(self, i, "keepalive") for i in range(4)]
                   + [LoadClient(self, 10 + i, "close") for i in range(3)]
                   + [LoadClient(self, 20, "slow")])
        threads = [sampler, injector, Flood(self), HalfOpen(self)] + clients
        for thread in threads:
            thread.start()
        while now() < self.t_end and self.tetherd.poll() is None:
            time.sleep(min(1.0, max(0.0, self.t_end - now())))
            if self.args.progress and int(now() - self.t_start) % 60 == 0:
                print(f"soak: {now() - self.t_start:.0f}s, {self.results.done} requests, "
                      f"{len(self.results.failures)} failed", flush=True)
        self.stopping.set()
        stragglers = []
        for thread in threads[1:]:
            thread.join(CLIENT_TIMEOUT * 2 + 10)
            if thread.is_alive():
                stragglers.append(thread.name)
        self.sampling_done.set()
        sampler.join(5)
        return sampler.rows, injector.counts, stragglers

    def metrics(self):
        try:
            with Client(self.admin_port, timeout=10) as client:
                return client.request("GET", "/metrics", [("Connection", "close")]).text
        except OSError as err:
            return f"# /metrics failed: {err!r}\n"

    def stop_all(self):
        for up in self.upstreams:
            up.stop()
        if self.tetherd is not None and self.tetherd.poll() is None:
            self.tetherd.kill()
            self.tetherd.wait()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tetherd", default=str(ROOT / "build-asan/tetherd"))
    parser.add_argument("--seconds", type=float, default=900)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out of the flatness judgement (default: 25%%, "
                             "at most 120)")
    parser.add_argument("--out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-ops", type=int, default=1_000_000,
                        help="bound on the iterations of every loop")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(120.0, args.seconds * 0.25)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    soak = Soak(args)
    problems = []
    try:
        rows, fault_counts, stragglers = soak.run()
        alive_at_end = soak.tetherd.poll() is None
        if not alive_at_end:
            problems.append(f"tetherd died during the soak with status {soak.tetherd.returncode}")
        if stragglers:
            problems.append(f"load threads still running after the end: {stragglers}")
        metrics_text = soak.metrics() if alive_at_end else ""
        rc = None
        if alive_at_end:
            soak.tetherd.send_signal(signal.SIGTERM)
            try:
                rc = soak.tetherd.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("tetherd did not exit within 30 s of SIGTERM")
        if rc not in (None, 0):
            problems.append(f"tetherd exited with status {rc} (23: LeakSanitizer found a leak)")
    finally:
        soak.stop_all()

    log_text = soak.tetherd_log.read_text(errors="replace")
    reports = [line for line in log_text.splitlines()
               if any(marker in line for marker in SANITIZER_MARKERS)]
    if reports:
        problems.append(f"sanitizer report in tetherd's log: {reports[0]}")

    res = soak.results
    figures, flat_problems = judge_flat(rows, warmup, args.seconds)
    problems += flat_problems

    heads, bodies, flood_heads = read_journals(soak.upstreams)
    twice = sorted(i for i, n in heads.items() if n > 1)
    twice += sorted(i for i, d in bodies.items() if len(d) > 1 and i not in twice)
    if twice:
        problems.append(f"{len(twice)} POSTs reached an upstream more than once: {twice[:5]}")
    unknown = sorted(set(heads) - set(res.posts))
    if unknown:
        problems.append(f"upstreams received POST ids no client sent: {unknown[:5]}")
    answered = [i for i, (_, ok) in res.posts.items() if ok]
    lost = [i for i in answered if bodies.get(i) != [res.posts[i][0]]]
    if lost:
        problems.append(f"{len(lost)} POSTs answered 200 without exactly one matching body "
                        f"in the journals: {lost[:5]}")
    if flood_heads:
        problems.append(f"{len(flood_heads)} bad inputs reached an upstream: {flood_heads[:3]}")
    if res.flood_unexpected:
        kinds = collections.Counter((k, o) for _, k, o in res.flood_unexpected)
        problems.append(f"bad input got unexpected answers: {dict(kinds)}")

    explained, unexplained = collections.Counter(), []
    for t0, t1, up, op, kind, detail in res.failures:
        fault = soak.faults.explain(up, kind, t0, t1)
        if fault:
            explained[f"{kind} by {fault[1]}"] += 1
        else:
            unexplained.append((round(t0 - soak.t_start, 2), round(t1 - soak.t_start, 2),
                                f"u{up}", op, kind, detail))
    if unexplained:
        problems.append(f"{len(unexplained)} client failures no injected fault explains, "
                        f"first: {unexplained[0]}")

    ok_requests = sum(n for (op, outcome), n in res.ops.items() if outcome == "200")
    if ok_requests == 0:
        problems.append("no request succeeded")

    with open(soak.out / "samples.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t", "fds", "rss_kib", "requests_done", "fault"])
        writer.writerows(rows)
    with open(soak.out / "faults.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["upstream", "kind", "start", "end"])
        for up, kind, start, end in soak.faults.done:
            writer.writerow([f"u{up}", kind, round(start - soak.t_start, 2),
                             round(end - soak.t_start, 2)])
    with open(soak.out / "failures.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t0", "t1", "upstream", "op", "kind", "explained_by", "detail"])
        for t0, t1, up, op, kind, detail in res.failures:
            fault = soak.faults.explain(up, kind, t0, t1)
            writer.writerow([round(t0 - soak.t_start, 2), round(t1 - soak.t_start, 2), f"u{up}",
                             op, kind, f"{fault[1]}@{fault[2] - soak.t_start:.1f}" if fault
                             else "", detail])
    (soak.out / "metrics.txt").write_text(metrics_text if rows else "")
    plotted, plot_err = plot(soak.out, rows, soak.faults.done, soak.t_start)

    summary = {
        "seconds": args.seconds,
        "warmup_seconds": warmup,
        "samples": len(rows),
        "requests": {f"{op} {outcome}": n for (op, outcome), n in sorted(res.ops.items())},
        "requests_ok": ok_requests,
        "requests_failed": len(res.failures),
        "failures_explained": dict(explained),
        "failures_unexplained": len(unexplained),
        "posts_sent": len(res.posts),
        "posts_answered_200": len(answered),
        "posts_at_upstream": len(heads),
        "posts_sent_twice": len(twice),
        "faults": dict(fault_counts),
        "upstream_restarts": {u.name: u.starts - 1 for u in soak.upstreams},
        "bad_input": {f"{kind} -> {outcome}": n for (kind, outcome), n in sorted(res.flood.items())},
        "curve": figures,
        "tetherd_exit_status": rc,
        "sanitizer_reports": len(reports),
        "plot": str(soak.out / "soak.png") if plotted else f"gnuplot failed: {plot_err}",
        "problems": problems,
    }
    (soak.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = format_summary(summary, soak.out)
    (soak.out / "summary.txt").write_text(text)
    print(text, end="")
    return 1 if problems else 0


def format_summary(s, out):
    lines = [f"soak: {s['seconds']:.0f} s, {s['samples']} samples, results in {out}"]
    lines.append(f"  requests: {s['requests_ok']} ok, {s['requests_failed']} failed "
                 f"({s['failures_unexplained']} unexplained); explained: "
                 f"{s['failures_explained'] or 'none'}")
    lines.append(f"  POSTs: {s['posts_sent']} sent, {s['posts_answered_200']} answered 200, "
                 f"{s['posts_at_upstream']} reached an upstream, {s['posts_sent_twice']} twice")
    lines.append(f"  faults: {s['faults']}; restarts {s['upstream_restarts']}")
    flood_total = sum(s["bad_input"].values())
    lines.append(f"  bad input: {flood_total} connections: {s['bad_input']}")
    for label, f in s["curve"].items():
        lines.append(f"  {label} after warm-up: median {f['first_half_median']} -> "
                     f"{f['second_half_median']}, peak {f['first_half_max']} -> "
                     f"{f['second_half_max']} (first half -> second half), range "
                     f"{f['min']}..{f['max']}")
    lines.append(f"  tetherd exit status {s['tetherd_exit_status']}, "
                 f"{s['sanitizer_reports']} sanitizer report lines; plot: {s['plot']}")
    for problem in s["problems"]:
        lines.append(f"  PROBLEM: {problem}")
    lines.append("soak: " + ("FAILED" if s["problems"] else "passed"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
