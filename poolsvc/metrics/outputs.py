"""The files poolsvc writes, written so that nothing of anybody else's is followed or lost.

Every output file (audit reports, the timeline, ``poolctl audit --out``) is
written to a fresh temporary file in the same directory, created with
``mkstemp`` (``O_CREAT | O_EXCL``, a name nobody can predict), then renamed
over the destination. ``rename`` replaces a symbolic link at the
destination with the file itself, and never writes through it; a reader sees
the old file or the new one, never half of one.

:func:`check_output` runs before any load starts, so that a path that cannot be
written is an exit 2 with one line naming the option, not a traceback in the
middle of a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from workers.shared.errors import ConfigError


def check_output(path: str, key: str) -> None:
    """Raise :class:`ConfigError` (naming ``key``) unless ``path`` can be written as
    an output file: its directory exists and is writable, and it is not a directory."""
    if "\x00" in path:  # (os calls raise ValueError on one: never a traceback)
        raise ConfigError(f"{key}: a path cannot contain a NUL byte")
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise ConfigError(f"{key}: the directory {str(directory)!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the directory {str(directory)!r} is not writable")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise ConfigError(f"{key}: {path!r} is a directory")


RUN_PREFIX = "poolsvc-run-"


def run_dir() -> str:
    """A new private (0700) directory for one run's audit reports, named after this
    process. Directories that earlier supervisors of ours left behind (a SIGKILL
    gives no chance to clean up) are removed first: only ours, by owner and name,
    and only if the process they are named after is gone."""
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in tmp.glob(f"{RUN_PREFIX}*-*"):
            pid = entry.name[len(RUN_PREFIX) :].split("-", 1)[0]
            st = os.lstat(entry)
            mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            if mine and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)  # read it (there is no other way) and put it back at once
    os.umask(mask)
    return mask


class Replacement:
    """A private temporary file next to ``path``; :meth:`commit` renames it over ``path``,
    :meth:`discard` removes it. It gets the mode a plain ``open`` would give it (0666
    less the umask)."""

    def __init__(self, path: str | Path, binary: bool = False) -> None:
        self.path = Path(path)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        except OSError:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        self.file: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="")

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def replacing(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file that replaces ``path`` when the block ends without an exception."""
    out = Replacement(path, binary)
    try:
        yield out.file
    except BaseException:
        out.discard()
        raise
    out.commit()


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (see :func:`replacing`)."""
    with replacing(path) as f:
        f.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with replacing(path, binary=True) as f:
        f.write(data)
