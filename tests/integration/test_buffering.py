"""Request buffering: a body up to request_buffer is read before an upstream connection is taken,
so slow uploaders hold their own client connections and not the pool's; client_body_timeout
bounds the whole buffered body; larger bodies still stream."""

import time

import pytest

from helpers import Client, Sender, assert_tether_error, build_request, chunk_encode, fetch, sha256
from upstream import body_pattern

SLOW_HEAD = b"POST /slow HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\r\n"


def test_slow_uploaders_do_not_hold_the_pool(start_proxy):
    """Regression: four uploaders sending 1 byte at a time held every connection of a pool of
    four, and every other client got 503: the connection was taken before the body was in hand.
    Here one connection, four slow uploaders, and a GET that must still be served."""
    tetherd, upstream = start_proxy(upstream_cfg="max_connections = 1\nqueue_timeout = 500ms")
    slow = [Client(tetherd.port) for _ in range(4)]
    try:
        for client in slow:
            client.send(SLOW_HEAD + b"a")
        time.sleep(0.3)
        start = time.monotonic()
        resp = fetch(tetherd.port, "GET", "/fast")
        assert resp.status == 200, resp
        assert time.monotonic() - start < 0.5
        for byte in b"bcd":
            for client in slow:
                client.send(bytes([byte]))
            time.sleep(0.1)
        for client in slow:
            done = client.read_response("POST")
            assert done.status == 200
            assert done.header("X-Request-Body-Sha256") == sha256(b"abcd")
    finally:
        for client in slow:
            client.close()
    assert upstream.stats()["completed"] == 5


def test_request_buffer_0_streams_and_the_uploader_holds_the_connection(start_proxy):
    """With request_buffer = 0 a body streams as it comes, as before: the uploader holds the
    pool's only connection and the GET waits out queue_timeout."""
    tetherd, _ = start_proxy(upstream_cfg="max_connections = 1\nqueue_timeout = 300ms",
                             tether_cfg="request_buffer = 0")
    with Client(tetherd.port) as slow:
        slow.send(SLOW_HEAD + b"a")
        time.sleep(0.3)
        assert_tether_error(fetch(tetherd.port, "GET", "/fast"), 503, "queue_timeout")
        slow.send(b"bcd")
        assert slow.read_response("POST").status == 200


def test_body_trickling_past_client_body_timeout_gets_408(start_proxy):
    """The deadline is for the whole body, not per byte: a byte every 300 ms never trips the idle
    timeout, but the body is not in hand within client_body_timeout. Nothing reaches the
    upstream."""
    tetherd, upstream = start_proxy(tether_cfg="client_body_timeout = 1s")
    start = time.monotonic()
    with Client(tetherd.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n")
        resp = None
        for _ in range(20):
            try:
                client.send(b"x")
            except OSError:
                break
            client.sock.settimeout(0.3)
            try:
                resp = client.read_response()
                break
            except TimeoutError:
                continue
        assert resp is not None
        assert_tether_error(resp, 408, "client_body_timeout")
    assert 0.9 <= time.monotonic() - start < 3
    assert upstream.stats()["requests"] == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_past_request_buffer_still_stream(start_proxy, chunked):
    tetherd, upstream = start_proxy(tether_cfg="request_buffer = 16k")
    body = body_pattern(1_000_000)
    headers = [("Transfer-Encoding", "chunked")] if chunked else []
    wire = chunk_encode(body, 7000) if chunked else body
    with Client(tetherd.port) as client:
        sender = Sender(client, build_request("POST", "/big", headers, wire))
        resp = client.read_response("POST")
        sender.join()
    assert resp.status == 200
    assert resp.header("X-Request-Body-Sha256") == sha256(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_buffered_body_arriving_in_pieces_is_forwarded_whole(start_proxy, chunked):
    tetherd, upstream = start_proxy()
    body = body_pattern(50_000)
    headers = [("Transfer-Encoding", "chunked")] if chunked else []
    wire = build_request("POST", "/pieces", headers, chunk_encode(body, 3000) if chunked else body)
    with Client(tetherd.port) as client:
        for pos in range(0, len(wire), 10_000):
            client.send(wire[pos:pos + 10_000])
            time.sleep(0.02)
        resp = client.read_response("POST")
        assert resp.status == 200
        assert resp.header("X-Request-Body-Sha256") == sha256(body)
        assert client.request("GET", "/after").status == 200  # keep-alive carries on
