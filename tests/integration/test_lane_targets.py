"""The lane over several targets, on its own (as tests/integration/test_lane_handback.py):
each member renews from its own target's share of the schedule, with its target's
request and words, and a target whose own conditions stop holding takes its members
back while the other target's stay in the lane.
"""

from __future__ import annotations

import select
import socket
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
from workers.shared.histogram import BUCKETS

pytestmark = [pytest.mark.integration]
REQUESTS = (b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /bb HTTP/1.1\r\nHost: u\r\n\r\n")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def a_target(shared: SharedView, t: int) -> Any:
    """Target ``t`` as the lane reads it: a plain record, with a block of its own."""
    settings = SimpleNamespace(
        max_size=1, max_requests=0, idle_timeout=30.0, validate_after=5.0, health_after=0.0
    )
    pool = SimpleNamespace(
        backoff=SimpleNamespace(attempt=0), waiters=[], size=1, settings=settings
    )
    block = shared.targets[t]
    return SimpleNamespace(
        pool=pool, consec=0, last_ok=0.0, request=REQUESTS[t], breaker_word=shared.brk[t],
        ok_word=block + shm.T_OK, own=True, block=block, hist=block + shm.T_HIST,
    )  # fmt: skip


class TwoRig:
    """One lane, one member connection per target, and each target's end of its socket.
    The schedule: 100 requests/s from 0.2 s on, picks (0, 0, 1): requests 0, 1, 3, 4, ...
    are target 0's, requests 2, 5, ... target 1's."""

    def __init__(self) -> None:
        if not lane.ACCELERATED:
            pytest.fail(f"the accelerated path is not available: {lane.path()}")
        self.ep = select.epoll()
        self.shared = SharedView.private(2)
        self.targets = [a_target(self.shared, t) for t in (0, 1)]
        self.schedule = Schedule(100.0, time.monotonic() + 0.2, picks=(0, 0, 1))
        self.run: Any = SimpleNamespace(
            keeping=False, stopping=False, paused=False, inject_requests=False,
            stop_requested=False, schedule=self.schedule, issued=2, issue_cap=float("inf"),
            end_at=0.0, in_flight=2,
        )  # fmt: skip
        self.deadlines = Deadlines()
        self.lane = lane.build(
            self.ep.fileno(), self.run, self.targets, self.shared, LoopSettings(), 5.0,
            self.deadlines,
        )  # fmt: skip
        self.peers: list[socket.socket] = []
        self.conns: list[Connection] = []
        self.clients: list[Client] = []
        for t in (0, 1):
            listener = socket.create_server(("127.0.0.1", 0))
            ours = socket.create_connection(listener.getsockname())
            peer, _ = listener.accept()
            listener.close()
            ours.setblocking(False)
            self.ep.register(ours.fileno(), select.EPOLLIN)
            conn = Connection(ours, t)
            conn.state, conn.requests = BUSY, 1
            client = Client(t)
            client.state, client.conn, conn.owner = cl.SENDING, conn, client
            client.start = 1.0
            self.deadlines.arm(conn, 1e9)
            self.peers.append(peer)
            self.conns.append(conn)
            self.clients.append(client)
        assert self.lane.admit(self.clients) == 2

    def word(self, t: int, at: int) -> int:
        return int(self.shared.words[self.shared.targets[t] + at])

    def read(self, t: int, size: int) -> bytes:
        got = b""
        self.peers[t].settimeout(5)
        while len(got) < size:
            got += self.peers[t].recv(size - len(got))
        return got

    def close(self) -> None:
        self.lane.close()
        self.ep.close()
        for s in [*self.peers, *(c.sock for c in self.conns)]:
            s.close()


@pytest.fixture
def rig() -> Iterator[TwoRig]:
    r = TwoRig()
    yield r
    r.close()


def test_each_member_takes_its_own_targets_request_when_due(rig: TwoRig) -> None:
    for peer in rig.peers:
        peer.sendall(RESPONSE)
    assert rig.lane.poll(0.05) == []
    assert rig.lane.parked == 2 and rig.run.in_flight == 0  # counted, both idle in the lane
    for t in (0, 1):  # each target's own figures, and its breaker's ok
        assert rig.word(t, shm.T_RESP_OK) == 1 == rig.word(t, shm.T_OK)
        assert sum(rig.shared.words[rig.targets[t].hist : rig.targets[t].hist + BUCKETS]) == 1
        assert rig.targets[t].last_ok > 0
    # target 0's next request is the schedule's request 0, target 1's its request 2:
    # each goes out when due, on its own connection (the poll runs to its timeout)
    assert rig.lane.poll(0.5) == [] and rig.lane.parked == 0
    assert rig.read(0, len(REQUESTS[0])) == REQUESTS[0]
    assert rig.read(1, len(REQUESTS[1])) == REQUESTS[1]  # its own request, its own bytes
    assert rig.clients[0].start == rig.schedule.due(0)
    assert rig.clients[1].start == rig.schedule.due(2)
    assert rig.schedule.k == [1, 1] and rig.run.issued == 4 and rig.run.in_flight == 2
    assert rig.shared.slot[stats.INDEX["bytes.out"]] == sum(map(len, REQUESTS))
    assert rig.shared.slot[stats.INDEX["requests.ok"]] == 2


def test_a_target_whose_conditions_end_takes_its_members_back(rig: TwoRig) -> None:
    """Target 1 enters a failure streak (its next success is the Python path's): its
    parked member goes back to be checked in, and its response in flight is returned
    as an event, unread; target 0's stay the lane's."""
    for peer in rig.peers:
        peer.sendall(RESPONSE)
    rig.lane.poll(0.05)
    assert rig.lane.parked == 2
    rig.targets[1].consec = 1
    assert rig.lane.poll(1.0) == []  # at once: the Python path checks it in
    assert rig.lane.take() == [(rig.conns[1], "parked", None)]
    assert rig.lane.members() == 1 and rig.lane.parked == 1  # target 0's, still parked
    # target 0's request goes out when due, from the lane
    deadline = time.monotonic() + 2
    while rig.lane.parked and time.monotonic() < deadline:
        rig.lane.poll(0.1)
    assert rig.read(0, len(REQUESTS[0])) == REQUESTS[0]
    # target 1's connection, back in flight and admitted again, answers while the
    # streak lasts: the event is the Python path's, nothing counted
    rig.conns[1].state, rig.clients[1].state = BUSY, cl.SENDING
    assert rig.lane.admit([rig.clients[1]]) == 1
    rig.peers[1].sendall(RESPONSE)
    events = rig.lane.poll(1.0)
    assert events == [(rig.conns[1].fd, select.EPOLLIN)]
    assert rig.word(1, shm.T_RESP_OK) == 1 and rig.lane.members() == 1
    assert rig.conns[1].sock.recv(100) == RESPONSE  # still there for the Python path
