"""TLS origination: the client speaks plain HTTP to tetherd, tetherd speaks TLS to the upstream.

The upstream is upstream.py in TLS mode: its X-Upstream-Tls-* response headers say what each
connection's handshake was (version, resumed, client certificate) and its /__stats "tls" object
counts handshakes, resumptions, failures, SNI and close_notify answers. One test runs against
nginx for realism. The certificates come from the session fixture tls_certs (tlscerts.py).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass

import pytest

from helpers import (Client, ConnectionClosed, Sender, assert_tether_error, build_request,
                     chunk_encode, expect_100_continue, fetch, free_port, sha256, tetherd_binary,
                     wait_for)
from test_metrics import PROMTOOL, admin_json, metric, parse_prom, scrape
from upstream import body_pattern

EIGHT_MIB = 8 << 20
NGINX = "/usr/sbin/nginx"
# What nginx saw, in every response body of the nginx tests.
NGINX_BODY = ("reused=$ssl_session_reused protocol=$ssl_protocol conn=$connection "
              "sni=$ssl_server_name alpn=$ssl_alpn_protocol")
UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]
# Handshake failure: the server certificate's defect -> (phrase in the 502, metric cause).
VERIFY_FAILURES = {
    "untrusted": ("certificate not trusted", "untrusted"),
    "wrong_name": ("name mismatch", "name_mismatch"),
    "expired": ("certificate expired", "expired"),
}
CAUSES = ("untrusted", "name_mismatch", "expired", "protocol_version", "timeout", "rejected",
          "closed", "other")


@dataclass
class TlsSetup:
    tetherd: object
    upstream: object
    admin: int = None  # the admin port, when asked for


@pytest.fixture
def start_tls(start_upstream, start_tetherd, tls_certs):
    """start_tls(server="localhost", upstream_args=(), upstream_cfg="", tether_cfg="",
    host="127.0.0.1", trust=True, admin=False, workers=1) -> TlsSetup

    upstream.py serving HTTPS with the certificate tls_certs.<server>, behind upstream "app" on a
    dedicated tetherd port, url https://<host>:<port>; `trust` adds tls_ca = the test CA;
    `admin` enables the admin endpoint."""

    def start(server="localhost", upstream_args=(), upstream_cfg="", tether_cfg="",
              host="127.0.0.1", trust=True, admin=False, workers=1):
        pair = getattr(tls_certs, server)
        upstream = start_upstream("--tls-cert", pair.cert, "--tls-key", pair.key,
                                  *upstream_args)
        admin_port = free_port() if admin else None
        config = tls_config(f"https://{host}:{upstream.port}",
                            (f"tls_ca = {tls_certs.ca.cert}\n" if trust else "") + upstream_cfg,
                            tether_cfg, admin_port, workers)
        tetherd = start_tetherd(config)
        if admin:
            wait_for(lambda: admin_get_status(admin_port, "/healthz") == 200, 5,
                     "the admin endpoint")
        return TlsSetup(tetherd, upstream, admin_port)

    return start


def tls_config(url, upstream_cfg="", tether_cfg="", admin_port=None, workers=1):
    admin = f"admin = 127.0.0.1:{admin_port}\n" if admin_port else ""
    return (f"[tether]\nworkers = {workers}\n{admin}{tether_cfg}\n\n"
            f"[upstream app]\nurl = {url}\nlisten = 127.0.0.1:{free_port()}\n{upstream_cfg}\n")


def tls_stats(upstream):
    return upstream.stats()["tls"]


def admin_get_status(port, path):
    try:
        return fetch(port, "GET", path, [("Connection", "close")]).status
    except OSError:
        return None


def app_stats(admin):
    (app,) = admin_json(admin, "/stats")["upstreams"]
    return app


def log_lines(tetherd, *words):
    """tetherd's log lines that mention every one of `words` (case-insensitively)."""
    return [line for line in tetherd.log().splitlines()
            if all(word.lower() in line.lower() for word in words)]


# --- the proxying matrix, over TLS ----------------------------------------------------------------


def test_methods_and_framings_share_one_tls_connection(start_tls):
    """One keep-alive client: every method and framing, all on one upstream TLS connection."""
    s = start_tls()
    chunked_body = body_pattern(100_000)
    with Client(s.tetherd.port) as client:
        get = client.request("GET", "/g?q=1", [("X-Body-Size", "1234")])
        head = client.request("HEAD", "/h", [("X-Body-Size", "5000")])
        post = client.request("POST", "/p", [("X-Request-Id", "post")], b"posted body")
        put = client.request("PUT", "/u", [("X-Request-Id", "put"),
                                           ("Transfer-Encoding", "chunked")],
                             chunk_encode(chunked_body, 7000))
        delete = client.request("DELETE", "/d")
        chunked = client.request("GET", "/c", [("X-Body-Size", "70000"), ("X-Chunked", "1")])
        no_content = client.request("GET", "/204", [("X-Status", "204")])
        not_modified = client.request("GET", "/304", [("X-Status", "304")])
        after = client.request("GET", "/after")
    responses = [get, head, post, put, delete, chunked, no_content, not_modified, after]
    assert [r.status for r in responses] == [200] * 6 + [204, 304, 200]
    assert [r.header("X-Upstream-Method") for r in responses[:5]] == [
        "GET", "HEAD", "POST", "PUT", "DELETE"]
    assert get.header("X-Upstream-Target") == "/g?q=1"
    assert get.body == body_pattern(1234)
    assert (head.header("Content-Length"), head.body) == ("5000", b"")
    assert post.header("X-Request-Body-Sha256") == sha256(b"posted body")
    assert put.header("X-Request-Body-Sha256") == sha256(chunked_body)
    assert chunked.body == body_pattern(70000)
    assert after.body == b"ok\n"  # a bodiless response answered with a body would show here
    assert {r.conn_id for r in responses} == {1}
    assert {r.header("X-Upstream-Tls-Version") for r in responses} == {"TLSv1.3"}
    stats = s.upstream.stats()
    assert stats["connections_accepted"] == 1
    assert stats["bodies"]["put"] == [{"sha256": sha256(chunked_body), "size": 100_000,
                                       "conn": 1}]
    tls = stats["tls"]
    assert (tls["handshakes"], tls["resumed"], tls["failures"]) == (1, 0, 0)
    assert tls["alpn"] == {"http/1.1": 1}, "tetherd must offer ALPN http/1.1 (and not h2)"


def test_fresh_client_connections_reuse_one_tls_connection(start_tls):
    s = start_tls()
    conn_ids = {fetch(s.tetherd.port, "GET", f"/{i}").conn_id for i in range(100)}
    assert conn_ids == {1}
    stats = s.upstream.stats()
    assert (stats["connections_accepted"], stats["requests"]) == (1, 100)
    assert stats["tls"]["handshakes"] == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("direction", ["download", "upload", "echo"])
def test_large_bodies_over_tls(start_tls, direction, chunked):
    """8 MiB down, up, and both ways at once (the upstream echoes while it reads)."""
    s = start_tls()
    body = body_pattern(EIGHT_MIB)
    headers = [("X-Request-Id", "big")]
    if direction == "download":
        headers += [("X-Body-Size", str(EIGHT_MIB))] + ([("X-Chunked", "1")] if chunked else [])
        request = build_request("GET", "/", headers)
    else:
        if direction == "echo":
            headers.append(("X-Echo", "1"))
        if chunked:
            request = build_request("POST", "/", headers + [("Transfer-Encoding", "chunked")],
                                    chunk_encode(body, 65_536))
        else:
            request = build_request("POST", "/", headers, body)
    with Client(s.tetherd.port) as client:
        sender = Sender(client, request)
        resp = client.read_response()
        sender.join()
    # (The client connection may close after an echo: its response began before the request
    # was read whole. The upstream connection is reused either way.)
    after = fetch(s.tetherd.port, "GET", "/after")
    assert resp.status == 200
    if direction == "upload":
        assert resp.header("X-Request-Body-Sha256") == sha256(body)
    else:
        assert len(resp.body) == EIGHT_MIB and sha256(resp.body) == sha256(body)
    if direction != "download":
        assert s.upstream.stats()["bodies"]["big"] == [{"sha256": sha256(body),
                                                         "size": EIGHT_MIB, "conn": 1}]
    assert after.conn_id == resp.conn_id == 1


def test_slow_reader_gets_every_byte_over_tls(start_tls):
    """Back-pressure: the client stops reading, so tetherd stops reading the upstream with
    decrypted bytes possibly held inside OpenSSL; when the client reads again, all of them must
    come (none forgotten for want of a readable socket)."""
    s = start_tls()
    size = 4 << 20
    with Client(s.tetherd.port) as client:
        client.send(build_request("GET", "/", [("X-Body-Size", str(size))]))
        time.sleep(0.3)  # every buffer on the way fills up
        resp = client.read_head()
        first = client.read_exact(size // 3)
        time.sleep(0.3)
        rest = client.read_exact(size - size // 3)
    assert resp.status == 200
    assert sha256(first + rest) == sha256(body_pattern(size))


@pytest.mark.parametrize("framing", [[], [("X-Chunked", "1")]], ids=["content-length", "chunked"])
def test_upstream_closing_mid_response_is_never_complete_over_tls(start_tls, framing):
    """The upstream sends half the body, then close_notify and FIN: an orderly TLS close that
    still truncates the message. The client must see the truncation, never a complete-looking
    response."""
    s = start_tls()
    headers = [("X-Close-Mid-Response", "1"), ("X-Body-Size", "200000")] + framing
    with Client(s.tetherd.port) as client:
        client.send(build_request("GET", "/", headers))
        try:
            resp = client.read_response()
        except ConnectionClosed:
            resp = None
    if resp is not None:
        assert_tether_error(resp, 502)
    assert fetch(s.tetherd.port).status == 200


def test_close_delimited_response_over_tls(start_tls):
    """No Content-Length, no chunking: the body ends with the upstream's close_notify."""
    s = start_tls()
    resp = fetch(s.tetherd.port, headers=[("X-Close-Delimited", "1"), ("X-Body-Size", "300000")])
    assert resp.status == 200
    assert resp.body == body_pattern(300000)
    assert fetch(s.tetherd.port).conn_id == 2


def test_bytes_after_a_response_never_reach_the_next_request_over_tls(start_tls):
    """Bytes the framing does not account for arrive as a TLS record of their own, which OpenSSL
    may already hold when the response is done (neither the buffer nor epoll shows them). A
    request queued behind (max_connections = 1) must not take the connection and read them as
    its response: it gets its own response, on a new connection."""
    s = start_tls(upstream_cfg="max_connections = 1\n")
    for _ in range(3):
        with Client(s.tetherd.port) as first, Client(s.tetherd.port) as second:
            first.send(build_request("GET", "/first", [("X-Extra-Bytes", "40"),
                                                       ("X-Delay-Ms", "150")]))
            time.sleep(0.05)  # the first request holds the only connection: the second queues
            second.send(build_request("GET", "/second"))
            a, b = first.read_response(), second.read_response()
        assert a.status == 200 and a.body == b"ok\n"
        assert b.status == 200 and b.body == b"ok\n", b
        assert b.header("X-Upstream-Target") == "/second"
        assert b.header("X-Upstream-Conn") != a.header("X-Upstream-Conn")


def test_close_delimited_body_cut_without_close_notify_is_not_complete(start_tls):
    """A body delimited by the close, ended by a bare FIN with no close_notify, may have been
    cut on the path: the client sees a reset, never a complete-looking response."""
    s = start_tls()
    headers = [("X-Close-Delimited", "1"), ("X-Body-Size", "3000"), ("X-No-Close-Notify", "1")]
    with Client(s.tetherd.port) as client:
        client.send(build_request("GET", "/", headers))
        received = bytearray()
        with pytest.raises(ConnectionResetError):
            while chunk := client.sock.recv(65536):
                received += chunk
            raise AssertionError(f"a clean end after {len(received)} bytes: looks complete")
    # With close_notify the same body is complete.
    resp = fetch(s.tetherd.port, headers=headers[:2])
    assert resp.status == 200 and len(resp.body) == 3000


def test_pipelined_requests_over_tls(start_tls):
    s = start_tls()
    requests_bytes = b"".join([
        build_request("GET", "/first", [("X-Delay-Ms", "200")]),
        build_request("POST", "/second", [("X-Request-Id", "p")], b"pipelined body"),
        build_request("GET", "/third", [("X-Body-Size", "70000"), ("X-Chunked", "1")]),
    ])
    with Client(s.tetherd.port) as client:
        client.send(requests_bytes)
        responses = [client.read_response() for _ in range(3)]
    assert [r.header("X-Upstream-Target") for r in responses] == ["/first", "/second", "/third"]
    assert responses[1].header("X-Request-Body-Sha256") == sha256(b"pipelined body")
    assert responses[2].body == body_pattern(70000)
    assert {r.conn_id for r in responses} == {1}
    assert tls_stats(s.upstream)["handshakes"] == 1


def test_expect_100_continue_over_tls(start_tls):
    s = start_tls()
    expect_100_continue(s.tetherd.port)


def test_upgrade_tunnel_over_tls(start_tls):
    s = start_tls()
    payload = body_pattern(256 * 1024)
    with Client(s.tetherd.port) as client:
        resp = client.request("GET", "/ws", UPGRADE)
        assert resp.status == 101
        client.send(b"\x81\x05hello")
        assert client.read_exact(7) == b"\x81\x05hello"
        sender = Sender(client, payload)
        assert client.read_exact(len(payload)) == payload
        sender.join()
    assert s.upstream.stats()["upgrades"] == 1


def test_request_on_a_stale_tls_connection_is_retried(start_tls):
    s = start_tls()
    assert fetch(s.tetherd.port).conn_id == 1
    resp = fetch(s.tetherd.port, "GET", "/retried", [("X-Reset-If-Reused", "1"),
                                                     ("X-Request-Id", "stale")])
    assert resp.status == 200, resp
    assert resp.conn_id == 2
    stats = s.upstream.stats()
    assert stats["resets"] == 1
    assert len(stats["bodies"]["stale"]) == 1


def test_upstream_connection_close_is_honoured_over_tls(start_tls):
    s = start_tls(upstream_args=("--max-requests-per-conn", "3"))
    conn_ids = [fetch(s.tetherd.port).conn_id for _ in range(7)]
    assert conn_ids == [1, 1, 1, 2, 2, 2, 3]
    stats = s.upstream.stats()
    assert stats["connections_accepted"] == 3
    assert stats["resets"] == 0


def test_concurrent_clients_over_tls(start_tls):
    """Handshakes and requests interleaved on two workers under the max_connections cap."""
    s = start_tls(workers=2, upstream_cfg="max_connections = 4\n")
    failures, lock = [], threading.Lock()

    def client_loop(i):
        for j in range(25):
            try:
                resp = fetch(s.tetherd.port, "GET", f"/{i}/{j}", [("X-Body-Size", "20000"),
                                                                  ("X-Delay-Ms", "5")])
                ok = resp.status == 200 and resp.body == body_pattern(20000)
            except OSError as err:
                resp, ok = err, False
            if not ok:
                with lock:
                    failures.append(resp)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures[:3]
    stats = s.upstream.stats()
    assert stats["requests"] == 200
    assert stats["in_flight_peak"] <= 4
    assert stats["tls"]["handshakes"] == stats["connections_accepted"] <= 8
    assert stats["tls"]["failures"] == 0


def test_prewarmed_connections_are_handshaken_and_used(start_tls):
    """min_idle opens TLS connections ahead of demand; the session tickets a TLS 1.3 server
    sends right after the handshake must not make an idle connection look broken."""
    s = start_tls(upstream_cfg="min_idle = 2\n", admin=True)
    wait_for(lambda: admin_get_status(s.admin, "/ready") == 200, 5, "/ready")
    wait_for(lambda: tls_stats(s.upstream)["handshakes"] == 2, 3, "two pre-warmed handshakes")
    time.sleep(0.3)  # the tickets have arrived on the idle connections by now
    conn_ids = {fetch(s.tetherd.port, "GET", f"/{i}").conn_id for i in range(10)}
    assert conn_ids <= {1, 2}
    stats = s.upstream.stats()
    assert stats["connections_accepted"] == 2 and stats["tls"]["handshakes"] == 2
    closed = app_stats(s.admin)["connections"]["closed"]
    assert sum(closed.values()) == 0, closed


def test_prewarming_against_a_failing_handshake_backs_off(start_tls):
    """min_idle toward an upstream whose certificate fails verification must neither spin nor
    flood the log."""
    # Without the breaker, which would answer 503 once 5 handshakes failed: this is about what
    # each failure costs and logs.
    s = start_tls(server="untrusted", upstream_cfg="min_idle = 2\nbreaker_failures = 0\n")
    time.sleep(2)
    attempts = s.upstream.stats()["connections_accepted"]
    assert 1 <= attempts <= 16, f"{attempts} handshakes in 2s"
    assert len(log_lines(s.tetherd, "certificate not trusted")) == 1, s.tetherd.log()
    assert_tether_error(fetch(s.tetherd.port), 502, "certificate not trusted")


# --- names: SNI and verification ------------------------------------------------------------------


def test_name_url_sends_sni_and_is_verified(start_tls):
    """url https://localhost: SNI localhost, the certificate verified against that name."""
    address = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
    s = start_tls(host="localhost", upstream_args=("--host", address))
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert tls_stats(s.upstream)["sni"] == ["localhost"]


def test_ip_literal_url_sends_no_sni_and_is_verified_against_the_ip_san(start_tls):
    s = start_tls(host="127.0.0.1")
    assert fetch(s.tetherd.port).status == 200
    assert tls_stats(s.upstream)["sni"] == [None]


def test_ipv6_literal_url_sends_no_sni_and_is_verified_against_the_ip_san(start_tls):
    s = start_tls(host="[::1]", upstream_args=("--host", "::1"))
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert tls_stats(s.upstream)["sni"] == [None]


def test_ip_literal_url_is_not_matched_against_dns_names(start_tls):
    """wrong.example's certificate has no IP SAN: url https://127.0.0.1 must not pass."""
    s = start_tls(server="wrong_name")
    assert_tether_error(fetch(s.tetherd.port), 502, "name mismatch")


def test_tls_server_name_sets_sni_and_the_verified_name(start_tls):
    s = start_tls(server="wrong_name", upstream_cfg="tls_server_name = wrong.example\n")
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert tls_stats(s.upstream)["sni"] == ["wrong.example"]


# --- handshake failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("server", VERIFY_FAILURES)
def test_verification_failure_gets_502_naming_the_cause_without_a_retry_loop(start_tls, server):
    phrase, cause = VERIFY_FAILURES[server]
    # wrong_name: a DNS name that the certificate does not carry
    cfg = "tls_server_name = localhost\n" if server == "wrong_name" else ""
    s = start_tls(server=server, upstream_cfg=cfg, admin=True)
    requests = 3
    for i in range(requests):
        assert_tether_error(fetch(s.tetherd.port, "GET", f"/{i}"), 502, phrase)
    attempts = s.upstream.stats()["connections_accepted"]
    assert 1 <= attempts <= 2 * requests, f"{attempts} connection attempts for {requests} requests"
    time.sleep(0.5)
    assert s.upstream.stats()["connections_accepted"] == attempts, "attempts go on unasked"
    tls = wait_for(lambda: (t := tls_stats(s.upstream))["failures"] == attempts and t, 3,
                   "the upstream to see every handshake fail")
    assert tls["handshakes"] == 0
    # The log names the cause once per upstream, not once per request.
    assert len(log_lines(s.tetherd, phrase)) == 1, s.tetherd.log()
    # The metrics count every failed attempt under its cause, and no handshake.
    samples = parse_prom(scrape(s.admin))
    failures = "tether_upstream_tls_handshake_failures_total"
    assert metric(samples, failures, upstream="app", cause=cause) == attempts
    assert metric(samples, failures, upstream="app") == attempts
    assert metric(samples, "tether_upstream_tls_handshakes_total", upstream="app") == 0
    app = app_stats(s.admin)
    assert app["tls"]["failures"][cause] == attempts
    assert sum(app["tls"]["failures"].values()) == attempts


def test_concurrent_failures_on_two_workers_are_logged_once(start_tls):
    # Without the breaker (which would answer 503 after 5 failures per worker): every request
    # meets the handshake failure itself.
    s = start_tls(server="untrusted", workers=2, upstream_cfg="breaker_failures = 0\n")
    responses, lock = [], threading.Lock()

    def client_loop():
        for _ in range(4):
            resp = fetch(s.tetherd.port)
            with lock:
                responses.append(resp)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(responses) == 24
    for resp in responses:
        assert_tether_error(resp, 502, "certificate not trusted")
    assert len(log_lines(s.tetherd, "certificate not trusted")) == 1, s.tetherd.log()
    assert s.upstream.stats()["connections_accepted"] <= 2 * 24


def test_tls_verify_no_accepts_an_untrusted_certificate_and_warns(start_tls):
    s = start_tls(server="untrusted", trust=False, upstream_cfg="tls_verify = no\n")
    warnings = log_lines(s.tetherd, "tls_verify")
    assert warnings and re.search(r" (warn|error) ", warnings[0]), s.tetherd.log()
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert tls_stats(s.upstream)["handshakes"] == 1


def test_system_store_does_not_trust_the_test_ca(start_tls):
    """Without tls_ca the system store is used: the test CA is not in it."""
    s = start_tls(trust=False)
    assert_tether_error(fetch(s.tetherd.port), 502, "certificate not trusted")


@pytest.mark.parametrize("upstream_version, expected", [("--tls-max-version", "TLSv1.2"),
                                                         ("--tls-min-version", "TLSv1.3")])
def test_default_versions_negotiate(start_tls, upstream_version, expected):
    value = expected[-3:]
    s = start_tls(upstream_args=(upstream_version, value))
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert resp.header("X-Upstream-Tls-Version") == expected


@pytest.mark.parametrize("tether_min, upstream_max", [("1.3", "1.2"), (None, "1.1")],
                         ids=["min-1.3-vs-1.2", "default-vs-1.1"])
def test_protocol_version_failure(start_tls, tether_min, upstream_max):
    cfg = f"tls_min_version = {tether_min}\n" if tether_min else ""
    s = start_tls(upstream_args=("--tls-max-version", upstream_max), upstream_cfg=cfg,
                  admin=True)
    assert_tether_error(fetch(s.tetherd.port), 502, "protocol version")
    attempts = s.upstream.stats()["connections_accepted"]
    assert 1 <= attempts <= 2
    samples = parse_prom(scrape(s.admin))
    assert metric(samples, "tether_upstream_tls_handshake_failures_total", upstream="app",
                  cause="protocol_version") == attempts


def test_handshake_timeout(start_badpeer, start_tetherd):
    """A peer that accepts TCP and never answers the ClientHello: connect_timeout bounds the
    handshake too."""
    peer = start_badpeer("silent")
    tetherd = start_tetherd(tls_config(f"https://127.0.0.1:{peer.port}",
                                       "connect_timeout = 1s\nresponse_timeout = 10s\n"))
    start = time.monotonic()
    resp = fetch(tetherd.port)
    assert 0.9 <= time.monotonic() - start < 3
    assert_tether_error(resp, 502, "handshake timeout")
    assert 1 <= peer.accepted <= 2


def test_slow_handshake_does_not_hold_up_other_requests(start_badpeer, start_tls, tls_certs,
                                                        start_tetherd):
    """Handshakes are non-blocking: while one upstream's handshake hangs, requests to another
    upstream on the same (single) worker are served at once."""
    peer = start_badpeer("silent")
    good = start_tls().upstream
    tetherd = start_tetherd(f"""
        [tether]
        workers = 1

        [upstream stuck]
        url = https://127.0.0.1:{peer.port}
        listen = 127.0.0.1:{free_port()}
        connect_timeout = 2s

        [upstream good]
        url = {good.url}
        listen = 127.0.0.1:{free_port()}
        tls_ca = {tls_certs.ca.cert}
    """)
    stuck_port, good_port = tetherd.ports
    stuck = {}
    thread = threading.Thread(target=lambda: stuck.update(resp=fetch(stuck_port)), daemon=True)
    thread.start()
    wait_for(lambda: peer.accepted >= 1, 3, "the stuck handshake to begin")
    start = time.monotonic()
    for i in range(20):
        assert fetch(good_port, "GET", f"/{i}").status == 200
    assert time.monotonic() - start < 1.5, "requests waited for another upstream's handshake"
    thread.join(6)
    assert_tether_error(stuck["resp"], 502, "handshake timeout")


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_peer_closing_during_the_handshake(start_badpeer, start_tetherd, mode):
    peer = start_badpeer(mode)
    tetherd = start_tetherd(tls_config(f"https://127.0.0.1:{peer.port}"))
    resp = fetch(tetherd.port)
    if mode == "close":
        assert_tether_error(resp, 502, "connection closed")
    else:
        assert_tether_error(resp, 502)
    assert 1 <= peer.accepted <= 2


def test_https_url_to_a_plain_http_server(start_nginx, start_tetherd):
    """A common mistake: https:// in front of a plain HTTP server, which answers the
    ClientHello with an HTTP 400. A 502 that says TLS failed, and no loop."""
    port = start_nginx(None)
    tetherd = start_tetherd(tls_config(f"https://127.0.0.1:{port}"))
    for _ in range(3):
        resp = fetch(tetherd.port)
        assert_tether_error(resp, 502, "TLS")


# --- client certificates (mTLS) -------------------------------------------------------------------


def test_client_certificate_is_presented(start_tls, tls_certs):
    c = tls_certs.client
    s = start_tls(upstream_args=("--tls-client-ca", tls_certs.client_ca.cert),
                  upstream_cfg=f"tls_cert = {c.cert}\ntls_key = {c.key}\n")
    resp = fetch(s.tetherd.port)
    assert resp.status == 200, resp
    assert f"CN={c.common_name}" in resp.header("X-Upstream-Tls-Client")
    assert f"CN={c.common_name}" in tls_stats(s.upstream)["last_client_subject"]


MTLS_REFUSALS = {"rejected by upstream": "rejected", "connection closed": "closed"}


def refused_without_client_cert(start_tls, tls_certs, version, requests=3):
    """An upstream that requires a client certificate, and tetherd without one: `requests`
    requests, each on a fresh client connection. Returns (setup, responses).

    TLS 1.2: the upstream refuses during the handshake. TLS 1.3: tetherd's side of the handshake
    is done before the upstream checks the certificate, and the refusal (an alert, then the
    close) arrives after tetherd has sent the request."""
    s = start_tls(upstream_args=("--tls-client-ca", tls_certs.client_ca.cert,
                                 "--tls-max-version", version), admin=True)
    responses = [fetch(s.tetherd.port, "GET", f"/{i}") for i in range(requests)]
    assert 1 <= s.upstream.stats()["connections_accepted"] <= 2 * requests
    assert tls_stats(s.upstream)["handshakes"] == 0
    return s, responses


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_missing_client_certificate_gets_a_specific_502(start_tls, tls_certs, version):
    _, responses = refused_without_client_cert(start_tls, tls_certs, version)
    for resp in responses:
        assert_tether_error(resp, 502)
        assert any(p in resp.text for p in MTLS_REFUSALS), f"the 502 does not say why: {resp}"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_missing_client_certificate_is_logged_once(start_tls, tls_certs, version):
    s, _ = refused_without_client_cert(start_tls, tls_certs, version)
    lines = [line for p in MTLS_REFUSALS for line in log_lines(s.tetherd, p)]
    assert len(lines) == 1, s.tetherd.log()
    assert not log_lines(s.tetherd, "succeed again"), "no handshake has succeeded"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_missing_client_certificate_is_counted_as_a_failure(start_tls, tls_certs, version):
    """Every attempt is a handshake failure, and none a completed handshake: the upstream
    completed none."""
    s, _ = refused_without_client_cert(start_tls, tls_certs, version)
    attempts = s.upstream.stats()["connections_accepted"]
    samples = parse_prom(scrape(s.admin))
    failures = "tether_upstream_tls_handshake_failures_total"
    counted = {cause: metric(samples, failures, upstream="app", cause=cause)
               for cause in MTLS_REFUSALS.values()}
    assert sum(counted.values()) == attempts, counted
    assert metric(samples, failures, upstream="app") == attempts
    assert metric(samples, "tether_upstream_tls_handshakes_total", upstream="app") == 0
    tls = app_stats(s.admin)["tls"]
    assert (tls["handshakes_full"], tls["handshakes_resumed"]) == (0, 0)


# --- configuration errors -------------------------------------------------------------------------


def _mtls_config(listen, cert, key, extra=""):
    """tls_cert on line 5, tls_key on line 6; the [upstream app] header on line 1."""
    return (f"[upstream app]\nurl = https://127.0.0.1:{free_port()}\nlisten = 127.0.0.1:{listen}\n"
            f"tls_verify = yes\ntls_cert = {cert}\ntls_key = {key}\n{extra}")


@pytest.fixture
def key_copy(tmp_path, tls_certs):
    """A copy of the client key (mode 0600) that a test may chmod."""
    path = tmp_path / "client.key"
    shutil.copy(tls_certs.client.key, path)
    os.chmod(path, 0o600)
    return path


def run_tetherd(config_path, timeout=5):
    """Runs tetherd with a configuration that must stop it at startup (a tetherd that starts
    anyway is killed when `timeout` expires, and the test fails)."""
    try:
        return subprocess.run([str(tetherd_binary()), "-c", str(config_path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("tetherd started with a configuration it must refuse")


@pytest.mark.parametrize("mode", [0o644, 0o602, 0o604], ids=oct)
def test_key_readable_or_writable_by_others_stops_startup(tmp_path, tls_certs, key_copy, mode):
    os.chmod(key_copy, mode)
    path = tmp_path / "tether.ini"
    path.write_text(_mtls_config(free_port(), tls_certs.client.cert, key_copy))
    result = run_tetherd(path)
    assert result.returncode != 0
    assert f"{path}:6: tls_key: " in result.stderr, result.stderr


def test_key_readable_by_group_is_fine(start_tetherd, tls_certs, key_copy):
    os.chmod(key_copy, 0o640)
    tetherd = start_tetherd(_mtls_config(free_port(), tls_certs.client.cert, key_copy))
    assert tetherd.proc.poll() is None


# (name, tls_cert, tls_key, extra lines, line of the error, key named)
BAD_TLS = [
    ("key of another cert", "client.pem", "client2.key", "", 6, "tls_key"),
    ("missing cert", "nonexistent.pem", "client.key", "", 5, "tls_cert"),
    ("missing key", "client.pem", "nonexistent.key", "", 6, "tls_key"),
    ("missing ca", "client.pem", "client.key", "tls_ca = /nonexistent/ca.pem\n", 7, "tls_ca"),
    ("bad min version", "client.pem", "client.key", "tls_min_version = 1.1\n", 7,
     "tls_min_version"),
    ("bad verify", "client.pem", "client.key", "tls_verify = sometimes\n", 7, "tls_verify"),
    ("bad session reuse", "client.pem", "client.key", "tls_session_reuse = maybe\n", 7,
     "tls_session_reuse"),
    ("cert not PEM", "garbage.pem", "client.key", "", 5, "tls_cert"),
    ("key not PEM", "client.pem", "garbage.key", "", 6, "tls_key"),
    ("encrypted key", "client.pem", "encrypted.key", "", 6, "tls_key"),
    ("ca not PEM", "client.pem", "client.key", "tls_ca = {dir}/garbage.pem\n", 7, "tls_ca"),
]


@pytest.fixture
def bad_files(tmp_path, tls_certs):
    """garbage.pem, garbage.key (text that is no PEM) and encrypted.key (the client key under a
    passphrase, which tetherd must refuse rather than prompt for) in tmp_path, mode 0600."""
    for name in ("garbage.pem", "garbage.key"):
        (tmp_path / name).write_text("this is not PEM\n")
    subprocess.run(["openssl", "pkey", "-in", str(tls_certs.client.key), "-aes256", "-passout",
                    "pass:secret", "-out", str(tmp_path / "encrypted.key")],
                   check=True, capture_output=True, timeout=30)
    for name in ("garbage.pem", "garbage.key", "encrypted.key"):
        os.chmod(tmp_path / name, 0o600)
    return tmp_path


@pytest.mark.parametrize("cert, key, extra, line, name", [b[1:] for b in BAD_TLS],
                         ids=[b[0] for b in BAD_TLS])
def test_bad_tls_configuration_stops_startup(tmp_path, tls_certs, bad_files, cert, key, extra,
                                            line, name):
    cert_path, key_path = ((bad_files if (bad_files / f).exists() else tls_certs.directory) / f
                           for f in (cert, key))
    path = tmp_path / "tether.ini"
    path.write_text(_mtls_config(free_port(), cert_path, key_path, extra.format(dir=bad_files)))
    result = run_tetherd(path)
    assert result.returncode != 0
    assert f"{path}:{line}: {name}: " in result.stderr, result.stderr
    if cert.startswith("nonexistent") or key.startswith("nonexistent") or "nonexistent" in extra:
        assert "nonexistent" in result.stderr, "the error names the missing file"
    # --check loads the TLS files too, so the same error stops a deploy before startup.
    checked = subprocess.run([str(tetherd_binary()), "--check", "-c", str(path)],
                             capture_output=True, text=True, timeout=10)
    assert checked.returncode == 2, checked
    assert f"{path}:{line}: {name}: " in checked.stderr, checked.stderr


def test_cert_without_key_stops_startup(tmp_path, tls_certs):
    path = tmp_path / "tether.ini"
    path.write_text(f"[upstream app]\nurl = https://127.0.0.1:{free_port()}\n"
                    f"listen = 127.0.0.1:{free_port()}\ntls_cert = {tls_certs.client.cert}\n")
    result = run_tetherd(path)
    assert result.returncode != 0
    assert re.search(rf"{re.escape(str(path))}:(1|4): tls_(cert|key): ", result.stderr), (
        result.stderr)


def test_tls_keys_need_an_https_url(tmp_path, tls_certs):
    path = tmp_path / "tether.ini"
    path.write_text(f"[upstream app]\nurl = http://127.0.0.1:{free_port()}\n"
                    f"listen = 127.0.0.1:{free_port()}\ntls_ca = {tls_certs.ca.cert}\n")
    result = subprocess.run([str(tetherd_binary()), "--check", "-c", str(path)],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2, result
    assert f"{path}:4: tls_ca: " in result.stderr, result.stderr


# --- session resumption and the TLS metrics -------------------------------------------------------


@pytest.mark.parametrize("version, reuse, workers", [
    ("1.3", "yes", 1), ("1.2", "yes", 1), ("1.3", "no", 1), ("1.3", "yes", 2)],
    ids=["tls1.3", "tls1.2", "tls1.3-reuse-off", "tls1.3-two-workers"])
def test_session_resumption(start_tls, version, reuse, workers):
    """max_requests = 1: every request opens a new connection, and with tls_session_reuse each
    after the first resumes the session of an earlier one (the session is shared by the
    workers). Both sides count the same."""
    s = start_tls(upstream_args=("--tls-max-version", version), admin=True, workers=workers,
                  upstream_cfg=f"max_requests = 1\ntls_session_reuse = {reuse}\n")
    n = 8
    responses = [fetch(s.tetherd.port, "GET", f"/{i}") for i in range(n)]
    assert [r.status for r in responses] == [200] * n
    assert [r.conn_id for r in responses] == list(range(1, n + 1))
    resumed_flags = [r.header("X-Upstream-Tls-Resumed") for r in responses]
    tls = tls_stats(s.upstream)
    assert tls["handshakes"] == n
    assert tls["versions"] == {f"TLSv{version}": n}
    if reuse == "yes":
        assert tls["resumed"] >= n - 1, resumed_flags
    else:
        assert tls["resumed"] == 0, resumed_flags
    full, resumed = n - tls["resumed"], tls["resumed"]
    samples = parse_prom(scrape(s.admin))
    handshakes = "tether_upstream_tls_handshakes_total"
    assert metric(samples, handshakes, upstream="app", kind="full") == full
    assert metric(samples, handshakes, upstream="app", kind="resumed") == resumed
    assert metric(samples, "tether_upstream_tls_handshake_duration_seconds_count",
                  upstream="app") == n
    assert metric(samples, "tether_upstream_tls_handshake_duration_seconds_bucket",
                  upstream="app", le="+Inf") == n
    app = app_stats(s.admin)
    assert (app["tls"]["handshakes_full"], app["tls"]["handshakes_resumed"]) == (full, resumed)
    assert sum(app["tls"]["failures"].values()) == 0


def test_tls_metrics_are_well_formed(start_tls):
    """promtool finds nothing to complain about, every cause is exported, and the names have
    HELP and TYPE lines."""
    s = start_tls(admin=True, upstream_cfg="max_requests = 2\n")
    for i in range(5):
        assert fetch(s.tetherd.port, "GET", f"/{i}").status == 200
    text = scrape(s.admin)
    for name, kind in [("tether_upstream_tls_handshakes_total", "counter"),
                       ("tether_upstream_tls_handshake_failures_total", "counter"),
                       ("tether_upstream_tls_handshake_duration_seconds", "histogram")]:
        assert f"# TYPE {name} {kind}\n" in text, f"no TYPE line for {name}"
        assert f"# HELP {name} " in text, f"no HELP line for {name}"
    samples = parse_prom(text)
    for cause in CAUSES:
        assert metric(samples, "tether_upstream_tls_handshake_failures_total", upstream="app",
                      cause=cause) == 0
    assert set(app_stats(s.admin)["tls"]["failures"]) == set(CAUSES)
    if shutil.which(PROMTOOL) or os.path.exists(PROMTOOL):
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


# --- close_notify on idle connections -------------------------------------------------------------


def test_close_notify_on_an_idle_connection_evicts_it(start_tls):
    """The upstream sends close_notify and closes idle connections after 0.5 s; tetherd (fixed
    idle_timeout, so it does not learn to close first) must never use one of them again."""
    s = start_tls(upstream_args=("--idle-close", "0.5"), upstream_cfg="idle_timeout = 60s\n",
                  admin=True)
    for expected_conn in (1, 2, 3):
        resp = fetch(s.tetherd.port)
        assert (resp.status, resp.conn_id) == (200, expected_conn)
        wait_for(lambda: s.upstream.stats()["closed_by_server"] == expected_conn, 3,
                 "the upstream to close its idle connection")
        # tetherd notices while the connection is idle, not when a request meets it
        wait_for(lambda: app_stats(s.admin)["connections"]["closed"]["peer_closed"]
                 == expected_conn, 1, "tetherd to evict the connection")
    stats = s.upstream.stats()
    assert stats["requests"] == 3 and stats["resets"] == 0
    assert stats["tls"]["handshakes"] == 3
    assert None not in stats["tls"]["peer_closed_after_notify_ms"]
    assert app_stats(s.admin)["retries"]["stale_connection"] == 0


def test_close_notify_alone_evicts_an_idle_connection(start_tls):
    """The upstream sends close_notify but keeps TCP open: tetherd must close its side on the
    close_notify alone, and the next request goes to a new connection."""
    s = start_tls(upstream_args=("--idle-close", "0.5", "--tls-close-without-fin"),
                  upstream_cfg="idle_timeout = 60s\nresponse_timeout = 3s\n")
    assert fetch(s.tetherd.port).conn_id == 1
    wait_for(lambda: s.upstream.stats()["closed_by_server"] == 1, 7,
             "the upstream's close_notify to be answered (or its 5 s wait to end)")
    (elapsed_ms,) = tls_stats(s.upstream)["peer_closed_after_notify_ms"]
    assert elapsed_ms is not None, "tetherd kept the connection open after close_notify"
    assert elapsed_ms < 1000
    resp = fetch(s.tetherd.port)
    assert (resp.status, resp.conn_id) == (200, 2)
    assert s.upstream.stats()["requests"] == 2


def test_tetherd_closes_connections_with_close_notify(start_tls):
    """Connections tetherd retires get a close_notify before the FIN: after max_requests, at
    idle expiry, and at shutdown."""
    s = start_tls(upstream_cfg="max_requests = 2\nidle_timeout = 500ms\n")

    def notified(n):
        wait_for(lambda: tls_stats(s.upstream)["peer_close_notify"] == n, 3,
                 f"{n} connections closed with close_notify")

    assert [fetch(s.tetherd.port).conn_id for _ in range(2)] == [1, 1]
    notified(1)  # max_requests
    assert fetch(s.tetherd.port).conn_id == 2
    notified(2)  # idle expiry
    assert fetch(s.tetherd.port).conn_id == 3
    assert s.tetherd.stop() == 0
    notified(3)  # shutdown
    assert tls_stats(s.upstream)["peer_eof_without_notify"] == 0


# --- SIGHUP reloads certificate files -------------------------------------------------------------


def _install(src, dst):
    """Replaces `dst` with a copy of `src` the way deploy tools do: a new file, renamed over."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copy(src, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, dst)


def reload(tetherd):
    """SIGHUP, and waits until tetherd logged that it reloaded changed TLS files."""
    done = len(log_lines(tetherd, "SIGHUP", "reloaded"))
    tetherd.signal(signal.SIGHUP)
    wait_for(lambda: len(log_lines(tetherd, "SIGHUP", "reloaded")) > done, 3,
             "tetherd to log the reload")


class ClientFiles:
    """The client certificate and key files tetherd is configured with (`cert`, `key`),
    replaced the way deploy tools do it:
        rename        a new file renamed over the old one (a new inode)
        overwrite     the same file truncated and rewritten (same inode)
        symlink-swap  Kubernetes secret volumes: cert and key are symlinks into ..data, itself a
                      symlink to a versioned directory, flipped atomically by a rename
    """

    def __init__(self, directory, method):
        self.dir, self.method, self.version = directory, method, 0
        self.cert, self.key = directory / "client.pem", directory / "client.key"

    def install(self, pair):
        sources = ((pair.cert, "client.pem"), (pair.key, "client.key"))
        if self.method == "rename":
            for src, name in sources:
                _install(src, self.dir / name)
        elif self.method == "overwrite":
            for src, name in sources:
                dst = self.dir / name
                existed = dst.exists()
                dst.write_bytes(src.read_bytes())
                if not existed:
                    os.chmod(dst, 0o600)
        else:
            self.version += 1
            version = self.dir / f"..v{self.version}"
            version.mkdir()
            for src, name in sources:
                _install(src, version / name)
            link = self.dir / "..data_tmp"
            link.symlink_to(version.name)
            os.replace(link, self.dir / "..data")
            for _, name in sources:
                if not (self.dir / name).is_symlink():
                    (self.dir / name).symlink_to(f"..data/{name}")


@pytest.mark.parametrize("method", ["rename", "overwrite", "symlink-swap"])
def test_sighup_reloads_the_client_certificate(start_tls, tls_certs, tmp_path, method):
    """After SIGHUP, every new connection presents the new certificate, the first one already.
    Session reuse is on: a session resumed from before would carry the old client identity."""
    files = ClientFiles(tmp_path, method)
    files.install(tls_certs.client)
    s = start_tls(upstream_args=("--tls-client-ca", tls_certs.client_ca.cert),
                  upstream_cfg=f"tls_cert = {files.cert}\ntls_key = {files.key}\n"
                               "max_requests = 1\n")
    old, new = (f"CN={p.common_name}" for p in (tls_certs.client, tls_certs.client2))

    def request():
        resp = fetch(s.tetherd.port)
        assert resp.status == 200, resp
        return resp.header("X-Upstream-Tls-Client"), resp.header("X-Upstream-Tls-Resumed")

    before = [request() for _ in range(3)]
    assert [subject for subject, _ in before] == [f"O=Tether Tests,{old}"] * 3
    assert [resumed for _, resumed in before] == ["0", "1", "1"]
    files.install(tls_certs.client2)
    reload(s.tetherd)
    after = [request() for _ in range(3)]
    assert [subject for subject, _ in after] == [f"O=Tether Tests,{new}"] * 3
    assert after[0][1] == "0", "the first connection after the reload resumed an old session"
    assert s.tetherd.proc.poll() is None
    assert not log_lines(s.tetherd, " error "), s.tetherd.log()


def test_sighup_reloads_the_ca_bundle(start_tls, tls_certs, tmp_path):
    """Trust follows tls_ca after SIGHUP: swapped to an unrelated CA, new connections fail
    verification (no resumed session may skip it); swapped back, they succeed again."""
    ca = tmp_path / "ca.pem"
    _install(tls_certs.ca.cert, ca)
    s = start_tls(trust=False, upstream_cfg=f"tls_ca = {ca}\nmax_requests = 1\n")
    assert [fetch(s.tetherd.port).status for _ in range(3)] == [200] * 3
    for cycle in (1, 2):
        _install(tls_certs.other_ca.cert, ca)
        reload(s.tetherd)
        for _ in range(2):
            assert_tether_error(fetch(s.tetherd.port), 502, "certificate not trusted")
        _install(tls_certs.ca.cert, ca)
        reload(s.tetherd)
        assert [fetch(s.tetherd.port).status for _ in range(3)] == [200] * 3
        # A failure is logged once per cause, and again once a handshake succeeded in between.
        assert len(log_lines(s.tetherd, "certificate not trusted")) == cycle, s.tetherd.log()


def test_sighup_keeps_connections_made_before(start_tls, tls_certs, tmp_path):
    """A pooled connection made before the reload keeps serving with the identity it has; a
    connection opened after it presents the new certificate."""
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    _install(tls_certs.client.cert, cert)
    _install(tls_certs.client.key, key)
    s = start_tls(upstream_args=("--tls-client-ca", tls_certs.client_ca.cert),
                  upstream_cfg=f"tls_cert = {cert}\ntls_key = {key}\n")
    old, new = (f"CN={p.common_name}" for p in (tls_certs.client, tls_certs.client2))
    first = fetch(s.tetherd.port)
    assert old in first.header("X-Upstream-Tls-Client")
    _install(tls_certs.client2.cert, cert)
    _install(tls_certs.client2.key, key)
    reload(s.tetherd)
    # One request holds the pooled connection while a second one needs a new connection.
    held = {}
    thread = threading.Thread(target=lambda: held.update(
        resp=fetch(s.tetherd.port, "GET", "/held", [("X-Delay-Ms", "500")])), daemon=True)
    thread.start()
    wait_for(lambda: s.upstream.stats()["requests"] == 2, 3, "the held request to arrive")
    second = fetch(s.tetherd.port, "GET", "/second")
    thread.join(5)
    assert held["resp"].conn_id == first.conn_id, "the pooled connection was dropped"
    assert old in held["resp"].header("X-Upstream-Tls-Client")
    assert second.conn_id != first.conn_id
    assert new in second.header("X-Upstream-Tls-Client")


def test_sighup_with_bad_files_keeps_the_loaded_certificate(start_tls, tls_certs, tmp_path):
    """A key that does not match the new certificate: the reload is refused with an error, the
    files loaded before stay in use, tetherd keeps running."""
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    _install(tls_certs.client.cert, cert)
    _install(tls_certs.client.key, key)
    s = start_tls(upstream_args=("--tls-client-ca", tls_certs.client_ca.cert),
                  upstream_cfg=f"tls_cert = {cert}\ntls_key = {key}\nmax_requests = 1\n")
    old = f"CN={tls_certs.client.common_name}"
    assert old in fetch(s.tetherd.port).header("X-Upstream-Tls-Client")
    _install(tls_certs.client2.cert, cert)  # the key stays client 1's: a mismatch
    s.tetherd.signal(signal.SIGHUP)
    wait_for(lambda: log_lines(s.tetherd, "SIGHUP", " error "), 3, "the refusal to be logged")
    for _ in range(3):
        resp = fetch(s.tetherd.port)
        assert resp.status == 200, resp
        assert old in resp.header("X-Upstream-Tls-Client")
    assert s.tetherd.proc.poll() is None


# --- against nginx --------------------------------------------------------------------------------


@pytest.fixture
def start_nginx(tmp_path, tls_certs):
    """start_nginx(protocols) -> port: nginx serving HTTPS on loopback (`protocols` as in
    ssl_protocols; None: plain HTTP), entirely in tmp_path. Every response's body tells what
    nginx saw: session reuse, protocol, connection, SNI, ALPN."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx not installed")
    started = []

    def start(protocols):
        port = free_port()
        directory = tmp_path / f"nginx-{len(started)}"
        directory.mkdir()
        temp_paths = "".join(f"{name}_temp_path {directory / name}; "
                             for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;" if os.geteuid() == 0 else ""
        tls = (f"ssl_certificate {tls_certs.localhost.cert}; "
               f"ssl_certificate_key {tls_certs.localhost.key}; ssl_protocols {protocols}; "
               "ssl_session_cache shared:TLS:1m; ssl_session_tickets on;") if protocols else ""
        (directory / "nginx.conf").write_text(textwrap.dedent(f"""\
            {user}
            worker_processes 1;
            pid {directory / "nginx.pid"};
            error_log {directory / "error.log"} info;
            events {{ worker_connections 256; }}
            http {{
                access_log off;
                {temp_paths}
                server {{
                    listen 127.0.0.1:{port}{" ssl" if protocols else ""};
                    {tls}
                    keepalive_requests 1000;
                    location / {{
                        return 200 "{NGINX_BODY}\\n";
                    }}
                }}
            }}
            """))
        proc = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                 "-e", str(directory / "error.log"), "-g", "daemon off;"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        started.append(proc)

        def listening():
            assert proc.poll() is None, (directory / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, 5, "nginx to listen")
        return port

    yield start
    for proc in started:
        proc.terminate()  # fast shutdown: tetherd may still hold keep-alive connections
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("protocols", ["TLSv1.2", "TLSv1.3"])
def test_against_nginx(start_nginx, start_tetherd, tls_certs, protocols):
    """max_requests = 3: nine requests over three connections, each connection kept alive for
    its three, and the second and third connections resume the first one's session."""
    port = start_nginx(protocols)
    tetherd = start_tetherd(tls_config(
        f"https://127.0.0.1:{port}",
        f"tls_ca = {tls_certs.ca.cert}\ntls_server_name = localhost\nmax_requests = 3\n"))
    seen = []
    for i in range(9):
        resp = fetch(tetherd.port, "GET", f"/{i}")
        assert resp.status == 200, resp
        seen.append(dict(field.split("=", 1) for field in resp.text.split()))
    assert {f["protocol"] for f in seen} == {protocols}
    assert {f["sni"] for f in seen} == {"localhost"}
    assert {f["alpn"] for f in seen} == {"http/1.1"}
    conns = [f["conn"] for f in seen]
    assert conns[0:3] == [conns[0]] * 3 and conns[3:6] == [conns[3]] * 3
    assert conns[6:9] == [conns[6]] * 3 and len({conns[0], conns[3], conns[6]}) == 3
    assert [seen[i]["reused"] for i in (0, 3, 6)] == [".", "r", "r"], seen


def test_an_in_place_reload_keeps_tls_sessions(start_tls, tmp_path):
    """A reload that changes only numbers keeps the TLS context: the first new connection after
    it resumes the session from before (a successor by takeover would start with none)."""
    s = start_tls(upstream_cfg="max_requests = 1\n")

    def resumed():
        resp = fetch(s.tetherd.port)
        assert resp.status == 200, resp
        return resp.header("X-Upstream-Tls-Resumed")

    assert [resumed(), resumed()] == ["0", "1"]
    ini = next(tmp_path.glob("tetherd-0.ini"))
    ini.write_text(ini.read_text() + "queue_timeout = 2s\n")
    s.tetherd.signal(signal.SIGHUP)
    wait_for(lambda: "reload: applied in place" in s.tetherd.log(), 10, "the in-place reload")
    assert resumed() == "1", "the first connection after the reload paid a full handshake"
    assert "took over" not in s.tetherd.log()
