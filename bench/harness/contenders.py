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

The added scenarios ask more of a launch: `endpoints` (three upstream addresses: each proxy
balances over them by its own means: tether `endpoints =` with its default least_request,
HAProxy `balance leastconn`, nginx `least_conn`), `unix_path` (listen on a Unix-domain socket
instead of the TCP port: tether `listen = unix:`, HAProxy `bind unix@`, nginx `listen unix:`;
h2o is not in those scenarios), `tether_conf`/`tether_global` (lines for tether's upstream
section and [tether]: probes, health checks, request_buffer) and `health_checks` (HAProxy
`check inter 1s`).
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
    endpoints: tuple[str, ...] = ()  # HOST:PORT each; empty: the URL's address only
    unix_path: Path | None = None  # listen here instead of on the TCP port
    tether_conf: tuple[str, ...] = ()
    tether_global: tuple[str, ...] = ()
    health_checks: bool = False

    @property
    def servers(self) -> tuple[str, ...]:
        """The upstream addresses (HOST:PORT) a proxy balances over."""
        return self.endpoints or (self.upstream_authority,)

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


def tether_config(ctx: Launch) -> str:
    """tether.ini for a launch that needs more than the zero-config form."""
    listen = f"unix:{ctx.unix_path}\nlisten_mode = 0666" if ctx.unix_path \
        else f"127.0.0.1:{ctx.port}"
    lines = ["[tether]", f"workers = {ctx.workers}", "log_level = warn", *ctx.tether_global, "",
             "[upstream bench]", f"url = {ctx.upstream_url}", f"listen = {listen}"]
    if ctx.endpoints:
        lines.append("endpoints = " + ", ".join(ctx.endpoints))
    if ctx.tls is not None:
        lines += [f"tls_ca = {ctx.tls.ca}", f"tls_server_name = {ctx.tls.server_name}"]
    return "\n".join([*lines, *ctx.tether_conf]) + "\n"


def _launch_tether(binary: str) -> Callable[[Launch], list[str]]:
    """Zero-config for plain HTTP on TCP; otherwise the same defaults from a file, plus what the
    scenario asks for."""

    def launch(ctx: Launch) -> list[str]:
        if (ctx.tls is None and ctx.unix_path is None and not ctx.endpoints
                and not ctx.tether_conf and not ctx.tether_global):
            return [binary, "--listen", f"127.0.0.1:{ctx.port}", "--upstream", ctx.upstream_url,
                    "--workers", str(ctx.workers), "--log-level", "warn"]
        config = ctx.workdir / "tether.ini"
        config.write_text(tether_config(ctx))
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
    {_haproxy_bind(ctx)}
    default_backend upstream

backend upstream
{_haproxy_servers(ctx)}
""")
    return [HAPROXY, "-db", "-f", str(config)]


def _haproxy_bind(ctx: Launch) -> str:
    if ctx.unix_path:
        return f"bind unix@{ctx.unix_path} mode 666"
    return f"bind 127.0.0.1:{ctx.port} defer-accept"


def _haproxy_servers(ctx: Launch) -> str:
    lines = ["    balance leastconn"] if ctx.endpoints else []
    check = " check inter 1s" if ctx.health_checks else ""
    lines += [f"    server upstream{index} {server}{_haproxy_tls(ctx)}{check}"
              for index, server in enumerate(ctx.servers)]
    return "\n".join(lines)


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
    client_max_body_size 0;
    upstream bench_upstream {{
{_nginx_servers(ctx)}
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_requests 100000;
        keepalive_timeout 60s;
    }}
    server {{
        {_nginx_listen(ctx)}
        location / {{
            proxy_pass {'https' if ctx.tls else 'http'}://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{_nginx_tls(ctx)}
        }}
    }}"""
    return nginx.write_config(ctx.workdir / "nginx", http_block, workers=ctx.workers)


def _nginx_servers(ctx: Launch) -> str:
    lines = ["        least_conn;"] if ctx.endpoints else []
    return "\n".join(lines + [f"        server {server};" for server in ctx.servers])


def _nginx_listen(ctx: Launch) -> str:
    if ctx.unix_path:
        return f"listen unix:{ctx.unix_path} backlog=4096;"
    return f"listen 127.0.0.1:{ctx.port} backlog=4096 deferred;"


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
