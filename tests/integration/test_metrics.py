"""Evidence: the admin endpoint (/metrics /stats /healthz /ready /pools /config), `tether top`,
and the loopback policy of the admin listener. Every figure tetherd reports is checked against
what the test counted on the client side and what the test upstream saw on its side."""

import collections
import concurrent.futures
import json
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import REPO_ROOT, Client, build_request, fetch, free_port, tetherd_binary, wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def tether_binary():
    return tetherd_binary().parent / "tether"


def admin_get(port, path, method="GET"):
    return fetch(port, method, path, [("Connection", "close")])


def admin_json(port, path):
    resp = admin_get(port, path)
    assert resp.status == 200, resp
    assert resp.header("Content-Type") == "application/json"
    return json.loads(resp.body)


def parse_prom(text):
    """{(name, ((label, value), ...)): float} from exposition text."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"unparsable exposition line {line!r}"
        name, labels, value = match.groups()
        key = (name, tuple(sorted(LABEL.findall(labels or ""))))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(value)
    return samples


def metric(samples, name, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert found, f"no sample {name}{labels}"
    return sum(found)


def scrape(port):
    resp = admin_get(port, "/metrics")
    assert resp.status == 200, resp
    assert resp.header("Content-Type").startswith("text/plain; version=0.0.4")
    return resp.text


@pytest.fixture
def start_admin_proxy(start_upstream, start_tetherd):
    """start_admin_proxy(upstream_args=(), upstream_cfg="", workers=2)
    -> (tetherd, upstream, admin_port): upstream "app" on a dedicated port, admin enabled."""

    def start(upstream_args=(), upstream_cfg="", workers=2, url=None):
        upstream = start_upstream(*upstream_args) if url is None else None
        admin = free_port()
        config = (
            f"[tether]\nworkers = {workers}\nadmin = 127.0.0.1:{admin}\n\n"
            f"[upstream app]\nurl = {url or upstream.url}\n"
            f"listen = 127.0.0.1:{free_port()}\n{upstream_cfg}\n"
        )
        tetherd = start_tetherd(config)
        wait_for(lambda: _answers(admin), 5, "the admin endpoint")
        return tetherd, upstream, admin

    return start


def _answers(port):
    try:
        return admin_get(port, "/healthz").status == 200
    except OSError:
        return False


def parallel(n, fn):
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def test_counters_equal_both_sides(start_admin_proxy):
    """A known load: churning clients, keep-alive clients, error statuses. Afterwards every
    counter equals what the clients counted and what the upstream saw: requests, statuses,
    downstream connections, upstream connections opened and closed, reused requests."""
    tetherd, upstream, admin = start_admin_proxy(upstream_args=("--idle-close", "1"))
    statuses = collections.Counter()
    # The harness's own probe of the listening port was accepted too: count from here.
    client_conns = admin_json(admin, "/stats")["downstream"]["connections_accepted_total"]
    lock = threading.Lock()

    def churn(i):
        # A new client connection per request, like the applications tether is for.
        for j in range(40):
            status = 404 if j % 10 == 3 else 503 if j % 20 == 7 else 200
            resp = fetch(tetherd.port, "GET", f"/c{i}/{j}", [("X-Status", str(status))])
            with lock:
                statuses[resp.status] += 1

    parallel(8, churn)
    client_conns += 8 * 40
    with Client(tetherd.port) as client:  # one keep-alive client
        for j in range(50):
            statuses[client.request("GET", f"/ka/{j}").status] += 1
    client_conns += 1
    # Let the upstream close idle pooled connections (--idle-close 1) and tetherd see it, then
    # use the pool again.
    wait_for(lambda: upstream.stats()["connections_open"] == 0
             and admin_json(admin, "/stats")["upstreams"][0]["connections"]["idle"] == 0, 10,
             "the upstream to close the idle pooled connections")
    for j in range(10):
        statuses[fetch(tetherd.port, "GET", f"/after/{j}").status] += 1
    client_conns += 10
    total = sum(statuses.values())
    assert total == 8 * 40 + 50 + 10
    assert statuses[404] == 8 * 4 and statuses[503] == 8 * 2

    wait_for(lambda: admin_json(admin, "/stats")["downstream"]["connections_active"] == 0, 5,
             "client connections to close")

    def consistent():
        """/stats and the upstream's own figures, once both sides have seen every close (an
        upstream notices a close a moment after tetherd counts it)."""
        st, up = admin_json(admin, "/stats"), upstream.stats()
        c = st["upstreams"][0]["connections"]
        live = c["idle"] + c["active"] + c["connecting"]
        ended = up["closed_by_server"] + up["closed_by_peer"] + up["reset_by_server"]
        if live == up["connections_open"] and sum(c["closed"].values()) == ended:
            return st, up
        return None

    stats, up_side = wait_for(consistent, 5, "both sides to agree on connections")
    (app,) = stats["upstreams"]
    assert app["name"] == "app"
    assert app["endpoint"] == f"127.0.0.1:{upstream.port}"
    assert stats["downstream"]["connections_accepted_total"] == client_conns
    assert app["requests_total"] == total
    assert app["responses"]["2xx"] == statuses[200]
    assert app["responses"]["4xx"] == statuses[404]
    assert app["responses"]["5xx"] == statuses[503]
    assert sum(app["generated"].values()) == 0  # every status came from the upstream
    assert app["request_duration_us"]["count"] == total
    # The upstream's side: requests and connections.
    assert app["requests_sent_total"] == up_side["requests"] == total
    conns = app["connections"]
    assert conns["opened_total"] == up_side["connections_accepted"]
    assert app["handshakes"]["tcp"] == up_side["connections_accepted"]
    live = conns["idle"] + conns["active"] + conns["connecting"]
    closed = sum(conns["closed"].values())
    assert conns["opened_total"] == closed + live
    assert up_side["closed_by_server"] >= 1  # the idle close did happen
    assert conns["closed"]["peer_closed"] + conns["closed"]["idle_expired"] >= 1
    assert app["requests_per_connection"]["count"] == closed
    assert app["connection_age_ms"]["count"] == closed
    # Every connection's first request is new, every later one reused. (A connection opened
    # for a request that an idle one served meanwhile may close having served none.)
    unused_closed = sum(n for high, n in app["requests_per_connection"]["buckets"] if high == 0)
    pools = admin_json(admin, "/pools")["connections"]
    used = closed - unused_closed + sum(1 for c in pools if c["requests"] > 0)
    assert app["requests_reused_total"] == total - used
    # /metrics says the same.
    samples = parse_prom(scrape(admin))
    up = {"upstream": "app"}
    ep = {"upstream": "app", "endpoint": f"127.0.0.1:{upstream.port}"}
    assert metric(samples, "tether_downstream_connections_accepted_total") == client_conns
    assert metric(samples, "tether_upstream_requests_total", **up) == total
    assert metric(samples, "tether_upstream_responses_total", code="2xx", **up) == statuses[200]
    assert metric(samples, "tether_upstream_responses_total", code="4xx", **up) == statuses[404]
    assert metric(samples, "tether_upstream_responses_total", code="5xx", **up) == statuses[503]
    assert metric(samples, "tether_upstream_requests_sent_total", **up) == up_side["requests"]
    assert metric(samples, "tether_upstream_requests_reused_total", **up) == (
        app["requests_reused_total"])
    assert metric(samples, "tether_upstream_connections_opened_total", **ep) == (
        up_side["connections_accepted"])
    assert metric(samples, "tether_upstream_handshakes_total", kind="tcp", **ep) == (
        up_side["connections_accepted"])
    assert metric(samples, "tether_upstream_connections_closed_total", **ep) == closed
    assert metric(samples, "tether_upstream_connections", **ep) == up_side["connections_open"]
    assert metric(samples, "tether_upstream_request_duration_seconds_count", **up) == total
    assert metric(samples, "tether_upstream_request_duration_seconds_bucket", le="+Inf",
                  **up) == total
    assert metric(samples, "tether_upstream_connection_age_seconds_count", **up) == closed
    assert metric(samples, "tether_upstream_requests_per_connection_count", **up) == closed
    assert metric(samples, "tether_upstream_retries_total", reason="stale_connection", **up) == (
        app["retries"]["stale_connection"])
    # The upstream closed idle connections after 1 s: auto mode learned it.
    learned = metric(samples, "tether_upstream_learned_idle_timeout_seconds", **up)
    assert 0.8 <= learned <= 1.3
    assert 0 < metric(samples, "tether_upstream_idle_timeout_seconds", **up) < learned
    assert metric(samples, "tether_build_info", version=stats["version"]) == 1
    assert metric(samples, "process_open_fds") > 0
    assert metric(samples, "process_resident_memory_bytes") > 1 << 20
    assert abs(metric(samples, "process_start_time_seconds") - time.time()) < 120


def test_promtool_accepts_metrics(start_admin_proxy):
    """`promtool check metrics` (Debian's prometheus package) finds nothing to complain about,
    with every kind of series populated: errors generated by tether, rejections, closes."""
    if not shutil.which(PROMTOOL) and not __import__("os").path.exists(PROMTOOL):
        pytest.skip("promtool not installed")
    tetherd, upstream, admin = start_admin_proxy(upstream_cfg="max_requests = 3")
    for j in range(20):
        fetch(tetherd.port, "GET", f"/{j}", [("X-Status", "500" if j % 5 == 0 else "200")])
    upstream.stop()  # now tether itself answers 502
    assert fetch(tetherd.port).status == 502
    text = scrape(admin)
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result
    samples = parse_prom(text)
    assert metric(samples, "tether_upstream_generated_responses_total", upstream="app",
                  code="5xx") >= 1
    assert metric(samples, "tether_upstream_connections_closed_total", upstream="app",
                  reason="max_requests") >= 1
    # Every histogram's buckets are cumulative and end at _count.
    for (name, labels), value in samples.items():
        if name.endswith("_bucket") and ("le", "+Inf") in labels:
            base = name[: -len("_bucket")]
            rest = tuple(l for l in labels if l[0] != "le")
            assert samples[(base + "_count", rest)] == value
            series = sorted(
                (float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
                if n == name and tuple(l for l in ls if l[0] != "le") == rest)
            counts = [v for _, v in series]
            assert counts == sorted(counts), f"{name}{rest} not cumulative"


def test_pools_lists_the_connections_the_upstream_sees(start_admin_proxy):
    """/pools shows one row per connection the upstream has open, in the right state, with the
    requests each one served (matched against X-Upstream-Conn on the responses)."""
    tetherd, upstream, admin = start_admin_proxy()
    served = collections.Counter()
    lock = threading.Lock()

    def slow(i):
        resp = fetch(tetherd.port, "GET", f"/slow/{i}", [("X-Delay-Ms", "1500")])
        with lock:
            served[resp.conn_id] += 1

    workers = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    # While the four slow requests are in flight, four connections are active.
    pools = wait_for(
        lambda: (p := admin_json(admin, "/pools"))["connections"] and
        sum(c["state"] == "active" for c in p["connections"]) == 4 and p, 5,
        "four active connections")
    for t in workers:
        t.join()
    for j in range(30):
        resp = fetch(tetherd.port, "GET", f"/fast/{j}")
        served[resp.conn_id] += 1

    pools = admin_json(admin, "/pools")["connections"]
    up_side = upstream.stats()
    assert len(pools) == up_side["connections_open"] == len(served)
    assert all(c["state"] == "idle" for c in pools)
    assert all(c["upstream"] == "app" for c in pools)
    assert all(c["endpoint"] == f"127.0.0.1:{upstream.port}" for c in pools)
    assert len({c["id"] for c in pools}) == len(pools)
    assert {c["worker"] for c in pools} <= {0, 1}
    assert all(c["age_ms"] >= c["idle_ms"] >= 0 for c in pools)
    assert all(isinstance(c["socket_memory_bytes"], int) for c in pools)
    # The multiset of per-connection request counts matches what the upstream served.
    assert sorted(c["requests"] for c in pools) == sorted(served.values())
    assert sum(c["requests"] for c in pools) == up_side["requests"] == 34


def test_health_ready_config_and_errors(start_admin_proxy):
    tetherd, upstream, admin = start_admin_proxy(upstream_cfg="min_idle = 2")
    resp = admin_get(admin, "/healthz")
    assert (resp.status, resp.body) == (200, b"ok\n")
    # Ready once listeners are bound and min_idle connections are warm.
    wait_for(lambda: admin_get(admin, "/ready").status == 200, 5, "/ready")
    assert upstream.stats()["connections_open"] >= 2
    resp = admin_get(admin, "/config")
    assert resp.status == 200
    assert f"admin = 127.0.0.1:{admin}\n" in resp.text
    assert "[upstream app]\n" in resp.text and "min_idle = 2\n" in resp.text
    assert "max_connections = 256\n" in resp.text  # defaults filled in
    assert admin_get(admin, "/nope").status == 404
    resp = admin_get(admin, "/metrics", method="POST")
    assert resp.status == 405 and resp.header("Allow") == "GET, HEAD"
    resp = admin_get(admin, "/stats", method="HEAD")
    assert resp.status == 200 and resp.body == b"" and int(resp.header("Content-Length")) > 0


def test_silent_admin_connections_do_not_delay_healthz(start_admin_proxy):
    """Regression: the admin endpoint served one connection at a time, so one silent local
    connection delayed /healthz by 5 s (a failed Kubernetes probe)."""
    _, _, admin = start_admin_proxy()
    silent = [socket.create_connection(("127.0.0.1", admin), timeout=5) for _ in range(4)]
    try:
        silent[0].sendall(b"GET /metrics HTTP/1.1\r\nHost:")  # half a head, then nothing
        time.sleep(0.1)
        for _ in range(3):
            start = time.monotonic()
            resp = admin_get(admin, "/healthz")
            assert resp.status == 200
            assert time.monotonic() - start < 0.5
    finally:
        for sock in silent:
            sock.close()


def test_ready_waits_for_prewarming(start_admin_proxy):
    """An upstream that refuses connections cannot be pre-warmed: /ready says 503 and why, then
    200 once the pre-warm deadline (connect_timeout + 1 s) has passed, so a dead upstream does
    not keep the whole sidecar out of service."""
    dead = f"http://127.0.0.1:{free_port()}"
    tetherd, _, admin = start_admin_proxy(upstream_cfg="min_idle = 2\nconnect_timeout = 2s",
                                          url=dead)
    started = time.monotonic()
    resp = admin_get(admin, "/ready")
    assert resp.status == 503 and b"pre-warming upstream app" in resp.body, resp
    samples = parse_prom(scrape(admin))
    assert metric(samples, "tether_ready") == 0
    wait_for(lambda: admin_get(admin, "/ready").status == 200, 8, "/ready after the deadline")
    assert time.monotonic() - started >= 1.5
    assert b"not pre-warmed" in admin_get(admin, "/ready").body


def run_top(*args, timeout=20):
    return subprocess.run([str(tether_binary()), "top", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_top_once_shows_the_upstream_row(start_admin_proxy):
    tetherd, upstream, admin = start_admin_proxy()
    stop = threading.Event()
    sent = collections.Counter()

    def load():
        while not stop.is_set():
            fetch(tetherd.port, "GET", "/top")
            sent["n"] += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        result = run_top("--once", "--admin", f"127.0.0.1:{admin}")
        json_result = run_top("--once", "--json", "--admin", f"127.0.0.1:{admin}")
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tetherd ") and "ready" in lines[0]
    assert lines[1].startswith("clients: ")
    assert lines[2].split() == ["UPSTREAM", "REQ/S", "CONN/S", "REUSE%", "ACT", "IDLE", "AGE",
                                "P50", "P99", "QUE", "5XX/S", "SKMEM"]
    assert max(len(line) for line in lines) <= 80, result.stdout
    index = next(i for i, line in enumerate(lines) if line.startswith("app "))
    fields = lines[index].split()
    assert float(fields[1]) > 10  # req/s under the load above
    assert 0 <= float(fields[3]) <= 100  # reuse %
    assert re.fullmatch(r"\d+[KMG]?", fields[-1]), fields  # socket memory
    assert lines[index + 1] == f"  -> 127.0.0.1:{upstream.port}  UP 1/1"  # endpoints up

    assert json_result.returncode == 0, json_result.stderr
    snap = json.loads(json_result.stdout)
    (app,) = snap["upstreams"]
    assert app["name"] == "app" and app["requests_per_second"] > 10
    assert app["new_connections_per_second"] < app["requests_per_second"]  # pooled
    assert app["reuse_percent"] > 50
    assert app["p50_ms"] is not None and app["p99_ms"] >= app["p50_ms"]
    assert 0.5 <= snap["interval_seconds"] <= 3


def test_top_without_tetherd_says_so():
    port = free_port()
    result = run_top("--once", "--admin", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "cannot reach tetherd" in result.stderr and "connection refused" in result.stderr
    assert result.stdout == ""
    result = run_top("--once", "--admin", "nonsense")
    assert result.returncode == 2


@pytest.mark.parametrize("value,ok", [("1", True), ("0.5", True), ("500ms", True), ("2s", True),
                                      ("1m", True), ("0", False), ("2h", False), ("soon", False),
                                      ("-1", False)])
def test_top_interval_accepts_what_its_message_says(value, ok):
    """Every example the error message gives is accepted; the rest is refused with it."""
    result = run_top("--once", "--interval", value, "--admin", f"127.0.0.1:{free_port()}")
    if ok:
        assert result.returncode == 1 and "cannot reach tetherd" in result.stderr, result.stderr
    else:
        assert result.returncode == 2
        message = result.stderr
        assert "--interval: expected a duration above 0 and up to 1h" in message, message
        examples = re.search(r"\(examples: ([^)]*)\)", message).group(1).split(", ")
        for example in examples:
            again = run_top("--once", "--interval", example, "--admin",
                            f"127.0.0.1:{free_port()}")
            assert again.returncode == 1, (example, again.stderr)
    assert subprocess.run([str(tether_binary()), "version"], capture_output=True,
                          text=True).stdout.startswith("tether ")


@pytest.mark.parametrize("address", ["0.0.0.0:{port}", "[::]:{port}"])
def test_admin_refuses_a_non_loopback_address(tmp_path, address):
    """The admin endpoint exposes internals: a non-loopback address stops startup unless
    admin_allow_remote = yes. (The allowed case is checked with --check only: tests bind
    127.0.0.1 alone.)"""
    admin = address.format(port=free_port())
    base = (f"[tether]\nworkers = 1\nadmin = {admin}\n{{allow}}\n"
            f"[upstream app]\nurl = http://127.0.0.1:9\nlisten = 127.0.0.1:{free_port()}\n")
    refused = tmp_path / "refused.ini"
    refused.write_text(base.format(allow=""))
    for args in (["--check", "-c", str(refused)], ["-c", str(refused)]):
        result = subprocess.run([str(tetherd_binary()), *args], capture_output=True, text=True,
                                timeout=10)
        assert result.returncode == 2, result
        # (The line named is where validation ran, not yet the admin key's own line 3.)
        assert re.search(rf"{re.escape(str(refused))}:\d+: admin: not a loopback address",
                         result.stderr), result.stderr
        assert "admin_allow_remote" in result.stderr
    allowed = tmp_path / "allowed.ini"
    allowed.write_text(base.format(allow="admin_allow_remote = yes"))
    result = subprocess.run([str(tetherd_binary()), "--check", "-c", str(allowed)],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


def test_admin_port_taken_stops_startup(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "t.ini"
        path.write_text(f"[tether]\nworkers = 1\nadmin = 127.0.0.1:{port}\n\n[upstream app]\n"
                        f"url = http://127.0.0.1:9\nlisten = 127.0.0.1:{free_port()}\n")
        result = subprocess.run([str(tetherd_binary()), "-c", str(path)], capture_output=True,
                                text=True, timeout=10)
    assert result.returncode == 1
    assert f"admin: cannot listen on 127.0.0.1:{port}" in result.stderr


PROMETHEUS = "/usr/bin/prometheus"


def promql_of_docs():
    """Every query in docs/metrics.md's ```promql blocks (comments dropped, continuations
    joined)."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    queries = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        current = []
        for line in block.splitlines() + [""]:
            if line.startswith("#") or not line.strip():
                if current:
                    queries.append(" ".join(current))
                current = []
            elif line.startswith("  ") and current:
                current.append(line.strip())
            else:
                if current:
                    queries.append(" ".join(current))
                current = [line.strip()]
    return queries


def test_dashboard_and_documented_queries_return_data(start_admin_proxy, tmp_path):
    """A real Prometheus scrapes tetherd under load; every query of the Grafana dashboard and of
    docs/metrics.md parses and returns data."""
    import os
    import signal
    import urllib.parse
    import urllib.request

    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus not installed")
    tetherd, upstream, admin = start_admin_proxy(
        upstream_args=("--max-requests-per-conn", "20"), upstream_cfg="max_connections = 2")
    prom_port = free_port()
    (tmp_path / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: tether\n"
        f"  static_configs:\n  - targets: ['127.0.0.1:{admin}']\n")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path}/prom.yml", f"--storage.tsdb.path={tmp_path}/tsdb",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()

    def load(_):
        i = 0
        while not stop.is_set():
            i += 1
            fetch(tetherd.port, "GET", "/", [("X-Delay-Ms", "3" if i % 3 == 0 else "0"),
                                             ("X-Status", "503" if i % 11 == 0 else "200")])

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(load, i) for i in range(4)]
            time.sleep(9)
            stop.set()
            for f in futures:
                f.result()

        def query(expr):
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode(
                {"query": expr})
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer = json.load(resp)
            assert answer["status"] == "success", (expr, answer)
            return answer["data"]["result"]

        dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "tether.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(exprs) >= 15
        exprs += promql_of_docs()
        empty = []
        for expr in exprs:
            expr = (expr.replace("$__rate_interval", "5s").replace("$upstream", ".*")
                    .replace("$instance", ".*").replace("$job", ".*")
                    .replace("[15m]", "[8s]").replace("[5m]", "[5s]"))
            # TLS panels have no data here (a plain upstream): they must still parse.
            if not query(expr) and "tether_upstream_tls_" not in expr:
                empty.append(expr)
        assert not empty, "queries without data:\n" + "\n".join(empty)
        reuse = query('sum(rate(tether_upstream_requests_reused_total[5s])) / '
                      'sum(rate(tether_upstream_requests_sent_total[5s]))')
        assert 0.9 <= float(reuse[0]["value"][1]) <= 1.0  # 19 of every 20 requests reused
    finally:
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()


def test_access_log_reused_is_false_on_a_prewarmed_connections_first_request(
        start_upstream, start_tetherd, tmp_path):
    """reused means "served a request before", as requests_reused_total counts it: a connection
    opened ahead of demand (min_idle) that then waited idle is not reused on its first request."""
    upstream = start_upstream()
    log = tmp_path / "access.log"
    port, admin = free_port(), free_port()
    tetherd = start_tetherd(f"[tether]\nworkers = 1\naccess_log = {log}\n"
                            f"admin = 127.0.0.1:{admin}\n"
                            f"[upstream app]\nurl = http://127.0.0.1:{upstream.port}\n"
                            f"listen = 127.0.0.1:{port}\nmin_idle = 1\n")
    wait_for(lambda: _answers(admin), 5, "the admin endpoint")
    wait_for(lambda: admin_json(admin, "/stats")["upstreams"][0]["connections"]["idle"] == 1, 5,
             "the pre-warmed connection to be idle")
    assert fetch(port).conn_id == 1
    assert fetch(port).conn_id == 1
    wait_for(lambda: log.exists() and log.read_text().count("\n") == 2, 3, "two log lines")
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert (first["reused"], second["reused"]) == (False, True)
    assert admin_json(admin, "/stats")["upstreams"][0]["requests_reused_total"] == 1


def test_access_log_marks_a_response_cut_after_its_head(start_upstream, start_tetherd, tmp_path):
    """An upstream that closes in the middle of a body: the client already has the 200 head, so
    tetherd can only close; the access log line says the response was cut (and a complete one
    does not), beside the response_partial close in the metrics."""
    upstream = start_upstream()
    log = tmp_path / "access.log"
    port, admin = free_port(), free_port()
    start_tetherd(f"[tether]\nworkers = 1\naccess_log = {log}\nadmin = 127.0.0.1:{admin}\n"
                  f"[upstream app]\nurl = http://127.0.0.1:{upstream.port}\n"
                  f"listen = 127.0.0.1:{port}\n")
    size = 200000
    assert fetch(port, "GET", "/whole", [("X-Body-Size", str(size))]).status == 200
    with Client(port) as client:
        client.send(build_request("GET", "/cut", [("X-Body-Size", str(size)),
                                                  ("X-Close-Mid-Response", "1")]))
        assert client.read_head().status == 200
        body = client.read_until_closed()
    assert len(body) < size
    wait_for(lambda: log.exists() and log.read_text().count("\n") == 2, 3, "two log lines")
    whole, cut = [json.loads(line) for line in log.read_text().splitlines()]
    assert "cut" not in whole and whole["bytes"] > size
    assert cut["cut"] is True and cut["status"] == 200 and cut["bytes"] < size
    assert cut["generated_by"] == "upstream" and "error" not in cut
    metrics = fetch(admin, "GET", "/metrics").body.decode()
    assert re.search(r'connections_closed_total\{upstream="app",[^}]*reason="response_partial"\} 1',
                     metrics), metrics


def test_access_log_writes_one_json_line_per_request(start_upstream, start_tetherd, tmp_path):
    upstream = start_upstream()
    log = tmp_path / "access.log"
    port = free_port()
    tetherd = start_tetherd(f"[tether]\nworkers = 1\naccess_log = {log}\n"
                            f"[upstream app]\nurl = http://127.0.0.1:{upstream.port}\n"
                            f"listen = 127.0.0.1:{port}\n")
    assert fetch(port, "GET", "/first?q=1").status == 200
    assert fetch(port, "GET", "/second", [("X-Status", "404")]).status == 404
    assert fetch(port, "CONNECT", "example.com:443").status == 405
    # Lines are buffered and written within a second.
    wait_for(lambda: log.exists() and log.read_text().count("\n") == 3, 3, "three log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    first, second, refused = lines
    assert (first["method"], first["path"], first["status"]) == ("GET", "/first?q=1", 200)
    assert first["upstream"] == "app" and first["endpoint"] == f"127.0.0.1:{upstream.port}"
    assert first["bytes"] > 0 and first["duration_ms"] >= 0 and first["reused"] is False
    assert (second["status"], second["reused"], second["retried"]) == (404, True, False)
    assert refused["status"] == 405 and "upstream" not in refused and refused["bytes"] > 0
    assert all(line["client"].startswith("127.0.0.1:") and "time" in line for line in lines)
