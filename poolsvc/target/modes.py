"""Shared state of one target process (:class:`Target`): modes, counters, listener,
connections.

Modes live in one shared object that every connection consults at each request
(hang, reset, delays) or each response (close/HTTP/1.0 framing), so they apply
to connections that already exist.  The control channel
(:mod:`poolsvc.target.steering`) changes them and reads the counters; it also
takes the listener down and up through :meth:`Target.unlisten`,
:meth:`Target.listen` and :meth:`Target.restart`.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from poolsvc.target.dataconn import DataConnection
from poolsvc.target.replies import Counters, Modes


class Target:
    """Shared state of one target process: modes, counters, listener, connections."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls  # the data port speaks TLS with this context (None: plain)
        self.modes, self.counters = Modes(), Counters()
        self._conns: set[DataConnection] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()
        self._server: asyncio.Server | None = None
        self._relisten: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    def attach(self, conn: DataConnection) -> None:
        self._conns.add(conn)
        self._none_open.clear()
        self.counters.connections += 1
        self.counters.open += 1

    def detach(self, conn: DataConnection) -> None:
        self._conns.discard(conn)
        self.counters.open -= 1
        if not self._conns:
            self._none_open.set()

    async def listen(self) -> None:
        """Listen on self.port (0 at first: the kernel picks, and we keep that port)."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: DataConnection(self),
                self.host,
                self.port,
                reuse_address=True,
                backlog=1024,
                ssl=self.tls,
            )
            self.port = self._server.sockets[0].getsockname()[1]

    def unlisten(self) -> None:
        """Close the listening socket now; a pending re-listen is cancelled."""
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close_all(self) -> None:
        """Close every data connection and wait until they are gone."""
        for conn in list(self._conns):
            conn.close()
        try:
            await asyncio.wait_for(self._none_open.wait(), 1.0)
        except TimeoutError:  # peers not reading our output: stop waiting for the flush
            for conn in list(self._conns):
                conn.abort()
            await self._none_open.wait()

    def rearm_idle(self) -> None:
        """Re-arm every connection's idle-close timer: call it after the modes changed."""
        for conn in self._conns:
            conn.rearm_idle()

    async def restart(self, down_ms: int) -> None:
        """Close the listener and every connection; listen again after ``down_ms``."""
        self.unlisten()
        await self.close_all()
        self._relisten = asyncio.create_task(self._listen_after(down_ms))

    async def _listen_after(self, down_ms: int) -> None:
        await asyncio.sleep(down_ms / 1000)
        self._relisten = None
        try:
            await self.listen()
        except OSError as exc:  # somebody took the port meanwhile: report, stay down
            print(f"target: re-listen on port {self.port} failed: {exc}", file=sys.stderr)
