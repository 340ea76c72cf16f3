"""One measured run: a fresh proxy (or none), one wrk load, what it cost the proxy and upstream."""

import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import procfs
from .contenders import Contender, Launch
from .procs import HarnessError, Service, Services, free_port, wait_for_port
from .upstream import Upstream, accepted_between
from .wrk import run_wrk

WRK_PROBE_CONNECTIONS = 1  # wrk opens one connection to check the address before the load
PER_100K = 100_000


@dataclass(frozen=True)
class Scenario:
    """A client behaviour, and whether the upstream speaks plain HTTP or TLS."""

    name: str
    summary: str
    wrk_headers: tuple[str, ...] = ()
    upstream_tls: bool = False


SCENARIOS = (
    Scenario("keepalive", "clients reuse their connections (HTTP/1.1 keep-alive)"),
    Scenario("close", "a new client connection per request (Connection: close)",
             ("Connection: close",)),
    Scenario("tls-keepalive", "keep-alive clients; the upstream speaks TLS",
             upstream_tls=True),
    Scenario("tls-close", "a new client connection per request; the upstream speaks TLS",
             ("Connection: close",), upstream_tls=True),
)


@dataclass(frozen=True)
class LoadSettings:
    duration_s: float
    connections: int
    threads: int
    workers: int
    load_cpus: str | None  # wrk and the upstream
    proxy_cpus: str | None


@dataclass
class RunResult:
    """What one (contender, scenario) run measured; `failure` is set instead when it broke."""

    contender: str
    scenario: str
    upstream_tls: bool = False
    failure: str | None = None
    requests: int = 0
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_count: int = 0
    upstream_accepts: int = 0
    upstream_accepts_per_request: float | None = None
    proxy_cpu_s_per_100k: float | None = None  # None for direct
    upstream_cpu_s_per_100k: float | None = None
    proxy_rss_bytes: int | None = None
    # TLS scenarios: handshakes the upstream completed during the run, and how many resumed
    upstream_tls_handshakes: int | None = None
    upstream_tls_resumed: int | None = None
    upstream_tls_protocols: dict[str, int] | None = None
    # a row folded from repeated runs (harness/aggregate.py): how many, and the half-range of
    # their req/s relative to the median
    runs: int = 1
    requests_per_s_spread: float | None = None


def _per_100k(seconds: float, requests: int) -> float | None:
    return seconds / requests * PER_100K if requests else None


def _ensure_running(proxy: Service | None, when: str, grace_s: float = 0.0) -> None:
    """Raises with the proxy's exit status and log if it exited (or exits within grace_s)."""
    if proxy and proxy.exits_within(grace_s):
        raise HarnessError(f"{proxy.name} {proxy.exit_description()} {when}:\n"
                           f"{proxy.log_tail()}")


def _check_serves(url: str, name: str, proxy: Service | None, upstream: Upstream) -> None:
    context = None
    if url.startswith("https:"):  # direct to the TLS upstream: verify it as the proxies do
        context = ssl.create_default_context(cafile=str(upstream.certificates.ca))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            response.read()
    except OSError as err:
        _ensure_running(proxy, "on its first request", grace_s=1.0)
        raise HarnessError(f"{name} does not serve {url}: {err}") from err


def _start_proxy(contender: Contender, scenario: Scenario, services: Services,
                 upstream: Upstream, workdir: Path, settings: LoadSettings) -> tuple[Service, str]:
    port = free_port()
    rundir = workdir / contender.name / scenario.name
    rundir.mkdir(parents=True, exist_ok=True)
    if scenario.upstream_tls:
        launch = Launch(rundir, port, upstream.tls_url, settings.workers,
                        upstream.certificates)
    else:
        launch = Launch(rundir, port, upstream.url, settings.workers)
    argv = contender.launch(launch)
    service = services.start(contender.name, argv, settings.proxy_cpus)
    wait_for_port(service, port)
    return service, f"http://127.0.0.1:{port}/"


def _measure(contender: Contender, scenario: Scenario, url: str, upstream: Upstream,
             proxy: Service | None, settings: LoadSettings) -> RunResult:
    proxy_pids = procfs.process_tree(proxy.pid) if proxy else []
    upstream_pids = procfs.process_tree(upstream.service.pid)
    status_before = upstream.status()
    tls_log_offset = upstream.tls_log.offset()
    proxy_cpu_before = procfs.cpu_seconds(proxy_pids)
    upstream_cpu_before = procfs.cpu_seconds(upstream_pids)

    load = run_wrk(url, settings.duration_s, settings.connections, settings.threads,
                   scenario.wrk_headers, settings.load_cpus)

    proxy_cpu = procfs.cpu_seconds_between(proxy_cpu_before, procfs.cpu_seconds(proxy_pids))
    upstream_cpu = procfs.cpu_seconds_between(upstream_cpu_before,
                                              procfs.cpu_seconds(upstream_pids))
    accepts = accepted_between(status_before, upstream.status())
    if proxy is None:
        accepts -= WRK_PROBE_CONNECTIONS  # a TCP connect and close: no TLS handshake
    _ensure_running(proxy, "during the run")
    tls = upstream.tls_log.counts_since(tls_log_offset) if scenario.upstream_tls else None

    return RunResult(
        contender.name, scenario.name, scenario.upstream_tls,
        requests=load.requests,
        requests_per_s=load.requests_per_s,
        latency_ms=load.latency_ms,
        errors=load.errors,
        error_count=load.error_count,
        upstream_accepts=accepts,
        upstream_accepts_per_request=accepts / load.requests if load.requests else None,
        proxy_cpu_s_per_100k=_per_100k(proxy_cpu, load.requests) if proxy else None,
        upstream_cpu_s_per_100k=_per_100k(upstream_cpu, load.requests),
        proxy_rss_bytes=procfs.rss_bytes(procfs.process_tree(proxy.pid)) if proxy else None,
        upstream_tls_handshakes=tls.handshakes if tls else None,
        upstream_tls_resumed=tls.resumed if tls else None,
        upstream_tls_protocols=tls.protocols if tls else None,
    )


def _direct_url(contender: Contender, scenario: Scenario, upstream: Upstream) -> str:
    if not scenario.upstream_tls:
        return upstream.url + "/"
    return (upstream.tls_full_url if contender.full_handshakes else upstream.tls_url) + "/"


def run_one(contender: Contender, scenario: Scenario, services: Services, upstream: Upstream,
            workdir: Path, settings: LoadSettings) -> RunResult:
    """Starts the contender fresh (empty pool), loads it, stops it. Failures become a result."""
    proxy = None
    try:
        if contender.launch is None:
            url = _direct_url(contender, scenario, upstream)
        else:
            proxy, url = _start_proxy(contender, scenario, services, upstream, workdir, settings)
        _check_serves(url, contender.name, proxy, upstream)
        return _measure(contender, scenario, url, upstream, proxy, settings)
    except HarnessError as err:
        return RunResult(contender.name, scenario.name, scenario.upstream_tls,
                         failure=str(err))
    finally:
        if proxy:
            services.stop(proxy)
