"""Bounded resources under abuse: slowloris, trickled oversized heads, slow and non-reading
clients. Each test measures tetherd's RSS and open fds (/proc) while the abuse runs, checks that
both stay within what the configured caps allow and that a fresh client is served meanwhile,
and prints its figures (`pytest -s` or `-rP` shows them; the junit report has them as
properties). The figures of a run are in docs/operations.md#resources-under-abuse.
"""

import hashlib
import json
import os
import resource
import selectors
import socket
import threading
import time

import pytest

from helpers import build_request, fetch, free_port, read_status, wait_for
from upstream import body_pattern

KIB = 1024
MIB = 1024 * KIB
HUGE = 64 * MIB  # a response far larger than every buffer on the way
FRESH_BOUND = 2.0  # seconds: a fresh client answered later than this counts as not served


class Probe:
    """tetherd's RSS and fd count, sampled every 50 ms by a thread while `with` runs."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_rss = self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = None

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def sample(self):
        self.peak_rss = max(self.peak_rss, self.rss_kib())
        self.peak_fds = max(self.peak_fds, self.fds())

    def _run(self):
        while not self._stop.wait(0.05):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sample()


def report(record_property, name, **figures):
    """Prints the figures of a test and records them in the junit report."""
    print(f"\n{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items()))
    for key, value in figures.items():
        record_property(key, value)


def fresh_latency(port, count=5):
    """The slowest of `count` fresh requests, each on a new connection; each must be 200."""
    worst = 0.0
    for _ in range(count):
        start = time.monotonic()
        resp = fetch(port, "GET", "/fresh", [("Connection", "close")])
        assert resp.status == 200, resp
        worst = max(worst, time.monotonic() - start)
    return worst


def warm(tetherd):
    """One request through, so the baseline includes the worker's first buffers."""
    assert fetch(tetherd.port, "GET", "/", [("Connection", "close")]).status == 200


@pytest.fixture
def many_fds():
    """Raises this process's soft fd limit (tetherd and upstreams inherit it) for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    yield resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def await_all(socks, timeout):
    """{sock: (status, seconds)} for every socket, read concurrently with a selector."""
    start = time.monotonic()
    results, buffers = {}, {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while len(results) < len(socks):
            remaining = start + timeout - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    chunk = None
                if chunk:
                    buffers[sock] += chunk
                    if b"\r\n" not in buffers[sock]:
                        continue
                    status = buffers[sock].split(b" ", 2)[1].decode()
                else:
                    status = "eof" if chunk == b"" and not buffers[sock] else "reset"
                results[sock] = (status, time.monotonic() - start)
                sel.unregister(sock)
    for sock in socks:
        results.setdefault(sock, ("timeout", timeout))
    return results


def test_slowloris_of_two_thousand_half_heads(start_proxy, many_fds, record_property):
    """2,000 connections each holding half a request head: tetherd holds one fd and one input
    buffer per connection (no upstream connection), serves fresh clients meanwhile, and answers
    each with 408 at client_header_timeout, after which its fds are back where they were."""
    count = 2000
    assert many_fds > count + 200, f"fd limit {many_fds} too low for the test"
    tetherd, upstream = start_proxy(tether_cfg="client_header_timeout = 8s", workers=2)
    warm(tetherd)
    probe = Probe(tetherd.proc.pid)
    base_rss, base_fds = probe.rss_kib(), probe.fds()
    socks = []
    try:
        with probe:
            opened = time.monotonic()
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", tetherd.port), timeout=10)
                sock.sendall(b"GET /loris HTTP/1.1\r\nHost: tether.test\r\nX-Half: ")
                socks.append(sock)
            opened_in = time.monotonic() - opened
            wait_for(lambda: probe.fds() >= base_fds + count, 20, "every connection accepted")
            held_rss = probe.rss_kib()
            worst = fresh_latency(tetherd.port)
            results = await_all(socks, 8 + 20)
            closed_after = max(seconds for _, seconds in results.values())
        statuses = sorted({status for status, _ in results.values()})
        assert statuses == ["408"], f"expected 408 for every held connection, got {statuses}"
        assert worst < FRESH_BOUND, f"a fresh client waited {worst:.2f}s"
        assert upstream.stats()["requests"] == 1 + 5, "a half head reached the upstream"
        wait_for(lambda: probe.fds() <= base_fds + 5, 10, "fds back to the baseline")
    finally:
        for sock in socks:
            sock.close()
    per_conn = (held_rss - base_rss) * KIB // count
    # Bounded by the design: one session and one 16 KiB buffer per connection, far below the
    # max_head_size (64 KiB) each one could fill.
    assert per_conn < 40 * KIB, f"{per_conn} bytes of RSS per half-open connection"
    report(record_property, "slowloris", connections=count, fds_base=base_fds,
           fds_peak=probe.peak_fds, rss_base_kib=base_rss, rss_held_kib=held_rss,
           rss_peak_kib=probe.peak_rss, rss_per_connection_bytes=per_conn,
           fresh_client_worst_s=round(worst, 3), all_408_within_s=round(closed_after, 2),
           opened_in_s=round(opened_in, 1))


def trickle(port, data, pace, results, index):
    """Sends `data` one byte per send (TCP_NODELAY, so one segment each), then reads the
    answer; results[index] = (status, bytes sent, seconds)."""
    start = time.monotonic()
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for byte in data:
                    sock.send(bytes((byte,)))
                    sent += 1
                    if pace:
                        time.sleep(pace)
            except (BrokenPipeError, ConnectionResetError):
                pass  # tetherd answered and closed while bytes were still coming
            status = read_status(sock, 30)
    except OSError as err:
        status = type(err).__name__
    results[index] = (status, sent, time.monotonic() - start)


def test_oversized_heads_trickled_byte_by_byte(start_proxy, record_property):
    """Heads of 70 KiB sent one byte per segment by 8 clients at once: each is cut at
    max_head_size (64 KiB) with 431 (or, while it is still sending, a reset after the 431) and
    memory stays bounded by the cap; 20 clients trickling a byte every 20 ms get 408 at
    client_header_timeout, long before their head is complete. Fresh clients are served."""
    tetherd, upstream = start_proxy(tether_cfg="client_header_timeout = 3s", workers=2)
    warm(tetherd)
    probe = Probe(tetherd.proc.pid)
    base_rss, base_fds = probe.rss_kib(), probe.fds()
    head = build_request("GET", "/trickle", [("X-Big", "a" * (70 * KIB))])
    fast, slow = [None] * 8, [None] * 20
    with probe:
        threads = [threading.Thread(target=trickle, args=(tetherd.port, head, 0, fast, i))
                   for i in range(len(fast))]
        threads += [threading.Thread(target=trickle, args=(tetherd.port, head, 0.02, slow, i))
                    for i in range(len(slow))]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        worst = fresh_latency(tetherd.port)
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a trickling client hung"
    fast_statuses = {status for status, _, _ in fast}
    # On a loaded machine a byte-per-send trickle of 70 KiB may outlast client_header_timeout:
    # then the time bound (408) cuts it instead of the size bound; either way it is refused.
    assert fast_statuses <= {"431", "408", "reset"}, fast
    assert all(sent >= 64 * KIB for status, sent, _ in fast if status == "431"), fast
    assert {status for status, _, _ in slow} == {"408"}, slow
    slow_time = max(seconds for _, _, seconds in slow)
    # The trickler keeps sending through tetherd's lingering close (5 s) before it reads the 408.
    assert slow_time < 3 + 5 + 5, f"408 only after {slow_time:.1f}s"
    assert worst < FRESH_BOUND, f"a fresh client waited {worst:.2f}s"
    assert upstream.stats()["requests"] == 1 + 5, "a trickled head reached the upstream"
    growth = probe.peak_rss - base_rss
    # 28 heads of at most max_head_size each, plus ASan's shadow and quarantine: a leak or an
    # unbounded buffer would be megabytes per client.
    assert growth < 28 * 64 * KIB // KIB * 4, f"RSS grew by {growth} KiB"
    wait_for(lambda: probe.fds() <= base_fds + 2, 10, "fds back to the baseline")
    report(record_property, "trickled heads",
           fast_clients=len(fast), fast_outcomes=sorted(s for s, _, _ in fast),
           fast_bytes_sent_max=max(sent for _, sent, _ in fast),
           slow_clients=len(slow), slow_408_after_s_max=round(slow_time, 2),
           slow_bytes_sent_max=max(sent for _, sent, _ in slow), rss_base_kib=base_rss,
           rss_peak_kib=probe.peak_rss, fds_peak=probe.peak_fds,
           fresh_client_worst_s=round(worst, 3))


def test_slow_reader_of_a_large_response(start_proxy, record_property):
    """A 64 MiB response read at about 1 MB/s: tetherd stops reading the upstream while the
    client's socket is full, so its memory does not follow the response; a reader that keeps
    making progress is never cut, even over many client_idle_timeouts; fresh clients are
    served meanwhile; every byte arrives. The body is spliced (splice = on, the default): the
    pipe, not a buffer, bounds what tetherd holds."""
    admin = free_port()
    tetherd, upstream = start_proxy(
        tether_cfg=f"client_idle_timeout = 1s\nadmin = 127.0.0.1:{admin}", workers=2)
    warm(tetherd)
    probe = Probe(tetherd.proc.pid)
    base_rss = probe.rss_kib()
    expected = hashlib.sha256(body_pattern(HUGE)).hexdigest()
    with probe, socket.create_connection(("127.0.0.1", tetherd.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        sock.sendall(build_request("GET", "/huge", [("X-Body-Size", str(HUGE))]))
        digest, got, buf = hashlib.sha256(), 0, b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        digest.update(body)
        got += len(body)
        slow_until = time.monotonic() + 5  # five client_idle_timeouts of slow reading
        while time.monotonic() < slow_until:
            data = sock.recv(16 * KIB)
            assert data, f"cut after {got} bytes while reading slowly"
            digest.update(data)
            got += len(data)
            time.sleep(0.015)
        slow_bytes = got
        slow_rss_peak = probe.peak_rss
        worst = fresh_latency(tetherd.port)
        while got < HUGE:
            data = sock.recv(1 << 20)
            assert data, f"cut after {got} bytes"
            digest.update(data)
            got += len(data)
    assert got == HUGE and digest.hexdigest() == expected
    stats = json.loads(fetch(admin, "GET", "/stats", [("Connection", "close")]).body)
    assert stats["upstreams"][0]["spliced_bytes_total"] > HUGE // 2, stats["upstreams"][0]
    assert worst < FRESH_BOUND, f"a fresh client waited {worst:.2f}s"
    growth = slow_rss_peak - base_rss
    assert growth < 8 * MIB // KIB, f"RSS grew by {growth} KiB while relaying to a slow reader"
    report(record_property, "slow reader", response_bytes=HUGE, slowly_read_bytes=slow_bytes,
           rss_base_kib=base_rss, rss_peak_while_slow_kib=slow_rss_peak,
           rss_growth_kib=growth, fresh_client_worst_s=round(worst, 3))


def test_clients_that_never_read(start_proxy, record_property):
    """Clients that request 64 MiB and never read a byte: tetherd holds a bounded amount for
    each (its buffers are full, the sockets' buffers are the kernel's) and, after
    client_idle_timeout without a byte taken by the client, closes them and gives their
    upstream connections back. Without that, clients that stop reading would hold every
    connection of a small pool for ever and every other client would get 503."""
    idle = 2
    tetherd, upstream = start_proxy(upstream_cfg="max_connections = 2\nqueue_timeout = 1s",
                                    tether_cfg=f"client_idle_timeout = {idle}s", workers=1)
    warm(tetherd)
    probe = Probe(tetherd.proc.pid)
    base_rss, base_fds = probe.rss_kib(), probe.fds()
    socks = []
    try:
        with probe:
            for _ in range(2):
                sock = socket.create_connection(("127.0.0.1", tetherd.port), timeout=30)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
                sock.sendall(build_request("GET", "/never-read",
                                           [("X-Body-Size", str(HUGE))]))
                socks.append(sock)
            wait_for(lambda: upstream.stats()["connections_open"] == 2, 10,
                     "both upstream connections leased")
            time.sleep(0.5)  # every buffer on the way fills
            held_rss, held_fds = probe.rss_kib(), probe.fds()
            start = time.monotonic()
            # At the cap, a fresh client waits at most queue_timeout; once the non-readers
            # are cut, one is served.
            served = wait_for(lambda: fetch(tetherd.port, "GET", "/fresh",
                                            [("Connection", "close")]).status == 200 and
                              time.monotonic(), idle + 10, "a fresh client served")
            freed_after = served - start
            # Reading before both are cut would make a non-reader a reader.
            wait_for(lambda: probe.fds() <= base_fds, idle + 5, "both non-readers cut")
        for sock in socks:
            sock.settimeout(10)
            got = 0
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not data:
                    break
                got += len(data)
            assert got < HUGE, "a non-reading client was not cut"
    finally:
        for sock in socks:
            sock.close()
    growth = held_rss - base_rss
    assert growth < 4 * MIB // KIB, f"RSS grew by {growth} KiB for two non-reading clients"
    assert freed_after < idle + 5, f"the pool was freed only after {freed_after:.1f}s"
    report(record_property, "never reads", clients=2, max_connections=2,
           client_idle_timeout_s=idle, rss_base_kib=base_rss, rss_held_kib=held_rss,
           rss_growth_kib=growth, fds_base=base_fds, fds_held=held_fds,
           fresh_client_served_after_s=round(freed_after, 2))
