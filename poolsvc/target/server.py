"""Embedded HTTP/1.1 target server that misbehaves on command, for real.

Theory of operation
-------------------
One asyncio process (stdlib loop, no uvloop) serves two loopback listeners:

* the *data port*: a hand-parsed HTTP/1.1 keep-alive server built on
  ``asyncio.Protocol``.  Each connection owns a byte buffer; complete requests
  (head found with ``find(b"\\r\\n\\r\\n")`` plus a Content-Length body) are taken
  off it one at a time, so pipelined requests are answered strictly in order:
  while a response is pending (delayed) the rest of the buffer waits.
* the *control port*: newline-delimited JSON commands that change the shared
  misbehaviour modes, read the counters, or take the listener down and up.

Modes live in one shared object that every connection consults at each request
(hang, reset, delays) or each response (close/HTTP/1.0 framing), so they apply
to connections that already exist.  Every effect is produced by the kernel:
``hang`` simply never writes, ``reset`` sets SO_LINGER {1, 0} and aborts (close
with zero linger makes the kernel send RST, the peer sees ECONNRESET),
``idle_close_ms`` and ``restart`` do an ordinary close (FIN), and while the
listener is closed the kernel refuses connects (ECONNREFUSED).

A connection that was hung stays hung after ``hang`` is cleared: its request is
never answered and later bytes on it are discarded.  New requests on other
connections are answered normally.

``TargetServer`` (:mod:`poolsvc.target.process`) runs this module as a
subprocess (``python -m poolsvc.target``) and talks to its control port, in the
product's control protocol (:mod:`poolsvc.control`: one JSON request per line,
``{"id", "cmd", "args"}``; strict, with this server's own table of commands);
stdout carries exactly one ``LISTEN`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import os
import signal
import socket
import struct
import sys
from typing import Any

from poolsvc.control import ControlError, decode, reply_error, reply_ok
from poolsvc.target.http import (
    BadRequest,
    Counters,
    Modes,
    Reply,
    Request,
    chunked,
    head,
    parse_request,
    route,
)

_RST_LINGER = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST

#: The target's control commands and the arguments each takes.
COMMANDS: dict[str, frozenset[str]] = {
    "stats": frozenset(),
    "set": frozenset(f.name for f in dataclasses.fields(Modes)),
    "clear": frozenset(),
    "reset_counters": frozenset(),
    "restart": frozenset({"down_ms"}),
    "stop_listening": frozenset(),
    "start_listening": frozenset(),
}


class DataConnection(asyncio.Protocol):
    """One data-port connection; requests are served strictly one after another."""

    def __init__(self, target: Target) -> None:
        self._t = target
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a response is pending: leave the rest of the buffer alone
        self._hung = False
        self._pending: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._t.attach(self)
        if not self._t.listening:  # accepted by the kernel just before the listener closed
            transport.close()
        else:
            self.rearm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for handle in (self._pending, self._idle):
            if handle is not None:
                handle.cancel()
        self._t.detach(self)

    def data_received(self, data: bytes) -> None:
        if self._hung:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._buf += data
        self._serve()

    def close(self) -> None:
        """Normal close (FIN once buffered output is flushed)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def rearm_idle(self) -> None:
        """(Re)start the idle-close timer if the mode is on and no request is in progress."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        ms = self._t.modes.idle_close_ms
        transport = self._transport
        if ms is None or self._busy or self._buf or transport is None or transport.is_closing():
            return
        self._idle = self._loop.call_at(self._idle_since + ms / 1000, self.close)

    def _serve(self) -> None:
        while not self._busy and self._transport is not None and not self._transport.is_closing():
            try:
                parsed = parse_request(self._buf)
            except BadRequest as exc:  # answer it, then close: we cannot find the next request
                self._buf.clear()
                self._send(Request(b"GET", b"/", False, False), Reply(exc.status, b"bad request\n"))
                return
            if parsed is None:
                break
            req, used = parsed
            del self._buf[:used]
            self._handle(req)
        self.rearm_idle()

    def _handle(self, req: Request) -> None:
        self._t.counters.requests += 1
        modes = self._t.modes
        if modes.hang:
            self._busy = self._hung = True
            self._buf.clear()
        elif modes.reset:
            self._reset()
        else:
            reply = route(req.target)
            delay = modes.delay_ms + reply.delay_ms
            if delay <= 0:
                self._send(req, reply)
            else:
                self._busy = True
                self._pending = self._loop.call_later(delay / 1000, self._send_later, req, reply)

    def _send_later(self, req: Request, reply: Reply) -> None:
        self._busy, self._pending = False, None
        self._send(req, reply)
        self._serve()  # requests pipelined behind the delayed one

    def _reset(self) -> None:
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        self._transport.abort()  # closes the socket with zero linger: the kernel sends RST
        self._t.counters.resets += 1

    def _send(self, req: Request, reply: Reply) -> None:
        if self._transport is None or self._transport.is_closing():
            return  # the peer went away while the reply was delayed
        modes, framing = self._t.modes, reply.framing
        v10 = modes.http10 or reply.http10
        if (framing == "chunked" and (v10 or req.v10)) or (framing == "close" and v10):
            framing = "length"  # HTTP/1.0 has no chunking; http10 mode always sends a length
        if v10:
            connection, close = b"", True  # an HTTP/1.0 server closes after each response
        elif modes.close_after_response or reply.close or not req.keep_alive:
            connection, close = b"close", True
        else:
            connection = b"keep-alive" if req.v10 and framing != "close" else b""
            close = framing == "close"
        payload = b"" if req.method == b"HEAD" else reply.body
        if framing == "chunked" and req.method != b"HEAD":
            payload = chunked(payload)  # even an empty body needs its last-chunk
        start = head(v10, reply.status, framing, len(reply.body), connection)
        self._transport.write(start + payload)
        self._t.counters.responses += 1
        self._idle_since = self._loop.time()
        if close:
            self._transport.close()


class Target:
    """Shared state of one target process: modes, counters, listener, connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
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
                lambda: DataConnection(self), self.host, self.port, reuse_address=True, backlog=1024
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

    async def _listen_after(self, down_ms: int) -> None:
        await asyncio.sleep(down_ms / 1000)
        self._relisten = None
        try:
            await self.listen()
        except OSError as exc:  # somebody took the port meanwhile: report, stay down
            print(f"target: re-listen on port {self.port} failed: {exc}", file=sys.stderr)

    async def command(self, line: bytes) -> bytes:
        """Execute one control line; never raises for bad input, returns the reply line."""
        ident: Any = None
        try:
            ident, cmd, args = decode(line, COMMANDS)
            result: dict[str, Any] = await getattr(self, f"_cmd_{cmd}")(**args)
        except ControlError as exc:
            return reply_error(ident, exc.code, exc.message)
        except (ValueError, TypeError, OSError) as exc:
            return reply_error(ident, "bad_request", str(exc) or type(exc).__name__)
        return reply_ok(ident, result)

    async def _cmd_stats(self) -> dict[str, Any]:
        mode = dataclasses.asdict(self.modes)
        return {**dataclasses.asdict(self.counters), "mode": mode, "listening": self.listening}

    async def _cmd_set(self, **changes: Any) -> dict[str, Any]:
        for key, value in changes.items():
            _check_mode(key, value)
        for key, value in changes.items():  # validate all first: a bad set changes nothing
            setattr(self.modes, key, value)
        for conn in self._conns:
            conn.rearm_idle()
        return {"mode": dataclasses.asdict(self.modes)}

    async def _cmd_clear(self) -> dict[str, Any]:
        return await self._cmd_set(**dataclasses.asdict(Modes()))

    async def _cmd_reset_counters(self) -> dict[str, Any]:
        self.counters = Counters(open=self.counters.open)  # 'open' is a gauge, not a counter
        return {}

    async def _cmd_restart(self, down_ms: int = 0) -> dict[str, Any]:
        _check_int("down_ms", down_ms)
        self.unlisten()
        await self.close_all()
        self._relisten = asyncio.create_task(self._listen_after(down_ms))
        return {"port": self.port, "down_ms": down_ms}

    async def _cmd_stop_listening(self) -> dict[str, Any]:
        self.unlisten()  # existing connections are kept
        return {}

    async def _cmd_start_listening(self) -> dict[str, Any]:
        self.unlisten()  # drop a pending re-listen so it cannot race this one
        await self.listen()
        return {"port": self.port}

    async def control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one control connection: one JSON reply line per request line."""
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over the stream limit; the stream skips past it
                    reply = reply_error(None, "too_large", "line too long")
                else:
                    if not line:
                        break
                    reply = await self.command(line)
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def _check_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")


def _check_mode(key: str, value: Any) -> None:
    if key in ("hang", "reset", "close_after_response", "http10"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean")
    elif key == "delay_ms" or (key == "idle_close_ms" and value is not None):
        _check_int(key, value)
    elif key != "idle_close_ms":
        raise ValueError(f"unknown mode {key!r}")


def is_loopback(host: str) -> bool:
    """True only for a literal loopback IP (127.0.0.0/8 or ::1); names are refused."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _exit_with(parent: int, stop: asyncio.Event) -> None:
    """Stop when ``parent`` is gone: a SIGKILLed owner must not leave a server behind."""
    while os.getppid() == parent:
        await asyncio.sleep(0.2)
    stop.set()


async def serve(host: str, port: int, control_port: int, parent: int = 0) -> None:
    """Listen, print the LISTEN line, serve until SIGTERM/SIGINT (or until ``parent``,
    if given, exits), then close everything."""
    target = Target(host, port)
    await target.listen()
    control = await asyncio.start_server(
        target.control_client, host, control_port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers go in before LISTEN is printed, so a stop() right after start() is clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"LISTEN {target.port} {control.sockets[0].getsockname()[1]}", flush=True)
    watch = asyncio.create_task(_exit_with(parent, stop)) if parent else None
    await stop.wait()
    if watch is not None:
        watch.cancel()
    control.close()
    target.unlisten()
    await target.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poolsvc.target", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--parent", type=int, default=0, help="exit when this pid exits")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        print(f"target: --host {args.host!r} is not a loopback IP address", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.host, args.port, args.control_port, args.parent))
    except OSError as exc:
        print(f"target: {exc}", file=sys.stderr)
        return 1
    return 0
