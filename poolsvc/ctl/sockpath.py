"""Where the control socket lives, and who may use it: the path, its directory, its peers.

Shared by the server (:mod:`poolsvc.ctl.ctlserver`), the client
(:mod:`poolsvc.ctl.ctlclient`) and the command line, which checks the path before it
starts anything (so it needs no server to do so).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Final

_CRED: Final = struct.Struct("3i")  # pid, uid, gid


def default_path() -> Path:
    """``$XDG_RUNTIME_DIR/poolsvc/control.sock``, else a private dir in the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "poolsvc" / "control.sock"
    return Path(tempfile.gettempdir()) / f"poolsvc-{os.getuid()}" / "control.sock"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return int(uid)


def trusted_uid(uid: int) -> bool:
    return uid in (os.getuid(), 0)


def check_dir(directory: Path) -> None:
    """Raise OSError unless ``directory`` is a real directory (not a symbolic link),
    owned by us or root, and writable by nobody else: nobody else can then replace
    the socket in it. A world-writable directory (``/tmp``, sticky or not) fails."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise OSError(f"the directory {directory} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise OSError(f"the control directory {directory} is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{directory} is not a directory")
    if not trusted_uid(st.st_uid):
        raise OSError(f"the control directory {directory} belongs to uid {st.st_uid}")
    if st.st_mode & 0o022:
        raise OSError(
            f"the control directory {directory} is writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):o}): use a private one"
        )


def prepare_dir(directory: Path, create: bool) -> None:
    """Check the socket's directory (:func:`check_dir`); ``create``: make it first
    (0700) if it is missing, as for the default path."""
    if create:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    check_dir(directory)


def claim(path: Path) -> None:
    """Make ``path`` free for our socket, or raise OSError saying why it is not.

    Only a socket that is ours (same uid) and stale (nothing accepts on it) is
    removed. A regular file, a directory, a symbolic link (dangling or not), a
    socket of another user or one that answers is left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(f"{path} is a symbolic link; refusing to use or remove it")
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket; refusing to remove it")
    if st.st_uid != os.getuid():
        raise OSError(f"{path} is a socket of uid {st.st_uid}; refusing to remove it")
    if _answers(path):
        raise OSError(f"a service is already listening on {path}")
    os.unlink(path)  # ours, and its service is gone


def _answers(path: Path) -> bool:
    """True if a listener is there: it accepts, or its queue is full (a service that is
    stopped or busy is still a service). Only a refused connect means it is gone."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
