"""`tether churn` against real traffic: an nginx serving one loopback address:port to a client
that opens a new connection per request at a known rate, and another address:port to a
keep-alive client. The profiler must rank the churning pair first with its rate (within 10% from
the tracepoint, 25% from sock_diag samples), count its TIME_WAIT sockets, see the pooled pair
near 0 opens/s, suggest a configuration tetherd accepts, and, with a tetherd started from that
suggestion in between, show the churn to nginx gone in --compare. Its tracing instance must never
outlive it (also not after SIGINT), and tracefs is unmounted again if it was mounted for it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from helpers import REPO_ROOT, Client, free_port, tetherd_binary, wait_for

NGINX = "/usr/sbin/nginx"
TRACING = Path("/sys/kernel/tracing")
CHURN_RATE = 200  # new connections per second
SECONDS = 3


def tether_binary():
    """$TETHER, else the tether beside the tetherd under test (the sanitizer pass builds both)."""
    if "TETHER" in os.environ:
        return Path(os.environ["TETHER"]).resolve()
    return tetherd_binary().parent / "tether"


def tracefs_mounted():
    return any(line.split()[2] == "tracefs" for line in open("/proc/self/mounts"))


def our_instances():
    """tether churn's tracing instances that exist now (none when tracefs is not mounted)."""
    inst = TRACING / "instances"
    return sorted(p.name for p in inst.iterdir() if p.name.startswith("tether-churn-")) \
        if inst.is_dir() else []


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("tether churn's trace source and these checks need root")


def orphaned_instances():
    """tether-churn instances whose process is gone: left behind. (A live tether churn of
    another run on this machine, `make prove` say, owns its instance.)"""
    return [name for name in our_instances()
            if not Path(f"/proc/{name.rsplit('-', 1)[1]}").exists()]


@pytest.fixture
def no_instance_left():
    """Fails the test if a tether-churn instance or a tracefs mount outlives the run."""
    was_mounted = tracefs_mounted()
    yield
    assert orphaned_instances() == [], "tracing instance left behind"
    assert tracefs_mounted() == was_mounted, "tracefs mount state changed"


@pytest.fixture
def nginx(tmp_path):
    """(churn_addr, pooled_addr): one nginx serving 127.0.0.2:P and 127.0.0.3:Q."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx not installed")
    churn_addr, pooled_addr = ("127.0.0.2", free_port()), ("127.0.0.3", free_port())
    temp_paths = "".join(f"{name}_temp_path {tmp_path / name}; "
                         for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""
    servers = "".join(f"server {{ listen {host}:{port}; keepalive_requests 100000; "
                      f"location / {{ return 200 \"ok\\n\"; }} }}\n"
                      for host, port in (churn_addr, pooled_addr))
    (tmp_path / "nginx.conf").write_text(textwrap.dedent(f"""\
        {user}
        worker_processes 1;
        pid {tmp_path / "nginx.pid"};
        error_log {tmp_path / "error.log"} info;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            {temp_paths}
            {servers}
        }}
        """))
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)

    def listening():
        assert proc.poll() is None, (tmp_path / "error.log").read_text()
        try:
            for addr in (churn_addr, pooled_addr):
                socket.create_connection(addr, timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(listening, 5, "nginx to listen")
    yield churn_addr, pooled_addr
    proc.terminate()
    proc.wait(10)


class Load:
    """Background clients for `seconds`: one opening a new connection per request at `rate`
    to `churn_addr` (paced on an absolute schedule, so the rate holds while the machine is
    busy), one keep-alive connection sending 50 requests/s to `pooled_addr` (if given)."""

    def __init__(self, churn_addr, pooled_addr=None, rate=CHURN_RATE, seconds=SECONDS + 1.5):
        self.errors = []
        self.sent = 0
        self.threads = [threading.Thread(target=self._churn, args=(churn_addr, rate, seconds))]
        if pooled_addr:
            self.threads.append(threading.Thread(target=self._pooled, args=(pooled_addr, seconds)))
        for t in self.threads:
            t.start()

    def _churn(self, addr, rate, seconds):
        start = time.monotonic()
        try:
            while time.monotonic() - start < seconds:
                with Client(addr[1], host=addr[0]) as c:
                    assert c.request(headers=[("Connection", "close")]).status == 200
                self.sent += 1
                delay = start + self.sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except Exception as err:  # reported by join()
            self.errors.append(err)

    def _pooled(self, addr, seconds):
        start = time.monotonic()
        try:
            with Client(addr[1], host=addr[0]) as c:
                while time.monotonic() - start < seconds:
                    assert c.request().status == 200
                    time.sleep(0.02)
        except Exception as err:
            self.errors.append(err)

    def join(self):
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors


def churn(*args, timeout=30):
    result = subprocess.run([str(tether_binary()), "churn", *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def churn_json(*args):
    return json.loads(churn("--json", *args).stdout)


def endpoint(pair):
    return pair["remote"] if pair["direction"] == "out" else pair["local"]


def pairs_of(report, addr, direction=None):
    name = f"{addr[0]}:{addr[1]}"
    return [p for p in report["pairs"]
            if endpoint(p) == name and direction in (None, p["direction"])]


def ranked_among(report, *addrs):
    """The report's pairs whose endpoint is one of addrs, in the report's order, after checking
    that order is by opens/s. Other traffic of a shared host (loopback tests run in parallel)
    may rank above; among the test's own endpoints the order must be right."""
    rates = [p["opens_per_s"] for p in report["pairs"]]
    assert rates == sorted(rates, reverse=True)
    names = {f"{host}:{port}" for host, port in addrs}
    return [p for p in report["pairs"] if endpoint(p) in names]


def measure(nginx_addrs, *args):
    churn_addr, pooled_addr = nginx_addrs
    load = Load(churn_addr, pooled_addr)
    time.sleep(0.5)  # the keep-alive connection is open before the window
    report = churn_json("--seconds", str(SECONDS), "--top", "0", *args)
    load.join()
    return report


def test_trace_source_ranks_the_churning_pair(needs_root, no_instance_left, nginx):
    churn_addr, pooled_addr = nginx
    report = measure(nginx, "--source", "trace")
    assert report["source"] == "trace"
    ours = ranked_among(report, churn_addr, pooled_addr)
    assert [endpoint(p) for p in ours[:2]] == [f"{churn_addr[0]}:{churn_addr[1]}"] * 2, ours[:3]
    outs = pairs_of(report, churn_addr, "out")
    assert len(outs) == 1, [(p["process"], p["pid"], p["opens"], p["time_wait"], p["established"]) for p in outs]
    out = outs[0]
    inbound, = pairs_of(report, churn_addr, "in")
    assert out["pid"] == os.getpid()
    assert inbound["process"] == "nginx"
    for pair in (out, inbound):
        assert abs(pair["opens_per_s"] - CHURN_RATE) <= 0.1 * CHURN_RATE, pair
        assert abs(pair["closes_per_s"] - CHURN_RATE) <= 0.1 * CHURN_RATE, pair
        assert 0 < pair["lifetime_ms"]["p50"] <= pair["lifetime_ms"]["p90"] < 1000, pair
    # Every connection leaves one TIME_WAIT socket, on the side that closed first.
    assert out["time_wait"] + inbound["time_wait"] >= 0.8 * CHURN_RATE * SECONDS, inbound
    pooled = pairs_of(report, pooled_addr, "out")
    assert pooled and pooled[0]["opens_per_s"] < 1 and pooled[0]["established"] == 1, pooled
    assert pooled[0]["mean_age_at_least"] is True


def test_sample_source_estimates_and_says_so(needs_root, no_instance_left, nginx):
    churn_addr, pooled_addr = nginx
    report = measure(nginx, "--source", "sample")
    assert report["source"] == "sample" and report["lifetimes"] == "upper bound"
    top = ranked_among(report, churn_addr, pooled_addr)[0]
    assert endpoint(top) == f"{churn_addr[0]}:{churn_addr[1]}", top
    assert abs(top["opens_per_s"] - CHURN_RATE) <= 0.25 * CHURN_RATE, top
    time_wait = sum(p["time_wait"] for p in pairs_of(report, churn_addr))
    assert time_wait >= 0.8 * CHURN_RATE * SECONDS, pairs_of(report, churn_addr)
    assert all(p["opens_per_s"] < 1 for p in pairs_of(report, pooled_addr))
    # The table says the figures are estimates.
    load = Load(churn_addr, seconds=1.5)
    text = churn("--seconds", "1", "--source", "sample").stdout
    load.join()
    assert "source: sample" in text and "estimated" in text


def test_suggestion_passes_tetherd_check_and_compare_shows_churn_gone(
        needs_root, no_instance_left, nginx, start_tetherd, tmp_path):
    churn_addr, pooled_addr = nginx
    before = tmp_path / "before.json"
    load = Load(churn_addr, pooled_addr)
    time.sleep(0.5)
    text = churn("--seconds", str(SECONDS), "--suggest", "--port", str(churn_addr[1]),
                 "--save", str(before)).stdout
    load.join()
    suggestion = json.loads(before.read_text())["suggest"]
    url = f"url = http://{churn_addr[0]}:{churn_addr[1]}"
    assert url in suggestion and suggestion in text
    section = suggestion[suggestion.index("[upstream"):]
    assert section.count("[upstream") == 1, suggestion  # --port: the one service
    config = tmp_path / "suggested.ini"
    config.write_text(section)
    check = subprocess.run([str(tetherd_binary()), "--check", "-c", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # The same client, now through a tetherd started from that section (on a free port).
    listen = free_port()
    tetherd = start_tetherd(re.sub(r"listen = \S+", f"listen = 127.0.0.1:{listen}", section))
    after = tmp_path / "after.json"
    load = Load(("127.0.0.1", tetherd.port))
    time.sleep(0.5)  # the pool is warm before the window, as in production
    churn("--seconds", str(SECONDS), "--save", str(after))
    load.join()
    compared = json.loads(churn("--compare", str(before), str(after), "--json").stdout)
    row, = [p for p in compared["pairs"] if p["direction"] == "out"
            and p["endpoint"] == f"{churn_addr[0]}:{churn_addr[1]}"]
    assert row["before"]["opens_per_s"] >= 0.9 * CHURN_RATE, row
    assert row["change_pct"]["opens_per_s"] <= -95, row
    assert row["after"]["mean_age_s"] > 10 * row["before"]["mean_age_s"], row
    # (TIME_WAIT is not compared: the BEFORE run's sockets linger for 60 s, into AFTER.)
    table = churn("--compare", str(before), str(after)).stdout
    assert "churn (opens/s)" in table and "mean connection age" in table


def test_sigint_ends_the_run_and_removes_the_instance(needs_root, no_instance_left):
    proc = subprocess.Popen([str(tether_binary()), "churn", "--seconds", "60", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: f"tether-churn-{proc.pid}" in our_instances() or proc.poll() is not None,
                 10, "the tracing instance")
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)  # what was measured until then
    assert report["source"] == "trace" and report["seconds"] < 30


def test_bad_arguments_are_refused():
    for args in (["--seconds", "x"], ["--source", "ebpf"], ["--compare", "one"], ["--top", "-1"]):
        result = subprocess.run([str(tether_binary()), "churn", *args], capture_output=True,
                                text=True, timeout=10)
        assert result.returncode == 2, (args, result.stdout)
    missing = subprocess.run([str(tether_binary()), "churn", "--compare", "/nonexistent", "/x"],
                             capture_output=True, text=True, timeout=10)
    assert missing.returncode == 1 and "/nonexistent" in missing.stderr


def test_netns_sees_only_that_namespace(needs_root, no_instance_left, tmp_path):
    """A server and a churning client inside a namespace of the test's own: --netns NAME finds
    them; a run in the host namespace does not count them."""
    name = f"tether-churn-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    server = None
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        port = 18000 + os.getpid() % 1000  # a fresh namespace: no other user of the port
        script = textwrap.dedent(f"""\
            import socket, threading, time
            srv = socket.socket(); srv.bind(("127.0.0.1", {port})); srv.listen(64)
            def serve():
                while True:
                    c, _ = srv.accept(); c.recv(10); c.close()
            threading.Thread(target=serve, daemon=True).start()
            start = time.monotonic(); n = 0
            while time.monotonic() - start < 4:
                s = socket.create_connection(("127.0.0.1", {port})); s.sendall(b"x"); s.recv(1)
                s.close(); n += 1
                time.sleep(max(0, start + n / 100 - time.monotonic()))
            """)
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", script])
        time.sleep(0.5)
        inside = churn_json("--netns", name, "--seconds", "1.5", "--top", "0")
        host = churn_json("--seconds", "1", "--top", "0", "--port", str(port))
        assert inside["netns"] == name
        found = [p for p in inside["pairs"] if endpoint(p) == f"127.0.0.1:{port}"]
        assert {p["direction"] for p in found} == {"in", "out"}, inside["pairs"][:4]
        assert all(p["opens_per_s"] > 50 for p in found), found
        assert all(p["opens_per_s"] == 0 for p in host["pairs"]), host["pairs"]
        server.wait(10)
    finally:
        if server and server.poll() is None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", name])

