"""Probes of idle pooled connections (probe = OPTIONS *): an upstream whose connections go dead
when idle (upstream.py --dead-after-idle: the socket stays open, nothing answers) costs a client
nothing with probes on, and response_timeout with them off; probes keep a live connection in the
pool without changing what clients receive; an answer that will not keep the connection
(Connection: close) closes it as probe_failed."""

import time

from helpers import Client, fetch, free_port, get_json, wait_for


def config(upstream_port, listen, admin, upstream_cfg):
    return (f"[tether]\nworkers = 1\nadmin = 127.0.0.1:{admin}\n\n"
            f"[upstream app]\nurl = http://127.0.0.1:{upstream_port}\n"
            f"listen = 127.0.0.1:{listen}\nidle_timeout = 30s\n{upstream_cfg}\n")


def app_stats(admin):
    (app,) = get_json(admin, "/stats")["upstreams"]
    return app


def probes(admin, result):
    for line in fetch(admin, "GET", "/metrics").text.splitlines():
        if line.startswith("tether_probes_total{") and f'result="{result}"' in line:
            return int(line.split()[-1])
    return 0


def test_probe_finds_a_dead_path_before_a_client_does(start_upstream, start_tetherd):
    """The pooled connection goes dead after 0.8 s idle. With probes every 1 s (timeout 300 ms)
    the probe finds it and it is closed (probe_failed); a client request after 2 s idle is
    answered at once on a fresh connection. Without probes the same request waits out
    response_timeout (3 s)."""
    upstream = start_upstream("--dead-after-idle", "0.8")
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(config(upstream.port, listen, admin,
                                   "probe = OPTIONS *\nprobe_interval = 1s\nprobe_timeout = 300ms\n"
                                   "response_timeout = 3s"))
    assert fetch(tetherd.port).status == 200
    wait_for(lambda: app_stats(admin)["connections"]["closed"]["probe_failed"] == 1, 5,
             "the probe to fail")
    assert probes(admin, "timeout") == 1
    time.sleep(0.5)
    started = time.monotonic()
    resp = fetch(tetherd.port)
    elapsed = time.monotonic() - started
    assert resp.status == 200 and resp.conn_id == 2, resp
    assert elapsed < 1.0, elapsed  # the failure value is response_timeout, 3 s
    assert upstream.stats()["swallowed"] == 1  # the probe, never a client request


def test_without_probes_the_dead_path_costs_response_timeout(start_upstream, start_tetherd):
    upstream = start_upstream("--dead-after-idle", "0.8")
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(config(upstream.port, listen, admin, "response_timeout = 2s"))
    assert fetch(tetherd.port).status == 200
    time.sleep(1.2)
    started = time.monotonic()
    resp = fetch(tetherd.port)
    assert time.monotonic() - started >= 1.9, resp
    assert upstream.stats()["swallowed"] == 1


def test_probes_keep_a_live_connection_and_change_nothing(start_upstream, start_tetherd):
    """Probes every 200 ms on a live upstream: the connection stays pooled (the next client
    request reuses it), each probe is an OPTIONS * the upstream answered, and clients only ever
    see their own responses."""
    upstream = start_upstream()
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(config(upstream.port, listen, admin,
                                   "probe = OPTIONS *\nprobe_interval = 200ms\n"
                                   "probe_timeout = 500ms"))
    with Client(tetherd.port) as client:
        first = client.request("GET", "/a")
        assert first.status == 200
        wait_for(lambda: probes(admin, "ok") >= 3, 5, "three good probes")
        second = client.request("GET", "/b")
    assert second.status == 200 and second.conn_id == first.conn_id, (first, second)
    assert second.header("X-Upstream-Target") == "/b"
    stats = upstream.stats()
    assert stats["connections_accepted"] == 1
    assert stats["methods"].get("OPTIONS", 0) >= 3
    targets = {h["head"].split(" ")[1] for h in stats["heads"] if h["head"].startswith("OPTIONS")}
    assert targets == {"*"}, targets
    assert app_stats(admin)["connections"]["closed"]["probe_failed"] == 0


def test_probe_answered_with_close_closes_the_connection(start_upstream, start_tetherd):
    """The upstream answers the second request of a connection with Connection: close; that is
    the probe, so the connection is closed (no_reuse) and the next client request gets a new
    one."""
    upstream = start_upstream("--max-requests-per-conn", "2")
    listen, admin = free_port(), free_port()
    tetherd = start_tetherd(config(upstream.port, listen, admin,
                                   "probe = OPTIONS *\nprobe_interval = 200ms"))
    assert fetch(tetherd.port).conn_id == 1
    wait_for(lambda: probes(admin, "no_reuse") == 1, 5, "the probe to see Connection: close")
    assert app_stats(admin)["connections"]["closed"]["probe_failed"] == 1
    assert fetch(tetherd.port).conn_id == 2
