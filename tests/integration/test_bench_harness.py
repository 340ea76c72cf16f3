"""The benchmark's folding of repeated runs and its tether-versus-best table (bench/harness).

No load runs here: the results are built by hand, so the medians and ratios are known.
"""

import sys
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
