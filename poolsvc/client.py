"""A small client for the control socket (used by poolctl and the tests).

    with ControlClient(resolve_path(None)) as c:
        print(c.call("status")["totals"]["requests.total"])

:class:`ServiceUnavailable`: nothing answers at the path (poolctl exits 4).
:class:`CommandRefused`: the service answered with an error (poolctl exits 3).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from poolsvc.control import encode_request
from poolsvc.ctlserver import default_path

ENV = "POOLSVC_CONTROL"


def resolve_path(explicit: str | None) -> Path:
    """``--control``, else ``$POOLSVC_CONTROL``, else the service's default path."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV)
    return Path(env) if env else default_path()


class ServiceUnavailable(Exception):
    """No service listens at the control path."""


class CommandRefused(Exception):
    """The service replied ``ok: false``; ``code`` is its stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ControlClient:
    """One connection to the service; requests are answered in order."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Blocking connect: on a Unix socket it waits for room in the accept queue
            # (with a timeout set, a full queue would fail at once with EAGAIN).
            self.sock.connect(str(path))
            self.sock.settimeout(timeout)
        except OSError as exc:
            self.sock.close()
            if exc.errno == errno.EACCES:
                raise CommandRefused("forbidden", f"permission denied on {path}") from None
            raise ServiceUnavailable(f"no service at {path} ({exc.strerror})") from None
        self._buf = b""
        self._next_id = 0

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one command; returns its ``data`` or raises CommandRefused."""
        self._next_id += 1
        try:
            self.sock.sendall(encode_request(cmd, args, self._next_id))
        except OSError:
            pass  # refused at accept (busy, forbidden): the refusal is waiting to be read
        reply = self.read_reply()
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise CommandRefused(str(error.get("code")), str(error.get("message")))
        return reply.get("data")

    def read_reply(self) -> dict[str, Any]:
        """The next reply line, decoded."""
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise ServiceUnavailable(f"no reply from {self.path} in time") from None
            except OSError as exc:
                raise ServiceUnavailable(f"connection to {self.path} lost ({exc})") from None
            if not chunk:
                raise ServiceUnavailable(f"the service at {self.path} closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        doc: dict[str, Any] = orjson.loads(line)
        return doc

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
