"""The benchmark's folding of repeated runs and its tether-versus-best table (bench/harness).

No load runs here: the results are built by hand, so the medians and ratios are known.
"""

import sys

import pytest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import aggregate, report  # noqa: E402
from harness.runner import RunResult  # noqa: E402


def run(contender, scenario, rps, p99, cpu, errors=0, rss=None, failure=None):
    return RunResult(contender, scenario, failure=failure, requests=int(rps * 10),
                     requests_per_s=rps, latency_ms={"p50": p99 / 2, "p99": p99},
                     errors={"timeout": errors}, error_count=errors, upstream_accepts=63,
                     upstream_accepts_per_request=63 / (rps * 10) if rps else None,
                     proxy_cpu_s_per_100k=cpu,
                     upstream_cpu_s_per_100k=0.5, proxy_rss_bytes=rss)


def test_fold_takes_medians_sums_errors_and_keeps_the_largest_rss():
    row = aggregate.fold([run("tether", "keepalive", 80_000, 1.2, 1.10, rss=4 << 20),
                          run("tether", "keepalive", 90_000, 0.9, 1.30, errors=2, rss=5 << 20),
                          run("tether", "keepalive", 84_000, 1.0, 1.20, rss=3 << 20)])
    assert row.runs == 3
    assert row.requests_per_s == 84_000
    assert row.latency_ms["p99"] == 1.0
    assert row.proxy_cpu_s_per_100k == 1.20
    assert row.error_count == 2 and row.errors == {"timeout": 2}
    assert row.proxy_rss_bytes == 5 << 20
    assert abs(row.requests_per_s_spread - 5_000 / 84_000) < 1e-9
    assert row.failure is None


def test_tls_versions_fold_like_the_handshake_count():
    runs = [run("tether", "tls-close", 1, 1, 1) for _ in range(3)]
    for one, protocols in zip(runs, ({"TLSv1.3": 63}, {"TLSv1.3": 60, "TLSv1.2": 3},
                                     {"TLSv1.3": 63})):
        one.upstream_tls_protocols = protocols
    assert aggregate.fold(runs).upstream_tls_protocols == {"TLSv1.2": 0, "TLSv1.3": 63}


def test_one_failed_run_fails_the_row_and_says_which():
    row = aggregate.fold([run("nginx", "close", 20_000, 2.0, 2.5),
                          run("nginx", "close", 0, 0, None, failure="nginx exited")])
    assert row.failure == "nginx exited (run 2 of 2)"


def test_fold_all_groups_interleaved_runs_in_first_seen_order():
    runs = [run("tether", "keepalive", 1, 1, 1), run("haproxy", "keepalive", 2, 1, 1),
            run("haproxy", "keepalive", 4, 1, 1), run("tether", "keepalive", 3, 1, 1)]
    rows = aggregate.fold_all(runs)
    assert [(r.contender, r.requests_per_s, r.runs) for r in rows] == [
        ("tether", 2, 2), ("haproxy", 3, 2)]


def test_standings_compare_with_the_best_other_proxy_not_the_baselines():
    rows = [run("direct", "close", 30_000, 0.5, None), run("tether", "close", 22_000, 2.2, 1.9),
            run("haproxy", "close", 22_500, 2.6, 2.6), run("nginx", "close", 21_000, 2.4, 2.5)]
    found = {s.figure: s for s in aggregate.standings(rows)}
    assert (found["req/s"].best_other, found["req/s"].tether_leads) == ("haproxy", False)
    assert (found["p99 ms"].best_other, found["p99 ms"].tether_leads) == ("nginx", True)
    assert found["proxy CPU s/100k"].best_other == "nginx"
    assert abs(found["proxy CPU s/100k"].ratio - 1.9 / 2.5) < 1e-9
    table = report.standings_table(aggregate.standings(rows))
    assert "| close | 22,000 vs haproxy 22,500: **0.98×** (behind) |" in table
    assert "2.200 vs nginx 2.400: **0.92×** |" in table


def test_no_standings_without_tether_or_a_rival():
    assert aggregate.standings([run("haproxy", "close", 1, 1, 1)]) == []
    assert aggregate.standings([run("tether", "close", 1, 1, 1),
                                run("direct", "close", 1, 1, None)]) == []
    assert report.standings_table([]) == ""


def test_feature_costs_compare_tether_with_its_own_baseline_row():
    from harness.runner import SCENARIOS
    rows = [run("tether", "keepalive", 50_000, 1.0, 2.00), run("tether", "three-endpoints",
                                                                 50_000, 1.0, 2.10),
            run("haproxy", "probes-health", 1, 1, 1.0), run("tether", "probes-health", 1, 1, 2.01),
            run("tether", "uds-close", 1, 1, 1.5)]  # its baseline tcp-close did not run
    costs = {c.scenario: c for c in aggregate.feature_costs(rows, SCENARIOS)}
    assert set(costs) == {"three-endpoints", "probes-health"}
    assert abs(costs["three-endpoints"].ratio - 1.05) < 1e-9
    assert costs["three-endpoints"].within is False  # the 3% bound of issue 13
    assert costs["probes-health"].within is True  # 0.5% against 1%
    table = report.costs_table(list(costs.values()))
    assert "| three-endpoints | keepalive | 2.10 vs 2.00 | **1.050×** | ≤ 1.03×: **missed** |" \
        in table


def test_body_rows_stand_on_mb_per_s_and_cpu_per_mb_not_req_s():
    rows = [run("tether", "large-body", 10, 80, 900), run("haproxy", "large-body", 8, 90, 800)]
    rows[0].mb_per_s, rows[0].proxy_cpu_ms_per_mb = 800.0, 0.5
    rows[1].mb_per_s, rows[1].proxy_cpu_ms_per_mb = 600.0, 0.9
    found = {s.figure: s for s in aggregate.standings(rows)}
    assert "req/s" not in found and "proxy CPU s/100k" not in found
    assert found["MB/s"].tether_leads and found["proxy CPU ms/MB"].tether_leads
    folded = aggregate.fold([rows[0], rows[0]])
    assert (folded.mb_per_s, folded.proxy_cpu_ms_per_mb) == (800.0, 0.5)


def test_launches_balance_over_the_endpoints_and_listen_on_unix(tmp_path):
    from harness import contenders as c
    ctx = c.Launch(tmp_path, 8080, "http://127.0.0.1:9000", 1,
                   endpoints=("127.0.0.2:9000", "127.0.0.3:9000", "127.0.0.4:9000"),
                   unix_path=tmp_path / "l.sock", tether_conf=("probe = OPTIONS *",),
                   tether_global=("request_buffer = 0",), health_checks=True)
    tether = c.tether_config(ctx)
    assert f"listen = unix:{tmp_path / 'l.sock'}\nlisten_mode = 0666" in tether
    assert "endpoints = 127.0.0.2:9000, 127.0.0.3:9000, 127.0.0.4:9000" in tether
    assert tether.index("request_buffer = 0") < tether.index("[upstream bench]") \
        < tether.index("probe = OPTIONS *")
    c._launch_haproxy(ctx)
    haproxy = (tmp_path / "haproxy.cfg").read_text()
    assert f"bind unix@{tmp_path / 'l.sock'}" in haproxy and "balance leastconn" in haproxy
    assert "server upstream2 127.0.0.4:9000 check inter 1s" in haproxy
    c._launch_nginx(ctx)
    nginx = (tmp_path / "nginx" / "nginx.conf").read_text()
    assert "least_conn;" in nginx and "server 127.0.0.3:9000;" in nginx
    assert f"listen unix:{tmp_path / 'l.sock'}" in nginx
    plain = c.Launch(tmp_path, 8080, "http://127.0.0.1:9000", 1)
    assert c._launch_tether("tetherd")(plain)[1] == "--listen"  # zero-config stays zero-config


def test_scenarios_choose_their_contenders_and_cap_their_duration():
    import run as bench_run
    from harness.contenders import contenders
    from harness.runner import SCENARIOS, LoadSettings, run_seconds
    by_name = {s.name: s for s in SCENARIOS}
    order = bench_run.running_order(contenders("tetherd"), [by_name["probes-health"],
                                                            by_name["keepalive"]], 2)
    assert [(s.name, c.name) for s, c in order[:2]] == [("probes-health", "tether"),
                                                        ("probes-health", "haproxy")]
    assert len(order) == 14  # per round: 2 in probes-health, 5 in keepalive (not direct-full)
    assert (order[7][0].name, order[7][1].name) == ("probes-health", "haproxy")  # round 2 shifts
    settings = LoadSettings(10.0, 64, 1, 1, None, None)
    assert run_seconds(by_name["keepalive"], settings) == 10.0
    assert run_seconds(by_name["uds-close"], settings) == 3.0
    assert bench_run.expected_seconds(order, settings) > 0


def _serve_fixed_responses(server_socket, stop):
    """Answers every request on every connection with a 5-byte 200; closes on Connection: close."""
    import threading

    def serve(conn):
        with conn:
            pending = b""
            try:
                while not stop.is_set():
                    data = conn.recv(4096)
                    if not data:
                        return
                    pending += data
                    while b"\r\n\r\n" in pending:
                        head, _, pending = pending.partition(b"\r\n\r\n")
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                        if b"Connection: close" in head:
                            return
            except OSError:  # the load generator closes its connections at its end
                return

    server_socket.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server_socket.accept()
        except OSError:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


@pytest.mark.parametrize("family", ["unix", "tcp"])
@pytest.mark.parametrize("close", [False, True], ids=["keepalive", "close"])
def test_loadgen_completes_requests_over_unix_and_tcp(tmp_path, family, close):
    import socket
    import threading
    from harness.loadgen import run_loadgen
    if family == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "s.sock"))
        where = {"unix_path": tmp_path / "s.sock", "tcp_address": ""}
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        where = {"unix_path": None, "tcp_address": f"127.0.0.1:{listener.getsockname()[1]}"}
    listener.listen(64)
    stop = threading.Event()
    server = threading.Thread(target=_serve_fixed_responses, args=(listener, stop), daemon=True)
    server.start()
    try:
        result = run_loadgen(tmp_path, duration_s=0.5, connections=4, close=close, **where)
    finally:
        stop.set()
        server.join(timeout=5)
        listener.close()
    assert result.requests > 10
    assert result.error_count == 0, result.errors
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]


def test_chart_draws_the_large_bodies_in_a_row_of_their_own(tmp_path):
    rows = [run("tether", "keepalive", 50_000, 1.0, 2.0), run("tether", "large-body", 10, 80, 9),
            run("haproxy", "large-body", 8, 90, 9)]
    rows[1].mb_per_s, rows[1].proxy_cpu_ms_per_mb = 800.0, 0.5
    rows[2].mb_per_s, rows[2].proxy_cpu_ms_per_mb = 600.0, 0.9
    assert report.write_chart(tmp_path, "t", rows, ["tether", "haproxy"]) is not None
    bodies = (tmp_path / "chart-bodies.dat").read_text().splitlines()
    assert bodies == ["# contender mbps_large-body cpumb_large-body", "tether 800.000 0.500",
                      "haproxy 600.000 0.900"]
    assert "large-body" not in (tmp_path / "chart.dat").read_text()
