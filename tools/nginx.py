"""nginx as a real target: one worker process, a config in a private directory, loopback only.

Used by the integration tests and the benchmarks.  The config has two servers: the
main one (keep-alive for long, ``return 200``, ``/health``, ``/nginx_status`` for
nginx's own request count, ``/chunked``), and a ``short`` one that closes idle
keep-alive sockets after 1 s, used or not. Given a certificate, a third serves the
main one's locations over TLS (``tls_port``), with session tickets and a session
cache, and the TLS versions asked for.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


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
        self.port = free_port()
        self.short_port = free_port()
        self.tls_port = free_port() if tls else 0
        log = f"{directory}/access.log" if access_log else "off"
        block = (
            self.TLS.format(
                host=host, port=self.tls_port, cert=tls[0], key=tls[1], protocols=tls_protocols
            )
            if tls
            else ""
        )
        conf = self.CONF.format(
            d=directory, host=host, port=self.port, short_port=self.short_port, log=log, tls=block
        )
        self.conf = directory / "nginx.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cpu: int | None = None) -> None:
        """Start nginx (pinned to ``cpu`` with taskset when given) and wait until it listens."""
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
