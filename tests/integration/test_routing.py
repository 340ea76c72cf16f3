"""Forward-proxy mode: routing by absolute URI or Host, and refusal of unknown hosts."""

import pytest
import requests

from helpers import Client, assert_tether_error, free_port


class ProxySetup:
    def __init__(self, tetherd, users, orders):
        self.tetherd = tetherd
        self.port = tetherd.port
        self.users = users
        self.orders = orders

    def request(self, raw):
        with Client(self.port) as client:
            client.send(raw)
            return client.read_response()

    def last_head(self, upstream):
        """(request line, {lower-case name: [values]}) of the last request `upstream` got."""
        lines = upstream.stats()["heads"][-1]["head"].split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.lower(), []).append(value.strip())
        return lines[0], headers


@pytest.fixture
def proxy_mode(start_upstream, start_tetherd):
    users = start_upstream("--name", "users")
    orders = start_upstream("--name", "orders")
    tetherd = start_tetherd(f"""
        [tether]
        workers = 1
        proxy_listen = 127.0.0.1:{free_port()}

        [upstream users]
        url = http://127.0.0.1:{users.port}
        hosts = users.internal

        [upstream orders]
        url = http://127.0.0.1:{orders.port}
        hosts = orders.internal, orders.internal:8080
    """)
    return ProxySetup(tetherd, users, orders)


def test_absolute_form_routes_by_uri_and_reaches_upstream_in_origin_form(proxy_mode):
    resp = proxy_mode.request(
        b"GET http://users.internal/x?y=1 HTTP/1.1\r\nHost: users.internal\r\n\r\n")
    assert (resp.status, resp.header("X-Upstream-Name")) == (200, "users")
    request_line, headers = proxy_mode.last_head(proxy_mode.users)
    assert request_line == "GET /x?y=1 HTTP/1.1"
    assert headers["host"] == ["users.internal"]
    assert proxy_mode.orders.stats()["requests"] == 0


def test_origin_form_routes_by_host(proxy_mode):
    resp = proxy_mode.request(b"GET /y HTTP/1.1\r\nHost: orders.internal\r\n\r\n")
    assert (resp.status, resp.header("X-Upstream-Name")) == (200, "orders")
    request_line, headers = proxy_mode.last_head(proxy_mode.orders)
    assert request_line == "GET /y HTTP/1.1"
    assert headers["host"] == ["orders.internal"]
    assert proxy_mode.users.stats()["requests"] == 0


def test_host_with_port_matches_a_host_port_entry(proxy_mode):
    resp = proxy_mode.request(b"GET / HTTP/1.1\r\nHost: orders.internal:8080\r\n\r\n")
    assert resp.header("X-Upstream-Name") == "orders"
    assert proxy_mode.last_head(proxy_mode.orders)[1]["host"] == ["orders.internal:8080"]


def test_host_matching_ignores_case(proxy_mode):
    resp = proxy_mode.request(b"GET / HTTP/1.1\r\nHost: USERS.Internal\r\n\r\n")
    assert resp.header("X-Upstream-Name") == "users"


def test_absolute_uri_wins_over_a_conflicting_host_header(proxy_mode):
    resp = proxy_mode.request(
        b"GET http://users.internal/z HTTP/1.1\r\nHost: orders.internal\r\n\r\n")
    assert resp.header("X-Upstream-Name") == "users"
    assert proxy_mode.last_head(proxy_mode.users)[1]["host"] == ["users.internal"]
    assert proxy_mode.orders.stats()["requests"] == 0


def test_one_client_connection_can_reach_several_upstreams(proxy_mode):
    with Client(proxy_mode.port) as client:
        names = [
            client.request("GET", f"http://{host}/", [("Host", host)]).header("X-Upstream-Name")
            for host in ("users.internal", "orders.internal", "users.internal")
        ]
    assert names == ["users", "orders", "users"]


def test_requests_library_through_http_proxy(proxy_mode):
    proxies = {"http": f"http://127.0.0.1:{proxy_mode.port}"}
    with requests.Session() as session:
        session.trust_env = False
        get = session.get("http://users.internal/r", proxies=proxies, timeout=10)
        post = session.post("http://orders.internal/p", data=b"hello", proxies=proxies,
                            headers={"X-Request-Id": "via-requests"}, timeout=10)
    assert (get.status_code, get.headers["X-Upstream-Name"], get.content) == (200, "users", b"ok\n")
    assert (post.status_code, post.headers["X-Upstream-Name"]) == (200, "orders")
    assert proxy_mode.orders.stats()["bodies"]["via-requests"][0]["size"] == 5


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    b"GET http://evil.example/ HTTP/1.1\r\nHost: users.internal\r\n\r\n",
], ids=["origin-form", "absolute-form", "absolute-form-with-known-host-header"])
def test_unknown_host_gets_403_and_reaches_no_upstream(proxy_mode, raw):
    resp = proxy_mode.request(raw)
    assert_tether_error(resp, 403, "evil.example")
    assert proxy_mode.users.stats()["requests"] == 0
    assert proxy_mode.orders.stats()["requests"] == 0


def test_connect_through_the_proxy_port_gets_405(proxy_mode):
    resp = proxy_mode.request(
        b"CONNECT users.internal:443 HTTP/1.1\r\nHost: users.internal:443\r\n\r\n")
    assert_tether_error(resp, 405, "CONNECT")
    assert proxy_mode.users.stats()["requests"] == 0
