"""A small client for the control socket (used by poolctl and the tests).

    with ControlClient(resolve_path(None)) as c:
        print(c.call("status")["totals"]["requests.total"])

:class:`ServiceUnavailable`: nothing we trust answers at the path in time (poolctl
exits 4).
:class:`CommandRefused`: the service answered with an error (poolctl exits 3).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from poolsvc.ctl.protocol import encode_request
from poolsvc.ctl.sockpath import check_dir, default_path, peer_uid, trusted_uid

ENV = "POOLSVC_CONTROL"


def resolve_path(explicit: str | None) -> Path:
    """``--control``, else ``$POOLSVC_CONTROL``, else the service's default path."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV)
    return Path(env) if env else default_path()


class ServiceUnavailable(Exception):
    """No service (we trust) answers at the control path in time."""


class CommandRefused(Exception):
    """The service replied ``ok: false``; ``code`` is its stable error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def check_socket(path: Path) -> None:
    """Raise :class:`ServiceUnavailable` unless ``path`` is a socket we may trust:
    in a directory that is ours (or root's) and writable by nobody else, itself a
    socket (not a symbolic link) of ours or root's. Anybody else could otherwise
    put a listener there and answer for the service."""
    try:
        check_dir(path.parent)
        st = os.lstat(path)
    except FileNotFoundError:
        raise ServiceUnavailable(f"no service at {path} (no such socket)") from None
    except OSError as exc:
        raise ServiceUnavailable(f"refusing {path}: {exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ServiceUnavailable(f"refusing {path}: it is not a socket")
    if not trusted_uid(st.st_uid):
        raise ServiceUnavailable(f"refusing {path}: the socket belongs to uid {st.st_uid}")


class ControlClient:
    """One connection to the service; requests are answered in order.

    Everything has a deadline: ``timeout`` seconds for the connect (a service that
    is stopped with its accept queue full never accepts) and for each reply. The
    peer must be the service of our user: the socket and its directory are
    checked first (:func:`check_socket`), then the listening process's uid
    (``SO_PEERCRED``)."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        check_socket(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._connect(time.monotonic() + timeout)
            uid = peer_uid(self.sock)
        except BaseException:
            self.sock.close()
            raise
        if not trusted_uid(uid):
            self.sock.close()
            raise ServiceUnavailable(f"refusing {path}: the process listening is of uid {uid}")
        self._buf = b""
        self._next_id = 0

    def _connect(self, deadline: float) -> None:
        """Non-blocking connect, retried while the accept queue is full (EAGAIN on a
        Unix socket), until ``deadline``."""
        self.sock.setblocking(False)
        while True:
            try:
                self.sock.connect(str(self.path))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServiceUnavailable(
                        f"{self.path} accepts no connection (tried for {self.timeout:g}s)"
                    ) from None
                time.sleep(0.01)
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    raise CommandRefused("forbidden", f"permission denied on {self.path}") from None
                raise ServiceUnavailable(f"no service at {self.path} ({exc.strerror})") from None
        self.sock.settimeout(self.timeout)

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one command; returns its ``data`` or raises CommandRefused."""
        self._next_id += 1
        try:
            self.sock.sendall(encode_request(cmd, args, self._next_id))
        except TimeoutError:
            raise ServiceUnavailable(
                f"{self.path} takes no request (for {self.timeout:g}s)"
            ) from None
        except OSError:
            pass  # refused at accept (forbidden) or evicted: the reason is waiting to be read
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
                raise ServiceUnavailable(
                    f"no reply from {self.path} in {self.timeout:g}s (--timeout)"
                ) from None
            except OSError as exc:
                raise ServiceUnavailable(f"connection to {self.path} lost ({exc})") from None
            if not chunk:
                raise ServiceUnavailable(f"the service at {self.path} closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ServiceUnavailable(f"{self.path} answered something that is not JSON") from None
        if not isinstance(doc, dict):
            raise ServiceUnavailable(f"{self.path} answered something that is not a reply")
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
