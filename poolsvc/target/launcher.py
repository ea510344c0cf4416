"""The embedded target as a subprocess, and its control client (:class:`TargetServer`).

With ``tls``, the data port speaks TLS with a throwaway certificate authority made
at start (``trustme``): its certificate for the loopback address goes to the child
through a private directory (removed at stop), and :attr:`TargetServer.ca_pem` is
what a client must trust.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from poolsvc.ctl.protocol import encode_request
from poolsvc.target.serve import is_loopback

_HOME = Path(__file__).resolve().parents[2]


class TargetStartError(RuntimeError):
    """The target process did not come up (its own stderr says why: a bind, a port)."""


class TargetServer:
    """Runs the target as a subprocess; context manager (start on enter, stop on exit)."""

    control_timeout = 10.0  # seconds; restart may wait ~1 s for connections to close

    def __init__(
        self, host: str = "127.0.0.1", *, python: str = sys.executable, tls: bool = False
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"target host must be a loopback IP address, not {host!r}")
        self.host, self._python, self.tls = host, python, tls
        self.ca_pem = ""  # with tls: the PEM of the CA that signed the server's certificate
        self._certs = ""  # with tls: the private directory of the server's certificate
        self.port = self.control_port = self.pid = 0
        self.returncode: int | None = None  # exit status once stopped
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> TargetServer:
        """Spawn the server and wait for its LISTEN line; :class:`TargetStartError` if it
        does not come."""
        if self._proc is not None:
            raise RuntimeError("target already started")
        # The directory that holds this package, so that the child imports this very
        # code, installed or from a checkout.
        pythonpath = os.pathsep.join(filter(None, [str(_HOME), os.environ.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [
                *(self._python, "-m", "poolsvc.target"),
                *("--host", self.host, "--parent", str(os.getpid())),
                *(self._make_certificate() if self.tls else ()),
            ],
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdout=subprocess.PIPE,
            start_new_session=False,
        )
        self.pid = self._proc.pid
        try:
            self.port, self.control_port = self._read_listen_line(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_certificate(self) -> tuple[str, ...]:
        """A throwaway CA and its certificate for this host; the child's arguments."""
        import trustme  # only for a TLS target

        ca = trustme.CA()
        leaf = ca.issue_cert(self.host, "localhost")
        self._certs = tempfile.mkdtemp(prefix="poolsvc-target-tls-")  # mode 0700
        chain, key = Path(self._certs, "chain.pem"), Path(self._certs, "key.pem")
        leaf.private_key_pem.write_to_path(str(key))
        chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        self.ca_pem = ca.cert_pem.bytes().decode()
        return ("--tls-cert", str(chain), "--tls-key", str(key))

    def _read_listen_line(self, timeout: float) -> tuple[int, int]:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""  # one flushed write: no partial line
        parts = line.split()
        if len(parts) != 3 or parts[0] != b"LISTEN":
            raise TargetStartError(
                f"target did not start (exit status {proc.poll()}, got {line!r})"
            )
        return int(parts[1]), int(parts[2])

    def control(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One command over a fresh control connection; RuntimeError on ok=false."""
        if self._proc is None:
            raise RuntimeError("target not started")
        line = encode_request(cmd, args)
        address = (self.host, self.control_port)
        with socket.create_connection(address, timeout=self.control_timeout) as sock:
            sock.sendall(line)
            with sock.makefile("rb") as stream:
                raw = stream.readline()
        if not raw:
            raise RuntimeError(f"target {cmd}: control connection closed without a reply")
        reply: dict[str, Any] = json.loads(raw)
        if not reply.get("ok"):
            raise RuntimeError(f"target {cmd}: {reply['error']['message']}")
        data: dict[str, Any] = reply["data"]
        return data

    def stats(self) -> dict[str, Any]:
        return self.control("stats")

    def set(self, **modes: Any) -> dict[str, Any]:
        return self.control("set", **modes)

    def clear(self) -> dict[str, Any]:
        return self.control("clear")

    def restart(self, down_ms: int = 0) -> dict[str, Any]:
        return self.control("restart", down_ms=down_ms)

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL; always reaps. Idempotent."""
        proc, self._proc = self._proc, None
        if self._certs:
            shutil.rmtree(self._certs, ignore_errors=True)  # the child read them at start
            self._certs = ""
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.returncode = proc.returncode

    def __enter__(self) -> TargetServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
