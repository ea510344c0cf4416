"""Deadlines kept in a heap, re-armed lazily.

Theory of operation: each timed object (a connection, a waiting client) carries
its current ``deadline`` (0.0 = none) and ``heap_when``, the time of the one heap
entry it may have (0.0 = none).  Arming a later deadline only updates the
attribute; the existing entry fires early, sees the later deadline and pushes
itself again.  A request on a keep-alive connection therefore costs an attribute
write, not a heap push, and a fired entry costs O(log n).  Arming an *earlier*
deadline pushes a new entry; the superseded one is ignored when it pops because
its time no longer matches ``heap_when``.
"""

from __future__ import annotations

import heapq
from typing import Protocol


class Timed(Protocol):
    deadline: float
    heap_when: float


class Deadlines:
    """A min-heap of (when, seq, obj) with lazy cancellation and re-arming."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, obj: Timed, when: float) -> None:
        """Make ``obj`` expire at ``when`` (replacing any deadline it had)."""
        obj.deadline = when
        if obj.heap_when == 0.0 or when < obj.heap_when:
            obj.heap_when = when
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, obj))

    @staticmethod
    def disarm(obj: Timed) -> None:
        """Cancel ``obj``'s deadline; its heap entry is dropped when it pops."""
        obj.deadline = 0.0

    def next_when(self) -> float:
        """Time of the earliest heap entry, or 0.0 when empty (may be a stale entry)."""
        return self._heap[0][0] if self._heap else 0.0

    def pop_expired(self, now: float) -> list[Timed]:
        """Remove and return the objects whose deadline is ``<= now``; disarm them."""
        heap = self._heap
        fired: list[Timed] = []
        while heap and heap[0][0] <= now:
            when, _, obj = heapq.heappop(heap)
            if when != obj.heap_when:
                continue  # superseded by an earlier entry for the same object
            obj.heap_when = 0.0
            deadline = obj.deadline
            if deadline == 0.0:
                continue
            if deadline <= now:
                obj.deadline = 0.0
                fired.append(obj)
            else:
                self.arm(obj, deadline)  # re-armed later since this entry was pushed
        return fired
