"""The supervisor: forks the workers, keeps them alive, serves the control socket.

Theory of operation.  One thread, one selector loop (signal wakeup pipe, control
socket and its clients), ticking every ``TICK`` (5 ms):

* Signal handlers only record the signal; the loop acts on it (gunicorn's
  arbiter).  First SIGINT/SIGTERM: drain (command word + SIGTERM to each worker,
  SIGKILL after the drain timeout).  Second SIGINT: kill now.  SIGCHLD makes the
  loop reap with non-blocking waitpids; a safety poll runs every ``REAP_POLL``.
  (Process sentinels are not used: a worker closes every inherited descriptor,
  the sentinel pipe's write end included.)
* A worker that exits 0 has finished (or was retired by a scale-down); its slot
  stays as it left it.  Any other exit is a crash: its counts are folded into
  RETIRED (totals never go backwards), its slot is zeroed and a replacement is
  forked into the same slot after a backoff, with the rest of the shard's
  request bound and the same end time.  ``MAX_BOOT_FAILURES`` crashes in a row,
  each within ``BOOT_WINDOW`` of its start, stop the service (exit 3).
* Each tick the breaker desk (:mod:`poolsvc.breakers`) reads the workers'
  counters and writes the breaker rows; each second the per-interval figures
  are recorded (:mod:`poolsvc.status`).
* Runtime changes (concurrency, pause, worker count) are written into the
  workers' control rows; workers apply them on their next tick (100 ms).

Every exit path, an exception here included, SIGKILLs and reaps whatever worker
is still alive (``finally``).  The shared region is anonymous memory: nothing to
unlink.  Workers that outlive a SIGKILLed supervisor notice within one tick.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import multiprocess
import orjson

from poolsvc import audit, commands, config, files, ledger, plan, status
from poolsvc.breakers import BreakerDesk
from poolsvc.control import ControlError
from poolsvc.ctlserver import ControlServer, Deferred
from poolsvc.faults import FaultBoard
from poolsvc.keys import Config
from poolsvc.plan import Shard
from poolsvc.report import RunInfo
from poolsvc.status import Interval, Intervals
from workers import shm, stats
from workers.load import split
from workers.process import WorkerPlan, worker_main

TICK: Final = 0.005
REAP_POLL: Final = 0.1
BOOT_WINDOW: Final = 1.0
MAX_BOOT_FAILURES: Final = 5
EXIT_BOOT_FAILURE: Final = 3
EXIT_INTERRUPTED: Final = 130
STOP_GRACE: Final = 0.5  # `stop`: how long workers get before SIGKILL

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
    retiring: bool = False  # scaled down: exits when drained, is not restarted
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

    def __repr__(self) -> str:
        pid = self.pids[-1] if self.pids else None
        return f"<Worker {self.index} {self.state} pid={pid} restarts={len(self.exits)}>"


class Supervisor:
    """Runs ``cfg`` against the targets at ``hosts`` with ``n`` workers; :meth:`run` returns
    the exit code.

    ``forever``: a service (``poolsvc serve``) that runs until drained or stopped.
    ``control``: where to serve the control socket (None: no socket).
    """

    def __init__(
        self,
        cfg: Config,
        hosts: list[tuple[str, int]],
        n: int,
        seed: int,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        forever: bool = False,
        control: Path | None = None,
        on_interval: Callable[[Interval], None] | None = None,
    ) -> None:
        self.cfg, self.hosts, self.seed, self.emit, self.clock = cfg, hosts, seed, emit, clock
        self.names = plan.target_names(cfg, hosts)
        self.forever = forever
        self.layout = shm.Layout(workers=plan.MAX_WORKERS, targets=len(hosts))
        self.region = shm.Region(self.layout, os.getpid())
        self.total_concurrency = plan.concurrency(cfg)
        self.total_rate = cfg.rate
        self.handles = [Handle(s) for s in plan.shards(cfg, n, seed)]
        self.target_workers = n
        now = self.started_at = clock()
        self.finished_at = 0.0
        self.run_clock = ledger.RunClock()
        self.desk = BreakerDesk(
            self.region, plan.breaker_settings(cfg), self.names, seed, emit, now
        )
        self.board = FaultBoard(self.region, emit, clock, config.faults(cfg, seed))
        self.run_dir = ""  # audit reports: a private directory, made when the run starts
        self.watch = audit.FdWatch()
        self.audit_run: audit.AuditRun | None = None
        self.last_audit: dict[str, Any] | None = None
        self._audit_seq = 0
        self._next_audit = now + cfg.audit_every_s if cfg.audit_every_s else 0.0
        self.final_audits: list[dict[str, Any]] = []
        self.intervals = Intervals(now)
        self.target_intervals = [Intervals(now) for _ in self.names]  # several targets only
        self.on_interval = on_interval
        self.rates: dict[int, tuple[float, int]] = {}
        self._next_second = now + 1.0
        self.ctx = multiprocess.get_context("fork")
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.signals: list[int] = []
        self._reap_due = 0.0
        self.stopping = False
        self.kill_at = 0.0
        self.exit_code = 0
        self.control = (
            ControlServer(control, self.sel, self._command, clock) if control is not None else None
        )

    @property
    def breakers(self) -> list[Any]:
        return self.desk.breakers

    # lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        old = self._install_signals()
        try:
            self.run_dir = files.run_dir()
            for handle in self.handles:
                self._spawn(handle)
            while any(h.state != DONE for h in self.handles):
                self._step()
            self.finished_at = self.clock()
            final = self.snapshot()
            self.run_clock.observe(final.gauges)
            self.run_clock.finish(self.finished_at)
            last = self.intervals.add(self.finished_at, final, last=True)  # the partial last one
            if last is not None and self.on_interval is not None:
                self.on_interval(last)
            self.final_audits = self._read_final_audits()
            return self.exit_code
        finally:
            self._kill_all()
            if self.run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            self._restore_signals(old)
            if self.control is not None:
                self.control.close()
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()

    def _step(self) -> None:
        busy = self.control is not None and self.control.backlog
        for key, mask in self.sel.select(0 if busy else TICK):
            key.data(mask)
        if self.control is not None:
            self.control.service()
        self._on_signals()
        now = self.clock()
        if now >= self._reap_due:
            self._reap_exited()
        for handle in self.handles:
            if handle.state == RESTARTING and now >= handle.respawn_at and not self.stopping:
                self._spawn(handle)
        if self.board.faults:
            self.board.expire(now)
        used = [h.index for h in self.handles]
        self.desk.tick(now, used, [h.index for h in self.live()])
        self._audit_step(now)
        if now >= self._next_second:
            self._next_second = now + 1.0
            self._cheap_audit(now)
            snap = self.snapshot()
            self.run_clock.observe(snap.gauges)
            interval = self.intervals.add(now, snap)
            if interval is not None and self.on_interval is not None:
                self.on_interval(interval)
            if len(self.names) > 1:
                for t, intervals in enumerate(self.target_intervals):
                    intervals.add(now, status.target_snapshot(self, t))
            self._worker_rates(now)
            if self.control is not None:
                self.control.sweep(now)
        if self.stopping and self.kill_at and now >= self.kill_at:
            self._kill_all()

    def _command(self, cmd: str, args: dict[str, Any]) -> Any:
        return commands.dispatch(self, cmd, args)

    # workers ---------------------------------------------------------------------------
    def _spawn(self, h: Handle) -> None:
        remaining = h.shard.requests - h.completed if h.shard.requests else 0
        # A replacement gets the rest of the request bound and its own random stream.
        shard = dataclasses.replace(
            h.shard, requests=remaining, seed=h.shard.seed + 1000 * len(h.pids)
        )
        wp = WorkerPlan(
            plan.worker_spec(self.cfg, self.hosts, shard, self.forever),
            self.layout,
            os.getpid(),
            h.end_at,
            self._reporter(h.index),
        )
        row = self.region.wctrl_row(h.index)
        row[shm.C_CONCURRENCY] = h.shard.concurrency
        row[shm.C_WORKERS] = self.target_workers
        row[shm.C_RATE] = int(self.total_rate * 1000)
        proc = self.ctx.Process(
            target=worker_main, args=(wp, self.region.words), name=f"poolsvc-w{h.index}"
        )
        proc.start()
        h.proc, h.state, h.started = proc, RUNNING, self.clock()
        h.pids.append(proc.pid)

    def _reporter(self, worker: int) -> Callable[[str, dict[str, Any]], None]:
        """How worker ``worker`` hands over an audit report: a file in the run's private
        directory, written through a temporary one (the supervisor never reads half)."""
        run_dir = self.run_dir

        def write(label: str, report: dict[str, Any]) -> None:
            files.write_bytes(report_path(run_dir, worker, label), orjson.dumps(report))

        return write

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
        if code != 0:  # it died: count what it had in flight, whatever happens next
            dead = self._retire_slot(h)
            if not (self.stopping or h.retiring):
                self._crashed(h, code, dead)
                return
            h.exits.append(code)
        h.state = DONE
        if h.retiring and h.index < self.target_workers and not self.stopping:
            self._reincarnate(h)  # scaled down, then up again before it had exited

    def _crashed(self, h: Handle, code: int, dead: ledger.Dead) -> None:
        now = self.clock()
        h.end_at = h.end_at or dead.snapshot.gauges["time.end_us"] / 1e6
        h.exits.append(code)
        how = f"signal {-code}" if code < 0 else f"code {code}"
        # A boot failure is a worker that died before it started its load; one killed
        # after that ran, and says nothing about the next one's chances.
        booting = not dead.ready and now - h.started < BOOT_WINDOW
        h.boot_failures = h.boot_failures + 1 if booting else 0
        if h.boot_failures >= MAX_BOOT_FAILURES:
            self.emit(
                f"[pool] worker {h.index} failed at boot {h.boot_failures} times "
                f"in a row (last: {how}); stopping"
            )
            h.state = DONE
            self.exit_code = EXIT_BOOT_FAILURE
            self.drain()
            return
        done = (h.shard.requests and h.completed >= h.shard.requests) or (
            h.end_at and now >= h.end_at
        )
        if done:
            h.state = DONE
            return
        h.state = RESTARTING
        h.respawn_at = now + min(5.0, 0.1 * 2**h.boot_failures)
        self.emit(f"[pool] worker {h.index} (pid {h.pids[-1]}) exited with {how}; restarting")

    def _retire_slot(self, h: Handle) -> ledger.Dead:
        """Fold ``h``'s slot into RETIRED (its writer is gone: what it had in flight is
        counted as lost) and remember its share."""
        dead = ledger.fold_dead(self.region, h.index)
        self.run_clock.observe(dead.snapshot.gauges)
        h.retired.append(dead.snapshot)
        h.completed += dead.outcomes
        h.sent_before += dead.snapshot.counters["requests.sent"]
        return dead

    def _worker_rates(self, now: float) -> None:
        for h in self.handles:
            total = self.region.slot(h.index)[stats.REQ_SENT] + h.sent_before
            last_t, last = self.rates.get(h.index, (now, total))
            self.rates[h.index] = (now, total)
            h.rps = (total - last) / (now - last_t) if now > last_t else 0.0

    # FD audits ----------------------------------------------------------------------------
    def _cheap_audit(self, now: float) -> None:
        """Count every worker's descriptors; a persistent excess starts a full audit."""
        for h in self.live():
            slot = self.region.slot(h.index)
            expected = slot[stats.GAUGE_INDEX["fds.expected"]]
            if expected and self.watch.sample(
                h.index, h.pids[-1], expected, h.shard.concurrency + 4, now
            ):
                self.emit(
                    f"[audit] worker {h.index}: more descriptors than its registry "
                    "accounts for; running a full audit"
                )
                self.start_audit(None)
        if self._next_audit and now >= self._next_audit:
            self._next_audit = now + self.cfg.audit_every_s
            self.start_audit(None)

    def start_audit(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        """Audit every live worker, one at a time; ``callback`` gets the merged report."""
        if self.audit_run is None or self.audit_run.done:
            self.audit_run = audit.AuditRun([h.index for h in self.live()], self.clock())
        if callback is not None:
            self.audit_run.callbacks.append(callback)

    def _audit_step(self, now: float) -> None:
        run = self.audit_run
        if run is None or run.done:
            return
        if run.current is not None:
            worker, seq, deadline = run.current
            slot = self.region.slot(worker)
            if slot[stats.GAUGE_INDEX["audit.seq"]] == seq:
                path = report_path(self.run_dir, worker, f"seq{seq}")
                run.reports[worker] = orjson.loads(path.read_bytes())
                path.unlink()
                run.current = None
            elif now >= deadline:
                run.missing.append(worker)
                run.current = None
            else:
                return
        if run.pending:
            worker = run.pending.pop(0)
            if not any(h.index == worker for h in self.live()):
                return
            self._audit_seq += 1
            self.region.wctrl_row(worker)[shm.C_AUDIT] = self._audit_seq
            run.current = (worker, self._audit_seq, now + audit.AUDIT_TIMEOUT)
            return
        targets = self.hosts
        run.result = audit.merge(run, self.watch, targets, now)
        self.last_audit = run.result
        if self.cfg.audit_report:
            _write_report(self.cfg.audit_report, run.result)
        for callback in run.callbacks:
            callback(run.result)

    def audit_now(self) -> Deferred:
        """For the control socket: a reply that comes when the audit is done."""
        if not self.live():
            raise ControlError("conflict", "no live worker to audit")
        deferred = Deferred()
        self.start_audit(deferred.resolve)
        return deferred

    def _read_final_audits(self) -> list[dict[str, Any]]:
        out = []
        for h in self.handles:
            path = report_path(self.run_dir, h.index, "final")
            if path.exists():
                out.append(orjson.loads(path.read_bytes()))
        return out

    def live(self) -> list[Handle]:
        return [h for h in self.handles if h.state == RUNNING and h.proc is not None]

    # runtime changes ----------------------------------------------------------------------
    def drain(self) -> None:
        """Stop issuing requests everywhere; SIGKILL whatever has not exited in time."""
        self._stop_all(self.cfg.drain_timeout_ms / 1000.0 + 2.0)

    def stop(self) -> None:
        """Stop now: workers get ``STOP_GRACE`` to close cleanly, then SIGKILL."""
        self._stop_all(STOP_GRACE)

    def _stop_all(self, grace: float) -> None:
        if self.stopping:
            self.kill_at = min(self.kill_at, self.clock() + grace)
            return
        self.stopping = True
        self.region.send_command(shm.CMD_DRAIN)
        for h in self.handles:
            if h.state == RESTARTING:
                h.state = DONE
        for h in self.live():
            _signal(h.proc.pid, signal.SIGTERM)
        self.kill_at = self.clock() + grace

    def set_concurrency(self, total: int) -> None:
        live = self.live()
        if not 1 <= len(live) <= total:
            raise ControlError("bad_request", f"concurrency must be >= workers ({len(live)})")
        self.total_concurrency = total
        for h, share in zip(live, split(total, len(live)), strict=True):
            h.shard = dataclasses.replace(h.shard, concurrency=share)
            self.region.wctrl_row(h.index)[shm.C_CONCURRENCY] = share

    def set_rate(self, total: float) -> None:
        """Open loop: ``total`` requests per second, split over the live workers."""
        if not self.cfg.rate:
            raise ControlError("conflict", "this service runs a closed loop (start it with --rate)")
        live = self.live()
        if not live or total <= 0:
            raise ControlError("bad_request", "rate must be > 0 (and workers must be running)")
        self.total_rate = total
        for h in live:
            h.shard = dataclasses.replace(h.shard, rate=total)
            self.region.wctrl_row(h.index)[shm.C_RATE] = int(total * 1000)

    def set_paused(self, paused: bool) -> None:
        self.region.words[shm.H_PAUSED] = int(paused)

    def paused(self) -> bool:
        return bool(self.region.words[shm.H_PAUSED])

    def scale(self, n: int) -> None:
        """Run ``n`` workers: spawn into free slots or retire the highest ones; the pool
        size and the concurrency are split again over the ``n``."""
        if self.stopping:
            raise ControlError("conflict", "the service is stopping")
        if self.cfg.requests:
            raise ControlError("conflict", "a request-bounded run cannot be rescaled")
        limit = min(plan.MAX_WORKERS, self.cfg.pool_size, self.total_concurrency)
        if not 1 <= n <= limit:
            raise ControlError("bad_request", f"workers must be between 1 and {limit}")
        self.target_workers = n
        cfg = dataclasses.replace(
            self.cfg, concurrency=self.total_concurrency, rate=self.total_rate
        )
        wanted = plan.shards(cfg, n, self.seed)
        while len(self.handles) < n:
            self.handles.append(Handle(wanted[len(self.handles)], retiring=True))
        for h in self.handles:
            if h.index >= n:
                self._retire(h)
                continue
            h.shard = dataclasses.replace(wanted[h.index], seed=h.shard.seed)
            if h.state == RUNNING and not h.retiring:
                row = self.region.wctrl_row(h.index)
                row[shm.C_WORKERS] = n
                row[shm.C_CONCURRENCY] = h.shard.concurrency
                row[shm.C_RATE] = int(self.total_rate * 1000)
            elif h.state == DONE and h.retiring:
                self._reincarnate(h)
            # RUNNING and retiring: re-incarnated when it has exited (see _reap)

    def _retire(self, h: Handle) -> None:
        """Scale-down: ``h`` drains and exits 0 and is not restarted; its counts stay."""
        if h.state == RESTARTING:
            h.state, h.retiring = DONE, True
        elif h.state == RUNNING and not h.retiring:
            h.retiring = True
            _signal(h.proc.pid, signal.SIGTERM)

    def _reincarnate(self, h: Handle) -> None:
        if h.pids:
            self._retire_slot(h)  # a new incarnation in a used slot
        h.retiring = False
        h.state, h.respawn_at = RESTARTING, 0.0

    def breaker_action(self, target: int, action: str) -> None:
        if not self.cfg.breaker:
            raise ControlError("conflict", "the breaker is off (--no-breaker): nothing to force")
        try:
            self.desk.action(target, action, self.clock())
        except ValueError as exc:
            raise ControlError("bad_request", str(exc)) from None

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
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._drain_wakeup)
        old: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            old[signum] = signal.signal(signum, self._record_signal)
        old[-1] = signal.set_wakeup_fd(self.wake_w.fileno())
        return old

    def _drain_wakeup(self, mask: int) -> None:
        try:
            self.wake_r.recv(512)
        except BlockingIOError:
            pass

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

    # results ---------------------------------------------------------------------------
    def snapshot(self) -> stats.Snapshot:
        """Totals: every used slot plus the retired block (lock-free reads)."""
        slots = [self.region.slot(h.index) for h in self.handles]
        return stats.Snapshot.of([*slots, self.region.retired_slot()])

    def run_info(self, embedded: bool = False) -> RunInfo:
        """What was run and for how long, as the supervisor measured it (live or final)."""
        now = self.clock()
        clock = self.run_clock
        if not clock.started:
            clock.observe(self.snapshot().gauges)
        workers = len(self.live()) or len(self.handles)
        return RunInfo(
            ", ".join(self.names),
            embedded,
            self.total_concurrency,
            sum(tc.pool_size for tc in config.target_configs(self.cfg)),
            clock.elapsed_s(now),
            self.seed,
            workers,
            self.total_rate,
            load_s=clock.load_s(now),
            drain_s=clock.drain_s(),
            breaker=self.cfg.breaker,
        )

    def __repr__(self) -> str:
        return f"<Supervisor {self.handles} {self.desk} stopping={self.stopping}>"


def report_path(run_dir: str, worker: int, label: str) -> Path:
    """Where worker ``worker`` puts its audit report ``label`` (in the run's private dir)."""
    return Path(run_dir) / f"audit-w{worker}-{label}.json"


def _write_report(path: str, report: dict[str, Any]) -> None:
    fmt = "markdown" if path.endswith(".md") else "json" if path.endswith(".json") else "text"
    files.write_text(path, audit.render(report, fmt))  # never through a predictable name


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
