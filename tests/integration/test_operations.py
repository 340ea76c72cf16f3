"""Operations: one tetherd per port, takeover of the listening sockets (upgrade, reload) without
a refused or failed request, reload in place (limits applied to the live pools, pools kept),
reload with an invalid file, log reopening, --log-level."""

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import Client, assert_tether_error, fetch, free_port, tetherd_binary, wait_for

PR_SET_CHILD_SUBREAPER = 36


class Load:
    """Close-per-request load from `threads` threads, each request on a fresh connection, until
    stop() or `max_requests` per thread; every failure (refused, reset, non-200) is recorded."""

    def __init__(self, port, threads=2, max_requests=4000, deadline_s=30):
        self.port, self.done, self.failures = port, 0, []
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.deadline = time.monotonic() + deadline_s
        self.threads = [threading.Thread(target=self._run, args=(max_requests,), daemon=True)
                        for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, max_requests):
        for _ in range(max_requests):
            if self.stopping.is_set() or time.monotonic() > self.deadline:
                return
            try:
                status = fetch(self.port, headers=[("Connection", "close")]).status
                failure = None if status == 200 else f"status {status}"
            except Exception as err:  # noqa: BLE001 - every failure counts
                failure = repr(err)
            with self.lock:
                self.done += 1
                if failure:
                    self.failures.append(failure)

    def wait_done(self, count, timeout=15):
        wait_for(lambda: self.done >= count, timeout, f"{count} requests of the load")

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)
        return self.done, self.failures


@contextlib.contextmanager
def subreaper():
    """Makes this process the reaper of orphans for the duration, so the successor a reload
    starts (double-forked by tetherd) can be waited for and is never left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def ready_pids(log_text):
    return [int(pid) for pid in re.findall(r"tetherd ready: \d+ workers? \(pid (\d+)\)", log_text)]


def stop_pid(pid, timeout=15):
    """SIGTERM to an adopted successor and its exit status."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"successor {pid} ignored SIGTERM")


def config(upstream, port, tmp_path, extra="", upstream_extra="", workers=2):
    return (f"[tether]\nworkers = {workers}\ncontrol_socket = {tmp_path / 'tetherd.sock'}\n"
            f"{extra}\n[upstream app]\nurl = {upstream.url}\nlisten = 127.0.0.1:{port}\n"
            f"{upstream_extra}\n")


def test_second_tetherd_on_a_held_port_is_refused(start_upstream, start_tetherd, tmp_path):
    upstream = start_upstream()
    port = free_port()
    first = start_tetherd(config(upstream, port, tmp_path))
    ini = tmp_path / "second.ini"
    ini.write_text(config(upstream, port, tmp_path / "other"))
    second = subprocess.run([str(tetherd_binary()), "-c", str(ini)], capture_output=True,
                            text=True, timeout=10)
    assert second.returncode != 0
    assert f"127.0.0.1:{port}: in use by another process" in second.stderr, second.stderr
    # The first one still serves everything: the second never shared the port.
    assert all(fetch(port).status == 200 for _ in range(20))
    assert first.proc.poll() is None


def test_a_non_tetherd_listener_is_refused_too(start_upstream, start_tetherd, tmp_path):
    upstream = start_upstream()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        ini = tmp_path / "t.ini"
        ini.write_text(config(upstream, port, tmp_path))
        run = subprocess.run([str(tetherd_binary()), "-c", str(ini)], capture_output=True,
                             text=True, timeout=10)
    assert run.returncode != 0
    assert f"127.0.0.1:{port}: in use by another process" in run.stderr, run.stderr


def test_takeover_without_a_running_tetherd_fails_clearly(start_upstream, tmp_path):
    upstream = start_upstream()
    ini = tmp_path / "t.ini"
    ini.write_text(config(upstream, free_port(), tmp_path))
    run = subprocess.run([str(tetherd_binary()), "-c", str(ini), "--takeover"],
                         capture_output=True, text=True, timeout=10)
    assert run.returncode != 0
    assert "--takeover: control_socket" in run.stderr and "tetherd.sock" in run.stderr, run.stderr


def test_upgrade_by_takeover_under_load_fails_no_request(start_upstream, start_tetherd, tmp_path):
    """A new binary started with --takeover takes the sockets over; the old one drains and
    exits 0. A close-per-request load across it sees no refused or failed request."""
    upstream = start_upstream()
    port = free_port()
    old = start_tetherd(config(upstream, port, tmp_path))
    new_binary = tmp_path / "tetherd-new"
    shutil.copy(tetherd_binary(), new_binary)
    ini = tmp_path / "new.ini"
    ini.write_text(config(upstream, port, tmp_path, workers=3))
    load = Load(port)
    new = None
    try:
        load.wait_done(100)
        with open(tmp_path / "new.log", "wb") as log:
            new = subprocess.Popen([str(new_binary), "-c", str(ini), "--takeover"],
                                   stdout=log, stderr=subprocess.STDOUT)
        assert old.wait(15) == 0
        at_exit = load.done
        load.wait_done(at_exit + 200)
    finally:
        done, failures = load.stop()
        if new is not None:
            new.send_signal(signal.SIGTERM)
            assert new.wait(15) == 0
    log = (tmp_path / "new.log").read_text()
    assert "received 2 listening sockets" in log, log  # one per old worker
    assert f"took over the listening sockets; draining" in old.log()
    assert failures == [], f"{len(failures)} of {done} failed: {failures[:5]}"


@pytest.mark.parametrize("change", ["workers", "new upstream", "removed upstream"])
def test_reload_by_sighup_under_load_fails_no_request(start_upstream, start_tetherd, tmp_path,
                                                      change):
    """SIGHUP with a changed file starts a successor with it, which takes the sockets over;
    the old process drains. The new configuration is in force, and nothing failed."""
    upstream, second = start_upstream(), start_upstream("--name", "second")
    port, port2 = free_port(), free_port()
    both = (config(upstream, port, tmp_path) + f"[upstream second]\nurl = {second.url}\n"
            f"listen = 127.0.0.1:{port2}\n")
    with subreaper():
        tetherd = start_tetherd(both if change == "removed upstream"
                                else config(upstream, port, tmp_path))
        ini = next(tmp_path.glob("tetherd-0.ini"))
        load = Load(port)
        successor = None
        try:
            load.wait_done(100)
            if change == "workers":
                ini.write_text(config(upstream, port, tmp_path, workers=3))
            elif change == "new upstream":
                ini.write_text(both)
            else:
                ini.write_text(config(upstream, port, tmp_path))
            tetherd.signal(signal.SIGHUP)
            assert tetherd.wait(15) == 0
            # The successor logs that it is ready after it confirmed the takeover, which may be
            # after the predecessor exited.
            wait_for(lambda: len(ready_pids(tetherd.log())) == 2, 10, "the successor")
            pids = ready_pids(tetherd.log())
            successor = pids[1]
            load.wait_done(load.done + 200)
            if change == "new upstream":
                assert fetch(port2).header("X-Upstream-Name") == "second"
            elif change == "removed upstream":  # its listener closed with the old process
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port2), timeout=2)
            else:
                assert "tetherd ready: 3 workers" in tetherd.log()
        finally:
            done, failures = load.stop()
            if successor is not None:
                assert stop_pid(successor) == 0
    assert "reload: pid %d took over" % successor in tetherd.log()
    assert failures == [], f"{len(failures)} of {done} failed: {failures[:5]}"


def test_reload_with_an_invalid_file_keeps_the_running_configuration(start_upstream,
                                                                       start_tetherd, tmp_path):
    upstream = start_upstream()
    port = free_port()
    tetherd = start_tetherd(config(upstream, port, tmp_path))
    ini = next(tmp_path.glob("tetherd-0.ini"))
    ini.write_text(config(upstream, port, tmp_path, upstream_extra="max_idle = lots"))
    tetherd.signal(signal.SIGHUP)
    wait_for(lambda: "the running configuration stays" in tetherd.log(), 5, "the refusal")
    line = next(l for l in tetherd.log().splitlines() if "running configuration stays" in l)
    assert re.search(rf"{re.escape(str(ini))}:\d+: max_idle: lots: not an integer", line), line
    assert fetch(port).status == 200
    assert len(ready_pids(tetherd.log())) == 1
    assert tetherd.proc.poll() is None


def test_sigusr1_reopens_the_access_log(start_upstream, start_tetherd, tmp_path):
    upstream = start_upstream()
    port = free_port()
    log = tmp_path / "access.log"
    tetherd = start_tetherd(config(upstream, port, tmp_path, extra=f"access_log = {log}",
                                   workers=1))
    assert fetch(port, target="/before").status == 200
    wait_for(lambda: log.exists() and "/before" in log.read_text(), 5, "the first line")
    log.rename(tmp_path / "access.log.1")  # what logrotate does without copytruncate
    tetherd.signal(signal.SIGUSR1)
    wait_for(lambda: "reopened access_log" in tetherd.log(), 5, "the reopen")
    assert fetch(port, target="/after").status == 200
    wait_for(lambda: log.exists() and "/after" in log.read_text(), 5, "a line in the new file")
    assert json.loads(log.read_text().splitlines()[0])["path"] == "/after"
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_log_level_option_overrides_the_file(start_upstream, start_tetherd, tmp_path):
    upstream = start_upstream()
    port = free_port()
    tetherd = start_tetherd(config(upstream, port, tmp_path, extra="log_level = error"),
                            args=("--log-level", "info"))
    wait_for(lambda: "tetherd ready" in tetherd.log(), 5, "the info line log_level = error hides")
    ini = tmp_path / "bad.ini"
    ini.write_text(config(upstream, free_port(), tmp_path / "x"))
    run = subprocess.run([str(tetherd_binary()), "-c", str(ini), "--log-level", "loud"],
                         capture_output=True, text=True, timeout=10)
    assert run.returncode == 2 and "--log-level loud" in run.stderr, run.stderr


# --- errors that say who failed -----------------------------------------------------------------


def test_each_generated_error_names_its_type(start_upstream, start_tetherd, tmp_path):
    """Proxy-Status carries the RFC 9209 type of each failure; the access log says who
    generated the response, why, and for which Host."""
    upstream = start_upstream()
    dead = free_port()  # nothing listens there
    port, dead_port, proxy_port = free_port(), free_port(), free_port()
    log = tmp_path / "access.log"
    tetherd = start_tetherd(
        f"[tether]\nworkers = 1\naccess_log = {log}\nproxy_listen = 127.0.0.1:{proxy_port}\n"
        f"[upstream app]\nurl = {upstream.url}\nlisten = 127.0.0.1:{port}\nhosts = app.test\n"
        "max_connections = 1\nmax_queue = 0\nresponse_timeout = 300ms\n"
        f"[upstream dead]\nurl = http://127.0.0.1:{dead}\nlisten = 127.0.0.1:{dead_port}\n")
    assert_tether_error(fetch(dead_port), 502, "connect failed", error="connection_refused")
    assert_tether_error(fetch(proxy_port, headers=[("Host", "other.test")]), 403,
                        error="destination_not_found")
    assert_tether_error(fetch(proxy_port, "CONNECT", "app.test:443",
                              headers=[("Host", "app.test:443")]), 405,
                        error="http_request_denied")
    assert_tether_error(fetch(port, headers=[("X-Delay-Ms", "2000")]), 504,
                        error="http_response_timeout")
    # One request holds the only connection; the next finds no room in the queue.
    held = threading.Thread(target=lambda: fetch(port, headers=[("X-Delay-Ms", "250")]))
    held.start()
    wait_for(lambda: upstream.stats()["requests"] >= 2, 5, "the held request")
    assert_tether_error(fetch(port), 503, "max_queue", error="connection_limit_reached")
    held.join(5)
    ok = fetch(proxy_port, headers=[("Host", "app.test")])
    assert ok.status == 200 and ok.header("Proxy-Status") is None
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 7, 5, "the log")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by_status = {line["status"]: line for line in lines}
    assert by_status[502]["generated_by"] == "tether"
    assert by_status[502]["error"] == "connection_refused"
    assert by_status[403]["host"] == "other.test"
    assert by_status[403]["error"] == "destination_not_found"
    assert by_status[200]["generated_by"] == "upstream" and "error" not in by_status[200]
    assert by_status[200]["host"] == "app.test"


def test_upstream_failures_warn_at_the_default_level_rate_limited(start_tetherd, tmp_path):
    """A down upstream shows in the log at the default level (info): the pre-warming failure and
    the 502s, at most one line per interval, with the count of the ones held back. Without the
    breaker, which would answer 503 once 5 connects failed: this is about each failure's log."""
    dead, port = free_port(), free_port()
    tetherd = start_tetherd(f"[tether]\nworkers = 1\n[upstream dead]\n"
                            f"url = http://127.0.0.1:{dead}\nlisten = 127.0.0.1:{port}\n"
                            "min_idle = 2\nbreaker_failures = 0\n")
    for _ in range(20):
        assert fetch(port).status == 502
    wait_for(lambda: "pre-warming a connection (min_idle) failed: Connection refused"
             in tetherd.log(), 5, "the pre-warming warning")
    lines = [line for line in tetherd.log().splitlines() if " warn client " in line]
    assert len(lines) == 1, tetherd.log()
    assert "502 upstream dead" in lines[0] and "connect failed: Connection refused" in lines[0]
    assert "(0 similar suppressed)" in lines[0]
    assert len([l for l in tetherd.log().splitlines() if "pre-warming" in l]) == 1


def test_check_resolve_resolves_upstream_names(tmp_path):
    ini = tmp_path / "t.ini"
    ini.write_text("[upstream good]\nurl = http://localhost:8080\nlisten = 127.0.0.1:19001\n"
                   "[upstream bad]\nurl = http://no-such-host.invalid\n"
                   "listen = 127.0.0.1:19002\n")
    plain = subprocess.run([str(tetherd_binary()), "--check", "-c", str(ini)],
                           capture_output=True, text=True, timeout=20)
    assert plain.returncode == 0, plain.stderr  # names are not looked up without --resolve
    run = subprocess.run([str(tetherd_binary()), "--check", "--resolve", "-c", str(ini)],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode == 2
    assert "upstream good: localhost -> 127.0.0.1:8080" in run.stdout or "[::1]:8080" in run.stdout
    assert f"{ini}:5: url: upstream bad: cannot resolve no-such-host.invalid" in run.stderr, \
        run.stderr


def test_tether_reload_through_the_admin_endpoint(start_upstream, start_tetherd, tmp_path):
    """`tether reload` checks the file through the admin endpoint: an invalid one is refused with
    its file:line:key error; a valid changed one is taken over by a new tetherd."""
    tether = tetherd_binary().parent / "tether"
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    extra = f"admin = 127.0.0.1:{admin}"
    with subreaper():
        tetherd = start_tetherd(config(upstream, port, tmp_path, extra=extra))
        ini = next(tmp_path.glob("tetherd-0.ini"))
        ini.write_text(config(upstream, port, tmp_path, extra=extra + "\nworkers = 9"))
        bad = subprocess.run([str(tether), "reload", "--admin", f"127.0.0.1:{admin}"],
                             capture_output=True, text=True, timeout=10)
        assert bad.returncode == 1
        assert re.search(r"HTTP 400: tether: .*tetherd-0\.ini:\d+: workers: set twice", bad.stderr), \
            bad.stderr
        assert tetherd.proc.poll() is None
        ini.write_text(config(upstream, port, tmp_path, extra=extra, workers=1))
        good = subprocess.run([str(tether), "reload", "--admin", f"127.0.0.1:{admin}"],
                              capture_output=True, text=True, timeout=10)
        assert good.returncode == 0, good.stderr
        assert "reloading" in good.stdout
        assert tetherd.wait(15) == 0
        wait_for(lambda: len(ready_pids(tetherd.log())) == 2, 10, "the successor")
        successor = ready_pids(tetherd.log())[1]
        try:
            assert fetch(port).status == 200
            stats = json.loads(fetch(admin, target="/stats").body)
            assert stats  # the successor serves the admin endpoint on the same socket
        finally:
            assert stop_pid(successor) == 0


def start_activated(binary, ini, sock, log_path):
    """tetherd as systemd starts a socket-activated service: the listening socket as fd 3,
    LISTEN_FDS=1 and LISTEN_PID set to the new process's own pid."""
    def as_systemd():
        os.dup2(sock.fileno(), 3)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"

    with open(log_path, "ab") as log:
        return subprocess.Popen([str(binary), "-c", str(ini)], stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=as_systemd,
                                pass_fds=(3,))


def test_restart_with_socket_activation_refuses_nothing(start_upstream, tmp_path):
    """With the socket held by systemd (here: this test), a restart is a stop and a start, and
    the connections that arrive in between wait in the socket's queue: none is refused."""
    upstream = start_upstream()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    ini = tmp_path / "t.ini"
    ini.write_text(f"[tether]\nworkers = 2\ndrain_timeout = 2s\n[upstream app]\n"
                   f"url = {upstream.url}\nlisten = 127.0.0.1:{port}\n")
    log_path = tmp_path / "tetherd.log"
    first = start_activated(tetherd_binary(), ini, sock, log_path)
    second = None
    load = None
    try:
        wait_for(lambda: "tetherd ready" in log_path.read_text(), 10, "the first tetherd")
        assert "socket activation: 1 listening socket from systemd" in log_path.read_text()
        load = Load(port)
        load.wait_done(100)
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        time.sleep(0.3)  # nobody accepts now: connections queue in the socket systemd holds
        second = start_activated(tetherd_binary(), ini, sock, log_path)
        load.wait_done(load.done + 200)
    finally:
        done, failures = load.stop() if load else (0, [])
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        sock.close()
    assert second is not None and second.returncode == 0
    assert failures == [], f"{len(failures)} of {done} failed: {failures[:5]}"


# --- reload in place: numbers change, pools stay ---------------------------------------------------

def upstream_stats(admin, name="app"):
    stats = json.loads(fetch(admin, target="/stats").body)
    return next(u for u in stats["upstreams"] if u["name"] == name)


def sighup_and_wait(tetherd, what="reload: applied in place"):
    """SIGHUP, and waits for the log to say how the reload went (one more such line)."""
    before = tetherd.log().count(what)
    tetherd.signal(signal.SIGHUP)
    wait_for(lambda: tetherd.log().count(what) > before, 10, f"the log to say {what!r}")


def test_a_changed_limit_applies_in_place_keeping_pool_and_learned_timeout(start_upstream,
                                                                            start_tetherd,
                                                                            tmp_path):
    """Limits and timeouts change in the running process: the same pid, the pooled connections
    of the upstream carry on (the same upstream connection ids, no new connection opened), the
    learned idle timeout stays, and /stats and /config show the new values. POST /reload says
    which way the file applies."""
    upstream = start_upstream("--keepalive-hint", "7")
    port, admin = free_port(), free_port()
    extra = f"admin = 127.0.0.1:{admin}"
    tetherd = start_tetherd(config(upstream, port, tmp_path, extra=extra, workers=1,
                                   upstream_extra="max_idle = 8"))
    ini = next(tmp_path.glob("tetherd-0.ini"))
    first = [fetch(port).conn_id for _ in range(5)]
    assert len(set(first)) == 1
    before = upstream_stats(admin)
    assert before["idle_timeout"]["learned_ms"] == 7000
    ini.write_text(config(upstream, port, tmp_path, extra=extra, workers=1,
                          upstream_extra="max_idle = 5\nqueue_timeout = 3s\nbreaker_failures = 9"))
    answer = fetch(admin, method="POST", target="/reload")
    assert answer.status == 202, answer
    assert "applies in place" in answer.text, answer.text
    wait_for(lambda: "reload: applied in place" in tetherd.log(), 10, "the in-place reload")
    after = [fetch(port).conn_id for _ in range(5)]
    assert set(after) == set(first), "the pooled connection was replaced"
    stats = upstream_stats(admin)
    assert stats["connections"]["opened_total"] == before["connections"]["opened_total"]
    assert stats["connections"]["max_idle"] == 5
    assert stats["idle_timeout"]["learned_ms"] == 7000
    shown = fetch(admin, target="/config").text
    assert "queue_timeout = 3000ms" in shown and "breaker_failures = 9" in shown, shown
    assert len(ready_pids(tetherd.log())) == 1
    assert "took over" not in tetherd.log()


def test_a_change_that_needs_a_new_process_says_which_key(start_upstream, start_tetherd,
                                                          tmp_path):
    """POST /reload names the key that sends a valid file down the takeover path, before the
    reload happens; the log says it again."""
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    extra = f"admin = 127.0.0.1:{admin}"
    with subreaper():
        tetherd = start_tetherd(config(upstream, port, tmp_path, extra=extra))
        ini = next(tmp_path.glob("tetherd-0.ini"))
        ini.write_text(config(upstream, port, tmp_path, extra=extra, workers=1))
        answer = fetch(admin, method="POST", target="/reload")
        assert answer.status == 202, answer
        assert "[tether]: workers changed, so a new tetherd takes over" in answer.text, answer.text
        assert tetherd.wait(15) == 0
        assert "reload: [tether]: workers changed, which needs a new process" in tetherd.log()
        # The successor logs that it is ready after it confirmed the takeover, which may be
        # after the predecessor exited.
        wait_for(lambda: len(ready_pids(tetherd.log())) == 2, 10, "the successor")
        assert stop_pid(ready_pids(tetherd.log())[1]) == 0


def test_an_invalid_file_through_post_reload_names_file_line_key(start_upstream, start_tetherd,
                                                                 tmp_path):
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    extra = f"admin = 127.0.0.1:{admin}"
    tetherd = start_tetherd(config(upstream, port, tmp_path, extra=extra))
    ini = next(tmp_path.glob("tetherd-0.ini"))
    ini.write_text(config(upstream, port, tmp_path, extra=extra,
                          upstream_extra="max_connections = many"))
    answer = fetch(admin, method="POST", target="/reload")
    assert answer.status == 400, answer
    assert re.search(rf"{re.escape(str(ini))}:\d+: max_connections: many: not an integer",
                     answer.text), answer.text
    assert "max_connections = 256" in fetch(admin, target="/config").text
    assert fetch(port).status == 200


def test_a_lowered_max_connections_closes_idle_connections_never_active_ones(start_upstream,
                                                                             start_tetherd,
                                                                             tmp_path):
    """Six pooled connections, two of them busy with slow requests; max_connections drops to 3
    by reload: idle ones close down to it (one idle left), both busy requests complete."""
    upstream = start_upstream()
    port, admin = free_port(), free_port()
    extra = f"admin = 127.0.0.1:{admin}"
    tetherd = start_tetherd(config(upstream, port, tmp_path, extra=extra, workers=1,
                                   upstream_extra="max_connections = 6\nmax_idle = 6"))
    ini = next(tmp_path.glob("tetherd-0.ini"))

    def slow(results, delay_ms):
        results.append(fetch(port, headers=[("X-Delay-Ms", str(delay_ms))]).status)

    warm = []
    threads = [threading.Thread(target=slow, args=(warm, 300)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert warm == [200] * 6
    wait_for(lambda: upstream_stats(admin)["connections"]["idle"] == 6, 5, "six idle")
    busy = []
    threads = [threading.Thread(target=slow, args=(busy, 1500)) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: upstream_stats(admin)["connections"]["active"] == 2, 5, "two active")
    ini.write_text(config(upstream, port, tmp_path, extra=extra, workers=1,
                          upstream_extra="max_connections = 3\nmax_idle = 6"))
    sighup_and_wait(tetherd)
    conns = upstream_stats(admin)["connections"]
    assert (conns["active"], conns["idle"]) == (2, 1), conns
    assert conns["closed"]["trimmed"] == 3
    for thread in threads:
        thread.join(10)
    assert busy == [200, 200]
    wait_for(lambda: upstream_stats(admin)["connections"]["idle"] == 3, 5, "three idle")
    assert upstream_stats(admin)["connections"]["max"] == 3


class KeepAliveLoad:
    """Requests on one kept-alive client connection after another from a thread, until stop()
    or `max_requests`; every failure is recorded (the connection is opened again after one)."""

    def __init__(self, port, max_requests=20000, deadline_s=30):
        self.port, self.done, self.failures = port, 0, []
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + deadline_s
        self.thread = threading.Thread(target=self._run, args=(max_requests,), daemon=True)
        self.thread.start()

    def _run(self, max_requests):
        client = None
        for _ in range(max_requests):
            if self.stopping.is_set() or time.monotonic() > self.deadline:
                break
            try:
                client = client or Client(self.port)
                status = client.request().status
                if status != 200:
                    self.failures.append(f"status {status}")
            except Exception as err:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(err))
                client.close()
                client = None
            self.done += 1
        if client is not None:
            client.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(15)
        return self.done, self.failures


def test_reloads_in_place_under_load_fail_no_request(start_upstream, start_tetherd, tmp_path):
    """Close-per-request and keep-alive load across five in-place reloads that lower and raise
    the limits: not one request fails, and the process is the same throughout."""
    upstream = start_upstream()
    port = free_port()
    limits = ["max_connections = 64\nmax_idle = 32", "max_connections = 4\nmax_idle = 2"]
    tetherd = start_tetherd(config(upstream, port, tmp_path, upstream_extra=limits[0]))
    ini = next(tmp_path.glob("tetherd-0.ini"))
    churn, kept = Load(port), KeepAliveLoad(port)
    try:
        churn.wait_done(100)
        for i in range(5):
            ini.write_text(config(upstream, port, tmp_path, upstream_extra=limits[(i + 1) % 2]))
            sighup_and_wait(tetherd)
            churn.wait_done(churn.done + 50)
    finally:
        done, failures = churn.stop()
        kept_done, kept_failures = kept.stop()
    assert failures == [], f"{len(failures)} of {done} failed: {failures[:5]}"
    assert kept_failures == [], f"{len(kept_failures)} of {kept_done} failed: {kept_failures[:5]}"
    assert kept_done > 50
    assert len(ready_pids(tetherd.log())) == 1
