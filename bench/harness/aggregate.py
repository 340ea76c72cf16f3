"""Repeated runs of one (contender, scenario) pair folded into one row, and tether's standing.

A 2-CPU virtual machine moves by a few percent from one 10-second run to the next, about as
much as the proxies differ. So every pair runs several times, interleaved with the others, and
the table shows the median of each figure; the spread of req/s says how far to trust it.
"""

import statistics
from collections import Counter
from dataclasses import dataclass, replace

from .runner import RunResult

BASELINES = ("direct", "direct-full")  # not proxies: left out of "best other proxy"


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _median_count(values: list) -> int | None:
    middle = _median(values)
    return None if middle is None else round(middle)


def fold(runs: list[RunResult]) -> RunResult:
    """One row for the runs of one pair: the median of every figure, errors summed over all runs
    (one error anywhere counts), the largest RSS. A failed run makes the row failed."""
    first = runs[0]
    failed = [(index, run) for index, run in enumerate(runs, 1) if run.failure]
    if failed:
        index, run = failed[0]
        note = f" (run {index} of {len(runs)})" if len(runs) > 1 else ""
        return replace(run, failure=run.failure + note, runs=len(runs))
    rates = [run.requests_per_s for run in runs]
    middle_rate = statistics.median(rates)
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    protocols = None
    if first.upstream_tls_protocols is not None:  # handshakes per TLS version, like the total
        names = {name for run in runs for name in run.upstream_tls_protocols or {}}
        protocols = {name: _median_count([(run.upstream_tls_protocols or {}).get(name, 0)
                                          for run in runs]) for name in sorted(names)}
    rss = [run.proxy_rss_bytes for run in runs if run.proxy_rss_bytes is not None]
    return replace(
        first,
        runs=len(runs),
        requests=_median_count([run.requests for run in runs]),
        requests_per_s=middle_rate,
        requests_per_s_spread=(max(rates) - min(rates)) / 2 / middle_rate if middle_rate else None,
        latency_ms={key: _median([run.latency_ms.get(key) for run in runs])
                    for key in first.latency_ms},
        errors=dict(errors),
        error_count=sum(run.error_count for run in runs),
        upstream_accepts=_median_count([run.upstream_accepts for run in runs]),
        upstream_accepts_per_request=_median([run.upstream_accepts_per_request for run in runs]),
        proxy_cpu_s_per_100k=_median([run.proxy_cpu_s_per_100k for run in runs]),
        upstream_cpu_s_per_100k=_median([run.upstream_cpu_s_per_100k for run in runs]),
        proxy_rss_bytes=max(rss) if rss else None,
        upstream_tls_handshakes=_median_count([run.upstream_tls_handshakes for run in runs]),
        upstream_tls_resumed=_median_count([run.upstream_tls_resumed for run in runs]),
        upstream_tls_protocols=protocols,
        mb_per_s=_median([run.mb_per_s for run in runs]),
        proxy_cpu_ms_per_mb=_median([run.proxy_cpu_ms_per_mb for run in runs]),
    )


def fold_all(runs: list[RunResult]) -> list[RunResult]:
    """One folded row per (contender, scenario), in the order the pairs first ran."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.contender, run.scenario), []).append(run)
    return [fold(group) for group in groups.values()]


@dataclass(frozen=True)
class Standing:
    """tether against the best other proxy on one figure of one scenario."""

    scenario: str
    figure: str  # "req/s", "p99 ms", "proxy CPU s/100k"
    higher_is_better: bool
    tether: float
    best_other: str
    best_value: float

    @property
    def ratio(self) -> float:
        return self.tether / self.best_value if self.best_value else float("inf")

    @property
    def tether_leads(self) -> bool:
        if self.higher_is_better:
            return self.tether >= self.best_value
        return self.tether <= self.best_value


_FIGURES = (  # (name, value of a row, True if higher is better)
    ("req/s", lambda r: r.requests_per_s if r.mb_per_s is None else None, True),
    ("p50 ms", lambda r: r.latency_ms.get("p50"), False),
    ("p99 ms", lambda r: r.latency_ms.get("p99"), False),
    ("proxy CPU s/100k", lambda r: r.proxy_cpu_s_per_100k if r.mb_per_s is None else None,
     False),
    ("MB/s", lambda r: r.mb_per_s, True),
    ("proxy CPU ms/MB", lambda r: r.proxy_cpu_ms_per_mb, False),
)


def standings(rows: list[RunResult]) -> list[Standing]:
    """For each scenario tether ran in: each figure against the best other proxy's."""
    found = []
    for scenario in dict.fromkeys(row.scenario for row in rows):
        in_scenario = [row for row in rows if row.scenario == scenario and not row.failure]
        tether = next((row for row in in_scenario if row.contender == "tether"), None)
        others = [row for row in in_scenario
                  if row.contender not in BASELINES and row.contender != "tether"]
        if tether is None or not others:
            continue
        for figure, value, higher_better in _FIGURES:
            rivals = [row for row in others if value(row) is not None]
            if value(tether) is None or not rivals:
                continue
            best = (max if higher_better else min)(rivals, key=value)
            found.append(Standing(scenario, figure, higher_better, value(tether), best.contender,
                                  value(best)))
    return found


@dataclass(frozen=True)
class FeatureCost:
    """tether's CPU per request in a scenario against its own in the scenario's baseline: what a
    feature (three endpoints, probes, buffering, a Unix listener) costs it."""

    scenario: str
    baseline: str
    cpu: float
    baseline_cpu: float
    limit: float | None  # the largest ratio allowed, or None

    @property
    def ratio(self) -> float:
        return self.cpu / self.baseline_cpu if self.baseline_cpu else float("inf")

    @property
    def within(self) -> bool | None:
        return None if self.limit is None else self.ratio <= self.limit


def feature_costs(rows: list[RunResult], scenarios) -> list[FeatureCost]:
    """One FeatureCost per scenario with a baseline where tether ran in both."""
    cpu = {row.scenario: row.proxy_cpu_s_per_100k for row in rows
           if row.contender == "tether" and not row.failure}
    found = []
    for scenario in scenarios:
        if scenario.baseline is None:
            continue
        mine, theirs = cpu.get(scenario.name), cpu.get(scenario.baseline)
        if mine is None or theirs is None:
            continue
        found.append(FeatureCost(scenario.name, scenario.baseline, mine, theirs,
                                 scenario.cost_limit))
    return found
