"""A worker's window on the shared region: breaker admission and per-target outcomes.

The worker only *reads* breaker rows (the supervisor writes them) and only
*writes* its own slot.  Admission in CLOSED is one word read and a bit test; the
rest of this module runs only while a breaker is OPEN or HALF_OPEN.

HALF_OPEN admission without a lock: the supervisor grants this worker ``n``
trial permits tagged with the breaker generation; the worker counts the permits
it used in its own slot under the same tag.  A permit is used at most once, no
two workers can take the same one, and a worker that dies holding one simply
never reports -- the supervisor re-issues it when the lease expires.
"""

from __future__ import annotations

from typing import Final

from workers.shared import injection, shm
from workers.shared import slotstats as stats
from workers.shared.injection import Fault
from workers.shared.shm import Layout, tag, tagged_count

REFUSE: Final = 0  # admit() result; a positive result is a trial generation, -1 = admit


class SharedView:
    """Worker ``worker``'s handles into a region's words."""

    __slots__ = ("brk", "layout", "slot", "targets", "wctrl", "words", "worker")

    def __init__(self, words: memoryview, layout: Layout, worker: int) -> None:
        self.words = words
        self.layout = layout
        self.worker = worker
        base = layout.slot(worker)
        self.slot = words[base : base + stats.SLOT_WORDS]
        self.brk = [layout.breaker(t) for t in range(layout.targets)]
        self.targets = [layout.target_block(base, t) for t in range(layout.targets)]
        at = layout.wctrl(worker)
        self.wctrl = words[at : at + shm.WCTRL_WORDS]  # what the supervisor wants us to run

    def seal_warmup(self) -> None:
        """The warm-up is over: its counts set apart (:func:`workers.shared.shm.seal_warmup`)."""
        shm.seal_warmup(self.words, self.layout, self.worker)

    def paused(self) -> bool:
        return bool(self.words[shm.H_PAUSED])

    def pool_bounds(self, target: int) -> tuple[int, int]:
        """Target ``target``'s pool bounds over all workers as the supervisor last set
        them (``poolctl pool``): (max, min); (0, 0) while the plan's stand."""
        at = self.brk[target]
        return int(self.words[at + shm.B_POOL_MAX]), int(self.words[at + shm.B_POOL_MIN])

    def fault_generation(self) -> int:
        return int(self.words[shm.H_INJECT_GEN])

    def read_faults(self) -> tuple[int, list[Fault]] | None:
        """(generation, faults) as the supervisor last wrote them, or None if it is
        writing right now (the caller tries again on its next tick)."""
        w = self.words
        before = w[shm.H_INJECT_GEN]
        if before & 1:
            return None
        base = self.layout.faults
        size = injection.FAULT_WORDS
        entries = [
            tuple(w[base + i * size : base + (i + 1) * size].tolist())
            for i in range(injection.MAX_FAULTS)
        ]
        if w[shm.H_INJECT_GEN] != before:
            return None
        faults = [f for e in entries if (f := Fault.decode(e)) is not None]
        return int(before), faults

    @classmethod
    def private(cls, targets: int) -> SharedView:
        """A view over private memory (one worker, breakers always CLOSED): in-process runs."""
        layout = Layout(workers=1, targets=targets)
        words = memoryview(bytearray(layout.total_words * 8)).cast("Q")
        return cls(words, layout, 0)

    def admit(self, target: int, state_word: int) -> int:
        """Called when the breaker word is not CLOSED: -1 admit, 0 refuse, g > 0 admit as
        a trial of generation g."""
        code = shm.breaker_code(state_word)
        if code == 0:
            return -1
        if code == 1:
            return REFUSE
        generation = shm.breaker_generation(state_word)
        w = self.words
        granted = tagged_count(w[self.brk[target] + shm.BRK_FIXED + self.worker], generation)
        used_at = self.targets[target] + shm.T_TRIAL_USED
        used = tagged_count(w[used_at], generation)
        if used >= granted:
            return REFUSE
        w[used_at] = tag(generation, used + 1)
        return generation

    def open_until_us(self, target: int) -> int:
        return int(self.words[self.brk[target] + shm.B_OPEN_UNTIL])

    def trial_result(self, target: int, generation: int, ok: bool) -> None:
        at = self.targets[target] + (shm.T_TRIAL_OK if ok else shm.T_TRIAL_FAIL)
        self.words[at] = tag(generation, tagged_count(self.words[at], generation) + 1)
