"""Worker slots: the supervisor's record of each worker, its lifecycle table, its decisions.

A slot is one place in the shared region (its stats slot, its control row) and the
worker processes that have run in it, one incarnation after another. Every state
is named and every legal move is a cell of :data:`TRANSITIONS` (a test walks every
cell; docs/architecture.md shows the table, checked by a test):

    STARTING    made, its first worker not forked yet
    RUNNING     a worker runs its shard
    RESTARTING  its worker crashed; a replacement is forked after a backoff
    RETIRING    scaled down: its worker drains and exits, and is not replaced
    REVIVING    scaled down, then up again before its worker exited: replaced on exit
    RETIRED     scaled down and exited; its counts stay (and it may be revived)
    DONE        finished: its shard is done, the run stopped, or it kept failing at boot

What the supervisor does is decided here without I/O, from plain facts and times
the caller reads from its (injected) clock: :func:`after_exit` (a worker exited:
done, restart after a backoff, or give up) and :func:`scale_moves` (which slots
to retire, revive, update or add for a new worker count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from poolsvc.config.plan import Shard
from workers.shared import slotstats as stats
from workers.shared import statetable as table

STARTING: Final = "STARTING"
RUNNING: Final = "RUNNING"
RESTARTING: Final = "RESTARTING"
RETIRING: Final = "RETIRING"
REVIVING: Final = "REVIVING"
RETIRED: Final = "RETIRED"
DONE: Final = "DONE"
STATES: Final = (STARTING, RUNNING, RESTARTING, RETIRING, REVIVING, RETIRED, DONE)
WAITING_TO_FORK: Final = frozenset({STARTING, RESTARTING})
HAS_PROCESS: Final = frozenset({RUNNING, RETIRING, REVIVING})

# fmt: off
TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    STARTING:   {"spawn": RUNNING, "stop": DONE, "retire": RETIRED},
    RESTARTING: {"spawn": RUNNING, "stop": DONE, "retire": RETIRED},
    RUNNING:    {"exit": DONE, "crash": RESTARTING, "give_up": DONE, "retire": RETIRING},
    RETIRING:   {"exit": RETIRED, "revive": REVIVING},
    REVIVING:   {"exit": RESTARTING, "retire": RETIRING, "stop": RETIRING},
    RETIRED:    {"revive": RESTARTING},
    DONE:       {},
}
# fmt: on

BOOT_WINDOW: Final = 1.0  # a worker that dies this soon, before its load began, failed at boot
MAX_BOOT_FAILURES: Final = 5  # in a row: the service stops (exit 3)
RESTART_BASE: Final = 0.1  # seconds before a replacement; doubles per boot failure in a row
RESTART_CAP: Final = 5.0


@dataclass
class Slot:
    """One worker slot across its incarnations (see the module docstring)."""

    shard: Shard
    proc: Any = None  # the multiprocess Process of the current incarnation
    state: str = STARTING
    started: float = 0.0  # when the current incarnation was forked (supervisor clock)
    respawn_at: float = 0.0
    boot_failures: int = 0  # in a row
    completed: int = 0  # requests of earlier incarnations that have an outcome
    sent_before: int = 0  # requests sent by earlier incarnations
    end_at: float = 0.0  # the run's end, learned from the first incarnation
    pids: list[int] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # crash exit codes (negative: signal)
    retired: list[stats.Snapshot] = field(default_factory=list)
    rps: float = 0.0  # requests per second over the last second

    @property
    def index(self) -> int:
        return self.shard.index

    def fire(self, event: str) -> str:
        """Apply ``event`` to the table; returns the new state."""
        self.state = new = table.fire(TRANSITIONS, self.state, event, self)
        return new

    def can(self, event: str) -> bool:
        """Whether the table has a move on ``event`` from the current state."""
        return event in TRANSITIONS[self.state]

    def __repr__(self) -> str:
        pid = self.pids[-1] if self.pids else None
        return f"<Slot {self.index} {self.state} pid={pid} restarts={len(self.exits)}>"


# After an exit -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exited:
    """The worker is gone and not replaced now (the table says where the slot goes:
    DONE, RETIRED, or RESTARTING for a slot revived meanwhile)."""


@dataclass(frozen=True, slots=True)
class Restart:
    """A crash: fork a replacement ``after`` seconds from now."""

    after: float
    boot_failures: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A crash, and no replacement: the shard is done (``boot``: False), or its workers
    kept dying at boot (``boot``: True; the service stops, exit 3)."""

    boot: bool
    boot_failures: int


def restart_delay(boot_failures: int) -> float:
    """The backoff before a replacement: 0.1 s, doubling per boot failure in a row, 5 s at most."""
    return min(RESTART_CAP, RESTART_BASE * 2.0**boot_failures)


def after_exit(
    *,
    code: int,
    state: str,
    stopping: bool,
    ready: bool,
    ran_for: float,
    boot_failures: int,
    shard_done: bool,
) -> Exited | Restart | GiveUp:
    """A worker exited with ``code`` (negative: a signal) from a slot in ``state``.

    ``stopping``: the service is stopping; ``ready``: the worker had started its load;
    ``ran_for``: seconds since it was forked; ``boot_failures``: in a row before this
    one; ``shard_done``: its request bound or its end time has been reached. A boot
    failure is a worker that died before its load began, within BOOT_WINDOW; one that
    died after that ran, and resets the streak."""
    if state != RUNNING or code == 0 or stopping:
        return Exited()
    booting = not ready and ran_for < BOOT_WINDOW
    failures = boot_failures + 1 if booting else 0
    if failures >= MAX_BOOT_FAILURES:
        return GiveUp(boot=True, boot_failures=failures)
    if shard_done:
        return GiveUp(boot=False, boot_failures=failures)
    return Restart(after=restart_delay(failures), boot_failures=failures)


# Scaling -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retire:
    index: int


@dataclass(frozen=True, slots=True)
class Revive:
    index: int


@dataclass(frozen=True, slots=True)
class Update:
    """A running worker takes its new share (written into its control row)."""

    index: int


@dataclass(frozen=True, slots=True)
class Add:
    """A new slot, forked on the next step."""

    index: int


ScaleMove = Retire | Revive | Update | Add


def scale_moves(states: list[str], n: int) -> list[ScaleMove]:
    """What to do with slots in ``states`` (by index) to run ``n`` workers."""
    moves: list[ScaleMove] = []
    for i, state in enumerate(states):
        if i >= n:
            if "retire" in TRANSITIONS[state]:
                moves.append(Retire(i))
        elif "revive" in TRANSITIONS[state]:
            moves.append(Revive(i))
        elif state == RUNNING:
            moves.append(Update(i))
        # STARTING, RESTARTING, REVIVING: forked with the new share; DONE: finished
    moves += [Add(i) for i in range(len(states), n)]
    return moves
