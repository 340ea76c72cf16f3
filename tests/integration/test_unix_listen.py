"""Unix-domain socket listeners: `listen = unix:/path` for an upstream and for proxy_listen.

One socket shared by every worker (EPOLLEXCLUSIVE), mode, owner and group set before it
listens, a stale socket file replaced at startup, a live one refused, the file removed on a clean
shutdown. Real clients: curl --unix-socket and Python's http.client over AF_UNIX."""

import http.client
import os
import pwd
import shutil
import socket
import stat
import subprocess

import pytest

from helpers import tetherd_binary

CURL = shutil.which("curl")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX, as httpx's uds transport and requests-unixsocket do it."""

    def __init__(self, path, timeout=5):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_config(upstream, path, extra_upstream="", tether="workers = 2"):
    return (f"[tether]\n{tether}\n\n[upstream app]\nurl = {upstream.url}\nhosts = app.internal\n"
            f"listen = unix:{path}\n{extra_upstream}\n")


@pytest.fixture
def sock_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


def test_http_client_keepalive_over_a_unix_listener(start_upstream, start_tetherd, sock_dir):
    upstream = start_upstream()
    path = str(sock_dir / "app.sock")
    start_tetherd(unix_config(upstream, path))
    conn = UnixHTTPConnection(path)
    try:
        ids = set()
        for i in range(5):
            conn.request("POST", f"/r{i}", body=b"x" * 1000)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("X-Request-Body-Size") == "1000"
            resp.read()
            ids.add(resp.getheader("X-Upstream-Conn"))
        assert len(ids) == 1  # one pooled upstream connection served them all
    finally:
        conn.close()
    assert upstream.stats()["heads"][-1]["head"].startswith("POST /r4 HTTP/1.1")


def test_httpx_uds_transport(start_upstream, start_tetherd, sock_dir):
    httpx = pytest.importorskip("httpx")
    upstream = start_upstream()
    path = str(sock_dir / "app.sock")
    start_tetherd(unix_config(upstream, path))
    with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
        for i in range(3):
            resp = client.get(f"http://users/h{i}", headers={"X-Body-Size": "100000"})
            assert resp.status_code == 200 and len(resp.content) == 100000
    assert upstream.stats()["connections_accepted"] == 1


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_curl_through_unix_listener_and_unix_proxy_listen(start_upstream, start_tetherd,
                                                         sock_dir):
    """Many new connections over both workers, on a dedicated listener and a forward proxy."""
    upstream = start_upstream()
    app, proxy = str(sock_dir / "app.sock"), str(sock_dir / "proxy.sock")
    start_tetherd(unix_config(upstream, app, tether=f"workers = 2\nproxy_listen = unix:{proxy}"))
    for path, url in ((app, "http://x/dedicated"), (proxy, "http://app.internal/proxied")):
        outputs = [arg for _ in range(20) for arg in ("-o", "/dev/null", url)]
        # Connection: close: a new connection per request, accepted by either worker.
        out = subprocess.run([CURL, "-sS", "--unix-socket", path, "-H", "Connection: close",
                              "-w", "%{http_code}\\n", *outputs],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["200"] * 20
    assert upstream.stats()["requests"] == 40


def test_socket_mode_owner_and_group(start_upstream, start_tetherd, sock_dir):
    upstream = start_upstream()
    default, custom = str(sock_dir / "default.sock"), str(sock_dir / "custom.sock")
    start_tetherd(unix_config(upstream, default, tether="workers = 1"))
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o660  # the default
    if os.geteuid() != 0:
        pytest.skip("changing a socket's owner needs root")
    nobody = pwd.getpwnam("nobody")
    start_tetherd(f"[tether]\nworkers = 1\nproxy_listen = unix:{custom}\n"
                  f"proxy_listen_mode = 0640\nproxy_listen_owner = nobody\n"
                  f"proxy_listen_group = 4321\n\n"
                  f"[upstream app]\nurl = {upstream.url}\nhosts = app.internal\n")
    st = os.stat(custom)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, 4321)


def test_stale_socket_file_is_replaced_and_removed_at_shutdown(start_upstream, start_tetherd,
                                                               sock_dir):
    upstream = start_upstream()
    path = str(sock_dir / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a socket file whose process is gone: nobody listens
    stale.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    tetherd = start_tetherd(unix_config(upstream, path))
    conn = UnixHTTPConnection(path)
    conn.request("GET", "/after-stale")
    assert conn.getresponse().status == 200
    conn.close()
    assert tetherd.stop() == 0
    assert not os.path.exists(path)


def run_tetherd(config_path, timeout=10):
    return subprocess.run([str(tetherd_binary()), "-c", str(config_path)], capture_output=True,
                          text=True, timeout=timeout)


def test_live_socket_or_other_file_is_refused(start_upstream, sock_dir, tmp_path):
    upstream = start_upstream()
    path = sock_dir / "app.sock"
    config = tmp_path / "tether.ini"
    config.write_text(unix_config(upstream, path))
    with socket.socket(socket.AF_UNIX) as live:  # another process listens there
        live.bind(str(path))
        live.listen()
        result = run_tetherd(config)
        assert result.returncode != 0
        assert f"cannot listen on unix:{path}: another process is listening there" in \
            result.stdout + result.stderr
        assert stat.S_ISSOCK(os.stat(path).st_mode)  # left alone
    path.unlink()
    path.write_text("not a socket")
    result = run_tetherd(config)
    assert result.returncode != 0
    assert f"cannot listen on unix:{path}: the file exists and is not a socket" in \
        result.stdout + result.stderr
    assert path.read_text() == "not a socket"


BAD = [
    ("relative path", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:run/a.sock\n", 3,
     "listen", "expected unix:/absolute/path"),
    ("path too long", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:/" + "x" * 120 +
     "\n", 3, "listen", "at most 107 bytes"),
    ("mode on a TCP port", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = 127.0.0.1:9001\n"
     "listen_mode = 0600\n", 4, "listen_mode", "only for a unix: address ([upstream a] has "
     "listen 127.0.0.1:9001)"),
    ("owner without a proxy socket", "[tether]\nproxy_listen_owner = root\n"
     "proxy_listen = 127.0.0.1:15001\n[upstream a]\nurl = http://127.0.0.1:1\n", 2,
     "proxy_listen_owner", "only for a unix: address ([tether] has proxy_listen"),
    ("bad mode", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:/run/a.sock\n"
     "listen_mode = 0999\n", 4, "listen_mode", "expected octal permission bits"),
    ("mode out of range", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:/run/a.sock\n"
     "listen_mode = 1777\n", 4, "listen_mode", "out of range"),
    ("unknown group", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:/run/a.sock\n"
     "listen_group = no-such-group-here\n", 4, "listen_group", "no such group"),
    ("unknown user", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = unix:/run/a.sock\n"
     "listen_owner = no-such-user-here\n", 4, "listen_owner", "no such user"),
]


@pytest.mark.parametrize("text, line, key, why", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_config_errors_name_file_line_and_key(tmp_path, text, line, key, why):
    path = tmp_path / "tether.ini"
    path.write_text(text)
    result = subprocess.run([str(tetherd_binary()), "--check", "-c", str(path)],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2, result
    assert f"{path}:{line}: {key}: " in result.stderr and why in result.stderr, result.stderr


def test_cap_pauses_and_resumes_a_shared_unix_listener(start_upstream, start_tetherd, sock_dir):
    """At max_client_connections both workers take the shared socket out of epoll (an
    EPOLLEXCLUSIVE registration cannot be modified, only removed and added again); a client
    waiting in the backlog is served once a connection closes."""
    upstream = start_upstream()
    path = str(sock_dir / "app.sock")
    start_tetherd(unix_config(upstream, path, tether="workers = 2\nmax_client_connections = 2"))
    holders = [UnixHTTPConnection(path) for _ in range(2)]
    for conn in holders:
        conn.request("GET", "/hold")
        assert conn.getresponse().read() == b"ok\n"
    waiting = UnixHTTPConnection(path, timeout=0.5)
    waiting.request("GET", "/waits")  # connects: the kernel's backlog holds it
    with pytest.raises(TimeoutError):
        waiting.getresponse()
    waiting.close()
    holders[0].close()
    late = UnixHTTPConnection(path)
    late.request("GET", "/late")
    assert late.getresponse().status == 200
    late.close()
    holders[1].close()


def test_unix_listener_survives_a_takeover_without_a_refused_connection(start_upstream,
                                                                       start_tetherd, sock_dir,
                                                                       tmp_path):
    """The Unix socket is one of the listener set's: a successor started with --takeover gets it
    and its queue, the old process drains without removing the file (the successor owns it),
    and a close-per-request load across the handover sees no refused or failed connection. The
    successor removes the file at its clean shutdown."""
    import signal
    import threading
    import time

    upstream = start_upstream()
    path = str(sock_dir / "app.sock")
    control = f"control_socket = {tmp_path / 'tetherd.sock'}"
    old = start_tetherd(unix_config(upstream, path, tether=f"workers = 2\n{control}"))
    ini = tmp_path / "new.ini"
    ini.write_text(unix_config(upstream, path, tether=f"workers = 3\n{control}"))
    stop, done, failures = threading.Event(), [0], []

    def load():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and done[0] < 20000:
            conn = UnixHTTPConnection(path)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failures.append(resp.status)
            except OSError as e:
                failures.append(repr(e))
            finally:
                conn.close()
            done[0] += 1

    def wait_done(n):
        deadline = time.monotonic() + 15
        while done[0] < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done[0] >= n, done[0]

    thread = threading.Thread(target=load)
    thread.start()
    new = None
    try:
        wait_done(100)
        with open(tmp_path / "new.log", "wb") as log:
            new = subprocess.Popen([str(tetherd_binary()), "-c", str(ini), "--takeover"],
                                   stdout=log, stderr=subprocess.STDOUT)
        assert old.wait(15) == 0
        assert stat.S_ISSOCK(os.stat(path).st_mode)  # the old process left the file
        wait_done(done[0] + 200)  # served by the successor alone
    finally:
        stop.set()
        thread.join(35)
        if new is not None:
            new.send_signal(signal.SIGTERM)
            assert new.wait(15) == 0
    log = (tmp_path / "new.log").read_text()
    assert "received 1 listening sockets" in log, log
    assert failures == [], f"{len(failures)} of {done[0]} failed: {failures[:5]}"
    assert not os.path.exists(path)  # removed by its owner, the successor
