"""Socket evidence from ``ss``: TIME_WAIT on each side and the ephemeral ports in use.

``poolsvc churn`` samples this each second of each half. ``ss -Htan`` prints one
line per TCP socket of this network namespace (``STATE RECV-Q SEND-Q LOCAL
PEER``); :func:`parse` reads it, :func:`count` sorts it toward a target:

- ``time_wait_ours``: TIME_WAIT sockets whose peer is the target: we closed first,
  and each holds one of our local ports for 60 s;
- ``time_wait_theirs``: TIME_WAIT sockets whose local end is the target (a local
  target closed first: they hold its memory, not our ports);
- ``ports_in_use``: our local ports in the ephemeral range bound toward the target,
  in any state: what ``connect()`` has left to choose from is the range minus these.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass(frozen=True, slots=True)
class Sock:
    state: str
    local: tuple[str, int]
    peer: tuple[str, int]


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host.startswith("::ffff:"):
        host = host[7:]
    return host, int(port) if port.isdigit() else 0


def parse(text: str) -> list[Sock]:
    """``ss -Htan`` output as sockets (lines it cannot read are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[1].isdigit():
            continue
        out.append(Sock(parts[0], _endpoint(parts[3]), _endpoint(parts[4])))
    return out


def port_range() -> tuple[int, int]:
    """This namespace's ephemeral port range."""
    low, high = RANGE_FILE.read_text().split()
    return int(low), int(high)


def count(socks: list[Sock], target: tuple[str, int], ports: tuple[int, int]) -> dict[str, int]:
    ours = [s for s in socks if s.peer == target]
    return {
        "time_wait_ours": sum(s.state == "TIME-WAIT" for s in ours),
        "time_wait_theirs": sum(s.state == "TIME-WAIT" and s.local == target for s in socks),
        "ports_in_use": len({s.local[1] for s in ours if ports[0] <= s.local[1] <= ports[1]}),
    }


def sample(target: tuple[str, int]) -> dict[str, int] | None:
    """One sample now (None without ``ss``)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    proc = subprocess.run([ss, "-Htan"], capture_output=True, text=True, timeout=10)
    return count(parse(proc.stdout), target, port_range())
