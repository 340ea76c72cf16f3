"""Active health checks (health_check = GET /healthz) against real upstream processes on
127.0.0.2, .3 and .4: an endpoint that is SIGKILLed under load goes down within
health_interval x health_fall and gets no request after that, with no client-visible error; it
comes back after health_rise passed checks; one answering /healthz with 503 is marked down (its
idle connections closed as endpoint_down, the change logged once, its state in /stats and
/pools); all endpoints down is a fast 503 with Retry-After. Which endpoint served a request is read from X-Upstream-Name."""

import json
import os
import signal
import threading
import time

from helpers import Client, assert_tether_error, fetch, free_port, get_json, wait_for
from test_endpoints import HOSTS, common_port, config, metric, run_load
from test_metrics import run_top

CHECKS = ("health_check = GET /healthz\nhealth_interval = 300ms\nhealth_timeout = 200ms\n"
          "health_fall = 2\nhealth_rise = 2\nbreaker_cooldown = 1s\n")


def endpoint_rows(admin):
    (app,) = get_json(admin, "/stats")["upstreams"]
    return {r["address"]: r for r in app["endpoints"]["list"]}


def start_three(start_upstream, port, unhealthy=()):
    return {h: start_upstream("--host", h, "--port", port, "--name", h,
                              *(("--status-for", "/healthz=503") if h in unhealthy else ()))
            for h in HOSTS}


def start_service(start_upstream, start_tetherd, settings, tether_cfg="", workers=1,
                  unhealthy=()):
    """Three upstreams (start_three) as the endpoints of one tetherd upstream with these
    settings, and an admin endpoint: (port, upstreams, admin port, tetherd)."""
    port = common_port()
    ups = start_three(start_upstream, port, unhealthy)
    listen, admin = free_port(), free_port()
    endpoints = ", ".join(f"{h}:{port}" for h in HOSTS)
    tetherd = start_tetherd(config(listen, f"http://svc.internal:{port}",
                                   f"endpoints = {endpoints}\n{settings}",
                                   f"admin = 127.0.0.1:{admin}\n{tether_cfg}", workers=workers))
    return port, ups, admin, tetherd


def test_killed_endpoint_goes_down_and_comes_back(start_upstream, start_tetherd):
    port, ups, admin, tetherd = start_service(start_upstream, start_tetherd, CHECKS, workers=2)
    assert set(run_load(tetherd.port, 3, 30)) == set(HOSTS)
    victim = f"{HOSTS[0]}:{port}"
    ups[HOSTS[0]].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    # Keep-alive and close-per-request clients right through the failure: nobody sees it.
    seen = run_load(tetherd.port, 3, 60) + run_load(tetherd.port, 3, 30, keepalive=False)
    assert not [k for k in seen if k.startswith("status")], seen
    wait_for(lambda: endpoint_rows(admin)[victim]["health"] == "down", 0.3 * 2 + 5,
             "the killed endpoint marked down")
    # 2 x 300 ms (+-10% jitter, + a check's timeout): generous room for a loaded machine.
    assert time.monotonic() - killed < 0.3 * 2 + 0.2 + 4
    picked = endpoint_rows(admin)[victim]["requests_total"]
    seen = run_load(tetherd.port, 3, 60)
    assert set(seen) == set(HOSTS[1:]), seen
    assert endpoint_rows(admin)[victim]["requests_total"] == picked  # not even tried
    assert f"endpoint {victim} down: 2 health checks failed (connect refused)" in tetherd.log()
    metrics = fetch(admin, "GET", "/metrics").text
    assert f'tether_endpoint_up{{upstream="app",endpoint="{victim}"}} 0' in metrics, metrics
    assert f'tether_endpoint_state{{upstream="app",endpoint="{victim}",state="down"}} 1' \
        in metrics
    assert 'tether_health_checks_total{upstream="app",result="connect_failed"}' in metrics

    start_upstream("--host", HOSTS[0], "--port", port, "--name", HOSTS[0])
    wait_for(lambda: endpoint_rows(admin)[victim]["health"] == "up", 0.3 * 2 + 5,
             "the endpoint up again after health_rise checks")
    wait_for(lambda: HOSTS[0] in run_load(tetherd.port, 3, 10), 5, "traffic back on it")
    assert f"endpoint {victim} up: 2 health checks passed" in tetherd.log()


def test_killed_endpoint_without_checks_is_ejected_by_the_breaker(start_upstream, start_tetherd):
    """No health checks: an endpoint SIGKILLed under keep-alive and close-per-request GET load
    costs no client an error (its pooled connections' requests are retried, its refused
    connects fail over), and once each worker's breaker saw breaker_failures refused connects
    it is ejected and gets no request at all."""
    port, ups, admin, tetherd = start_service(
        start_upstream, start_tetherd,
        "breaker_failures = 3\nbreaker_cooldown = 30s\nbreaker_max_cooldown = 60s", workers=2)
    assert set(run_load(tetherd.port, 3, 30)) == set(HOSTS)
    victim = f"{HOSTS[0]}:{port}"
    before = endpoint_rows(admin)[victim]
    ups[HOSTS[0]].proc.send_signal(signal.SIGKILL)
    ups[HOSTS[0]].proc.wait(5)
    seen = run_load(tetherd.port, 3, 60) + run_load(tetherd.port, 3, 30, keepalive=False)
    assert not [k for k in seen if k.startswith("status")], seen
    assert HOSTS[0] not in seen, seen
    wait_for(lambda: endpoint_rows(admin)[victim]["health"] == "ejected", 5,
             "the killed endpoint ejected by the breaker")
    picked = endpoint_rows(admin)[victim]["requests_total"]
    # Picks after the kill: each worker's breaker_failures refused connects, and the requests
    # that met a pooled connection of it (each picked it at most twice: the reused connection,
    # then a fresh one refused before failing over).
    assert picked - before["requests_total"] <= 2 * 3 + 2 * before["connections"], \
        (picked, before)
    seen = run_load(tetherd.port, 3, 60) + run_load(tetherd.port, 3, 30, keepalive=False)
    assert set(seen) == set(HOSTS[1:]), seen
    assert endpoint_rows(admin)[victim]["requests_total"] == picked  # not even tried
    metrics = fetch(admin, "GET", "/metrics").text
    assert 'tether_ejections_total{upstream="app",cause="connect"}' in metrics, metrics
    assert metric(admin, "tether_ejections_total", cause="connect") >= 1, metrics


def test_unhealthy_endpoint_is_marked_down(start_upstream, start_tetherd):
    """An endpoint that accepts connections but answers /healthz with 503 is down: its idle
    connections close (endpoint_down) and requests go to the others."""
    # A long first interval would let requests reach it first; checks start within one.
    port, _, admin, tetherd = start_service(start_upstream, start_tetherd,
                                            f"{CHECKS}\nmin_idle = 6", unhealthy=(HOSTS[1],))
    sick = f"{HOSTS[1]}:{port}"
    wait_for(lambda: endpoint_rows(admin)[sick]["health"] == "down", 5, "503 /healthz is down")
    seen = run_load(tetherd.port, 3, 30)
    assert set(seen) == {HOSTS[0], HOSTS[2]}, seen
    assert f"endpoint {sick} down: 2 health checks failed (status 503)" in tetherd.log()
    assert tetherd.log().count(f"endpoint {sick} down") == 1  # once per change, not per check
    (app,) = get_json(admin, "/stats")["upstreams"]
    assert app["connections"]["closed"]["endpoint_down"] >= 1, app["connections"]["closed"]
    # /pools says the same of each endpoint, connections or not (the sick one has none left).
    pools = {r["endpoint"]: r for r in get_json(admin, "/pools")["endpoints"]}
    assert set(pools) == {f"{h}:{port}" for h in HOSTS}, pools
    assert [pools[sick]["health"], pools[sick]["connections"]] == ["down", 0], pools
    assert 0 <= pools[sick]["last_change_seconds_ago"] < 10, pools
    assert all(pools[f"{h}:{port}"]["health"] == "up" for h in (HOSTS[0], HOSTS[2])), pools
    assert all(c["endpoint"] != sick for c in get_json(admin, "/pools")["connections"])
    top = run_top("--once", "--interval", "0.2", "--admin", f"127.0.0.1:{admin}")
    assert f"UP 2/3, {sick} down" in top.stdout, top.stdout
    assert max(len(line) for line in top.stdout.splitlines()) <= 80, top.stdout


def test_all_endpoints_down_is_a_fast_503(start_upstream, start_tetherd, tmp_path):
    """Counted as a fast failure, and the access log says endpoint_down (Proxy-Status has
    destination_unavailable for it and for the breaker alike)."""
    log = tmp_path / "access.log"
    port, _, admin, tetherd = start_service(start_upstream, start_tetherd, CHECKS,
                                            tether_cfg=f"access_log = {log}", unhealthy=HOSTS)
    wait_for(lambda: all(r["health"] == "down" for r in endpoint_rows(admin).values()), 5,
             "every endpoint down")
    client = Client(tetherd.port)
    try:
        started = time.monotonic()
        resp = client.request()
        took = time.monotonic() - started
    finally:
        client.close()
    assert_tether_error(resp, 503, "health checks failing")
    assert resp.header("Retry-After") is not None
    assert took < 0.5, took  # no connect, no queue wait (queue_timeout is 1 s)
    assert metric(admin, "tether_fast_failures_total", upstream="app") == 1
    wait_for(lambda: log.exists() and log.read_text().strip(), 5, "the access log")
    (line,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (line["status"], line["error"]) == (503, "endpoint_down"), line


def test_health_timeout_must_be_shorter_than_interval(start_tetherd, tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[upstream app]\nurl = http://127.0.0.1:1\nlisten = 127.0.0.1:%d\n"
                    "health_check = GET /healthz\nhealth_interval = 1s\nhealth_timeout = 2s\n"
                    % free_port())
    from helpers import tetherd_binary
    import subprocess
    out = subprocess.run([str(tetherd_binary()), "-c", str(path), "--check"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert f"{path}:6: health_timeout" in out.stderr, out.stderr
    assert os.path.exists(path)


def test_hung_endpoint_is_ejected_by_response_timeouts(start_upstream, start_tetherd):
    """An endpoint that hangs (SIGSTOP: the kernel still accepts, nothing answers) costs
    breaker_failures timed-out requests, then is ejected (cause timeout); after that every
    request is answered by the others, the queued ones included."""
    port, ups, admin, tetherd = start_service(
        start_upstream, start_tetherd,
        "response_timeout = 300ms\nbreaker_failures = 2\nbreaker_cooldown = 30s\n"
        "breaker_max_cooldown = 60s\nbalance = round_robin\nmax_connections = 4")
    hung = ups[HOSTS[2]].proc
    hung.send_signal(signal.SIGSTOP)
    try:
        seen = run_load(tetherd.port, 4, 10)
        assert seen["status 504"] <= 2 + 4, seen  # breaker_failures, and those already sent
        assert endpoint_rows(admin)[f"{HOSTS[2]}:{port}"]["health"] == "ejected"
        seen = run_load(tetherd.port, 6, 20)  # 6 clients over 4 connections: some queue
        assert set(seen) == set(HOSTS[:2]), seen
        metrics = fetch(admin, "GET", "/metrics").text
        assert 'tether_ejections_total{upstream="app",cause="timeout"} 1' in metrics, metrics
        assert "2 requests in a row failed (response_timeout)" in tetherd.log()
    finally:
        hung.send_signal(signal.SIGCONT)


def test_reset_before_a_response_is_retried_on_another_endpoint(start_upstream,
                                                                start_tetherd):
    """A GET whose fresh connection is reset before any response byte is sent once more, to a
    different endpoint; a POST in the same spot is never sent twice."""
    _, ups, _, tetherd = start_service(start_upstream, start_tetherd, "max_idle = 0")
    resp = fetch(tetherd.port, "GET", "/g", headers=[("X-Reset", "1")])
    assert resp.status == 502, resp
    gets = [h for h, u in ups.items() if u.stats()["methods"].get("GET", 0)]
    assert len(gets) == 2, gets  # two arrivals, on two endpoints
    resp = fetch(tetherd.port, "POST", "/p", headers=[("X-Reset", "1")], body=b"once")
    assert resp.status == 502, resp
    posts = sum(u.stats()["methods"].get("POST", 0) for u in ups.values())
    assert posts == 1, posts


def test_queued_requests_do_not_wait_for_a_down_endpoint(start_upstream, start_tetherd):
    """max_connections = 2, both held by requests to an endpoint that hangs (SIGSTOP): the
    requests queued behind them must not wait out queue_timeout (10 s) once health checks mark
    it down; its connections stop counting against max_connections, so the queued requests get
    connections to the other endpoints."""
    port, ups, admin, tetherd = start_service(
        start_upstream, start_tetherd,
        f"{CHECKS}\nmax_connections = 2\nmax_idle = 0\nqueue_timeout = 10s\n"
        "response_timeout = 20s\nbalance = round_robin\nmax_queue = 100")
    hung = ups[HOSTS[0]].proc
    results = {}

    def one(i):
        started = time.monotonic()
        resp = fetch(tetherd.port)
        results[i] = (resp.status, resp.header("X-Upstream-Name"), time.monotonic() - started)

    def held_by_hung():
        hung_ep = f"{HOSTS[0]}:{port}"
        return sum(c["endpoint"] == hung_ep for c in get_json(admin, "/pools")["connections"])

    threads = []
    hung.send_signal(signal.SIGSTOP)
    try:
        # One at a time until two hang on it (round-robin, and max_idle = 0: a fresh connection
        # each): those two hold both connections the upstream may have. Each request is either
        # answered or seen holding a connection to the hung endpoint before the next starts.
        for i in range(12):
            held = held_by_hung()
            threads.append(threading.Thread(target=one, args=(i,)))
            threads[-1].start()
            wait_for(lambda: i in results or held_by_hung() > held, 5, f"request {i} placed")
            if held_by_hung() >= 2:
                break
        assert held_by_hung() >= 2, results
        queued = range(len(threads), len(threads) + 4)
        for i in queued:
            threads.append(threading.Thread(target=one, args=(i,)))
            threads[-1].start()
        wait_for(lambda: all(i in results for i in queued), 12, "the queued requests")
    finally:
        hung.send_signal(signal.SIGCONT)  # the two sent to it are answered now
    for th in threads:
        th.join(15)
    # Well before queue_timeout (10 s): down within 2 x 300 ms, then connections elsewhere.
    assert all(results[i][0] == 200 and results[i][2] < 6 for i in queued), results
    assert not [r for r in results.values() if r[0] != 200], results
    (app,) = get_json(admin, "/stats")["upstreams"]
    assert app["queue"]["queued_total"] >= 4, app["queue"]
