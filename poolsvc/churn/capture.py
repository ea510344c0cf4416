"""``poolsvc churn --capture DIR``: a pcap of each half, recorded by ``tcpdump`` on ``lo``.

Inside the study's own network namespace (``--netns``) loopback carries nothing but
the study, so the capture holds exactly its packets. ``tcpdump`` is started before
the half and stopped (SIGINT, so it flushes) after it; the half does not begin
until tcpdump says it is listening. :mod:`poolsvc.churn.pcap` reads the files.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from poolsvc.churn import netns

SNAPLEN: Final = 256  # headers and the request/status line: enough to annotate


def capture_problem(directory: str) -> str | None:
    """Why ``--capture DIR`` cannot be done here (None: it can)."""
    if shutil.which("tcpdump") is None:
        return "needs tcpdump (Debian package tcpdump)"
    if not os.environ.get(netns.INSIDE):
        return "needs --netns (loopback then carries the study's packets alone)"
    path = Path(directory)
    if not path.is_dir() or not os.access(path, os.W_OK):
        return f"{directory} is not a directory we can write"
    return None


class Capture:
    """``with Capture(directory, label) as cap:``; ``cap.path`` is the pcap (None: no
    capture asked for)."""

    def __init__(self, directory: str | None, label: str) -> None:
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-")
        self.path = Path(directory) / f"{name}.pcap" if directory else None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        if self.path is None:
            return self
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "-s", str(SNAPLEN), "-w", str(self.path), "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 10
        line = b""
        while b"listening on" not in line and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise OSError(f"tcpdump exited with {self.proc.returncode}")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        time.sleep(0.2)  # the last FINs of the half
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()

    def __repr__(self) -> str:
        return f"<Capture {self.path}>"
