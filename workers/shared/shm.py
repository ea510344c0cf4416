"""The shared-memory region: one anonymous mapping, one byte layout, one writer per word.

The supervisor creates the region with ``mmap(-1, size, MAP_SHARED)`` *before*
forking, so every worker inherits the same pages.  It has no name and no file, so
no exit path, SIGKILL included, can leave a segment behind.  All fields are
unsigned 64-bit words in native byte order, 8-byte aligned; an aligned word store
is one instruction, so a reader never sees a torn word.

Layout (offsets in words; ``W`` = max_workers, ``T`` = targets)::

    HEADER    16 words, supervisor writes
        0  MAGIC "poolsvc2"     1  layout version   2  W   3  T
        4  supervisor pid       5  command: seq << 8 | cmd (0 run, 1 drain, 2 stop)
        6  fault generation: odd while the supervisor rewrites FAULTS (a seqlock)
        7  paused (1: workers issue no new requests)
    BREAKERS  T rows of BRK_WORDS = 8 + W words, supervisor writes
        0  state: generation << 8 | code (0 CLOSED, 1 OPEN, 2 HALF_OPEN)
        1  open_until_us (monotonic)    2  trips (total)    3  changed_at_us
        8+w  trial permits of worker w: generation << 32 | count
    WCTRL     W rows of WCTRL_WORDS words, supervisor writes: what worker w should run
        0  concurrency   1  number of workers (pool shares follow from it)   (0 = as started)
        3  audit request: a sequence number; the worker audits when it changes
        4  open loop: requests per second x 1000 (0 = as started)
    FAULTS    MAX_FAULTS entries of FAULT_WORDS words, supervisor writes: the injected
              faults in force (encoding: workers.shared.injection)
    SLOTS     W slots of slot_words(T) words, worker w alone writes slot w
        the stats slot (workers.shared.slotstats: header, counters, gauges, histogram), then
        T target blocks of tgt_words words:
        0 ok  1 failed (the target's fault: counts toward the breaker)
        2 refused (breaker_open)  3 local failures (not the target's fault)
        4 consecutive failures now (gauge)
        5 trials used   6 trials ok   7 trials failed   (each: generation << 32 | count)
        8 active  9 idle  10 connecting  11 waiting   (this target's pool, gauges)
        12 requests ok  13 requests failed  14 requests unsent   (its own outcomes)
        16.. several targets only: failures by name (ERROR_NAMES order), then
             the latency histogram (workers.shared.histogram.BUCKETS words)
    RETIRED   one slot-shaped block, supervisor writes: the monotonic counters
              of workers that exited, folded in so totals never go backwards
    WARMUP    W slot-shaped blocks, worker w alone writes block w: its slot as it
              stood when its warm-up ended (``--warmup``; all zero without one)
    WARMUP_RETIRED  one slot-shaped block, supervisor writes: the warm-up counts of
              workers that exited

A slot's counts are the warm-up's while its worker warms up (``time.warmup_us``
set, ``time.started_us`` not yet); from then on the measured period's are the
slot's minus its WARMUP block (:meth:`Region.measured`), so counters never go
back and the worker pays nothing per request for the split.  The worker zeroes
its slot's maxima when it seals the warm-up (a maximum cannot be subtracted).

Each slot is padded to a 4 KiB boundary so two workers never write the same
cache line.  Readers take no lock: they copy and sum.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from workers.shared import histogram, injection
from workers.shared import slotstats as stats
from workers.shared.errors import ERROR_NAMES

MAGIC: Final = 0x706F6F6C73766332
VERSION: Final = 1
HEADER_WORDS: Final = 16
H_MAGIC, H_VERSION, H_WORKERS, H_TARGETS, H_PID = 0, 1, 2, 3, 4
H_COMMAND: Final = 5
H_INJECT_GEN: Final = 6
H_PAUSED: Final = 7
CMD_RUN, CMD_DRAIN, CMD_STOP = 0, 1, 2

BRK_FIXED: Final = 8
B_STATE, B_OPEN_UNTIL, B_TRIPS, B_CHANGED = 0, 1, 2, 3
B_POOL_MAX, B_POOL_MIN = 4, 5  # the target's pool bounds in total (poolctl pool; 0: as planned)

WCTRL_WORDS: Final = 8
C_CONCURRENCY, C_WORKERS, C_AUDIT, C_RATE = 0, 1, 3, 4

TGT_FIXED: Final = 16
T_OK, T_FAILED, T_REFUSED, T_LOCAL, T_CONSEC, T_TRIAL_USED, T_TRIAL_OK, T_TRIAL_FAIL = range(8)
T_POOL: Final = 8  # four gauges from here: active, idle, connecting, waiting
T_RESP_OK, T_RESP_FAILED, T_UNSENT = 12, 13, 14  # the target's own request outcomes
T_POOL_LIMIT: Final = 15  # the pool's maximum now (adaptive: what the sizing rule set)
T_ERRORS: Final = TGT_FIXED  # several targets only: failures by name (ERROR_NAMES order) ...
T_HIST: Final = T_ERRORS + len(ERROR_NAMES)  # ... and the latency histogram
T_MONOTONIC: Final = (T_OK, T_FAILED, T_REFUSED, T_LOCAL, T_RESP_OK, T_RESP_FAILED, T_UNSENT)

_PAGE_WORDS: Final = 4096 // 8


# The encodings of the words, here alone: everything else reads them through these.
CODE_MASK: Final = 0xFF  # the low byte of a command or breaker state word (hot path: inline)


def command_word(seq: int, cmd: int) -> int:
    return (seq << 8) | cmd


def command_code(word: int) -> int:
    """CMD_RUN, CMD_DRAIN or CMD_STOP."""
    return word & CODE_MASK


def command_seq(word: int) -> int:
    return word >> 8


def breaker_word(generation: int, code: int) -> int:
    """A breaker's state word: its generation and its state code (0 CLOSED, 1 OPEN, 2
    HALF_OPEN); a worker that sees any non-zero code takes the slow path."""
    return (generation << 8) | code


def breaker_code(word: int) -> int:
    return word & CODE_MASK


def breaker_generation(word: int) -> int:
    return word >> 8


def tag(generation: int, count: int) -> int:
    """A generation-tagged count in one word (so it is read or written atomically)."""
    return (generation << 32) | count


def tagged_count(word: int, generation: int) -> int:
    """The count of ``word`` if it belongs to ``generation``, else 0."""
    return word & 0xFFFFFFFF if word >> 32 == generation else 0


@dataclass(frozen=True, slots=True)
class Layout:
    """Offsets of every region for ``workers`` slots and ``targets`` targets."""

    workers: int
    targets: int

    @property
    def brk_words(self) -> int:
        return BRK_FIXED + self.workers

    @property
    def tgt_words(self) -> int:
        """A target block: the fixed words, plus (several targets) errors and histogram."""
        own = len(ERROR_NAMES) + histogram.BUCKETS if self.targets > 1 else 0
        return TGT_FIXED + own

    @property
    def slot_words(self) -> int:
        raw = stats.SLOT_WORDS + self.targets * self.tgt_words
        return -(-raw // _PAGE_WORDS) * _PAGE_WORDS

    def breaker(self, target: int) -> int:
        return HEADER_WORDS + target * self.brk_words

    def wctrl(self, worker: int) -> int:
        return HEADER_WORDS + self.targets * self.brk_words + worker * WCTRL_WORDS

    @property
    def faults(self) -> int:
        return self.wctrl(self.workers)

    def slot(self, worker: int) -> int:
        end = self.faults + injection.MAX_FAULTS * injection.FAULT_WORDS
        first = -(-end // _PAGE_WORDS) * _PAGE_WORDS
        return first + worker * self.slot_words

    @property
    def retired(self) -> int:
        return self.slot(self.workers)

    def warmup(self, worker: int) -> int:
        """Worker ``worker``'s WARMUP block (``worker`` = W: WARMUP_RETIRED)."""
        return self.retired + (1 + worker) * self.slot_words

    @property
    def total_words(self) -> int:
        return self.warmup(self.workers) + self.slot_words

    @property
    def counts(self) -> tuple[int, ...]:
        """The words of a slot that count (offsets within it): they only grow, so they
        are summed across slots, folded, and split at the warm-up by subtraction.
        The maxima among them (``stats.MAXED``) merge with ``max`` instead."""
        return (
            *range(stats.HEADER, stats.GAUGE_BASE),
            *range(stats.HIST_BASE, stats.SLOT_WORDS),
            *(self.target_block(0, t) + i for t in range(self.targets) for i in self.tgt_counts),
        )

    @property
    def tgt_counts(self) -> tuple[int, ...]:
        """The words of a target block that count (offsets within it)."""
        return (*T_MONOTONIC, *range(TGT_FIXED, self.tgt_words))

    def target_block(self, slot_base: int, target: int) -> int:
        return slot_base + stats.SLOT_WORDS + target * self.tgt_words


def seal_warmup(words: memoryview, layout: Layout, worker: int) -> None:
    """Worker ``worker``'s warm-up is over, nothing of it in flight: copy its slot
    into its WARMUP block and zero the slot's maxima, before it publishes
    ``time.started_us`` (the word that tells readers the block is complete).
    Only that worker calls this: it is the single writer of both."""
    base, block, n = layout.slot(worker), layout.warmup(worker), layout.slot_words
    words[block : block + n] = words[base : base + n]
    for i in stats.MAXED:
        words[base + i] = 0


_STARTED, _WARMUP = stats.GAUGE_INDEX["time.started_us"], stats.GAUGE_INDEX["time.warmup_us"]


def split(layout: Layout, slot: list[int], block: list[int]) -> tuple[list[int], list[int]]:
    """Copies of a whole slot and of its WARMUP block, as (measured, warm-up) figures.

    While the worker warms up (``time.warmup_us`` set, ``time.started_us`` not yet)
    every count is the warm-up's. Once it has sealed (:func:`seal_warmup`), the
    measured counts are the slot's minus the block's and the warm-up's are the
    block's. Without a warm-up the block is zero and the slot is all measured.
    The measured figures keep the slot's gauges."""
    if slot[_WARMUP] and not slot[_STARTED]:
        measured = slot[:]
        for i in layout.counts:
            measured[i] = 0
        warm = slot[:]
        for i in stats.MAXED:  # sealed, not yet started: the seal zeroed the slot's maxima
            warm[i] = max(slot[i], block[i])
        return measured, warm
    if any(block[i] for i in layout.counts):
        measured = slot[:]
        for i in layout.counts:
            if i not in stats.MAXED:
                measured[i] -= block[i]
        return measured, block
    return slot, block


def write_faults(words: memoryview, layout: Layout, faults: list[injection.Fault]) -> None:
    """Replace the fault table (seqlock: readers retry while the generation is odd).

    Only the supervisor calls this on a shared region (tests call it on a private one).
    """
    if len(faults) > injection.MAX_FAULTS:
        raise ValueError(f"at most {injection.MAX_FAULTS} faults at once")
    words[H_INJECT_GEN] += 1  # odd: being written
    base = layout.faults
    for i in range(injection.MAX_FAULTS):
        at = base + i * injection.FAULT_WORDS
        entry = faults[i].encode() if i < len(faults) else (0,) * injection.FAULT_WORDS
        for j, value in enumerate(entry):
            words[at + j] = value
    words[H_INJECT_GEN] += 1  # even: consistent


class Region:
    """The mapping and its word view.  Create before fork; children inherit it."""

    def __init__(self, layout: Layout, pid: int) -> None:
        self.layout = layout
        self._map = mmap.mmap(-1, layout.total_words * 8, flags=mmap.MAP_SHARED)
        self.words = memoryview(self._map).cast("Q")
        w = self.words
        w[H_MAGIC], w[H_VERSION], w[H_PID] = MAGIC, VERSION, pid
        w[H_WORKERS], w[H_TARGETS] = layout.workers, layout.targets

    def slot(self, worker: int) -> memoryview:
        """Worker ``worker``'s stats slot (the first stats.SLOT_WORDS words of its slot)."""
        base = self.layout.slot(worker)
        return self.words[base : base + stats.SLOT_WORDS]

    def retired_slot(self) -> memoryview:
        base = self.layout.retired
        return self.words[base : base + stats.SLOT_WORDS]

    def target_words(self, worker: int, target: int) -> memoryview:
        base = self.layout.target_block(self.layout.slot(worker), target)
        return self.words[base : base + self.layout.tgt_words]

    def retired_target_words(self, target: int) -> memoryview:
        base = self.layout.target_block(self.layout.retired, target)
        return self.words[base : base + self.layout.tgt_words]

    def breaker_row(self, target: int) -> memoryview:
        base = self.layout.breaker(target)
        return self.words[base : base + self.layout.brk_words]

    def wctrl_row(self, worker: int) -> memoryview:
        base = self.layout.wctrl(worker)
        return self.words[base : base + WCTRL_WORDS]

    def write_faults(self, faults: list[injection.Fault]) -> None:
        write_faults(self.words, self.layout, faults)

    def command(self) -> tuple[int, int]:
        """(sequence, command) last written by the supervisor."""
        word = self.words[H_COMMAND]
        return command_seq(word), command_code(word)

    def send_command(self, cmd: int) -> None:
        self.words[H_COMMAND] = command_word(command_seq(self.words[H_COMMAND]) + 1, cmd)

    def _copies(self, worker: int) -> tuple[list[int], list[int]]:
        """Copies of worker ``worker``'s slot and WARMUP block, the slot first (its
        ``time.started_us`` is then read before the block it vouches for)."""
        n = self.layout.slot_words
        base, block = self.layout.slot(worker), self.layout.warmup(worker)
        slot = self.words[base : base + n].tolist()
        return slot, self.words[block : block + n].tolist()

    def measured(self, worker: int) -> memoryview | list[int]:
        """Worker ``worker``'s whole slot (stats slot, then target blocks) as the
        measured period's figures (:func:`split`); without a warm-up, the slot's view
        itself (readers copy it once, as before)."""
        base, n = self.layout.slot(worker), self.layout.slot_words
        slot = self.words[base : base + n]
        if not slot[stats.GAUGE_INDEX["time.warmup_us"]]:
            return slot
        return split(self.layout, *self._copies(worker))[0]

    def measured_target(
        self, worker: int, target: int, copy: Callable[[memoryview], list[int]] = memoryview.tolist
    ) -> memoryview | list[int]:
        """Worker ``worker``'s block of ``target``, measured as :func:`split` says;
        without a warm-up, the block's view itself. ``copy`` takes the block (a
        reader's consistent copy: ``poolsvc.arbiter.readings.settled``)."""
        lay = self.layout
        base = lay.slot(worker)
        view = self.target_words(worker, target)
        if not self.words[base + _WARMUP]:
            return view
        started = self.words[base + _STARTED]  # read before the block it vouches for
        out = copy(view)
        if not started:  # warming up: nothing measured yet
            for i in lay.tgt_counts:
                out[i] = 0
            return out
        at = lay.target_block(lay.warmup(worker), target)
        block = self.words[at : at + lay.tgt_words].tolist()
        for i in lay.tgt_counts:
            out[i] -= block[i]
        return out

    def warmed(self, worker: int) -> list[int] | None:
        """Worker ``worker``'s warm-up figures (:func:`split`); None without a warm-up."""
        if not self.words[self.layout.slot(worker) + stats.GAUGE_INDEX["time.warmup_us"]]:
            return None
        return split(self.layout, *self._copies(worker))[1]

    def warmup_retired(self) -> memoryview:
        base = self.layout.warmup(self.layout.workers)
        return self.words[base : base + self.layout.slot_words]

    def warmup_retired_target_words(self, target: int) -> memoryview:
        base = self.layout.target_block(self.layout.warmup(self.layout.workers), target)
        return self.words[base : base + self.layout.tgt_words]

    def fold(self, worker: int) -> None:
        """Add worker ``worker``'s counts into RETIRED (the measured period's) and
        WARMUP_RETIRED (its warm-up's), then zero its slot and its WARMUP block.

        Only call once that worker has exited: it is the writer of both no more.
        Counts are added, maxima maxed, gauges dropped (a dead worker holds no
        connections).
        """
        lay, n = self.layout, self.layout.slot_words
        base, block = lay.slot(worker), lay.warmup(worker)
        measured, warm = split(lay, *self._copies(worker))
        for src, at in ((measured, lay.retired), (warm, lay.warmup(lay.workers))):
            dst = self.words[at : at + n]
            for i in lay.counts:
                if src[i]:
                    dst[i] = max(dst[i], src[i]) if i in stats.MAXED else dst[i] + src[i]
        generation = self.words[base + stats.GENERATION]
        zero = memoryview(bytearray(n * 8)).cast("Q")
        self.words[base : base + n] = zero
        self.words[block : block + n] = zero
        self.words[base + stats.GENERATION] = generation  # the incarnation count stays

    def close(self) -> None:
        self.words.release()
        self._map.close()
