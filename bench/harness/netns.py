"""Two test hosts on one machine: network namespaces joined by a veth pair.

`TwoHosts` creates host A and host B (`ip netns add`), a veth pair between them with addresses
from 198.18.0.0/15 (RFC 2544's benchmarking range, used only inside the two namespaces), brings
up loopback in both, and gives each host an /etc/hosts of its own (`ip netns exec` bind-mounts
/etc/netns/NAME/hosts over /etc/hosts). Everything it made is removed when the block ends: on
success, on error and on Ctrl-C. Names carry the creating process id, so parallel runs never
collide and leftovers of a killed run are recognised and removed by the next one.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
PREFIX = "ttp"  # tether prove
NETNS_ETC = Path("/etc/netns")
ADDRESS_A = "198.18.0.1"
ADDRESS_B = "198.18.0.2"
_NAME = re.compile(rf"^{PREFIX}-([ab])-(\d+)(-\d+)?$")


class NetnsError(Exception):
    """Namespaces cannot be made here (not root, no CONFIG_NET_NS, a locked-down sandbox)."""


def _ip(*args: str) -> None:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or 'failed'}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_ours() -> list[str]:
    """Namespaces named like ours that exist now (any run's)."""
    result = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=10)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if _NAME.match(name)]


def remove_stale() -> list[str]:
    """Removes namespaces (and their /etc/netns folders) left by runs whose process is gone."""
    removed = []
    for name in list_ours():
        if not _pid_alive(int(_NAME.match(name).group(2))):
            _remove_namespace(name)
            removed.append(name)
    return removed


def _remove_namespace(name: str) -> None:
    subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=10)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2 (ip) is not installed"
    probe = f"{PREFIX}-a-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as err:
        return str(err)
    finally:
        _remove_namespace(probe)
    return None


class TwoHosts:
    """Host A (the application's) and host B (the upstream service's), joined by a veth pair."""

    def __init__(self, hosts: dict[str, str] | None = None, sequence: int = 0):
        """`sequence` tells apart the pairs one process makes one after the other."""
        pid = os.getpid()
        self.a = f"{PREFIX}-a-{pid}-{sequence}"
        self.b = f"{PREFIX}-b-{pid}-{sequence}"
        self.address_a, self.address_b = ADDRESS_A, ADDRESS_B
        # Interface names have at most 15 characters: "ttpa" + pid (7) + "s" + sequence.
        self._veth_a, self._veth_b = (f"{PREFIX}{side}{pid}s{sequence % 1000}" for side in "ab")
        self._hosts = hosts or {}
        self._made: list[str] = []

    def __enter__(self) -> "TwoHosts":
        remove_stale()
        try:
            for name in (self.a, self.b):
                _ip("netns", "add", name)
                self._made.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
                self._write_hosts(name)
            _ip("link", "add", self._veth_a, "netns", self.a, "type", "veth", "peer", "name",
                self._veth_b, "netns", self.b)
            for name, dev, address in ((self.a, self._veth_a, self.address_a),
                                       (self.b, self._veth_b, self.address_b)):
                _ip("-n", name, "addr", "add", f"{address}/30", "dev", dev)
                _ip("-n", name, "link", "set", dev, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        # Deleting a namespace deletes the veth pair with it.
        while self._made:
            _remove_namespace(self._made.pop())

    def _write_hosts(self, name: str) -> None:
        folder = NETNS_ETC / name
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {host}" for host, address in self._hosts.items()]
        (folder / "hosts").write_text("\n".join(lines) + "\n")

    def run_in(self, name: str, argv: list[str]) -> list[str]:
        """argv prefixed to run inside namespace `name`."""
        return [IP, "netns", "exec", name, *argv]
