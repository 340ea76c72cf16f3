"""Header rewriting: hop-by-hop headers stay on their hop, end-to-end headers pass untouched."""

from helpers import fetch

HOP_BY_HOP_REQUEST = [
    ("Connection", "keep-alive, X-Hop-One, x-hop-two"),
    ("X-Hop-One", "1"),
    ("X-Hop-Two", "2"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Upgrade", "h2c"),  # not a tunnel: Connection does not name upgrade
]
REMOVED = {"x-hop-one", "x-hop-two", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}

END_TO_END = [
    ("Accept", "text/plain"),
    ("X-Dup", "first"),
    ("Cookie", "a=1; b=2"),
    ("X-Dup", "second, with a comma"),
    ("User-Agent", "tether-test/1.0"),
    ("X-Dup", "third"),
    ("X-Inner-Spaces", "a  b   c"),
    ("authorization", "Bearer abc.def"),
    ("X-Empty", ""),
]


def upstream_head(upstream, index=-1):
    """(request line, [(name, value)]) of a request as the upstream received it."""
    lines = upstream.stats()["heads"][index]["head"].split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return lines[0], headers


def values(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


def connection_tokens(headers):
    return {t.strip().lower() for v in values(headers, "Connection") for t in v.split(",")}


def test_hop_by_hop_request_headers_are_removed(proxy):
    tetherd, upstream = proxy
    resp = fetch(tetherd.port, "GET", "/", HOP_BY_HOP_REQUEST + [("X-End", "kept")])
    assert resp.status == 200
    _, headers = upstream_head(upstream)
    names = {name.lower() for name, _ in headers}
    assert not names & REMOVED, headers
    assert connection_tokens(headers) <= {"keep-alive", ""}, headers
    assert values(headers, "X-End") == ["kept"]


def test_end_to_end_request_headers_pass_untouched_in_order(proxy):
    tetherd, upstream = proxy
    fetch(tetherd.port, "GET", "/", END_TO_END)
    _, headers = upstream_head(upstream)
    wanted = {name.lower() for name, _ in END_TO_END}
    forwarded = [(n.lower(), v) for n, v in headers if n.lower() in wanted]
    assert forwarded == [(n.lower(), v) for n, v in END_TO_END]


def test_request_line_target_is_forwarded_verbatim(proxy):
    tetherd, upstream = proxy
    target = "/a/b%2Fc/../d?x=1&y=%20&x=2"
    fetch(tetherd.port, "GET", target)
    request_line, _ = upstream_head(upstream)
    assert request_line == f"GET {target} HTTP/1.1"


def test_client_connection_close_is_not_forwarded(proxy):
    tetherd, upstream = proxy
    fetch(tetherd.port, "GET", "/", [("Connection", "close")])
    _, headers = upstream_head(upstream)
    assert "close" not in connection_tokens(headers), headers
    stats = upstream.stats()
    assert (stats["connections_open"], stats["closed_by_peer"]) == (1, 0)


def test_host_is_the_upstream_authority_by_default(proxy):
    tetherd, upstream = proxy
    fetch(tetherd.port, "GET", "/", [("Host", "app.example:8080")])
    _, headers = upstream_head(upstream)
    assert values(headers, "Host") == [f"127.0.0.1:{upstream.port}"]


def test_preserve_host_forwards_the_client_host(start_proxy):
    tetherd, upstream = start_proxy(upstream_cfg="preserve_host = yes")
    fetch(tetherd.port, "GET", "/", [("Host", "app.example:8080")])
    _, headers = upstream_head(upstream)
    assert values(headers, "Host") == ["app.example:8080"]


def test_hop_by_hop_response_headers_are_removed(start_proxy):
    tetherd, _ = start_proxy(upstream_args=("--keepalive-hint", "30"))
    resp = fetch(tetherd.port, "GET", "/", [
        ("X-Add-Header", "Connection: X-Resp-Hop"),
        ("X-Add-Header", "X-Resp-Hop: secret"),
        ("X-Add-Header", "Set-Cookie: a=1; Path=/"),
        ("X-Add-Header", "X-Resp-Dup: one"),
        ("X-Add-Header", "Set-Cookie: b=2; Path=/"),
        ("X-Add-Header", "X-Resp-Dup: two"),
    ])
    assert resp.status == 200
    assert resp.header("X-Resp-Hop") is None, resp.headers
    assert "x-resp-hop" not in resp.tokens("Connection")
    assert "timeout=30" not in resp.all("Keep-Alive"), "upstream's Keep-Alive leaked to client"
    assert resp.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert resp.all("X-Resp-Dup") == ["one", "two"]


def test_connection_cannot_strip_framing_or_host(proxy):
    """`Connection: content-length` would strip the framing tetherd relays the body by, and the
    body would reach the upstream as a second request on a shared connection (smuggling)."""
    tetherd, upstream = proxy
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = fetch(tetherd.port, "POST", "/a",
                 [("Connection", "content-length, host, transfer-encoding")], smuggled)
    assert resp.status == 200
    assert resp.header("X-Request-Body-Size") == str(len(smuggled))
    stats = upstream.stats()
    assert stats["requests"] == 1
    assert "GET" not in stats["methods"]
