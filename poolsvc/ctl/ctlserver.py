"""The control socket: a Unix stream server living inside the supervisor's selector loop.

Nothing one client does can block the supervisor, grow its memory or keep
another client out:

- every socket is non-blocking, and the peers are kept by the core both servers share
  (:class:`poolsvc.ctl.bounded.Peers`: admission, the selector, writes, drops);
- **input is bounded**: a line longer than ``control.MAX_LINE`` is refused and
  skipped up to its newline, and once ``MAX_INBUF`` bytes of requests wait to be
  answered, or ``PAUSE_OUT`` bytes of replies wait to be read, the server stops
  reading from that client (the kernel's buffer fills and the client's writes
  block) until it has caught up;
- **output is bounded** by ``MAX_PENDING_OUT``; a client past it is dropped;
- each loop step answers at most ``LINES_PER_TURN`` requests per client (the rest
  wait for the next step, :meth:`ControlServer.service`);
- **timeouts are on progress, not on bytes**: a request line must be whole within
  ``request_timeout`` of its first byte, a client that asks nothing is closed
  after ``idle_timeout``, and one that reads none of its pending replies for
  ``write_timeout`` is dropped (:meth:`ControlServer.sweep`);
- **admission keeps a slot for a newcomer**: at most ``max_clients`` are
  connected; when one more arrives, the client that has made no progress for the
  longest (at least ``EVICT_AFTER``: an idle one, a half-sent line, replies it
  does not read) is evicted to make room. If every client is busy, the newcomer
  waits in the listen queue (the listener is paused) instead of being refused.

Access control, in layers:

- the socket lives in a directory that is ours and closed to others (0700);
- the socket itself is created 0600, under a umask, with no window in which it
  is open to others;
- every peer is checked with ``SO_PEERCRED``: it must be our uid or root. This
  check holds even if someone loosens the modes on the socket or its directory.

And nothing that is not ours is ever removed: an existing path is replaced only
if it is a socket of ours that nothing answers on any more
(:func:`poolsvc.ctl.sockpath.claim`).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from poolsvc.ctl.bounded import Peers
from poolsvc.ctl.protocol import MAX_LINE, ControlError, decode, reply_error, reply_ok
from poolsvc.ctl.sockpath import claim, peer_uid, trusted_uid

MAX_PENDING_OUT: Final = 16 * 1024 * 1024
MAX_INBUF: Final = 4 * MAX_LINE  # unanswered requests buffered per client, at most
LINES_PER_TURN: Final = 8  # requests answered per client per loop step: nobody starves the loop
PAUSE_OUT: Final = 1024 * 1024  # a client this far behind on reading gets no more answers yet
EVICT_AFTER: Final = 1.0  # a client without progress this long may make room for a newcomer

Handler = Callable[[str, dict[str, Any]], Any]


class Deferred:
    """Returned by a handler whose answer comes later (e.g. an audit across workers);
    the reply is sent when :meth:`resolve` is called, if the client is still there."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []

    def on_result(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def resolve(self, data: Any) -> None:
        for callback in self._callbacks:
            callback(data)


class _Client:
    __slots__ = (
        "awaiting",
        "discarding",
        "events",
        "inbuf",
        "line_started",
        "outbuf",
        "progress",
        "sent_at",
        "sock",
    )

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discarding = False  # inside an oversized line: drop bytes up to the newline
        self.events = 0  # what the selector watches for it (0: not registered)
        self.progress = now  # the last whole request received, or reply byte sent
        self.line_started = 0.0  # when the first byte of an unfinished line came (0: none)
        self.sent_at = now  # the last time a reply byte left
        self.awaiting = 0  # deferred replies still to come (an audit)

    def idle_since(self, now: float) -> float:
        """How long it has made no progress (0 while it waits on us)."""
        if self.awaiting or (b"\n" in self.inbuf and not self.outbuf):
            return 0.0  # it asked; we owe it an answer
        return now - (self.sent_at if self.outbuf else self.progress)


class ControlServer:
    """Serves ``handler(cmd, args) -> data`` on a Unix socket at ``path``."""

    def __init__(
        self,
        path: Path,
        sel: selectors.BaseSelector,
        handler: Handler,
        clock: Callable[[], float],
        max_clients: int = 16,
        idle_timeout: float = 60.0,
        request_timeout: float = 10.0,
        write_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self.handler = handler
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.backlog: set[_Client] = set()  # clients with requests not answered yet
        self.peers: Peers[_Client] = Peers(
            self._listen(), sel, clock, _Client, self._ready, self._victim, max_clients,
            full="wait", admit=_admit, on_evict=self._evicted,
        )  # fmt: skip

    def _listen(self) -> socket.socket:
        claim(self.path)  # raises unless the path is free, or a stale socket of ours
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: never a moment open to others
        try:
            listener.bind(str(self.path))
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        listener.listen(128)
        return listener

    # admission ----------------------------------------------------------------------
    def _victim(self, now: float) -> _Client | None:
        """The client without progress for the longest, if that is EVICT_AFTER or more;
        None if every client is busy."""
        victim = max(self.peers, key=lambda c: c.idle_since(now))
        return victim if victim.idle_since(now) >= EVICT_AFTER else None

    def _evicted(self, client: _Client) -> None:
        self.peers.say(
            client.sock, reply_error(None, "busy", "closed to make room for a new client")
        )

    # events -------------------------------------------------------------------------
    def _ready(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and not self._flush(client):
            return
        if mask & selectors.EVENT_READ:
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(client)
                return
            if not client.line_started:  # the first byte of a request: its time starts
                client.line_started = self.clock()
            client.inbuf += data
            self._work(client)

    def service(self) -> None:
        """Answer more of the buffered requests (called once per supervisor loop step)."""
        for client in list(self.backlog):
            self.backlog.discard(client)
            if self.peers.holds(client):
                self._work(client)

    def _work(self, client: _Client) -> None:
        buf = client.inbuf
        for _ in range(LINES_PER_TURN):
            if len(client.outbuf) > PAUSE_OUT:
                break  # let it read first: _flush puts it back in the backlog
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_LINE and not client.discarding:
                    self._queue(
                        client, reply_error(None, "too_large", f"line over {MAX_LINE} bytes")
                    )
                    client.discarding = True
                if client.discarding:
                    buf.clear()
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            client.progress = self.clock()
            client.line_started = client.progress if buf else 0.0
            if client.discarding:  # the tail of an oversized line
                client.discarding = False
                continue
            if line.strip():
                reply = self._answer(client, line)
                if reply is not None:
                    self._queue(client, reply)
            if not self.peers.holds(client):
                return  # dropped meanwhile
        if b"\n" in buf:
            self.backlog.add(client)
        self._watch(client)

    def _answer(self, client: _Client, line: bytes) -> bytes | None:
        ident: Any = None
        try:
            ident, cmd, args = decode(line)
            data = self.handler(cmd, args)
            if isinstance(data, Deferred):
                client.awaiting += 1
                data.on_result(lambda result: self._later(client, reply_ok(ident, result)))
                return None
            return reply_ok(ident, data)
        except ControlError as exc:
            return reply_error(ident, exc.code, exc.message)
        except Exception as exc:  # a bug in a handler must not take the service down
            return reply_error(ident, "internal", f"{type(exc).__name__}: {exc}")

    def _later(self, client: _Client, reply: bytes) -> None:
        client.awaiting -= 1
        if self.peers.holds(client):
            self._queue(client, reply)
            self._watch(client)

    def _queue(self, client: _Client, reply: bytes) -> None:
        if not client.outbuf:
            client.sent_at = self.clock()  # the write timeout counts from here
        client.outbuf += reply
        if len(client.outbuf) > MAX_PENDING_OUT:
            self._drop(client)  # it does not read its replies
            return
        self._flush(client)

    def _flush(self, client: _Client) -> bool:
        """Send what we can; False if the client was dropped."""
        sent = self.peers.send(client)
        if sent < 0:
            self.backlog.discard(client)
            return False
        if sent:
            client.progress = client.sent_at = self.clock()
        if len(client.outbuf) <= PAUSE_OUT and b"\n" in client.inbuf:
            self.backlog.add(client)  # it reads again: answer what it asked meanwhile
        self._watch(client)
        return True

    def _watch(self, client: _Client) -> None:
        """Read while it has room for more (requests and replies both bounded), write
        while replies wait; the selector watches exactly that."""
        read = len(client.inbuf) <= MAX_INBUF and len(client.outbuf) <= PAUSE_OUT
        events = (selectors.EVENT_READ if read else 0) | (
            selectors.EVENT_WRITE if client.outbuf else 0
        )
        self.peers.watch(client, events)

    def _drop(self, client: _Client) -> None:
        self.backlog.discard(client)
        self.peers.drop(client)

    def sweep(self, now: float) -> None:
        """Drop clients that make no progress: a request line not whole within
        ``request_timeout`` of its first byte, replies unread for ``write_timeout``,
        nothing asked for ``idle_timeout``. Then resume accepting if there is room."""
        for client in self.peers:
            unfinished = client.line_started and b"\n" not in client.inbuf
            if unfinished and now - client.line_started > self.request_timeout:
                self.peers.say(
                    client.sock,
                    reply_error(None, "bad_request", "request line not finished in time"),
                )
                self._drop(client)
            elif client.outbuf and now - client.sent_at > self.write_timeout:
                self._drop(client)  # it does not read what it asked for
            elif not client.line_started and client.idle_since(now) > self.idle_timeout:
                self._drop(client)
        peers = self.peers
        if not peers.accepting and (
            len(peers) < peers.max_clients or any(c.idle_since(now) >= EVICT_AFTER for c in peers)
        ):
            peers.accept_new(True)

    def close(self) -> None:
        self.backlog.clear()
        self.peers.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __repr__(self) -> str:
        return f"<ControlServer {self.path} {self.peers} backlog={len(self.backlog)}>"


def _admit(sock: socket.socket) -> bytes | None:
    """Our uid or root may use the socket (``SO_PEERCRED``): a refusal line otherwise."""
    uid = peer_uid(sock)
    if trusted_uid(uid):
        return None
    return reply_error(None, "forbidden", f"uid {uid} may not use this socket")
