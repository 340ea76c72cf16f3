#!/usr/bin/python3
"""The application of `make prove`, written the way the mission says teams write service calls.

Each call is `requests.get(url)` with no Session: requests makes a new connection pool per call,
so every call opens a new TCP connection (and, for an https:// url, a full TLS handshake) and
closes it afterwards. `--session` gives each worker one `requests.Session` instead: the
in-process fix, for comparison. The code is the same whether the url goes straight to the
upstream over TLS or, through `HTTP_PROXY`, to tetherd; only the url and the environment change.

The load is open-loop: call i is due at start + i / rate, whatever happened to the calls before
it, and its latency counts from when it was due, so a stall delays every call behind it in the
figures too (no coordinated omission). Workers take the next due call from a shared schedule.
Each call is written to --out as one line: `due_offset_s latency_ms status` (status 0 for an
exception), after a first line `start_wall T`: the wall-clock time of offset 0.
"""

import argparse
import threading
import time

import requests


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="calls per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--ca", help="CA bundle that verifies the upstream (https:// urls)")
    parser.add_argument("--session", action="store_true", help="one requests.Session per worker")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", required=True)
    return parser.parse_args()


class Schedule:
    """Hands out call slots in order: (index, due time) until the run's end."""

    def __init__(self, rate: float, seconds: float):
        self.interval = 1.0 / rate
        self.total = int(rate * seconds)
        self.start = time.monotonic() + 0.2
        self.start_wall = time.time() + 0.2
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> float | None:
        with self.lock:
            if self.next >= self.total:
                return None
            due = self.start + self.next * self.interval
            self.next += 1
            return due


def worker(args: argparse.Namespace, schedule: Schedule, lines: list[str]) -> None:
    verify = args.ca if args.ca else True
    call = requests.Session().get if args.session else requests.get
    while (due := schedule.take()) is not None:
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            status = call(args.url, verify=verify, timeout=args.timeout).status_code
        except requests.RequestException:
            status = 0
        latency_ms = (time.monotonic() - due) * 1000.0
        lines.append(f"{due - schedule.start:.4f} {latency_ms:.3f} {status}")


def main() -> None:
    args = parse_args()
    schedule = Schedule(args.rate, args.seconds)
    lines: list[str] = []
    threads = [threading.Thread(target=worker, args=(args, schedule, lines))
               for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(args.out, "w") as out:
        out.write(f"start_wall {schedule.start_wall:.6f}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
