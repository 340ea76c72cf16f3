"""Raw HTTP/1.1 client and small utilities for tether's integration tests.

The client frames messages itself so that tests see exactly what tetherd sent: status line,
headers in order and with duplicates, interim 1xx responses, chunked framing, and whether the
connection was closed. Every socket operation has a timeout, so a tetherd bug fails a test
instead of hanging it.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from upstream import HeaderList, body_pattern

IO_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]
_handed_out_ports = set()


def tetherd_binary():
    """The binary under test: $TETHERD, or build/tetherd in the repository."""
    return Path(os.environ.get("TETHERD", REPO_ROOT / "build" / "tetherd")).resolve()


def free_port():
    """A loopback TCP port that was free a moment ago and not handed out before in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def stop_process(proc, grace=5):
    """SIGTERM, then SIGKILL if `proc` has not exited within `grace` seconds; closes its stdout
    pipe."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def read_status(sock, timeout):
    """The status of the response on a raw socket ("400", "408"...), "eof" (a close with
    nothing), "reset", "timeout", or "garbled" (a first line that is no status line)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        if not data:
            return "reset"
    except socket.timeout:
        return "timeout"
    if not data:
        return "eof"
    parts = data.split(b" ", 2)
    return parts[1].decode("latin-1", "replace") if len(parts) > 1 else "garbled"


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ConnectionClosed(Exception):
    """The server closed the connection before a complete response; `partial` holds the bytes
    of the response read so far (head included)."""

    def __init__(self, message, partial=b""):
        super().__init__(message)
        self.partial = partial


class Response(HeaderList):
    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in order, duplicates kept
        self.body = b""
        self.chunked = False

    @property
    def conn_id(self):
        """Which upstream connection served this response (X-Upstream-Conn)."""
        return int(self.header("X-Upstream-Conn"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:80]!r}>"


def build_request(method="GET", target="/", headers=(), body=b"", version="HTTP/1.1"):
    """Request bytes. Adds "Host: tether.test" (HTTP/1.1, unless given) and Content-Length
    (when there is a body and neither Content-Length nor Transfer-Encoding is given). `body`
    is sent as is."""
    headers = list(headers)
    names = {name.lower() for name, _ in headers}
    if version == "HTTP/1.1" and "host" not in names:
        headers.insert(0, ("Host", "tether.test"))
    if body and not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(body))))
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk_encode(body, size=1000):
    """`body` in chunked encoding, chunks of `size` bytes, terminating chunk included."""
    out = bytearray()
    for pos in range(0, len(body), size):
        piece = body[pos : pos + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return bytes(out + b"0\r\n\r\n")


class Client:
    """One client TCP connection with a buffered response parser (pipelining safe)."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=(), body=b"", version="HTTP/1.1"):
        self.send(build_request(method, target, headers, body, version))
        return self.read_response(method)

    def _fill(self, what):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionClosed(f"connection closed while reading {what}", bytes(self.buf))
        self.buf += data

    def _take(self, n):
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_until(self, delim, what):
        while (end := self.buf.find(delim)) < 0:
            self._fill(what)
        return self._take(end + len(delim))[: -len(delim)]

    def read_exact(self, n, what="raw bytes"):
        while len(self.buf) < n:
            self._fill(what)
        return self._take(n)

    def read_head(self):
        """The next response head (possibly a 1xx), body not read."""
        raw = self._read_until(b"\r\n\r\n", "a response head")
        lines = raw.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version in ("HTTP/1.0", "HTTP/1.1"), f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name.strip() == name, f"bad header line {line!r}"
            headers.append((name, value.strip(" \t")))
        return Response(version, int(status), reason, headers)

    def read_response(self, method="GET"):
        """The next final response with its body, skipping interim 1xx responses. Raises
        ConnectionClosed if the connection ends before the response does."""
        resp = self.read_head()
        while resp.status < 200 and resp.status != 101:
            resp = self.read_head()
        return self.read_body(resp, method)

    def read_body(self, resp, method="GET"):
        """Reads the body of `resp`, whose head read_head() returned, into resp.body; returns
        resp."""
        if method == "HEAD" or resp.status in (101, 204, 304):
            return resp
        if "chunked" in resp.tokens("Transfer-Encoding"):
            resp.chunked = True
            resp.body = self._read_chunked()
        elif resp.header("Content-Length") is not None:
            resp.body = self.read_exact(int(resp.header("Content-Length")), "a response body")
        else:
            resp.body = self.read_until_closed()
        return resp

    def _read_chunked(self):
        body = bytearray()
        while True:
            size = int(self._read_until(b"\r\n", "a chunk size").split(b";")[0], 16)
            if size == 0:
                while self._read_until(b"\r\n", "the trailer section"):
                    pass
                return bytes(body)
            body += self.read_exact(size, "chunk data")
            assert self.read_exact(2, "a chunk end") == b"\r\n", "chunk longer than its size"

    def read_until_closed(self):
        """Everything up to the server's close (a reset counts as a close)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return self._take(len(self.buf))
            self.buf += data

    def closed_by_server(self, timeout=IO_TIMEOUT):
        """True once the server closes (EOF or RST) within `timeout`, having sent nothing more;
        False if the connection is still open then. Unexpected data fails the assertion."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        unexpected = bytes(self.buf) + data
        assert not unexpected, f"unexpected bytes from server: {unexpected!r}"
        return True


def fetch(port, method="GET", target="/", headers=(), body=b"", version="HTTP/1.1",
          host="127.0.0.1"):
    """One request on a fresh connection, closed afterwards (what a churning app does)."""
    with Client(port, host) as client:
        return client.request(method, target, headers, body, version)


def get_json(port, target, host="127.0.0.1"):
    resp = fetch(port, "GET", target, [("Connection", "close")], host=host)
    assert resp.status == 200, resp
    return json.loads(resp.body)


PROXY_STATUS_ERRORS = {  # RFC 9209 section 2.3
    "dns_timeout", "dns_error", "destination_not_found", "destination_unavailable",
    "destination_ip_prohibited", "destination_ip_unroutable", "connection_refused",
    "connection_terminated", "connection_timeout", "connection_read_timeout",
    "connection_write_timeout", "connection_limit_reached", "tls_protocol_error",
    "tls_certificate_error", "tls_alert_received", "http_request_error", "http_request_denied",
    "http_response_incomplete", "http_response_header_section_size", "http_response_header_size",
    "http_response_body_size", "http_response_trailer_section_size", "http_response_trailer_size",
    "http_response_transfer_coding", "http_response_content_coding", "http_response_timeout",
    "http_upgrade_failed", "http_protocol_error", "proxy_internal_response",
    "proxy_internal_error", "proxy_configuration_error", "proxy_loop_detected",
}


def proxy_status(resp):
    """(error type, details) from a Proxy-Status header naming tether, or None."""
    value = resp.header("Proxy-Status")
    if value is None:
        return None
    match = re.fullmatch(r'tether; error=([a-z_]+); details="((?:[^"\\]|\\.)*)"', value)
    assert match, f"malformed Proxy-Status: {value!r}"
    return match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))


def queue_length(admin_port, upstream="app"):
    """Requests waiting for a connection to upstream now, from tetherd's /stats: what tests
    wait on instead of sleeping until a request "must be" queued."""
    stats = get_json(admin_port, "/stats")
    (up,) = [u for u in stats["upstreams"] if u["name"] == upstream]
    return up["queue"]["length"]


def assert_tether_error(resp, status, *words, error=None):
    """An error generated by tetherd itself: status, text/plain, body "tether: ..." that
    mentions every word in `words` (case-insensitively), and a Proxy-Status header (RFC 9209)
    with a registered error type (`error`, when given) whose details repeat the body. 503
    carries Retry-After, 405 Allow."""
    assert resp.status == status, resp
    assert resp.header("X-Upstream-Conn") is None, f"response came from the upstream: {resp}"
    assert (resp.header("Content-Type") or "").startswith("text/plain"), resp
    assert resp.body.startswith(b"tether:"), resp
    for word in words:
        assert word.lower() in resp.text.lower(), f"{word!r} not named in {resp.body!r}"
    ps = proxy_status(resp)
    assert ps is not None, f"no Proxy-Status on tether's own {status}: {resp}"
    assert ps[0] in PROXY_STATUS_ERRORS, ps
    if error is not None:
        assert ps[0] == error, ps
    body = resp.text[len("tether: "):].rstrip("\n")
    if body.isascii() and body.isprintable():
        assert ps[1] == body, (ps, body)
    if status == 503:
        assert resp.header("Retry-After") == "1", resp
    if status == 405:
        assert "GET" in (resp.header("Allow") or ""), resp


class Sender:
    """Sends `data` on `client` from a thread, so a test can read the response concurrently
    (an echo of a large body would otherwise fill every buffer and stall both sides)."""

    def __init__(self, client, data):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(client, data), daemon=True)
        self._thread.start()

    def _run(self, client, data):
        try:
            client.send(data)
        except OSError as err:
            self._error = err

    def join(self):
        self._thread.join(IO_TIMEOUT)
        assert not self._thread.is_alive(), "sender still blocked"
        if self._error:
            raise self._error


def expect_100_continue(port):
    """POSTs 100 kB with Expect: 100-continue, sending the body only after the interim 100
    arrives (X-Request-Id "expect"); asserts the 100 and the upstream's digest of the body."""
    body = body_pattern(100_000)
    with Client(port, timeout=5) as client:
        client.send(build_request("POST", "/", [("Expect", "100-continue"),
                                                ("Content-Length", str(len(body))),
                                                ("X-Request-Id", "expect")]))
        interim = client.read_head()  # the body is withheld until 100 Continue arrives
        client.send(body)
        resp = client.read_response()
    assert interim.status == 100
    assert resp.status == 200
    assert resp.header("X-Request-Body-Sha256") == sha256(body)
