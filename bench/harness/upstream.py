"""The upstream service every run talks to: an nginx returning a small fixed response.

A side port serves nginx's stub_status, whose counters tell how many connections the upstream
accepted and how many are open: the churn a proxy causes (or saves) upstream.
"""

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import nginx
from .procs import HarnessError, Service, Services, free_port, wait_for_port

RESPONSE_SIZE = 100  # bytes of body
WORKER_CONNECTIONS = 16384  # above the memory probe's 10,000 pooled connections
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class StubStatus:
    """nginx stub_status counters. Each read is itself one accepted connection."""

    active: int  # open client connections, the reading one included
    accepts: int  # connections accepted since start


@dataclass
class Upstream:
    service: Service
    port: int
    status_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def _http_block(port: int, status_port: int) -> str:
    return f"""    keepalive_timeout 60s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog={LISTEN_BACKLOG};
        location / {{
            default_type text/plain;
            return 200 "{'x' * RESPONSE_SIZE}";
        }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{
            stub_status;
        }}
    }}"""


def start_upstream(services: Services, workdir: Path, cpus: str | None = None) -> Upstream:
    """Starts the upstream nginx (one worker) and waits until both its ports accept."""
    port, status_port = free_port(), free_port()
    argv = nginx.write_config(workdir / "upstream-nginx", _http_block(port, status_port),
                              workers=1, worker_connections=WORKER_CONNECTIONS)
    service = services.start("upstream-nginx", argv, cpus)
    wait_for_port(service, port)
    wait_for_port(service, status_port)
    return Upstream(service, port, status_port)
