"""Shared fixtures: the embedded target, nginx, and helpers to run a worker in-process.

Integration tests talk over loopback to real servers only.  nginx is installed
by ``.ci/run``; on a machine without it the nginx tests skip, except under CI
(``CI=true``) where a missing nginx is a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolsvc import config, plan
from tools.target import TargetServer
from workers import stats
from workers.admission import SharedView
from workers.loop import Worker


@pytest.fixture(scope="session")
def target_server() -> Iterator[TargetServer]:
    with TargetServer() as server:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx on a free loopback port, one worker process, config in a temp dir."""

    CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
        location = /health {{ return 200 "ok\\n"; }}
        location = /nginx_status {{ stub_status; }}
        location /chunked {{ chunked_transfer_encoding on; gzip off; return 200 "chunk\\n"; }}
    }}
    server {{
        # closes idle keep-alive sockets after 1 s, used or not
        listen 127.0.0.1:{short_port} reuseport;
        keepalive_timeout 1s;
        client_header_timeout 1s;
        location / {{ return 200 "short\\n"; }}
    }}
}}
"""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.short_port = free_port()
        self.host = "127.0.0.1"
        conf = self.CONF.format(d=directory, port=self.port, short_port=self.short_port)
        (directory / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"nginx exited: {err!r}") from None
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown, closes every connection
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def requests_served(self) -> int:
        """nginx's own request count (stub_status); it includes this status request."""
        url = f"http://{self.host}:{self.port}/nginx_status"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
        m = re.search(r"\n\s*\d+\s+\d+\s+(\d+)", body)
        assert m, body
        return int(m.group(1))


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
    shard = plan.shards(cfg, 1, values.get("seed", 1))[0]
    return plan.make_worker(cfg, plan.target_spec(cfg, host, port), shard, SharedView.private(1))


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
