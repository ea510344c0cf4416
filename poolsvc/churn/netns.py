"""A private network namespace for ``poolsvc churn --netns``: a narrow port range, no reuse.

The study must reproduce what connection churn does to a client: its ephemeral
ports pile up in TIME_WAIT until ``connect()`` fails with EADDRNOTAVAIL. On a
normal machine that takes ~28,000 ports and ``tcp_tw_reuse`` hides it on
loopback. Inside a namespace of our own (``ip netns add``), the settings are ours
to narrow without touching the machine's: ``ip_local_port_range`` to ``PORTS``
ports and ``tcp_tw_reuse`` off. The whole study (target and both halves) then
runs inside it (``ip netns exec``), and the namespace is deleted afterwards,
however the study ends. Each half gets a range of its own, as wide, that no half
used before (:func:`fresh_ports`): the ports one half left in TIME_WAIT never
starve the next. Creating one needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from workers.shared.errors import ConfigError

PORTS: Final = (40000, 40999)  # 1,000 ephemeral ports
SETTINGS: Final = {
    "net.ipv4.ip_local_port_range": f"{PORTS[0]} {PORTS[1]}",
    "net.ipv4.tcp_tw_reuse": "0",  # the default (2) reuses TIME_WAIT ports on loopback
}
_DELETE_TRIES: Final = 5
INSIDE: Final = "POOLSVC_NETNS"  # set in the study's environment inside the namespace


def why_not() -> str | None:
    """Why this process cannot make a namespace (None: it can)."""
    if os.geteuid() != 0:
        return "--netns needs root (CAP_SYS_ADMIN) to create a network namespace"
    if shutil.which("ip") is None:
        return "--netns needs the ip command (Debian package iproute2)"
    return None


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ConfigError(f"netns: {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


class Namespace:
    """``with Namespace() as ns:`` a fresh namespace with :data:`SETTINGS`, lo up."""

    def __init__(self) -> None:
        self.name = f"poolsvc-churn-{os.getpid()}"

    def __enter__(self) -> Namespace:
        reason = why_not()
        if reason:
            raise ConfigError(reason)
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            for key, value in SETTINGS.items():
                _run("ip", "netns", "exec", self.name, "sysctl", "-qw", f"{key}={value}")
        except BaseException:
            self._delete()
            raise
        return self

    def argv(self, *command: str) -> list[str]:
        """``command`` to run inside."""
        return ["ip", "netns", "exec", self.name, *command]

    def _delete(self) -> None:
        """Remove the namespace; a busy machine may refuse the first try (a process of the
        study still leaving it), so a few tries, then a line saying what is left."""
        path = Path("/var/run/netns") / self.name
        error = ""
        for attempt in range(_DELETE_TRIES):
            proc = subprocess.run(
                ["ip", "netns", "del", self.name], capture_output=True, text=True, timeout=30
            )
            if not path.exists():
                return
            error = proc.stderr.strip() or f"exit {proc.returncode}"
            time.sleep(0.1 * (attempt + 1))
        print(f"poolsvc: warning: netns {self.name} not removed: {error}", file=sys.stderr)

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._delete()

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"


def fresh_ports(half: int) -> None:
    """Inside the namespace: give half ``half`` (0, 1, ...) ``PORTS``' width of ports no
    half used before. A half that ran out of ports leaves them in TIME_WAIT for 60 s;
    the next half (its target's listening port too) must not start in that wreck."""
    width = PORTS[1] - PORTS[0] + 1
    low = PORTS[0] + half * width
    if low + width - 1 > 65535:
        raise ConfigError(f"netns: no fresh port range for half {half + 1}")
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(f"{low} {low + width - 1}")


def settings_here() -> dict[str, str]:
    """The study's kernel settings as this namespace has them (shown beside the table)."""
    out = {}
    for key in (*SETTINGS, "net.ipv4.tcp_fin_timeout"):
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path) as f:
                out[key] = " ".join(f.read().split())
        except OSError:
            out[key] = "?"
    return out
