"""`make prove` (bench/prove.py): its two hosts, its network delay, its figures and a short run.

The figure functions are checked on inputs made by hand, so every value is known. The rest uses
real network namespaces and is skipped, with the reason, where this machine cannot make them.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tetherd_binary

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from harness import netns  # noqa: E402
from harness.procs import Services  # noqa: E402
from prove import figures, report  # noqa: E402

PYTHON = "/usr/bin/python3"
NO_NETNS = netns.available()
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"no network namespaces: {NO_NETNS}")


def test_connections_count_opens_ages_and_lifetimes_inside_the_window(tmp_path):
    log = tmp_path / "relay.log"
    lines = [
        {"id": 1, "event": "open", "t": 99.0},  # before the window, open throughout
        {"id": 2, "event": "open", "t": 100.5},
        {"id": 2, "event": "close", "t": 100.6, "up_bytes": 1, "down_bytes": 1},
        {"id": 3, "event": "open", "t": 101.2},
        {"id": 3, "event": "close", "t": 101.3, "up_bytes": 1, "down_bytes": 1},
        {"id": 4, "event": "open", "t": 103.0},  # after the window
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n{\"id\": 5, \"ev")
    conns = figures.connections(figures.read_relay_log(log), figures.Window(100.0, 102.0))
    assert conns.opened == 2
    assert conns.per_minute == 60.0
    assert conns.per_second == [1, 1]
    assert abs(conns.mean_lifetime_s - 0.1) < 1e-9
    # Sampled at 101 and 102 s, only connection 1 is open: 2 s and 3 s old.
    assert abs(conns.mean_age_s - 2.5) < 1e-9
    assert conns.open_at_end == 1


def test_calls_measure_from_the_due_time_inside_the_window():
    entries = [(0.5, 100.0, 200)] + [(1.0 + i / 100, float(i + 1), 200) for i in range(100)]
    entries.append((1.5, 9999.0, 0))  # a failed call counts as an error, not a latency
    calls = figures.calls(entries, warmup_s=1.0, seconds=5.0)
    assert calls.count == 101 and calls.errors == 1
    assert calls.p50_ms == 50.0 and calls.p99_ms == 99.0
    assert calls.p99_per_5s == [99.0]


SS_SAMPLE = """\
ESTAB 0 0 198.18.0.1:40000 198.18.0.2:443
\t skmem:(r100,rb131072,t0,tb87040,f3996,w0,o0,bl0,d0)
TIME-WAIT 0 0 198.18.0.1:40002 198.18.0.2:443
ESTAB 0 0 127.0.0.1:15001 127.0.0.1:50000 skmem:(r0,rb131072,t0,tb2626560,f0,w200,o8,bl0,d0)
TIME-WAIT 0 0 127.0.0.1:50002 127.0.0.1:15001
"""


def test_ss_samples_give_states_memory_and_the_pair_between_the_hosts():
    sample = figures.parse_ss(SS_SAMPLE, "198.18.0.2:443")
    assert sample.by_state == {"ESTAB": 2, "TIME-WAIT": 2}
    assert sample.buffer_bytes == 100 + 3996 + 200 + 8
    assert (sample.time_wait_to, sample.established_to, sample.pair_sockets) == (1, 1, 1)
    assert sample.pair_buffer_bytes == 4096
    assert figures.socket_memory(sample, 2000, 200) == 4304 + 2 * 2000 + 2 * 200
    assert figures.pair_memory(sample, 2000, 200) == 4096 + 2000 + 200


def test_the_promise_table_sets_each_figure_beside_the_mission():
    def run(name, per_minute, age, p99, cpu, pair_mem, host_b_mem):
        return {"run": name, "calls": {"count": 10, "errors": 0, "p50_ms": 1.0, "p99_ms": p99},
                "connections": {"per_minute": per_minute, "mean_age_s": age},
                "hosts": {"A": {"pair_socket_memory_bytes": pair_mem, "time_wait": 0},
                          "B": {"socket_memory_bytes": host_b_mem}},
                "cpu_cores": {"app": cpu}, "tls": {"handshakes": 1, "resumed": 0}}

    results = [run("straight", 12_000, 0.01, 20.0, 0.5, 200_000, 300_000),
               run("tetherd", 12, 40.0, 8.0, 0.3, 20_000, 60_000)]
    rows = {row[0]: row for row in report.promises({r["run"]: r for r in results})}
    assert rows["connection churn (new connections/min between the hosts)"][3] == "-99.9%"
    assert rows["p99 latency"][3] == "-60.0%"
    assert rows["average connection age"][2] == "0.01 → 40.00 s"
    text = report.table(results, {"rate": 200, "workers": 8, "seconds": 60, "warmup": 10,
                                  "delay_ms": 1})
    assert "−80–95%" in text and "| straight |" in text and "| tetherd |" in text


@needs_netns
def test_two_hosts_reach_each_other_by_name_and_leave_nothing_behind(tmp_path):
    before = set(netns.list_ours())
    server = ("import socket\ns=socket.create_server(('0.0.0.0',7002))\n"
              "c,_=s.accept()\nc.sendall(b'hello from B')\n")
    client = ("import socket,time\n"
              "for _ in range(100):\n"
              "    try: print(socket.create_connection(('upstream.test',7002),1).recv(100)"
              ".decode()); break\n"
              "    except ConnectionRefusedError: time.sleep(0.05)\n")
    with pytest.raises(RuntimeError):
        with netns.TwoHosts({"upstream.test": netns.ADDRESS_B}) as hosts, \
                Services(tmp_path) as services:
            made = {hosts.a, hosts.b}
            assert made <= set(netns.list_ours())
            services.start("server", hosts.run_in(hosts.b, [PYTHON, "-c", server]))
            out = subprocess.run(hosts.run_in(hosts.a, [PYTHON, "-c", client]),
                                 capture_output=True, text=True, timeout=30)
            assert out.stdout.strip() == "hello from B", out.stderr
            raise RuntimeError("the block fails: the hosts must go all the same")
    assert not made & set(netns.list_ours())
    assert set(netns.list_ours()) <= before
    assert not any((netns.NETNS_ETC / name).exists() for name in made)


@needs_netns
def test_the_relay_delays_the_handshake_and_each_direction(tmp_path):
    delay_ms = 20.0
    echo = ("import socket\ns=socket.create_server(('127.0.0.1',7000))\n"
            "while True:\n c,_=s.accept()\n c.sendall(c.recv(100))\n c.close()\n")
    with netns.TwoHosts() as hosts, Services(tmp_path) as services:
        services.start("echo", hosts.run_in(hosts.b, [PYTHON, "-c", echo]))
        services.start("relay", hosts.run_in(hosts.b, [
            PYTHON, str(REPO / "bench" / "prove" / "relay.py"), "--listen",
            f"{hosts.address_b}:7001", "--target", "127.0.0.1:7000", "--delay-ms",
            str(delay_ms), "--log", str(tmp_path / "relay.log")]))
        client = ("import socket,sys,time\n"
                  "for _ in range(100):\n"
                  "    try: c=socket.create_connection((sys.argv[1],7001),1); break\n"
                  "    except OSError: time.sleep(0.05)\n"
                  "t=time.monotonic(); c.sendall(b'ping'); data=c.recv(100)\n"
                  "print(data.decode(), (time.monotonic()-t)*1000)\n")
        out = subprocess.run(hosts.run_in(hosts.a, [PYTHON, "-c", client, hosts.address_b]),
                             capture_output=True, text=True, timeout=30)
        deadline = time.monotonic() + 5  # the relay logs the close once it has relayed the FIN
        while time.monotonic() < deadline and '"close"' not in (tmp_path / "relay.log").read_text():
            time.sleep(0.05)
    assert out.returncode == 0, out.stderr
    data, elapsed_ms = out.stdout.split()
    assert data == "ping"
    # The first bytes wait for the handshake's round trip, then one round trip: 4 x delay.
    assert float(elapsed_ms) >= 4 * delay_ms
    log = figures.read_relay_log(tmp_path / "relay.log")
    assert len(log) == 1 and all(c["close"] is not None for c in log.values())


@needs_netns
@pytest.mark.slow
def test_a_short_prove_run_shows_the_figures_move_the_right_way(tmp_path):
    out = tmp_path / "results"
    started = time.monotonic()
    proc = subprocess.Popen(
        [PYTHON, str(REPO / "bench" / "prove.py"), "--seconds", "5", "--warmup", "2",
         "--rate", "50", "--workers", "4", "--tetherd", str(tetherd_binary()), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert not [name for name in netns.list_ours() if f"-{proc.pid}-" in name]
    assert time.monotonic() - started < 90
    runs = {r["run"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    straight, tetherd, session = runs["straight"], runs["tetherd"], runs["session"]
    for run in runs.values():
        assert run["calls"]["errors"] == 0 and run["calls"]["count"] == 250
    # Every straight call is a new connection and a full TLS handshake; through tetherd almost
    # none are (its pre-warmed connections opened before the measured window).
    assert straight["connections"]["opened"] >= 200
    assert tetherd["connections"]["opened"] <= straight["connections"]["opened"] * 0.05
    assert straight["tls"]["handshakes"] >= 200 and straight["tls"]["resumed"] == 0
    assert tetherd["tls"]["handshakes"] <= 10
    assert tetherd["connections"]["mean_age_s"] > 2.0 > straight["connections"]["mean_age_s"]
    assert straight["hosts"]["A"]["time_wait_to_service"] > 50
    assert tetherd["hosts"]["A"]["time_wait_to_service"] == 0
    assert session["connections"]["opened"] <= 10
    table = (out / "table.md").read_text()
    assert table.count("−80–95%") == 1
    # tether churn saw the same: the pair to the service churns in the straight run only.
    assert "tether churn --compare" in table and "to 198.18.0.2:443" in table
    assert (out / "chart.png").stat().st_size > 0
