"""The supervisor's signals: the handlers only record, the loop acts.

SIGINT, SIGTERM and SIGCHLD are recorded in a list by the handler, and CPython
writes each one's number into a socket pair (``signal.set_wakeup_fd``) whose
read end is in the supervisor's selector, so a signal wakes the loop at once.
The loop then takes what was recorded (:meth:`SignalBox.take`) and acts.
"""

from __future__ import annotations

import selectors
import signal
import socket
from typing import Any, Final

RECORDED: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


class SignalBox:
    """Records the supervisor's signals while installed (see the module docstring)."""

    def __init__(self) -> None:
        self.wake_r, self.wake_w = socket.socketpair()
        self.recorded: list[int] = []
        self._old: dict[int, Any] = {}

    def install(self, sel: selectors.BaseSelector) -> None:
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        sel.register(self.wake_r, selectors.EVENT_READ, self._drain_wakeup)
        for signum in RECORDED:
            self._old[signum] = signal.signal(signum, self._record)
        self._old[-1] = signal.set_wakeup_fd(self.wake_w.fileno())

    def _record(self, signum: int, frame: Any) -> None:
        self.recorded.append(signum)  # only record: the loop acts (the wakeup fd wakes it)

    def _drain_wakeup(self, mask: int) -> None:
        try:
            self.wake_r.recv(512)
        except BlockingIOError:
            pass

    def take(self) -> list[int]:
        """The signals recorded since the last call, oldest first."""
        taken = []
        while self.recorded:
            taken.append(self.recorded.pop(0))
        return taken

    def restore(self) -> None:
        """Put back the handlers and the wakeup fd that were there before; close."""
        if -1 in self._old:
            signal.set_wakeup_fd(self._old.pop(-1))
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        self._old.clear()
        self.wake_r.close()
        self.wake_w.close()

    def __repr__(self) -> str:
        return f"<SignalBox recorded={self.recorded}>"
