"""Bounded client connections: max_client_connections, and running out of descriptors.

At the cap tetherd stops accepting and the kernel's backlog holds the rest; out of descriptors
(EMFILE) a worker stops polling its listeners for a short backoff instead of spinning on a
listener that stays readable; the admin endpoint answers throughout; service resumes when
descriptors free. CPU is read from /proc/PID/stat, with bounds far from a spinning worker
(2 s of CPU per spinning core over the 2 s measured)."""

import os
import resource
import socket
import time

import pytest

from conftest import dedicated_config
from helpers import fetch, free_port, get_json, wait_for

HALF_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\n"  # the blank line never comes


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_over(pid, seconds=2.0):
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def fd_limit(n):
    """preexec_fn: tetherd starts with a descriptor limit of n (soft and hard)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@pytest.fixture
def many_fds():
    """Room in this process for the test's own connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2500:
        pytest.skip(f"descriptor hard limit {hard} too low for the test's clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard > 0 else 4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_half_heads(port, count):
    """count client connections, each holding half a request head."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(sock)
    time.sleep(0.2)  # handshakes done: the connections sit in the backlog or in tetherd
    for sock in socks:
        try:
            sock.send(HALF_HEAD)
        except OSError:
            pass
    return socks


def downstream(admin):
    """/stats' downstream section; waits for the admin endpoint to answer (it starts beside the
    listeners, and a loaded machine may let the first connect come before it)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return get_json(admin, "/stats")["downstream"]
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def served(port):
    try:
        return fetch(port, "GET", "/fresh", [("Connection", "close")]).status == 200
    except OSError:
        return False


def test_out_of_descriptors_never_spins(start_upstream, start_tetherd, many_fds):
    """Issue 12's attack: a 512-descriptor limit and 1,000 half-head connections, with
    max_client_connections set above what the limit allows, so that accept() meets EMFILE."""
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    tetherd = start_tetherd(dedicated_config(
        upstream.port, port, tether_cfg=f"admin = 127.0.0.1:{admin}\n"
        "max_client_connections = 5000\nclient_header_timeout = 60s", workers=2),
        preexec_fn=fd_limit(512))
    socks = open_half_heads(port, 1000)
    try:
        wait_for(lambda: downstream(admin)["accept_errors_total"]["emfile"] > 0, 5,
                 "accept() to run out of descriptors")
        cpu = cpu_over(tetherd.proc.pid)
        assert cpu < 0.5, f"tetherd used {cpu:.2f} s of CPU in 2 s while out of descriptors"
        # The admin endpoint answers with every descriptor taken (its reserve).
        assert fetch(admin, "GET", "/healthz", [("Connection", "close")]).status == 200
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: served(port), 10, "a fresh client to be served once descriptors free")
    assert all(served(port) for _ in range(20))
    assert "Too many open files: not accepting for" in tetherd.log()


def test_client_connection_cap_holds_the_rest_in_the_backlog(start_upstream, start_tetherd,
                                                             many_fds):
    """At max_client_connections tetherd accepts no more; a waiting client is served as soon
    as a connection closes, on whichever worker it waits."""
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    tetherd = start_tetherd(dedicated_config(
        upstream.port, port, tether_cfg=f"admin = 127.0.0.1:{admin}\n"
        "max_client_connections = 20\nclient_header_timeout = 60s", workers=2))
    socks = open_half_heads(port, 40)
    try:
        wait_for(lambda: downstream(admin)["connections_active"] == 20, 5,
                 "20 connections to be accepted")
        cpu = cpu_over(tetherd.proc.pid, 1.0)
        assert cpu < 0.25, f"tetherd used {cpu:.2f} s of CPU in 1 s at the cap"
        stats = downstream(admin)
        assert stats["connections_active"] == 20 and stats["connections_max"] == 20
        assert stats["limit_reached_total"] > 0
        assert sum(stats["accept_errors_total"].values()) == 0
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: served(port), 10, "a fresh client to be served below the cap")
    assert all(served(port) for _ in range(20))
    assert "max_client_connections (20) reached" in tetherd.log()


def test_default_cap_leaves_room_below_the_descriptor_limit(start_upstream, start_tetherd):
    """Without max_client_connections, the cap is the descriptor limit less a reserve for the
    upstream connections (max_connections) and the admin endpoint."""
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    tetherd = start_tetherd(dedicated_config(
        upstream.port, port, upstream_cfg="max_connections = 100",
        tether_cfg=f"admin = 127.0.0.1:{admin}"), preexec_fn=fd_limit(512))
    cap = downstream(admin)["connections_max"]
    assert 200 <= cap <= 512 - 100 - 64, cap
    assert f"max_client_connections {cap} (auto: descriptor limit 512" in tetherd.log()
