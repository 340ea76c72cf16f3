#!/usr/bin/python3
"""A network in user space: a TCP relay that delays each direction by a set time.

This machine's kernel has neither netem nor fq, so `make prove` models the wire between its two
hosts here. The relay runs on host B in front of the upstream service. For every accepted
connection it waits one round trip (2 x DELAY) before it connects onward and starts relaying,
which charges the client's TCP handshake the round trip a real network would; then every chunk
read in either direction is written out DELAY later, in order. A TLS handshake therefore costs its
real round trips, and a request on a warm connection one round trip.

What it models: propagation delay (symmetric, fixed), so handshakes and requests cost round trips.
What it does not: bandwidth limits, loss, jitter, reordering, or the kernel-level SYN/SYN-ACK
exchange itself (the client's connect() returns at once; the first bytes wait the round trip
instead, which costs the same time for a client that writes right after connecting).

Every connection is written to --log as two JSON lines, when it opens and when it ends (wall-clock
times, and the bytes each way at the end), so connection counts and ages are exact, also for the
connections still open when a run ends.
"""

import argparse
import asyncio
import json
import signal
import socket
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay (default 1)")
    parser.add_argument("--log", required=True, help="connection log (JSON lines)")
    return parser.parse_args()


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Relay:
    def __init__(self, target: tuple[str, int], delay_s: float, log):
        self.target = target
        self.delay_s = delay_s
        self.log = log
        self.next_id = 0

    def record(self, **fields) -> None:
        self.log.write(json.dumps(fields) + "\n")

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   counter: list[int], index: int) -> None:
        """Copies reader to writer, each chunk DELAY after it was read; EOF is delayed too."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay_s, data or None))
                if not data:
                    break
                counter[index] += len(data)
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            raise

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.next_id += 1
        conn_id = self.next_id
        self.record(id=conn_id, event="open", t=time.time())
        counter = [0, 0]
        upstream_w = None
        try:
            client_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.sleep(2 * self.delay_s)  # the handshake's round trip
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            upstream_w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                           socket.TCP_NODELAY, 1)
            await asyncio.gather(self.pipe(client_r, upstream_w, counter, 0),
                                 self.pipe(upstream_r, client_w, counter, 1))
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
            self.record(id=conn_id, event="close", t=time.time(), up_bytes=counter[0],
                        down_bytes=counter[1])


async def main() -> None:
    args = parse_args()
    log = open(args.log, "a", buffering=1)
    relay = Relay(split(args.target), args.delay_ms / 1000.0, log)
    host, port = split(args.listen)
    server = await asyncio.start_server(relay.handle, host, port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"relay {args.listen} -> {args.target}, {args.delay_ms:g} ms each way", flush=True)
    async with server:
        await stop.wait()
    log.close()


if __name__ == "__main__":
    asyncio.run(main())
