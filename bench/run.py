#!/usr/bin/python3
"""tether benchmark: tetherd against direct access, haproxy, nginx and h2o, under wrk.

Every contender pools keep-alive connections to the same upstream nginx and gets the same number
of workers. The tls-* scenarios put TLS between the contender and the upstream (certificates
made at run time). Each (contender, scenario) run starts a fresh proxy; every pair runs
--repeat times, the rounds interleaved, and the table shows medians. Results go to
bench/results/<timestamp>/ (table.md, results.json, chart.png) and bench/results/latest/.
Run through `make bench` (BENCH_ARGS='--quick' for a run under two minutes); see bench/README.md.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from harness import aggregate, procfs, report
from harness.contenders import Contender, contenders
from harness.memprobe import MemoryProbe, probe_memory
from harness.procs import HarnessError, Services, exit_on_sigterm, raise_fd_limit
from harness.runner import (HEALTH_CHECKS, SCENARIOS, LoadSettings, RunResult, Scenario,
                            run_one, run_seconds, without_health_checks)
from harness.tls import KEY_ALGORITHM
from harness.upstream import RESPONSE_SIZE, Upstream, start_upstream

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TETHERD_CANDIDATES = (REPO / "build-release" / "tetherd", REPO / "build" / "tetherd")
FULL_DURATION_S = 10.0
QUICK_DURATION_S = 3.0
FULL_REPEAT = 3
QUICK_REPEAT = 1
FD_LIMIT = 65536  # the memory probe holds 10,000 upstream connections
PUBLISHED_FILES = ("table.md", "results.json", "chart.png")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _positive(cast):
    def parse(text: str):
        value = cast(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tetherd", help="tetherd to measure (default: build-release/tetherd, "
                                          "else build/tetherd)")
    parser.add_argument("--duration", type=_positive(float),
                        help=f"seconds per run (default {FULL_DURATION_S:g}, "
                             f"{QUICK_DURATION_S:g} with --quick)")
    parser.add_argument("--repeat", type=_positive(int),
                        help=f"runs per (contender, scenario), interleaved; the table shows "
                             f"medians (default {FULL_REPEAT}, {QUICK_REPEAT} with --quick)")
    parser.add_argument("--connections", type=_positive(int), default=64, help="wrk connections")
    parser.add_argument("--threads", type=_positive(int), default=1, help="wrk threads")
    parser.add_argument("--workers", type=_positive(int), default=1,
                        help="worker threads/processes of every proxy")
    parser.add_argument("--contenders", type=_names, help="comma-separated subset of: "
                        + ", ".join(c.name for c in contenders("tetherd")))
    parser.add_argument("--scenarios", type=_names, help="comma-separated subset of: "
                        + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="short runs: the whole run in under "
                                                             "two minutes")
    parser.add_argument("--memory-probe", action=argparse.BooleanOptionalAction, default=True,
                        help="measure tether's memory per idle upstream connection")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION_S if args.quick else FULL_DURATION_S
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else FULL_REPEAT
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    return args


def find_tetherd(requested: str | None) -> str:
    if requested:
        return requested
    existing = [path for path in TETHERD_CANDIDATES if path.exists()]
    return str(existing[0] if existing else TETHERD_CANDIDATES[0])


def select(available: list, wanted: list[str] | None, kind: str) -> list:
    if wanted is None:
        return list(available)
    by_name = {item.name: item for item in available}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise HarnessError(f"unknown {kind}: {', '.join(unknown)} (known: {', '.join(by_name)})")
    return [by_name[name] for name in wanted]


def cpu_layout(nproc: int) -> tuple[str | None, str | None]:
    """(load CPUs, proxy CPUs): wrk and the upstream on CPU 0, the proxy on the rest."""
    if nproc < 2:
        return None, None
    return "0", ("1" if nproc == 2 else f"1-{nproc - 1}")


def header_lines(machine: dict, settings: LoadSettings, tetherd: str,
                 scenarios: list[Scenario], repeat: int) -> list[str]:
    if settings.load_cpus:
        pinning = (f"wrk and the upstream pinned to CPU {settings.load_cpus}, the proxy to CPU "
                   f"{settings.proxy_cpus} (taskset)")
    else:
        pinning = "no CPU pinning (one CPU)"
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}; "
        f"{pinning}.",
        f"Load: wrk, {settings.threads} thread(s), {settings.connections} connections, "
        f"{settings.duration_s:g} s per run; every proxy has {settings.workers} worker(s) and "
        f"starts fresh (empty pool) for each run.",
        (f"Each (contender, scenario) ran {repeat} times, in interleaved rounds: every figure is "
         f"the median of its runs, `req/s ±` half the range of their req/s relative to the "
         f"median, errors the sum, RSS the largest." if repeat > 1
         else "One run per (contender, scenario)."),
        f"Upstream: nginx, 1 worker, {RESPONSE_SIZE}-byte 200 response. tetherd: `{tetherd}`.",
    ]
    if any(scenario.upstream_tls for scenario in scenarios):
        lines.append(
            f"TLS scenarios: the upstream serves TLS 1.2/1.3 with an {KEY_ALGORITHM} certificate "
            f"from a private CA, session cache and tickets on; every proxy verifies its chain, "
            f"and all but h2o 2.2.5 the name `localhost`. `direct-full`: wrk to a listener "
            f"without session resumption.")
    return lines


def progress(index: int, total: int, result: RunResult) -> None:
    label = f"[{index}/{total}] {result.contender} / {result.scenario}:"
    if result.failure:
        print(f"{label} FAILED: {result.failure}", flush=True)
        return
    tls = ""
    if result.upstream_tls_handshakes is not None:
        tls = (f", {result.upstream_tls_handshakes:,} TLS handshakes "
               f"({result.upstream_tls_resumed:,} resumed)")
    print(f"{label} {result.requests_per_s:,.0f} req/s, p99 {result.latency_ms['p99']:.3f} ms, "
          f"{result.error_count} errors, {result.upstream_accepts:,} upstream connections{tls}",
          flush=True)


def running_order(runnable: list[Contender], scenarios: list[Scenario],
                  repeat: int) -> list[tuple[Scenario, Contender]]:
    """Every pair once per round. Within a scenario each round starts one contender later, so no
    contender always runs first, on a machine that has just been idle."""
    order = []
    for round_index in range(repeat):
        for scenario in scenarios:
            present = [c for c in runnable
                       if c.runs_in(scenario.name) and scenario.admits(c.name)]
            shift = round_index % len(present) if present else 0
            order += [(scenario, c) for c in present[shift:] + present[:shift]]
    return order


RUN_OVERHEAD_S = 1.5  # starting and stopping a proxy, its first request, stub_status reads
BODY_RUN_S = 3.5  # BODY_TRANSFERS 50 MB transfers: 1-3 s measured on the loaded 2-CPU VM


def expected_seconds(order: list[tuple[Scenario, Contender]], settings: LoadSettings) -> float:
    """What the run should take, to print before it starts (measured overheads)."""
    return sum((BODY_RUN_S if scenario.client == "body" else run_seconds(scenario, settings))
               + RUN_OVERHEAD_S for scenario, _ in order)


def health_check_support(tetherd: str, scenarios: list[Scenario],
                         workdir: Path) -> tuple[list[Scenario], list[str]]:
    """A tetherd without the health_check keys yet runs the probes-health scenario with probes
    only, and the footer says so."""
    if not any(set(HEALTH_CHECKS) & set(s.tether_conf) for s in scenarios):
        return scenarios, []
    config = workdir / "health-check.ini"
    config.write_text("[upstream check]\nurl = http://127.0.0.1:1\nlisten = 127.0.0.1:2\n"
                      + "\n".join(HEALTH_CHECKS) + "\n")
    done = subprocess.run([tetherd, "--check", "-c", str(config)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode == 0:
        return scenarios, []
    note = (f"probes-health: this tetherd refused the health_check keys "
            f"({(done.stderr or done.stdout).strip().splitlines()[-1:]}), so it ran with "
            f"probes only.")
    return [without_health_checks(s) for s in scenarios], [note]


def run_all(runnable: list[Contender], scenarios: list[Scenario], services: Services,
            upstream: Upstream, workdir: Path, settings: LoadSettings,
            repeat: int) -> list[RunResult]:
    order = running_order(runnable, scenarios, repeat)
    print(f"{len(order)} runs, expected to take about "
          f"{expected_seconds(order, settings) / 60:.0f} min", flush=True)
    runs = []
    for index, (scenario, contender) in enumerate(order, 1):
        run = run_one(contender, scenario, services, upstream, workdir, settings)
        progress(index, len(order), run)
        runs.append(run)
    return runs


def tls_protocol_line(results: list[RunResult]) -> list[str]:
    """One footer line: the TLS versions of the upstream handshakes, per contender."""
    by_contender: dict[str, set[str]] = {}
    for result in results:
        for protocol in result.upstream_tls_protocols or {}:
            by_contender.setdefault(result.contender, set()).add(protocol)
    if not by_contender:
        return []
    versions = {", ".join(sorted(found)) for found in by_contender.values()}
    if len(versions) == 1:
        return [f"Upstream TLS handshakes: {versions.pop()} for every contender."]
    return ["Upstream TLS handshakes: " + "; ".join(
        f"{name} {', '.join(sorted(found))}" for name, found in by_contender.items()) + "."]


def run_memory_probe(tether: Contender | None, services: Services, upstream: Upstream,
                     workdir: Path, settings: LoadSettings) -> MemoryProbe:
    if tether is None:
        return MemoryProbe("skipped", "tether not selected or tetherd not found")
    print("memory probe: warming idle upstream connections in tetherd", flush=True)
    probe = probe_memory(tether.binary, services, upstream, workdir, settings.workers,
                         settings.proxy_cpus)
    print(probe.summary(), flush=True)
    return probe


def json_context(stamp: str, machine: dict, settings: LoadSettings, repeat: int, tetherd: str,
                 skipped: list[str], probe: MemoryProbe | None) -> dict:
    probe_json = None
    if probe:
        probe_json = asdict(probe) | {"bytes_per_connection": probe.bytes_per_connection}
    return {"timestamp": stamp, "machine": machine,
            "settings": asdict(settings) | {"repeat": repeat}, "tetherd": tetherd,
            "skipped": skipped, "memory_probe": probe_json}


def save(run_dir: Path, title: str, context: dict, results: list[RunResult],
         runs: list[RunResult], table: str, order: list[str]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "table.md").write_text(table)
    report.write_json(run_dir / "results.json", context, results, runs)
    report.write_chart(run_dir, title, results, order)
    report.publish_latest(run_dir, RESULTS / "latest", PUBLISHED_FILES)


def measure(runnable: list[Contender], scenarios: list[Scenario], settings: LoadSettings,
            repeat: int, with_memory_probe: bool) -> tuple[list[RunResult], MemoryProbe | None]:
    """Runs every (scenario, contender) pair `repeat` times, then the memory probe; stops all it
    started. Returns every run, unfolded."""
    raise_fd_limit(FD_LIMIT)
    probe = None
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None  # the 50 MB bodies, in memory
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as scratch, \
            tempfile.TemporaryDirectory(prefix="tether-bench-bodies-", dir=shm) as bodies, \
            Services(Path(scratch)) as services:
        workdir = Path(scratch)
        print("starting the upstream nginx", flush=True)
        upstream = start_upstream(services, workdir, settings.load_cpus, bodies=Path(bodies))
        runs = run_all(runnable, scenarios, services, upstream, workdir, settings, repeat)
        if with_memory_probe:
            tether = next((c for c in runnable if c.name == "tether"), None)
            probe = run_memory_probe(tether, services, upstream, workdir, settings)
    return runs, probe


def main(argv: list[str]) -> int:
    exit_on_sigterm()
    args = parse_args(argv)
    tetherd = find_tetherd(args.tetherd)
    chosen = select(contenders(tetherd), args.contenders, "contenders")
    scenarios = select(list(SCENARIOS), args.scenarios, "scenarios")
    runnable = [c for c in chosen if c.available()]
    skipped = [f"Skipped: {c.name} (`{c.binary}` not found)." for c in chosen if c not in runnable]
    for note in skipped:
        print(note, flush=True)
    if runnable and not any(c.runs_in(s.name) for s in scenarios for c in runnable):
        raise HarnessError("no chosen contender runs in the chosen scenarios (direct-full runs "
                           "only in tls-close)")
    machine = procfs.machine()
    settings = LoadSettings(args.duration, args.connections, args.threads, args.workers,
                            *cpu_layout(machine["nproc"]))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if any(c.name == "tether" for c in runnable):
        with tempfile.TemporaryDirectory(prefix="tether-bench-check-") as scratch:
            scenarios, notes = health_check_support(tetherd, scenarios, Path(scratch))
        skipped += notes

    runs, probe = measure(runnable, scenarios, settings, args.repeat, args.memory_probe)
    results = aggregate.fold_all(runs)

    title = f"tether benchmark {stamp}"
    footer = skipped + tls_protocol_line(results) + ([probe.summary()] if probe else [])
    table = report.markdown_report(
        title, header_lines(machine, settings, tetherd, scenarios, args.repeat), results, footer,
        aggregate.standings(results), aggregate.feature_costs(results, scenarios))
    run_dir = RESULTS / stamp
    context = json_context(stamp, machine, settings, args.repeat, tetherd, skipped, probe)
    save(run_dir, title, context, results, runs, table, [c.name for c in runnable])
    print("\n" + table)
    print(f"saved to {run_dir.relative_to(REPO)}/ and bench/results/latest/")
    probe_failed = probe is not None and probe.outcome == "failed"
    return 1 if probe_failed or any(r.failure for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except HarnessError as err:
        sys.exit(f"bench: {err}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; all processes stopped")
