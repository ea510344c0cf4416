"""The control protocol: newline-delimited JSON, pure (no sockets here).

Wire format, one JSON object per line each way (UTF-8, ``\\n``-terminated)::

    -> {"id": 7, "cmd": "status", "args": {"json": true}}
    <- {"id": 7, "ok": true, "data": {...}}
    <- {"id": 7, "ok": false, "error": {"code": "bad_request", "message": "..."}}

``id`` is optional and echoed back (any JSON scalar); ``args`` is optional and
must be an object.  A request line longer than :data:`MAX_LINE` bytes is refused
with ``too_large`` and discarded up to its newline; the connection stays usable.
Error codes are a closed table (:data:`ERROR_CODES`), so scripts can branch on them.

Requests are strict: a key that is not ``id``, ``cmd`` or ``args``, or an argument
the command does not take (:data:`COMMANDS`), is a ``bad_request`` that names it
(and says ``args.<key>`` when an argument was put at the top level). Nothing
unknown is ever ignored: a typo must not turn into a silent no-op.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

MAX_LINE: Final = 64 * 1024

ERROR_CODES: Final = {
    "bad_json": "the line is not valid JSON",
    "bad_request": "a field is missing or has the wrong type",
    "too_large": f"request lines are limited to {MAX_LINE} bytes",
    "unknown_command": "no such command",
    "forbidden": "the peer may not use this socket",
    "busy": "too many clients",
    "conflict": "the command does not apply in the current state",
    "internal": "the command failed inside the service",
}


#: Every command, and the arguments (in ``args``) it takes: nothing else is accepted.
COMMANDS: Final[dict[str, frozenset[str]]] = {
    "status": frozenset(),
    "metrics": frozenset({"format"}),
    "breaker": frozenset({"action", "target"}),
    "load": frozenset({"concurrency", "pause", "resume", "rate"}),
    "pool": frozenset({"size", "min", "target"}),
    "workers": frozenset({"count"}),
    "inject": frozenset(
        {"action", "fault", "rate", "target", "for_s", "seed", "delay_ms", "timeout_ms", "mode"}
    ),
    "audit": frozenset({"last"}),
    "drain": frozenset(),
    "stop": frozenset(),
}
REQUEST_KEYS: Final = frozenset({"id", "cmd", "args"})


class ControlError(Exception):
    """A request that gets an error reply; ``code`` is a key of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message


def decode(
    line: bytes, commands: dict[str, frozenset[str]] = COMMANDS
) -> tuple[Any, str, dict[str, Any]]:
    """Parse one request line into (id, cmd, args), checked against ``commands`` (the
    service's by default); raises ControlError."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ControlError("bad_json", f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ControlError("bad_request", "a request is a JSON object")
    ident = doc.get("id")
    if isinstance(ident, dict | list):
        raise ControlError("bad_request", "id must be a string, number or null")
    cmd = doc.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ControlError("bad_request", "cmd must be a non-empty string")
    takes = commands.get(cmd)
    if takes is None:
        raise ControlError(
            "unknown_command", f"unknown command {cmd!r}; try: {', '.join(commands)}"
        )
    for key in sorted(set(doc) - REQUEST_KEYS, key=str):
        hint = f"; did you mean args.{key}?" if key in takes else ""
        raise ControlError("bad_request", f"unknown key {key!r} in the request{hint}")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("bad_request", "args must be an object")
    for key in sorted(set(args) - takes, key=str):
        accepted = ", ".join(sorted(takes)) or "no arguments"
        raise ControlError("bad_request", f"{cmd} takes no argument {key!r} (it takes: {accepted})")
    return ident, cmd, args


def reply_ok(ident: Any, data: Any) -> bytes:
    return orjson.dumps({"id": ident, "ok": True, "data": data}) + b"\n"


def reply_error(ident: Any, code: str, message: str) -> bytes:
    error = {"code": code, "message": message}
    return orjson.dumps({"id": ident, "ok": False, "error": error}) + b"\n"


def encode_request(cmd: str, args: dict[str, Any] | None = None, ident: Any = None) -> bytes:
    return orjson.dumps({"id": ident, "cmd": cmd, "args": args or {}}) + b"\n"


# Typed argument access for handlers: a wrong type is a bad_request, never a crash.
def arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``args[name]`` checked against ``kind`` (bools are not ints); ``default`` if absent."""
    if name not in args:
        if default is None:
            raise ControlError("bad_request", f"missing argument {name!r}")
        return default
    value = args[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ControlError("bad_request", f"{name} must be {names}, not {type(value).__name__}")
    return value


def optional(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """Like :func:`arg` but ``None`` when absent."""
    return arg(args, name, kind) if name in args else None
