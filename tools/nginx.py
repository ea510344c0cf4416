"""nginx as a real target: one worker process, a config in a private directory, loopback only.

Used by the integration tests and the benchmarks.  The config has two servers: the
main one (keep-alive for long, ``return 200``, ``/health``, ``/nginx_status`` for
nginx's own request count, ``/chunked``), and a ``short`` one that closes idle
keep-alive sockets after 1 s, used or not. Given a certificate, a third serves the
main one's locations over TLS (``tls_port``), with session tickets and a session
cache, and the TLS versions asked for.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: bound together, so none is picked twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


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
    access_log {log};
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
        location = /health {{ return 200 "ok\\n"; }}
        location = /nginx_status {{ stub_status; }}
        location /chunked {{ chunked_transfer_encoding on; gzip off; return 200 "chunk\\n"; }}
    }}
    server {{
        # closes idle keep-alive sockets after 1 s, used or not
        listen {host}:{short_port} reuseport;
        keepalive_timeout 1s;
        client_header_timeout 1s;
        location / {{ return 200 "short\\n"; }}
    }}
{tls}}}
"""
    TLS = """
    server {{
        listen {host}:{port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        ssl_session_cache shared:poolsvc:1m;
        ssl_session_tickets on;
        location / {{ return 200 "ok\\n"; }}
        location = /health {{ return 200 "ok\\n"; }}
    }}
"""

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        wrap: list[str] | None = None,
        access_log: bool = False,
        tls: tuple[Path, Path] | None = None,
        tls_protocols: str = "TLSv1.2 TLSv1.3",
    ) -> None:
        """``host``: where to listen; ``wrap``: a command prefix (``ip netns exec NS``);
        ``access_log``: log every request (an exact count that survives restarts);
        ``tls``: (certificate chain, key) files: serve TLS too, on ``tls_port``."""
        self.dir = directory
        self.host = host
        self.wrap = wrap or []
        self.log = f"{directory}/access.log" if access_log else "off"
        self.tls, self.tls_protocols = tls, tls_protocols
        self.conf = directory / "nginx.conf"
        self._configure()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # once it has listened, its ports are known: kept on restarts

    def _configure(self) -> None:
        """Pick the ports (distinct) and write the configuration."""
        tls = self.tls
        ports = free_ports(3 if tls else 2)
        self.port, self.short_port = ports[0], ports[1]
        self.tls_port = ports[2] if tls else 0
        block = (
            self.TLS.format(
                host=self.host,
                port=self.tls_port,
                cert=tls[0],
                key=tls[1],
                protocols=self.tls_protocols,
            )
            if tls
            else ""
        )
        conf = self.CONF.format(
            d=self.dir, host=self.host, port=self.port, short_port=self.short_port,
            log=self.log, tls=block,
        )  # fmt: skip
        self.conf.write_text(conf)

    def start(self, cpu: int | None = None) -> None:
        """Start nginx (pinned to ``cpu`` with taskset when given) and wait until it
        listens. A port taken meanwhile (by another socket's ephemeral port, say) is
        tried again: with new ports on a first start, with the same on a restart."""
        for _ in range(5):
            err = self._launch(cpu)
            if err is None:
                self.started = True
                return
            if b"Address already in use" not in err:
                raise RuntimeError(f"nginx exited: {err!r}")
            if not self.started:
                self._configure()
            time.sleep(0.2)
        raise RuntimeError(f"nginx exited: {err!r}")

    def _launch(self, cpu: int | None) -> bytes | None:
        """Run nginx until it listens (None), or until it exits (its stderr)."""
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.proc = subprocess.Popen(
            [
                *self.wrap,
                *pin,
                "nginx",
                "-p",
                str(self.dir),
                "-c",
                str(self.dir / "nginx.conf"),
                "-e",
                "stderr",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return None
            except OSError:
                if self.proc.poll() is not None:
                    _, err = self.proc.communicate()  # (closes the pipe)
                    self.proc = None
                    return err or b""
                time.sleep(0.05)
        self.stop()
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

    def requests_logged(self) -> int:
        """Requests in the access log, status probes excluded (needs ``access_log``)."""
        path = self.dir / "access.log"
        if not path.exists():
            return 0
        return sum(1 for line in path.read_text().splitlines() if "/nginx_status" not in line)

    def requests_served(self) -> int:
        """nginx's own request count (stub_status); it includes this status request."""
        url = f"http://{self.host}:{self.port}/nginx_status"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
        m = re.search(r"\n\s*\d+\s+\d+\s+(\d+)", body)
        assert m, body
        return int(m.group(1))
