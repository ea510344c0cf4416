"""Where the connect_fail fault sends a connect: loopback addresses where it really fails.

``refusing``: a port that is bound but not listening, so connects get RST
(ECONNREFUSED) and no other process can take it over.  ``silent``: a listener
with a backlog of 0 whose queue one connection already fills; further SYNs are
dropped and the connect times out.  The failure the worker sees is the kernel's,
by the same path as a real one.
"""

from __future__ import annotations

import socket
from typing import Any


class DeadEnds:
    """The dead-end sockets of one worker: created on first use, one set per address
    family and mode, owned (and closed) by the worker; the FD audit counts them."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._addrs: dict[tuple[int, str], tuple[Any, ...]] = {}

    def address(self, family: int, mode: str) -> tuple[Any, ...]:
        """The address to connect to instead of the target (``mode``: refusing, silent)."""
        key = (family, mode)
        if key not in self._addrs:
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            first = socket.socket(family, socket.SOCK_STREAM)
            first.bind((host, 0))
            self.sockets.append(first)
            if mode == "silent":
                first.listen(0)
                filler = socket.create_connection(first.getsockname()[:2])
                self.sockets.append(filler)
            self._addrs[key] = first.getsockname()
        return self._addrs[key]

    def fds(self) -> set[int]:
        return {s.fileno() for s in self.sockets}

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()
        self._addrs.clear()

    def __repr__(self) -> str:
        return f"<DeadEnds {sorted(self._addrs)} sockets={len(self.sockets)}>"
