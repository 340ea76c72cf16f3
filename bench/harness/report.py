"""Benchmark output: the markdown table, the raw JSON and the gnuplot chart."""

import json
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from .aggregate import FeatureCost, Standing
from .runner import RunResult

GNUPLOT = "/usr/bin/gnuplot"

_COLUMNS = ("contender", "scenario", "req/s", "req/s ±", "p50 ms", "p99 ms", "errors",
            "upstream conns", "conns/req", "proxy CPU s/100k", "upstream CPU s/100k",
            "proxy RSS MiB", "upstream TLS handshakes", "resumed", "MB/s", "proxy CPU ms/MB")


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _row(result: RunResult) -> list[str]:
    if result.failure:
        reason = result.failure.splitlines()[0].replace("|", "\\|")
        return [result.contender, result.scenario, f"failed: {reason}"] + [""] * (len(_COLUMNS) - 3)
    rss_mib = None if result.proxy_rss_bytes is None else result.proxy_rss_bytes / 2**20
    return [
        result.contender, result.scenario,
        _number(result.requests_per_s, 0),
        _spread(result),
        _number(result.latency_ms["p50"], 3),
        _number(result.latency_ms["p99"], 3),
        f"{result.error_count:,}",
        f"{result.upstream_accepts:,}",
        _number(result.upstream_accepts_per_request, 4),
        _number(result.proxy_cpu_s_per_100k, 2),
        _number(result.upstream_cpu_s_per_100k, 2),
        _number(rss_mib, 1),
        _count(result.upstream_tls_handshakes),
        _count(result.upstream_tls_resumed),
        _number(result.mb_per_s, 0),
        _number(result.proxy_cpu_ms_per_mb, 2),
    ]


def _spread(result: RunResult) -> str:
    if result.runs < 2 or result.requests_per_s_spread is None:
        return "—"
    return f"{result.requests_per_s_spread * 100:.1f}%"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def markdown_table(results: list[RunResult]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_row(result)) + " |" for result in results]
    return "\n".join(lines)


def _standing_cell(standing: Standing) -> str:
    digits = {"req/s": 0, "MB/s": 0, "p50 ms": 3, "p99 ms": 3}.get(standing.figure, 2)
    mark = "" if standing.tether_leads else " (behind)"
    return (f"{standing.tether:,.{digits}f} vs {standing.best_other} "
            f"{standing.best_value:,.{digits}f}: **{standing.ratio:.2f}×**{mark}")


def standings_table(standings: list[Standing]) -> str:
    """tether / best other proxy per scenario and figure; empty if tether did not run."""
    if not standings:
        return ""
    figures = list(dict.fromkeys(s.figure for s in standings))
    lines = ["tether against the best other proxy (ratio tether / best; for p99 and CPU lower "
             "is better):", "", "| scenario | " + " | ".join(figures) + " |",
             "|---|" + "---|" * len(figures)]
    for scenario in dict.fromkeys(s.scenario for s in standings):
        cells = {s.figure: _standing_cell(s) for s in standings if s.scenario == scenario}
        lines.append(f"| {scenario} | " + " | ".join(cells.get(f, "—") for f in figures) + " |")
    return "\n".join(lines)


def costs_table(costs: list[FeatureCost]) -> str:
    """tether's CPU per request with a feature against without; empty if none was measured."""
    if not costs:
        return ""
    lines = ["What a feature costs tether (proxy CPU per request, tether against its own row in "
             "the baseline scenario):", "", "| scenario | baseline | CPU s/100k | ratio | limit |",
             "|---|---|---|---|---|"]
    for cost in costs:
        limit = "—" if cost.limit is None else (
            f"≤ {cost.limit:.2f}×: {'met' if cost.within else '**missed**'}")
        lines.append(f"| {cost.scenario} | {cost.baseline} | {cost.cpu:.2f} vs "
                     f"{cost.baseline_cpu:.2f} | **{cost.ratio:.3f}×** | {limit} |")
    return "\n".join(lines)


def markdown_report(title: str, header_lines: list[str], results: list[RunResult],
                    footer_lines: list[str], standings: list[Standing] | None = None,
                    costs: list[FeatureCost] | None = None) -> str:
    parts = [f"# {title}", "", *header_lines, "", markdown_table(results), ""]
    for extra in (standings_table(standings or []), costs_table(costs or [])):
        if extra:
            parts += [extra, ""]
    if footer_lines:
        parts += [*footer_lines, ""]
    return "\n".join(parts)


def write_json(path: Path, context: dict, results: list[RunResult],
               runs: list[RunResult]) -> None:
    """`results`: the table's rows (medians); `runs`: every run behind them, in running order."""
    document = {**context, "results": [asdict(result) for result in results],
                "runs": [asdict(run) for run in runs]}
    path.write_text(json.dumps(document, indent=2) + "\n")


# (column prefix, panel title, value of a row) for the two panels of a chart row
_RATE_PANELS = (("rps", "requests per second (higher is better)", lambda r: r.requests_per_s),
                ("p99", "p99 latency, ms (lower is better)", lambda r: r.latency_ms["p99"]))
_BODY_PANELS = (("mbps", "MB/s of one transfer (higher is better)", lambda r: r.mb_per_s),
                ("cpumb", "proxy CPU ms per MB (lower is better)",
                 lambda r: r.proxy_cpu_ms_per_mb))


def _chart_data(results: list[RunResult], contenders: list[str], scenarios: list[str],
                panels=_RATE_PANELS) -> str:
    """One row per contender: the first panel's figure per scenario, then the second's; "?" if
    missing."""
    by_key = {(r.contender, r.scenario): r for r in results if not r.failure}
    rows = ["# contender " + " ".join(f"{prefix}_{s}" for prefix, _, _ in panels
                                      for s in scenarios)]
    for contender in contenders:
        found = [by_key.get((contender, scenario)) for scenario in scenarios]
        cells = [f"{value(r):.3f}" if r and value(r) is not None else "?"
                 for _, _, value in panels for r in found]
        rows.append(" ".join([contender, *cells]))
    return "\n".join(rows) + "\n"


def _panel(title: str, first_column: int, scenarios: list[str]) -> str:
    plots = [f"'chart.dat' using {first_column}:xtic(1) title '{scenarios[0]}'"]
    plots += [f"'' using {first_column + i} title '{s}'" for i, s in enumerate(scenarios[1:], 1)]
    return f"set title '{title}'\nplot " + ", ".join(plots) + "\n"


def _chart_rows(results: list[RunResult]) -> list[tuple[str, str, list[RunResult], tuple]]:
    """(data file, row title, results, panels) per chart row: plain-HTTP scenarios, TLS ones,
    then the large bodies. A row is drawn when one of its runs was measured; failed runs leave
    empty slots."""
    bodies = [r for r in results if r.scenario.startswith("large-")]
    plain = [r for r in results if not r.upstream_tls and not r.scenario.startswith("large-")]
    tls = [r for r in results if r.upstream_tls]
    rows = [("chart.dat", "upstream over plain HTTP", plain, _RATE_PANELS),
            ("chart-tls.dat", "upstream over TLS", tls, _RATE_PANELS),
            ("chart-bodies.dat", "50 MB bodies", bodies, _BODY_PANELS)]
    return [row for row in rows if any(not r.failure for r in row[2])]


def _chart_row_script(data_file: str, row_title: str, results: list[RunResult], panels: tuple,
                      directory: Path, order: list[str]) -> str:
    present = {r.contender for r in results}
    contenders = [name for name in order if name in present]
    contenders += [name for name in dict.fromkeys(r.contender for r in results)
                   if name not in contenders]
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    (directory / data_file).write_text(_chart_data(results, contenders, scenarios, panels))
    return f"""set xrange [-0.5:{len(contenders) - 0.5}]
{_panel(f'{row_title}: {panels[0][1]}', 2, scenarios)}
{_panel(f'{row_title}: {panels[1][1]}', 2 + len(scenarios), scenarios)}
""".replace("'chart.dat'", f"'{data_file}'")


def write_chart(directory: Path, title: str, results: list[RunResult],
                order: list[str] | None = None) -> Path | None:
    """Draws chart.png (req/s and p99 by contender and scenario, one row of two panels for the
    plain-HTTP scenarios and one for the TLS ones; MB/s and CPU per MB for the large bodies);
    None if nothing to draw. `order`: the
    contenders' order on the x axis (default: as they appear in `results`)."""
    rows = _chart_rows(results)
    if not rows:
        return None
    panels = "".join(_chart_row_script(*row, directory, order or []) for row in rows)
    script = f"""set terminal pngcairo size 1400,{550 * len(rows)} font ",10"
set output 'chart.png'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set yrange [0:*]
set key top right
set multiplot layout {len(rows)},2 title '{title}'
{panels}unset multiplot
"""
    (directory / "chart.gp").write_text(script)
    subprocess.run([GNUPLOT, "chart.gp"], cwd=directory, check=True, timeout=30,
                   capture_output=True)
    return directory / "chart.png"


def publish_latest(run_dir: Path, latest: Path, names: tuple[str, ...]) -> None:
    """Replaces `latest` with copies of the named files of this run."""
    shutil.rmtree(latest, ignore_errors=True)
    latest.mkdir(parents=True)
    for name in names:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, latest / name)
