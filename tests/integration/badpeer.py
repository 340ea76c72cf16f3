#!/usr/bin/python3
"""A misbehaving TCP peer for tether's integration tests.

In a test:    peer = BadPeer("silent"); ...; peer.close()
Standalone:   badpeer.py --mode silent --port 0    (prints "PORT <n>", runs until killed)

Modes, applied to every accepted connection:
    close      half-close at once (FIN) before reading anything, then drain
    reset      reset at once (RST)
    garbage    wait for the request, answer bytes that are not HTTP, then hold the connection
    silent     read and discard everything, never answer, hold the connection
    half-head  wait for the request, send half a response head, then stall
    reply      wait for a request head, send the bytes given as `reply` (any bytes at all, however
               malformed; a list of byte strings is sent piece by piece, 0.2 s apart), then hold the connection (`then="hold"`) or close it (`then="close"`)

Every connection's received bytes are kept in `received` (one bytes object per connection, in
accept order), and `closed_by_proxy` counts the connections the other side closed.

Held connections stay open until the other side closes them or close() is called.
"""

import argparse
import signal
import socket
import struct
import sys
import threading
import time

MODES = ("close", "reset", "garbage", "silent", "half-head", "reply")
GARBAGE = b"\x00\xff\x13 this is not HTTP \x7f\r\n\r\n"
HALF_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/pl"
POLL = 0.05
PIECE_GAP = 0.2


class BadPeer:
    """Listens on an ephemeral loopback port and misbehaves as `mode` says, on its own threads."""

    def __init__(self, mode, host="127.0.0.1", port=0, reply=b"", then="hold"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
        if then not in ("hold", "close"):
            raise ValueError(f"then must be 'hold' or 'close', not {then!r}")
        self.mode = mode
        self.reply = reply
        self.then = then
        self.accepted = 0
        self.bytes_received = 0
        self.received = []
        self.closed_by_proxy = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.settimeout(POLL)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    def close(self):
        """Stops accepting, closes every held connection and joins all threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                index = len(self.received)
                self.received.append(b"")
            self._spawn(self._misbehave, conn, index)

    def _misbehave(self, conn, index):
        with conn:
            conn.settimeout(POLL)
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if self.mode == "close":  # FIN now; draining then avoids a RST on unread data
                conn.shutdown(socket.SHUT_WR)
            elif self.mode in ("garbage", "half-head"):
                if not self._receive(conn, index, until=b""):
                    return
                conn.sendall(GARBAGE if self.mode == "garbage" else HALF_HEAD)
            elif self.mode == "reply":
                if not self._receive(conn, index, until=b"\r\n\r\n"):
                    return
                pieces = [self.reply] if isinstance(self.reply, bytes) else self.reply
                try:
                    for i, piece in enumerate(pieces):
                        if i:
                            time.sleep(PIECE_GAP)
                        conn.sendall(piece)
                except OSError:
                    return
                if self.then == "close":
                    conn.shutdown(socket.SHUT_WR)
            self._receive(conn, index, until=None)

    def _receive(self, conn, index, until):
        """Reads and records. With `until` (b"": any bytes), returns True once the bytes received
        on this connection contain it; otherwise reads until the peer closes. Returns False once
        the peer closed or we are stopping."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self.closed_by_proxy += 1
                return False
            with self._lock:
                self.bytes_received += len(data)
                self.received[index] += data
                seen = self.received[index]
            if until is not None and until in seen:
                return True
        return False


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    peer = BadPeer(args.mode, args.host, args.port)
    print(f"PORT {peer.port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    peer.close()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1:])
