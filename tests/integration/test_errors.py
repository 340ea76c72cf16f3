"""Malformed clients, failing upstreams and timeouts: the right status, and never a hang."""

import os
import time

import pytest

from helpers import (wait_for, Client, ConnectionClosed, assert_tether_error, build_request, fetch,
                     free_port, get_json)
from upstream import body_pattern

MALFORMED = {
    "bad request line": b"GET /\r\nHost: x\r\n\r\n",
    "bad method": b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "CL and TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different CL": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        b"Content-Length: 4\r\n\r\nabcd",
    "non-numeric CL": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nx",
    "TE not ending in chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: x\n\n",
    "binary garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
}


def elapsed_since(start):
    return time.monotonic() - start


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400_and_close(proxy, raw):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        client.send(raw)
        resp = client.read_response()
        assert client.closed_by_server()
    assert_tether_error(resp, 400)
    assert upstream.stats()["requests"] == 0
    assert fetch(tetherd.port).status == 200


def test_invalid_chunk_size_gets_400_and_nothing_completes_upstream(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        client.send(build_request("POST", "/", [("Transfer-Encoding", "chunked")],
                                  b"5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"))
        resp = client.read_response()
        assert client.closed_by_server()
    assert_tether_error(resp, 400)
    assert upstream.stats()["completed"] == 0
    assert fetch(tetherd.port).status == 200


def test_head_larger_than_max_head_size_gets_431(start_proxy):
    tetherd, upstream = start_proxy(tether_cfg="max_head_size = 4k")
    near_limit = fetch(tetherd.port, headers=[("X-Filler", "a" * 3000)])
    assert near_limit.status == 200
    with Client(tetherd.port) as client:
        client.send(build_request(headers=[("X-Filler", "a" * 8192)]))
        resp = client.read_response()
        assert client.closed_by_server()
    assert_tether_error(resp, 431)
    assert upstream.stats()["requests"] == 1


def test_upstream_refused_gets_502_naming_the_reason(start_tetherd):
    listen, dead = free_port(), free_port()
    tetherd = start_tetherd(f"""
        [upstream dead]
        url = http://127.0.0.1:{dead}
        listen = 127.0.0.1:{listen}
    """)
    assert_tether_error(fetch(tetherd.port), 502, "refused")


def test_response_timeout_gets_504_and_the_late_connection_is_dropped(start_proxy):
    tetherd, upstream = start_proxy(upstream_cfg="response_timeout = 1s")
    start = time.monotonic()
    resp = fetch(tetherd.port, "GET", "/slow", [("X-Delay-Ms", "3000")])
    assert elapsed_since(start) < 2.5  # well before the upstream's answer at 3 s
    # The words name the timer that fired (its exact moment is tested in test_session.c).
    assert_tether_error(resp, 504, "did not respond within 1000ms")
    # The slow connection still owes a response: reusing it would serve that to the next client.
    after = fetch(tetherd.port, "GET", "/after")
    assert after.header("X-Upstream-Target") == "/after"
    assert after.conn_id == 2


@pytest.mark.parametrize("size, framing", [(100_000, []), (100_000, [("X-Chunked", "1")]),
                                           (4_000_000, [])],
                         ids=["content-length", "chunked", "spliced"])
def test_upstream_pausing_mid_body_is_cut_after_response_idle_timeout(start_proxy, size, framing):
    """The head went out, so a 504 is impossible: after response_idle_timeout without a byte of
    the body the client connection ends short and the upstream connection is not reused."""
    tetherd, upstream = start_proxy(upstream_cfg="response_idle_timeout = 300ms")
    headers = [("X-Body-Size", str(size)), ("X-Body-Pauses", "1,4000")] + framing
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.send(build_request("GET", "/paused", headers))
        with pytest.raises(ConnectionClosed):
            client.read_response()
    assert elapsed_since(start) < 3  # the upstream's second half would come at 4 s
    after = fetch(tetherd.port, "GET", "/after")
    assert after.status == 200 and after.conn_id == 2


def test_a_body_that_keeps_moving_outlasts_response_idle_timeout(start_proxy):
    """The timeout bounds a pause, not the body: 5 parts 250 ms apart take 1 s, over a 600 ms
    response_idle_timeout, and arrive whole."""
    tetherd, _ = start_proxy(upstream_cfg="response_idle_timeout = 600ms")
    resp = fetch(tetherd.port, "GET", "/trickle",
                 [("X-Body-Size", "50000"), ("X-Body-Pauses", "4,250")])
    assert resp.status == 200 and resp.body == body_pattern(50000)


@pytest.mark.parametrize("mode, statuses", [
    ("silent", {504}),
    ("half-head", {502, 504}),
    ("garbage", {502}),
    ("close", {502}),
    ("reset", {502}),
])
def test_misbehaving_upstream(start_badpeer, start_tetherd, mode, statuses):
    peer = start_badpeer(mode)
    listen = free_port()
    tetherd = start_tetherd(f"""
        [upstream bad]
        url = http://127.0.0.1:{peer.port}
        listen = 127.0.0.1:{listen}
        response_timeout = 1s
    """)
    start = time.monotonic()
    resp = fetch(tetherd.port)
    assert elapsed_since(start) < 4
    assert resp.status in statuses, resp
    assert_tether_error(resp, resp.status)
    assert peer.accepted >= 1


def test_client_closing_mid_request_does_not_disturb_tetherd(proxy):
    tetherd, upstream = proxy
    for _ in range(3):
        with Client(tetherd.port) as client:
            client.send(build_request("POST", "/", [("Content-Length", "1000000")],
                                      body_pattern(10_000)))
    for i in range(5):
        assert fetch(tetherd.port, "GET", f"/{i}").status == 200
    assert upstream.stats()["completed"] == 5


def test_client_closing_mid_response_does_not_disturb_tetherd(proxy):
    tetherd, _ = proxy
    for _ in range(3):
        with Client(tetherd.port) as client:
            client.send(build_request("GET", "/", [("X-Body-Size", str(10 << 20))]))
            client.read_head()
            client.sock.recv(65536)
    for i in range(5):
        resp = fetch(tetherd.port, "GET", f"/{i}", [("X-Body-Size", "100000")])
        assert resp.body == body_pattern(100000)


@pytest.mark.parametrize("framing", [[], [("X-Chunked", "1")]], ids=["content-length", "chunked"])
def test_upstream_closing_mid_response_is_never_complete(proxy, framing):
    """The client must see the truncation (close before the end, or a tetherd 502), never a
    complete-looking response and never a hang."""
    tetherd, _ = proxy
    headers = [("X-Close-Mid-Response", "1"), ("X-Body-Size", "200000")] + framing
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.send(build_request("GET", "/", headers))
        try:
            resp = client.read_response()
        except ConnectionClosed:
            resp = None
    assert elapsed_since(start) < 5
    if resp is not None:
        assert_tether_error(resp, 502)
    assert fetch(tetherd.port).status == 200


@pytest.mark.parametrize("defer", ["1s", "off"])
def test_tcp_defer_accept_hands_over_connections_with_their_request(start_proxy, defer):
    """With tcp_defer_accept (the default) the kernel hands a connection to tetherd when its
    request arrives, not when the handshake completes: a silent connection is not accepted yet.
    Either way the request is served."""
    admin = free_port()
    tetherd, _ = start_proxy(tether_cfg=f"tcp_defer_accept = {defer}\nadmin = 127.0.0.1:{admin}")

    def accepted():
        return get_json(admin, "/stats")["downstream"]["connections_accepted_total"]

    before = accepted()
    with Client(tetherd.port) as client:
        # admin requests are not downstream connections
        if defer == "off":
            wait_for(lambda: accepted() - before == 1, 5, "the silent connection's accept")
        else:
            time.sleep(0.3)  # well under the deferral (1 s and more): still not accepted
            assert accepted() == before
        resp = client.request("GET", "/")
    assert resp.status == 200


def test_silent_client_is_closed_after_client_header_timeout(start_proxy):
    tetherd, _ = start_proxy(tether_cfg="client_header_timeout = 1s")
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.read_until_closed()  # a 408 may come first
    assert 0.9 <= elapsed_since(start) < 3


def test_partial_head_gets_408_after_client_header_timeout(start_proxy):
    tetherd, upstream = start_proxy(tether_cfg="client_header_timeout = 1s")
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        resp = client.read_response()
        assert client.closed_by_server()
    assert elapsed_since(start) < 3
    assert_tether_error(resp, 408, "request head not received within 1000ms")
    assert upstream.stats()["requests"] == 0


def test_idle_keepalive_client_is_closed_after_client_idle_timeout(start_proxy):
    tetherd, _ = start_proxy(tether_cfg="client_idle_timeout = 1s")
    with Client(tetherd.port) as client:
        assert client.request().status == 200
        start = time.monotonic()
        assert client.closed_by_server(timeout=3)
    assert elapsed_since(start) >= 0.9


def test_connect_gets_405(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        resp = client.read_response()
    assert_tether_error(resp, 405, "CONNECT")
    assert upstream.stats()["requests"] == 0


def test_stalled_request_body_gets_408_and_frees_the_upstream_connection(start_proxy):
    """A client that declares a body and stops sending must not hold an upstream connection
    forever: after client_idle_timeout it gets 408 and that connection is closed (its request
    is incomplete, so it can never be reused)."""
    tetherd, upstream = start_proxy(tether_cfg="client_idle_timeout = 1s")
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        resp = client.read_response()
        assert client.closed_by_server()
    assert elapsed_since(start) < 3
    assert_tether_error(resp, 408, "request body stalled for 1000ms")
    wait_for(lambda: upstream.stats()["connections_open"] == 0, 3, "the upstream connection to close")
    assert upstream.stats()["completed"] == 0


def test_more_than_one_host_header_gets_400(start_proxy):
    tetherd, upstream = start_proxy()
    resp = fetch(tetherd.port, headers=[("Host", "a.example"), ("Host", "b.example")])
    assert_tether_error(resp, 400, "Host")
    assert upstream.stats()["requests"] == 0


def test_prewarming_a_down_upstream_backs_off(start_tetherd):
    """min_idle toward an upstream that refuses connections must not spin: connects back off,
    and once breaker_failures (5) of them failed the endpoint is ejected: a request then gets 503
    at once, naming the cause, with Retry-After."""
    config = (f"[tether]\nworkers = 1\n[upstream down]\nurl = http://127.0.0.1:{free_port()}\n"
              f"listen = 127.0.0.1:{free_port()}\nmin_idle = 2\n")
    tetherd = start_tetherd(config)
    time.sleep(0.5)
    cpu_before = process_cpu_seconds(tetherd.proc.pid)
    time.sleep(2)
    assert process_cpu_seconds(tetherd.proc.pid) - cpu_before < 0.2
    resp = fetch(tetherd.port)
    assert_tether_error(resp, 503, "circuit breaker open", "connection refused")
    assert int(resp.header("Retry-After")) >= 1, resp


def process_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
