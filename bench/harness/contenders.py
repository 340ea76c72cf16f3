"""The contender table: how to run each proxy in front of the upstream, pooling connections to it.

Every proxy gets the same number of worker threads or processes and keeps idle keep-alive
connections to the upstream. Every proxy's listener uses TCP_DEFER_ACCEPT (tether's and h2o's
default; nginx `deferred`, haproxy `defer-accept`), so none is woken for a handshake whose
request has not arrived. `direct` is the baseline: wrk talks to the upstream itself.
To add a contender, write a `_launch_*` function (config file + argv) and add a row to
`contenders()`.

In the TLS scenarios `Launch.upstream_url` is `https://127.0.0.1:PORT` and `Launch.tls` holds the
CA and the name (`localhost`) every proxy verifies the upstream's certificate against (h2o 2.2.5:
the chain only), sending that name as SNI. Every proxy offers TLS 1.2 and 1.3 and keeps TLS
sessions for resumption. `direct-full` is a second baseline for `tls-close` only: wrk against
an upstream listener that does not resume sessions, so every connection is a full handshake
(with keep-alive clients it would be `direct` again).
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import nginx
from .tls import Certificates

HAPROXY = "haproxy"
H2O = "h2o"
UPSTREAM_KEEPALIVE = 64  # idle upstream connections nginx keeps per worker
MAX_CLIENT_CONNECTIONS = 4096


@dataclass(frozen=True)
class Launch:
    """What a contender needs to start: a scratch dir, its listen port, the upstream, workers."""

    workdir: Path
    port: int
    upstream_url: str  # http://host:port, or https://host:port with `tls`
    workers: int
    tls: Certificates | None = None  # set when the upstream speaks TLS

    @property
    def upstream_authority(self) -> str:
        return self.upstream_url.split("://", 1)[1]

    @property
    def upstream_port(self) -> str:
        return self.upstream_authority.rsplit(":", 1)[1]


@dataclass(frozen=True)
class Contender:
    name: str
    binary: str | None  # None: no proxy (direct)
    launch: Callable[[Launch], list[str]] | None  # writes config files, returns argv
    summary: str
    only_in: tuple[str, ...] | None = None  # the scenarios it runs in; None: all
    full_handshakes: bool = False  # direct-full: the upstream listener without resumption

    def available(self) -> bool:
        return self.binary is None or shutil.which(self.binary) is not None

    def runs_in(self, scenario: str) -> bool:
        return self.only_in is None or scenario in self.only_in


def _launch_tether(binary: str) -> Callable[[Launch], list[str]]:
    """Zero-config for plain HTTP; for TLS the same defaults from a file, plus the TLS keys."""

    def launch(ctx: Launch) -> list[str]:
        if ctx.tls is None:
            return [binary, "--listen", f"127.0.0.1:{ctx.port}", "--upstream", ctx.upstream_url,
                    "--workers", str(ctx.workers), "--log-level", "warn"]
        config = ctx.workdir / "tether.ini"
        config.write_text(f"""[tether]
workers = {ctx.workers}
log_level = warn

[upstream bench]
url = {ctx.upstream_url}
listen = 127.0.0.1:{ctx.port}
tls_ca = {ctx.tls.ca}
tls_server_name = {ctx.tls.server_name}
""")
        return [binary, "-c", str(config)]

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
    bind 127.0.0.1:{ctx.port} defer-accept
    default_backend upstream

backend upstream
    server upstream {ctx.upstream_authority}{_haproxy_tls(ctx)}
""")
    return [HAPROXY, "-db", "-f", str(config)]


def _haproxy_tls(ctx: Launch) -> str:
    """Server options for a TLS upstream: verify against the CA; the SNI name is also the name
    verified. Sessions are reused by default."""
    if ctx.tls is None:
        return ""
    return (f" ssl verify required ca-file {ctx.tls.ca} sni str({ctx.tls.server_name})"
            " ssl-min-ver TLSv1.2")


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
        listen 127.0.0.1:{ctx.port} backlog=4096 deferred;
        location / {{
            proxy_pass {'https' if ctx.tls else 'http'}://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{_nginx_tls(ctx)}
        }}
    }}"""
    return nginx.write_config(ctx.workdir / "nginx", http_block, workers=ctx.workers)


def _nginx_tls(ctx: Launch) -> str:
    """proxy_ssl_* for a TLS upstream. nginx 1.22 offers only up to TLS 1.2 to upstreams unless
    told otherwise (TLS 1.3 became the default in 1.23.4), so the protocols are set."""
    if ctx.tls is None:
        return ""
    return f"""
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_server_name on;
            proxy_ssl_name {ctx.tls.server_name};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ctx.tls.ca};
            proxy_ssl_session_reuse on;"""


def _launch_h2o(ctx: Launch) -> list[str]:
    config = ctx.workdir / "h2o.conf"
    user = "user: root\n" if os.geteuid() == 0 else ""  # keep access to the scratch dir
    config.write_text(f"""{user}num-threads: {ctx.workers}
pid-file: {ctx.workdir / 'h2o.pid'}
error-log: {ctx.workdir / 'h2o-error.log'}
max-connections: {MAX_CLIENT_CONNECTIONS}
proxy.timeout.keepalive: 60000
{_h2o_tls(ctx)}listen:
  host: 127.0.0.1
  port: {ctx.port}
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: {_h2o_url(ctx)}/
""")
    return [H2O, "-c", str(config)]


def _h2o_url(ctx: Launch) -> str:
    """h2o 2.2 takes the SNI name from the URL's host and has no setting for another name: the
    TLS URL names `localhost`. (h2o 2.2.5 verifies the chain against proxy.ssl.cafile but, as
    measured, not the name: it accepts a certificate for another name.)"""
    if ctx.tls is None:
        return ctx.upstream_url
    return f"https://{ctx.tls.server_name}:{ctx.upstream_port}"


def _h2o_tls(ctx: Launch) -> str:
    if ctx.tls is None:
        return ""
    return f"""proxy.ssl.verify-peer: ON
proxy.ssl.cafile: {ctx.tls.ca}
proxy.ssl.session-cache: ON
"""


def contenders(tetherd: str) -> list[Contender]:
    """All contenders in report order; `tetherd` is the path of the tether daemon to measure."""
    return [
        Contender("direct", None, None, "no proxy: wrk talks to the upstream"),
        Contender("direct-full", None, None, "no proxy, TLS without session resumption",
                  only_in=("tls-close",), full_handshakes=True),
        Contender("tether", tetherd, _launch_tether(tetherd), "tetherd zero-config"),
        Contender("haproxy", HAPROXY, _launch_haproxy, "http-reuse always, nbthread = workers"),
        Contender("nginx", nginx.NGINX, _launch_nginx,
                  f"upstream keepalive {UPSTREAM_KEEPALIVE}, worker_processes = workers"),
        Contender("h2o", H2O, _launch_h2o, "proxy.reverse.url, num-threads = workers"),
    ]
