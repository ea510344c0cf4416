"""Shared fixtures: the embedded target, nginx, and helpers to run a worker in-process.

Integration tests talk over loopback to real servers only.  nginx is installed
by ``.ci/run``; on a machine without it the nginx tests skip, except under CI
(``CI=true``) where a missing nginx is a failure, so CI cannot pass by skipping.

The data-path modules run every test through both request paths (``both_paths``):
the accelerated one and the pure-Python reference (workers.lane.fastpath).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolsvc.arbiter.supervisor import Supervisor
from poolsvc.config import loader as config
from poolsvc.config import plan
from poolsvc.ctl.ctlclient import CommandRefused, ControlClient, ServiceUnavailable
from poolsvc.target import TargetServer
from tools.nginx import Nginx
from workers.lane import fastpath as lane
from workers.shared import slotstats as stats
from workers.shared.admission import SharedView
from workers.worker import Worker


def _own_temp_per_xdist_worker() -> None:
    """Under pytest-xdist (``make test`` runs its workers side by side) each test worker
    gets its own temporary and runtime directories, and every process it starts
    inherits them: one worker's run directories and default control sockets never meet
    another's checks (e.g. that no run directory is left behind)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    base = Path(tempfile.gettempdir()) / f"poolsvc-tests-{os.getuid()}-{worker}"
    shutil.rmtree(base, ignore_errors=True)  # what a previous session left
    (base / "run").mkdir(mode=0o700, parents=True)
    base.chmod(0o700)
    os.environ["TMPDIR"] = str(base)
    os.environ["XDG_RUNTIME_DIR"] = str(base / "run")
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


_own_temp_per_xdist_worker()


@pytest.fixture(params=["accelerated", "pure"])
def both_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs through each request path; workers (in this process or started
    meanwhile) take the path the environment says when they are built."""
    asked_pure = os.environ.get("POOLSVC_NO_EXTENSIONS", "") not in ("", "0")
    if request.param == "pure":
        monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "1")
    elif asked_pure:
        pytest.skip("the pure-Python path was asked for (POOLSVC_NO_EXTENSIONS)")
    elif not lane.ACCELERATED:
        pytest.fail(f"the accelerated path is not available: {lane.path()}")
    return str(request.param)


@pytest.fixture(scope="session")
def target_server() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture(scope="session")
def tls_target_server() -> Iterator[TargetServer]:
    """The embedded target serving TLS (its throwaway CA: ``ca_pem``)."""
    with TargetServer(tls=True) as server:
        yield server


@pytest.fixture
def target(target_server: TargetServer) -> Iterator[TargetServer]:
    """The embedded target in normal mode, counters zeroed; modes cleared afterwards."""
    target_server.clear()
    target_server.control("reset_counters")
    yield target_server
    target_server.clear()
    if not target_server.stats().get("listening", True):
        target_server.control("start_listening")


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if shutil.which("nginx") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed: .ci/run must install it")
        pytest.skip("nginx is not installed (make test installs it via .ci/run on CI)")
    server = Nginx(tmp_path_factory.mktemp("nginx"))
    server.start()
    yield server
    server.stop()


def fd_count() -> int:
    return psutil.Process().num_fds()


def make(host: str, port: int, **values: Any) -> Worker:
    """An in-process worker (no supervisor, breaker always closed) for ``host:port``;
    config values as in the JSON file."""
    values.setdefault("duration_s", 5.0)
    cfg = config.build({"host": host, "port": port, **values}, {})
    return plan.make_worker(cfg, host, port, values.get("seed", 1), SharedView.private(1))


def snapshot(worker: Worker) -> stats.Snapshot:
    return stats.Snapshot.of([worker.s])


def run(host: str, port: int, **values: Any) -> stats.Snapshot:
    """Run a worker to completion in this thread and return its totals."""
    worker = make(host, port, **values)
    worker.run()
    return snapshot(worker)


class Background:
    """A worker running in a thread, so the test can act on the server meanwhile."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # re-raised in join() so the test sees it
            self.error = exc

    def join(self, timeout: float = 60.0) -> stats.Snapshot:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop by itself"
        if self.error is not None:
            raise self.error
        return snapshot(self.worker)


POOLSVC = [sys.executable, "-m", "poolsvc"]


def supervisor(host: str, port: int, n: int, **values: Any) -> tuple[Supervisor, list[str]]:
    values.setdefault("duration_s", 3.0)
    cfg = config.build({"host": host, "port": port, "workers": n, **values}, {})
    events: list[str] = []
    return Supervisor(plan.resolve(cfg, [(host, port)], 7, n), events.append), events


def in_background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


class Service:
    """`poolsvc serve` as a subprocess with its control socket in a temp dir."""

    def __init__(self, target: Any, directory: Path, *extra: str) -> None:
        """``target``: anything with ``host`` and ``port`` (the embedded target, nginx),
        or None when ``extra`` names the targets (a config file)."""
        directory.chmod(0o700)
        self.path = directory / "control.sock"
        self.target = target
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poolsvc",
                "serve",
                *(["--host", target.host, "--port", str(target.port)] if target else []),
                "--control",
                str(self.path),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with ControlClient(self.path) as c:
                    if c.call("status")["totals"]["requests.total"] > 0:
                        return
            except (ServiceUnavailable, CommandRefused):
                pass
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"the service did not come up: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]

    def call(self, cmd: str, **args: Any) -> Any:
        with ControlClient(self.path, timeout=30) as c:  # a loaded CI machine is slow
            return c.call(cmd, **args)

    def poolctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "poolsvc.cli.poolctl", "--control", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def requests(self) -> int:
        return int(self.call("status")["totals"]["requests.total"])

    def wait_exit(self, timeout: float = 20) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``condition`` holds (things take longer on a loaded machine); fail
    at ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def settled(read: Callable[[], int], timeout: float = 10.0) -> int:
    """A count once it stops moving: two reads 0.3 s apart agree (within ``timeout``)."""
    last, deadline = read(), time.monotonic() + timeout
    while True:
        time.sleep(0.3)
        now = read()
        if now == last:
            return now
        assert time.monotonic() < deadline, "it kept moving"
        last = now


def address(server: Any) -> list[str]:
    """``--host H --port P`` of a server (the embedded target, nginx, a hostile one)."""
    return ["--host", server.host, "--port", str(server.port)]


def run_json(*args: str) -> dict[str, Any]:
    """`poolsvc run ARGS --json` as a subprocess; its JSON report (the run must succeed)."""
    proc = subprocess.run(
        [*POOLSVC, "run", *args, "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
