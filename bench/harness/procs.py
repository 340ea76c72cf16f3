"""Starting, watching and stopping child processes, each in its own process group.

Every process is started through a `Services` context manager, which stops all of them (SIGTERM to
the whole group, then SIGKILL) when the block ends, on error and on Ctrl-C alike.
"""

import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 5.0


class HarnessError(Exception):
    """A failure the harness reports to the user as one clear message."""


def free_port() -> int:
    """Returns a loopback TCP port that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """Prefixes argv with taskset when a CPU list ("0", "1-3") is given."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


def raise_fd_limit(wanted: int) -> int:
    """Raises this process's open-file soft limit (inherited by children) toward `wanted`, up to
    the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def exit_on_sigterm() -> None:
    """Turns SIGTERM into SystemExit so that `finally` blocks stop the children."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


@dataclass
class Service:
    """A running child process (the leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def exit_description(self) -> str:
        """"exited with status N" or "was killed by SIGxxx" (for a process that ended)."""
        code = self.popen.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def exits_within(self, seconds: float) -> bool:
        try:
            self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> bool:
        """Stops the whole process group; returns False when SIGKILL was needed."""
        graceful = True
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                graceful = False
        _signal_group(self.pid, signal.SIGKILL)  # leftovers of the group, if any
        self.popen.wait()
        return graceful


class Services:
    """Owns every long-running child process; stops them all, newest first, on exit."""

    def __init__(self, log_dir: Path):
        self._log_dir = log_dir
        self._running: list[Service] = []

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *_exc) -> None:
        while self._running:
            self.stop(self._running[-1])

    def start(self, name: str, argv: list[str], cpus: str | None = None) -> Service:
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                pinned(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, popen, log_path)
        self._running.append(service)
        return service

    def stop(self, service: Service) -> None:
        self._running.remove(service)
        if not service.stop():
            print(f"  note: {service.name} did not exit within {STOP_GRACE_S:.0f} s of SIGTERM; "
                  "killed")


def _wait_until_accepts(service: Service, connect, where: str, timeout_s: float) -> None:
    """Calls connect() until it stops raising OSError; fails early if the service exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not service.running():
            raise HarnessError(
                f"{service.name} {service.exit_description()} during startup:\n"
                f"{service.log_tail()}"
            )
        try:
            connect()
            return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"{service.name} did not accept on {where} within {timeout_s:.0f} s:\n"
                       f"{service.log_tail()}")


def wait_for_port(service: Service, port: int, timeout_s: float = 10.0) -> None:
    """Waits until 127.0.0.1:port accepts a connection; fails early if the service exits."""

    def connect():
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()

    _wait_until_accepts(service, connect, f"port {port}", timeout_s)


def wait_for_unix(service: Service, path: Path, timeout_s: float = 10.0) -> None:
    """Waits until the Unix-domain socket at `path` accepts a connection."""

    def connect():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))

    _wait_until_accepts(service, connect, f"unix:{path}", timeout_s)


def run_bounded(argv: list[str], timeout_s: float, cpus: str | None = None) -> str:
    """Runs a short-lived command in its own process group and returns its stdout.

    The group is killed if the command overruns `timeout_s` or the harness is interrupted.
    """
    popen = subprocess.Popen(
        pinned(argv, cpus),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = popen.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from None
    finally:
        if popen.poll() is None:
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
    if popen.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed with status {popen.returncode}:\n{output}")
    return output
