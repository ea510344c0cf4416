"""How a request fails: counted, charged to the right party, and the client goes on.

A connection that breaks under a request is closed. The request is re-sent once on a
fresh connection when that is provably safe (a reused socket that returned not a
byte, an idempotent method: ``retries.stale_reuse``); otherwise it fails, counted by
phase and name (:mod:`workers.errors`). Failures in the connect, write and read
phases are the target's fault and extend its breaker streak; pool failures are ours.
A refused request (breaker not CLOSED) parks its client briefly.
"""

from __future__ import annotations

from typing import Final

from poolsvc import shm
from workers import connection as cx
from workers import load
from workers import stats as st
from workers.connection import CHECKING, Connection
from workers.core import WorkerCore
from workers.load import Client
from workers.target import Target

_REMOTE_PHASES: Final = frozenset({"connect", "write", "read"})  # the target's fault
_PARK_MIN, _PARK_MAX = 0.005, 0.1  # a refused client retries after this long


class Failures(WorkerCore):
    """The failure layer of the worker (see the module docstring)."""

    def _recycle(self, client: Client) -> None:
        """A request finished: closed loop, the client sends its next one (on the next
        loop step after a failure, never recursively); open loop, it waits to be reused."""
        client.state = load.READY
        if self.schedule is None:
            self.ready.append(client)
        else:
            self.free.append(client)

    def _read_failed(self, conn: Connection, name: str) -> None:
        if conn.state in cx.READING:
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

    def _target_failed(self, target: Target, client: Client) -> None:
        w, tb = self.w, self.shared.targets[target.index]
        w[tb + shm.T_FAILED] += 1
        target.last_fail = self.now
        # The streak is tagged with the breaker generation it belongs to: after the
        # breaker changes state, failures from before no longer count.
        generation = w[target.breaker_word] >> 8
        if generation != target.consec_gen:
            target.consec_gen = generation
            target.consec = 0
        target.consec += 1
        w[tb + shm.T_CONSEC] = shm.tag(generation, target.consec)
        if client.trial:
            self.shared.trial_result(target.index, client.trial, False)
