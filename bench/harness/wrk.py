"""Load generation with wrk; results come from a Lua `done()` hook as JSON, not from wrk's text."""

import json
from dataclasses import dataclass
from pathlib import Path

from .procs import HarnessError, run_bounded

WRK = "/usr/bin/wrk"
REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
REPORT_MARKER = "TETHER_WRK_JSON "
REQUEST_TIMEOUT_S = 2
EXIT_SLACK_S = 15  # beyond the run's duration before wrk is considered hung


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]  # connect, read, write, timeout, status (HTTP status > 399)
    latency_ms: dict[str, float]  # p50, p90, p99, p999, mean, max

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def write_post_script(directory: Path, body_bytes: int) -> Path:
    """A wrk script that POSTs a body of `body_bytes` with every request, and reports as
    wrk_report.lua does."""
    script = directory / f"wrk-post-{body_bytes}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {body_bytes})\n'
                      f'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                      + REPORT_SCRIPT.read_text())
    return script


def run_wrk(url: str, duration_s: float, connections: int, threads: int,
            headers: tuple[str, ...] = (), cpus: str | None = None,
            script: Path | None = None) -> WrkResult:
    """Runs one bounded wrk load against `url` and returns its summary; `script` replaces the
    reporting script (it must report the same way)."""
    argv = [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
            "--timeout", f"{REQUEST_TIMEOUT_S}s", "-s", str(script or REPORT_SCRIPT)]
    for header in headers:
        argv += ["-H", header]
    output = run_bounded([*argv, url], duration_s + EXIT_SLACK_S, cpus)
    return parse_report(output)


def parse_report(output: str) -> WrkResult:
    """Extracts the JSON line written by wrk_report.lua from wrk's output."""
    for line in output.splitlines():
        if line.startswith(REPORT_MARKER):
            report = json.loads(line[len(REPORT_MARKER):])
            return WrkResult(
                requests=report["requests"],
                duration_s=report["duration_us"] / 1e6,
                errors=report["errors"],
                latency_ms={name: us / 1000 for name, us in report["latency_us"].items()},
            )
    raise HarnessError(f"wrk printed no report line; its output was:\n{output}")
