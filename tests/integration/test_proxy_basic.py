"""Request and response correctness through a dedicated tetherd port."""

import socket
import time

import pytest
import requests

from helpers import (Client, Sender, build_request, chunk_encode, expect_100_continue, fetch,
                     sha256)
from upstream import body_pattern

TEN_MIB = 10 << 20


def http_session():
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment
    return session


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
def test_methods_with_a_real_client(proxy, method):
    tetherd, upstream = proxy
    body = b"payload of " + method.encode() if method in ("POST", "PUT", "DELETE") else b""
    with http_session() as session:
        resp = session.request(
            method, f"http://127.0.0.1:{tetherd.port}/m/{method}?q=1&r=%20",
            headers={"X-Body-Size": "1234", "X-Request-Id": method}, data=body, timeout=10,
        )
    assert resp.status_code == 200
    assert resp.headers["X-Upstream-Method"] == method
    assert resp.headers["X-Upstream-Target"] == f"/m/{method}?q=1&r=%20"
    assert resp.headers["Content-Length"] == "1234"
    assert resp.content == (b"" if method == "HEAD" else body_pattern(1234))
    stats = upstream.stats()
    assert stats["methods"] == {method: 1}
    assert stats["bodies"][method] == [{"sha256": sha256(body), "size": len(body), "conn": 1}]


def test_empty_bodies(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        post = client.request("POST", "/", [("Content-Length", "0"), ("X-Request-Id", "empty"),
                                            ("X-Body-Size", "0")])
        after = client.request("GET", "/after")
    assert (post.status, post.header("Content-Length"), post.body) == (200, "0", b"")
    assert after.header("X-Upstream-Target") == "/after"
    assert upstream.stats()["bodies"]["empty"][0]["size"] == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_download(proxy, chunked):
    tetherd, _ = proxy
    headers = [("X-Body-Size", str(TEN_MIB))] + ([("X-Chunked", "1")] if chunked else [])
    resp = fetch(tetherd.port, headers=headers)
    assert resp.status == 200
    assert len(resp.body) == TEN_MIB
    assert sha256(resp.body) == sha256(body_pattern(TEN_MIB))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload(proxy, chunked):
    tetherd, upstream = proxy
    body = body_pattern(TEN_MIB)
    headers = [("X-Request-Id", "up")]
    if chunked:
        request = build_request("POST", "/", headers + [("Transfer-Encoding", "chunked")],
                                chunk_encode(body, 100_000))
    else:
        request = build_request("POST", "/", headers, body)
    with Client(tetherd.port) as client:
        sender = Sender(client, request)
        resp = client.read_response()
        sender.join()
    assert resp.status == 200
    assert resp.header("X-Request-Body-Sha256") == sha256(body)
    assert upstream.stats()["bodies"]["up"] == [{"sha256": sha256(body), "size": TEN_MIB,
                                                  "conn": 1}]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_body_streamed_both_ways(proxy, chunked):
    """The upstream echoes while it reads: with bounded buffers this only completes if tetherd
    relays both directions at once."""
    tetherd, upstream = proxy
    body = body_pattern(TEN_MIB)
    headers = [("X-Echo", "1"), ("X-Request-Id", "echo")]
    if chunked:
        request = build_request("PUT", "/", headers + [("Transfer-Encoding", "chunked")],
                                chunk_encode(body, 65_536))
    else:
        request = build_request("PUT", "/", headers, body)
    with Client(tetherd.port) as client:
        sender = Sender(client, request)
        resp = client.read_response("PUT")
        sender.join()
    assert resp.status == 200
    assert sha256(resp.body) == sha256(body)
    assert upstream.stats()["bodies"]["echo"][0]["sha256"] == sha256(body)


def test_chunked_request_with_extensions_and_trailer(proxy):
    tetherd, upstream = proxy
    body = b"".join(
        [b"5;ext=1\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n", b"0\r\nX-Trailer: t\r\n\r\n"]
    )
    headers = [("Transfer-Encoding", "chunked"), ("X-Request-Id", "c")]
    resp = fetch(tetherd.port, "POST", "/", headers, body)
    assert resp.status == 200
    assert resp.header("X-Request-Body-Sha256") == sha256(b"hello world")
    assert upstream.stats()["bodies"]["c"][0]["size"] == 11


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_keep_the_connection_usable(proxy, status):
    tetherd, _ = proxy
    with Client(tetherd.port) as client:
        resp = client.request("GET", "/", [("X-Status", str(status))])
        after = client.request("GET", "/after")
    assert (resp.status, resp.body) == (status, b"")
    assert resp.header("Transfer-Encoding") is None
    assert after.header("X-Upstream-Target") == "/after"


def test_head_response_has_no_body(proxy):
    tetherd, _ = proxy
    with Client(tetherd.port) as client:
        head = client.request("HEAD", "/", [("X-Body-Size", "5000")])
        after = client.request("GET", "/after")
    assert head.header("Content-Length") == "5000"
    assert after.body == b"ok\n"  # a HEAD answered with a body would show up here


def test_expect_100_continue(proxy):
    tetherd, upstream = proxy
    expect_100_continue(tetherd.port)
    assert len(upstream.stats()["bodies"]["expect"]) == 1


def test_pipelined_requests_answered_in_order(proxy):
    tetherd, upstream = proxy
    requests_bytes = b"".join([
        build_request("GET", "/first", [("X-Delay-Ms", "300")]),
        build_request("POST", "/second", [("X-Request-Id", "p")], b"pipelined body"),
        build_request("GET", "/third", [("X-Body-Size", "70000"), ("X-Chunked", "1")]),
    ])
    with Client(tetherd.port) as client:
        client.send(requests_bytes)
        responses = [client.read_response() for _ in range(3)]
    assert [r.header("X-Upstream-Target") for r in responses] == ["/first", "/second", "/third"]
    assert responses[1].header("X-Request-Body-Sha256") == sha256(b"pipelined body")
    assert responses[2].body == body_pattern(70000)
    assert len(upstream.stats()["bodies"]["p"]) == 1


def test_http10_client_without_keepalive_gets_dechunked_body(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        resp = client.request("GET", "/old", [("X-Body-Size", "50000"), ("X-Chunked", "1")],
                              version="HTTP/1.0")
        assert client.closed_by_server(), "HTTP/1.0 without keep-alive: connection must close"
    assert resp.status == 200
    assert not resp.chunked and resp.header("Transfer-Encoding") is None
    assert resp.body == body_pattern(50000)
    # the upstream connection outlives the HTTP/1.0 client connection
    assert fetch(tetherd.port).conn_id == resp.conn_id
    assert upstream.stats()["connections_accepted"] == 1


def test_http10_client_with_keepalive(proxy):
    tetherd, upstream = proxy
    headers = [("Connection", "keep-alive"), ("X-Body-Size", "1000")]
    with Client(tetherd.port) as client:
        first = client.request("GET", "/one", headers, version="HTTP/1.0")
        second = client.request("GET", "/two", headers, version="HTTP/1.0")
    for resp in (first, second):
        assert resp.status == 200 and resp.body == body_pattern(1000)
        assert "keep-alive" in resp.tokens("Connection")
    assert second.header("X-Upstream-Target") == "/two"
    assert upstream.stats()["connections_accepted"] == 1


def test_http10_keepalive_client_gets_chunked_upstream_response_dechunked(proxy):
    tetherd, _ = proxy
    headers = [("Connection", "keep-alive"), ("X-Body-Size", "30000"), ("X-Chunked", "1")]
    with Client(tetherd.port) as client:
        resp = client.request("GET", "/", headers, version="HTTP/1.0")
    assert not resp.chunked and resp.header("Transfer-Encoding") is None
    assert resp.body == body_pattern(30000)


def test_client_keepalive_reuses_one_upstream_connection(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        ids = [client.request("GET", f"/{i}").conn_id for i in range(5)]
        assert not client.closed_by_server(timeout=0.2)
    assert ids == [1] * 5
    assert upstream.stats()["connections_accepted"] == 1


def test_client_connection_close_keeps_the_upstream_connection(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        first = client.request("GET", "/", [("Connection", "close")])
        assert client.closed_by_server()
    assert "close" in first.tokens("Connection")
    second = fetch(tetherd.port)
    assert second.conn_id == first.conn_id
    stats = upstream.stats()
    assert (stats["connections_accepted"], stats["connections_open"]) == (1, 1)


def test_close_delimited_upstream_response(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        resp = client.request("GET", "/", [("X-Close-Delimited", "1"), ("X-Body-Size", "1000000")])
        # The client connection may stay open only if tetherd re-framed the body.
        if resp.header("Content-Length") is None and not resp.chunked:
            assert client.closed_by_server()
    assert resp.body == body_pattern(1000000)
    after = fetch(tetherd.port)
    assert after.status == 200
    assert after.conn_id != resp.conn_id
    assert upstream.stats()["connections_accepted"] == 2


def test_a_nagle_client_is_not_held_by_delayed_acks(proxy):
    """Listeners delay their ACKs so that the response carries them. A client with Nagle's
    algorithm on that writes a head, then a body, sends the body only once the head is
    acknowledged: tetherd acknowledges a request whose rest has not arrived at once, on a new
    connection and on one that already served a request, instead of after the delayed-ACK timer
    (40 ms or more). The best of three tries per case, so one slow moment cannot fail it."""
    tetherd, upstream = proxy

    def exchange_ms(client, request_id):
        head = build_request("POST", "/nagle", [("Content-Length", "5"),
                                                ("X-Request-Id", request_id)])
        start = time.monotonic()
        client.send(head)
        client.send(b"hello")
        assert client.read_response("POST").status == 200
        return (time.monotonic() - start) * 1000

    new_conn, reused_conn = [], []
    for attempt in range(3):
        with Client(tetherd.port) as client:
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            new_conn.append(exchange_ms(client, f"new{attempt}"))
            reused_conn.append(exchange_ms(client, f"reused{attempt}"))
    assert min(new_conn) < 30 and min(reused_conn) < 30, (new_conn, reused_conn)
    bodies = upstream.stats()["bodies"]
    assert all(bodies[f"{kind}{n}"][0]["size"] == 5 for kind in ("new", "reused") for n in range(3))
