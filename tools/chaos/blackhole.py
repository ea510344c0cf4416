"""A blackhole route to nginx in a namespace for 2 s: packets to the target vanish, no FIN,
no RST (a real half-open).

Checks (:func:`tools.chaos.netns.path_fault`): the pool feels the fault (errors), the rate
recovers to 80 % of the baseline once the route is gone, and every request is accounted for
(the target may count fewer, but only by requests that failed). Skipped where network
namespaces cannot be created.
"""

from __future__ import annotations

from tools.chaos.harness import Result
from tools.chaos.netns import NS_PEER, path_fault, sh
from tools.nginx import Nginx


def blackhole() -> Result:
    """A blackhole route: packets to the target vanish, no FIN, no RST (a real half-open)."""

    def start(ns: str, ng: Nginx) -> str:
        done = sh("ip", "route", "add", "blackhole", f"{NS_PEER}/32")
        return "" if done.returncode == 0 else done.stderr.strip()

    def stop(ns: str, ng: Nginx) -> None:
        sh("ip", "route", "del", "blackhole", f"{NS_PEER}/32")

    return path_fault("blackhole route 2s", start, stop)
