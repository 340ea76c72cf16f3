"""The contender table: how to run each proxy in front of the upstream, pooling connections to it.

Every proxy gets the same number of worker threads or processes and keeps idle keep-alive
connections to the upstream. `direct` is the baseline: wrk talks to the upstream itself.
To add a contender, write a `_launch_*` function (config file + argv) and add a row to
`contenders()`. A TLS-to-upstream variant would pass an https URL in `Launch.upstream_url`.
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import nginx

HAPROXY = "haproxy"
H2O = "h2o"
UPSTREAM_KEEPALIVE = 64  # idle upstream connections nginx keeps per worker
MAX_CLIENT_CONNECTIONS = 4096


@dataclass(frozen=True)
class Launch:
    """What a contender needs to start: a scratch dir, its listen port, the upstream, workers."""

    workdir: Path
    port: int
    upstream_url: str  # http://host:port
    workers: int

    @property
    def upstream_authority(self) -> str:
        return self.upstream_url.split("://", 1)[1]


@dataclass(frozen=True)
class Contender:
    name: str
    binary: str | None  # None: no proxy (direct)
    launch: Callable[[Launch], list[str]] | None  # writes config files, returns argv
    summary: str

    def available(self) -> bool:
        return self.binary is None or shutil.which(self.binary) is not None


def _launch_tether(binary: str) -> Callable[[Launch], list[str]]:
    def launch(ctx: Launch) -> list[str]:
        return [binary, "--listen", f"127.0.0.1:{ctx.port}", "--upstream", ctx.upstream_url,
                "--workers", str(ctx.workers), "--log-level", "warn"]

    return launch


def _launch_haproxy(ctx: Launch) -> list[str]:
    config = ctx.workdir / "haproxy.cfg"
    config.write_text(f"""global
    nbthread {ctx.workers}
    maxconn {MAX_CLIENT_CONNECTIONS}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:{ctx.port}
    default_backend upstream

backend upstream
    server upstream {ctx.upstream_authority}
""")
    return [HAPROXY, "-db", "-f", str(config)]


def _launch_nginx(ctx: Launch) -> list[str]:
    http_block = f"""    keepalive_timeout 60s;
    keepalive_requests 100000;
    upstream bench_upstream {{
        server {ctx.upstream_authority};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 100000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{ctx.port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx.write_config(ctx.workdir / "nginx", http_block, workers=ctx.workers)


def _launch_h2o(ctx: Launch) -> list[str]:
    config = ctx.workdir / "h2o.conf"
    user = "user: root\n" if os.geteuid() == 0 else ""  # keep access to the scratch dir
    config.write_text(f"""{user}num-threads: {ctx.workers}
pid-file: {ctx.workdir / 'h2o.pid'}
error-log: {ctx.workdir / 'h2o-error.log'}
max-connections: {MAX_CLIENT_CONNECTIONS}
proxy.timeout.keepalive: 60000
listen:
  host: 127.0.0.1
  port: {ctx.port}
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: {ctx.upstream_url}/
""")
    return [H2O, "-c", str(config)]


def contenders(tetherd: str) -> list[Contender]:
    """All contenders in report order; `tetherd` is the path of the tether daemon to measure."""
    return [
        Contender("direct", None, None, "no proxy: wrk talks to the upstream"),
        Contender("tether", tetherd, _launch_tether(tetherd), "tetherd zero-config"),
        Contender("haproxy", HAPROXY, _launch_haproxy, "http-reuse always, nbthread = workers"),
        Contender("nginx", nginx.NGINX, _launch_nginx,
                  f"upstream keepalive {UPSTREAM_KEEPALIVE}, worker_processes = workers"),
        Contender("h2o", H2O, _launch_h2o, "proxy.reverse.url, num-threads = workers"),
    ]
