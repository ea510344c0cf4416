"""The control socket: a Unix stream server living inside the supervisor's selector loop.

Nothing here can block the supervisor:

- every socket is non-blocking;
- a client's input is bounded by ``control.MAX_LINE``: an oversized line is
  refused and skipped up to its newline;
- a client's pending output is bounded by ``MAX_PENDING_OUT``: a client that
  stops reading is dropped;
- each loop step answers at most ``LINES_PER_TURN`` requests per client (the rest
  wait for the next step, :meth:`ControlServer.service`), and none while the
  client is more than ``PAUSE_OUT`` behind on reading its replies;
- at most ``max_clients`` clients may be connected; one more gets a ``busy``
  error and is closed;
- a client idle for ``idle_timeout`` is closed.

Access control, in layers:

- the socket lives in a directory that only the owner may enter (0700);
- the socket itself is created 0600, under a umask, with no window in which it
  is open to others;
- every peer is checked with ``SO_PEERCRED``: it must be our uid or root. This
  check holds even if someone loosens the modes on the socket or its directory.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from poolsvc.control import MAX_LINE, ControlError, decode, reply_error, reply_ok

MAX_PENDING_OUT: Final = 16 * 1024 * 1024
LINES_PER_TURN: Final = 8  # requests answered per client per loop step: nobody starves the loop
PAUSE_OUT: Final = 1024 * 1024  # a client this far behind on reading gets no more answers yet
_CRED: Final = struct.Struct("3i")  # pid, uid, gid

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


def default_path() -> Path:
    """``$XDG_RUNTIME_DIR/poolsvc/control.sock``, else a private dir in the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "poolsvc" / "control.sock"
    return Path(tempfile.gettempdir()) / f"poolsvc-{os.getuid()}" / "control.sock"


def prepare_dir(directory: Path, private: bool) -> None:
    """Create ``directory`` (0700) if needed; a private one must be ours and closed to others."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if private and (st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077):
        raise OSError(f"unsafe control directory {directory}: must be owned by us, mode 0700")


class _Client:
    __slots__ = ("discarding", "inbuf", "last_active", "outbuf", "sock", "writing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discarding = False  # inside an oversized line: drop bytes up to the newline
        self.writing = False  # registered for EVENT_WRITE (a reply did not fit the buffer)
        self.last_active = now


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
    ) -> None:
        self.path = path
        self.sel = sel
        self.handler = handler
        self.clock = clock
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.clients: dict[int, _Client] = {}
        self.backlog: set[_Client] = set()  # clients with requests not answered yet
        self.listener = self._listen()
        sel.register(self.listener, selectors.EVENT_READ, self._accept)

    def _listen(self) -> socket.socket:
        if self.path.exists():
            if _answers(self.path):
                raise OSError(f"a service is already listening on {self.path}")
            self.path.unlink()  # stale: its service is gone
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: never a moment open to others
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(128)
        listener.setblocking(False)
        return listener

    # events ------------------------------------------------------------------------
    def _accept(self, mask: int) -> None:
        for _ in range(64):  # drain the accept queue, boundedly, per wakeup
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        refusal = None
        if uid not in (os.getuid(), 0):
            refusal = reply_error(None, "forbidden", f"uid {uid} may not use this socket")
        elif len(self.clients) >= self.max_clients:
            refusal = reply_error(None, "busy", f"at most {self.max_clients} clients at once")
        if refusal is not None:
            with contextlib.suppress(OSError):
                sock.send(refusal)
            sock.close()
            return
        client = _Client(sock, self.clock())
        self.clients[sock.fileno()] = client
        self.sel.register(sock, selectors.EVENT_READ, lambda m, c=client: self._ready(c, m))

    def _ready(self, client: _Client, mask: int) -> None:
        client.last_active = self.clock()
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
            self._take(client, data)

    def _take(self, client: _Client, data: bytes) -> None:
        client.inbuf += data
        self._work(client)

    def service(self) -> None:
        """Answer more of the buffered requests (called once per supervisor loop step)."""
        for client in list(self.backlog):
            self.backlog.discard(client)
            if self.clients.get(client.sock.fileno()) is client:
                self._work(client)

    def _work(self, client: _Client) -> None:
        buf = client.inbuf
        for _ in range(LINES_PER_TURN):
            if len(client.outbuf) > PAUSE_OUT:
                return  # let it read first: _flush puts it back in the backlog
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_LINE and not client.discarding:
                    self._queue(
                        client, reply_error(None, "too_large", f"line over {MAX_LINE} bytes")
                    )
                    client.discarding = True
                if client.discarding:
                    buf.clear()
                return
            line = bytes(buf[:end])
            del buf[: end + 1]
            if client.discarding:  # the tail of an oversized line
                client.discarding = False
                continue
            if line.strip():
                reply = self._answer(client, line)
                if reply is not None:
                    self._queue(client, reply)
            if client.sock.fileno() < 0:
                return
        if b"\n" in buf:
            self.backlog.add(client)

    def _answer(self, client: _Client, line: bytes) -> bytes | None:
        ident: Any = None
        try:
            ident, cmd, args = decode(line)
            data = self.handler(cmd, args)
            if isinstance(data, Deferred):
                data.on_result(lambda result: self._later(client, reply_ok(ident, result)))
                return None
            return reply_ok(ident, data)
        except ControlError as exc:
            return reply_error(ident, exc.code, exc.message)
        except Exception as exc:  # a bug in a handler must not take the service down
            return reply_error(ident, "internal", f"{type(exc).__name__}: {exc}")

    def _later(self, client: _Client, reply: bytes) -> None:
        if client.sock.fileno() >= 0 and self.clients.get(client.sock.fileno()) is client:
            self._queue(client, reply)

    def _queue(self, client: _Client, reply: bytes) -> None:
        client.outbuf += reply
        if len(client.outbuf) > MAX_PENDING_OUT:
            self._drop(client)  # it does not read its replies
            return
        if self._flush(client) and client.outbuf and not client.writing:
            client.writing = True
            self._watch(client, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _flush(self, client: _Client) -> bool:
        """Send what we can; False if the client was dropped."""
        try:
            sent = client.sock.send(client.outbuf)
        except BlockingIOError:
            return True
        except OSError:
            self._drop(client)
            return False
        del client.outbuf[:sent]
        if len(client.outbuf) <= PAUSE_OUT and b"\n" in client.inbuf:
            self.backlog.add(client)  # it reads again: answer what it asked meanwhile
        if not client.outbuf and client.writing:
            client.writing = False
            self._watch(client, selectors.EVENT_READ)
        return True

    def _watch(self, client: _Client, events: int) -> None:
        self.sel.modify(client.sock, events, lambda m, c=client: self._ready(c, m))

    def _drop(self, client: _Client) -> None:
        self.backlog.discard(client)
        fd = client.sock.fileno()
        if fd >= 0 and self.clients.pop(fd, None) is client:
            self.sel.unregister(client.sock)
            client.sock.close()

    def sweep(self, now: float) -> None:
        """Close clients idle for longer than ``idle_timeout``."""
        for client in list(self.clients.values()):
            if now - client.last_active > self.idle_timeout:
                self._drop(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.sel.unregister(self.listener)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __repr__(self) -> str:
        return f"<ControlServer {self.path} clients={len(self.clients)}>"


def _answers(path: Path) -> bool:
    """True if something accepts connections on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
