"""The scripted peers themselves, talked to directly (no tetherd).

If these fail, fix the harness before reading any other failure.
"""

import socket

import pytest

from helpers import wait_for, Client, ConnectionClosed, Sender, build_request, chunk_encode, fetch, sha256
from upstream import body_pattern


def test_connection_and_request_ids(start_upstream):
    upstream = start_upstream("--name", "u1")
    with Client(upstream.port) as client:
        ids = [client.request().header("X-Upstream-Req") for _ in range(3)]
    resp = fetch(upstream.port, "POST", "/p", [("X-Request-Id", "r1")], b"abc")
    assert ids == ["1", "2", "3"]
    assert (resp.conn_id, resp.header("X-Upstream-Name")) == (2, "u1")
    assert resp.header("X-Request-Body-Sha256") == sha256(b"abc")
    stats = upstream.stats()
    assert stats["connections_accepted"] == 2
    assert (stats["requests"], stats["completed"], stats["control_requests"]) == (4, 4, 1)
    assert stats["methods"] == {"GET": 3, "POST": 1}
    assert stats["bodies"]["r1"] == [{"sha256": sha256(b"abc"), "size": 3, "conn": 2}]
    assert stats["heads"][-1]["head"].startswith("POST /p HTTP/1.1\r\nHost: tether.test\r\n")


@pytest.mark.parametrize("framing", [[], [("X-Chunked", "1")], [("X-Close-Delimited", "1")]])
def test_response_framings(start_upstream, framing):
    upstream = start_upstream()
    resp = fetch(upstream.port, headers=[("X-Body-Size", "300000")] + framing)
    assert resp.body == body_pattern(300000)
    assert resp.chunked == bool(framing and framing[0][0] == "X-Chunked")


def test_bodiless_responses(start_upstream):
    upstream = start_upstream()
    with Client(upstream.port) as client:
        head = client.request("HEAD", headers=[("X-Body-Size", "10")])
        no_content = client.request(headers=[("X-Status", "204")])
        not_modified = client.request(headers=[("X-Status", "304")])
        assert client.request().body == b"ok\n"
    assert head.header("Content-Length") == "10"
    assert (no_content.status, not_modified.status) == (204, 304)


@pytest.mark.parametrize("chunked", [False, True])
def test_echo_streams_the_body_back(start_upstream, chunked):
    upstream = start_upstream()
    body = body_pattern(1 << 20)
    headers = [("X-Echo", "1"), ("X-Request-Id", "e")]
    if chunked:
        request = build_request("POST", "/", headers + [("Transfer-Encoding", "chunked")],
                                chunk_encode(body, 7000))
    else:
        request = build_request("POST", "/", headers, body)
    with Client(upstream.port) as client:
        sender = Sender(client, request)
        resp = client.read_response()
        sender.join()
    assert (resp.body == body, resp.chunked) == (True, chunked)
    # An echo's body is recorded once its last byte is echoed, which may follow the response.
    wait_for(lambda: "e" in upstream.stats()["bodies"], 3, "the echoed body to be recorded")
    assert upstream.stats()["bodies"]["e"][0]["sha256"] == sha256(body)


def test_expect_continue(start_upstream):
    upstream = start_upstream()
    with Client(upstream.port) as client:
        client.send(build_request("PUT", "/", [("Expect", "100-continue"),
                                               ("Content-Length", "3")]))
        assert client.read_head().status == 100
        client.send(b"xyz")
        resp = client.read_response()
    assert resp.header("X-Request-Body-Sha256") == sha256(b"xyz")


def test_in_flight_peak_counts_concurrent_requests(start_upstream):
    upstream = start_upstream()
    with Client(upstream.port) as first, Client(upstream.port) as second:
        for client in (first, second):
            client.send(build_request(headers=[("X-Delay-Ms", "300")]))
        assert first.read_response().status == second.read_response().status == 200
    assert upstream.stats()["in_flight_peak"] == 2


def test_reset_if_reused_resets_only_reused_connections(start_upstream):
    upstream = start_upstream()
    headers = [("X-Reset-If-Reused", "1"), ("X-Request-Id", "r")]
    with Client(upstream.port) as client:
        assert client.request("POST", "/", headers, b"one").status == 200
        client.send(build_request("POST", "/", headers, b"two"))
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            client.read_response()
    # The connection's thread records how it ended as it finishes closing.
    wait_for(lambda: upstream.stats()["reset_by_server"] == 1, 3, "the reset to be recorded")
    stats = upstream.stats()
    assert stats["resets"] == 1
    assert [b["size"] for b in stats["bodies"]["r"]] == [3]


def test_idle_close(start_upstream):
    upstream = start_upstream("--idle-close", "0.5", "--keepalive-hint", "9")
    with Client(upstream.port) as client:
        assert client.request().header("Keep-Alive") == "timeout=9"
        assert client.closed_by_server(timeout=3)
    # The connection's thread records how it ended as it finishes closing.
    wait_for(lambda: upstream.stats()["closed_by_server"] == 1, 3, "the close to be recorded")


def test_upgrade_becomes_raw_echo(start_upstream):
    upstream = start_upstream()
    with Client(upstream.port) as client:
        resp = client.request(headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert resp.status == 101
        client.send(b"\x00\x01 raw bytes")
        assert client.sock.recv(100) == b"\x00\x01 raw bytes"
    assert upstream.stats()["upgrades"] == 1


def test_garbage_gets_400(start_upstream):
    upstream = start_upstream()
    with Client(upstream.port) as client:
        client.send(b"\x16\x03\x01 hello\r\n\r\n")
        assert client.read_response().status == 400
        assert client.closed_by_server()
    assert upstream.stats()["bad_requests"] == 1


@pytest.mark.parametrize("mode, expected", [
    ("close", ConnectionClosed),
    ("reset", (ConnectionResetError, ConnectionClosed)),
    ("garbage", AssertionError),
    ("silent", socket.timeout),
    ("half-head", socket.timeout),
])
def test_badpeer_modes(start_badpeer, mode, expected):
    peer = start_badpeer(mode)
    with Client(peer.port, timeout=0.5) as client:
        client.send(build_request())
        with pytest.raises(expected):
            client.read_response()
    assert peer.accepted == 1
