"""Upgrade requests become a raw two-way tunnel on an upstream connection of their own."""

from helpers import Client, Sender, fetch, wait_for
from upstream import body_pattern

UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]


def test_upgrade_tunnels_both_ways(proxy):
    tetherd, upstream = proxy
    payload = body_pattern(256 * 1024)
    with Client(tetherd.port) as client:
        resp = client.request("GET", "/ws", UPGRADE)
        assert resp.status == 101
        assert resp.header("Upgrade") == "websocket"
        assert "upgrade" in resp.tokens("Connection")
        client.send(b"\x81\x05hello")
        assert client.read_exact(7) == b"\x81\x05hello"
        sender = Sender(client, payload)
        assert client.read_exact(len(payload)) == payload
        sender.join()
    head = upstream.stats()["heads"][-1]["head"].lower()
    assert "\r\nupgrade: websocket" in head
    assert "\r\nsec-websocket-version: 13" in head
    assert upstream.stats()["upgrades"] == 1


def test_tunnel_close_by_client_closes_the_upstream_side(proxy):
    tetherd, upstream = proxy
    with Client(tetherd.port) as client:
        assert client.request("GET", "/ws", UPGRADE).status == 101
    wait_for(lambda: upstream.stats()["connections_open"] == 0, 3,
             "the tunnel's upstream connection to close")


def test_tunnelled_connection_is_never_reused(proxy):
    tetherd, upstream = proxy
    fetch(tetherd.port)  # leaves an idle pooled connection that the upgrade may take
    with Client(tetherd.port) as client:
        tunnel = client.request("GET", "/ws", UPGRADE)
        assert tunnel.status == 101
        raw = b"GET /inside HTTP/1.1\r\nHost: x\r\n\r\n"
        client.send(raw)  # tunnelled bytes, not a request
        assert client.read_exact(len(raw)) == raw
    after = fetch(tetherd.port, "GET", "/after")
    assert after.header("X-Upstream-Target") == "/after"
    assert after.conn_id != tunnel.conn_id
    assert upstream.stats()["requests"] == 3
