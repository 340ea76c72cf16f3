"""nginx instances that live entirely in a scratch directory (prefix, pid, logs, temp paths)."""

import os
from pathlib import Path

NGINX = "/usr/sbin/nginx"

_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def write_config(directory: Path, http_block: str, workers: int,
                 worker_connections: int = 4096) -> list[str]:
    """Writes DIR/nginx.conf around `http_block`; returns the argv running it in the foreground.

    Every path nginx writes to (pid, error log, temp dirs) is inside `directory`. When running as
    root, workers stay root so they can use the scratch directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temp_paths = "\n".join(
        f"    {name}_temp_path {directory / name};" for name in _TEMP_PATHS
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""{user}worker_processes {workers};
worker_rlimit_nofile {worker_connections + 1024};
pid {directory / 'nginx.pid'};
error_log {directory / 'error.log'} warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
{temp_paths}
{http_block}
}}
"""
    (directory / "nginx.conf").write_text(conf)
    return [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"),
            "-e", str(directory / "error.log"), "-g", "daemon off;"]
