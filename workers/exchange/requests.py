"""The request path up to the wire: target, breaker, pool, send.

A client's next request picks a target (smooth weighted round-robin), passes the
target's breaker (a word in shared memory; only a breaker that is not CLOSED takes
the slow path), then does what the pool decides (:mod:`workers.pool.shard`'s typed
actions): use, probe, evict, health-check, connect, wait or back off.

There is one send path, :meth:`Requests._send`, for one request or a burst: the
closed loop with one target keeps each connection for its client's next request,
and the requests that the responses of one wakeup renewed are written back to
back once all of them are read (as wrk does: the target then works through a
burst instead of being woken for each request; on loopback that waking is paid on
our core, inside ``send``). A partial write finishes when the socket is writable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from workers.loop.eventloop import IN, OUT, TICK, Loop
from workers.loop.ports import Lane, Peers
from workers.loop.runstate import RunState
from workers.pool import client as cl
from workers.pool import connection as cx
from workers.pool.client import Client
from workers.pool.connection import CHECKING, Connection
from workers.pool.shard import BackingOff, Connect, Evict, Exhausted, Health, Probe, Use, Wait
from workers.pool.target import Target
from workers.shared.admission import REFUSE, SharedView
from workers.shared.errors import oserror_name
from workers.shared.meter import Meter
from workers.shared.shm import CODE_MASK

LATE: Final = 0.001  # open loop: a request sent this long after its intended time is late
# The moves of the request path, looked up once: connection (_C_) and client tables.
_C_CHECKOUT, _C_SEND = cx.ON["checkout"], cx.ON["send"]
_ISSUE, _ATTACH, _DELAY, _SENDS = cl.ON["issue"], cl.ON["attach"], cl.ON["delay"], cl.ON["send"]
DELAYED: Final = cl.DELAYED
SENDING: Final = cl.SENDING


class Requests:
    """Issues and sends one worker's requests (see the module docstring).

    It reaches the dialer (``peers.opening``) and the failures (``peers.settling``);
    every count goes to ``meter``."""

    __slots__ = (
        "conns",
        "deadlines",
        "lane",
        "loop",
        "meter",
        "peers",
        "read_timeout",
        "run",
        "shared",
        "targets",
        "w",
        "weights",
        "wrr",
    )

    def __init__(
        self,
        run: RunState,
        loop: Loop,
        targets: Sequence[Target],
        weights: Sequence[int],
        shared: SharedView,
        meter: Meter,
        peers: Peers,
        conns: dict[int, Connection],
        read_timeout: float,
    ) -> None:
        self.run = run
        self.loop = loop
        self.deadlines = loop.deadlines
        self.targets = targets
        # smooth weighted round-robin over the targets (nginx's): deterministic, even spacing
        self.weights = list(weights) if len(weights) == len(targets) else [1] * len(targets)
        self.wrr = [0] * len(targets)
        self.shared = shared
        self.w = shared.words  # read: the breaker rows
        self.meter = meter
        self.peers = peers
        self.conns = conns
        self.read_timeout = read_timeout
        self.lane: Lane | None = None  # the accelerated path, when this worker has one

    # Issuing ---------------------------------------------------------------------------
    def next(self, client: Client) -> None:
        """Issue ``client``'s next request, or retire it when a bound is reached."""
        run = self.run
        if client.retire or run.stopping or run.issued >= run.issue_cap:
            client.fire("retire")
            return
        if run.paused:
            client.fire("park")
            self.deadlines.arm(client, run.now + TICK)
            return
        self.issue(client, run.clock())

    def issue(self, client: Client, start: float, target: int = -1) -> None:
        """Send a request for ``client``; its latency is measured from ``start`` (the
        intended time in open loop: coordinated omission corrected). ``target``: the
        schedule's pick (open loop), else the round-robin's."""
        run = self.run
        run.issued += 1
        run.in_flight += 1
        client.state = _ISSUE[client.state]
        client.start = start
        client.retried = False
        client.target = t = target if target >= 0 else self._pick_target()
        state = self.w[self.targets[t].breaker_word]
        if state & CODE_MASK:  # not CLOSED: the slow path decides (shm.breaker_code, inline)
            verdict = self.shared.admit(t, state)
            if verdict == REFUSE:
                self.peers.settling.refuse(client)
                return
            client.trial = max(verdict, 0)
        else:
            client.trial = 0
        self.acquire(client)

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

    def acquire(self, client: Client) -> None:
        """Get the ACQUIRING ``client`` a connection as its target's pool decides."""
        target = self.targets[client.target]
        pool = target.pool
        while True:
            match pool.checkout(self.run.now, client):
                case Use(conn):
                    self.dispatch(client, conn)
                case Probe(conn):
                    dead = target.transport.probe(conn.sock)
                    if dead:
                        self.peers.opening.close(conn, dead)
                        continue
                    self.dispatch(client, conn)
                case Evict(conn, reason):
                    self.peers.opening.close(conn, reason)
                    continue
                case Health(conn):
                    self.health_check(client, conn)
                case Connect():
                    client.fire("connect")
                    self.peers.opening.connect(target, client)
                case Wait(until):
                    client.fire("wait")
                    self.deadlines.arm(client, until)
                case BackingOff(until):
                    client.fire("backoff")
                    self.deadlines.arm(client, until)
                case Exhausted():
                    self.peers.settling.fail(client, "pool", "pool_exhausted", "", False)
            return

    def dispatch(self, client: Client, conn: Connection) -> None:
        """Reserve the idle ``conn`` for ``client`` and send its request."""
        conn.state = _C_CHECKOUT[conn.state]
        client.state = _ATTACH[client.state]
        client.conn = conn
        conn.owner = client
        self._send((client,), False)
        if self.lane is not None and self.run.schedule is not None:
            self.lane.admit((client,))  # open loop: the lane takes it on (sent whole)

    def send(self, client: Client) -> None:
        """Send ``client``'s request on its RESERVED connection (after a health check,
        or a delay)."""
        self._send((client,), False)

    def send_renewed(self) -> None:
        """Send the requests that the responses of this wakeup renewed, back to back."""
        run = self.run
        queued, run.renewed = run.renewed, []
        self._send(queued, run.schedule is None)  # open loop: from the intended time
        if self.lane is not None:  # sent whole: the lane takes them on from here
            self.lane.admit(queued)

    def _send(self, batch: Sequence[Client], stamp: bool) -> None:
        """The one send path: each client's request, on its connection (RESERVED, linked
        both ways), in one ``send`` of the target's prebuilt bytes; then the read deadline.

        ``stamp``: latency starts now, at each request's own send (a renewed request was
        due when its predecessor's response came, but is sent after the wakeup's other
        responses are read). One fault draw per request; a delayed one is not drawn
        again when it goes.

        Each request is counted sent *before* the ``send`` that writes its last byte,
        and taken back if that ``send`` fails or writes part of it; ``requests.sending``
        is 1 for the whole batch. A worker killed inside it leaves at most one request
        counted and in doubt (``requests.in_doubt``), never one uncounted
        (``poolsvc.metrics.ledger``). Speed: this loop is the request path; what it reads is
        bound to locals first, and the byte and reuse counters are stored once.
        """
        run = self.run
        meter = self.meter
        clock = run.clock
        targets = self.targets
        deadline = run.now + self.read_timeout
        arm = self.deadlines.arm
        open_loop = run.schedule is not None
        inject = run.inject_requests
        out = fresh = delayed = 0  # reused = the batch less the fresh and the delayed
        hit = None
        sent = meter.sending()
        count_sent = meter.sent  # (bound once: called per request)
        for client in batch:
            conn = client.conn
            target = targets[conn.target]
            if inject:  # one draw per request: a delayed one is not drawn again
                draw = client.state is not DELAYED
                hit = run.injector.on_request(target.index, run.now) if draw else None
                if hit is not None and hit[0] == "delay":
                    meter.injected("delay")
                    client.state = _DELAY[client.state]  # the connection stays RESERVED
                    arm(client, run.now + hit[1] / 1000.0)
                    delayed += 1
                    continue
            if client.state is not SENDING:  # DELAYED goes out now (a kept one stays SENDING)
                client.state = _SENDS[client.state]
            conn.state = _C_SEND[conn.state]
            conn.complete = False  # Connection.reset_response, inline (keep_alive is set
            conn.status = 0  # by every response before anything reads it)
            conn.head = None
            conn.head_only = target.head_only
            if stamp:
                client.start = clock()
            if open_loop:  # open loop only: uncorrected latency, lateness
                client.sent_at = now = clock()
                lag = now - client.start
                if lag > LATE:
                    meter.late(lag)
            if not conn.requests:
                fresh += 1  # (rare: the reused are counted once per batch)
            data = target.request
            sent += 1
            count_sent(sent)
            send = conn.send  # (a slot: called as a method, the lookup would not specialize)
            try:
                n = send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                meter.sent(sent - 1)
                self.peers.settling.conn_failed(conn, "write", oserror_name(exc))
                sent = meter.sending()  # the failure path may have sent a request itself
                continue
            out += n
            if n != target.size:
                sent -= 1
                meter.sent(sent)
                self.write_later(conn, data, n)
            if conn.heap_when and deadline >= conn.heap_when:
                conn.deadline = deadline  # its earlier heap entry re-arms it (timers: lazy)
            else:
                arm(conn, deadline)
            if hit is not None:
                self._inject_after_send(conn, *hit)
                sent = meter.sending()  # (as above)
        meter.end_batch(len(batch) - fresh - delayed, out)

    def _inject_after_send(self, conn: Connection, kind: str, param: int) -> None:
        """reset: abort with RST now; timeout: stop reading, so the read deadline fires
        (after ``param`` ms, or the configured read timeout when it is 0)."""
        if self.conns.get(conn.fd) is not conn:
            return  # the send itself failed: the fault has nothing left to hit
        self.meter.injected(kind)
        conn.injected = kind
        if kind == "reset":
            self.targets[conn.target].transport.reset(conn.sock)  # the close sends RST
            self.peers.settling.conn_failed(conn, "read", "ECONNRESET")
        else:
            self.loop.set(conn.fd, 0)  # nothing is read from it any more
            if param:
                self.deadlines.arm(conn, self.run.now + param / 1000.0)

    def write_later(self, conn: Connection, data: bytes, n: int) -> None:
        """Only ``n`` bytes went out: the rest goes when the socket is writable."""
        conn.out = memoryview(data)[n:]
        self.loop.set(conn.fd, IN | OUT)

    def flush(self, conn: Connection) -> None:
        """The socket is writable: send the rest of a partly written request (counted
        sent as in :meth:`_send`) or health check (not counted)."""
        out = conn.out
        assert out is not None
        meter = self.meter
        counted = conn.state is not CHECKING
        if counted:
            meter.send_one()
        try:
            n = conn.send(out)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if counted:
                meter.take_back()
            self.peers.settling.conn_failed(conn, "write", oserror_name(exc))
            return
        meter.bytes_out(n)
        if n < len(out):
            conn.out = out[n:]
            if counted:
                meter.take_back(sending=True)
        else:
            conn.out = None
            self.loop.set(conn.fd, IN)
        if counted:
            meter.sent_done()

    def health_check(self, client: Client, conn: Connection) -> None:
        """Send the target's health-check request on ``conn`` before ``client`` uses it."""
        target = self.targets[conn.target]
        conn.fire("checkout")
        conn.fire("check")
        client.fire("attach")
        client.conn = conn
        conn.owner = client
        conn.reset_response(target.health_head_only)
        self.meter.health_check()
        data = target.health_request
        try:
            n = conn.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.peers.settling.conn_failed(conn, "write", oserror_name(exc))
            return
        self.meter.bytes_out(n)
        if n < len(data):
            self.write_later(conn, data, n)
        self.deadlines.arm(conn, self.run.now + self.read_timeout)

    def __repr__(self) -> str:
        return f"<Requests targets={len(self.targets)} weights={self.weights}>"
