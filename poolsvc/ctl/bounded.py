"""Bounded peers: the core both of the supervisor's servers share (control socket, /metrics).

A :class:`Peers` owns a listening socket in the supervisor's selector loop and the peers
it accepted, and keeps the rules that make a server safe to run inside that loop:

- every socket is non-blocking; the accept queue is drained at most ``ACCEPTS_PER_TURN``
  per wakeup;
- **at most** ``max_clients`` peers; when one more arrives, the server's ``victim``
  policy names a peer to make room for it (and may say goodbye first, ``on_evict``);
  with none, the newcomer waits in the listen queue (``full="wait"``: the listener is
  paused until a slot frees) or is refused (``full="refuse"``: closed at once);
- ``admit`` may refuse a newcomer with a last line (the control socket's ``SO_PEERCRED``);
- what a peer is sent is queued in its ``outbuf`` and written as the socket takes it;
  a peer whose socket fails is dropped; the selector watches each peer for exactly what
  its server asks (:meth:`Peers.watch`).

What a request is, how a peer's input is bounded and when it is too slow are each
server's own (:mod:`poolsvc.ctl.ctlserver`, :mod:`poolsvc.ctl.httpmetrics`).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Callable, Iterator
from typing import Final, Generic, Protocol, TypeVar

ACCEPTS_PER_TURN: Final = 64


class Peer(Protocol):
    """What the core keeps of a peer: its socket, its buffers, what is watched."""

    sock: socket.socket
    inbuf: bytearray
    outbuf: bytearray
    events: int


P = TypeVar("P", bound=Peer)


class Peers(Generic[P]):
    """The peers of one listener (see the module docstring). ``ready(peer, mask)`` is the
    server's handler of a peer's events."""

    def __init__(
        self,
        listener: socket.socket,
        sel: selectors.BaseSelector,
        clock: Callable[[], float],
        make: Callable[[socket.socket, float], P],
        ready: Callable[[P, int], None],
        victim: Callable[[float], P | None],
        max_clients: int,
        full: str = "wait",
        admit: Callable[[socket.socket], bytes | None] | None = None,
        on_evict: Callable[[P], None] | None = None,
    ) -> None:
        if full not in ("wait", "refuse"):
            raise ValueError(f"full must be 'wait' or 'refuse', not {full!r}")
        listener.setblocking(False)
        self.listener, self.sel, self.clock = listener, sel, clock
        self.make, self.ready, self.victim = make, ready, victim
        self.max_clients, self.full = max_clients, full
        self.admit, self.on_evict = admit, on_evict
        self.by_fd: dict[int, P] = {}
        self.accepting = False
        self.accept_new(True)

    def __len__(self) -> int:
        return len(self.by_fd)

    def __iter__(self) -> Iterator[P]:
        return iter(list(self.by_fd.values()))

    def holds(self, peer: P) -> bool:
        """``peer`` is still one of ours (not dropped meanwhile)."""
        fd = peer.sock.fileno()
        return fd >= 0 and self.by_fd.get(fd) is peer

    # Admission ----------------------------------------------------------------------
    def accept_new(self, on: bool) -> None:
        """Watch the listener, or leave newcomers waiting in its queue."""
        if on and not self.accepting:
            self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        elif not on and self.accepting:
            self.sel.unregister(self.listener)
        self.accepting = on

    def _accept(self, mask: int) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            waiting = len(self.by_fd) >= self.max_clients and not self._make_room()
            if waiting and self.full == "wait":
                self.accept_new(False)  # the rest wait in the queue until a slot frees
                return
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            if waiting:  # full="refuse": every slot holds a request in progress
                sock.close()
                continue
            self._admit(sock)

    def _make_room(self) -> bool:
        victim = self.victim(self.clock())
        if victim is None:
            return False
        if self.on_evict is not None:
            self.on_evict(victim)
        self.drop(victim)
        return True

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        refusal = self.admit(sock) if self.admit is not None else None
        if refusal is not None:
            self.say(sock, refusal)
            sock.close()
            return
        peer = self.make(sock, self.clock())
        self.by_fd[sock.fileno()] = peer
        self.watch(peer, selectors.EVENT_READ)

    # A peer -------------------------------------------------------------------------
    def watch(self, peer: P, events: int) -> None:
        """The selector watches ``peer`` for exactly ``events`` (0: nothing)."""
        if events == peer.events:
            return
        if not events:
            self.sel.unregister(peer.sock)
        elif not peer.events:
            self.sel.register(peer.sock, events, lambda m, p=peer: self.ready(p, m))
        else:
            self.sel.modify(peer.sock, events, lambda m, p=peer: self.ready(p, m))
        peer.events = events

    def send(self, peer: P) -> int:
        """Write what the socket takes of ``peer.outbuf``; -1: it failed, the peer is dropped."""
        if not peer.outbuf:
            return 0
        try:
            n = peer.sock.send(peer.outbuf)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.drop(peer)
            return -1
        del peer.outbuf[:n]
        return n

    @staticmethod
    def say(sock: socket.socket, line: bytes) -> None:
        """A last line, if the socket takes it now (never waited for)."""
        with contextlib.suppress(OSError):
            sock.send(line)

    def drop(self, peer: P) -> None:
        """Forget and close ``peer`` (idempotent); a freed slot lets newcomers in."""
        if not self.holds(peer):
            return
        del self.by_fd[peer.sock.fileno()]
        if peer.events:
            self.sel.unregister(peer.sock)
            peer.events = 0
        peer.sock.close()
        self.accept_new(True)

    def close(self) -> None:
        for peer in self:
            self.drop(peer)
        self.accept_new(False)
        self.listener.close()

    def __repr__(self) -> str:
        return f"<Peers {len(self.by_fd)}/{self.max_clients} accepting={self.accepting}>"
