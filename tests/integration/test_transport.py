"""The transport seam: every socket operation of the worker goes through its transport.

A recording transport counts what passes through it, over real loopback sockets to
the embedded target; a second one writes at most a few bytes per call (as a TLS
transport may) and the request path, unchanged, still delivers every request whole.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import pytest

from poolsvc.config import loader as config
from poolsvc.config import plan
from poolsvc.target import TargetServer
from workers.net.transport import Plain, Recv, Send
from workers.shared import slotstats as stats
from workers.shared.admission import SharedView
from workers.worker import build_worker

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("both_paths")]


class Recording(Plain):
    """Plain TCP that counts every call and every byte (``chunk``: the most one send
    may write, to stand for a transport that writes in pieces)."""

    def __init__(self, chunk: int = 0) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.chunk = chunk

    def open(self, family: int) -> socket.socket:
        self.calls["open"] += 1
        return super().open(family)

    def connect(self, sock: socket.socket, addr: tuple[Any, ...]) -> int:
        self.calls["connect"] += 1
        return super().connect(sock, addr)

    def connected(self, sock: socket.socket) -> int:
        self.calls["connected"] += 1
        return super().connected(sock)

    def streams(self, sock: socket.socket) -> tuple[Send, Recv]:
        self.calls["streams"] += 1

        def send(data: Any) -> int:
            part = data[: self.chunk] if self.chunk else data
            n = sock.send(part)
            self.bytes["out"] += n
            return n

        def recv(size: int) -> bytes:
            data = sock.recv(size)
            self.bytes["in"] += len(data)
            return data

        return send, recv

    def probe(self, sock: socket.socket) -> str:
        self.calls["probe"] += 1
        return super().probe(sock)

    def close(self, sock: socket.socket, notify: bool = False) -> None:
        self.calls["close"] += 1
        super().close(sock, notify)


def run_with(transport: Recording, target: TargetServer, **values: Any) -> stats.Snapshot:
    cfg = config.build({"host": target.host, "port": target.port, **values}, {})
    run = plan.resolve(cfg, [(target.host, target.port)], seed=1, n=1)
    worker = build_worker(run.spec(run.shards[0]), SharedView.private(1), transport=transport)
    worker.run()
    return stats.Snapshot.of([worker.s])


def test_every_connect_read_write_and_close_goes_through_the_transport(
    target: TargetServer,
) -> None:
    rec = Recording()
    snap = run_with(rec, target, requests=300, pool_size=4, duration_s=20.0)
    c = snap.counters
    assert c["requests.ok"] == c["requests.sent"] == 300 == target.stats()["requests"]
    assert rec.calls["open"] == rec.calls["connect"] == c["connections.attempted"] >= 4
    assert rec.calls["streams"] == rec.calls["open"]  # each connection reads and writes by it
    assert rec.calls["close"] == rec.calls["open"]  # and is closed by it, every one
    assert rec.bytes["out"] == c["bytes.out"] > 0
    assert rec.bytes["in"] == c["bytes.in"] > 0


def test_a_transport_that_writes_in_pieces_still_delivers_every_request_whole(
    target: TargetServer,
) -> None:
    rec = Recording(chunk=7)  # a GET of ~80 bytes goes out in a dozen sends
    snap = run_with(rec, target, requests=60, pool_size=2, duration_s=20.0)
    c = snap.counters
    assert c["requests.ok"] == c["requests.sent"] == 60 == target.stats()["requests"]
    assert c["requests.failed"] == c["requests.unsent"] == 0
    assert rec.bytes["out"] == c["bytes.out"]
