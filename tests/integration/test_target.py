"""Integration tests for the embedded target: a real subprocess, real loopback sockets.

Every test asserts the kernel-visible effect (bytes on the wire, EOF, ECONNRESET,
ECONNREFUSED, elapsed time) rather than trusting the server's own account.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from poolsvc.target import TargetServer

ROOT = Path(__file__).resolve().parents[2]
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _normal(target: TargetServer) -> None:
    target.clear()
    target.control("reset_counters")


def connect(target: TargetServer, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((target.host, target.port), timeout=timeout)


def read_head(f: BinaryIO) -> tuple[bytes, dict[bytes, bytes]]:
    """Status line and lower-cased headers of one response."""
    status = f.readline().rstrip(b"\r\n")
    headers: dict[bytes, bytes] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_response(f: BinaryIO) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One Content-Length-framed response."""
    status, headers = read_head(f)
    return status, headers, f.read(int(headers[b"content-length"]))


def counters(target: TargetServer) -> tuple[int, int, int]:
    s = target.stats()
    return s["requests"], s["responses"], s["connections"]


def test_keep_alive_two_requests_one_connection(target: TargetServer) -> None:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=2)
    try:
        bodies = []
        for _ in range(2):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Server") == "poolsvc-target"
            assert resp.getheader("Content-Type") == "text/plain"
            bodies.append(resp.read())
            sock = conn.sock
        assert bodies == [b"ok\n", b"ok\n"]
        assert conn.sock is sock  # not reconnected
    finally:
        conn.close()
    assert counters(target) == (2, 2, 1)


def test_pipelined_requests_answered_in_order_despite_delay(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        paths = [b"/delay/100", b"/bytes/5", b"/health"]
        s.sendall(b"".join(b"GET %s HTTP/1.1\r\n\r\n" % p for p in paths))
        assert [read_response(f)[2] for _ in range(3)] == [b"ok\n", b"abcde", b"ok\n"]


def test_head_has_headers_but_no_body(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(b"HEAD /bytes/10 HTTP/1.1\r\n\r\n" + GET)
        status, headers = read_head(f)
        assert (status, headers[b"content-length"]) == (b"HTTP/1.1 200 OK", b"10")
        # A body would show up here instead of the next status line.
        assert read_response(f)[::2] == (b"HTTP/1.1 200 OK", b"ok\n")


def test_status_204_has_no_body_nor_length(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(b"GET /status/204 HTTP/1.1\r\n\r\nGET /status/503 HTTP/1.1\r\n\r\n")
        status, headers = read_head(f)
        assert status == b"HTTP/1.1 204 No Content"
        assert b"content-length" not in headers
        assert read_response(f)[::2] == (b"HTTP/1.1 503 Service Unavailable", b"503\n")


@pytest.mark.parametrize("size", [1000, 0])
def test_chunked_body(target: TargetServer, size: int) -> None:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=2)
    try:
        conn.request("GET", f"/chunked/{size}")
        resp = conn.getresponse()
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.getheader("Content-Length") is None
        body = resp.read()
    finally:
        conn.close()
    assert body == (b"abcdefghijklmnopqrstuvwxyz" * 39)[:size]


def test_close_delimited_body_ends_at_eof(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(b"GET /close-delimited/5000 HTTP/1.1\r\n\r\n")
        status, headers = read_head(f)
        assert status == b"HTTP/1.1 200 OK"
        assert b"content-length" not in headers
        assert b"transfer-encoding" not in headers
        assert len(f.read()) == 5000  # read() returns only at EOF


@pytest.mark.parametrize("mode", [False, True], ids=["route", "mode"])
def test_http10_closes_after_response(target: TargetServer, mode: bool) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(GET)
        read_response(f)  # the connection exists before the mode is set
        if mode:
            target.set(http10=True)
        s.sendall(b"GET /chunked/4 HTTP/1.1\r\n\r\n" if mode else b"GET /http10 HTTP/1.1\r\n\r\n")
        status, _, body = read_response(f)
        assert status == b"HTTP/1.0 200 OK"
        assert len(body) in (3, 4)
        assert f.read() == b""


@pytest.mark.parametrize("mode", [False, True], ids=["route", "mode"])
def test_connection_close_then_eof(target: TargetServer, mode: bool) -> None:
    if mode:
        target.set(close_after_response=True)
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(GET if mode else b"GET /close HTTP/1.1\r\n\r\n")
        _, headers, body = read_response(f)
        assert (headers[b"connection"], body) == (b"close", b"ok\n")
        assert f.read() == b""


def test_http10_client_keep_alive_negotiation(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(f)[1][b"connection"] == b"keep-alive"
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_response(f)[2] == b"ok\n"
        assert f.read() == b""


def test_malformed_request_gets_400_and_close(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(b"garbage\r\n\r\n")
        assert read_response(f)[0] == b"HTTP/1.1 400 Bad Request"
        assert f.read() == b""


def test_hang_never_answers(target: TargetServer) -> None:
    target.set(hang=True)
    with connect(target, timeout=0.3) as s:
        s.sendall(GET)
        with pytest.raises(TimeoutError):
            s.recv(1024)
        target.clear()
        s.sendall(GET)  # documented: a hung connection stays hung
        with pytest.raises(TimeoutError):
            s.recv(1024)
    assert counters(target)[:2] == (1, 0)
    with connect(target) as s:
        s.sendall(GET)
        assert s.recv(1024).startswith(b"HTTP/1.1 200")


def test_reset_is_a_real_rst_on_existing_connection(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(GET)
        read_response(f)
        target.set(reset=True)
        s.sendall(GET)
        # A FIN would read as b""; only an RST makes recv() fail with ECONNRESET.
        with pytest.raises(ConnectionResetError):
            s.recv(1024)
    stats = target.stats()
    assert (stats["requests"], stats["responses"], stats["resets"]) == (2, 1, 1)


@pytest.mark.parametrize(("mode_ms", "path", "least"), [(200, "/", 0.2), (0, "/delay/150", 0.15)])
def test_delay(target: TargetServer, mode_ms: int, path: str, least: float) -> None:
    target.set(delay_ms=mode_ms)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=2)
    try:
        started = time.monotonic()
        conn.request("GET", path)
        assert conn.getresponse().read() == b"ok\n"
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert least <= elapsed < least + 1.0


def test_idle_close_applies_to_existing_connection(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(GET)
        read_response(f)
        idle_since = time.monotonic()
        target.set(idle_close_ms=300)
        assert s.recv(1) == b""  # FIN, not RST and not a timeout
        elapsed = time.monotonic() - idle_since
    assert 0.25 <= elapsed < 1.5


def test_restart_drops_connections_refuses_then_relistens(target: TargetServer) -> None:
    port = target.port
    with connect(target) as s, s.makefile("rb") as f:
        s.sendall(GET)
        read_response(f)
        started = time.monotonic()
        target.restart(down_ms=600)
        assert s.recv(1) == b""
        assert time.monotonic() - started < 0.5  # closed by the restart, not by a timeout
    with pytest.raises(ConnectionRefusedError):
        connect(target).close()
    while True:
        try:
            s = connect(target)
            break
        except ConnectionRefusedError:
            assert time.monotonic() - started < 3
            time.sleep(0.02)
    with s, s.makefile("rb") as f:
        assert time.monotonic() - started >= 0.55
        assert s.getpeername()[1] == port
        s.sendall(GET)
        assert read_response(f)[2] == b"ok\n"


def test_stop_and_start_listening(target: TargetServer) -> None:
    with connect(target) as s, s.makefile("rb") as f:
        target.control("stop_listening")
        try:
            with pytest.raises(ConnectionRefusedError):
                connect(target).close()
            s.sendall(GET)  # existing connections keep working
            assert read_response(f)[2] == b"ok\n"
        finally:
            target.control("start_listening")
    with connect(target):
        pass
    assert target.stats()["listening"] is True


def test_malformed_control_requests_get_errors(target: TargetServer) -> None:
    bad = [b"not json", b"[1]", b'{"cmd": "nope"}', b'{"cmd": "set", "hang": "yes"}', b"{}"]
    with socket.create_connection((target.host, target.control_port), timeout=2) as c:
        c.sendall(b"\n".join([*bad, b'{"cmd": "stats"}']) + b"\n")
        with c.makefile("rb") as f:
            replies = [json.loads(f.readline()) for _ in range(len(bad) + 1)]
    assert [r["ok"] for r in replies] == [False] * len(bad) + [True]
    assert all(r["error"]["code"] and r["error"]["message"] for r in replies[:-1])
    # the product's protocol: a misplaced argument is named, not ignored
    assert "did you mean args.hang?" in replies[3]["error"]["message"]
    assert replies[-1]["data"]["mode"]["hang"] is False  # the bad set changed nothing
    with pytest.raises(RuntimeError, match="delay_ms"):
        target.set(delay_ms=-1)
    with connect(target) as s:
        s.sendall(GET)
        assert s.recv(1024).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost"])
def test_non_loopback_host_exits_2(host: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "poolsvc.target", "--host", host],
        cwd=ROOT,
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_sigterm_exits_cleanly_and_stop_is_idempotent() -> None:
    server = TargetServer().start()
    port = server.port
    with socket.create_connection((server.host, port), timeout=2):
        server.stop()
    server.stop()
    assert server.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=2).close()


def test_an_embedded_target_that_cannot_start_is_exit_4_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from poolsvc.cli import main as cli
    from poolsvc.target.launcher import TargetServer, TargetStartError

    def refuse(self: TargetServer, timeout: float = 10.0) -> TargetServer:
        raise TargetStartError("target did not start (exit status 1, got b'')")

    monkeypatch.setattr(TargetServer, "start", refuse)
    assert cli.main(["run", "--duration", "1"]) == 4
    err = capsys.readouterr().err
    assert err == (
        "poolsvc: the embedded target could not start: target did not start"
        " (exit status 1, got b'')\n"
    )
