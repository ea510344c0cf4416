"""The supervisor: forks the workers, keeps them alive, decides the breakers.

Theory of operation.  One thread, one selector loop over a signal wakeup pipe,
ticking every ``TICK`` (5 ms):

* Signal handlers only record the signal; the loop acts on it (gunicorn's
  arbiter).  First SIGINT/SIGTERM: drain (command word + SIGTERM to each worker,
  SIGKILL after the drain timeout).  Second SIGINT: kill now.
* SIGCHLD (recorded like every signal) makes the loop poll each live worker with
  a non-blocking waitpid; a safety poll runs every ``REAP_POLL`` in case a
  SIGCHLD was coalesced.  (Process sentinels are not used: a worker closes every
  inherited descriptor, the sentinel pipe's write end included.)
* A worker that exits 0 has finished its shard; its slot stays as it left it.
  Any other exit is a crash: its counts are folded into the RETIRED block (totals
  never go backwards), its slot is zeroed and a replacement is forked into the
  same slot after a backoff, with the rest of the shard's request bound and the
  same end time.  ``MAX_BOOT_FAILURES`` crashes in a row, each within
  ``BOOT_WINDOW`` of its start, stop the service (exit 3) instead of looping.
* Each tick, per target: sum the workers' per-target counters, feed the deltas to
  the pure :class:`~poolsvc.breaker.Breaker`, and write its state into the
  breaker row, which only this process writes.  In HALF_OPEN it hands trial permits
  to live workers, generation-tagged.

Every exit path, including an exception here, SIGKILLs and reaps whatever
worker is still alive (``finally``).  The shared region is anonymous memory, so
nothing remains to unlink.  Workers that outlive a SIGKILLed supervisor notice
their new parent within one tick and exit.
"""

from __future__ import annotations

import dataclasses
import os
import random
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import multiprocess

from poolsvc import shm
from poolsvc.breaker import CLOSED, HALF_OPEN, OPEN, STATE_CODE, Breaker
from poolsvc.config import Config
from poolsvc.plan import Shard, breaker_settings, shards
from workers import stats
from workers.process import WorkerPlan, worker_main
from workers.target import TargetSpec

TICK: Final = 0.005
REAP_POLL: Final = 0.1
BOOT_WINDOW: Final = 1.0
MAX_BOOT_FAILURES: Final = 5
EXIT_BOOT_FAILURE: Final = 3
EXIT_INTERRUPTED: Final = 130

RUNNING, RESTARTING, DONE = "RUNNING", "RESTARTING", "DONE"


@dataclass
class Handle:
    """The supervisor's record of one worker slot across its incarnations."""

    shard: Shard
    proc: Any = None  # multiprocess Process of the current incarnation
    state: str = RESTARTING
    started: float = 0.0
    respawn_at: float = 0.0
    boot_failures: int = 0
    completed: int = 0  # requests finished by earlier incarnations
    end_at: float = 0.0  # the run's end, learned from the first incarnation
    pids: list[int] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # exit codes (negative: signal)
    retired: list[stats.Snapshot] = field(default_factory=list)

    def __repr__(self) -> str:
        pid = self.pids[-1] if self.pids else None
        return f"<Worker {self.shard.index} {self.state} pid={pid} restarts={len(self.exits)}>"


class Supervisor:
    """Runs ``cfg`` against ``spec`` with ``n`` workers; :meth:`run` returns the exit code."""

    def __init__(
        self,
        cfg: Config,
        spec: TargetSpec,
        n: int,
        seed: int,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.spec = spec
        self.emit = emit
        self.clock = clock
        self.layout = shm.Layout(workers=n, targets=1)
        self.region = shm.Region(self.layout, os.getpid())
        self.handles = [Handle(s) for s in shards(cfg, n, seed)]
        now = clock()
        self.breakers = [Breaker(breaker_settings(cfg), random.Random(seed), now)]
        for t, breaker in enumerate(self.breakers):
            self._write_row(t, breaker, now)  # workers read generation 1 from the start
        self._seen = [(0, 0)]  # per target: (ok, failed) summed at the last tick
        self._grant_turn = 0
        self.ctx = multiprocess.get_context("fork")
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.signals: list[int] = []
        self._reap_due = 0.0
        self.stopping = False
        self.kill_at = 0.0
        self.exit_code = 0
        self.started_at = now
        self.finished_at = 0.0

    # lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        old = self._install_signals()
        try:
            for handle in self.handles:
                self._spawn(handle)
            while any(h.state != DONE for h in self.handles):
                self._step()
            self.finished_at = self.clock()
            return self.exit_code
        finally:
            self._kill_all()
            self._restore_signals(old)
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()

    def _step(self) -> None:
        if self.sel.select(TICK):
            try:
                self.wake_r.recv(512)
            except BlockingIOError:
                pass
        self._on_signals()
        now = self.clock()
        if now >= self._reap_due:
            self._reap_exited()
        for handle in self.handles:
            if handle.state == RESTARTING and now >= handle.respawn_at and not self.stopping:
                self._spawn(handle)
        for t, breaker in enumerate(self.breakers):
            self._breaker_tick(t, breaker, now)
        if self.stopping and self.kill_at and now >= self.kill_at:
            self._kill_all()

    # workers ---------------------------------------------------------------------------
    def _spawn(self, h: Handle) -> None:
        remaining = h.shard.requests - h.completed if h.shard.requests else 0
        # A replacement gets the rest of the request bound and its own random stream.
        shard = dataclasses.replace(
            h.shard, requests=remaining, seed=h.shard.seed + 1000 * len(h.exits)
        )
        plan = WorkerPlan(self.cfg, self.spec, shard, self.layout, os.getpid(), h.end_at)
        proc = self.ctx.Process(
            target=worker_main, args=(plan, self.region.words), name=f"poolsvc-w{h.shard.index}"
        )
        proc.start()
        h.proc, h.state, h.started = proc, RUNNING, self.clock()
        h.pids.append(proc.pid)

    def _reap_exited(self) -> None:
        """Reap every worker that has exited (non-blocking)."""
        self._reap_due = self.clock() + REAP_POLL
        for h in self.handles:
            if h.proc is not None and h.proc.exitcode is not None:
                self._reap(h)

    def _reap(self, h: Handle) -> None:
        proc = h.proc
        proc.join()
        code = proc.exitcode
        proc.close()
        h.proc = None
        if code == 0 or self.stopping:
            h.state = DONE
            return
        self._crashed(h, code)

    def _crashed(self, h: Handle, code: int) -> None:
        now = self.clock()
        slot = self.region.slot(h.shard.index)
        snap = stats.Snapshot.of([slot])
        h.retired.append(snap)
        h.completed += snap.counters["requests.total"]
        h.end_at = h.end_at or snap.gauges["time.end_us"] / 1e6
        h.exits.append(code)
        self.region.fold(h.shard.index)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        h.boot_failures = h.boot_failures + 1 if now - h.started < BOOT_WINDOW else 0
        if h.boot_failures >= MAX_BOOT_FAILURES:
            self.emit(f"[pool] worker {h.shard.index} failed at boot {h.boot_failures} times "
                      f"in a row (last: {how}); stopping")  # fmt: skip
            h.state = DONE
            self.exit_code = EXIT_BOOT_FAILURE
            self.drain()
            return
        over = (h.shard.requests and h.completed >= h.shard.requests) or (
            h.end_at and now >= h.end_at
        )
        if over:
            h.state = DONE
            return
        h.state = RESTARTING
        h.respawn_at = now + min(5.0, 0.1 * 2**h.boot_failures)
        self.emit(f"[pool] worker {h.shard.index} (pid {h.pids[-1]}) exited with {how}; "
                  "restarting")  # fmt: skip

    def live(self) -> list[Handle]:
        return [h for h in self.handles if h.state == RUNNING and h.proc is not None]

    def drain(self) -> None:
        """Stop issuing requests everywhere; SIGKILL whatever has not exited in time."""
        if self.stopping:
            return
        self.stopping = True
        self.region.send_command(shm.CMD_DRAIN)
        for h in self.handles:
            if h.state == RESTARTING:
                h.state = DONE
        for h in self.live():
            _signal(h.proc.pid, signal.SIGTERM)
        self.kill_at = self.clock() + self.cfg.drain_timeout_ms / 1000.0 + 2.0

    def _kill_all(self) -> None:
        self.stopping = True  # what dies now is not restarted
        for h in self.handles:
            if h.proc is not None:
                _signal(h.proc.pid, signal.SIGKILL)
                self._reap(h)

    # signals -------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        old: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            old[signum] = signal.signal(signum, self._record_signal)
        old[-1] = signal.set_wakeup_fd(self.wake_w.fileno())
        return old

    def _record_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)  # only record: the loop acts (the wakeup fd wakes it)

    def _restore_signals(self, old: dict[int, Any]) -> None:
        signal.set_wakeup_fd(old.pop(-1))
        for signum, handler in old.items():
            signal.signal(signum, handler)

    def _on_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                self._reap_due = 0.0  # reap on this step
            elif not self.stopping:
                self.emit(f"[pool] {signal.Signals(signum).name}: draining")
                self.drain()
            elif signum == signal.SIGINT:
                self.emit("[pool] second SIGINT: stopping now")
                self.exit_code = EXIT_INTERRUPTED
                self._kill_all()
                for h in self.handles:
                    h.state = DONE

    # breakers --------------------------------------------------------------------------
    def _breaker_tick(self, t: int, breaker: Breaker, now: float) -> None:
        blocks = [self.region.target_words(h.shard.index, t) for h in self.handles]
        blocks.append(self.region.retired_target_words(t))
        ok = sum(b[shm.T_OK] for b in blocks)
        failed = sum(b[shm.T_FAILED] for b in blocks)
        gen = breaker.generation
        consec = sum(shm.tagged_count(b[shm.T_CONSEC], gen) for b in blocks)
        last_ok, last_failed = self._seen[t]
        self._seen[t] = (ok, failed)
        breaker.observe(now, ok - last_ok, failed - last_failed, consec)
        trial_ok = sum(shm.tagged_count(b[shm.T_TRIAL_OK], breaker.generation) for b in blocks)
        trial_fail = sum(shm.tagged_count(b[shm.T_TRIAL_FAIL], breaker.generation) for b in blocks)
        permits = breaker.tick(now, trial_ok, trial_fail)
        if permits:
            self._grant(t, breaker.generation, permits)
        if breaker.generation != gen:
            self._publish_breaker(t, breaker, now)

    def _grant(self, t: int, generation: int, permits: int) -> None:
        """Hand ``permits`` trial permits to live workers, round-robin."""
        live = self.live() or self.handles
        row = self.region.breaker_row(t)
        for _ in range(permits):
            h = live[self._grant_turn % len(live)]
            self._grant_turn += 1
            at = shm.BRK_FIXED + h.shard.index
            row[at] = shm.tag(generation, shm.tagged_count(row[at], generation) + 1)

    def _publish_breaker(self, t: int, breaker: Breaker, now: float) -> None:
        self._write_row(t, breaker, now)
        if breaker.state == OPEN:
            self.emit(f"[pool] circuit breaker OPEN for {breaker.open_until - now:.1f}s "
                      f"({breaker.reason})")  # fmt: skip
        elif breaker.state == HALF_OPEN:
            self.emit(f"[pool] circuit breaker HALF_OPEN: {breaker.settings.trials} trial(s)")
        elif breaker.state == CLOSED:
            self.emit(f"[pool] circuit breaker CLOSED ({breaker.reason})")

    def _write_row(self, t: int, breaker: Breaker, now: float) -> None:
        row = self.region.breaker_row(t)
        until = breaker.open_until if breaker.open_until != float("inf") else 2.0**62 / 1e6
        row[shm.B_OPEN_UNTIL] = int(until * 1e6)
        row[shm.B_TRIPS] = breaker.total_trips
        row[shm.B_CHANGED] = int(now * 1e6)
        # The state word last: a worker that sees OPEN finds open_until already set.
        row[shm.B_STATE] = (breaker.generation << 8) | STATE_CODE[breaker.state]

    # results ---------------------------------------------------------------------------
    def snapshot(self) -> stats.Snapshot:
        """Totals: every live slot plus the retired block (lock-free reads)."""
        slots = [self.region.slot(h.shard.index) for h in self.handles]
        return stats.Snapshot.of([*slots, self.region.retired_slot()])

    def per_worker(self) -> list[dict[str, Any]]:
        rows = []
        for h in self.handles:
            snap = stats.Snapshot.of([self.region.slot(h.shard.index)])
            c = snap.counters
            for old in h.retired:
                for k, v in old.counters.items():
                    c[k] += v
            rows.append({"index": h.shard.index, "pids": h.pids, "restarts": len(h.exits),
                         "exit_codes": h.exits, "pool_size": h.shard.pool_size,
                         "concurrency": h.shard.concurrency, "requests.total":
                         c["requests.total"], "requests.ok": c["requests.ok"],
                         "requests.failed": c["requests.failed"],
                         "connections.created": c["connections.created"]})  # fmt: skip
        return rows

    def __repr__(self) -> str:
        return f"<Supervisor {self.handles} {self.breakers} stopping={self.stopping}>"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
