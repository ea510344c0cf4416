"""The target's control channel (:class:`Control`): newline-delimited JSON commands
that change the shared misbehaviour modes, read the counters, or take the
listener down and up.

It speaks the product's control protocol (:mod:`poolsvc.ctl.protocol`: one JSON
request per line, ``{"id", "cmd", "args"}``; strict, with this server's own
table of commands, :data:`COMMANDS`), one JSON reply line per request line.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from poolsvc.ctl.protocol import ControlError, decode, reply_error, reply_ok
from poolsvc.target.modes import Target
from poolsvc.target.replies import Counters, Modes

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


class Control:
    """Executes control commands against one :class:`Target`; serves control connections."""

    def __init__(self, target: Target) -> None:
        self._t = target

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
        t = self._t
        mode = dataclasses.asdict(t.modes)
        return {**dataclasses.asdict(t.counters), "mode": mode, "listening": t.listening}

    async def _cmd_set(self, **changes: Any) -> dict[str, Any]:
        for key, value in changes.items():
            _check_mode(key, value)
        for key, value in changes.items():  # validate all first: a bad set changes nothing
            setattr(self._t.modes, key, value)
        self._t.rearm_idle()
        return {"mode": dataclasses.asdict(self._t.modes)}

    async def _cmd_clear(self) -> dict[str, Any]:
        return await self._cmd_set(**dataclasses.asdict(Modes()))

    async def _cmd_reset_counters(self) -> dict[str, Any]:
        t = self._t
        t.counters = Counters(open=t.counters.open)  # 'open' is a gauge, not a counter
        return {}

    async def _cmd_restart(self, down_ms: int = 0) -> dict[str, Any]:
        _check_int("down_ms", down_ms)
        await self._t.restart(down_ms)
        return {"port": self._t.port, "down_ms": down_ms}

    async def _cmd_stop_listening(self) -> dict[str, Any]:
        self._t.unlisten()  # existing connections are kept
        return {}

    async def _cmd_start_listening(self) -> dict[str, Any]:
        self._t.unlisten()  # drop a pending re-listen so it cannot race this one
        await self._t.listen()
        return {"port": self._t.port}

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


assert all(hasattr(Control, f"_cmd_{cmd}") for cmd in COMMANDS), "a handler per command"


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
