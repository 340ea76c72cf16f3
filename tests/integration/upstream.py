#!/usr/bin/python3
"""Scriptable HTTP/1.1 upstream server for tether's integration tests.

    upstream.py --port 0 [--host ADDR] [--name NAME] [--idle-close S] [--keepalive-hint N]
                [--max-requests-per-conn N] [--keep-heads N] [--record FILE]
                [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM] [--tls-min-version V]
                 [--tls-max-version V] [--tls-close-without-fin]]

Prints "PORT <n>" as its first stdout line once it listens, and "CONTROL <m>" on the second:
a port that serves only GET /__stats and whose connections are not counted. Then it serves
every TCP connection on its own thread until killed. It frames messages itself (no
http.server) so that tests control every byte.

With --tls-cert and --tls-key the service port speaks HTTPS instead (the control port stays
plain HTTP): each connection's TLS handshake runs on its thread, then HTTP/1.1 is served over TLS
exactly as over TCP. A connection the server closes gets a close_notify first.

Every response carries:
    X-Upstream-Conn     sequential id of the TCP connection (1, 2, ...)
    X-Upstream-Req      index of the request on that connection (1, 2, ...)
    X-Upstream-Name     the --name option, when given
    X-Upstream-Method, X-Upstream-Target   the request line as received
    X-Request-Body-Size, X-Request-Body-Sha256   what arrived, when the body is read before
                        the response is sent (every response except echoes)

Request headers that script the response:
    X-Status: N              response status (default 200)
    X-Body-Size: N           body of N bytes of body_pattern() (default: b"ok\\n")
    X-Chunked: 1             chunked response, chunks of varied sizes
    X-Close-Delimited: 1     no Content-Length nor chunking: the body ends when the server closes
    X-Echo: 1                stream the request body back as it arrives (chunked if it was)
    X-Delay-Ms: N            wait N ms before the status line
    X-Close-Mid-Response: 1  send the head and half of the body, then close
    X-Body-Pauses: K,MS      send the body in K+1 parts with a pause of MS ms before each but
                             the first (the head goes with the first)
    X-Extra-Bytes: N         N more bytes the framing does not account for, in the response's
                             TCP segment (in TLS mode: a record of their own)
    X-No-Close-Notify: 1     in TLS mode, when the server closes after this response: a bare FIN,
                             no close_notify (a cut stream, as an attacker on the path makes it)
    X-Reset: 1               reset the connection (RST) instead of responding
    X-Reset-If-Reused: 1     reset, unread, if the connection already carried a request
    X-Reset-On-Conn: N       reset, unread, if this is TCP connection N (after X-Delay-Ms)
    X-Add-Header: N: V       append header "N: V" to the response (repeatable, kept in order)
    Expect: 100-continue     answered with "100 Continue" before the body is read
    Upgrade + Connection: upgrade   "101 Switching Protocols", then a raw byte echo

In TLS mode every response also carries, for its connection:
    X-Upstream-Tls-Version   "TLSv1.3", "TLSv1.2"
    X-Upstream-Tls-Resumed   1 if the handshake resumed a session, else 0
    X-Upstream-Tls-Client    the client certificate's subject ("O=...,CN=..."), or "-"

Server options:
    --idle-close S           silently close a connection idle for S seconds
    --keepalive-hint N       send "Keep-Alive: timeout=N" and close after N seconds idle
    --close-lag-ms MS        with --idle-close: the FIN leaves MS after the decision to close;
                             a request arriving in between is reset (the race over a network)
    --max-requests-per-conn N   answer the Nth request of a connection with Connection: close
    --status-for PATH=N      answer requests for PATH with status N (X-Status still wins)
    --dead-after-idle S      a request arriving on a connection idle for S seconds or more is
                             read and never answered, nor is anything after it (a dead path:
                             the socket stays open, nothing answers); counted as "swallowed"
    --tls-cert PEM, --tls-key PEM   serve HTTPS with this certificate (chain) and key
    --tls-client-ca PEM      require a client certificate issued by this CA (mTLS)
    --tls-min-version V, --tls-max-version V   1.1, 1.2 or 1.3 (1.1 also lowers the security
                             level so that OpenSSL 3 agrees to speak it)
    --tls-close-without-fin  when the server closes a connection (--idle-close, Connection:
                             close): send close_notify but no FIN, and wait up to 5 s for the
                             peer to close (a peer that ignores close_notify is seen doing so)

    --record FILE            append one line per request head ("H <method> <target> <id>") and
                             per request body fully received ("B <id> <sha256> <size>") to FILE,
                             each with one write(2) on an O_APPEND descriptor, so the journal
                             survives a SIGKILL and several processes may share it (<id> is the
                             X-Request-Id, "-" without one). The soak proves with it that no
                             POST reached an upstream twice, across restarts.

GET /__reset on the control port resets every open service connection at once (RST, not FIN; a
fault the soak injects) and answers {"reset": n}.

GET /__stats (on either port) returns JSON; these control requests are counted only in
"control_requests". Fields:
    connections_accepted, connections_open, connections_peak (most open at once; a connection
                     counts until its thread sees the close, which may lag the peer's close)
    in_flight_peak   most requests being served at once (head received, response not sent)
    closed_by_peer, closed_by_server, reset_by_server   how connections ended
    requests         request heads received (control requests excluded, resets included)
    completed        requests whose body was fully received
    resets, upgrades, bad_requests, control_requests
    lost_to_idle_close   requests that arrived during --close-lag-ms and were reset
    methods          {method: count}
    bodies           {X-Request-Id: [{sha256, size, conn}, ...]}, one entry per body fully
                     received, so a test can prove that a body arrived exactly once
    heads            the raw heads of the last --keep-heads requests: [{conn, req, head}, ...]
    tls              in TLS mode only:
        handshakes   handshakes completed; "resumed" of them resumed a session
        failures     handshakes that failed; "errors" their reasons, in order (OpenSSL reason
                     codes such as "TLSV1_ALERT_UNKNOWN_CA", or the exception's name)
        versions     {"TLSv1.3": n, ...} of the completed handshakes
        alpn         {protocol or "none": n}: what ALPN selected (the server offers h2 and
                     http/1.1, so a client offering h2 would get it)
        sni          the server names the clients sent, in order (null: none sent)
        client_subjects   per completed handshake, the client certificate's subject or null;
                     last_client_subject the latest
        peer_closed_after_notify_ms   per close_notify the server sent: how long the peer took
                     to close, or null if it had not within the wait
        peer_close_notify, peer_eof_without_notify   connections the peer closed while the
                     server was reading: with a close_notify first, or with a bare TCP EOF
"""

import argparse
import collections
import hashlib
import itertools
import json
import os
import random
import socket
import ssl
import string
import struct
import sys
import threading
import time
import warnings

HEAD_LIMIT = 1 << 20
IO_TIMEOUT = 30.0
DEFAULT_IDLE = 120.0
HANDSHAKE_TIMEOUT = 10.0
NOTIFY_WAIT = 5.0
TLS_VERSIONS = {
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
RECV_SIZE = 65536
CHUNK_SIZES = (1, 10, 100, 1000, 4096, 16384, 65536)

_PATTERN_PERIOD = 65521  # prime, so block-sized drops or repeats change the checksum
_PATTERN = random.Random(0x7E7E).randbytes(_PATTERN_PERIOD)

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)


def body_pattern(size):
    """Deterministic response body of `size` bytes (tests recompute it to check payloads)."""
    return (_PATTERN * (size // _PATTERN_PERIOD + 1))[:size]


def _is_decimal(text):
    return text.isascii() and text.isdigit()


class BadRequest(Exception):
    """The peer sent something that is not HTTP/1.1; answered with `status` and a close."""

    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.status = status


class PeerClosed(Exception):
    """The peer closed the connection (EOF) while we were reading."""


class HeaderList:
    """Header lookups over `self.headers`, a list of (name, value) in order, duplicates kept.
    Shared with the tests' client (helpers.Response)."""

    def header(self, name):
        values = self.all(name)
        return values[0] if values else None

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def tokens(self, name):
        return {t.strip().lower() for v in self.all(name) for t in v.split(",") if t.strip()}


class Request(HeaderList):
    def __init__(self, raw_head):
        self.raw_head = raw_head
        lines = raw_head.decode("latin-1").split("\r\n")
        if any("\n" in line or "\r" in line for line in lines):
            raise BadRequest("bare CR or LF in head")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0] or not set(parts[0]) <= TOKEN_CHARS:
            raise BadRequest("bad request line")
        self.method, self.target, self.version = parts
        if self.version not in ("HTTP/1.0", "HTTP/1.1"):
            raise BadRequest("bad version")
        self.headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name) <= TOKEN_CHARS:
                raise BadRequest("bad header line")
            self.headers.append((name, value.strip(" \t")))

    def flag(self, name):
        return self.header(name) == "1"

    def int_header(self, name, default):
        value = self.header(name)
        if value is None:
            return default
        if not _is_decimal(value):
            raise BadRequest(f"bad {name}")
        return int(value)

    def body_framing(self):
        """Returns ("chunked", None), ("length", n): RFC 9112 section 6 rules, strictly."""
        te = self.all("Transfer-Encoding")
        cl = self.all("Content-Length")
        if te:
            if cl:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            if [v.strip().lower() for v in te] != ["chunked"]:
                raise BadRequest("unsupported Transfer-Encoding")
            return "chunked", None
        if cl:
            if len(set(cl)) != 1 or not _is_decimal(cl[0]):
                raise BadRequest("bad Content-Length")
            return "length", int(cl[0])
        return "length", 0

    def keep_alive(self):
        tokens = self.tokens("Connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def wants_upgrade(self):
        return self.header("Upgrade") is not None and "upgrade" in self.tokens("Connection")


class Stats:
    """Counters shared by all connection threads; snapshot() is what /__stats returns."""

    def __init__(self, keep_heads, tls, record_path=None):
        self._lock = threading.Lock()
        self._record = None
        if record_path:
            self._record = os.open(record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._tls = None
        if tls:
            self._tls = {
                "handshakes": 0, "resumed": 0, "failures": 0, "errors": [],
                "versions": collections.Counter(), "alpn": collections.Counter(), "sni": [],
                "client_subjects": [], "last_client_subject": None,
                "peer_closed_after_notify_ms": [], "peer_close_notify": 0,
                "peer_eof_without_notify": 0,
            }
        self._counters = collections.Counter()
        self._methods = collections.Counter()
        self._bodies = collections.defaultdict(list)
        self._heads = collections.deque(maxlen=keep_heads)
        self._open = 0
        self._peak = 0
        self._in_flight = 0
        self._in_flight_peak = 0

    def bump(self, name):
        with self._lock:
            self._counters[name] += 1

    def opened(self):
        with self._lock:
            self._counters["connections_accepted"] += 1
            self._open += 1
            self._peak = max(self._peak, self._open)
            return self._counters["connections_accepted"]

    def closed(self, how):
        with self._lock:
            self._open -= 1
            self._counters[how] += 1

    def request(self, conn_id, req_index, req):
        """A request head arrived; the request is in flight until request_done()."""
        with self._lock:
            self._counters["requests"] += 1
            self._in_flight += 1
            self._in_flight_peak = max(self._in_flight_peak, self._in_flight)
            self._methods[req.method] += 1
            self._heads.append(
                {"conn": conn_id, "req": req_index, "head": req.raw_head.decode("latin-1")}
            )
        self._journal(f"H {req.method} {req.target} {req.header('X-Request-Id') or '-'}")

    def request_done(self):
        with self._lock:
            self._in_flight -= 1

    def completed(self, conn_id, req, digest, size):
        with self._lock:
            self._counters["completed"] += 1
            request_id = req.header("X-Request-Id")
            if request_id is not None:
                self._bodies[request_id].append({"sha256": digest, "size": size, "conn": conn_id})
        self._journal(f"B {request_id or '-'} {digest} {size}")

    def _journal(self, line):
        if self._record is not None:
            os.write(self._record, (line.replace("\n", " ") + "\n").encode("latin-1", "replace"))

    def tls_sni(self, server_name):
        with self._lock:
            self._tls["sni"].append(server_name)

    def tls_handshake(self, info):
        with self._lock:
            tls = self._tls
            tls["handshakes"] += 1
            tls["resumed"] += info["resumed"]
            tls["versions"][info["version"]] += 1
            tls["alpn"][info["alpn"] or "none"] += 1
            tls["client_subjects"].append(info["client"])
            tls["last_client_subject"] = info["client"]

    def tls_failure(self, reason):
        with self._lock:
            self._tls["failures"] += 1
            self._tls["errors"].append(reason)

    def tls_peer_close(self, how):
        with self._lock:
            self._tls[how] += 1

    def tls_notify_answered(self, elapsed_ms):
        with self._lock:
            self._tls["peer_closed_after_notify_ms"].append(elapsed_ms)

    def snapshot(self):
        with self._lock:
            snap = {
                name: self._counters[name]
                for name in (
                    "connections_accepted",
                    "closed_by_peer",
                    "closed_by_server",
                    "reset_by_server",
                    "requests",
                    "completed",
                    "resets",
                    "lost_to_idle_close",
                    "upgrades",
                    "bad_requests",
                    "control_requests",
                    "swallowed",
                )
            }
            snap.update(
                connections_open=self._open,
                connections_peak=self._peak,
                in_flight_peak=self._in_flight_peak,
                methods=dict(self._methods),
                bodies={k: list(v) for k, v in self._bodies.items()},
                heads=list(self._heads),
            )
            if self._tls is not None:
                snap["tls"] = json.loads(json.dumps(self._tls))  # a deep copy
            return snap


class Connection:
    """One accepted TCP connection, served by one thread until it closes. A control
    connection (conn_id 0) serves only /__stats and is left out of the stats."""

    def __init__(self, server, sock, conn_id, control):
        self.server = server
        self.control = control
        self.opts = server.opts
        self.stats = server.stats
        self.tls_context = None if control else server.tls_context
        self.tls_info = None  # once the TLS handshake completed: what the X-Upstream-Tls-* say
        self.sock = sock
        self.conn_id = conn_id
        self.buf = bytearray()
        self.served = 0
        self.close_how = "closed_by_peer"
        self.idle_since = time.monotonic()

    # --- reading --------------------------------------------------------------------------

    def _fill(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except ssl.SSLEOFError:  # TLS: EOF without close_notify (ragged EOFs are not suppressed)
            self.stats.tls_peer_close("peer_eof_without_notify")
            raise PeerClosed() from None
        if not data:
            if self.tls_info is not None:
                self.stats.tls_peer_close("peer_close_notify")
            raise PeerClosed()
        self.buf += data

    def _take(self, n):
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_line(self, limit=8192):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = self._take(end + 2)[:-2]
                return line
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self._fill()

    def _close_lag(self):
        """Models a network round trip in the idle-close race: the server has decided to close
        and reads nothing more, but its FIN reaches the proxy only --close-lag-ms later. A
        request that arrives meanwhile is lost: closing with unread data sends a reset."""
        if not self.opts.close_lag_ms:
            return
        time.sleep(self.opts.close_lag_ms / 1000)
        self.sock.setblocking(False)
        try:  # the raw socket, also under TLS: any bytes on the way count
            if socket.socket.recv(self.sock, 1, socket.MSG_PEEK):
                self.stats.bump("lost_to_idle_close")
                self.close_how = "reset_by_server"
        except (BlockingIOError, ConnectionError):
            pass

    def _read_head(self):
        """The next request head, or None when the peer closed or stayed idle too long."""
        self.sock.settimeout(self.opts.idle_close or self.opts.keepalive_hint or DEFAULT_IDLE)
        try:
            if not self.buf:
                self._fill()
        except (PeerClosed, ConnectionResetError):
            return None
        except socket.timeout:
            self.close_how = "closed_by_server"
            self._close_lag()
            return None
        self.sock.settimeout(IO_TIMEOUT)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                return self._take(end + 4)[:-4]
            if len(self.buf) > HEAD_LIMIT:
                raise BadRequest("head too large", 431)
            self._fill()

    def _body_chunks(self, req):
        """Yields the request body as it arrives (de-chunked), validating the framing."""
        kind, length = req.body_framing()
        if kind == "length":
            while length:
                if not self.buf:
                    self._fill()
                piece = self._take(min(length, len(self.buf)))
                length -= len(piece)
                yield piece
            return
        while True:
            size_field = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while self._read_line():  # trailer fields, up to the empty line
                    pass
                return
            while size:
                if not self.buf:
                    self._fill()
                piece = self._take(min(size, len(self.buf)))
                size -= len(piece)
                yield piece
            if self._read_line() != b"":
                raise BadRequest("chunk data longer than its size")

    # --- writing --------------------------------------------------------------------------

    def _head(self, status, req, headers):
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
            f"X-Upstream-Conn: {self.conn_id}",
            f"X-Upstream-Req: {self.served}",
        ]
        if self.opts.name:
            lines.append(f"X-Upstream-Name: {self.opts.name}")
        if self.tls_info is not None:
            lines.append(f"X-Upstream-Tls-Version: {self.tls_info['version']}")
            lines.append(f"X-Upstream-Tls-Resumed: {int(self.tls_info['resumed'])}")
            lines.append(f"X-Upstream-Tls-Client: {self.tls_info['client'] or '-'}")
        if req is not None:
            lines.append(f"X-Upstream-Method: {req.method}")
            lines.append(f"X-Upstream-Target: {req.target}")
        lines += [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reset(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_how = "reset_by_server"

    def reset_from_outside(self):
        """Resets this connection from another thread: SHUT_RD wakes the serving thread's recv
        with an EOF without sending anything, and its close then sends the RST (SO_LINGER 0)."""
        try:
            self._reset()
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:  # closed meanwhile
            pass

    # --- serving --------------------------------------------------------------------------

    def serve(self):
        if not self.control:
            self.server.track(self, True)
        try:
            if self.tls_context is not None and not self._tls_handshake():
                return
            while self._serve_one():
                pass
        except BadRequest as err:
            self.stats.bump("bad_requests")
            self._send_error(err)
        except socket.timeout:
            self.close_how = "closed_by_server"
        except (PeerClosed, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._close()

    def _tls_handshake(self):
        """Puts the connection under TLS; False (the failure counted) if the handshake fails."""
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        self.sock = self.tls_context.wrap_socket(self.sock, server_side=True,
                                                 do_handshake_on_connect=False,
                                                 suppress_ragged_eofs=False)
        try:
            self.sock.do_handshake()
        except OSError as err:  # ssl.SSLError, a reset, a timeout
            self.stats.tls_failure(getattr(err, "reason", None) or type(err).__name__)
            self.close_how = "tls_failed"
            return False
        self.tls_info = {
            "version": self.sock.version(),
            "resumed": self.sock.session_reused,
            "alpn": self.sock.selected_alpn_protocol(),
            "client": _subject(self.sock.getpeercert()),
        }
        self.stats.tls_handshake(self.tls_info)
        return True

    def _send_error(self, err):
        body = f"upstream: {err}\n".encode()
        headers = [("Content-Length", len(body)), ("Connection", "close")]
        try:
            self.sock.sendall(self._head(err.status, None, headers) + body)
        except OSError:
            return
        self.close_how = "closed_by_server"

    def _close(self):
        if self.close_how == "closed_by_server":
            if self.tls_info is not None and not getattr(self, "no_close_notify", False):
                self._tls_close()
            else:
                self._linger()
        self.sock.close()
        if not self.control:
            self.server.track(self, False)
            self.stats.closed(self.close_how)

    def _linger(self):
        """Half-close and drain for a while, so data the peer still sends cannot turn our
        close into a RST that destroys the response in flight. Returns whether the peer
        closed meanwhile."""
        try:
            self.sock.shutdown(socket.SHUT_WR)  # on an SSLSocket: TLS is over, the rest is raw
        except OSError:
            return False
        return self._drain_until_closed(1.0, self.sock.recv)

    def _tls_close(self):
        """close_notify, then the FIN and the linger (or, with --tls-close-without-fin, no FIN:
        wait for the peer to close); records how long the peer took to close."""
        start = time.monotonic()
        self.sock.settimeout(0)
        try:
            self.sock.unwrap()  # sends close_notify; non-blocking: does not wait for the peer's
        except ssl.SSLWantReadError:
            pass
        except (OSError, ValueError):  # the peer is gone already
            self._linger()
            return
        closed = self._await_peer_close() if self.opts.tls_close_without_fin else self._linger()
        elapsed_ms = round((time.monotonic() - start) * 1000) if closed else None
        self.stats.tls_notify_answered(elapsed_ms)

    def _await_peer_close(self):
        """Reads raw bytes (the peer's close_notify, or a request it should not send any more)
        until the peer closes, for up to NOTIFY_WAIT seconds; returns whether it closed."""
        return self._drain_until_closed(NOTIFY_WAIT,
                                        lambda size: socket.socket.recv(self.sock, size))

    def _drain_until_closed(self, seconds, recv):
        """Reads and drops what arrives until the peer closes (or resets) or `seconds` pass;
        returns whether it closed."""
        deadline = time.monotonic() + seconds
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                if not recv(RECV_SIZE):
                    return True
        except ConnectionResetError:
            return True
        except OSError:
            pass
        return False

    def _serve_one(self):
        """Serves one request; returns whether the connection stays open for another."""
        raw_head = self._read_head()
        if raw_head is None:
            return False
        req = Request(raw_head)
        if (self.opts.dead_after_idle and not self.control
                and time.monotonic() - self.idle_since >= self.opts.dead_after_idle):
            self.stats.bump("swallowed")
            self._swallow()
            return False
        self.served += 1
        if req.method == "GET" and req.target == "/__stats":
            self.stats.bump("control_requests")
            return self._respond_stats(req)
        if self.control and req.method == "GET" and req.target == "/__reset":
            self.stats.bump("control_requests")
            return self._respond_json(req, {"reset": self.server.reset_connections()})
        if self.control:
            raise BadRequest("the control port serves only GET /__stats", 404)
        self.stats.request(self.conn_id, self.served, req)
        try:
            return self._serve_request(req)
        finally:
            self.stats.request_done()
            self.idle_since = time.monotonic()

    def _swallow(self):
        """Reads and drops everything until the peer closes: nothing is ever answered."""
        self.sock.settimeout(IO_TIMEOUT)
        self.buf.clear()
        while True:
            try:
                self._fill()
            except socket.timeout:
                continue
            self.buf.clear()

    def _serve_request(self, req):
        if req.int_header("X-Reset-On-Conn", 0) == self.conn_id:
            time.sleep(req.int_header("X-Delay-Ms", 0) / 1000)
            self.stats.bump("resets")
            self._reset()
            return False
        if req.flag("X-Reset") or (req.flag("X-Reset-If-Reused") and self.served > 1):
            self.stats.bump("resets")
            self._reset()
            return False
        if req.wants_upgrade():
            return self._tunnel(req)
        kind, length = req.body_framing()
        if "100-continue" in req.tokens("Expect") and (kind == "chunked" or length):
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req.flag("X-Echo"):
            return self._respond_echo(req, kind, length)
        digest, size = hashlib.sha256(), 0
        for piece in self._body_chunks(req):
            digest.update(piece)
            size += len(piece)
        self.stats.completed(self.conn_id, req, digest.hexdigest(), size)
        received = [("X-Request-Body-Size", size), ("X-Request-Body-Sha256", digest.hexdigest())]
        return self._respond(req, received)

    def _connection_headers(self, req, keep):
        """Final Connection/Keep-Alive headers; returns (headers, keep)."""
        keep = keep and req.keep_alive()
        if self.opts.max_requests_per_conn and self.served >= self.opts.max_requests_per_conn:
            keep = False
        headers = []
        if keep and self.opts.keepalive_hint:
            headers.append(("Keep-Alive", f"timeout={self.opts.keepalive_hint}"))
        if not keep:
            headers.append(("Connection", "close"))
        elif req.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        return headers, keep

    def _respond_stats(self, req):
        return self._respond_json(req, self.stats.snapshot())

    def _respond_json(self, req, value):
        body = json.dumps(value).encode()
        conn_headers, keep = self._connection_headers(req, True)
        headers = [("Content-Type", "application/json"), ("Content-Length", len(body))]
        self.sock.sendall(self._head(200, req, headers + conn_headers) + body)
        if not keep:
            self.close_how = "closed_by_server"
        return keep

    def _respond(self, req, extra):
        status = req.int_header("X-Status", self.opts.status_for.get(req.target, 200))
        size = req.int_header("X-Body-Size", None)
        body = b"ok\n" if size is None else body_pattern(size)
        headers = list(extra)
        if status < 200 or status in (204, 304):
            framing, body = "none", b""
        elif req.flag("X-Close-Delimited"):
            framing = "close"
        elif req.flag("X-Chunked"):
            framing = "chunked"
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            framing = "length"
            headers.append(("Content-Length", len(body)))
        for line in req.all("X-Add-Header"):
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        conn_headers, keep = self._connection_headers(req, framing != "close")
        if req.method == "HEAD":
            body = b""
        elif framing == "chunked":
            body = _chunk_encode(body)
        if req.flag("X-Close-Mid-Response"):
            body, keep = body[: len(body) // 2], False
        self._delay(req)
        extra = req.int_header("X-Extra-Bytes", 0)
        if extra:  # corked: the extra bytes arrive with the response, in the same segment
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        pauses, _, pause_ms = (req.header("X-Body-Pauses") or "0,0").partition(",")
        parts = _split_even(body, int(pauses) + 1)
        self.sock.sendall(self._head(status, req, headers + conn_headers) + parts[0])
        for part in parts[1:]:
            time.sleep(int(pause_ms) / 1000)
            self.sock.sendall(part)
        if extra:
            self.sock.sendall(b"X" * extra)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        if req.flag("X-No-Close-Notify"):
            self.no_close_notify = True
        if not keep:
            self.close_how = "closed_by_server"
        return keep

    def _delay(self, req):
        delay_ms = req.int_header("X-Delay-Ms", 0)
        if delay_ms:
            time.sleep(delay_ms / 1000)

    def _respond_echo(self, req, kind, length):
        chunked = kind == "chunked"
        conn_headers, keep = self._connection_headers(req, True)
        framing = [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", length)]
        self._delay(req)
        self.sock.sendall(self._head(200, req, framing + conn_headers))
        digest, size = hashlib.sha256(), 0
        try:
            for piece in self._body_chunks(req):
                digest.update(piece)
                size += len(piece)
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        except BadRequest:  # too late for a 400: the response is under way
            self.stats.bump("bad_requests")
            self.close_how = "closed_by_server"
            return False
        if chunked:
            self.sock.sendall(b"0\r\n\r\n")
        self.stats.completed(self.conn_id, req, digest.hexdigest(), size)
        if not keep:
            self.close_how = "closed_by_server"
        return keep

    def _tunnel(self, req):
        """101 Switching Protocols, then echo raw bytes until the peer closes."""
        self.stats.bump("upgrades")
        headers = [("Upgrade", req.header("Upgrade")), ("Connection", "Upgrade")]
        self.sock.sendall(self._head(101, req, headers) + bytes(self.buf))
        self.buf.clear()
        self.sock.settimeout(DEFAULT_IDLE)
        while True:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                return False
            self.sock.sendall(data)


def _subject(cert):
    """The subject of a getpeercert() dict as "O=Tether Tests,CN=name"; None without one."""
    if not cert:
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C"}
    return ",".join(f"{short.get(k, k)}={v}" for rdn in cert["subject"] for k, v in rdn)


def tls_context(opts, on_sni):
    """The server side SSLContext for the TLS options; on_sni(name or None) per handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.tls_cert, opts.tls_key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if opts.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(opts.tls_client_ca)
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of offering it
        warnings.simplefilter("ignore", DeprecationWarning)
        if "1.1" in (opts.tls_min_version, opts.tls_max_version):
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1_1
        if opts.tls_min_version:
            context.minimum_version = TLS_VERSIONS[opts.tls_min_version]
        if opts.tls_max_version:
            context.maximum_version = TLS_VERSIONS[opts.tls_max_version]
    context.sni_callback = lambda sslsock, name, ctx: on_sni(name)
    return context


def _split_even(data, n):
    step = -(-len(data) // n) if data else 1
    return [data[i : i + step] for i in range(0, max(len(data), 1), step)]


def _chunk_encode(body):
    """Chunked encoding of `body` in pieces of varied sizes, terminating chunk included."""
    out, pos, sizes = bytearray(), 0, itertools.cycle(CHUNK_SIZES)
    while pos < len(body):
        piece = body[pos : pos + next(sizes)]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        pos += len(piece)
    return bytes(out + b"0\r\n\r\n")


class Server:
    """The service port, plus a control port that serves only /__stats and is not counted."""

    def __init__(self, opts):
        self.opts = opts
        self.stats = Stats(opts.keep_heads, tls=bool(opts.tls_cert), record_path=opts.record)
        self._open_lock = threading.Lock()
        self._open = set()  # service connections being served, for /__reset
        self.tls_context = tls_context(opts, self.stats.tls_sni) if opts.tls_cert else None
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        self.listener = socket.create_server((opts.host, opts.port), family=family, backlog=1024)
        self.control_listener = socket.create_server((opts.host, 0), family=family)
        self.port = self.listener.getsockname()[1]
        self.control_port = self.control_listener.getsockname()[1]

    def track(self, conn, is_open):
        with self._open_lock:
            (self._open.add if is_open else self._open.discard)(conn)

    def reset_connections(self):
        """Resets every open service connection (plain TCP only); returns how many."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            conn.reset_from_outside()
        return len(conns)

    def run(self):
        threading.Thread(target=self._accept_loop, args=(self.control_listener, True),
                         daemon=True).start()
        self._accept_loop(self.listener, False)

    def _accept_loop(self, listener, control):
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # EMFILE and friends: let connections drain, then retry
                time.sleep(0.01)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn_id = 0 if control else self.stats.opened()
            conn = Connection(self, sock, conn_id, control)
            threading.Thread(target=conn.serve, daemon=True).start()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="")
    parser.add_argument("--idle-close", type=float, default=0.0, metavar="S")
    parser.add_argument("--keepalive-hint", type=int, default=0, metavar="N")
    parser.add_argument("--close-lag-ms", type=int, default=0, metavar="MS")
    parser.add_argument("--max-requests-per-conn", type=int, default=0, metavar="N")
    parser.add_argument("--dead-after-idle", type=float, default=0.0, metavar="S")
    parser.add_argument("--status-for", action="append", default=[], metavar="PATH=N",
                        help="answer requests for PATH with status N (an unhealthy /healthz)")
    parser.add_argument("--keep-heads", type=int, default=100, metavar="N")
    parser.add_argument("--record", metavar="FILE")
    parser.add_argument("--tls-cert", metavar="PEM")
    parser.add_argument("--tls-key", metavar="PEM")
    parser.add_argument("--tls-client-ca", metavar="PEM")
    parser.add_argument("--tls-min-version", choices=sorted(TLS_VERSIONS))
    parser.add_argument("--tls-max-version", choices=sorted(TLS_VERSIONS))
    parser.add_argument("--tls-close-without-fin", action="store_true")
    opts = parser.parse_args(argv)
    opts.status_for = dict((p.split("=", 1)[0], int(p.split("=", 1)[1])) for p in opts.status_for)
    if bool(opts.tls_cert) != bool(opts.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return opts


def main(argv):
    server = Server(parse_args(argv))
    print(f"PORT {server.port}\nCONTROL {server.control_port}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
