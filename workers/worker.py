"""The worker: its parts, composed, and the run from warm-up to the last close.

A worker is parts behind small interfaces, none a subclass of another:

- :class:`~workers.loop.eventloop.Loop`: the epoll set, the deadlines, the waker; it turns.
- :class:`~workers.exchange.dialer.Dialer`: opens and closes connections through the
  :class:`~workers.net.transport.Transport` of each target (TCP, or TLS: :mod:`workers.net.tls`).
- :class:`~workers.exchange.requests.Requests`: target, breaker, pool decision, send.
- :class:`~workers.exchange.responses.Responses`: read, count, keep or check in.
- :class:`~workers.exchange.failures.Failures`: a failed or refused request is settled.
- :class:`~workers.exchange.drain.Drain`: the end of a run; every request counted.
- :class:`~workers.upkeep.Upkeep`: the per-tick duties, gauges, audits.
- :class:`~workers.exchange.warmup.Warmup`: ``--warmup``'s load before the measured period.

They share one :class:`~workers.loop.runstate.RunState` and one
:class:`~workers.shared.meter.Meter` (every counter write of the request path), and
call each other through one :class:`~workers.loop.ports.Peers`, by interface (a fresh
connection goes from the dialer to the request path, ``peers.issuing``; a failed send
from the request path to the failures, ``peers.settling``; ...). Their decisions
are pure functions (:mod:`workers.exchange.decide`,
:mod:`workers.pool.shard`) that return typed actions.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from workers.exchange.backlog import Backlog
from workers.exchange.dialer import Dialer
from workers.exchange.drain import Drain
from workers.exchange.failures import Failures
from workers.exchange.requests import Requests
from workers.exchange.responses import Responses
from workers.exchange.warmup import Warmup
from workers.lane import fastpath as lane
from workers.loop.eventloop import TICK, Handlers, Loop
from workers.loop.loadshape import Bounds, Schedule, wrr_period
from workers.loop.ports import Peers
from workers.loop.runstate import RunState
from workers.loop.workerspec import LoopSettings, WorkerSpec
from workers.net.transport import Plain, Transport
from workers.pool import client as cl
from workers.pool.backoff import Backoff
from workers.pool.client import Client
from workers.pool.connection import CONNECTING, HANDSHAKING, READING, Connection
from workers.pool.shard import Pool
from workers.pool.target import Target
from workers.shared import shm
from workers.shared.admission import SharedView
from workers.shared.meter import Meter
from workers.upkeep import Report, Upkeep


class Worker:
    """Runs ``bounds`` worth of load against ``targets`` (see the module docstring).

    ``shared`` is this worker's window on the shared region: its stats slot, its
    per-target counters, the breaker rows. :meth:`stop` may be called from a signal
    handler: the loop stops issuing requests, lets those in flight finish within
    ``drain_timeout``, then closes every socket. ``watchdog()`` is asked every tick
    whether to stop (the worker process: a dead supervisor, a command). ``end_at``
    (monotonic) overrides ``bounds.duration`` for a replacement worker that must
    stop when the one it replaces would have.
    """

    __slots__ = (
        "backlog",
        "bounds",
        "dialer",
        "drain",
        "failures",
        "loop",
        "meter",
        "path",
        "peers",
        "requests",
        "responses",
        "run_state",
        "settings",
        "shared",
        "targets",
        "upkeep",
        "warmup",
    )

    def __init__(
        self,
        targets: Sequence[Target],
        bounds: Bounds,
        settings: LoopSettings,
        shared: SharedView,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        watchdog: Callable[[], bool] | None = None,
        end_at: float = 0.0,
        report: Report | None = None,
        weights: Sequence[int] = (1,),
        transport: Transport | None = None,
    ) -> None:
        self.targets = list(targets)
        self.bounds = bounds
        self.settings = settings
        self.shared = shared
        _place_targets(self.targets, shared)
        run = self.run_state = RunState(bounds, len(targets), shared.worker, clock, end_at)
        loop = self.loop = Loop(run)
        if transport is not None:  # one transport for every target (tests)
            for target in self.targets:
                target.transport = transport
        s, ts, deadlines = settings, self.targets, loop.deadlines
        meter = self.meter = Meter(shared.slot, shared.words, shared.targets)
        # The parts reach each other through one Peers, by interface (workers.loop.ports):
        # each is named in it as it is built, and none is called before the run.
        peers = self.peers = Peers()
        dialer = self.dialer = Dialer(run, loop, ts, meter, peers, s.connect_timeout, rng)
        conns = dialer.conns
        requests = self.requests = Requests(
            run, loop, ts, weights, shared, meter, peers, conns, s.read_timeout
        )
        self.responses = Responses(run, deadlines, ts, shared, meter, peers, s)
        count_injected = s.injected_count_for_breaker
        failures = self.failures = Failures(
            run, deadlines, ts, shared, meter, peers, s.retry_stale, count_injected
        )
        peers.opening, peers.issuing = dialer, requests
        peers.answering, peers.settling = self.responses, failures
        self.backlog = Backlog(run, ts, meter, requests.issue)
        self.upkeep = Upkeep(
            run, loop, dialer, ts, shared, s.connect_timeout, watchdog, report, self.backlog
        )
        self.drain = Drain(
            run, deadlines, ts, conns, meter, self.upkeep.publish, self.backlog.cancel
        )
        self.warmup = Warmup(
            run, loop, self.drain, conns, meter, s.drain_timeout, dialer,
            shared.seal_warmup, self.upkeep.publish,
        )  # fmt: skip
        self._handlers()
        self._accelerate()
        self.upkeep.sync_faults()
        self.dialer.registry.take_baseline()  # after the epoll set and the spare: part of it

    def _handlers(self) -> None:
        """What the loop calls for each kind of event, by part."""
        dialer, req, resp = self.dialer, self.requests, self.responses
        self.loop.on = Handlers(
            ready=dialer.ready,
            every=dialer.conns,
            connected=dialer.connected,
            writable=req.flush,
            readable=resp.readable,
            settle=_nothing,  # the accelerated path binds its own (_accelerate)
            send_renewed=req.send_renewed,
            expired=self._expired,
            next=req.next,
            fire_due=self.backlog.fire_due,
            tick=self.upkeep.tick,
            begin_drain=self.drain.begin,
            abandon=self.drain.at_deadline,
        )

    def _accelerate(self) -> None:
        """Give the loop the accelerated path when this run can use it (workers.lane.fastpath)."""
        targets = self.targets
        self.path = lane.choose([t.spec for t in targets], self.bounds.rate)
        if self.path == "accelerated" and any(t.transport.__class__ is not Plain for t in targets):
            self.path = "pure (a test's transport)"
        if self.path != "accelerated":
            return
        loop, s = self.loop, self.settings
        fast = lane.build(
            loop.fileno(), self.run_state, targets, self.shared, s, s.read_timeout, loop.deadlines
        )
        loop.lane = self.requests.lane = fast
        back = lane.Handback(fast, [t.request for t in targets], self.peers)
        assert loop.on is not None
        loop.on.settle = back.settle
        if s.busy_poll:
            governor = lane.SpinGovernor(fast, s.busy_poll, os.cpu_count() or 1)
            self.upkeep.also.append(governor.tick)

    # What the worker process and the tests read ---------------------------------------
    @property
    def s(self) -> memoryview:
        """This worker's stats slot."""
        return self.shared.slot

    @property
    def in_flight(self) -> int:
        return self.run_state.in_flight

    @property
    def leaked(self) -> list[Any]:
        """Sockets the ``leak`` fault kept open on purpose."""
        return self.dialer.leaked

    def stop(self) -> None:
        """Drain and stop (safe from a signal handler: it only records)."""
        self.run_state.stop_requested = True

    def run_audit(self, label: str) -> dict[str, Any]:
        """Audit this process's descriptors now (see :meth:`Upkeep.run_audit`)."""
        return self.upkeep.run_audit(label)

    # The run ------------------------------------------------------------------------
    def run(self) -> None:
        """Warm the pools, run the load until a bound is reached, drain, close."""
        run, loop, upkeep, b = self.run_state, self.loop, self.upkeep, self.bounds
        try:
            if b.start_wall and not self._wait_until(b.start_wall):
                return  # told to stop before the start
            warmup = b.warmup if not run.fixed_end else 0.0  # a replacement joins a measured run
            if warmup:
                self.warmup.begin()
            self._warm_up()
            if warmup:
                self._warm_requests(warmup)
            run.ready_at = run.started_at = run.now = run.clock()
            run.idle_mark = loop.waited()  # the load's working time counts from here
            if b.start_wall:  # every shard's schedule from the same wall-clock instant
                run.started_at = run.now + (b.measure_wall - time.time())
            if run.fixed_end:
                run.end_at = run.fixed_end
            elif b.duration:
                run.end_at = run.started_at + b.duration
            if not run.stop_requested:  # told to stop while warming: nothing new is issued
                self._start_load(run.started_at, b.ramp)
            upkeep.publish()
            loop.turn_until(self._finished, self.settings.drain_timeout)
            run.finished_at = run.clock()
            if not run.issue_end:  # a request bound ended it
                run.issue_end = run.now = run.finished_at
            # After a drain the pool gauges keep the values published when the load
            # stopped (the pool as the load left it); a drain closes what was in flight.
            upkeep.publish(pool_gauges=not run.stopping)
        finally:
            run.stopping = True  # nothing refills the pool from here on
            run.keeping = False
            self.dialer.close_all()
            self.dialer.dead_ends.close()
            loop.stop_waker()
            if upkeep.report is not None:  # every socket closed: the count must be the baseline
                upkeep.run_audit("final")
            loop.close()
            upkeep.reserve.close()

    def _warm_requests(self, warmup: float) -> None:
        """The warm-up's requests (workers.exchange.warmup). Anchored (--start-at), the ramp ends
        a tenth of the warm-up (at most 1 s) before the shards' measured start, and
        settling ends by it: every shard starts its share of the schedule on time."""
        run, b = self.run_state, self.bounds
        if not b.start_wall:
            self.warmup.run_for(run.warmup_at + warmup, self._start_load)
        else:
            anchor = run.clock() + (b.measure_wall - time.time())
            end = anchor - min(warmup / 10, 1.0)
            self.warmup.run_for(end, self._start_load, settle_by=anchor)
        self.upkeep.apply_control()  # a rate changed while settling: before the restart

    def _wait_until(self, wall: float) -> bool:
        """Sleep until wall-clock ``wall`` (``--start-at``), in short naps so that a
        stop is heeded; False when told to stop first."""
        run = self.run_state
        while (left := wall - time.time()) > 0:
            if run.stop_requested:
                return False
            time.sleep(min(left, 0.05))
        return not run.stop_requested

    def _warm_up(self) -> None:
        """Open ``min_size`` connections per target before measuring anything."""
        run = self.run_state
        for target in self.targets:
            self.dialer.refill(target)
        limit = run.clock() + self.settings.connect_timeout + TICK
        self.loop.turn_until(
            lambda: (
                run.stop_requested
                or run.clock() > limit
                or not any(t.pool.connecting for t in self.targets)
            ),
            None,
        )

    def _start_load(self, base: float, ramp: float) -> None:
        """Start the load at ``base``, reaching full rate or concurrency over ``ramp``:
        open loop, the schedule (the warm-up's, restarted, keeps any rate change made
        meanwhile); closed loop, every client now or one after another over the ramp."""
        run, b = self.run_state, self.bounds
        if b.rate:
            if run.schedule is None:
                picks = wrr_period(self.requests.weights)
                run.schedule = Schedule(b.rate, base, ramp, b.stride, b.phase, picks)
                self.loop.start_waker()
            else:
                run.schedule.restart(base, ramp)
            run.next_due = base
            return
        n = len(run.clients)
        for i, client in enumerate(run.clients):
            if not ramp or i == 0:
                run.ready.append(client)
            else:
                client.fire("park")  # wakes up at its start time and begins
                self.loop.deadlines.arm(client, base + ramp * i / n)

    def _finished(self) -> bool:
        run = self.run_state
        return run.in_flight == 0 and (run.stopping or run.issued >= run.issue_cap)

    def _expired(self, obj: Any) -> None:
        """A deadline passed: a connect's or a response's, or a client's."""
        if obj.__class__ is Connection:
            if obj.state is CONNECTING:
                self.dialer.connect_failed(obj, "connect_timeout")
            elif obj.state is HANDSHAKING:
                self.dialer.connect_failed(obj, "tls_handshake_timeout", "tls")
            elif obj.state in READING:
                self.failures.conn_failed(obj, "read", "read_timeout")
            return
        client: Client = obj
        if client.state is cl.WAITING:
            if self.targets[client.target].pool.cancel_wait(client):
                self.failures.fail(client, "pool", "pool_timeout", "", False)
        elif client.state is cl.BACKOFF:
            client.fire("retry")
            self.requests.acquire(client)
        elif client.state is cl.PAUSED:
            client.fire("wake")
            self.requests.next(client)
        elif client.state is cl.DELAYED:
            if client.conn is None:  # its reserved connection closed meanwhile
                client.fire("retry")
                self.requests.acquire(client)
            else:
                self.requests.send(client)

    def __repr__(self) -> str:
        run = self.run_state
        return (
            f"<Worker {self.shared.worker} issued={run.issued} in_flight={run.in_flight} "
            f"conns={len(self.dialer.conns)} stopping={run.stopping}>"
        )


def _nothing() -> None:
    """No lane, nothing handed back."""


def _place_targets(targets: Sequence[Target], shared: SharedView) -> None:
    """Point each target at its words in the shared region."""
    for t in targets:
        t.breaker_word = shared.brk[t.index]
        t.ok_word = shared.targets[t.index] + shm.T_OK
        if len(targets) > 1:  # each target keeps its own figures too
            t.own = True
            t.block = shared.targets[t.index]
            t.errors, t.hist = t.block + shm.T_ERRORS, t.block + shm.T_HIST


def build_worker(
    spec: WorkerSpec,
    shared: SharedView,
    watchdog: Callable[[], bool] | None = None,
    end_at: float = 0.0,
    report: Report | None = None,
    transport: Transport | None = None,
) -> Worker:
    """The Worker for ``spec`` on the shared region ``shared``; ``end_at`` (monotonic)
    for a replacement that must stop when the one it replaces would have; ``transport``
    (default: plain TCP) carries every socket operation."""
    rng = random.Random(spec.seed)
    targets = []
    for t, plan in enumerate(spec.targets):
        base, cap, adaptive = spec.backoff
        target = Target(t, plan.spec, Pool(plan.pool, Backoff(base, cap, rng, adaptive)))
        target.total = plan.total
        targets.append(target)
    return Worker(
        targets,
        spec.bounds,
        spec.settings,
        shared,
        rng,
        watchdog=watchdog,
        end_at=end_at,
        report=report,
        weights=[p.weight for p in spec.targets],
        transport=transport,
    )
