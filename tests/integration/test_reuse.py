"""Connection pooling: which upstream connection served each request, and when pooled
connections are kept, evicted or capped."""

import threading
import time

from helpers import assert_tether_error, fetch, free_port, queue_length, wait_for
from upstream import body_pattern


def test_thousand_fresh_client_connections_share_one_upstream_connection(proxy):
    tetherd, upstream = proxy  # one worker: one pool
    conn_ids = set()
    deadline = time.monotonic() + 60
    for i in range(1000):
        resp = fetch(tetherd.port, "GET", f"/{i}")
        assert resp.status == 200, resp
        conn_ids.add(resp.conn_id)
        assert time.monotonic() < deadline, f"only {i} requests in 60s"
    assert conn_ids == {1}
    stats = upstream.stats()
    assert (stats["connections_accepted"], stats["requests"]) == (1, 1000)


def test_connection_closed_by_upstream_while_idle_is_evicted(start_proxy):
    # A fixed idle_timeout: tetherd must not learn to close first, the upstream closes each time.
    tetherd, upstream = start_proxy(upstream_args=("--idle-close", "0.5"),
                                    upstream_cfg="idle_timeout = 60s")
    for expected_conn in (1, 2, 3):
        resp = fetch(tetherd.port)
        assert (resp.status, resp.conn_id) == (200, expected_conn)
        wait_for(lambda: upstream.stats()["closed_by_server"] == expected_conn, 3,
                 "the upstream to close its idle connection")
        time.sleep(0.1)  # let tetherd see the FIN
    stats = upstream.stats()
    assert stats["requests"] == 3  # no request was lost on a dead connection
    assert stats["resets"] == 0


def test_configured_idle_timeout_closes_pooled_connections(start_proxy):
    tetherd, upstream = start_proxy(upstream_cfg="idle_timeout = 1s")
    fetch(tetherd.port)
    start = time.monotonic()
    time.sleep(0.5)
    assert upstream.stats()["connections_open"] == 1
    wait_for(lambda: upstream.stats()["connections_open"] == 0, 3,
             "tetherd to close the idle connection")
    assert time.monotonic() - start >= 0.9
    stats = upstream.stats()
    assert (stats["closed_by_peer"], stats["closed_by_server"]) == (1, 0)


def test_auto_idle_timeout_stays_under_the_keepalive_hint(start_proxy):
    tetherd, upstream = start_proxy(upstream_args=("--keepalive-hint", "3"))
    fetch(tetherd.port)
    wait_for(lambda: upstream.stats()["connections_open"] == 0, 5,
             "the idle connection to be closed")
    stats = upstream.stats()
    assert (stats["closed_by_peer"], stats["closed_by_server"]) == (1, 0), \
        "tetherd should close before the upstream's advertised 3s"


def test_auto_idle_timeout_learns_from_observed_idle_closes(start_proxy):
    tetherd, upstream = start_proxy(upstream_args=("--idle-close", "2"))
    assert fetch(tetherd.port).conn_id == 1
    wait_for(lambda: upstream.stats()["closed_by_server"] == 1, 4,
             "the upstream to close the first idle connection")
    time.sleep(0.1)
    assert fetch(tetherd.port).conn_id == 2
    wait_for(lambda: upstream.stats()["connections_open"] == 0, 4,
             "the second idle connection to be closed")
    stats = upstream.stats()
    assert (stats["closed_by_peer"], stats["closed_by_server"]) == (1, 1), \
        "after one idle close by the upstream, tetherd should close its next idle connection first"


def test_request_on_a_stale_reused_connection_is_retried(proxy):
    tetherd, upstream = proxy
    assert fetch(tetherd.port).conn_id == 1
    resp = fetch(tetherd.port, "GET", "/retried", [("X-Reset-If-Reused", "1"),
                                                   ("X-Request-Id", "stale")])
    assert resp.status == 200, resp
    assert resp.conn_id == 2
    stats = upstream.stats()
    assert stats["resets"] == 1
    assert len(stats["bodies"]["stale"]) == 1


def test_upstream_connection_close_is_honoured(start_proxy):
    tetherd, upstream = start_proxy(upstream_args=("--max-requests-per-conn", "3"))
    conn_ids = [fetch(tetherd.port).conn_id for _ in range(7)]
    assert conn_ids == [1, 1, 1, 2, 2, 2, 3]
    assert upstream.stats()["connections_accepted"] == 3


def run_concurrently(port, clients, requests_each, body_size, delay_ms=0):
    """`clients` threads, each making `requests_each` requests on fresh connections; returns
    the failures (empty when every response was a 200 with the right body)."""
    headers = [("X-Body-Size", str(body_size)), ("X-Delay-Ms", str(delay_ms))]
    expected = body_pattern(body_size)
    failures = []

    def client_loop():
        for _ in range(requests_each):
            try:
                resp = fetch(port, "GET", "/", headers)
            except OSError as err:
                failures.append(err)
                continue
            if resp.status != 200 or resp.body != expected:
                failures.append(resp)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "clients still running after 60s"
    return failures


def test_max_connections_caps_upstream_connections_across_workers(start_proxy):
    tetherd, upstream = start_proxy(upstream_cfg="max_connections = 2", workers=2)
    failures = run_concurrently(tetherd.port, 4, 4, body_size=1000, delay_ms=150)
    assert not failures
    stats = upstream.stats()
    assert stats["in_flight_peak"] <= 2
    assert stats["requests"] == 16


def test_concurrent_clients_reuse_pooled_connections(start_proxy):
    tetherd, upstream = start_proxy(workers=2)
    failures = run_concurrently(tetherd.port, 8, 50, body_size=20000)
    assert not failures
    stats = upstream.stats()
    assert stats["requests"] == 400
    assert stats["connections_accepted"] <= 16, "each worker needs at most 8 connections"



def test_post_on_a_stale_connection_is_not_retried_because_it_is_not_idempotent(proxy):
    tetherd, upstream = proxy
    assert fetch(tetherd.port).conn_id == 1
    resp = fetch(tetherd.port, "POST", "/p", [("X-Reset-If-Reused", "1")], b"x")
    assert_tether_error(resp, 502, "not retried because POST is not idempotent")
    assert "retry_buffer" not in resp.text  # the one reason, not a choice of two
    assert upstream.stats()["requests"] == 2  # sent once


def test_put_over_retry_buffer_on_a_stale_connection_is_not_retried_and_says_so(start_proxy):
    tetherd, upstream = start_proxy(upstream_cfg="retry_buffer = 16")
    assert fetch(tetherd.port).conn_id == 1
    resp = fetch(tetherd.port, "PUT", "/p", [("X-Reset-If-Reused", "1")], b"y" * 100)
    assert_tether_error(resp, 502, "not retried because its body exceeds retry_buffer (16 bytes)")
    assert "idempotent" not in resp.text
    assert upstream.stats()["requests"] == 2


def test_retry_waiting_for_a_connection_gets_504_at_response_timeout(start_proxy):
    """A request whose reused connection failed after it was sent is retried; the retry waits in
    the queue (max_connections = 1, the slot went to a request queued meanwhile). The first
    attempt's response_timeout still runs there, and when it fires the client gets a 504 (it used
    to get its connection closed without any response)."""
    admin = free_port()
    tetherd, upstream = start_proxy(
        upstream_cfg="max_connections = 1\nresponse_timeout = 2s\nqueue_timeout = 10s",
        tether_cfg=f"admin = 127.0.0.1:{admin}")
    assert fetch(tetherd.port).conn_id == 1
    results = {}

    def send(name, headers):
        results[name] = fetch(tetherd.port, "GET", "/" + name, headers)

    # a: reset on connection 1 a second after it arrives, so b can queue meanwhile.
    a = threading.Thread(target=send, args=("a", [("X-Reset-On-Conn", "1"),
                                                  ("X-Delay-Ms", "1000")]))
    a.start()
    wait_for(lambda: upstream.stats()["requests"] == 2, 5, "a to reach the upstream")
    # b: answered 1.5 s after it is sent, 2.5 s after a was: within its own response_timeout,
    # after the one of a, whose retry waits for b's connection.
    b = threading.Thread(target=send, args=("b", [("X-Delay-Ms", "1500")]))
    b.start()
    wait_for(lambda: queue_length(admin) == 1, 5, "b to be queued")
    a.join(15)
    b.join(15)
    assert upstream.stats()["resets"] == 1  # a's retry was queued behind b, never sent
    assert_tether_error(results["a"], 504, "did not respond within 2000ms", "retry")
    assert results["b"].status == 200 and results["b"].conn_id == 2
