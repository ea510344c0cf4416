"""The worker: one epoll loop that performs what the pool decides.

Theory of operation.  A connection's fd is registered once for ``EPOLLIN`` and
stays registered for its whole life, idle included: a FIN, an RST or stray bytes
on an idle socket wake the loop, which evicts it at once (event-driven reaping,
like Go's ``readLoop``).  ``EPOLLOUT`` is added only while a connect or a partial
write is pending.  A request on a warm connection therefore costs one ``send``,
one ``recv`` and a share of one ``epoll_wait``; no JSON, lock, log line or heap
push (deadlines are re-armed lazily, see :mod:`workers.timers`).

Closed loop with one target, a client keeps the connection its response came
on (``Pool.renew``), and the requests that follow the responses of one wakeup
are written together after all of them are read (:meth:`Worker._send_renewed`):
the target then serves a burst instead of being woken once per request.

Each step of a request is a method below. Failures are counted by name and
phase (:mod:`workers.errors`) in this worker's stats slot (:mod:`workers.stats`),
which only this worker writes. The worker's state, its connection lifecycle and
its per-tick upkeep live in :mod:`workers.core`.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, Final

import httptools

from poolsvc import shm
from workers import connection as cx
from workers import load
from workers import pool as pl
from workers import stats as st
from workers.admission import REFUSE
from workers.connection import Connection
from workers.core import TICK, LoopSettings, WorkerCore
from workers.errors import oserror_name
from workers.histogram import bucket_of
from workers.http import close_delimited
from workers.load import SENDING, Client
from workers.stats import (
    BYTES_IN,
    BYTES_OUT,
    CONN_REUSED,
    HIST2_BASE,
    HIST_BASE,
    LAT2_MAX,
    LAT_MAX,
    LAT_SUM,
    REQ_LATE,
    REQ_OK,
    REQ_SENT,
    REQ_TOTAL,
    RESP_BASE,
)
from workers.target import Target
from workers.waker import make_waker

RECV_SIZE: Final = 65536
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
CHECKING, CLOSED, CONNECTING = cx.CHECKING, cx.CLOSED, cx.CONNECTING
_DONE, _CHECKOUT, _SEND = cx.ON["done"], cx.ON["checkout"], cx.ON["send"]
_READING: Final = frozenset({cx.BUSY, CHECKING, cx.DRAINING})
_REMOTE_PHASES: Final = frozenset({"connect", "write", "read"})  # the target's fault
_PARK_MIN, _PARK_MAX = 0.005, 0.1  # a refused client retries after this long
LATE: Final = 0.001  # open loop: a request sent this long after its intended time is late


__all__ = ["LoopSettings", "Worker"]


class Worker(WorkerCore):
    """Runs ``bounds`` worth of closed-loop load against ``targets``.

    ``shared`` is this worker's window on the shared region: its stats slot, its
    per-target counters, the breaker rows.  ``stop_requested`` may be set from a
    signal handler: the loop stops issuing requests, lets those in flight finish
    within ``drain_timeout``, then closes every socket.  ``watchdog`` is called
    every tick (the worker process uses it to notice a dead supervisor and
    supervisor commands).  ``end_at`` (monotonic) overrides ``bounds.duration``
    for a replacement worker that must stop when the one it replaces would have.
    """

    # Run ------------------------------------------------------------------------
    def run(self) -> None:
        """Warm the pools, run the load until a bound is reached, drain, close."""
        try:
            self._warm_up()
            self.started_at = self.now = self.clock()
            if self.fixed_end:
                self.end_at = self.fixed_end
            elif self.bounds.duration:
                self.end_at = self.started_at + self.bounds.duration
            if self.bounds.rate:
                self.schedule = load.Schedule(self.bounds.rate, self.started_at, self.bounds.ramp)
                self.waker = make_waker()  # sub-millisecond wakeups for intended send times
                if self.waker is not None:
                    self.ep.register(self.waker.fd, _IN)
            else:
                self._start_clients()
            self._publish()
            self._loop(self._finished, drain=True)
            self.finished_at = self.clock()
            # After a drain the pool gauges keep the values published when the load
            # stopped (the pool as the load left it); a drain closes what was in flight.
            self._publish(pool_gauges=not self.stopping)
        finally:
            self._close_all()
            self.dead_ends.close()
            if self.waker is not None:
                self.waker.close()
                self.waker = None
            if self.report is not None:  # every socket closed: the count must be the baseline
                self.run_audit("final")
            self.ep.close()

    def _start_clients(self) -> None:
        """Closed loop: every client now, or (with a ramp) one after another over it."""
        n = len(self.clients)
        for i, client in enumerate(self.clients):
            if not self.bounds.ramp or i == 0:
                self.ready.append(client)
            else:
                client.state = load.PAUSED  # wakes up at its start time and begins
                self.deadlines.arm(client, self.started_at + self.bounds.ramp * i / n)

    def _finished(self) -> bool:
        limit = self.bounds.requests
        return self.in_flight == 0 and (self.stopping or bool(limit and self.issued >= limit))

    def _warm_up(self) -> None:
        """Open ``min_size`` connections per target before measuring anything."""
        for target in self.targets:
            self._refill(target)
        limit = self.clock() + self.settings.connect_timeout + TICK
        self._loop(
            lambda: (
                self.stop_requested
                or self.clock() > limit
                or not any(t.pool.connecting for t in self.targets)
            ),
            drain=False,
        )

    def _loop(self, finished: Callable[[], bool], drain: bool) -> None:
        poll = self.ep.poll
        conns = self.conns
        next_tick = self.now
        drain_until = 0.0
        while not finished():
            timeout = 0.0 if self.ready else self._timeout(next_tick)
            events = poll(timeout)
            self.now = now = self.clock()
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is None:
                    if self.waker is not None and fd == self.waker.fd:
                        self.waker.fired()
                    continue
                if conn.state is CONNECTING:
                    self._connect_ready(conn)
                    continue
                if ev & _OUT and conn.out is not None:
                    self._flush(conn)
                if ev & ~_OUT and conn.state is not CLOSED:
                    self._readable(conn)
            if self.renewed:
                self._send_renewed()
            if self.deadlines.next_when() <= now:
                for obj in self.deadlines.pop_expired(now):
                    self._expired(obj)
            for _ in range(len(self.ready)):
                self._next(self.ready.popleft())
            if self.schedule is not None and not self.paused:
                self._fire_due(now)
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)
            if (
                drain
                and not self.stopping
                and (self.stop_requested or (self.end_at and now >= self.end_at))
            ):
                self._begin_drain()
                drain_until = now + self.settings.drain_timeout
            if drain_until and now >= drain_until:
                return

    def _timeout(self, next_tick: float) -> float:
        when = next_tick
        heap_next = self.deadlines.next_when()
        if heap_next and heap_next < when:
            when = heap_next
        if self.end_at and not self.stopping and self.end_at < when:
            when = self.end_at
        if self.schedule is not None and not self.stopping and not self.paused:
            due = self.schedule.next_at()
            if self.waker is not None and due < when:
                self.waker.arm(due)  # wakes us exactly then; epoll's own timeout is in ms
            else:
                when = min(when, due)
        return max(0.0, when - self.now)

    # Requests -------------------------------------------------------------------
    def _next(self, client: Client) -> None:
        """Issue ``client``'s next request, or retire it when a bound is reached."""
        limit = self.bounds.requests
        if client.retire or self.stopping or (limit and self.issued >= limit):
            client.state = load.DONE
            return
        if self.paused:
            client.state = load.PAUSED
            self.deadlines.arm(client, self.now + TICK)
            return
        self._issue(client, self.clock())

    def _recycle(self, client: Client) -> None:
        """A request finished: closed loop, the client sends its next one (on the next
        loop step after a failure, never recursively); open loop, it waits to be reused."""
        client.state = load.READY
        if self.schedule is None:
            self.ready.append(client)
        else:
            self.free.append(client)

    def _fire_due(self, now: float) -> None:
        """Open loop: issue every request whose intended time has come."""
        sched = self.schedule
        assert sched is not None
        limit = self.bounds.requests
        while sched.next_at() <= now:
            if self.stopping or (limit and self.issued >= limit):
                return
            intended = sched.take()
            if self.in_flight >= self.max_outstanding:
                self.s[st.REQ_DROPPED] += 1  # counted, never silently skipped
                continue
            client = self.free.pop() if self.free else self._new_client()
            self._issue(client, intended)

    def _new_client(self) -> Client:
        client = Client(len(self.clients))
        self.clients.append(client)
        return client

    def _issue(self, client: Client, start: float) -> None:
        """Send a request for ``client``; its latency is measured from ``start`` (the
        intended time in open loop: coordinated omission corrected)."""
        self.issued += 1
        self.in_flight += 1
        client.start = start
        client.retried = False
        client.target = t = self._pick_target()
        state = self.w[self.shared.brk[t]]
        if state & 0xFF:  # the breaker is not CLOSED: the slow path decides
            verdict = self.shared.admit(t, state)
            if verdict == REFUSE:
                self._refuse(client)
                return
            client.trial = max(verdict, 0)
        else:
            client.trial = 0
        self._acquire(client)

    def _pick_target(self) -> int:
        if len(self.targets) == 1:
            return 0
        cur, weights = self.wrr, self.weights
        best = 0
        for i, weight in enumerate(weights):
            cur[i] += weight
            if cur[i] > cur[best]:
                best = i
        cur[best] -= sum(weights)
        return best

    def _acquire(self, client: Client) -> None:
        target = self.targets[client.target]
        pool = target.pool
        client.state = load.ACQUIRING
        while True:
            act, conn, until, reason = pool.checkout(self.now, client)
            if act is pl.USE:
                self._dispatch(client, conn)  # type: ignore[arg-type]
            elif act is pl.PROBE:
                if cx.probe_dead(conn.sock):  # type: ignore[union-attr]
                    self._close(conn, "validation")  # type: ignore[arg-type]
                    continue
                self._dispatch(client, conn)  # type: ignore[arg-type]
            elif act is pl.EVICT:
                self._close(conn, reason)  # type: ignore[arg-type]
                continue
            elif act is pl.HEALTH:
                self._health_check(client, conn)  # type: ignore[arg-type]
            elif act is pl.CONNECT:
                client.state = SENDING
                self._connect(target, client)
            elif act is pl.WAIT:
                client.state = load.WAITING
                self.deadlines.arm(client, until)
            elif act is pl.BACKOFF:
                client.state = load.BACKOFF
                self.deadlines.arm(client, until)
            else:
                self._fail(client, "pool", reason)
            return

    def _dispatch(self, client: Client, conn: Connection) -> None:
        """Reserve ``conn`` for ``client`` and send its request."""
        conn.fire("checkout")
        self._send(client, conn)

    def _send(self, client: Client, conn: Connection, draw: bool = True) -> None:
        """Send ``client``'s request on the RESERVED ``conn``: one ``send`` of the
        target's prebuilt bytes, then the read deadline."""
        target = self.targets[conn.target]
        s = self.s
        client.state = SENDING
        client.conn = conn
        conn.owner = client
        if self.schedule is not None:  # open loop only: uncorrected latency, lateness
            client.sent_at = now = self.clock()
            if now - client.start > LATE:
                s[REQ_LATE] += 1
        # One draw per request; a delayed request is not drawn again when it is sent.
        hit = None
        if self.inject_requests and draw:
            hit = self.injector.on_request(target.index, self.now)
        if hit is not None and hit[0] == "delay":
            self._count_injected("delay")
            client.state = load.DELAYED  # the connection stays RESERVED meanwhile
            self.deadlines.arm(client, self.now + hit[1] / 1000.0)
            return
        conn.reset_response(target.head_only)
        conn.fire("send")
        if conn.requests:
            s[CONN_REUSED] += 1
        self._write(conn, target.request)
        if hit is not None and self.conns.get(conn.fd) is conn:
            self._inject_after_send(conn, hit[0])

    def _inject_after_send(self, conn: Connection, kind: str) -> None:
        """reset: abort with RST now; timeout: stop reading, so the read deadline fires."""
        self._count_injected(kind)
        conn.injected = kind
        if kind == "reset":
            cx.set_abortive(conn.sock)  # the close below sends RST, not FIN
            self._conn_failed(conn, "read", "ECONNRESET")
        else:
            self.ep.modify(conn.fd, 0)  # nothing is read from it any more

    def _write(self, conn: Connection, data: bytes) -> None:
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._conn_failed(conn, "write", oserror_name(exc))
            return
        s = self.s
        s[BYTES_OUT] += n
        if n < len(data):
            self._write_later(conn, data, n)
        elif conn.state is not CHECKING:
            s[REQ_SENT] += 1
        self.deadlines.arm(conn, self.now + self.settings.read_timeout)

    def _write_later(self, conn: Connection, data: bytes, n: int) -> None:
        """Only ``n`` bytes went out: the rest goes when the socket is writable."""
        conn.out = memoryview(data)[n:]
        self.ep.modify(conn.fd, _IN | _OUT)

    def _flush(self, conn: Connection) -> None:
        out = conn.out
        assert out is not None
        try:
            n = conn.sock.send(out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._conn_failed(conn, "write", oserror_name(exc))
            return
        self.s[BYTES_OUT] += n
        if n < len(out):
            conn.out = out[n:]
            return
        conn.out = None
        self.ep.modify(conn.fd, _IN)
        if conn.state is not CHECKING:
            self.s[REQ_SENT] += 1

    def _health_check(self, client: Client, conn: Connection) -> None:
        """Send the target's health-check request on ``conn`` before ``client`` uses it."""
        target = self.targets[conn.target]
        conn.fire("checkout")
        conn.fire("check")
        client.state = SENDING
        client.conn = conn
        conn.owner = client
        conn.reset_response(target.health_head_only)
        self.s[st.HEALTH_CHECKS] += 1
        self._write(conn, target.health_request)

    # Responses ------------------------------------------------------------------
    def _readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._read_failed(conn, oserror_name(exc))
            return
        if not data or conn.state not in _READING:
            self._read_ended(conn)
            return
        self.s[BYTES_IN] += len(data)
        if not conn.status:  # the header block so far, for close_delimited at EOF
            conn.head = data if conn.head is None else conn.head + data
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserError:
            self._conn_failed(conn, "read", "protocol_error")
            return
        if conn.complete:
            self._response_done(conn)

    def _read_ended(self, conn: Connection) -> None:
        """EOF on a connection, or bytes on one that is not waiting for a response."""
        if conn.state not in _READING:
            self._close(conn, "peer_closed")  # FIN, RST or stray bytes on an idle socket
        elif conn.status and not conn.complete and conn.head and close_delimited(conn.head):
            conn.keep_alive = False
            self._response_done(conn)
        else:
            self._read_failed(conn, "early_eof")

    def _response_done(self, conn: Connection) -> None:
        """Count a complete response, then keep, check in or close its connection."""
        client: Client = conn.owner
        self.now = now = self.clock()
        conn.deadline = 0.0  # disarmed (see workers.timers: its heap entry dies lazily)
        if conn.state is CHECKING:
            self._health_done(client, conn)
            return
        s = self.s
        conn.requests += 1
        conn.owner = None
        client.conn = None
        self.in_flight -= 1
        us = int((now - client.start) * 1_000_000)
        s[REQ_TOTAL] += 1
        s[REQ_OK] += 1
        status = conn.status
        if 100 <= status < 600:
            s[RESP_BASE + status // 100] += 1
        s[LAT_SUM] += us
        if us > s[LAT_MAX]:
            s[LAT_MAX] = us
        s[HIST_BASE + bucket_of(us)] += 1
        if self.schedule is not None:  # open loop: also from the actual send (uncorrected)
            raw = int((now - client.sent_at) * 1_000_000)
            s[HIST2_BASE + bucket_of(raw)] += 1
            if raw > s[LAT2_MAX]:
                s[LAT2_MAX] = raw
        target = self.targets[conn.target]
        if status < 500 or not self.settings.count_5xx:
            self.w[target.ok_word] += 1
            target.last_ok = now
            if target.consec or client.trial or target.pool.backoff.attempt:
                self._target_recovered(target, client)
        else:
            self._target_failed(target, client)
            if target.pool.backoff.attempt:  # an answer: connecting works again
                target.pool.backoff.success()
        conn.state = state = _DONE[conn.state]
        if state is CLOSED:  # it was DRAINING
            self._close(conn, "")
        elif (
            self.keeping
            and conn.keep_alive
            and not client.retire
            and self.issued < self.issue_cap
            and not self.w[target.breaker_word] & 0xFF
            and target.pool.renew(conn, now)
        ):
            # Closed loop, one target: the client keeps the connection it just used and
            # its next request goes out once this wakeup's responses are all read.
            conn.state = _CHECKOUT[state]
            self.issued += 1
            self.in_flight += 1
            client.retried = False
            client.trial = 0
            client.conn = conn
            self.renewed.append(client)
            return
        else:
            self._checkin(target, conn)
        if self.schedule is None:
            self._next(client)  # closed loop: the next request at once
        else:
            client.state = load.READY
            self.free.append(client)

    def _send_renewed(self) -> None:
        """Send the requests that ``_response_done`` queued while reading one wakeup's responses.

        Reading every response of a wakeup first and then writing the next requests
        back to back (as wrk does: it re-arms writability and writes on the next loop
        turn) lets the target work through a burst instead of being woken for each
        request: on loopback the waking is paid on our core, inside ``send``.  Each
        request's latency is measured from its own send, not from when it was queued.

        This is :meth:`_send` for the one-target closed loop without per-request faults,
        with the counters of a complete write added once for the whole burst.
        """
        queued, self.renewed = self.renewed, []
        clock = self.clock
        if self.inject_requests:  # every request draws for the faults: the full path
            for client in queued:
                client.start = clock()
                self._send(client, client.conn)
            return
        target = self.targets[0]
        data, head_only = target.request, target.head_only
        size = len(data)
        deadline = self.now + self.settings.read_timeout
        arm = self.deadlines.arm
        whole = 0
        for client in queued:
            conn = client.conn
            client.state = SENDING
            conn.owner = client
            conn.reset_response(head_only)
            conn.state = _SEND[conn.state]
            client.start = clock()
            try:
                n = conn.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._conn_failed(conn, "write", oserror_name(exc))
                continue
            if n == size:
                whole += 1
            else:
                self.s[BYTES_OUT] += n
                self._write_later(conn, data, n)
            if conn.heap_when and deadline >= conn.heap_when:
                conn.deadline = deadline  # its earlier heap entry re-arms it (timers: lazy)
            else:
                arm(conn, deadline)
        s = self.s
        s[CONN_REUSED] += len(queued)
        s[REQ_SENT] += whole
        s[BYTES_OUT] += whole * size

    def _target_recovered(self, target: Target, client: Client) -> None:
        """After a success: end the failure streak, report a half-open trial, reset backoff."""
        if target.consec:
            target.consec = 0
            self.w[self.shared.targets[target.index] + shm.T_CONSEC] = 0
        if client.trial:
            self.shared.trial_result(target.index, client.trial, True)
        if target.pool.backoff.attempt:
            target.pool.backoff.success()

    def _target_failed(self, target: Target, client: Client) -> None:
        w, tb = self.w, self.shared.targets[target.index]
        w[tb + shm.T_FAILED] += 1
        target.last_fail = self.now
        # The streak is tagged with the breaker generation it belongs to: after the
        # breaker changes state, failures from before no longer count.
        generation = w[self.shared.brk[target.index]] >> 8
        if generation != target.consec_gen:
            target.consec_gen = generation
            target.consec = 0
        target.consec += 1
        w[tb + shm.T_CONSEC] = shm.tag(generation, target.consec)
        if client.trial:
            self.shared.trial_result(target.index, client.trial, False)

    def _checkin(self, target: Target, conn: Connection) -> None:
        act, waiter, reason = target.pool.checkin(conn, self.now, conn.keep_alive)
        if act is pl.HANDOFF:
            self.deadlines.disarm(waiter)  # type: ignore[arg-type]
            self._dispatch(waiter, conn)  # type: ignore[arg-type]
        elif act is pl.CLOSE:
            self._close(conn, reason)

    def _health_done(self, client: Client, conn: Connection) -> None:
        if 200 <= conn.status < 400 and conn.keep_alive:
            conn.fire("done")
            self._send(client, conn)
            return
        self._close(conn, "health_check", refill=False)
        self._reconnect(client)  # at most one failed check per request: then a fresh socket

    # Failures -------------------------------------------------------------------
    def _read_failed(self, conn: Connection, name: str) -> None:
        if conn.state in _READING:
            self._conn_failed(conn, "read", name)
        else:
            self._close(conn, "peer_closed")

    def _conn_failed(self, conn: Connection, phase: str, name: str) -> None:
        """A request's connection broke; re-send once if that is provably safe."""
        client: Client | None = conn.owner
        checking = conn.state is CHECKING
        injected = conn.injected
        stale = (
            client is not None
            and not checking
            and not injected  # an injected failure is not a stale socket: never re-sent
            and conn.requests > 0
            and conn.head is None  # not a byte of the response arrived
            and name not in ("read_timeout", "protocol_error")
            and self.settings.retry_stale
            and self.targets[conn.target].idempotent
            and not client.retried
        )
        self._close(conn, "health_check" if checking else "error", refill=client is None)
        if client is None:
            return
        if checking:
            self._reconnect(client)  # a failed health check is the pool's business
        elif stale:
            self.s[st.STALE_REUSE] += 1
            client.retried = True
            self._reconnect(client)
        else:
            self._fail(client, phase, name, injected)

    def _reconnect(self, client: Client) -> None:
        """Re-send on a fresh connection (never the next pooled one, which may be stale too)."""
        target = self.targets[client.target]
        if target.pool.reserve_connect():
            self._connect(target, client)
        else:
            self._acquire(client)
        self._refill(target)  # if the pool is still short (we took one slot at most)

    def _fail(self, client: Client, phase: str, name: str, injected: str = "") -> None:
        """Count a failed request and let ``client`` go on (next loop step, never recursively)."""
        self._finish_failed(client, phase, name)
        target = self.targets[client.target]
        if injected and not self.settings.injected_count_for_breaker:
            target.last_fail = self.now
        elif phase in _REMOTE_PHASES:
            self._target_failed(target, client)
        else:
            self.w[self.shared.targets[target.index] + shm.T_LOCAL] += 1
            target.last_fail = self.now
        self._recycle(client)

    def _refuse(self, client: Client) -> None:
        """The breaker refused the request: count it and park the client briefly
        (a closed loop must not spin at CPU speed against an open breaker)."""
        self._finish_failed(client, "breaker", "breaker_open")
        t = client.target
        self.w[self.shared.targets[t] + shm.T_REFUSED] += 1
        if self.schedule is not None:
            self._recycle(client)  # open loop: the schedule paces, nothing to park
            return
        if any(not self.w[b] & 0xFF for b in self.shared.brk):
            self._recycle(client)  # another target is up: the next request may go there
            return
        wait = self.shared.open_until_us(t) / 1e6 - self.now
        client.state = load.PAUSED
        self.deadlines.arm(client, self.now + min(_PARK_MAX, max(_PARK_MIN, wait)))

    def _finish_failed(self, client: Client, phase: str, name: str) -> None:
        s = self.s
        s[st.REQ_TOTAL] += 1
        s[st.REQ_FAILED] += 1
        self._count_error(phase, name)
        client.conn = None
        self.in_flight -= 1

    def _expired(self, obj: Any) -> None:
        if obj.__class__ is Connection:
            if obj.state is CONNECTING:
                self._connect_failed(obj, "connect_timeout")
            elif obj.state in _READING:
                self._conn_failed(obj, "read", "read_timeout")
            return
        client: Client = obj
        if client.state is load.WAITING:
            if self.targets[client.target].pool.cancel_wait(client):
                self._fail(client, "pool", "pool_timeout")
        elif client.state is load.BACKOFF:
            self._acquire(client)
        elif client.state is load.PAUSED:
            client.state = load.READY
            self._next(client)
        elif client.state is load.DELAYED:
            self._send(client, client.conn, draw=False)
