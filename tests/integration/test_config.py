"""Configuration validation and the command line."""

import subprocess
import textwrap

import pytest

from helpers import fetch, free_port, tetherd_binary

GOOD = """\
; every documented key
[tether]
workers = 2
proxy_listen = 127.0.0.1:15001
log_level = debug
max_head_size = 64k
client_header_timeout = 10s
client_idle_timeout = 1m
drain_timeout = 500ms

# a dedicated port
[upstream users]
url = http://127.0.0.1:8080
listen = 127.0.0.1:9001
hosts = users.internal, users.internal:8080
preserve_host = yes
max_connections = 100
max_idle = 50
idle_timeout = auto
connect_timeout = 2s
response_timeout = 30s

[upstream orders]
url = http://orders.internal:9090
idle_timeout = 55s
"""

# (name, configuration, line of the error, key named in it)
BAD = [
    ("unknown key", "[tether]\nworkers = 1\nbogus_key = 1\n", 3, "bogus_key"),
    ("bad duration", "[upstream a]\nurl = http://127.0.0.1:1\nlisten = 127.0.0.1:9001\n"
                     "idle_timeout = 5 parsecs\n", 4, "idle_timeout"),
    ("bad size", "[tether]\nmax_head_size = 12q\n", 2, "max_head_size"),
    ("bad workers", "[tether]\n\nworkers = many\n", 3, "workers"),
    ("bad url", "[upstream a]\nurl = ftp://127.0.0.1:21\n", 2, "url"),
    ("missing url", "[tether]\nworkers = 1\n\n[upstream api]\nlisten = 127.0.0.1:9001\n", 4, "url"),
]


def run_tetherd(*args, timeout=10):
    return subprocess.run([str(tetherd_binary()), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def write_config(tmp_path):
    def write(text, name="tether.ini"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def test_check_accepts_a_good_file(write_config):
    path = write_config(GOOD)
    result = run_tetherd("--check", "-c", path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok" in result.stdout


@pytest.mark.parametrize("text, line, key", [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_check_rejects_a_bad_file_naming_file_line_and_key(write_config, text, line, key):
    path = write_config(text)
    result = run_tetherd("--check", "-c", path)
    assert result.returncode == 2, result
    assert f"{path}:{line}: {key}: " in result.stderr


def test_unknown_section_is_rejected(write_config):
    path = write_config("[tether]\nworkers = 1\n[nonsense]\n")
    result = run_tetherd("--check", "-c", path)
    assert result.returncode == 2
    assert f"{path}:3:" in result.stderr and "nonsense" in result.stderr


def test_startup_with_a_bad_file_fails_before_listening(write_config):
    port = free_port()
    path = write_config(textwrap.dedent(f"""\
        [upstream a]
        url = http://127.0.0.1:1
        listen = 127.0.0.1:{port}
        connect_timeout = soon
    """))
    result = run_tetherd("-c", path)
    assert result.returncode == 2
    assert f"{path}:4: connect_timeout: " in result.stderr


def test_missing_config_file_is_an_error(tmp_path):
    result = run_tetherd("--check", "-c", str(tmp_path / "absent.ini"))
    assert result.returncode != 0
    assert "absent.ini" in result.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version(flag):
    result = run_tetherd(flag)
    assert result.returncode == 0, result.stderr
    assert "tether" in result.stdout.lower()
    if flag == "--help":
        assert "--check" in result.stdout and "--listen" in result.stdout


def test_unknown_option_is_an_error():
    result = run_tetherd("--no-such-option")
    assert result.returncode != 0
    assert result.stderr


def test_zero_config_listen_and_upstream(start_upstream, start_tetherd):
    upstream = start_upstream("--name", "zero")
    port = free_port()
    tetherd = start_tetherd(args=["--listen", f"127.0.0.1:{port}", "--upstream", upstream.url,
                                  "--workers", "1"])
    first = fetch(tetherd.port, "GET", "/zero")
    second = fetch(tetherd.port, "GET", "/config")
    assert (first.status, first.header("X-Upstream-Name")) == (200, "zero")
    assert second.header("X-Upstream-Target") == "/config"
    assert second.conn_id == first.conn_id  # pooled even without a file
