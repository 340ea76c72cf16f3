"""The upstream service every run talks to: an nginx returning a small fixed response.

It listens three times with the same response: plain HTTP; TLS with session resumption (a shared
session cache and session tickets), the upstream of the TLS scenarios; and TLS without any
resumption, for the `direct-full` baseline. A side port serves nginx's stub_status, whose
counters tell how many connections the upstream accepted and how many are open: the churn a proxy
causes (or saves) upstream. The counters cover every listener; each run uses one listener, so
the difference over a run is that listener's.

The plain listener also listens on 127.0.0.2-4 (the three-endpoints scenario) and on a Unix
socket (`direct` in the uds-* scenarios), and serves the large-* scenarios: `/large` (a 50 MB
file, Content-Length, sendfile), `/large-chunked` (the same file through a sub_filter that
matches nothing, which makes nginx send it chunked) and `PUT /upload/...` (WebDAV: the body is
read whole and stored, in /dev/shm when there is one). A second upstream, `nagle`, is
tests/integration/nagle_upstream.py: Python's http.server writing head and body apart.

Both TLS listeners write one access log line per connection (at its first request) with the
protocol and whether the session was resumed: `TlsLog` counts the handshakes of a run from it.
"""

import collections
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx
from .bodies import BODY_BYTES
from .procs import HarnessError, Service, Services, free_port, wait_for_port
from .tls import Certificates, make_certificates

NAGLE_UPSTREAM = Path(__file__).resolve().parents[2] / "tests" / "integration" / "nagle_upstream.py"
ENDPOINT_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")

RESPONSE_SIZE = 100  # bytes of body
WORKER_CONNECTIONS = 16384  # above the memory probe's 10,000 pooled connections
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class StubStatus:
    """nginx stub_status counters. Each read is itself one accepted connection."""

    active: int  # open client connections, the reading one included
    accepts: int  # connections accepted since start


@dataclass(frozen=True)
class TlsCounts:
    """TLS handshakes the upstream completed (connections that carried a request)."""

    handshakes: int = 0
    resumed: int = 0
    protocols: dict[str, int] = field(default_factory=dict)  # e.g. {"TLSv1.3": 63}


class TlsLog:
    """The TLS listeners' access log: "PROTOCOL r|." per connection, written unbuffered."""

    def __init__(self, path: Path):
        self.path = path

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def counts_since(self, offset: int) -> TlsCounts:
        try:
            with open(self.path, "rb") as log:
                log.seek(offset)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        protocols: collections.Counter[str] = collections.Counter()
        resumed = 0
        for line in lines:
            fields = line.split()
            if len(fields) != 2:
                continue
            protocols[fields[0]] += 1
            resumed += fields[1] == "r"
        return TlsCounts(sum(protocols.values()), resumed, dict(protocols))


@dataclass
class Upstream:
    service: Service
    port: int
    status_port: int
    tls_port: int
    tls_full_port: int  # TLS without session resumption
    certificates: Certificates
    tls_log: TlsLog
    unix_path: Path
    large_file: Path
    nagle: Service
    nagle_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nagle_url(self) -> str:
        return f"http://127.0.0.1:{self.nagle_port}"

    def endpoints(self, count: int) -> tuple[str, ...]:
        """HOST:PORT of `count` of the plain listener's addresses on 127.0.0.2-4."""
        return tuple(f"{host}:{self.port}" for host in ENDPOINT_HOSTS[:count])

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def tls_full_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_full_port}"

    def status(self) -> StubStatus:
        url = f"http://127.0.0.1:{self.status_port}/"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return parse_stub_status(response.read().decode())
        except OSError as err:
            raise HarnessError(f"cannot read upstream stub_status at {url}: {err}") from err


def parse_stub_status(text: str) -> StubStatus:
    """Parses "Active connections: A / server accepts handled requests / X Y Z / ..."."""
    lines = text.splitlines()
    try:
        active = int(lines[0].split(":")[1])
        accepts = int(lines[2].split()[0])
    except (IndexError, ValueError) as err:
        raise HarnessError(f"unexpected stub_status output: {text!r}") from err
    return StubStatus(active, accepts)


def accepted_between(before: StubStatus, after: StubStatus) -> int:
    """Connections the upstream accepted between two reads, not counting the later read's own."""
    return after.accepts - before.accepts - 1


_RESPONSE = f"""        location / {{
            default_type text/plain;
            return 200 "{'x' * RESPONSE_SIZE}";
        }}"""


def _large_locations(bodies: Path) -> str:
    return f"""        client_max_body_size {BODY_BYTES * 2};
        location = /large {{
            alias {bodies / 'large.bin'};
            default_type application/octet-stream;
        }}
        location = /large-chunked {{
            alias {bodies / 'large.bin'};
            default_type text/plain;
            sub_filter_types *;
            sub_filter 'tether-bench-matches-nothing' '';
        }}
        location /upload/ {{
            root {bodies};
            dav_methods PUT;
            client_body_temp_path {bodies / 'incoming'};
        }}"""


def _http_block(port: int, status_port: int, tls_port: int, tls_full_port: int,
                certificates: Certificates, tls_log: Path, unix_path: Path,
                bodies: Path) -> str:
    extra = "".join(f"        listen {host}:{port} backlog={LISTEN_BACKLOG};\n"
                    for host in ENDPOINT_HOSTS)
    return f"""    keepalive_timeout 60s;
    keepalive_requests 100000;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} backlog={LISTEN_BACKLOG};
{extra}        listen unix:{unix_path} backlog={LISTEN_BACKLOG};
{_RESPONSE}
{_large_locations(bodies)}
    }}
    ssl_certificate {certificates.cert};
    ssl_certificate_key {certificates.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    map $connection_requests $tls_first_request {{
        1 1;
        default 0;
    }}
    log_format tls_handshake '$ssl_protocol $ssl_session_reused';
    server {{
        listen 127.0.0.1:{tls_port} ssl backlog={LISTEN_BACKLOG};
        ssl_session_cache shared:bench:10m;
        ssl_session_timeout 1h;
        ssl_session_tickets on;
        access_log {tls_log} tls_handshake if=$tls_first_request;
{_RESPONSE}
    }}
    server {{
        listen 127.0.0.1:{tls_full_port} ssl backlog={LISTEN_BACKLOG};
        ssl_session_cache off;
        ssl_session_tickets off;
        access_log {tls_log} tls_handshake if=$tls_first_request;
{_RESPONSE}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{
            stub_status;
        }}
    }}"""


def _write_large_file(bodies: Path) -> Path:
    """BODY_BYTES of random bytes (not compressible, not all zeros), written once per run."""
    (bodies / "upload").mkdir(parents=True, exist_ok=True)
    (bodies / "incoming").mkdir(exist_ok=True)
    path = bodies / "large.bin"
    with open(path, "wb") as out:
        for _ in range(BODY_BYTES // 1_000_000):
            out.write(os.urandom(1_000_000))
    return path


def start_nagle(services: Services, cpus: str | None = None) -> tuple[Service, int]:
    """Starts nagle_upstream.py and reads the port it prints."""
    service = services.start("nagle-upstream", [sys.executable, str(NAGLE_UPSTREAM),
                                                "--body-size", "100"], cpus)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in service.log_path.read_text(errors="replace").splitlines():
            if line.startswith("PORT "):
                port = int(line.split()[1])
                wait_for_port(service, port)
                return service, port
        if not service.running():
            break
        time.sleep(0.05)
    raise HarnessError(f"nagle upstream did not start:\n{service.log_tail()}")


def start_upstream(services: Services, workdir: Path, cpus: str | None = None,
                   certificates: Certificates | None = None,
                   bodies: Path | None = None) -> Upstream:
    """Starts the upstream nginx (one worker) and the nagle upstream, and waits until all their
    ports accept. Without `certificates`, makes them in WORKDIR/tls; the large bodies live in
    `bodies` (default WORKDIR/bodies)."""
    if certificates is None:
        certificates = make_certificates(workdir / "tls")
    bodies = bodies or workdir / "bodies"
    large_file = _write_large_file(bodies)
    ports = [free_port() for _ in range(4)]
    port, status_port, tls_port, tls_full_port = ports
    directory = workdir / "upstream-nginx"
    tls_log = directory / "tls-handshakes.log"
    unix_path = directory / "upstream.sock"
    argv = nginx.write_config(directory, _http_block(port, status_port, tls_port, tls_full_port,
                                                     certificates, tls_log, unix_path, bodies),
                              workers=1, worker_connections=WORKER_CONNECTIONS)
    service = services.start("upstream-nginx", argv, cpus)
    for listening in ports:
        wait_for_port(service, listening)
    nagle, nagle_port = start_nagle(services, cpus)
    return Upstream(service, port, status_port, tls_port, tls_full_port, certificates,
                    TlsLog(tls_log), unix_path, large_file, nagle, nagle_port)
