"""Endpoints: an upstream as a set of addresses. Real upstream processes on 127.0.0.2, .3 and .4
(all loopback on Linux) on one port, named by an explicit `endpoints` list or by a DNS server of
the test's own (dnsserver.py) whose answers and TTL the test changes. Covers the spread under each
balancing policy, failover of a refused connect (never sending a POST twice), scale-up and
scale-down through DNS within TTL + 1 s, serving on the last set while DNS is down, and 503 at
once while a name has no address yet. Which endpoint served a request is read from the upstream's
X-Upstream-Name header."""

import collections
import json
import re
import concurrent.futures
import socket
import threading
import time

import pytest

from dnsserver import DnsServer
from helpers import Client, assert_tether_error, fetch, free_port, get_json, wait_for
from test_metrics import run_top

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
TEST_TIME_LIMIT = 60  # seconds; every load loop also stops on its own bound


def common_port():
    """A port free on every address in HOSTS (and on 127.0.0.5, kept for a refused endpoint)."""
    for _ in range(50):
        port = free_port()
        try:
            socks = []
            for host in HOSTS + ("127.0.0.5",):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no port free on all of 127.0.0.2-5")


@pytest.fixture
def dns():
    server = DnsServer()
    yield server
    server.close()


@pytest.fixture
def three(start_upstream):
    """Three upstreams, one per address in HOSTS, on one port: (port, {host: Upstream})."""
    port = common_port()
    ups = {host: start_upstream("--host", host, "--port", port, "--name", host) for host in HOSTS}
    return port, ups


def config(listen, url, upstream_cfg="", tether_cfg="", workers=1):
    return (f"[tether]\nworkers = {workers}\n{tether_cfg}\n\n"
            f"[upstream app]\nurl = {url}\nlisten = 127.0.0.1:{listen}\n{upstream_cfg}\n")


def run_load(port, clients, per_client, keepalive=True):
    """Bounded GET load; returns a Counter of X-Upstream-Name (or "status N" for errors)."""
    deadline = time.monotonic() + TEST_TIME_LIMIT

    def one(_):
        seen = collections.Counter()
        client = Client(port) if keepalive else None
        try:
            for _ in range(per_client):
                if time.monotonic() > deadline:
                    break
                resp = client.request() if keepalive else fetch(port)
                seen[resp.header("X-Upstream-Name") if resp.status == 200
                     else f"status {resp.status}"] += 1
        finally:
            if client:
                client.close()
        return seen

    total = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        for seen in pool.map(one, range(clients)):
            total.update(seen)
    return total


def assert_thirds(seen, total):
    assert sum(seen.values()) == total, seen
    for host in HOSTS:
        assert abs(seen[host] - total / 3) <= 0.15 * total / 3, (host, seen)


@pytest.mark.parametrize("balance", ["least_request", "round_robin", "random"])
def test_explicit_endpoints_share_the_load(three, start_tetherd, balance):
    """3,000 requests from 6 keep-alive clients over three endpoints: each gets a third (±15%),
    and they arrive over pooled connections (the balancing keeps reuse)."""
    port, ups = three
    listen = free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS)
    tetherd = start_tetherd(config(listen, f"http://svc.internal:{port}",
                                   f"endpoints = {endpoints}\nbalance = {balance}", workers=2))
    seen = run_load(tetherd.port, 6, 500)
    assert_thirds(seen, 3000)
    accepted = sum(u.stats()["connections_accepted"] for u in ups.values())
    assert accepted <= 60, accepted  # pooled: a handful per endpoint and worker, not one per request
    # The url still gives the Host the upstreams see.
    heads = ups[HOSTS[0]].stats()["heads"]
    assert any("host: svc.internal:%d" % port in h["head"].lower() for h in heads), heads[-1:]


def test_top_shows_each_endpoint_and_its_share(three, start_tetherd):
    """Under a load over three endpoints, `tether top` has a line per endpoint with its share of
    the interval's requests (about a third each), and --json the same figures."""
    port, _ = three
    listen, admin = free_port(), free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS)
    tetherd = start_tetherd(config(listen, f"http://svc.internal:{port}",
                                   f"endpoints = {endpoints}\nbalance = round_robin",
                                   f"admin = 127.0.0.1:{admin}"))
    stop = threading.Event()
    deadline = time.monotonic() + 30

    def load():
        for _ in range(1000):  # until the two samples are taken; bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            run_load(tetherd.port, 3, 20)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        table = run_top("--once", "--interval", "1", "--admin", f"127.0.0.1:{admin}")
        snap = run_top("--once", "--json", "--interval", "1", "--admin", f"127.0.0.1:{admin}")
    finally:
        stop.set()
        loader.join()
    assert table.returncode == 0 and snap.returncode == 0, table.stderr + snap.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table.stdout
    assert "  -> svc.internal:%d  UP 3/3" % port in lines, table.stdout
    assert lines[lines.index("  -> svc.internal:%d  UP 3/3" % port) + 1].split() == \
        ["ENDPOINT", "REQ/S", "SHARE", "ACT", "IDLE", "HEALTH"], table.stdout
    for host in HOSTS:
        (line,) = [line for line in lines if line.startswith(f"     {host}:{port} ")]
        share = float(line.split()[2].rstrip("%"))
        assert 20 <= share <= 47, table.stdout  # round robin: a third, give or take the cut
        assert line.split()[-1] == "up", line
    (app,) = json.loads(snap.stdout)["upstreams"]
    shares = {e["address"]: e["share_percent"] for e in app["endpoints"]}
    assert set(shares) == {f"{h}:{port}" for h in HOSTS}, shares
    assert abs(sum(shares.values()) - 100) < 0.01 and min(shares.values()) >= 20, shares


def test_refused_endpoint_costs_the_client_nothing(three, start_tetherd):
    """One endpoint refuses connections: every GET and POST is answered by the others (the
    connect is retried elsewhere: nothing of the request had been sent), and each POST reaches an
    upstream exactly once."""
    port, ups = three
    listen, admin = free_port(), free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS + ("127.0.0.5",))
    tetherd = start_tetherd(config(listen, f"http://127.0.0.1:{port}",
                                   f"endpoints = {endpoints}\nbalance = round_robin\nmax_idle = 0",
                                   f"admin = 127.0.0.1:{admin}"))
    statuses = collections.Counter()
    for i in range(40):
        method, body = ("POST", b"post %d" % i) if i % 2 else ("GET", b"")
        resp = fetch(tetherd.port, method, f"/r{i}", body=body)
        statuses[resp.status] += 1
    assert statuses == {200: 40}, statuses
    posts = collections.Counter()
    for u in ups.values():
        for method, n in u.stats()["methods"].items():
            posts[method] += n
    assert posts["POST"] == 20 and posts["GET"] == 20, posts
    metrics = fetch(admin, "GET", "/metrics").text
    failovers = [line for line in metrics.splitlines()
                 if line.startswith("tether_upstream_connect_failovers_total{")]
    assert failovers and int(failovers[0].split()[-1]) >= 5, failovers


def test_every_endpoint_refusing_is_one_502(start_tetherd):
    """Nothing listens anywhere: a request is tried on 1 + connect_retries endpoints, then gets
    502 naming the last endpoint tried."""
    port = common_port()
    listen = free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS)
    tetherd = start_tetherd(config(listen, f"http://127.0.0.1:{port}",
                                   f"endpoints = {endpoints}\nconnect_retries = 1"))
    resp = fetch(tetherd.port)
    assert_tether_error(resp, 502, "connect failed", f":{port}")


def dns_config(listen, port, dns, upstream_cfg="", admin=None, workers=1):
    tether = f"resolver = {dns.resolver}\n" + (f"admin = 127.0.0.1:{admin}\n" if admin else "")
    return config(listen, f"http://svc.test:{port}",
                  f"dns_min_ttl = 200ms\ndns_max_ttl = 2s\n{upstream_cfg}", tether, workers)


def names_now(port, n=30):
    return run_load(port, 3, n // 3)


def test_dns_scale_up_and_down(three, start_tetherd, dns):
    """The name resolves to .2 and .3; then to .3 and .4. Within TTL + 1 s of the change .4 takes
    requests and .2 none, and the idle connections to .2 are closed (endpoint_removed)."""
    port, ups = three
    dns.set("svc.test", HOSTS[:2], ttl=1)
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(dns_config(listen, port, dns, admin=admin, workers=2))
    seen = names_now(tetherd.port, 300)
    assert set(seen) == set(HOSTS[:2]), seen
    assert ups[HOSTS[0]].stats()["connections_open"] > 0

    dns.set("svc.test", HOSTS[1:], ttl=1)
    changed = time.monotonic()
    wait_for(lambda: HOSTS[2] in names_now(tetherd.port), 1 + 1 + 2, "traffic on the new endpoint")
    assert time.monotonic() - changed < 1 + 1 + 1  # TTL + 1 s, with room for a loaded machine
    seen = names_now(tetherd.port, 300)
    assert set(seen) == set(HOSTS[1:]), seen
    wait_for(lambda: ups[HOSTS[0]].stats()["connections_open"] == 0, 5,
             "connections to the removed endpoint closed")
    (app,) = get_json(admin, "/stats")["upstreams"]
    assert app["connections"]["closed"]["endpoint_removed"] >= 1, app["connections"]["closed"]
    assert "endpoints of svc.test changed: -127.0.0.2:%d +127.0.0.4:%d" % (port, port) \
        in tetherd.log()


def test_dns_down_keeps_the_last_set(three, start_tetherd, dns):
    """The DNS server fails (SERVFAIL, then silence): requests keep flowing to the last set, and
    the failure is logged once at warn."""
    port, ups = three
    dns.set("svc.test", HOSTS, ttl=1)
    listen = free_port()
    tetherd = start_tetherd(dns_config(listen, port, dns))
    assert set(names_now(tetherd.port, 60)) == set(HOSTS)
    dns.mode = "servfail"
    queries = dns.queries
    wait_for(lambda: dns.queries > queries + 1, 5, "lookups against the failing server")
    assert set(names_now(tetherd.port, 60)) == set(HOSTS)
    dns.mode = "silent"
    time.sleep(1.5)
    assert set(names_now(tetherd.port, 60)) == set(HOSTS)
    log = tetherd.log()
    assert log.count("keeping the last 3 addresses") == 1, log


def test_name_without_address_answers_503_until_it_has_one(three, start_tetherd, dns):
    """The name does not resolve at startup: tetherd starts anyway, requests get 503 "no
    endpoints yet" at once, and once DNS answers they are served."""
    port, ups = three
    listen = free_port()
    tetherd = start_tetherd(dns_config(listen, port, dns))
    started = time.monotonic()
    resp = fetch(tetherd.port)
    assert_tether_error(resp, 503, "no endpoints yet", "svc.test")
    assert time.monotonic() - started < 2  # no connect, no queue wait
    dns.set("svc.test", HOSTS[2:], ttl=1)
    wait_for(lambda: fetch(tetherd.port).status == 200, 5, "the name to resolve")
    assert names_now(tetherd.port) == {HOSTS[2]: 30}


def test_dns_empty_clear_empties_the_set(three, start_tetherd, dns):
    """With dns_empty = clear, NXDOMAIN empties the set (503 no endpoints); by default (keep) the
    last set would stay."""
    port, ups = three
    dns.set("svc.test", HOSTS[:1], ttl=1)
    listen = free_port()
    tetherd = start_tetherd(dns_config(listen, port, dns, "dns_empty = clear"))
    assert names_now(tetherd.port) == {HOSTS[0]: 30}
    dns.mode = "nxdomain"
    wait_for(lambda: fetch(tetherd.port).status == 503, 5, "the set to empty")
    assert_tether_error(fetch(tetherd.port), 503, "no endpoints")


def metric(admin, name, **labels):
    """The value of one series from /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in fetch(admin, "GET", "/metrics").text.splitlines():
        if line.startswith(name + "{") and want in line:
            return float(line.split()[-1])
    return 0


def test_refusing_endpoint_is_ejected(three, start_tetherd):
    """After breaker_failures refused connects in a row an endpoint is ejected: no further
    connect goes to it during the cooldown, and clients never notice (failover)."""
    port, ups = three
    listen, admin = free_port(), free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS + ("127.0.0.5",))
    tetherd = start_tetherd(config(
        listen, f"http://127.0.0.1:{port}",
        f"endpoints = {endpoints}\nbalance = round_robin\nmax_idle = 0\nbreaker_failures = 3\n"
        "breaker_cooldown = 30s\nbreaker_max_cooldown = 60s",
        f"admin = 127.0.0.1:{admin}"))
    statuses = collections.Counter(fetch(tetherd.port).status for _ in range(60))
    assert statuses == {200: 60}, statuses
    assert metric(admin, "tether_upstream_connections_closed_total", reason="connect_failed") == 3
    assert metric(admin, "tether_ejections_total") == 1
    assert metric(admin, "tether_upstream_connect_failovers_total") == 3
    assert f"endpoint 127.0.0.5:{port} ejected for 30000ms: 3 connects in a row failed" \
        in tetherd.log()


def next_trial_ms(resp):
    return int(re.search(r"next trial in (\d+)ms", resp.text).group(1))


def test_all_endpoints_ejected_fail_fast_then_recover(start_upstream, start_tetherd, tmp_path):
    """A single endpoint that refuses: after breaker_failures failures requests get 503 at once
    with Retry-After (counted as fast failures, logged as breaker_open), a failed trial doubles
    the cooldown, and once the endpoint listens again the next trial brings it back."""
    port = common_port()
    listen, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    tetherd = start_tetherd(config(
        listen, f"http://127.0.0.2:{port}",
        "connect_retries = 0\nbreaker_failures = 2\nbreaker_cooldown = 1s\n"
        "breaker_max_cooldown = 8s\nmin_idle = 0",
        f"admin = 127.0.0.1:{admin}\naccess_log = {log}"))
    for _ in range(2):
        assert_tether_error(fetch(tetherd.port), 502, "connect failed")
    started = time.monotonic()
    resp = fetch(tetherd.port)
    elapsed = time.monotonic() - started
    assert_tether_error(resp, 503, "circuit breaker open")
    assert resp.header("Retry-After") == "1", resp
    assert 0 < next_trial_ms(resp) <= 1000, resp
    assert elapsed < 0.5, elapsed  # no connect attempt (the failure value is a connect + 502)
    time.sleep(1.1)
    assert_tether_error(fetch(tetherd.port), 502, "connect failed")  # the trial
    resp = fetch(tetherd.port)
    assert_tether_error(resp, 503, "circuit breaker open")
    assert 1000 < next_trial_ms(resp) <= 2000, resp  # doubled
    assert metric(admin, "tether_upstream_rejected_total", reason="breaker_open") == 2
    assert metric(admin, "tether_fast_failures_total", upstream="app") == 2
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 5, 5, "the log")
    errors = [json.loads(line).get("error") for line in log.read_text().splitlines()]
    assert errors == ["connection_refused"] * 2 + ["breaker_open", "connection_refused",
                                                   "breaker_open"], errors
    start_upstream("--host", "127.0.0.2", "--port", port, "--name", "back")
    time.sleep(2.1)
    resp = fetch(tetherd.port)
    assert resp.status == 200 and resp.header("X-Upstream-Name") == "back", resp
    # The success is the complete response: logged as the exchange ends, maybe after the client
    # has it.
    wait_for(lambda: "back: its trial request succeeded" in tetherd.log(), 5, "the trial's log line")


def test_max_ejected_keeps_half_the_endpoints_in(start_tetherd):
    """Two endpoints, both refusing, max_ejected = 50%: only one is ejected, so the upstream is
    never emptied by the breaker alone (clients see 502, not 503)."""
    port = common_port()
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(config(
        listen, f"http://127.0.0.1:{port}",
        f"endpoints = 127.0.0.2:{port}, 127.0.0.3:{port}\nbreaker_failures = 1\n"
        "breaker_cooldown = 30s\nbreaker_max_cooldown = 30s\nmax_ejected = 50%",
        f"admin = 127.0.0.1:{admin}"))
    statuses = collections.Counter(fetch(tetherd.port).status for _ in range(10))
    assert statuses == {502: 10}, statuses
    assert metric(admin, "tether_ejections_total") == 1
    assert tetherd.log().count("ejected for") == 1
