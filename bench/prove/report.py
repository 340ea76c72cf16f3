"""The tables and the chart of `make prove`."""

import shutil
import subprocess
from pathlib import Path

from .figures import change

GNUPLOT = "/usr/bin/gnuplot"

# (figure, the mission's promise, how to read a run's value, unit, digits)
PROMISES = (
    ("connection churn (new connections/min between the hosts)", "−80–95%",
     lambda r: r["connections"]["per_minute"], "/min", 0),
    ("average connection age", "under 1 s → 30 s+",
     lambda r: r["connections"]["mean_age_s"], "s", 2),
    ("socket memory between the hosts, host A's side", "−60–70%",
     lambda r: r["hosts"].get("A", {}).get("pair_socket_memory_bytes", 0) / 1024, "KiB", 0),
    ("socket memory, host B (the service's host)", "−60–70%",
     lambda r: r["hosts"].get("B", {}).get("socket_memory_bytes", 0) / 1024, "KiB", 0),
    ("p99 latency", "−20–50%", lambda r: r["calls"]["p99_ms"], "ms", 2),
    ("CPU, host A (application + tetherd)", "−18%",
     lambda r: r["cpu_cores"].get("app", 0) + r["cpu_cores"].get("tetherd", 0), "cores", 3),
)

_RUN_COLUMNS = ("run", "calls", "errors", "p50 ms", "p99 ms", "conns/min", "mean age s",
                "TLS handshakes (resumed)", "TIME_WAIT A (to B)", "sock mem A KiB (to B)",
                "sock mem B KiB", "CPU A cores", "CPU B nginx cores")


def _run_row(r: dict) -> list[str]:
    a, b = r["hosts"].get("A", {}), r["hosts"].get("B", {})
    cpu = r["cpu_cores"]
    return [
        r["run"], f"{r['calls']['count']:,}", f"{r['calls']['errors']:,}",
        f"{r['calls']['p50_ms']:.2f}", f"{r['calls']['p99_ms']:.2f}",
        f"{r['connections']['per_minute']:,.0f}", f"{r['connections']['mean_age_s']:.2f}",
        f"{r['tls']['handshakes']:,} ({r['tls']['resumed']:,})",
        f"{a.get('time_wait', 0):,.0f} ({a.get('time_wait_to_service', 0):,.0f})",
        f"{a.get('socket_memory_bytes', 0) / 1024:,.0f} "
        f"({a.get('pair_socket_memory_bytes', 0) / 1024:,.0f})",
        f"{b.get('socket_memory_bytes', 0) / 1024:,.0f}",
        f"{cpu.get('app', 0) + cpu.get('tetherd', 0):.3f}", f"{cpu.get('nginx', 0):.3f}",
    ]


def _markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}%"


def promises(runs: dict[str, dict]) -> list[list[str]]:
    """One row per promise: the mission's figure beside straight → tetherd as measured."""
    straight, tetherd = runs.get("straight"), runs.get("tetherd")
    rows = []
    if straight is None or tetherd is None:
        return rows
    for label, promise, value, unit, digits in PROMISES:
        before, after = value(straight), value(tetherd)
        measured = f"{before:,.{digits}f} → {after:,.{digits}f} {unit}"
        rows.append([label, promise, measured, _percent(change(before, after))])
    return rows


def table(results: list[dict], settings: dict) -> str:
    runs = {r["run"]: r for r in results}
    text = (f"{settings['rate']:g} calls/s from {settings['workers']} application threads, "
            f"{settings['seconds']:g} s measured after {settings['warmup']:g} s of warm-up, "
            f"{settings['delay_ms']:g} ms each way between the hosts.\n\n")
    rows = promises(runs)
    if rows:
        text += _markdown(("the mission's figure", "promised", "measured: straight → tetherd",
                           "change"), rows) + "\n\n"
    text += _markdown(_RUN_COLUMNS, [_run_row(r) for r in results])
    return text


def chart(results: list[dict], path: Path) -> bool:
    """Connections/min (per 5 s) and p99 (per 5 s) over time, one line per run (gnuplot PNG)."""
    if not shutil.which(GNUPLOT) or not results:
        return False
    data = path.with_suffix(".dat")
    blocks = []
    for r in results:
        per_second = r["connections"]["per_second"]
        p99 = r["calls"]["p99_per_5s"]
        lines = [f"# {r['run']}"]
        for i, value in enumerate(p99):
            opens = sum(per_second[i * 5:(i + 1) * 5])
            lines.append(f"{i * 5 + 2.5} {opens * 12} {value}")
        blocks.append("\n".join(lines))
    data.write_text("\n\n\n".join(blocks) + "\n")
    titles = [r["run"] for r in results]
    plots_conns = ", ".join(f"'{data}' index {i} using 1:2 with linespoints title '{t}'"
                            for i, t in enumerate(titles))
    plots_p99 = ", ".join(f"'{data}' index {i} using 1:3 with linespoints title '{t}'"
                          for i, t in enumerate(titles))
    script = f"""set terminal pngcairo size 900,700 noenhanced
set output '{path}'
set multiplot layout 2,1 title 'make prove: the application straight, through tetherd, with a Session'
set grid
set key outside right
set ylabel 'new connections/min'
plot {plots_conns}
set xlabel 'seconds into the measured window'
set ylabel 'p99 ms (5 s windows)'
plot {plots_p99}
unset multiplot
"""
    result = subprocess.run([GNUPLOT], input=script, text=True, capture_output=True, timeout=60)
    data.unlink(missing_ok=True)
    return result.returncode == 0
