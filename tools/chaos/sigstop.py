"""nginx in a namespace SIGSTOPped for 2 s: the kernel still accepts and buffers, nothing
answers.

Checks (:func:`tools.chaos.netns.path_fault`): the pool feels the fault (errors), the rate
recovers to 80 % of the baseline once nginx is continued, and every request is accounted
for (the target may count fewer, but only by requests that failed). Skipped where network
namespaces cannot be created.
"""

from __future__ import annotations

import os
import signal

import psutil

from tools.chaos.harness import Result
from tools.chaos.netns import path_fault
from tools.nginx import Nginx


def sigstop() -> Result:
    """The target SIGSTOPped: the kernel still accepts and buffers, nothing answers."""

    def pids(ng: Nginx) -> list[int]:
        assert ng.proc is not None
        return [ng.proc.pid, *(c.pid for c in psutil.Process(ng.proc.pid).children(recursive=True))]

    def start(ns: str, ng: Nginx) -> str:
        for pid in pids(ng):
            os.kill(pid, signal.SIGSTOP)
        return ""

    def stop(ns: str, ng: Nginx) -> None:
        for pid in pids(ng):
            os.kill(pid, signal.SIGCONT)

    return path_fault("target SIGSTOP 2s", start, stop)
