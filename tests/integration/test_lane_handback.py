"""The lane on its own, over a real loopback TCP connection: what it counts, what it
sends, and each way it hands a connection back to the Python path.

The worker's parts are left out: the lane gets a connection and a client of the
real classes, a run, a target and a pool as plain records, and this test plays
the target on the other end of the socket.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from workers.lane import fastpath as lane
from workers.loop.loadshape import Schedule
from workers.loop.timers import Deadlines
from workers.loop.workerspec import LoopSettings
from workers.pool import client as cl
from workers.pool.client import Client
from workers.pool.connection import BUSY, Connection
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.shared.admission import SharedView

pytestmark = [pytest.mark.integration]
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
RESET = (errno.ECONNRESET, errno.EPIPE)


class Rig:
    """One lane, one member connection, and the target's end of its socket."""

    def __init__(self, request: bytes = REQUEST) -> None:
        if not lane.ACCELERATED:
            pytest.fail(f"the accelerated path is not available: {lane.path()}")
        listener = socket.create_server(("127.0.0.1", 0))
        ours = socket.create_connection(listener.getsockname())
        self.peer, _ = listener.accept()
        listener.close()
        ours.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(ours.fileno(), select.EPOLLIN)
        self.shared = SharedView.private(1)
        self.run = SimpleNamespace(
            keeping=True, stopping=False, paused=False, inject_requests=False,
            stop_requested=False, schedule=None, issued=1, issue_cap=float("inf"),
        )  # fmt: skip
        settings = SimpleNamespace(max_size=1, max_requests=0)
        pool = SimpleNamespace(backoff=SimpleNamespace(attempt=0), waiters=[], size=1)
        pool.settings = settings
        self.target: Any = SimpleNamespace(
            pool=pool, consec=0, last_ok=0.0, request=request,
            breaker_word=self.shared.brk[0], ok_word=self.shared.targets[0] + shm.T_OK,
            own=False, block=0, hist=0,
        )  # fmt: skip
        self.deadlines = Deadlines()
        self.lane = lane.build(
            self.ep.fileno(), self.run, [self.target], self.shared, LoopSettings(), 5.0,
            self.deadlines,
        )  # fmt: skip
        self.conn = Connection(ours, 0)
        self.conn.state = BUSY
        self.conn.requests = 1
        self.client = Client(0)
        self.client.state = cl.SENDING
        self.client.conn, self.conn.owner = self.conn, self.client
        self.client.start = 1.0
        self.deadlines.arm(self.conn, 1e9)
        assert self.lane.admit([self.client]) == 1

    def counter(self, name: str) -> int:
        return int(self.shared.slot[stats.INDEX[name]])

    def read_request(self, size: int) -> bytes:
        got = b""
        self.peer.settimeout(5)
        while len(got) < size:
            got += self.peer.recv(size - len(got))
        return got

    def close(self) -> None:
        self.lane.close()
        self.ep.close()
        self.conn.sock.close()
        self.peer.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_a_whole_response_is_counted_and_the_next_request_goes_out(rig: Rig) -> None:
    for n in range(1, 4):
        rig.peer.sendall(RESPONSE)
        assert rig.lane.poll(1.0) == []  # nothing left to the Python path
        assert rig.read_request(len(REQUEST)) == REQUEST  # exactly the request, renewed
        assert rig.counter("requests.ok") == n == rig.counter("requests.sent")
    assert rig.lane.take() == []
    assert rig.counter("bytes.in") == 3 * len(RESPONSE)
    assert rig.counter("bytes.out") == 3 * len(REQUEST)
    assert rig.counter("connections.reused") == 3
    assert rig.shared.slot[stats.STATUS_BASE + 200] == 3
    assert rig.shared.words[rig.target.ok_word] == 3
    # written back on return: what the Python path would have written itself
    assert rig.conn.requests == 4 and rig.run.issued == 4
    assert rig.client.start > 1.0 and rig.conn.deadline > rig.client.start
    assert rig.target.last_ok > 0 and rig.lane.handled == 3


def test_what_it_does_not_recognise_goes_back_whole_and_uncounted(rig: Rig) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    rig.peer.sendall(chunked)
    assert rig.lane.poll(1.0) == []
    assert rig.lane.take() == [(rig.conn, "data", chunked)]
    assert rig.counter("requests.ok") == rig.counter("bytes.in") == 0
    assert rig.lane.members() == 0  # the Python path's now


def test_eof_goes_back_as_an_empty_read(rig: Rig) -> None:
    rig.peer.shutdown(socket.SHUT_WR)
    rig.lane.poll(1.0)
    assert rig.lane.take() == [(rig.conn, "data", b"")]


def test_a_reset_goes_back_as_its_errno(rig: Rig) -> None:
    rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rig.peer.close()  # RST
    rig.lane.poll(1.0)
    [(conn, kind, value)] = rig.lane.take()
    assert (conn, kind) == (rig.conn, "error") and value in RESET


def test_a_failed_send_is_taken_back_and_handed_over(rig: Rig) -> None:
    # The response, then a reset before our next request can go.
    rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rig.peer.sendall(RESPONSE)
    rig.peer.close()
    [(conn, kind, value)] = _until_taken(rig)
    # The response was read and counted; the renewed request's send met the reset.
    assert (conn, kind) == (rig.conn, "send_error") and value in RESET
    assert rig.counter("requests.ok") == 1
    assert rig.counter("requests.sent") == 0  # counted, then taken back
    assert rig.shared.slot[stats.SENDING_FLAG] == 0
    assert rig.conn.deadline == 0.0  # disarmed, as response_done leaves it


def test_a_partial_write_goes_back_with_what_went_out() -> None:
    rig = Rig(
        request=b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 4_000_000
    )
    try:
        rig.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        rig.peer.sendall(RESPONSE)
        rig.lane.poll(1.0)
        [(conn, kind, sent)] = rig.lane.take()
        assert (conn, kind) == (rig.conn, "partial") and 0 <= sent < len(rig.target.request)
        assert rig.counter("requests.sent") == 0  # counted when its last byte goes
        assert rig.counter("bytes.out") == sent and rig.counter("requests.ok") == 1
        assert rig.conn.deadline > 0  # armed as the Python path arms it after a send
    finally:
        rig.close()


def test_outside_the_steady_state_it_is_a_plain_poll(rig: Rig) -> None:
    rig.run.paused = True
    rig.peer.sendall(RESPONSE)
    events = rig.lane.poll(1.0)
    assert events == [(rig.conn.fd, select.EPOLLIN)]  # the Python path's to read
    assert rig.lane.members() == 0 and rig.counter("requests.ok") == 0


def test_a_breaker_that_is_not_closed_sends_the_response_back(rig: Rig) -> None:
    rig.shared.words[rig.target.breaker_word] = 1  # OPEN (any code but CLOSED)
    rig.peer.sendall(RESPONSE)
    rig.lane.poll(1.0)
    assert rig.lane.take() == [(rig.conn, "data", RESPONSE)]
    assert rig.counter("requests.ok") == 0


def test_the_request_bound_sends_the_last_response_back(rig: Rig) -> None:
    rig.run.issue_cap = 1  # issued already: no more requests
    rig.peer.sendall(RESPONSE)
    rig.lane.poll(1.0)
    assert rig.lane.take() == [(rig.conn, "data", RESPONSE)]


def _until_taken(rig: Rig) -> list[tuple[Any, str, Any]]:
    for _ in range(20):
        rig.lane.poll(0.2)
        taken = rig.lane.take()
        if taken:
            return taken
    raise AssertionError("nothing was handed back")


def test_a_re_sent_request_or_a_trial_stays_with_the_python_path() -> None:
    """A renewal in the Python path clears ``retried`` and ``trial``; the lane's do
    not touch them, so a client with either set is not admitted."""
    rig = Rig()
    try:
        assert rig.lane.members() == 1
        rig.lane.close()
        for name, value, default in (("retried", True, False), ("trial", 2, 0)):
            rig.lane = lane.build(
                rig.ep.fileno(), rig.run, [rig.target], rig.shared, LoopSettings(), 5.0,
                rig.deadlines,
            )  # fmt: skip
            setattr(rig.client, name, value)
            assert rig.lane.admit([rig.client]) == 0, name
            setattr(rig.client, name, default)
            assert rig.lane.admit([rig.client]) == 1
            rig.lane.close()
    finally:
        rig.close()


def test_a_busy_lane_returns_by_its_timeout() -> None:
    """However busy its members keep it, the lane gives the loop back its turn in time
    (a warm-up's end, a tick): here a target that answers every request at once."""
    rig = Rig()
    stop = threading.Event()

    def serve() -> None:
        rig.peer.settimeout(5)
        while not stop.is_set():
            try:
                rig.read_request(len(REQUEST))
                rig.peer.sendall(RESPONSE)
            except OSError:
                return

    server = threading.Thread(target=serve, daemon=True)
    try:
        rig.peer.sendall(RESPONSE)
        server.start()
        started = time.monotonic()
        assert rig.lane.poll(0.2) == []
        took = time.monotonic() - started
        assert rig.lane.handled > 10  # it was busy all along
        assert 0.2 <= took < 0.2 + 0.5  # (the spin may end a little after the timeout)
    finally:
        stop.set()
        rig.close()
        server.join(5)


# The open loop: a response with no request due parks its connection in the lane -------
@pytest.fixture
def open_rig(rig: Rig) -> Rig:
    """The rig in an open loop whose next request falls due 0.3 s from now."""
    rig.run.keeping = False  # (only the closed loop renews on it)
    rig.run.schedule = Schedule(10.0, time.monotonic() + 0.3)
    rig.run.end_at, rig.run.in_flight = 0.0, 1
    settings = rig.target.pool.settings
    settings.idle_timeout, settings.validate_after, settings.health_after = 30.0, 5.0, 0.0
    return rig


def test_a_parked_connection_takes_the_request_when_it_falls_due(open_rig: Rig) -> None:
    rig = open_rig
    due = rig.run.schedule.due(0)
    rig.peer.sendall(RESPONSE)
    assert rig.lane.poll(0.05) == []
    # counted, the request over, its connection idle in the lane: nothing sent yet
    assert rig.counter("requests.ok") == 1 and rig.run.in_flight == 0
    assert rig.lane.parked == 1 and rig.lane.take() == []
    rig.peer.settimeout(0.01)
    with pytest.raises(TimeoutError):
        rig.peer.recv(1)
    assert rig.lane.poll(1.0) == []  # returns once the request is due, and sent
    assert rig.read_request(len(REQUEST)) == REQUEST
    assert time.monotonic() >= due
    assert (rig.lane.parked, rig.run.in_flight, rig.run.issued) == (0, 1, 2)
    assert rig.run.schedule.k == [1] and rig.client.start == due  # latency from its time
    assert rig.client.sent_at >= due and rig.counter("requests.sent") == 1


def test_a_parked_connection_goes_back_when_the_steady_state_ends(open_rig: Rig) -> None:
    rig = open_rig
    rig.peer.sendall(RESPONSE)
    rig.lane.poll(0.05)
    assert rig.lane.parked == 1
    rig.run.paused = True
    assert rig.lane.poll(1.0) == []  # at once: the Python path checks it in
    assert rig.lane.take() == [(rig.conn, "parked", None)]
    assert rig.lane.members() == rig.lane.parked == 0


def test_an_event_on_a_parked_connection_hands_it_back_unread(open_rig: Rig) -> None:
    rig = open_rig
    rig.peer.sendall(RESPONSE)
    rig.lane.poll(0.05)
    rig.peer.shutdown(socket.SHUT_WR)  # the target closes the idle connection
    rig.lane.poll(1.0)
    assert rig.lane.take() == [(rig.conn, "parked", None)]
    assert rig.conn.sock.recv(10) == b""  # still there for the Python path to read


def test_no_busy_polling_while_a_connection_is_parked(open_rig: Rig) -> None:
    """Ahead of its schedule the lane sleeps until the next request is due: a spin
    there would burn the core between requests (CPU time, not wall time, is measured)."""
    rig = open_rig
    rig.peer.sendall(RESPONSE)
    rig.lane.poll(0.05)
    assert rig.lane.parked == 1
    rig.lane.spin = 0.15
    cpu = time.process_time()
    assert rig.lane.poll(0.15) == []  # (the request is due at 0.3 s: a wait for nothing)
    assert time.process_time() - cpu < 0.05
