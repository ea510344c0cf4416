"""The accelerated path's pure parts held to the Python path's: the framer to llhttp
(httptools), the histogram bucket to workers.shared.histogram.

The framer may only accept what llhttp accepts, and read it the same way: every
response it accepts is parsed again with httptools here, which must agree on the
status, on where the message ends (exactly the bytes given) and on keep-alive.
"""

from __future__ import annotations

import os
from dataclasses import replace
from types import SimpleNamespace

import httptools
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from workers.lane import fastpath as lane
from workers.net.tls import TlsSpec
from workers.pool.target import TargetSpec
from workers.shared import histogram

pytestmark = pytest.mark.skipif(
    not lane.ACCELERATED and bool(os.environ.get("POOLSVC_NO_EXTENSIONS")),
    reason="the pure-Python path was asked for",
)

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 14:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


def test_the_extension_is_built_wherever_the_pure_path_was_not_asked_for() -> None:
    """make test builds it (a compiler and Python's headers are part of the set-up)."""
    assert lane.ACCELERATED, lane.PATH


class Seen:
    """httptools' view of one response, read as the Python path reads it
    (workers.pool.connection: keep-alive when the message completes)."""

    def __init__(self) -> None:
        self.begun = self.complete = 0
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.complete += 1
        self.keep_alive = self.parser.should_keep_alive()


def llhttp(data: bytes) -> tuple[int, bool] | None:
    """(status, keep-alive) when httptools reads ``data`` as exactly one whole response."""
    seen = Seen()
    try:
        seen.parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None
    if seen.begun != 1 or seen.complete != 1:
        return None
    return seen.parser.get_status_code(), seen.keep_alive


def test_a_plain_keep_alive_response_is_recognised() -> None:
    assert lane.frame(NGINX, 32768) == (200, NGINX.index(b"\r\n\r\n") + 4)
    plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert lane.frame(plain, 32768) == (404, len(plain))


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (NGINX[:-1], "a partial body"),
        (NGINX + b"H", "bytes after the response"),
        (NGINX[:40], "a partial head"),
        (NGINX.replace(b"HTTP/1.1", b"HTTP/1.0"), "HTTP/1.0"),
        (NGINX.replace(b"keep-alive", b"close"), "Connection: close"),
        (NGINX.replace(b"keep-alive", b"Upgrade"), "Connection: upgrade"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + NGINX, "an interim response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "204"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", "304"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\n\r\nok", "close-delimited"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "two lengths"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "a signed length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n x\r\n\r\nok", "obs-fold"),
        (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "space before the colon"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok", "a NUL in a value"),
        (b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\nok", "proxy"),
        (b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", "a status over 599"),
        (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "no reason phrase"),
    ],
)
def test_what_the_framer_leaves_to_the_python_path(response: bytes, why: str) -> None:
    assert lane.frame(response, 32768) is None, why


def test_a_head_over_max_header_bytes_is_left_to_the_python_path() -> None:
    head = NGINX.index(b"\r\n\r\n") + 4
    assert lane.frame(NGINX, head) == (200, head)
    assert lane.frame(NGINX, head - 1) is None


TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFXYZ", min_size=1)
NAMES = st.one_of(
    TOKEN,
    st.sampled_from(
        [
            *("Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding"),
            *("Connection", "connection", "Proxy-Connection", "Keep-Alive", "Upgrade", "Host"),
        ]
    ),
)
VALUES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"keep-alive", b"close", b"chunked", b"0", b"2", b" 2 ", b"Keep-Alive"]),
)


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """Responses near the recognised shape, then perhaps bent one byte."""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1"]))
    status = draw(st.sampled_from([b"200", b"204", b"301", b"404", b"503", b"100", b"2x0"]))
    reason = draw(st.sampled_from([b"OK", b"", b"Not Found", b"A\tB", b"\xff"]))
    body = draw(st.binary(max_size=8))
    lines = [version + b" " + status + b" " + reason]
    if draw(st.booleans()):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    for name, value in draw(st.lists(st.tuples(NAMES, VALUES), max_size=4)):
        lines.append(name.encode() + draw(st.sampled_from([b": ", b":", b" : "])) + value)
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    if draw(st.booleans()) and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=3000, deadline=None)
@given(responses())
@example(NGINX)
def test_whatever_the_framer_accepts_llhttp_reads_the_same(data: bytes) -> None:
    framed = lane.frame(data, 32768)
    if framed is None:
        return
    status, head = framed
    assert llhttp(data) == (status, True)
    assert data[head - 4 : head] == b"\r\n\r\n"
    assert 200 <= status <= 599


@given(st.integers(min_value=-10, max_value=2**40))
@example(0)
@example(127)
@example(128)
@example(2**32 - 1)
@example(2**33)
def test_the_bucket_of_a_latency_is_the_python_paths(us: int) -> None:
    assert lane.bucket_of(us) == histogram.bucket_of(us)


# Which path a run takes ---------------------------------------------------------------
PLAIN = TargetSpec("127.0.0.1", 80)


@pytest.mark.parametrize(
    ("specs", "rate", "path"),
    [
        ([PLAIN], 0.0, "accelerated"),
        ([PLAIN], 100.0, "accelerated"),  # the open loop's steady state is the lane's too
        ([PLAIN, PLAIN], 0.0, "pure (several targets in the closed loop)"),
        ([PLAIN, PLAIN], 100.0, "accelerated"),  # the open loop renews from the schedule
        ([PLAIN, replace(PLAIN, tls=TlsSpec(None))], 100.0, "pure (TLS)"),
        ([replace(PLAIN, tls=TlsSpec(None))], 0.0, "pure (TLS)"),
        ([replace(PLAIN, nodelay=False)], 0.0, "pure (the Nagle study's tuned transport)"),
        ([replace(PLAIN, split_writes=True)], 0.0, "pure (the Nagle study's tuned transport)"),
        ([replace(PLAIN, method="HEAD")], 0.0, "pure (HEAD requests)"),
        ([replace(PLAIN, keep_alive=False)], 0.0, "pure (keep_alive false)"),
        ([replace(PLAIN, method="POST", body=b"x")], 0.0, "accelerated"),
    ],
)
def test_the_path_a_run_takes(
    specs: list[TargetSpec], rate: float, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOLSVC_NO_EXTENSIONS", raising=False)
    assert lane.choose(specs, rate) == path
    monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "1")
    assert lane.choose(specs, rate) == "pure (POOLSVC_NO_EXTENSIONS)"
    monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "0")  # (0 asks for nothing)
    assert lane.choose(specs, rate) == path


# Busy polling: only with a core to spare ----------------------------------------------
def test_the_governor_spins_only_after_ticks_in_a_row_with_a_core_to_spare() -> None:
    readings = iter([2, 2, 2, 2, 3, 2, 2, 2, None, 1, 1, 1])
    fake = SimpleNamespace(spin=0.5)
    governor = lane.SpinGovernor(fake, 50e-6, cpus=2, read=lambda: next(readings))  # type: ignore[arg-type]
    assert fake.spin == 0.0  # nothing until the machine has been seen
    seen = []
    for _ in range(12):
        governor.tick()
        seen.append(fake.spin)
    on = 50e-6
    assert seen == [0, 0, on, on, 0, 0, 0, on, 0, 0, 0, on]


def test_a_streak_counts_ticks_with_no_more_runnable_tasks_than_cores() -> None:
    assert lane.spare_streak(2, 2, 4) == 5
    assert lane.spare_streak(3, 2, 4) == 0
    assert lane.spare_streak(None, 2, 4) == 0  # unknown: no spinning


def test_the_machine_can_be_read() -> None:
    running = lane.runnable()
    assert running is not None and running >= 1  # this test itself is running
