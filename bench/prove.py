#!/usr/bin/python3
"""`make prove`: the mission's scenario on two hosts, each promised figure measured.

Host A runs the application: Python calling an upstream service with `requests` and no Session,
so every call opens a new TCP connection and a full TLS handshake. Host B runs the service: nginx
with TLS and a load balancer's 60 s keep-alive timeout, behind a relay that delays each direction
by --delay-ms (this kernel has no netem; see prove/relay.py for what that models). The hosts are
two network namespaces joined by a veth pair, made and removed here.

Runs, each --warmup + --seconds long at the same open-loop call rate:
  straight  the application over TLS to the service, as teams write it;
  tetherd   the same application code with HTTP_PROXY naming tetherd on host A's loopback;
            tetherd pools the connections and originates TLS (verified, resumed);
  session   the application with a requests.Session per worker (the in-process fix).

Figures per run come from the relay's exact connection log (connections between the hosts per
minute, their ages), the application's call log (p50/p99 from each call's due time), once-a-second
`ss` samples of both hosts (socket memory, TIME_WAIT), /proc (CPU), the upstream's TLS log
(handshakes, resumed), tetherd's /metrics and `tether churn --save/--compare`. Results go to
bench/results/prove-<time>/: table.md, results.json, chart.png. Everything it starts and creates
is stopped and removed on exit, error or Ctrl-C.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from harness import nginx, procfs
from harness.netns import ADDRESS_A, ADDRESS_B, NetnsError, TwoHosts, available
from harness.procs import HarnessError, Services, exit_on_sigterm, run_bounded
from harness.tls import make_certificates
from prove import figures, report

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HERE = Path(__file__).resolve().parent
SERVICE_NAME = "upstream.test"
SERVICE_PORT = 443  # the relay, on host B's veth address
NGINX_TLS_PORT = 8443  # on host B's loopback, behind the relay
NGINX_STATUS_PORT = 8080
PROXY_PORT = 15001  # tetherd's HTTP_PROXY port on host A's loopback
ADMIN_PORT = 9901
PYTHON = "/usr/bin/python3"
RUNS = ("straight", "tetherd", "session")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--workers", type=int, default=16, help="application threads")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="one-way network delay")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of "
                        + ", ".join(RUNS))
    parser.add_argument("--tetherd", help="default: build-release/tetherd, else build/tetherd")
    parser.add_argument("--out", help="results folder (default bench/results/prove-<time>)")
    args = parser.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(args.runs) - set(RUNS)
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    return args


def binary(name: str, given: str | None) -> Path:
    candidates = [Path(given)] if given else [REPO / "build-release" / name, REPO / "build" / name]
    for path in candidates:
        if path.exists():
            return path.resolve()
    raise HarnessError(f"{candidates[-1]} not found: run `make` first")


def slab_object_sizes() -> tuple[int, int]:
    """Bytes of one full TCP socket object and one TIME_WAIT object (/proc/slabinfo)."""
    sizes = {"TCP": 2432, "tw_sock_TCP": 248}  # this kernel's sizes, if slabinfo is unreadable
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] in sizes:
                sizes[fields[0]] = int(fields[3])
    except OSError:
        pass
    return sizes["TCP"], sizes["tw_sock_TCP"]


class Sampler(threading.Thread):
    """Samples both hosts' sockets (`ss -tanmH`) once a second until stopped."""

    def __init__(self, hosts: TwoHosts, remote: str):
        super().__init__(daemon=True)
        self.hosts, self.remote = hosts, remote
        self.samples: list[tuple[float, str, figures.Sockets]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            for name, ns in (("A", self.hosts.a), ("B", self.hosts.b)):
                try:
                    text = subprocess.run(self.hosts.run_in(ns, ["ss", "-tanmH"]),
                                          capture_output=True, text=True, timeout=5).stdout
                except subprocess.TimeoutExpired:
                    continue
                self.samples.append((started, name, figures.parse_ss(text, self.remote)))
            self.stopping.wait(max(0.0, 1.0 - (time.time() - started)))

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def wait_port_in(hosts: TwoHosts, ns: str, host: str, port: int, timeout_s: float = 10) -> None:
    """Waits until HOST:PORT accepts inside namespace `ns`."""
    probe = (f"import socket,time\nend=time.time()+{timeout_s}\n"
             "while time.time()<end:\n"
             f"    try: socket.create_connection(('{host}',{port}),0.5).close(); break\n"
             "    except OSError: time.sleep(0.05)\n"
             "else: raise SystemExit(1)\n")
    run_bounded(hosts.run_in(ns, [PYTHON, "-c", probe]), timeout_s + 5)


def start_service(services: Services, hosts: TwoHosts, work: Path, certs, delay_ms: float):
    """nginx (TLS, 60 s keep-alive) on host B's loopback and the relay on its veth address."""
    tls_log = work / "nginx" / "tls.log"
    http_block = f"""    keepalive_timeout 60s;
    keepalive_requests 100000;
    ssl_certificate {certs.cert};
    ssl_certificate_key {certs.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:prove:10m;
    ssl_session_tickets on;
    map $connection_requests $first_request {{ 1 1; default 0; }}
    log_format tls_handshake '$ssl_protocol $ssl_session_reused';
    server {{
        listen 127.0.0.1:{NGINX_TLS_PORT} ssl backlog=4096;
        access_log {tls_log} tls_handshake if=$first_request;
        location / {{ default_type text/plain; return 200 "{'x' * 100}"; }}
    }}
    server {{
        listen 127.0.0.1:{NGINX_STATUS_PORT};
        location / {{ stub_status; }}
    }}"""
    argv = nginx.write_config(work / "nginx", http_block, workers=1)
    server = services.start("nginx", hosts.run_in(hosts.b, argv))
    wait_port_in(hosts, hosts.b, "127.0.0.1", NGINX_TLS_PORT)
    relay_log = work / "relay.log"
    relay = services.start("relay", hosts.run_in(hosts.b, [
        PYTHON, str(HERE / "prove" / "relay.py"), "--listen",
        f"{hosts.address_b}:{SERVICE_PORT}", "--target", f"127.0.0.1:{NGINX_TLS_PORT}",
        "--delay-ms", str(delay_ms), "--log", str(relay_log)]))
    wait_port_in(hosts, hosts.b, hosts.address_b, SERVICE_PORT)
    return server, relay, relay_log, tls_log


def start_tetherd(services: Services, hosts: TwoHosts, work: Path, tetherd: Path, certs,
                  concurrency: int):
    """tetherd on host A, pre-warmed to the application's concurrency (its thread count: what
    `tether churn --suggest` derives from the observed peak), so a burst finds warm connections
    instead of opening new ones."""
    config = work / "tetherd.ini"
    config.write_text(f"""[tether]
workers = 1
admin = 127.0.0.1:{ADMIN_PORT}
proxy_listen = 127.0.0.1:{PROXY_PORT}

[upstream service]
url = https://{SERVICE_NAME}:{SERVICE_PORT}
hosts = {SERVICE_NAME}
tls_ca = {certs.ca}
max_connections = 64
max_idle = 32
min_idle = {min(concurrency, 32)}
""")
    service = services.start("tetherd", hosts.run_in(hosts.a, [str(tetherd), "-c", str(config)]))
    wait_port_in(hosts, hosts.a, "127.0.0.1", PROXY_PORT)
    return service


def tetherd_metrics(hosts: TwoHosts) -> dict[str, float]:
    """Sums of tetherd's upstream counters over their labels, from /metrics."""
    text = run_bounded(hosts.run_in(hosts.a, [
        "curl", "-s", f"http://127.0.0.1:{ADMIN_PORT}/metrics"]), 10)
    wanted = ("tether_upstream_connections_opened_total", "tether_upstream_requests_sent_total",
              "tether_upstream_requests_reused_total", "tether_upstream_tls_handshakes_total",
              "tether_upstream_connection_mean_age_seconds")
    sums = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def churn_available(tether: Path) -> bool:
    result = subprocess.run([str(tether), "churn", "--help"], capture_output=True, timeout=10)
    return result.returncode == 0


def run_once(name: str, args, hosts: TwoHosts, work: Path, certs,
             relay_log: Path, tls_log: Path, trees: dict[str, int], tether: Path | None):
    """One run of the application; returns its figures."""
    url_host = f"{SERVICE_NAME}" if SERVICE_PORT == 443 else f"{SERVICE_NAME}:{SERVICE_PORT}"
    app_argv = [PYTHON, str(HERE / "prove" / "app.py"), "--rate", str(args.rate), "--seconds",
                str(args.warmup + args.seconds), "--workers", str(args.workers),
                "--out", str(work / f"{name}.calls")]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    if name == "tetherd":
        app_argv += ["--url", f"http://{SERVICE_NAME}/"]
        env["HTTP_PROXY"] = env["http_proxy"] = f"http://127.0.0.1:{PROXY_PORT}"
    else:
        app_argv += ["--url", f"https://{url_host}/", "--ca", str(certs.ca)]
        if name == "session":
            app_argv.append("--session")
    print(f"  {name}: {args.warmup:g} s warm-up + {args.seconds:g} s at {args.rate:g} calls/s",
          flush=True)
    sampler = Sampler(hosts, f"{hosts.address_b}:{SERVICE_PORT}")
    sampler.start()
    app = subprocess.Popen(hosts.run_in(hosts.a, app_argv), env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.app.log", "w"))
    churn = None
    try:
        time.sleep(0.2 + args.warmup)
        cpu_before = {k: procfs.cpu_seconds(procfs.process_tree(pid)) for k, pid in trees.items()}
        cpu_before["app"] = procfs.cpu_seconds(procfs.process_tree(app.pid))
        tls_offset = tls_log.stat().st_size if tls_log.exists() else 0
        metrics_before = tetherd_metrics(hosts) if name == "tetherd" else None
        if tether is not None:
            churn_file = work / f"{name}.churn.json"
            # From the root namespace with --netns: the tracepoint sees every namespace and
            # churn keeps host A's connections only.
            churn = subprocess.Popen([
                str(tether), "churn", "--netns", hosts.a, "--seconds", str(int(args.seconds)),
                "--save", str(churn_file), "--json"], stdout=subprocess.DEVNULL,
                stderr=open(work / f"{name}.churn.log", "w"), start_new_session=True)
        time.sleep(max(0.0, args.seconds - 1.0))
        cpu_after = {k: procfs.cpu_seconds(procfs.process_tree(pid)) for k, pid in trees.items()}
        cpu_after["app"] = procfs.cpu_seconds(procfs.process_tree(app.pid))
        metrics_after = tetherd_metrics(hosts) if name == "tetherd" else None
        if app.wait(timeout=args.seconds + 60) != 0:
            raise HarnessError(f"the application failed: {(work / f'{name}.app.log').read_text()}")
        if churn is not None and churn.wait(timeout=60) != 0:
            print(f"  note: tether churn failed: {(work / f'{name}.churn.log').read_text()[-500:]}")
    finally:
        sampler.stop()
        for proc in (app, churn):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    start_wall, entries = figures.read_app_log(work / f"{name}.calls")
    window = figures.Window(start_wall + args.warmup, start_wall + args.warmup + args.seconds)
    conns = figures.connections(figures.read_relay_log(relay_log), window)
    calls = figures.calls(entries, args.warmup, args.seconds)
    handshakes, resumed = figures.read_tls_log(tls_log, tls_offset)
    socket_object, timewait_object = slab_object_sizes()
    hosts_figures = {}
    for host in ("A", "B"):
        samples = [s for t, h, s in sampler.samples if h == host and window.start <= t < window.end]
        if not samples:
            continue
        mem = [figures.socket_memory(s, socket_object, timewait_object) for s in samples]
        pair = [figures.pair_memory(s, socket_object, timewait_object) for s in samples]
        hosts_figures[host] = {
            "socket_memory_bytes": sum(mem) / len(mem),
            "pair_socket_memory_bytes": sum(pair) / len(pair),
            "time_wait": sum(s.by_state.get("TIME-WAIT", 0) for s in samples) / len(samples),
            "time_wait_to_service": sum(s.time_wait_to for s in samples) / len(samples),
            "established_to_service": sum(s.established_to for s in samples) / len(samples),
        }
    cpu = {k: procfs.cpu_seconds_between(cpu_before[k], cpu_after[k]) for k in cpu_after}
    span = max(args.seconds - 1.0, 1.0)
    result = {
        "run": name,
        "calls": asdict(calls),
        "connections": asdict(conns),
        "hosts": hosts_figures,
        "cpu_cores": {k: v / span for k, v in cpu.items()},
        "tls": {"handshakes": handshakes, "resumed": resumed},
    }
    if metrics_before is not None:
        result["tetherd"] = {k: metrics_after[k] - metrics_before[k] for k in metrics_after}
        result["tetherd"]["tether_upstream_connection_mean_age_seconds"] = \
            metrics_after["tether_upstream_connection_mean_age_seconds"]
    if churn is not None and (work / f"{name}.churn.json").exists():
        result["churn_file"] = str(work / f"{name}.churn.json")
    return result


def prove(args) -> Path:
    reason = available()
    if reason:
        raise HarnessError(f"cannot make network namespaces here: {reason}")
    tetherd = binary("tetherd", args.tetherd)
    tether = binary("tether", None)
    tether = tether if churn_available(tether) else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"prove-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tether-prove-") as scratch:
        work = Path(scratch)
        os.chmod(work, 0o755)
        certs = make_certificates(work / "tls", SERVICE_NAME, (ADDRESS_B,))
        print(f"prove: two hosts ({ADDRESS_A} and {ADDRESS_B}, new namespaces for each run), "
              f"{args.delay_ms:g} ms each way", flush=True)
        for sequence, name in enumerate(args.runs):
            # Fresh hosts for every run: no TIME_WAIT socket of one run is counted in the next.
            run_dir = work / name
            run_dir.mkdir()
            with TwoHosts({SERVICE_NAME: ADDRESS_B}, sequence) as hosts, \
                    Services(run_dir) as services:
                server, relay, relay_log, tls_log = start_service(services, hosts, run_dir,
                                                                  certs, args.delay_ms)
                trees = {"nginx": server.pid, "relay": relay.pid}
                if name == "tetherd":
                    trees["tetherd"] = start_tetherd(services, hosts, run_dir, tetherd, certs,
                                                     args.workers).pid
                results.append(run_once(name, args, hosts, run_dir, certs, relay_log, tls_log,
                                        trees, tether))
            for log in ("relay.log", "tetherd.ini", "tetherd.log", f"{name}.churn.json"):
                if (run_dir / log).exists():
                    (out / f"{name}-{log}").write_bytes((run_dir / log).read_bytes())
        compare = None
        files = {r["run"]: r.get("churn_file") for r in results}
        if tether is not None and files.get("straight") and files.get("tetherd"):
            compare = run_bounded([str(tether), "churn", "--compare", "--top", "3",
                                   files["straight"], files["tetherd"]], 30)
    settings = {k: getattr(args, k) for k in ("seconds", "warmup", "rate", "workers", "delay_ms")}
    (out / "results.json").write_text(json.dumps({"settings": settings, "runs": results,
                                                  "churn_compare": compare}, indent=2))
    table = report.table(results, settings)
    if compare:
        table += "\n\n`tether churn --compare straight tetherd` (host A):\n\n```\n" + \
            compare.rstrip() + "\n```\n"
    (out / "table.md").write_text(table + "\n")
    report.chart(results, out / "chart.png")
    print("\n" + table)
    print(f"\nresults: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return out


def main(argv: list[str]) -> int:
    exit_on_sigterm()
    args = parse_args(argv)
    try:
        prove(args)
    except (HarnessError, NetnsError) as err:
        print(f"prove: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prove: interrupted; everything it started was stopped and removed",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
