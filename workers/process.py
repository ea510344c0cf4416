"""The worker process: what runs in a child right after the supervisor forks it.

First, signals. A forked child inherits the supervisor's Python signal handlers
and, worse, its ``signal.set_wakeup_fd``: CPython writes the number of every
signal it catches into that descriptor number, which in the child soon belongs
to a pooled socket, so a SIGTERM would put a byte ``0x0f`` on a target's wire.
The child drops the wakeup fd and every inherited handler before anything else.

Then, hygiene.  The child closes every descriptor it inherited except stdin,
stdout and stderr.  That covers the supervisor's selector, its signal wakeup
pipe, the control socket, the embedded target's pipes and the sentinels of
sibling workers.  None of them belong to a worker, and the FD audit counts from
this clean baseline.  The parent's Python objects that wrapped those descriptors
are never touched again and never finalized: the child leaves through
``os._exit``.

Signals only record:
- SIGTERM asks for a drain.
- SIGINT is ignored, because a Ctrl-C reaches the whole process group and the
  supervisor decides what it means.

A watchdog runs every loop tick. It exits at once if the supervisor has died,
because the parent pid has changed and an orphan worker must not go on loading
a target. Otherwise it follows the supervisor's command word (drain or stop).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.loop.workerspec import WorkerSpec
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.shared.admission import SharedView
from workers.worker import build_worker

EXIT_ORPHANED = 70  # the supervisor died; nothing is left to report to


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Everything a worker process needs, inherited through fork (never pickled)."""

    spec: WorkerSpec  # what to run, resolved by the control plane
    layout: shm.Layout
    supervisor_pid: int
    end_at: float = 0.0  # for a replacement: when the run ends (monotonic), else 0
    report: Callable[[str, dict[str, Any]], None] | None = None  # where audit reports go


def close_inherited_fds(keep: tuple[int, ...] = (0, 1, 2)) -> None:
    """Close every open descriptor not in ``keep``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own directory descriptor, already closed


def reset_signals(keep: tuple[int, ...]) -> None:
    """Forget what the supervisor installed: no wakeup fd, no Python-level handler
    but those of ``keep`` (the worker's own, already installed), nothing blocked.
    SIG_IGN dispositions, such as Python's SIGPIPE, stay."""
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            if signum not in keep and callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP and the like
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def worker_main(plan: WorkerPlan, words: memoryview) -> None:
    """Entry point in the child (``words``: the shared region's word view)."""
    stop = [False]  # a SIGTERM before the worker exists is kept here

    def on_term(signum: int, frame: Any) -> None:
        stop[0] = True

    # Our own handlers first, so that a SIGTERM (a drain, a scale-down) at any moment
    # after the fork is recorded, never fatal; until set_wakeup_fd(-1) below, a signal
    # still writes its number into the supervisor's wakeup socket, which is not ours
    # to use but is still open here, and harmless.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reset_signals(keep=(signal.SIGTERM,))  # before a socket of ours can get that fd number
    close_inherited_fds()
    shared = SharedView(words, plan.layout, plan.spec.index)
    stats.init_slot(shared.slot, os.getpid())
    worker = build_worker(
        plan.spec,
        shared,
        watchdog=_watchdog(plan, words, stop),
        end_at=plan.end_at,
        report=plan.report,
    )
    worker.run()


def _watchdog(plan: WorkerPlan, words: memoryview, stop: list[bool]) -> Callable[[], bool]:
    """Asked every tick: True when the worker must stop (a command, a SIGTERM)."""

    def check() -> bool:
        if os.getppid() != plan.supervisor_pid:
            os._exit(EXIT_ORPHANED)  # the kernel closes our sockets
        return shm.command_code(words[shm.H_COMMAND]) != shm.CMD_RUN or stop[0]

    return check
