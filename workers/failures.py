"""How a request fails: counted, charged to the right party, and the client goes on.

A connection that breaks under a request is closed. The request is re-sent once on a
fresh connection when that is provably safe (a reused socket that returned not a
byte, an idempotent method: ``retries.stale_reuse``); otherwise it fails, counted by
phase and name (:mod:`workers.errors`). Failures in the connect, write and read
phases are the target's fault and extend its breaker streak; pool failures are ours.
A refused request (breaker not CLOSED) parks its client briefly.

The drain decides the fate of what is still in flight: a request waiting for a
connection when the load stops is cancelled (never sent); at the drain deadline
a request the target has whole is abandoned, anything else cancelled.
"""

from __future__ import annotations

from typing import Final

from workers import connection as cx
from workers import load, shm
from workers import stats as st
from workers.connection import CHECKING, Connection
from workers.core import WorkerCore
from workers.errors import ERROR_INDEX
from workers.load import Client
from workers.target import Target

_REMOTE_PHASES: Final = frozenset({"connect", "write", "read"})  # the target's fault
_PARK_MIN, _PARK_MAX = 0.005, 0.1  # a refused client retries after this long
# Client states with a request in flight (issued, not yet answered or failed).
_IN_FLIGHT: Final = frozenset({load.SENDING, load.DELAYED, load.WAITING, load.BACKOFF})


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
        # The target has the request whole only if every byte of it was written.
        sent = phase == "read" and conn.out is None and not checking and client is not None
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
            s = self.s
            if sent:  # the socket was dead: the target never took this try (take it back)
                s[st.REQ_SENT] -= 1
            s[st.STALE_REUSE] += 1
            client.retried = True
            self._reconnect(client)
        else:
            self._fail(client, phase, name, injected, sent)

    def _reconnect(self, client: Client) -> None:
        """Re-send on a fresh connection (never the next pooled one, which may be stale too)."""
        target = self.targets[client.target]
        if target.pool.reserve_connect():
            self._connect(target, client)
        else:
            self._acquire(client)
        self._refill(target)  # if the pool is still short (we took one slot at most)

    def _fail(
        self, client: Client, phase: str, name: str, injected: str = "", sent: bool = False
    ) -> None:
        """Count a failed request and let ``client`` go on (next loop step, never recursively).

        ``sent``: its last byte had been written (``failed``), else it never reached the
        target (``unsent``)."""
        self._finish_failed(client, phase, name, sent)
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
        self._finish_failed(client, "breaker", "breaker_open", False)
        t = client.target
        self.w[self.shared.targets[t] + shm.T_REFUSED] += 1
        if self.schedule is not None:
            self._recycle(client)  # open loop: the schedule paces, nothing to park
            return
        if any(not shm.breaker_code(self.w[b]) for b in self.shared.brk):
            self._recycle(client)  # another target is up: the next request may go there
            return
        wait = self.shared.open_until_us(t) / 1e6 - self.now
        client.state = load.PAUSED
        self.deadlines.arm(client, self.now + min(_PARK_MAX, max(_PARK_MIN, wait)))

    def _finish_failed(self, client: Client, phase: str, name: str, sent: bool) -> None:
        s = self.s
        s[st.REQ_FAILED if sent else st.REQ_UNSENT] += 1
        self._count_error(phase, name, sent)
        target = self.targets[client.target]
        if target.own:  # several targets: this target's own figures too
            self.w[target.block + (shm.T_RESP_FAILED if sent else shm.T_UNSENT)] += 1
            self.w[target.errors + ERROR_INDEX[name]] += 1
        client.conn = None
        self.in_flight -= 1

    def _target_failed(self, target: Target, client: Client) -> None:
        target.last_fail = self.now
        if self.stopping:  # a drain admits nothing: its tail must not trip the breaker
            return
        w, tb = self.w, self.shared.targets[target.index]
        w[tb + shm.T_FAILED] += 1
        # The streak is tagged with the breaker generation it belongs to: after the
        # breaker changes state, failures from before no longer count.
        generation = shm.breaker_generation(w[target.breaker_word])
        if generation != target.consec_gen:
            target.consec_gen = generation
            target.consec = 0
        target.consec += 1
        w[tb + shm.T_CONSEC] = shm.tag(generation, target.consec)
        if client.trial:
            self.shared.trial_result(target.index, client.trial, False)

    # The drain ----------------------------------------------------------------------
    def _begin_drain(self) -> None:
        """Stop issuing; requests still waiting for a connection are cancelled (counted),
        busy connections close after their response, the rest when the run ends."""
        self.stopping = True
        self.keeping = False
        self.issue_end = self.now
        self.load_end_times = (
            max(t.last_ok for t in self.targets),
            max(t.last_fail for t in self.targets),
        )
        for client in self.clients:
            if client.state in (load.WAITING, load.BACKOFF):
                self._cancel(client)
            elif client.state is load.PAUSED:
                self.deadlines.disarm(client)
                client.state = load.DONE
        self._publish()  # the pool as the load left it, before shutdown closes it
        for conn in list(self.conns.values()):
            if conn.state is cx.BUSY:
                conn.fire("drain")

    def _cancel(self, client: Client) -> None:
        """A request that was never sent ends because the run stops (``unsent.cancelled``)."""
        self.targets[client.target].pool.cancel_wait(client)  # if it was waiting
        self.deadlines.disarm(client)
        self.s[st.REQ_UNSENT] += 1
        self._count_error("pool", "cancelled", False)
        client.state = load.DONE
        client.conn = None
        self.in_flight -= 1

    def _abandon_in_flight(self) -> None:
        """The drain deadline passed: every request still in flight ends here, as
        ``abandoned`` if the target has it whole, else as a cancelled unsent one."""
        for client in self.clients:
            if client.state not in _IN_FLIGHT:
                continue
            conn = client.conn
            if (
                client.state is load.SENDING
                and conn is not None
                and conn.out is None
                and (conn.state is cx.BUSY or conn.state is cx.DRAINING)
            ):
                self.s[st.REQ_ABANDONED] += 1
                client.state = load.DONE
                client.conn = None
                self.in_flight -= 1
            else:  # waiting for a connection, connecting, checking it, delayed, half written
                self._cancel(client)
