"""The large-* scenarios: a series of 50 MB transfers with curl, one at a time, each timed by
curl itself (`%{time_total}`). A run is BODY_TRANSFERS transfers; its "requests" are the
transfers, its latencies their times, and MB/s the body size over the median time."""

import statistics
from dataclasses import dataclass

from .procs import HarnessError, run_bounded
from .wrk import WrkResult

CURL = "/usr/bin/curl"
BODY_BYTES = 50 * 1000 * 1000
BODY_TRANSFERS = 8
TRANSFER_TIMEOUT_S = 30
PATHS = {"download": "large", "download-chunked": "large-chunked", "upload": "upload/body"}


@dataclass(frozen=True)
class TransferResult(WrkResult):
    """What wrk's result has, plus MB/s: the runner reads both alike."""

    mb_per_s: float
    megabytes: float


def _curl(url: str, kind: str, upload_file) -> list[str]:
    argv = [CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download} "
            "%{size_upload}\n", "--max-time", str(TRANSFER_TIMEOUT_S)]
    if kind == "upload":
        argv += ["-H", "Expect:", "-T", str(upload_file)]
    return argv + [url + PATHS[kind]]


def run_transfers(base_url: str, kind: str, upload_file, cpus: str | None = None,
                  transfers: int = BODY_TRANSFERS) -> TransferResult:
    """Runs `transfers` transfers of `kind` against base_url (http://host:port/)."""
    times, errors = [], 0
    for _ in range(transfers):
        output = run_bounded(_curl(base_url, kind, upload_file), TRANSFER_TIMEOUT_S + 5, cpus)
        status, seconds, down, up = output.split()
        moved = int(float(up if kind == "upload" else down))
        if not status.startswith("2") or moved != BODY_BYTES:
            errors += 1
            continue
        times.append(float(seconds))
    if not times:
        raise HarnessError(f"no {kind} transfer of {BODY_BYTES:,} bytes through {base_url} "
                           f"succeeded")
    ordered = sorted(times)
    megabytes = BODY_BYTES / 1e6 * len(times)
    return TransferResult(
        requests=len(times), duration_s=sum(times), errors={"status": errors},
        latency_ms={"p50": statistics.median(times) * 1000,
                    "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000,
                    "p99": ordered[-1] * 1000, "p999": ordered[-1] * 1000,
                    "mean": statistics.fmean(times) * 1000, "max": ordered[-1] * 1000},
        mb_per_s=BODY_BYTES / 1e6 / statistics.median(times), megabytes=megabytes)
