"""Strict framing: every message whose length or boundaries two implementations could read
differently is refused and never forwarded.

The cases follow the classes of the public desync corpora (HTTP Garden, PortSwigger's smuggler,
T-Reqs). Requests go from a raw client to the real tetherd in front of a raw-socket upstream
(badpeer.py, "reply" mode) that records every byte it receives: a refused request must reach it
not at all, get tether's own 400 (or the status named) and end the client connection. Responses
come from that upstream as scripted bytes: a refused one gets tether's 502 in its place and the
upstream connection is closed by tether. docs/internals/framing.md explains each rule and what
nginx and HAProxy do with the same input (scripts/framing_compare.py feeds them this table).
"""

import socket
import time

import pytest

from helpers import Client, ConnectionClosed, assert_tether_error, free_port, wait_for

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HOST = b"Host: app.test\r\n"


def req(*lines, body=b""):
    """A request from raw lines (bytes), joined by CRLF and ended by an empty line."""
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post(*headers, body=b""):
    return req(b"POST / HTTP/1.1", b"Host: app.test", *headers, body=body)


# (id, raw request, status tether answers). Every one is refused before anything is forwarded.
BAD_REQUESTS = [
    # Bare CR and LF.
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare LF after a header", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400),
    ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    ("bare CR as a line end", b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", 400),
    ("bare CR in the request line", b"GET /\r HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("LF in the request line", b"GET /\n HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare LF ending the head", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    # Obsolete line folding.
    ("fold with a space", req(b"GET / HTTP/1.1", HOST[:-2], b"X-A: a", b" b"), 400),
    ("fold with a tab", req(b"GET / HTTP/1.1", HOST[:-2], b"X-A: a", b"\tb"), 400),
    ("fold after an empty first line",
     post(b"Transfer-Encoding:", b" chunked", body=b"0\r\n\r\n"), 400),
    ("fold of Content-Length", post(b"Content-Length:", b" 2", body=b"ab"), 400),
    ("first header line starts with a space", req(b"GET / HTTP/1.1", b" Host: x"), 400),
    ("header line of a single space", req(b"GET / HTTP/1.1", HOST[:-2], b" "), 400),
    # Whitespace around names and before colons.
    ("space before colon", req(b"GET / HTTP/1.1", b"Host : x"), 400),
    ("tab before colon", req(b"GET / HTTP/1.1", b"Host\t: x"), 400),
    ("space before colon of Transfer-Encoding",
     post(b"Transfer-Encoding : chunked", b"Content-Length: 3", body=b"0\r\n\r\n"), 400),
    ("space inside a name", post(b"Content Length: 2", body=b"ab"), 400),
    ("empty header name", req(b"GET / HTTP/1.1", HOST[:-2], b": x"), 400),
    ("header without colon", req(b"GET / HTTP/1.1", HOST[:-2], b"X-A b"), 400),
    # Content-Length: duplicate, list-valued, malformed.
    ("two equal Content-Length", post(b"Content-Length: 2", b"Content-Length: 2", body=b"ab"),
     400),
    ("two different Content-Length",
     post(b"Content-Length: 2", b"Content-Length: 3", body=b"abc"), 400),
    ("list-valued Content-Length", post(b"Content-Length: 2, 2", body=b"ab"), 400),
    ("Content-Length with a plus", post(b"Content-Length: +2", body=b"ab"), 400),
    ("negative Content-Length", post(b"Content-Length: -1", body=b"ab"), 400),
    ("hex Content-Length", post(b"Content-Length: 0x2", body=b"ab"), 400),
    ("empty Content-Length", post(b"Content-Length:", body=b"ab"), 400),
    ("Content-Length 2^63", post(b"Content-Length: 9223372036854775808", body=b"ab"), 400),
    ("Content-Length over 2^64", post(b"Content-Length: 18446744073709551616", body=b"ab"), 400),
    ("Content-Length and Transfer-Encoding",
     post(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("Transfer-Encoding and Content-Length",
     post(b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"), 400),
    # Unknown or stacked codings.
    ("unknown coding", post(b"Transfer-Encoding: gzip", body=b"ab"), 400),
    ("chunked not last", post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400),
    ("coding stacked before chunked",
     post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501),
    ("chunked twice in a list", post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
     400),
    ("two Transfer-Encoding headers",
     post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("identity coding", post(b"Transfer-Encoding: identity", body=b"ab"), 400),
    ("chunked with a parameter", post(b"Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n"),
     400),
    ("xchunked", post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400),
    ("vertical tab before chunked",
     post(b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n"), 400),
    ("Transfer-Encoding in HTTP/1.0",
     req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("Transfer-Encoding and Content-Length in HTTP/1.0",
     req(b"POST / HTTP/1.0", b"Content-Length: 5", b"Transfer-Encoding: chunked",
         body=b"0\r\n\r\n"), 400),
    # Chunk sizes and extensions.
    ("chunk size not hex", post(b"Transfer-Encoding: chunked", body=b"zz\r\nab\r\n0\r\n\r\n"),
     400),
    ("chunk size with 0x", post(b"Transfer-Encoding: chunked", body=b"0x2\r\nab\r\n0\r\n\r\n"),
     400),
    ("chunk size with a leading space",
     post(b"Transfer-Encoding: chunked", body=b" 2\r\nab\r\n0\r\n\r\n"), 400),
    ("chunk size with a trailing space",
     post(b"Transfer-Encoding: chunked", body=b"2 \r\nab\r\n0\r\n\r\n"), 400),
    ("negative chunk size", post(b"Transfer-Encoding: chunked", body=b"-2\r\nab\r\n0\r\n\r\n"),
     400),
    ("chunk size 2^63",
     post(b"Transfer-Encoding: chunked", body=b"8000000000000000\r\nab\r\n0\r\n\r\n"), 400),
    ("chunk size 2^64 + 2 (wraps to 2)",
     post(b"Transfer-Encoding: chunked", body=b"10000000000000002\r\nab\r\n0\r\n\r\n"), 400),
    ("chunk size with bare LF", post(b"Transfer-Encoding: chunked", body=b"2\nab\r\n0\r\n\r\n"),
     400),
    ("chunk data longer than its size",
     post(b"Transfer-Encoding: chunked", body=b"2\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk data with bare LF after it",
     post(b"Transfer-Encoding: chunked", body=b"2\r\nab\n0\r\n\r\n"), 400),
    ("chunk extension with bare LF",
     post(b"Transfer-Encoding: chunked", body=b"2;a\nb\r\nab\r\n0\r\n\r\n"), 400),
    ("chunk extension with a control byte",
     post(b"Transfer-Encoding: chunked", body=b"2;a=\x01\r\nab\r\n0\r\n\r\n"), 400),
    ("chunk extension over 1 KiB",
     post(b"Transfer-Encoding: chunked", body=b"2;a=" + b"x" * 2000 + b"\r\nab\r\n0\r\n\r\n"),
     400),
    ("fold in a trailer",
     post(b"Transfer-Encoding: chunked", body=b"2\r\nab\r\n0\r\nX-T: a\r\n b\r\n\r\n"), 400),
    ("fold after an empty trailer line",
     post(b"Transfer-Encoding: chunked", body=b"0\r\nX-T:\r\n\tb\r\n\r\n"), 400),
    ("space before colon in a trailer",
     post(b"Transfer-Encoding: chunked", body=b"0\r\nX-T : a\r\n\r\n"), 400),
    # NUL and control bytes.
    ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("NUL in the method", b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("NUL in a header name", req(b"GET / HTTP/1.1", HOST[:-2], b"X\x00A: b"), 400),
    ("NUL in a header value", req(b"GET / HTTP/1.1", HOST[:-2], b"X-A: a\x00b"), 400),
    ("control byte in a header value", req(b"GET / HTTP/1.1", HOST[:-2], b"X-A: a\x01b"), 400),
    ("DEL in a header name", req(b"GET / HTTP/1.1", HOST[:-2], b"X\x7fA: b"), 400),
    ("control byte in the target", b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("binary garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)), 400),
    # Request lines and request-target forms.
    ("HTTP/0.9 request line", b"GET /\r\n\r\n", 400),
    ("HTTP/2 version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("HTTP/1.2 version", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 400),
    ("lower-case version", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("tab as a separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("authority-form target on GET", b"GET app.test:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("asterisk target on GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("https absolute-form target", b"GET https://app.test/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("relative target", b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("CONNECT", b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n", 405),
    # Host.
    ("two Host headers", req(b"GET / HTTP/1.1", b"Host: a.test", b"Host: b.test"), 400),
    ("HTTP/1.1 without Host", req(b"GET / HTTP/1.1"), 400),
    ("Host with a space", req(b"GET / HTTP/1.1", b"Host: a b"), 400),
    ("Host with a slash", req(b"GET / HTTP/1.1", b"Host: a/b"), 400),
    ("Host with userinfo", req(b"GET / HTTP/1.1", b"Host: user@a.test"), 400),
    ("absolute-form with userinfo", req(b"GET http://user@a.test/ HTTP/1.1", HOST[:-2]), 400),
]


def reply_peer(start_badpeer, reply=OK_RESPONSE, then="hold"):
    return start_badpeer("reply", reply=reply, then=then)


def tether_for(start_tetherd, peer, extra=""):
    """tetherd in front of `peer` on a dedicated port; `extra`: more [tether] lines."""
    listen = free_port()
    extra = extra.replace("\n", "\n        ")
    return start_tetherd(f"""
        [tether]
        workers = 1
        {extra}
        [upstream app]
        url = http://127.0.0.1:{peer.port}
        listen = 127.0.0.1:{listen}
        response_timeout = 3s
    """)


@pytest.mark.parametrize("raw, status", [c[1:] for c in BAD_REQUESTS],
                         ids=[c[0] for c in BAD_REQUESTS])
def test_ambiguous_request_is_refused_and_never_forwarded(start_badpeer, start_tetherd, raw,
                                                          status):
    peer = reply_peer(start_badpeer)
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port, timeout=5) as client:
        client.send(raw)
        resp = client.read_response()
        assert client.closed_by_server(timeout=5)
    assert_tether_error(resp, status)
    assert resp.header("Connection") == "close"
    assert peer.bytes_received == 0, peer.received


def test_request_body_holding_a_request_is_only_a_body(start_badpeer, start_tetherd):
    """Framing by Content-Length: the body that looks like a request is relayed as the body."""
    peer = reply_peer(start_badpeer)
    tetherd = tether_for(start_tetherd, peer)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    with Client(tetherd.port) as client:
        client.send(post(b"Content-Length: %d" % len(smuggled), body=smuggled))
        assert client.read_response().status == 200
    received = peer.received[0]
    assert received.count(b"HTTP/1.1\r\n") == 2  # its own request line and the body's
    assert received.endswith(b"\r\n\r\n" + smuggled)


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
], ids=["space before colon", "CL.TE", "folded TE"])
def test_pipelining_stops_at_a_refused_request(start_badpeer, start_tetherd, bad):
    """A request pipelined behind good ones: the good ones are served, the bad one gets 400 and
    the connection ends, and nothing after it reaches the upstream."""
    peer = reply_peer(start_badpeer, reply=OK_RESPONSE * 2)
    tetherd = tether_for(start_tetherd, peer)
    good = b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n"
    after = b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n"
    with Client(tetherd.port) as client:
        client.send(good + bad + after)
        first = client.read_response()
        refused = client.read_response()
        assert client.closed_by_server()
    assert first.status == 200
    assert_tether_error(refused, 400)
    assert b"".join(peer.received).count(b"HTTP/1.1\r\n") == 1
    assert b"/first" in peer.received[0] and b"smuggled" not in peer.received[0]


def test_absolute_form_wins_over_host_in_proxy_mode(start_badpeer, start_tetherd):
    """RFC 9112 3.2.2: with an absolute-form target the Host header is ignored and replaced by
    the target's authority; tether routes by it and sends that Host on."""
    peer_a, peer_b = reply_peer(start_badpeer), reply_peer(start_badpeer)
    proxy = free_port()
    tetherd = start_tetherd(f"""
        [tether]
        workers = 1
        proxy_listen = 127.0.0.1:{proxy}
        [upstream a]
        url = http://127.0.0.1:{peer_a.port}
        hosts = a.test
        [upstream b]
        url = http://127.0.0.1:{peer_b.port}
        hosts = b.test
    """)
    with Client(tetherd.port) as client:
        client.send(b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n")
        assert client.read_response().status == 200
    assert peer_b.bytes_received == 0
    head = peer_a.received[0].decode("latin-1")
    assert head.startswith("GET /x HTTP/1.1\r\n")
    assert "Host: a.test\r\n" in head and "b.test" not in head


# (id, raw response, what the client gets). "502": tether's own 502 replaces the response and
# the upstream connection is closed.
BAD_RESPONSES = [
    ("status 000 with a body", b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok"),
    ("status 099", b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok"),
    ("status 600", b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok"),
    ("status 999", b"HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok"),
    ("two-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("control byte in the reason", b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok"),
    ("NUL in the reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok"),
    ("unsolicited 101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                        b"Connection: upgrade\r\n\r\nraw bytes"),
    ("1xx with a body", b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello"
                        + OK_RESPONSE),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    ("bare CR in a value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok"),
    ("fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
    ("fold after an empty first line", b"HTTP/1.1 200 OK\r\nContent-Length:\r\n 2\r\n\r\nok"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
    ("NUL in a value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
    ("two different Content-Length",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"),
    ("list-valued Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
    ("Content-Length 2^63",
     b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nok"),
    ("Content-Length and Transfer-Encoding",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("Transfer-Encoding in HTTP/1.0",
     b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("HTTP/2.0 status line", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("chunk size 2^63",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\nok"),
    ("chunk size not hex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok"),
    ("chunk data longer than its size",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokk\r\n0\r\n\r\n"),
    ("chunk extension over 1 KiB",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=" + b"x" * 2000
     + b"\r\nok\r\n0\r\n\r\n"),
    ("fold in a trailer",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
]


@pytest.mark.parametrize("raw", [c[1] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES])
def test_ambiguous_response_gets_502_and_the_upstream_connection_closes(start_badpeer,
                                                                        start_tetherd, raw):
    peer = reply_peer(start_badpeer, reply=raw)
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port, timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        resp = client.read_response()
    assert_tether_error(resp, 502)
    wait_for(lambda: peer.closed_by_proxy == 1, 3, "tether to close the upstream connection")


def test_malformed_chunked_body_before_anything_was_sent_is_a_502(start_badpeer, start_tetherd):
    """Regression: the head was accepted, then the body broke in the same read: the client got a
    bare FIN instead of a 502."""
    peer = reply_peer(start_badpeer, reply=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           b"5\r\nhelloXX0\r\n\r\n")
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port, timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        resp = client.read_response()
        assert_tether_error(resp, 502, "invalid response body")
        # The request was read whole and the client keeps its connection.
        assert resp.header("Connection") is None


def test_broken_chunked_body_after_the_head_was_sent_cuts_the_connection(start_badpeer,
                                                                         start_tetherd):
    """Once the head reached the client only the end of the connection can say the body is
    broken: never a complete-looking response."""
    peer = reply_peer(start_badpeer, reply=[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"zz\r\n"])
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port, timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert client.read_head().status == 200
        with pytest.raises(ConnectionClosed):
            client._read_chunked()
    wait_for(lambda: peer.closed_by_proxy == 1, 3, "tether to close the upstream connection")


def test_interim_responses_are_relayed_then_the_final_one(start_badpeer, start_tetherd):
    peer = reply_peer(start_badpeer, reply=b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                           b"HTTP/1.1 100 Continue\r\n\r\n" + OK_RESPONSE)
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert client.read_head().status == 103
        assert client.read_head().status == 100
        final = client.read_response()
    assert final.status == 200 and final.body == b"ok"


@pytest.mark.parametrize("method, reply", [
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello"),
    ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    ("GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            b"0\r\n\r\n"),
], ids=["HEAD", "304", "204", "204 chunked"])
def test_bodyless_response_with_a_body_is_relayed_without_it(start_badpeer, start_tetherd,
                                                             method, reply):
    """Responses to HEAD, 204 and 304 end with their head whatever they declare (RFC 9112 6.3):
    the head goes to the client, the stray bytes are never taken for the next response (that
    upstream connection is closed), and the client connection carries on."""
    peer = reply_peer(start_badpeer, reply=reply)
    tetherd = tether_for(start_tetherd, peer)
    with Client(tetherd.port) as client:
        client.send(f"{method} / HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
        resp = client.read_head()
        assert resp.status in (200, 204, 304)
        wait_for(lambda: peer.closed_by_proxy == 1, 3, "tether to close the upstream connection")
        peer.reply = OK_RESPONSE
        client.send(b"GET /next HTTP/1.1\r\nHost: app.test\r\n\r\n")
        nxt = client.read_response()
    assert nxt.status == 200 and nxt.body == b"ok"
    assert peer.accepted == 2


def test_431_is_read_by_a_client_still_sending(start_badpeer, start_tetherd):
    """Regression: a refused head was followed by close() with the client's bytes unread, so
    the kernel sent a reset that could destroy the 431 before the client read it. Now tether
    shuts its write side, drains, and closes once the client has."""
    peer = reply_peer(start_badpeer)
    tetherd = tether_for(start_tetherd, peer, "max_head_size = 4k")
    with socket.create_connection(("127.0.0.1", tetherd.port), timeout=5) as sock:
        # Far more than max_head_size, all sent before reading: unread bytes at tether's close.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Filler: " + b"a" * 300_000)
        time.sleep(0.3)  # tether answers and closes while most of this is still unread
        sock.sendall(b"a" * 10_000)
        data = b""
        while True:
            chunk = sock.recv(65536)  # a reset here fails the test
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert peer.bytes_received == 0


def test_lingering_close_ends_after_lingering_timeout(start_badpeer, start_tetherd):
    """A client that keeps sending after its 400 is not drained forever."""
    peer = reply_peer(start_badpeer)
    tetherd = tether_for(start_tetherd, peer, "lingering_timeout = 500ms")
    with socket.create_connection(("127.0.0.1", tetherd.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
        start = time.monotonic()
        got, ended = b"", None
        while ended is None and time.monotonic() - start < 4:
            try:
                sock.sendall(b"x" * 1000)
            except OSError:
                ended = time.monotonic() - start
                break
            sock.settimeout(0.05)
            try:
                chunk = sock.recv(65536)
                got += chunk
            except socket.timeout:
                pass
            except OSError:
                ended = time.monotonic() - start
    assert got.startswith(b"HTTP/1.1 400 ")
    assert ended is not None and ended < 3
