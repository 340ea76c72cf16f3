"""Fixtures for tether's integration tests.

Every process or peer a test starts goes through a factory fixture here, which stops it at
teardown, also when the test fails. tetherd must exit 0 on SIGTERM within drain_timeout + 5 s.
The logs of the processes a failing test started are attached to its report.

The binary under test is $TETHERD, or build/tetherd in the repository.
"""

import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tlscerts
from badpeer import BadPeer
from helpers import free_port, get_json, stop_process, tetherd_binary

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 10.0
DEFAULT_DRAIN_TIMEOUT = 10.0
LOG_TAIL = 20000
LOGS = pytest.StashKey[list]()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: paced for tens of seconds on purpose; left out of the sanitizer pass")


def parse_duration(text):
    """Seconds in a tether duration ("500ms", "2s", "1m", "3h", bare number = seconds)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    assert match, f"bad duration {text!r}"
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
    return int(match.group(1)) * scale


def parse_address(text):
    """("host", port) from "host:port" or "[v6]:port"."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def config_value_lines(config, *keys):
    """Values of `keys` anywhere in an INI text, inline comments removed."""
    pattern = rf"^\s*(?:{'|'.join(keys)})\s*=\s*([^;#\n]*)"
    return [value.strip() for value in re.findall(pattern, config, re.MULTILINE)]


def dedicated_config(upstream_port, listen_port, upstream_cfg="", tether_cfg="", workers=1):
    """One upstream "app" behind a dedicated tetherd port."""
    return (
        f"[tether]\nworkers = {workers}\n{tether_cfg}\n\n"
        f"[upstream app]\nurl = http://127.0.0.1:{upstream_port}\n"
        f"listen = 127.0.0.1:{listen_port}\n{upstream_cfg}\n"
    )


def _attach_log(request, title, path):
    request.node.stash.setdefault(LOGS, []).append((title, path))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, path in item.stash.get(LOGS, []):
            text = path.read_text(errors="replace") if path.exists() else ""
            if text:
                report.sections.append((f"{title} ({report.when})", text[-LOG_TAIL:]))


def _children():
    """Pids of this process's live child processes."""
    pids = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that ended since the listing had no children
            continue
    return pids


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fails a test that leaves a child process behind (runs after every other teardown)."""
    before = _children()
    yield
    leftover = _children() - before
    assert not leftover, f"processes left running: {sorted(leftover)}"


class Upstream:
    """A running upstream.py; see its docstring for the request headers that script it.
    Started with --tls-cert it serves HTTPS, and `url` is an https:// url."""

    def __init__(self, args, log_path):
        self.log_path = log_path
        self.tls = "--tls-cert" in args
        self.host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "upstream.py"), "--port", "0", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            )
        self.port = self.control_port = None

    def wait_ports(self):
        """Reads "PORT <n>" and "CONTROL <m>", which upstream.py writes in one flush."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            assert sel.select(STARTUP_TIMEOUT), "upstream.py did not report its ports"
        lines = [self.proc.stdout.readline().decode() for _ in range(2)]
        assert [line.split(" ")[0] for line in lines] == ["PORT", "CONTROL"], lines
        self.port, self.control_port = (int(line.split()[1]) for line in lines)

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def stats(self):
        """The upstream's /__stats, asked on its control port (not counted in the stats)."""
        return get_json(self.control_port, "/__stats", self.host)

    def stop(self):
        stop_process(self.proc)


class Tetherd:
    """A running tetherd. `ports` are its listening TCP ports in configuration order (dedicated
    `listen` and `proxy_listen`, or --listen), `port` the first of them; `unix_paths` the paths
    of its Unix-domain listeners (`listen = unix:/path`)."""

    def __init__(self, argv, log_path, addresses, drain_timeout, preexec_fn=None):
        self.log_path = log_path
        self.addresses = addresses
        self.ports = [a[1] for a in addresses if isinstance(a, tuple)]
        self.unix_paths = [a for a in addresses if isinstance(a, str)]
        self.port = self.ports[0] if self.ports else None
        self.drain_timeout = drain_timeout
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_listening(self):
        """Waits until every listening port accepts connections."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for address in self.addresses:
            while True:
                rc = self.proc.poll()
                assert rc is None, f"tetherd exited with {rc} during startup:\n{self.log()}"
                try:
                    if isinstance(address, str):
                        with socket.socket(socket.AF_UNIX) as sock:
                            sock.settimeout(1)
                            sock.connect(address)
                    else:
                        socket.create_connection(address, timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"tetherd not listening on {address}"
                    time.sleep(0.02)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit status, or fails if tetherd is still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tetherd still running after {timeout:.1f}s") from None

    def stop(self):
        """SIGTERM (unless it already exited), then its exit status; kills it and fails if it
        does not exit within drain_timeout + 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.drain_timeout + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tetherd ignored SIGTERM past drain_timeout + 5s") from None


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    """The test CAs, server and client certificates (tlscerts.TlsCerts), made once per run."""
    return tlscerts.generate(tmp_path_factory.mktemp("tls-certs"))


@pytest.fixture
def start_upstream(request, tmp_path):
    """start_upstream(*upstream_py_args) -> Upstream, stopped at teardown."""
    started = []

    def start(*args):
        log_path = tmp_path / f"upstream-{len(started)}.log"
        _attach_log(request, f"upstream-{len(started)} stderr", log_path)
        upstream = Upstream([str(arg) for arg in args], log_path)
        started.append(upstream)
        upstream.wait_ports()
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


@pytest.fixture
def start_tetherd(request, tmp_path):
    """start_tetherd(config=INI text, args=extra CLI args, preexec_fn=None) -> Tetherd once it
    listens; preexec_fn runs in the child before exec (to set resource limits, for example).

    The configuration is dedented and written to tmp_path. At teardown tetherd gets SIGTERM
    and must exit 0 within drain_timeout + 5 s."""
    binary = tetherd_binary()
    if not binary.exists():
        pytest.fail(f"{binary} not found: build it with `make` or set TETHERD")
    started = []

    def start(config=None, args=(), preexec_fn=None):
        name = f"tetherd-{len(started)}"
        argv, addresses, drain = [str(binary)], [], DEFAULT_DRAIN_TIMEOUT
        if config is not None:
            config = textwrap.dedent(config).lstrip("\n")
            config_path = tmp_path / f"{name}.ini"
            config_path.write_text(config)
            argv += ["-c", str(config_path)]
            listens = config_value_lines(config, "listen", "proxy_listen")
            addresses = [value[5:] if value.startswith("unix:") else parse_address(value)
                         for value in listens]
            drains = config_value_lines(config, "drain_timeout")
            if drains:
                drain = parse_duration(drains[-1])
        argv += list(args)
        if "--listen" in args:
            addresses.append(parse_address(args[list(args).index("--listen") + 1]))
        log_path = tmp_path / f"{name}.log"
        _attach_log(request, f"{name} log", log_path)
        tetherd = Tetherd(argv, log_path, addresses, drain, preexec_fn)
        started.append(tetherd)
        tetherd.wait_listening()
        return tetherd

    yield start
    failures = []
    for tetherd in started:
        try:
            rc = tetherd.stop()
        except AssertionError as err:
            failures.append(str(err))
            continue
        if rc != 0:
            failures.append(f"tetherd exited with status {rc}:\n{tetherd.log()[-LOG_TAIL:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def start_proxy(start_upstream, start_tetherd):
    """start_proxy(upstream_args=(), upstream_cfg="", tether_cfg="", workers=1)
    -> (tetherd, upstream): one upstream.py behind a dedicated tetherd port."""

    def start(upstream_args=(), upstream_cfg="", tether_cfg="", workers=1):
        upstream = start_upstream(*upstream_args)
        config = dedicated_config(upstream.port, free_port(), upstream_cfg, tether_cfg, workers)
        return start_tetherd(config), upstream

    return start


@pytest.fixture
def proxy(start_proxy):
    """(tetherd, upstream) with default settings and one worker."""
    return start_proxy()


@pytest.fixture
def start_badpeer():
    """start_badpeer(mode, **options) -> BadPeer, closed at teardown."""
    peers = []

    def start(mode, **options):
        peer = BadPeer(mode, **options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()
