"""The figures of `make prove`, computed from what the run recorded (pure functions, no I/O
beyond reading the files named).

Inputs: the relay's connection log (the exact open and close time of every connection between
the hosts), the application's call log (due time, latency, status per call), once-a-second `ss`
samples of each host, CPU samples of the process trees, and the upstream's TLS log.
"""

import json
import math
import re
from dataclasses import dataclass, field


@dataclass
class Window:
    """The measured part of a run (wall-clock seconds); the warm-up before it is not counted."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Connections:
    """Connections between the hosts, from the relay's log, over a window."""

    opened: int  # connections opened inside the window
    per_minute: float
    mean_age_s: float  # mean age of the connections open at each second of the window
    mean_lifetime_s: float | None  # of the connections that opened and closed inside it
    open_at_end: int
    per_second: list[int] = field(default_factory=list)  # opens in each second of the window


def read_relay_log(path) -> dict[int, dict]:
    """{id: {"open": t, "close": t or None}} from the relay's JSON lines."""
    conns: dict[int, dict] = {}
    with open(path) as log:
        for line in log:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the relay's stop
            record = conns.setdefault(entry["id"], {"open": None, "close": None})
            record[entry["event"]] = entry["t"]
    return {k: v for k, v in conns.items() if v["open"] is not None}


def connections(conns: dict[int, dict], window: Window) -> Connections:
    opens = [c["open"] for c in conns.values() if window.start <= c["open"] < window.end]
    lifetimes = [c["close"] - c["open"] for c in conns.values()
                 if c["close"] is not None and window.start <= c["open"]
                 and c["close"] < window.end]
    seconds = max(1, int(math.floor(window.seconds)))
    per_second = [0] * seconds
    for t in opens:
        per_second[min(seconds - 1, int(t - window.start))] += 1
    ages = []
    for i in range(seconds):
        now = window.start + i + 1
        ages += [now - c["open"] for c in conns.values()
                 if c["open"] <= now and (c["close"] is None or c["close"] > now)]
    open_at_end = sum(1 for c in conns.values()
                      if c["open"] <= window.end and (c["close"] is None or c["close"] > window.end))
    return Connections(
        opened=len(opens),
        per_minute=len(opens) * 60.0 / window.seconds,
        mean_age_s=sum(ages) / len(ages) if ages else 0.0,
        mean_lifetime_s=sum(lifetimes) / len(lifetimes) if lifetimes else None,
        open_at_end=open_at_end,
        per_second=per_second,
    )


@dataclass
class Calls:
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    p99_per_5s: list[float]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def read_app_log(path) -> tuple[float, list[tuple[float, float, int]]]:
    """(wall-clock time of the schedule's start, [(due offset s, latency ms, status)])."""
    start_wall, entries = 0.0, []
    with open(path) as log:
        for line in log:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "start_wall":
                start_wall = float(parts[1])
            elif len(parts) == 3:
                entries.append((float(parts[0]), float(parts[1]), int(parts[2])))
    return start_wall, entries


def calls(entries: list[tuple[float, float, int]], warmup_s: float, seconds: float) -> Calls:
    """Calls due inside [warmup, warmup + seconds) of the application's schedule."""
    measured = [e for e in entries if warmup_s <= e[0] < warmup_s + seconds]
    latencies = [e[1] for e in measured if e[2] == 200]
    buckets = []
    for start in range(0, int(seconds), 5):
        chunk = [e[1] for e in measured if start <= e[0] - warmup_s < start + 5 and e[2] == 200]
        buckets.append(percentile(chunk, 99) if chunk else 0.0)
    return Calls(
        count=len(measured),
        errors=sum(1 for e in measured if e[2] != 200),
        p50_ms=percentile(latencies, 50) if latencies else 0.0,
        p99_ms=percentile(latencies, 99) if latencies else 0.0,
        p99_per_5s=buckets,
    )


_SKMEM = re.compile(r"skmem:\(r(\d+),rb\d+,t(\d+),tb\d+,f(\d+),w(\d+),o(\d+)")


@dataclass
class Sockets:
    """One `ss -tanmH` sample of a host: TCP sockets by state and the memory they hold."""

    by_state: dict[str, int]
    buffer_bytes: int  # queued data, forward allocations and options (skmem r+w+f+o)
    time_wait_to: int  # TIME_WAIT sockets whose peer is the named remote
    established_to: int
    pair_sockets: int  # full (not TIME_WAIT) sockets whose peer is the named remote
    pair_buffer_bytes: int


def parse_ss(text: str, remote: str) -> Sockets:
    """Parses `ss -tanmH` output; `remote` ("198.18.0.2:443") selects the inter-host pair."""
    by_state: dict[str, int] = {}
    buffer_bytes = time_wait_to = established_to = pair_sockets = pair_buffer_bytes = 0
    in_pair = False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not (line[0].isspace() or fields[0].startswith("skmem:")):
            state = fields[0]
            by_state[state] = by_state.get(state, 0) + 1
            in_pair = len(fields) > 4 and fields[4] == remote
            if in_pair:
                time_wait_to += state == "TIME-WAIT"
                established_to += state == "ESTAB"
                pair_sockets += state != "TIME-WAIT"
        match = _SKMEM.search(line)  # on the socket's line or the next, by ss version
        if match:
            r, _t, f, w, o = (int(x) for x in match.groups())
            buffer_bytes += r + w + f + o
            pair_buffer_bytes += (r + w + f + o) if in_pair else 0
    return Sockets(by_state, buffer_bytes, time_wait_to, established_to, pair_sockets,
                   pair_buffer_bytes)


def socket_memory(sample: Sockets, socket_object: int, timewait_object: int) -> int:
    """Kernel memory the host's TCP sockets hold: their buffers, plus one socket object per full
    socket and one timewait object per TIME_WAIT socket (object sizes from /proc/slabinfo)."""
    full = sum(n for state, n in sample.by_state.items() if state != "TIME-WAIT")
    return sample.buffer_bytes + full * socket_object + \
        sample.by_state.get("TIME-WAIT", 0) * timewait_object


def pair_memory(sample: Sockets, socket_object: int, timewait_object: int) -> int:
    """Like socket_memory, for the sockets between the two hosts only."""
    return sample.pair_buffer_bytes + sample.pair_sockets * socket_object + \
        sample.time_wait_to * timewait_object


def read_tls_log(path, offset: int = 0) -> tuple[int, int]:
    """(handshakes, resumed) from the upstream's "PROTOCOL r|." lines (one per connection)
    written after byte `offset`."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return 0, 0
    pairs = [line.split() for line in lines if len(line.split()) == 2]
    return len(pairs), sum(1 for p in pairs if p[1] == "r")


def change(before: float, after: float) -> float | None:
    """Relative change after/before - 1 (None where before is 0)."""
    return None if before == 0 else after / before - 1.0
