"""The worker's run state: what every part of the worker reads and one part writes.

The worker is composed of parts (:mod:`workers.worker`), each owning one concern:
the loop, the dialer, the request path, the responses, the failures, the drain,
the upkeep. What they share is here, in one object each part holds: the clock
reading of this wakeup, the request counts, the clients, whether the load is
paused or stopping, and the fault table in force.

Where speed shaped this: a part reads ``state.x`` with one attribute load, the
same cost as ``self.x``; a method of the request path binds ``run = self.run``
once and reads through that local.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from workers.loop.loadshape import Bounds, Schedule
from workers.pool.client import Client
from workers.shared.injection import Injector


class RunState:
    """One worker's shared run state (see the module docstring)."""

    __slots__ = (
        "busy_s",
        "clients",
        "clock",
        "concurrency",
        "end_at",
        "fault_gen",
        "finished_at",
        "fixed_end",
        "free",
        "idle_mark",
        "in_flight",
        "inject_requests",
        "injector",
        "issue_cap",
        "issue_end",
        "issued",
        "keeping",
        "load_end_times",
        "max_backlog",
        "next_due",
        "now",
        "one_closed",
        "paused",
        "ready",
        "ready_at",
        "renewed",
        "schedule",
        "shard",
        "shards",
        "started_at",
        "stop_requested",
        "stopping",
        "warmup_at",
    )

    def __init__(
        self,
        bounds: Bounds,
        targets: int,
        worker: int,
        clock: Callable[[], float] = time.monotonic,
        end_at: float = 0.0,
    ) -> None:
        self.clock = clock
        self.now = clock()  # this wakeup's reading (the response path re-reads it)
        self.clients = [Client(i) for i in range(bounds.concurrency)]
        self.ready: deque[Client] = deque()  # closed loop: clients whose next request is due
        self.renewed: list[Client] = []  # closed loop: kept connections, next requests due
        self.free: list[Client] = []  # open loop: clients waiting to carry a request
        self.concurrency = bounds.concurrency
        self.issued = 0
        self.issue_cap = bounds.requests or math.inf  # --requests: no more are issued
        self.in_flight = 0
        self.schedule: Schedule | None = None  # open loop, from the start of the load
        self.max_backlog = bounds.max_backlog  # open loop: per worker
        self.next_due = math.inf  # open loop: when the backlog must be looked at next
        self.idle_mark = 0.0  # the loop's waiting time when the measured load started
        self.busy_s = 0.0  # ... and how long it has worked since (until it stopped issuing)
        self.shard, self.shards = bounds.shard, bounds.shards  # this instance of the run
        # Closed loop with one target: a client may keep its connection between
        # requests (Responses.response_done) while nothing stops or pauses the load.
        self.one_closed = targets == 1 and not bounds.rate
        self.keeping = self.one_closed
        self.paused = False
        self.stopping = False  # the drain began: nothing is issued, nothing refilled
        self.stop_requested = False  # may be set from a signal handler: the loop drains
        self.injector = Injector([], worker)
        self.inject_requests = False  # a per-request fault is in force (hot-path check)
        self.fault_gen = -1
        self.fixed_end = end_at  # a replacement worker ends when the one it replaces would
        self.started_at = self.end_at = self.finished_at = 0.0
        self.ready_at = 0.0  # when the measured load could begin (after --start-at, --warmup)
        self.warmup_at = 0.0  # when the warm-up requests began (0: none)
        self.issue_end = 0.0  # when this worker stopped issuing requests
        self.load_end_times: tuple[float, float] | None = None  # (last ok, last fail) then

    def __repr__(self) -> str:
        return (
            f"<RunState issued={self.issued} in_flight={self.in_flight} "
            f"clients={len(self.clients)} paused={self.paused} stopping={self.stopping}>"
        )
