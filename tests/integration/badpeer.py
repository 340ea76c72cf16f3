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

Held connections stay open until the other side closes them or close() is called.
"""

import argparse
import signal
import socket
import struct
import sys
import threading

MODES = ("close", "reset", "garbage", "silent", "half-head")
GARBAGE = b"\x00\xff\x13 this is not HTTP \x7f\r\n\r\n"
HALF_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/pl"
POLL = 0.05


class BadPeer:
    """Listens on an ephemeral loopback port and misbehaves as `mode` says, on its own threads."""

    def __init__(self, mode, host="127.0.0.1", port=0):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
        self.mode = mode
        self.accepted = 0
        self.bytes_received = 0
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
            self._spawn(self._misbehave, conn)

    def _misbehave(self, conn):
        with conn:
            conn.settimeout(POLL)
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if self.mode == "close":  # FIN now; draining then avoids a RST on unread data
                conn.shutdown(socket.SHUT_WR)
            elif self.mode in ("garbage", "half-head"):
                if not self._receive(conn, until_first_bytes=True):
                    return
                conn.sendall(GARBAGE if self.mode == "garbage" else HALF_HEAD)
            self._receive(conn, until_first_bytes=False)

    def _receive(self, conn, until_first_bytes):
        """Reads and discards; returns False once the peer closed or we are stopping."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            with self._lock:
                self.bytes_received += len(data)
            if until_first_bytes:
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
