"""A precise wakeup for the epoll loop: a Linux timerfd armed at an absolute time.

``epoll_wait`` takes its timeout in whole milliseconds (CPython rounds up), so an
open-loop request due at t would be sent up to 1 ms late. That lag lands in the
corrected latency: a measurement artifact blamed on the target. A timerfd set to
the intended time (CLOCK_MONOTONIC, absolute, nanoseconds) and registered in the
same epoll wakes the loop at that moment.

Python 3.11 has no ``os.timerfd_*``, so the three calls go through ctypes, looked
up in the symbols already loaded into the process (``CDLL(None)``: libc is there).
Not ``ctypes.util.find_library``: it starts a subprocess, and a worker must not
(its SIGCHLD, and anything it inherits, is not the worker's business). Where the
calls are unavailable, :func:`make_waker` returns None and the loop falls back to
millisecond timeouts.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Final

CLOCK_MONOTONIC: Final = time.CLOCK_MONOTONIC
TFD_NONBLOCK: Final = os.O_NONBLOCK
TFD_CLOEXEC: Final = os.O_CLOEXEC
TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Waker:
    """One timerfd; ``fd`` goes into the epoll set (EPOLLIN)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._settime = libc.timerfd_settime
        self.fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.armed = 0.0  # the absolute time it is set for (0 = disarmed)
        self._spec = _Itimerspec()

    def arm(self, when: float) -> None:
        """Fire once at monotonic time ``when`` (re-arming with the same time is free)."""
        if when == self.armed:
            return
        when = max(when, 1e-9)  # 0 would disarm
        self._spec.it_value.tv_sec = int(when)
        self._spec.it_value.tv_nsec = int((when - int(when)) * 1e9)
        if self._settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) == 0:
            self.armed = when

    def fired(self) -> None:
        """Acknowledge an expiry (reading resets the descriptor's readiness)."""
        self.armed = 0.0
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def make_waker() -> Waker | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc among them
        return Waker(libc)
    except (OSError, AttributeError):
        return None
