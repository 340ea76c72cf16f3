"""Large Content-Length response bodies relayed with splice(2) (`splice = on`, the default):
byte-exact, counted in tether_upstream_spliced_bytes_total (so each test shows the splice path
was taken), never past the body's end on a keep-alive upstream connection, and ended as the
buffered path ends them when the upstream closes mid-body. Large request bodies too
(tether_upstream_spliced_request_bytes_total), never when they are kept for a retry, never sent
twice. See docs/internals/tuning.md."""
import hashlib
import json
import socket

import pytest

from helpers import Client, assert_tether_error, build_request, fetch, free_port, sha256, wait_for
from upstream import body_pattern

MIB = 1 << 20


def start(start_upstream, start_tetherd, tmp_path, splice="on", upstream_args=(), extra=""):
    upstream = start_upstream(*upstream_args)
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    tetherd = start_tetherd(f"[tether]\nworkers = 1\nadmin = 127.0.0.1:{admin}\n"
                            f"access_log = {log}\n"
                            f"[upstream app]\nurl = http://127.0.0.1:{upstream.port}\n"
                            f"listen = 127.0.0.1:{port}\nsplice = {splice}\n{extra}")
    return tetherd, upstream, port, admin, log


def spliced(admin, key="spliced_bytes_total"):
    resp = fetch(admin, "GET", "/stats", [("Connection", "close")])
    assert resp.status == 200, resp
    return json.loads(resp.body)["upstreams"][0][key]


def spliced_up(admin):
    return spliced(admin, "spliced_request_bytes_total")


def read_response(sock, buf=b""):
    """(head bytes, sha256 of the body, body length, what followed) of one Content-Length
    response, streamed so that a 64 MiB body is never held whole."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"closed before the head: {buf[:200]!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    digest, got = hashlib.sha256(), 0
    while True:
        take = rest[:length - got]
        digest.update(take)
        got += len(take)
        rest = rest[len(take):]
        if got == length:
            return head, digest.hexdigest(), got, rest
        rest = sock.recv(1 << 20)
        if not rest:
            return head, digest.hexdigest(), got, b""


@pytest.mark.parametrize("splice", ["on", "off"])
@pytest.mark.parametrize("size", [10 * MIB + 12345, 64 * MIB])
def test_large_body_is_byte_exact(start_upstream, start_tetherd, tmp_path, splice, size):
    """Every byte arrives in order, with splice on and off; only `on` splices, and it splices
    all of the body except what came with the head and its last byte."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path, splice)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(build_request("GET", "/big", [("X-Body-Size", str(size))]))
        head, digest, got, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert got == size and digest == hashlib.sha256(body_pattern(size)).hexdigest()
    moved = spliced(admin)
    if splice == "on":
        assert size - 256 * 1024 <= moved < size, moved
    else:
        assert moved == 0


def test_small_body_is_not_spliced(start_upstream, start_tetherd, tmp_path):
    """Under the threshold (256 KiB still to come) a body takes the buffered path."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path)
    resp = fetch(port, "GET", "/small", [("X-Body-Size", str(200 * 1024))])
    assert resp.status == 200 and resp.body == body_pattern(200 * 1024)
    assert spliced(admin) == 0


def test_keepalive_upstream_connection_reused_after_a_spliced_body(start_upstream,
                                                                   start_tetherd, tmp_path):
    """The splice stops at the body's end: the next response on the same client and upstream
    connections is intact (a splice past the end would take its head into the pipe)."""
    tetherd, upstream, port, admin, log = start(start_upstream, start_tetherd, tmp_path)
    size = 8 * MIB + 7
    expected = hashlib.sha256(body_pattern(size)).hexdigest()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        rest = b""
        conns = []
        for i in range(3):
            sock.sendall(build_request("GET", f"/big{i}", [("X-Body-Size", str(size))]))
            head, digest, got, rest = read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 200") and got == size and digest == expected
            conns.append([line for line in head.split(b"\r\n")
                          if line.startswith(b"X-Upstream-Conn:")][0])
            assert rest == b""
        sock.sendall(build_request("GET", "/after", [("X-Body-Size", "5")]))
        head, digest, got, rest = read_response(sock)
        assert got == 5 and digest == hashlib.sha256(body_pattern(5)).hexdigest()
        assert b"X-Upstream-Req: 4" in head, head
    assert len(set(conns)) == 1, conns
    assert spliced(admin) >= 3 * (size - 256 * 1024)
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 4, 3, "four log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()][:3]
    assert all(line["status"] == 200 and line["bytes"] > size for line in lines), lines


def test_upstream_closing_mid_body(start_upstream, start_tetherd, tmp_path):
    """The upstream sends half of a 16 MiB body and closes: the client gets those bytes and
    then the connection ends (never a complete-looking response), logged as today."""
    tetherd, upstream, port, admin, log = start(start_upstream, start_tetherd, tmp_path)
    size = 16 * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(build_request("GET", "/cut", [("X-Body-Size", str(size)),
                                                   ("X-Close-Mid-Response", "1")]))
        head, digest, got, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert got < size
        assert digest == hashlib.sha256(body_pattern(size)[:got]).hexdigest()
    assert spliced(admin) > 0
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 1, 3, "a log line")
    line = json.loads(log.read_text().splitlines()[0])
    assert line["status"] == 200 and got < line["bytes"] < size, line


def test_bytes_past_the_body_are_never_spliced(start_upstream, start_tetherd, tmp_path):
    """An upstream that sends bytes past its Content-Length: the splice stops at the body's
    end, so the client gets exactly the body (a splice of "whatever is readable" would pass
    the extra bytes on as the start of the next response) and its next request is answered."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path)
    size = 4 * MIB + 3
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(build_request("GET", "/extra", [("X-Body-Size", str(size)),
                                                     ("X-Extra-Bytes", "5000")]))
        head, digest, got, rest = read_response(sock)
        assert got == size and digest == hashlib.sha256(body_pattern(size)).hexdigest()
        sock.sendall(build_request("GET", "/next", [("X-Body-Size", "5")]))
        head, digest, got, _ = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and got == 5, head
    assert spliced(admin) >= size - 256 * 1024


@pytest.mark.parametrize("splice", ["on", "off"])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_large_upload_is_byte_exact(start_upstream, start_tetherd, tmp_path, splice, method):
    """A 10 MiB body (over the default retry_buffer, so it is not kept) arrives whole and in
    order; with `on` all of it is spliced except what came with the head and its last byte."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path, splice)
    body = body_pattern(10 * MIB + 12345)
    resp = fetch(port, method, "/up", body=body)
    assert resp.status == 200, resp
    assert resp.header("X-Request-Body-Size") == str(len(body))
    assert resp.header("X-Request-Body-Sha256") == sha256(body)
    moved = spliced_up(admin)
    if splice == "on":
        assert len(body) - 256 * 1024 <= moved < len(body), moved
    else:
        assert moved == 0


def test_request_pipelined_after_a_spliced_upload(start_upstream, start_tetherd, tmp_path):
    """The splice stops at the body's end: a request sent right behind the body, in the same
    write, is parsed as the next request (a splice of whatever is readable would send it to
    the upstream as part of the body)."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path)
    body = body_pattern(4 * MIB + 3)
    with Client(port) as client:
        client.send(build_request("POST", "/up", body=body) +
                    build_request("GET", "/next", [("X-Body-Size", "5")]))
        first = client.read_response()
        second = client.read_response()
    assert first.header("X-Request-Body-Sha256") == sha256(body)
    assert second.status == 200 and second.body == body_pattern(5)
    assert second.header("X-Upstream-Target") == "/next"
    assert spliced_up(admin) >= len(body) - 256 * 1024


def test_upload_kept_for_a_retry_is_not_spliced_and_is_retried(start_upstream, start_tetherd,
                                                               tmp_path):
    """A PUT under retry_buffer is kept, never spliced (spliced bytes cannot be sent again), so
    it still goes again, whole, on a fresh connection after a stale one."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path,
                                              extra="retry_buffer = 8m\n")
    assert fetch(port).status == 200
    body = body_pattern(4 * MIB)
    resp = fetch(port, "PUT", "/up", [("X-Reset-If-Reused", "1")], body)
    assert resp.status == 200, resp
    assert resp.header("X-Request-Body-Sha256") == sha256(body)
    assert resp.header("X-Upstream-Conn") == "2"
    assert spliced_up(admin) == 0


def test_spliced_post_on_a_stale_connection_is_sent_once(start_upstream, start_tetherd,
                                                         tmp_path):
    """A large POST that meets a stale connection while its body is spliced gets a 502 that
    says why it was not retried, and the upstream saw it once."""
    tetherd, upstream, port, admin, _ = start(start_upstream, start_tetherd, tmp_path)
    assert fetch(port).status == 200
    resp = fetch(port, "POST", "/p", [("X-Reset-If-Reused", "1")], body_pattern(8 * MIB))
    assert_tether_error(resp, 502, "not retried because POST is not idempotent")
    assert upstream.stats()["requests"] == 2  # sent once


def test_upstream_reset_during_a_spliced_upload(start_upstream, start_tetherd, tmp_path):
    """A fresh connection reset while the body is spliced into it: 502, and tetherd goes on
    serving (the pipe with the body's bytes is closed, not reused for the next upload)."""
    tetherd, upstream, port, admin, log = start(start_upstream, start_tetherd, tmp_path)
    resp = fetch(port, "POST", "/p", [("X-Reset", "1")], body_pattern(8 * MIB))
    assert_tether_error(resp, 502, "upstream app", "connection")
    body = body_pattern(2 * MIB + 1)
    resp = fetch(port, "POST", "/again", body=body)
    assert resp.status == 200 and resp.header("X-Request-Body-Sha256") == sha256(body)
    assert spliced_up(admin) > 0
