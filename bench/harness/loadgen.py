"""The harness's own load generator (loadgen.c): the client of the uds-* scenarios and of their
TCP twins, since wrk dials TCP only. It is compiled once per bench run into the scratch
directory with the system C compiler and reports in wrk_report.lua's format."""

import shutil
import subprocess
from pathlib import Path

from .procs import HarnessError, run_bounded
from .wrk import REQUEST_TIMEOUT_S, WrkResult, parse_report

SOURCE = Path(__file__).with_name("loadgen.c")
EXIT_SLACK_S = 15
CC = ("cc", "-O2", "-Wall", "-Wextra", "-Werror")


def build(workdir: Path) -> Path:
    """Compiles loadgen.c into WORKDIR/loadgen (once) and returns its path."""
    binary = workdir / "loadgen"
    if binary.exists():
        return binary
    if shutil.which(CC[0]) is None:
        raise HarnessError("loadgen needs a C compiler (cc) for the uds-* scenarios")
    done = subprocess.run([*CC, "-o", str(binary), str(SOURCE)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise HarnessError(f"cannot build {SOURCE.name}:\n{done.stderr}")
    return binary


def run_loadgen(workdir: Path, unix_path: Path | None, tcp_address: str, duration_s: float,
                connections: int, close: bool, cpus: str | None = None) -> WrkResult:
    """One bounded load: over the Unix socket when given, else to the TCP address."""
    target = ["--unix", str(unix_path)] if unix_path else ["--tcp", tcp_address]
    argv = [str(build(workdir)), *target, "-c", str(connections), "-d", f"{duration_s:g}"]
    if close:
        argv.append("--close")
    assert REQUEST_TIMEOUT_S == 2  # loadgen.c's REQUEST_TIMEOUT_US, the same as wrk's
    return parse_report(run_bounded(argv, duration_s + EXIT_SLACK_S, cpus))
