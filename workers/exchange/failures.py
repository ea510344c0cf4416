"""How a request fails: counted, charged to the right party, and the client goes on.

A connection that breaks under a request is closed, and
:func:`workers.exchange.decide.after_failure` says what becomes of the request: re-sent
once on a fresh connection when that is provably safe (``retries.stale_reuse``),
given a fresh connection after a failed health check, or failed, counted by
phase and name (:mod:`workers.shared.errors`). Failures in the connect, write and read
phases are the target's fault and extend its breaker streak; pool failures are
ours. A refused request (breaker not CLOSED) parks its client briefly
(:func:`workers.exchange.decide.on_refusal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from workers.exchange.decide import Drop, Fail, Park, Recheck, Resend, after_failure, on_refusal
from workers.loop.ports import Peers
from workers.loop.runstate import RunState
from workers.loop.timers import Deadlines
from workers.pool.client import Client
from workers.pool.connection import CHECKING, READING, Connection
from workers.pool.target import Target
from workers.shared import shm
from workers.shared.admission import SharedView
from workers.shared.meter import Meter

_REMOTE_PHASES: Final = frozenset({"connect", "tls", "write", "read"})  # the target's fault


class Failures:
    """Settles one worker's failed and refused requests (see the module docstring).

    It reaches the dialer (``peers.opening``) and the request path
    (``peers.issuing``); every count goes to ``meter``."""

    __slots__ = (
        "count_injected",
        "deadlines",
        "meter",
        "peers",
        "retry_stale",
        "run",
        "shared",
        "targets",
        "w",
    )

    def __init__(
        self,
        run: RunState,
        deadlines: Deadlines,
        targets: Sequence[Target],
        shared: SharedView,
        meter: Meter,
        peers: Peers,
        retry_stale: bool,
        count_injected: bool,
    ) -> None:
        self.run = run
        self.deadlines = deadlines
        self.targets = targets
        self.shared = shared
        self.w = shared.words  # read: the breaker rows
        self.meter = meter
        self.peers = peers
        self.retry_stale = retry_stale
        self.count_injected = count_injected  # injected failures feed the breaker too

    def read_failed(self, conn: Connection, name: str) -> None:
        """Reading ``conn`` failed: its request fails, or (idle) the peer went away."""
        if conn.state in READING:
            self.conn_failed(conn, "read", name)
        else:
            self.peers.opening.close(conn, "peer_closed")

    def conn_failed(self, conn: Connection, phase: str, name: str) -> None:
        """A request's connection broke; close it and settle the request."""
        client: Client | None = conn.owner
        injected = conn.injected
        decision = after_failure(
            phase=phase,
            name=name,
            has_request=client is not None,
            checking=conn.state is CHECKING,
            injected=bool(injected),
            written=conn.out is None,
            reused=conn.requests > 0,
            answered=conn.head is not None,
            retry_stale=self.retry_stale,
            idempotent=self.targets[conn.target].idempotent,
            retried=client is not None and client.retried,
        )
        match decision:
            case Drop():
                self.peers.opening.close(conn, "error")
            case Recheck():  # a failed health check is the pool's business
                self.peers.opening.close(conn, "health_check", refill=False)
                assert client is not None
                self.reconnect(client)
            case Resend(take_back):
                self.peers.opening.close(conn, "error", refill=False)
                assert client is not None
                self.meter.resent(take_back)  # take_back: the target never took this try
                client.retried = True
                self.reconnect(client)
            case Fail(sent):
                self.peers.opening.close(conn, "error", refill=False)
                assert client is not None
                self.fail(client, phase, name, injected, sent)

    def reconnect(self, client: Client) -> None:
        """Re-send on a fresh connection (never the next pooled one, which may be stale too)."""
        target = self.targets[client.target]
        if target.pool.reserve_connect():
            client.fire("connect")
            self.peers.opening.connect(target, client)
        else:
            client.fire("retry")
            self.peers.issuing.acquire(client)
        self.peers.opening.refill(target)  # if the pool is still short (we took one slot at most)

    def open_failed(self, client: Client, phase: str, name: str, injected: str) -> None:
        """The connection opened for ``client``'s request failed to connect (phase
        ``connect``) or to handshake (``tls``): the request never left."""
        self.fail(client, phase, name, injected, False)

    def fail(self, client: Client, phase: str, name: str, injected: str, sent: bool) -> None:
        """Count a failed request and let ``client`` go on (next loop step, never recursively).

        ``sent``: its last byte had been written (``failed``), else it never reached the
        target (``unsent``)."""
        self._finish(client, phase, name, sent)
        target = self.targets[client.target]
        if injected and not self.count_injected:
            target.last_fail = self.run.now
        elif phase in _REMOTE_PHASES:
            self.target_failed(target, client)
        else:
            self.meter.local_failure(target.index)
            target.last_fail = self.run.now
        client.fire("fail")
        self._requeue(client)

    def refuse(self, client: Client) -> None:
        """The breaker refused the request: count it; the client parks or goes on."""
        self._finish(client, "breaker", "breaker_open", False)
        t = client.target
        w = self.w
        self.meter.refused(t)
        run = self.run
        another_up = any(not shm.breaker_code(w[b]) for b in self.shared.brk)
        open_for = self.shared.open_until_us(t) / 1e6 - run.now
        decision = on_refusal(run.schedule is not None, another_up, open_for)
        if isinstance(decision, Park):
            client.fire("park")
            self.deadlines.arm(client, run.now + decision.seconds)
        else:
            client.fire("fail")
            self._requeue(client)

    def _requeue(self, client: Client) -> None:
        """A READY client after a failure: closed loop, its next request on the next loop
        step (never recursively); open loop, it waits to be reused."""
        if self.run.schedule is None:
            self.run.ready.append(client)
        else:
            self.run.free.append(client)

    def _finish(self, client: Client, phase: str, name: str, sent: bool) -> None:
        # how long it took to fail, from when it was due (a timeout shows as its
        # timeout, a refused connect as a few us): failures are timed too, apart
        # (run.now is the loop step's time: a request refused as it is issued in this
        # step started after it, hence the clamp)
        us = max(0, int((self.run.now - client.start) * 1_000_000)) if client.start else 0
        self.meter.failed(self.targets[client.target], phase, name, sent, us)
        client.conn = None
        self.run.in_flight -= 1

    def target_failed(self, target: Target, client: Client) -> None:
        """The target failed a request: extend its streak (for the breaker)."""
        target.last_fail = self.run.now
        if self.run.stopping:  # a drain admits nothing: its tail must not trip the breaker
            return
        # The streak is tagged with the breaker generation it belongs to: after the
        # breaker changes state, failures from before no longer count.
        generation = shm.breaker_generation(self.w[target.breaker_word])
        if generation != target.consec_gen:
            target.consec_gen = generation
            target.consec = 0
        target.consec += 1
        self.meter.target_failed(target.index, shm.tag(generation, target.consec))
        if client.trial:
            self.shared.trial_result(target.index, client.trial, False)

    def __repr__(self) -> str:
        return f"<Failures retry_stale={self.retry_stale} targets={len(self.targets)}>"
