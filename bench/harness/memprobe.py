"""Memory probe: tether's resident memory per pre-warmed idle upstream connection.

Runs tetherd twice with the same pool limits: once with `min_idle = 0` (baseline) and once with
`min_idle = IDLE_CONNECTIONS`, waits until the upstream sees the warm connections, and divides the
difference in resident memory (VmRSS) by the number of connections opened. Kernel socket memory
is not included: it is not tether's user memory.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from . import procfs
from .procs import HarnessError, Service, Services, free_port, run_bounded, wait_for_port
from .upstream import Upstream

IDLE_CONNECTIONS = 10_000
WARM_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # after the connections are up, before reading RSS
POLL_S = 0.2


@dataclass(frozen=True)
class MemoryProbe:
    outcome: str  # "measured", "skipped" or "failed"
    detail: str = ""
    connections: int = 0
    baseline_rss_bytes: int = 0
    warmed_rss_bytes: int = 0

    @property
    def bytes_per_connection(self) -> float | None:
        if self.outcome != "measured" or not self.connections:
            return None
        return (self.warmed_rss_bytes - self.baseline_rss_bytes) / self.connections

    def summary(self) -> str:
        if self.outcome != "measured":
            return f"memory probe: {self.outcome} ({self.detail})"
        warmed_mib, baseline_mib = self.warmed_rss_bytes / 2**20, self.baseline_rss_bytes / 2**20
        return (f"memory probe: tether holding {self.connections:,} idle upstream connections: "
                f"RSS {warmed_mib:.1f} MiB vs {baseline_mib:.1f} MiB with none = "
                f"{self.bytes_per_connection:,.0f} bytes per idle connection"
                f"{' (' + self.detail + ')' if self.detail else ''}")


def _write_config(path: Path, port: int, upstream_url: str, workers: int, min_idle: int) -> Path:
    path.write_text(f"""[tether]
workers = {workers}
log_level = warn

[upstream probe]
url = {upstream_url}
listen = 127.0.0.1:{port}
max_connections = {IDLE_CONNECTIONS}
max_idle = {IDLE_CONNECTIONS}
min_idle = {min_idle}
""")
    return path


def _unsupported_reason(tetherd: str, config: Path) -> str | None:
    """None if `tetherd --check` accepts the config, else its complaint."""
    try:
        run_bounded([tetherd, "--check", "-c", str(config)], timeout_s=10)
    except HarnessError as err:
        return str(err).splitlines()[-1]
    return None


def _wait_for_warm_connections(service: Service, upstream: Upstream, active_before: int) -> int:
    """Waits until the upstream holds IDLE_CONNECTIONS more connections (or tetherd exits, or
    WARM_TIMEOUT_S passes); returns how many it got."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    opened = 0
    while time.monotonic() < deadline and opened < IDLE_CONNECTIONS and service.running():
        time.sleep(POLL_S)
        opened = upstream.status().active - active_before
    return opened


def _rss_of_tetherd(tetherd: str, config: Path, port: int, services: Services,
                    cpus: str | None, upstream: Upstream | None = None) -> tuple[int, int]:
    """Runs tetherd with `config`; returns (RSS bytes, warm connections seen if `upstream`)."""
    active_before = upstream.status().active if upstream else 0
    service = services.start(f"tetherd-{config.stem}", [tetherd, "-c", str(config)], cpus)
    try:
        wait_for_port(service, port)
        opened = _wait_for_warm_connections(service, upstream, active_before) if upstream else 0
        time.sleep(SETTLE_S)
        if not service.running():
            raise HarnessError(f"tetherd {service.exit_description()}:\n"
                               f"{service.log_tail()}")
        return procfs.rss_bytes(procfs.process_tree(service.pid)), opened
    finally:
        services.stop(service)


def probe_memory(tetherd: str, services: Services, upstream: Upstream, workdir: Path,
                 workers: int, cpus: str | None) -> MemoryProbe:
    """Measures tetherd's RSS per idle pooled connection, or says why it could not."""
    port = free_port()
    warmed = _write_config(workdir / "probe-warm.ini", port, upstream.url, workers,
                           IDLE_CONNECTIONS)
    baseline = _write_config(workdir / "probe-base.ini", port, upstream.url, workers, 0)
    reason = _unsupported_reason(tetherd, warmed)
    if reason and "min_idle" in reason:
        return MemoryProbe("skipped", f"min_idle not supported; tetherd --check said: {reason}")
    if reason:
        return MemoryProbe("failed", f"tetherd --check rejected the probe config: {reason}")
    try:
        baseline_rss, _ = _rss_of_tetherd(tetherd, baseline, port, services, cpus)
        warmed_rss, opened = _rss_of_tetherd(tetherd, warmed, port, services, cpus, upstream)
    except HarnessError as err:
        return MemoryProbe("failed", str(err))
    if opened <= 0:
        return MemoryProbe("failed", f"no warm connections reached the upstream in "
                                     f"{WARM_TIMEOUT_S:.0f} s")
    shortfall = "" if opened >= IDLE_CONNECTIONS else \
        f"only {opened:,} of {IDLE_CONNECTIONS:,} connections after {WARM_TIMEOUT_S:.0f} s"
    return MemoryProbe("measured", shortfall, opened, baseline_rss, warmed_rss)
