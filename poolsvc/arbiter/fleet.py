"""The fleet: the supervisor's worker slots, the processes in them, and how they change.

A slot's lifecycle is a table (:mod:`poolsvc.arbiter.slots`); the fleet performs what its
pure decisions say. It forks a worker into a slot (its plan inherited through
fork, never pickled), reaps it when it exits (non-blocking), folds a dead
worker's counts into RETIRED (:func:`poolsvc.metrics.ledger.fold_dead`: what it had in
flight is counted as lost, and totals never go backwards), and restarts,
retires or revives slots; it splits the concurrency, the rate and, on a new
worker count, the pool over the running workers through their control rows.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from typing import Any

import multiprocess

from poolsvc.arbiter.slots import (
    HAS_PROCESS,
    RETIRING,
    RUNNING,
    WAITING_TO_FORK,
    Add,
    Exited,
    GiveUp,
    Restart,
    Retire,
    Revive,
    Slot,
    Update,
    after_exit,
    scale_moves,
)
from poolsvc.config import plan
from poolsvc.config.plan import RunPlan
from poolsvc.ctl.protocol import ControlError
from poolsvc.metrics import ledger
from workers.loop.loadshape import split
from workers.process import WorkerPlan, worker_main
from workers.shared import shm

Reporter = Callable[[int], Callable[[str, dict[str, Any]], None]]


MAX_POOL = 1_000_000  # connections to one target, over all workers


class Fleet:
    """The worker slots of one service (see the module docstring).

    ``reporter(index)``: where the worker in slot ``index`` writes its audit reports;
    ``observe(gauges)``: the run clock, fed what a dead worker last published."""

    def __init__(
        self,
        run: RunPlan,
        region: shm.Region,
        emit: Callable[[str], None],
        clock: Callable[[], float],
        reporter: Reporter,
        observe: Callable[[dict[str, int]], None],
    ) -> None:
        self.plan, self.region, self.emit, self.clock = run, region, emit, clock
        self.reporter, self.observe = reporter, observe
        self.slots = [Slot(s) for s in run.shards]
        self.target_workers = len(run.shards)
        self.total_concurrency = run.concurrency
        self.total_rate = run.rate
        # each target's pool bounds over all workers (max, min): the plan's, or poolctl pool's
        self.pool_totals = [(t.pool.max_size, t.pool.min_size) for t in run.targets]
        self.ctx = multiprocess.get_context("fork")
        self.stopping = False  # nothing is forked again
        self.failed_boot = False  # a slot's workers kept failing at boot: the service stops
        # the measured period has begun (at once without --warmup): a worker forked from
        # then on skips the warm-up
        self.measuring = not run.warmup_s

    # forking and reaping ----------------------------------------------------------------
    def fork_due(self, now: float) -> None:
        """Fork a worker into every slot that waits for one and whose time has come."""
        if self.stopping:
            return
        for slot in self.slots:
            if slot.state in WAITING_TO_FORK and now >= slot.respawn_at:
                self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        sh = slot.shard
        remaining = sh.requests - slot.completed if sh.requests else 0
        # A replacement gets the rest of the request bound and its own random stream.
        shard = dataclasses.replace(sh, requests=remaining, seed=sh.seed + 1000 * len(slot.pids))
        wp = WorkerPlan(
            self.plan.spec(shard, warm=not self.measuring),  # the warm-up is the run's start
            self.region.layout,
            os.getpid(),
            slot.end_at,
            self.reporter(slot.index),
        )
        self._write_row(slot)
        proc = self.ctx.Process(
            target=worker_main, args=(wp, self.region.words), name=f"poolsvc-w{slot.index}"
        )
        proc.start()
        slot.fire("spawn")
        slot.proc, slot.started = proc, self.clock()
        slot.pids.append(proc.pid)

    def _write_row(self, slot: Slot) -> None:
        """What the worker in ``slot`` is to run now: its concurrency, the worker count
        (its pool share), the total rate."""
        row = self.region.wctrl_row(slot.index)
        row[shm.C_CONCURRENCY] = slot.shard.concurrency
        row[shm.C_WORKERS] = self.target_workers
        row[shm.C_RATE] = int(self.total_rate * 1000)

    def reap_exited(self) -> None:
        """Reap every worker that has exited (non-blocking)."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.exitcode is not None:
                self._reap(slot)

    def _reap(self, slot: Slot) -> None:
        proc = slot.proc
        proc.join()
        code = proc.exitcode
        proc.close()
        slot.proc = None
        now = self.clock()
        ready = True
        if code != 0:  # it died: count what it had in flight, whatever happens next
            dead = self._fold(slot)
            ready = dead.ready
            slot.end_at = slot.end_at or dead.snapshot.gauges["time.end_us"] / 1e6
            slot.exits.append(code)
        sh = slot.shard
        shard_done = bool(sh.requests and slot.completed >= sh.requests) or bool(
            slot.end_at and now >= slot.end_at
        )
        decision = after_exit(
            code=code,
            state=slot.state,
            stopping=self.stopping,
            ready=ready,
            ran_for=now - slot.started,
            boot_failures=slot.boot_failures,
            shard_done=shard_done,
        )
        self._settle(slot, decision, code, now)

    def _settle(
        self, slot: Slot, decision: Exited | Restart | GiveUp, code: int, now: float
    ) -> None:
        """Perform what :func:`after_exit` decided for ``slot``."""
        how = f"signal {-code}" if code < 0 else f"code {code}"
        match decision:
            case Restart(after, failures):
                slot.boot_failures = failures
                slot.fire("crash")
                slot.respawn_at = now + after
                pid = slot.pids[-1]
                self.emit(f"[pool] worker {slot.index} (pid {pid}) exited with {how}; restarting")
            case GiveUp(boot, failures):
                slot.boot_failures = failures
                slot.fire("give_up")
                if boot:
                    self.emit(
                        f"[pool] worker {slot.index} failed at boot {failures} times "
                        f"in a row (last: {how}); stopping"
                    )
                    self.failed_boot = True
            case Exited():
                if slot.fire("exit") in WAITING_TO_FORK:  # revived while it was retiring
                    self._fold_for_revival(slot, code)

    def _fold(self, slot: Slot) -> ledger.Dead:
        """Fold ``slot``'s counts into RETIRED (its writer is gone: what it had in flight
        is counted as lost) and remember its share."""
        dead = ledger.fold_dead(self.region, slot.index)
        self.observe(dead.snapshot.gauges)
        slot.retired.append(dead.snapshot)
        slot.completed += dead.outcomes
        slot.sent_before += dead.sent  # (the rate read from raw slots: warm-up included)
        return dead

    def _fold_for_revival(self, slot: Slot, code: int) -> None:
        """A new incarnation in a used slot starts from zero (a crash folded it already)."""
        if code == 0 and slot.pids:
            self._fold(slot)
        slot.respawn_at = 0.0

    def live(self) -> list[Slot]:
        """The slots with a worker process (running, or draining toward retirement)."""
        return [s for s in self.slots if s.state in HAS_PROCESS and s.proc is not None]

    def running(self) -> list[Slot]:
        return [s for s in self.slots if s.state == RUNNING and s.proc is not None]

    # stopping ------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """No more forks; every live worker gets SIGTERM (it drains; the caller kills
        what is left later)."""
        self.stopping = True
        self._no_more_forks()
        for slot in self.live():
            _signal(slot.proc.pid, signal.SIGTERM)

    def _no_more_forks(self) -> None:
        """Stopping: a slot waiting to be forked is done; a revival is called off."""
        for slot in self.slots:
            if slot.can("stop"):
                slot.fire("stop")

    def kill_all(self) -> None:
        """SIGKILL and reap every worker still alive; nothing is forked again."""
        self.stopping = True  # what dies now is not restarted
        self._no_more_forks()
        for slot in self.slots:
            if slot.proc is not None:
                _signal(slot.proc.pid, signal.SIGKILL)
                self._reap(slot)

    # runtime changes ----------------------------------------------------------------------
    def set_concurrency(self, total: int) -> None:
        running = self.running()
        if not 1 <= len(running) <= total:
            raise ControlError("bad_request", f"concurrency must be >= workers ({len(running)})")
        self.total_concurrency = total
        for slot, share in zip(running, split(total, len(running)), strict=True):
            slot.shard = dataclasses.replace(slot.shard, concurrency=share)
            self.region.wctrl_row(slot.index)[shm.C_CONCURRENCY] = share

    def set_pool(self, targets: list[int], size: int, minimum: int | None) -> None:
        """New pool bounds, over all workers, for ``targets`` (poolctl pool): written to
        their breaker rows; each worker takes its share within a tick, growing with the
        usual backoff and shrinking idle connections first (busy ones as they come back)."""
        if self.stopping:
            raise ControlError("conflict", "the service is stopping")
        workers = max(self.target_workers, 1)
        if not workers <= size <= MAX_POOL:
            raise ControlError(
                "bad_request", f"size must be between the workers ({workers}) and {MAX_POOL}"
            )
        for t in targets:
            low = min(self.pool_totals[t][1], size) if minimum is None else minimum
            if not 0 <= low <= size:
                raise ControlError("bad_request", f"min must be between 0 and size ({size})")
        for t in targets:
            low = min(self.pool_totals[t][1], size) if minimum is None else minimum
            self.pool_totals[t] = (size, low)
            row = self.region.breaker_row(t)
            row[shm.B_POOL_MIN] = low  # before the max: a worker acts when the max moves
            row[shm.B_POOL_MAX] = size

    def set_rate(self, total: float) -> None:
        """Open loop: ``total`` requests per second, split over the running workers."""
        if not self.plan.rate:
            raise ControlError("conflict", "this service runs a closed loop (start it with --rate)")
        running = self.running()
        if not running or total <= 0:
            raise ControlError("bad_request", "rate must be > 0 (and workers must be running)")
        self.total_rate = total
        for slot in running:
            slot.shard = dataclasses.replace(slot.shard, rate=total)
            self.region.wctrl_row(slot.index)[shm.C_RATE] = int(total * 1000)

    def scale(self, n: int) -> None:
        """Run ``n`` workers (:func:`poolsvc.arbiter.slots.scale_moves`): the pool size and the
        concurrency are split again over the ``n``."""
        if self.stopping:
            raise ControlError("conflict", "the service is stopping")
        if self.plan.requests:
            raise ControlError("conflict", "a request-bounded run cannot be rescaled")
        smallest = min(size for size, _ in self.pool_totals)  # one to every target each
        limit = min(plan.MAX_WORKERS, smallest, self.total_concurrency)
        if not 1 <= n <= limit:
            raise ControlError("bad_request", f"workers must be between 1 and {limit}")
        self.target_workers = n
        wanted = self.plan.reshard(n, self.total_concurrency, self.total_rate)
        for slot in self.slots[:n]:  # each keeps its own random stream
            slot.shard = dataclasses.replace(wanted[slot.index], seed=slot.shard.seed)
        for move in scale_moves([s.state for s in self.slots], n):
            match move:
                case Add(i):
                    self.slots.append(Slot(wanted[i]))  # forked on the next step
                case Retire(i):
                    slot = self.slots[i]
                    if slot.fire("retire") == RETIRING and slot.proc is not None:
                        _signal(slot.proc.pid, signal.SIGTERM)  # drains, exits 0: counts stay
                case Revive(i):
                    slot = self.slots[i]
                    if slot.fire("revive") in WAITING_TO_FORK:  # RETIRED: fork it again now
                        self._fold_for_revival(slot, 0)
                case Update(i):
                    self._write_row(self.slots[i])

    def __repr__(self) -> str:
        return f"<Fleet {self.slots} stopping={self.stopping}>"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
