"""The control socket and poolctl against a real `poolsvc serve` under load."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolsvc.ctl.ctlclient import CommandRefused, ServiceUnavailable
from poolsvc.ctl.protocol import MAX_LINE
from poolsvc.target import TargetServer
from tests.conftest import Service, settled, until

pytestmark = pytest.mark.integration


@pytest.fixture
def service(target: TargetServer, tmp_path: Path) -> Iterator[Service]:
    svc = Service(target, tmp_path, "--workers", "2", "--size", "6")
    yield svc
    svc.close()


@pytest.fixture
def public_dir_service(target: TargetServer) -> Iterator[Service]:
    """A service whose socket directory sits directly in /tmp (world-traversable), so
    only the socket's own directory and modes stand between another uid and the socket."""
    directory = Path(tempfile.mkdtemp(prefix="poolsvc-perm-", dir="/tmp"))
    svc = Service(target, directory, "--workers", "1", "--size", "2")
    yield svc
    svc.close()
    shutil.rmtree(directory, ignore_errors=True)


# Every command round-trips ---------------------------------------------------------------
def test_status_shape_and_poolctl_table(service: Service) -> None:
    s = service.call("status")
    assert s["service"]["mode"] == "serve" and s["service"]["state"] == "running"
    assert [w["state"] for w in s["workers"]] == ["RUNNING", "RUNNING"]
    assert all(w["pid"] and w["heartbeat_age_ms"] < 1000 for w in s["workers"])
    (t,) = s["targets"]
    assert t["breaker"]["state"] == "CLOSED" and t["pool"]["active"] + t["pool"]["idle"] == 6
    proc = service.poolctl("status")
    assert proc.returncode == 0 and "CLOSED" in proc.stdout and "RUNNING" in proc.stdout
    doc = json.loads(service.poolctl("status", "--json").stdout)
    assert doc["totals"]["requests.total"] > 0
    watch = service.poolctl("status", "--watch", "0.1", "--count", "3")
    assert watch.returncode == 0 and watch.stdout.count("WORKER") == 3


def test_metrics_formats(service: Service) -> None:
    m = service.call("metrics", format="json")
    assert m["requests.total"] >= m["requests.ok"] > 0
    text = service.poolctl("metrics").stdout
    assert "requests.total=" in text and "latency.p99_ms=" in text
    prom = service.poolctl("metrics", "--format", "prometheus").stdout
    samples = [line for line in prom.splitlines() if line and not line.startswith("#")]
    assert all(len(line.rsplit(" ", 1)) == 2 for line in samples)
    assert 'poolsvc_requests_total{result="ok"}' in prom
    assert 'poolsvc_request_duration_seconds_bucket{le="+Inf"}' in prom
    assert 'poolsvc_breaker_state{target="' in prom


def test_breaker_force_open_fails_fast_then_reset(service: Service) -> None:
    assert service.poolctl("breaker", "open").returncode == 0
    served = settled(lambda: int(service.target.stats()["requests"]), timeout=3.0)
    time.sleep(0.3)
    assert service.target.stats()["requests"] == served  # nothing reaches the target
    assert service.call("metrics")["errors.breaker_open"] > 0
    assert json.loads(service.poolctl("breaker").stdout)["state"] == "OPEN"
    service.call("breaker", action="close")
    assert service.call("breaker")["forced"] is True
    service.call("breaker", action="reset")
    until(lambda: service.target.stats()["requests"] > served)
    assert service.call("breaker")["state"] == "CLOSED"


def test_load_concurrency_pause_resume(service: Service) -> None:
    assert service.poolctl("load", "--concurrency", "2").returncode == 0
    assert sum(w["concurrency"] for w in service.call("workers")) == 2
    service.call("load", pause=True)
    # one tick to take effect, then in-flight requests finish
    before = settled(lambda: int(service.target.stats()["requests"]), timeout=3.0)
    time.sleep(0.4)
    assert service.target.stats()["requests"] == before
    assert service.call("status")["service"]["state"] == "paused"
    assert service.poolctl("load", "--resume").returncode == 0
    until(lambda: service.target.stats()["requests"] > before)
    refused = service.poolctl("load", "--rate", "100")
    assert refused.returncode == 3 and "conflict" in refused.stderr
    # the value of pause (or resume) is what is wanted: pause false resumes
    assert service.call("load", pause=True)["paused"] is True
    assert service.call("load", pause=False)["paused"] is False
    assert service.call("load", resume=False)["paused"] is True
    assert service.call("load", resume=True)["paused"] is False


def test_workers_scale_down_and_up(service: Service) -> None:
    first = [w["pid"] for w in service.call("workers")]
    assert service.poolctl("workers", "1").returncode == 0

    def states() -> list[str]:
        return [w["state"] for w in service.call("workers")]

    until(lambda: states() == ["RUNNING", "RETIRED"])  # drained, exited, reaped
    total = service.requests()
    service.call("workers", count=3)
    until(lambda: states() == ["RUNNING"] * 3)
    workers = service.call("workers")
    assert workers[0]["pid"] == first[0] and workers[1]["pid"] != first[1]  # a new incarnation
    assert sum(w["pool_size"] for w in workers) == 6
    assert service.requests() > total  # totals kept across the retirement
    # Down again: the slot added by the scale-up retires like any other.
    added = workers[2]["pid"]
    service.call("workers", count=2)
    until(lambda: states() == ["RUNNING", "RUNNING", "RETIRED"])
    assert not psutil.pid_exists(added) or psutil.Process(added).status() == "zombie"


def test_drain_exits_zero_with_a_report(service: Service) -> None:
    assert service.poolctl("drain").returncode == 0
    code, out = service.wait_exit()
    assert code == 0
    assert "[pool] created" in out and "requests.total=" in out
    assert not service.path.exists()  # the socket is removed on exit


def test_stop_exits_quickly(service: Service) -> None:
    start = time.monotonic()
    assert service.call("stop") == {"stopping": True}
    code, _ = service.wait_exit()
    assert code == 0 and time.monotonic() - start < 5


# Exit codes of poolctl ------------------------------------------------------------------
def test_poolctl_exit_codes(service: Service, tmp_path: Path) -> None:
    bad = service.poolctl("workers", "x")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    refused = service.poolctl("workers", "999")
    assert refused.returncode == 3 and "bad_request" in refused.stderr
    missing = tmp_path / "nothing" / "here.sock"
    proc = subprocess.run(
        [sys.executable, "-m", "poolsvc.cli.poolctl", "--control", str(missing), "status"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 4 and str(missing) in proc.stderr
    env = {**os.environ, "POOLSVC_CONTROL": str(service.path)}
    via_env = subprocess.run(
        [sys.executable, "-m", "poolsvc.cli.poolctl", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert via_env.returncode == 0


# Protocol errors ----------------------------------------------------------------------------
def raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))  # blocking: waits for room in the accept queue
    sock.settimeout(5)
    return sock


def read_line(sock: socket.socket) -> dict[str, Any]:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    doc: dict[str, Any] = orjson.loads(buf)
    return doc


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{nope\n", "bad_json"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"cmd": 5}\n', "bad_request"),
        (b'{"cmd": "status", "args": []}\n', "bad_request"),
        (b'{"cmd": "launch"}\n', "unknown_command"),
        (b'{"cmd": "workers", "args": {"count": "3"}}\n', "bad_request"),
        (b'{"cmd": "workers", "args": {"count": true}}\n', "bad_request"),
        (b'{"cmd": "load", "args": {}}\n', "bad_request"),
        (b'{"cmd": "breaker", "args": {"action": "explode"}}\n', "bad_request"),
        (b'{"cmd": "metrics", "args": {"format": "xml"}}\n', "bad_request"),
    ],
)
def test_bad_requests_get_json_errors_and_the_connection_stays(
    service: Service, line: bytes, code: str
) -> None:
    with raw(service.path) as sock:
        sock.sendall(line)
        reply = read_line(sock)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert reply["error"]["message"]
        sock.sendall(b'{"id": 9, "cmd": "status"}\n')  # the same connection still works
        again = read_line(sock)
        assert again["ok"] is True and again["id"] == 9


def test_oversized_line_is_refused_then_skipped(service: Service) -> None:
    with raw(service.path) as sock:
        sock.sendall(b'{"cmd": "' + b"x" * (MAX_LINE + 10))
        assert read_line(sock)["error"]["code"] == "too_large"
        sock.sendall(b'tail"}\n{"cmd": "status"}\n')
        assert read_line(sock)["ok"] is True


def test_partial_lines_are_assembled(service: Service) -> None:
    with raw(service.path) as sock:
        for piece in (b'{"cm', b'd": "sta', b'tus", "id": "p"}', b"\n"):
            sock.sendall(piece)
            time.sleep(0.02)
        assert read_line(sock)["id"] == "p"


def test_a_full_house_makes_room_for_a_newcomer(service: Service) -> None:
    # 16 clients that ask nothing fill every slot. A newcomer is not refused: it waits
    # in the listen queue until the client idle for longest (1 s at least) is evicted.
    held = [raw(service.path) for _ in range(16)]
    try:
        start = time.monotonic()
        with raw(service.path) as extra:
            extra.sendall(b'{"id": 1, "cmd": "status"}\n')
            assert read_line(extra)["ok"] is True
        assert time.monotonic() - start < 3
        evicted = [s for s in held if _closed_with_busy(s)]
        # the newcomer's room (and perhaps one more, if a client of the fixture's start
        # still held a slot when the sixteenth came)
        assert 1 <= len(evicted) <= 2
        assert service.poolctl("status").returncode == 0  # and again: another one goes
    finally:
        for sock in held:
            sock.close()


def _closed_with_busy(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        line = sock.makefile("rb").readline()
    except TimeoutError:
        return False
    return bool(line) and orjson.loads(line)["error"]["code"] == "busy"


def test_a_stuck_client_does_not_block_the_service(service: Service) -> None:
    with raw(service.path) as stuck:
        stuck.sendall(b'{"cmd": "status"}\n' * 2000)  # and never reads the replies
        time.sleep(0.5)
        start = time.monotonic()
        assert service.call("status")["service"]["state"] == "running"
        assert time.monotonic() - start < 2


# Fuzz under load ---------------------------------------------------------------------------
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
COMMANDS = st.sampled_from(["status", "metrics", "breaker", "load", "workers", "bogus", ""])
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda c, a: orjson.dumps({"cmd": c, "args": a}), COMMANDS, JSONISH),
    st.builds(
        lambda c, a: orjson.dumps({"cmd": c, "args": {"action": a, "format": a, "count": a}}),
        COMMANDS,
        JSONISH,
    ),
    st.just(b"x" * (MAX_LINE + 100)),
)


@pytest.fixture(scope="module")
def fuzz_service(
    target_server: TargetServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    svc = Service(target_server, tmp_path_factory.mktemp("fuzz"), "--workers", "2")
    yield svc
    svc.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks=st.lists(PAYLOADS, min_size=1, max_size=4), split=st.integers(1, 50))
def test_fuzz_every_reply_is_json_and_the_service_keeps_going(
    fuzz_service: Service, chunks: list[bytes], split: int
) -> None:
    sock = raw(fuzz_service.path)
    try:
        data = b"\n".join(c.replace(b"\n", b" ") for c in chunks) + b"\n"
        for i in range(0, len(data), split * 97):  # partial writes
            sock.sendall(data[i : i + split * 97])
        sock.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := sock.recv(65536):
            buf += chunk
    finally:
        sock.close()
    for line in buf.splitlines():
        reply = orjson.loads(line)  # every reply is one valid JSON object
        assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
        if not reply["ok"]:
            assert reply["error"]["code"] and reply["error"]["message"]


def test_fuzz_left_the_service_healthy_and_leak_free(fuzz_service: Service) -> None:
    # Runs after the fuzz test (same module fixture): fds measured around a second burst.
    supervisor = psutil.Process(fuzz_service.proc.pid)
    baseline = settled(supervisor.num_fds)  # the fuzz test's last clients closed
    for payload in (b"{bad\n", b'{"cmd":"status"}\n', b"\x00\xff" * 100 + b"\n"):
        for _ in range(50):
            with raw(fuzz_service.path) as sock:
                sock.sendall(payload)
    # each client is closed as the service reads its end (a busy machine takes longer);
    # a leak keeps the count above the baseline past the deadline
    until(lambda: supervisor.num_fds() <= baseline)
    assert supervisor.num_fds() == baseline
    before = fuzz_service.requests()
    until(lambda: fuzz_service.requests() > before)  # still generating load
    assert fuzz_service.call("status")["service"]["state"] == "running"
    if fuzz_service.proc.poll() is not None:
        pytest.fail("the service died")


# Permissions --------------------------------------------------------------------------------
def _connect_as_nobody(path: Path) -> str:
    """Fork, drop to uid 65534, try the socket; returns what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        outcome = "?"
        try:
            os.setgid(65534)
            os.setuid(65534)
            # A raw socket: poolctl's own client would refuse this directory anyway;
            # what is tested here is that the service keeps other users out.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                reply = sock.makefile("rb").readline()
            doc = orjson.loads(reply)
            outcome = "allowed" if doc.get("ok") else doc["error"]["code"]
        except PermissionError:
            outcome = "EACCES"
        except BaseException as exc:
            outcome = f"other: {exc!r}"
        finally:
            os.write(w, outcome.encode())
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")


@needs_root
def test_other_uid_is_kept_out_by_the_modes(public_dir_service: Service) -> None:
    service = public_dir_service
    assert oct(service.path.stat().st_mode & 0o777) == "0o600"
    assert oct(service.path.parent.stat().st_mode & 0o777) == "0o700"
    assert _connect_as_nobody(service.path) == "EACCES"


@needs_root
def test_forged_modes_still_refused_by_peer_credentials(public_dir_service: Service) -> None:
    service = public_dir_service
    service.path.parent.chmod(0o777)
    service.path.chmod(0o666)
    assert _connect_as_nobody(service.path) == "forbidden"
    # and our own client no longer trusts a socket anybody could have put there
    with pytest.raises(ServiceUnavailable, match="writable by others"):
        service.call("status")
    service.path.parent.chmod(0o700)
    assert service.call("status")["service"]["state"] == "running"


def test_second_service_on_the_same_socket_is_refused(service: Service) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolsvc",
            "serve",
            "--host",
            service.target.host,
            "--port",
            str(service.target.port),
            "--control",
            str(service.path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "already listening" in proc.stderr
    assert service.call("status")["service"]["state"] == "running"


def test_inject_set_list_auto_clear_and_clear(service: Service) -> None:
    set_reset = service.poolctl("inject", "reset", "--rate", "0.5", "--seed", "3")
    assert set_reset.returncode == 0, set_reset.stderr
    timed = service.poolctl("inject", "delay", "--rate", "0.2", "--delay-ms", "20", "--for", "1s")
    assert timed.returncode == 0
    listed = json.loads(service.poolctl("inject", "list").stdout)
    assert {f["fault"] for f in listed} == {"reset", "delay"}
    assert [f["per"] for f in listed] == ["request", "request"]

    def without_clock(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "remaining_s"} for f in faults]

    in_status = without_clock(service.call("status")["injection"])
    assert in_status == without_clock(service.call("inject"))
    until(lambda: service.call("metrics").get("injected.reset", 0) > 0)
    service.call("load", pause=True)  # still counts: a reset and its ECONNRESET both in
    settled(lambda: int(service.call("metrics")["requests.total"]), timeout=3.0)
    m = service.call("metrics")
    service.call("load", resume=True)
    assert m["injected.reset"] > 0 and m["errors.ECONNRESET"] == m["injected.reset"], m
    time.sleep(1.2)  # the delay fault clears itself after 1 s
    assert [f["fault"] for f in service.call("inject")] == ["reset"]
    assert service.poolctl("inject", "clear").returncode == 0
    assert service.call("inject") == []
    before, deadline = -1, time.monotonic() + 10
    while (now := service.call("metrics")["injected.reset"]) != before:  # a tick, to see it
        assert time.monotonic() < deadline, "faults still injected after the clear"
        before = now
        time.sleep(0.3)
    time.sleep(0.3)
    assert service.call("metrics")["injected.reset"] == before  # nothing injected any more


def test_inject_argument_errors(service: Service) -> None:
    assert service.poolctl("inject", "reset").returncode == 2  # --rate is required
    bad = service.poolctl("inject", "explode", "--rate", "0.1")
    assert bad.returncode == 2 and "invalid choice: 'explode'" in bad.stderr
    with pytest.raises(CommandRefused, match=r"fault must be one of .*, not 'explode'"):
        service.call("inject", action="set", fault="explode", rate=0.1)
    with pytest.raises(CommandRefused, match=r"fault must be one of .*, not 'explode'"):
        service.call("inject", action="clear", fault="explode")
    assert service.poolctl("inject", "clear", "explode").returncode == 2
    with pytest.raises(CommandRefused, match="delay_ms applies to delay, not to reset"):
        service.call("inject", action="set", fault="reset", rate=0.1, delay_ms=5)
    assert service.poolctl("inject", "reset", "--rate", "2").returncode == 3
    assert service.poolctl("inject", "delay", "--rate", "0.1", "--for", "soon").returncode == 2
