"""One measured run: a fresh proxy (or none), one load, what it cost the proxy and upstream.

The load is wrk (TCP clients), the harness's own loadgen (the same client over a Unix socket or
TCP, for the uds-* scenarios and their TCP twins) or a series of large curl transfers (the
large-* scenarios, which measure MB/s and CPU per MB).
"""

import socket
import ssl
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import bodies, procfs
from .contenders import Contender, Launch
from .loadgen import run_loadgen
from .procs import HarnessError, Service, Services, free_port, wait_for_port, wait_for_unix
from .upstream import Upstream, accepted_between
from .wrk import run_wrk, write_post_script

WRK_PROBE_CONNECTIONS = 1  # wrk opens one connection to check the address before the load
PER_100K = 100_000


PROBES = ("probe = OPTIONS *", "probe_interval = 1s")
HEALTH_CHECKS = ("health_check = GET /", "health_interval = 1s", "health_timeout = 500ms")
POST_BYTES = 4096  # the request body of the buffering scenarios
LOAD_SECONDS = 3.0  # the added load scenarios run at most this long (--duration caps it)
UNIX_CONTENDERS = ("direct", "tether", "haproxy", "nginx")  # the Unix listeners compared


@dataclass(frozen=True)
class Scenario:
    """A client behaviour, the upstream it meets, and what the proxies are asked to do.

    `client`: "wrk", "loadgen" (the harness's own client, over a Unix socket with `unix`), or
    "body" (curl transfers of `body`: download, download-chunked, upload). `upstream`: the nginx
    upstream, or "nagle" (Python's http.server, head and body in two writes, Nagle on).
    `endpoints`: the upstream's addresses (1, or 3 on 127.0.0.2-4). `tether_conf`: lines added to
    tether's upstream section (`tether_global` to [tether]). `contenders`: who runs (None: all
    that can). `baseline`: the scenario whose tether row this one's tether row is compared with
    (what a feature costs tether), with `cost_limit` the largest CPU-per-request ratio allowed.
    `max_duration_s` caps --duration for the added scenarios, to keep the full run short."""

    name: str
    summary: str
    wrk_headers: tuple[str, ...] = ()
    upstream_tls: bool = False
    client: str = "wrk"
    upstream: str = "nginx"
    connections: int | None = None  # None: --connections
    unix: bool = False
    endpoints: int = 1
    body: str | None = None
    post_bytes: int = 0
    tether_conf: tuple[str, ...] = ()
    tether_global: tuple[str, ...] = ()
    haproxy_check: bool = False
    contenders: tuple[str, ...] | None = None
    baseline: str | None = None
    cost_limit: float | None = None
    max_duration_s: float | None = None

    def admits(self, contender: str) -> bool:
        return self.contenders is None or contender in self.contenders


CLOSE = ("Connection: close",)
SCENARIOS = (
    Scenario("keepalive", "clients reuse their connections (HTTP/1.1 keep-alive)"),
    Scenario("close", "a new client connection per request (Connection: close)", CLOSE),
    Scenario("tls-keepalive", "keep-alive clients; the upstream speaks TLS",
             upstream_tls=True),
    Scenario("tls-close", "a new client connection per request; the upstream speaks TLS",
             CLOSE, upstream_tls=True),
    Scenario("nagle-upstream", "4 close-per-request clients against a Python http.server that "
             "writes head and body apart with Nagle on", CLOSE, upstream="nagle", connections=4,
             max_duration_s=LOAD_SECONDS),
    Scenario("large-body", "50 MB downloads (Content-Length), one at a time", client="body",
             body="download"),
    Scenario("large-body-chunked", "50 MB chunked downloads, one at a time", client="body",
             body="download-chunked"),
    Scenario("large-upload", "50 MB uploads (PUT, Content-Length), one at a time",
             client="body", body="upload"),
    Scenario("tcp-keepalive", "loadgen over TCP, keep-alive: the twin of uds-keepalive",
             client="loadgen", contenders=UNIX_CONTENDERS,
             max_duration_s=LOAD_SECONDS),
    Scenario("uds-keepalive", "loadgen over the proxy's Unix-domain listener, keep-alive",
             client="loadgen", unix=True, baseline="tcp-keepalive",
             contenders=UNIX_CONTENDERS,
             max_duration_s=LOAD_SECONDS),
    Scenario("tcp-close", "loadgen over TCP, a new connection per request: the twin of "
             "uds-close", client="loadgen", wrk_headers=CLOSE, contenders=UNIX_CONTENDERS,
             max_duration_s=LOAD_SECONDS),
    Scenario("uds-close", "loadgen over the proxy's Unix-domain listener, a new connection per "
             "request", client="loadgen", wrk_headers=CLOSE, unix=True, baseline="tcp-close",
             contenders=UNIX_CONTENDERS, max_duration_s=LOAD_SECONDS),
    Scenario("three-endpoints", "keep-alive clients; the upstream has three endpoints "
             "(127.0.0.2-4), each proxy balances", endpoints=3,
             contenders=("tether", "haproxy", "nginx"), baseline="keepalive", cost_limit=1.03,
             max_duration_s=LOAD_SECONDS),
    Scenario("probes-health", "keep-alive clients; idle probes and health checks every second",
             tether_conf=PROBES + HEALTH_CHECKS, haproxy_check=True,
             contenders=("tether", "haproxy"), baseline="keepalive", cost_limit=1.01,
             max_duration_s=LOAD_SECONDS),
    Scenario("buffering", f"keep-alive clients POST {POST_BYTES}-byte bodies; tether buffers "
             "them (request_buffer = 64k)", post_bytes=POST_BYTES,
             tether_global=("request_buffer = 64k",), baseline="buffering-off",
             max_duration_s=LOAD_SECONDS),
    Scenario("buffering-off", "as buffering; tether streams the bodies (request_buffer = 0)",
             post_bytes=POST_BYTES, tether_global=("request_buffer = 0",),
             contenders=("tether",), max_duration_s=LOAD_SECONDS),
)


def without_health_checks(scenario: Scenario) -> Scenario:
    """The scenario for a tetherd that has no health_check key yet: probes only."""
    return replace(scenario, tether_conf=tuple(line for line in scenario.tether_conf
                                               if line not in HEALTH_CHECKS))


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
    # large-* scenarios: body bytes per second of one transfer (median), proxy CPU per MB
    mb_per_s: float | None = None
    proxy_cpu_ms_per_mb: float | None = None
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


def run_seconds(scenario: Scenario, settings: LoadSettings) -> float:
    """How long the scenario's load runs (body scenarios: a fixed number of transfers)."""
    if scenario.max_duration_s is None:
        return settings.duration_s
    return min(settings.duration_s, scenario.max_duration_s)


def _check_serves(target: "Target", name: str, proxy: Service | None, upstream: Upstream) -> None:
    if target.unix_path is not None:
        _check_serves_unix(target.unix_path, name, proxy)
        return
    url = target.url
    context = None
    if url.startswith("https:"):  # direct to the TLS upstream: verify it as the proxies do
        context = ssl.create_default_context(cafile=str(upstream.certificates.ca))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            response.read()
    except OSError as err:
        _ensure_running(proxy, "on its first request", grace_s=1.0)
        raise HarnessError(f"{name} does not serve {url}: {err}") from err


def _check_serves_unix(path: Path, name: str, proxy: Service | None) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = sock.recv(64)
    except OSError as err:
        _ensure_running(proxy, "on its first request", grace_s=1.0)
        raise HarnessError(f"{name} does not serve unix:{path}: {err}") from err
    if not answer.startswith(b"HTTP/1.1 200"):
        raise HarnessError(f"{name} answered unix:{path} with {answer!r}")


@dataclass(frozen=True)
class Target:
    """Where the load goes: a URL, and for the uds-* scenarios a Unix socket path."""

    url: str  # http://127.0.0.1:PORT/ (with a Unix socket: the URL of its TCP twin, unused)
    unix_path: Path | None = None

    @property
    def tcp_address(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")


def _start_proxy(contender: Contender, scenario: Scenario, services: Services,
                 upstream: Upstream, workdir: Path,
                 settings: LoadSettings) -> tuple[Service, Target]:
    port = free_port()
    rundir = workdir / contender.name / scenario.name
    rundir.mkdir(parents=True, exist_ok=True)
    unix_path = rundir / "listen.sock" if scenario.unix else None
    if scenario.upstream == "nagle":
        url = upstream.nagle_url
    else:
        url = upstream.tls_url if scenario.upstream_tls else upstream.url
    launch = Launch(rundir, port, url, settings.workers,
                    upstream.certificates if scenario.upstream_tls else None,
                    endpoints=upstream.endpoints(scenario.endpoints) if scenario.endpoints > 1
                    else (),
                    unix_path=unix_path, tether_conf=scenario.tether_conf,
                    tether_global=scenario.tether_global, health_checks=scenario.haproxy_check)
    argv = contender.launch(launch)
    service = services.start(contender.name, argv, settings.proxy_cpus)
    if unix_path is not None:
        wait_for_unix(service, unix_path)
    else:
        wait_for_port(service, port)
    return service, Target(f"http://127.0.0.1:{port}/", unix_path)


def _load(scenario: Scenario, target: Target, settings: LoadSettings, workdir: Path,
          upstream: Upstream):
    duration = run_seconds(scenario, settings)
    connections = scenario.connections or settings.connections
    threads = min(settings.threads, connections)
    if scenario.client == "loadgen":
        return run_loadgen(workdir, target.unix_path, target.tcp_address, duration, connections,
                           close="Connection: close" in scenario.wrk_headers,
                           cpus=settings.load_cpus)
    if scenario.client == "body":
        return bodies.run_transfers(target.url, scenario.body, upstream.large_file,
                                   settings.load_cpus)
    script = write_post_script(workdir, scenario.post_bytes) if scenario.post_bytes else None
    return run_wrk(target.url, duration, connections, threads, scenario.wrk_headers,
                   settings.load_cpus, script)


def _measure(contender: Contender, scenario: Scenario, target: Target, upstream: Upstream,
             proxy: Service | None, settings: LoadSettings, workdir: Path) -> RunResult:
    proxy_pids = procfs.process_tree(proxy.pid) if proxy else []
    upstream_service = upstream.nagle if scenario.upstream == "nagle" else upstream.service
    upstream_pids = procfs.process_tree(upstream_service.pid)
    status_before = upstream.status()
    tls_log_offset = upstream.tls_log.offset()
    proxy_cpu_before = procfs.cpu_seconds(proxy_pids)
    upstream_cpu_before = procfs.cpu_seconds(upstream_pids)

    load = _load(scenario, target, settings, workdir, upstream)

    proxy_cpu = procfs.cpu_seconds_between(proxy_cpu_before, procfs.cpu_seconds(proxy_pids))
    upstream_cpu = procfs.cpu_seconds_between(upstream_cpu_before,
                                              procfs.cpu_seconds(upstream_pids))
    accepts = accepted_between(status_before, upstream.status())
    if scenario.upstream == "nagle":
        accepts = 0  # not counted: stub_status is nginx's
    elif proxy is None and scenario.client == "wrk":
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
        mb_per_s=getattr(load, "mb_per_s", None),
        proxy_cpu_ms_per_mb=(proxy_cpu * 1000 / load.megabytes
                             if proxy and getattr(load, "megabytes", 0) else None),
    )


def _direct_target(contender: Contender, scenario: Scenario, upstream: Upstream) -> Target:
    if scenario.upstream == "nagle":
        return Target(upstream.nagle_url + "/")
    if scenario.unix:
        return Target(upstream.url + "/", upstream.unix_path)
    if not scenario.upstream_tls:
        return Target(upstream.url + "/")
    return Target((upstream.tls_full_url if contender.full_handshakes else upstream.tls_url) + "/")


def run_one(contender: Contender, scenario: Scenario, services: Services, upstream: Upstream,
            workdir: Path, settings: LoadSettings) -> RunResult:
    """Starts the contender fresh (empty pool), loads it, stops it. Failures become a result."""
    proxy = None
    try:
        if contender.launch is None:
            target = _direct_target(contender, scenario, upstream)
        else:
            proxy, target = _start_proxy(contender, scenario, services, upstream, workdir,
                                         settings)
        _check_serves(target, contender.name, proxy, upstream)
        return _measure(contender, scenario, target, upstream, proxy, settings, workdir)
    except HarnessError as err:
        return RunResult(contender.name, scenario.name, scenario.upstream_tls,
                         failure=str(err))
    finally:
        if proxy:
            services.stop(proxy)
