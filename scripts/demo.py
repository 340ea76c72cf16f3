#!/usr/bin/python3
"""tether demo (`make demo`): the same connection-per-request load, straight to an upstream nginx
and then through tetherd, with the connections the upstream had to accept each time.

Starts everything on loopback, runs about 15 seconds, stops everything, and exits non-zero with
a message if anything fails.
"""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from harness.contenders import contenders  # noqa: E402
from harness.procs import HarnessError, Services, exit_on_sigterm  # noqa: E402
from harness.runner import SCENARIOS, LoadSettings, RunResult, run_one  # noqa: E402
from harness.upstream import start_upstream  # noqa: E402

TETHERD = REPO / "build" / "tetherd"
SETTINGS = LoadSettings(duration_s=5, connections=16, threads=2, workers=2,
                        load_cpus=None, proxy_cpus=None)
SCENARIO = next(s for s in SCENARIOS if s.name == "close")
LABELS = {"direct": "straight to nginx", "tether": "through tetherd"}


def run_demo() -> list[RunResult]:
    by_name = {c.name: c for c in contenders(str(TETHERD))}
    results = []
    with tempfile.TemporaryDirectory(prefix="tether-demo-") as scratch, \
            Services(Path(scratch)) as services:
        upstream = start_upstream(services, Path(scratch))
        for name in ("direct", "tether"):
            print(f"running {SETTINGS.duration_s:g} s {LABELS[name]} ...", flush=True)
            results.append(run_one(by_name[name], SCENARIO, services, upstream, Path(scratch),
                                   SETTINGS))
    return results


def table(results: list[RunResult]) -> str:
    lines = [f"{'':20}{'upstream conns':>16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"]
    for r in results:
        lines.append(f"{LABELS[r.contender]:20}{r.upstream_accepts:>16,}{r.requests_per_s:>10,.0f}"
                     f"{r.latency_ms['p50']:>9.2f}{r.latency_ms['p99']:>9.2f}{r.error_count:>8,}")
    return "\n".join(lines)


def ratios(direct: RunResult, tether: RunResult) -> str:
    fewer = direct.upstream_accepts / max(tether.upstream_accepts, 1)
    return (f"through tetherd: {fewer:,.0f}x fewer upstream connections, "
            f"{tether.requests_per_s / direct.requests_per_s:.2f}x the requests/s, "
            f"p50 {tether.latency_ms['p50'] / direct.latency_ms['p50']:.2f}x, "
            f"p99 {tether.latency_ms['p99'] / direct.latency_ms['p99']:.2f}x")


def problems(results: list[RunResult]) -> list[str]:
    found = [f"{LABELS[r.contender]}: {r.failure}" for r in results if r.failure]
    found += [f"{LABELS[r.contender]}: {r.error_count} errors {r.errors}"
              for r in results if not r.failure and r.error_count]
    found += [f"{LABELS[r.contender]}: no request completed"
              for r in results if not r.failure and not r.requests]
    return found


def main() -> int:
    exit_on_sigterm()
    if not TETHERD.exists():
        raise HarnessError(f"{TETHERD.relative_to(REPO)} not found: run `make` first")
    print(f"tether demo: {SETTINGS.connections} clients, a new connection per request "
          f"(wrk -t {SETTINGS.threads} -c {SETTINGS.connections} -H 'Connection: close'), "
          f"tetherd --workers {SETTINGS.workers}", flush=True)
    results = run_demo()
    failed = problems(results)
    if not any(r.failure for r in results):
        print("\n" + table(results) + "\n")
        print(ratios(*results))
        print("(upstream conns: connections the upstream nginx accepted during the run, "
              "from its stub_status)")
    for problem in failed:
        print(f"demo: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as err:
        sys.exit(f"demo: {err}")
    except KeyboardInterrupt:
        sys.exit("demo: interrupted; all processes stopped")
