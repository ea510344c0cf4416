"""The control socket, poolctl and the files poolsvc writes, attacked as a careless user
and a hostile local one would: bounded, strict, unspoofable, never destroying what is
not ours, and a clear one-line error instead of a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolsvc.ctl import protocol as control
from poolsvc.ctl.protocol import ControlError
from poolsvc.target import TargetServer
from tests.conftest import POOLSVC, Service, address

pytestmark = pytest.mark.integration
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")
NOBODY = 65534


def poolctl(path: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolsvc.cli.poolctl", "--control", str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def service(target: TargetServer, tmp_path: Path) -> Iterator[Service]:
    (tmp_path / "svc").mkdir()
    svc = Service(target, tmp_path / "svc", "--workers", "1", "--size", "2")
    yield svc
    svc.close()


# Bounded -----------------------------------------------------------------------------------
def test_a_client_that_never_reads_cannot_grow_the_supervisor(service: Service) -> None:
    supervisor = psutil.Process(service.proc.pid)
    before = supervisor.memory_info().rss
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(service.path))
    sock.setblocking(False)
    line = b'{"cmd": "status"}\n' * 1000
    written, deadline = 0, time.monotonic() + 3
    try:
        while time.monotonic() < deadline:  # pipeline requests, never read a reply
            try:
                written += sock.send(line)
            except BlockingIOError:
                time.sleep(0.01)  # the supervisor stopped reading us: our writes block
            except OSError:
                break  # or it dropped us
        grown = supervisor.memory_info().rss - before
        assert grown < 40 * 2**20, f"the supervisor grew {grown >> 20} MiB"
        assert written < 64 * 2**20  # the kernel's buffers filled: back-pressure held
        assert service.call("status")["service"]["state"] == "running"
    finally:
        sock.close()


def test_clients_that_trickle_bytes_cannot_keep_poolctl_out(service: Service) -> None:
    # Sixteen clients, each sending a byte every 0.3 s and never a whole request.
    socks = []
    for _ in range(16):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(service.path))
        socks.append(s)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"{")
                except OSError:
                    pass
            time.sleep(0.3)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        start = time.monotonic()
        proc = poolctl(service.path, "status")
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - start < 5
    finally:
        stop.set()
        thread.join()
        for s in socks:
            s.close()


@contextlib.contextmanager
def full_queue(path: Path) -> Iterator[None]:
    """A Unix listener at ``path`` that never accepts, its accept queue filled."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(str(path))
            except BlockingIOError:
                f.close()
                break
            fillers.append(f)
        yield
    finally:
        for f in fillers:
            f.close()
        listener.close()


def test_poolctl_gives_up_when_nobody_accepts_or_answers(tmp_path: Path) -> None:
    # A listener that never accepts, its queue full: connect would block forever.
    d = tmp_path / "ctl"
    d.mkdir(mode=0o700)
    path = d / "control.sock"
    with full_queue(path):
        start = time.monotonic()
        proc = poolctl(path, "--timeout", "1", "status", timeout=20)
        assert proc.returncode == 4, proc.stderr
        assert "accepts no connection" in one_line(proc)
        assert time.monotonic() - start < 6
    # Accepted by the kernel, but nobody reads or answers.
    quiet = d / "quiet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(quiet))
        listener.listen(8)
        proc = poolctl(quiet, "--timeout", "1", "status", timeout=20)
    assert proc.returncode == 4 and "no reply" in one_line(proc)


# Strict --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_doc", "message"),
    [
        (
            {"cmd": "inject", "fault": "reset", "rate": 1.0},
            "unknown key 'fault' in the request; did you mean args.fault?",
        ),
        ({"cmd": "breaker", "args": {"acton": "open"}}, "breaker takes no argument 'acton'"),
        ({"cmd": "status", "verbose": True}, "unknown key 'verbose' in the request"),
        ({"cmd": "status", "args": {"json": True}}, "status takes no argument 'json'"),
    ],
)
def test_unknown_and_misplaced_keys_are_refused_by_name(
    request_doc: dict[str, object], message: str
) -> None:
    with pytest.raises(ControlError) as info:
        control.decode(orjson.dumps(request_doc))
    assert info.value.code == "bad_request" and message in info.value.message


def test_a_misplaced_argument_never_turns_into_a_silent_no_op(service: Service) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(service.path))
        sock.sendall(b'{"cmd":"inject","fault":"reset","rate":1.0}\n')
        reply = orjson.loads(sock.makefile("rb").readline())
    assert reply["ok"] is False and "args.fault" in reply["error"]["message"]
    assert service.call("inject") == []  # nothing injected, nothing pretended
    assert service.call("status")["service"]["state"] == "running"


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--watch", "0"],
        ["status", "--watch", "-1"],
        ["status", "--watch", "1", "--count", "0"],
        ["status", "--count", "2"],
        ["inject", "clear", "bogus"],
        ["inject", "bogus", "--rate", "0.1"],
        ["--timeout", "0", "status"],
    ],
)
def test_poolctl_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = poolctl(tmp_path / "none.sock", *args, timeout=10)
    assert proc.returncode == 2, proc.stderr
    assert "poolctl" in one_line(proc) and "error:" in one_line(proc)


# Unspoofable ---------------------------------------------------------------------------------
def _forger(path: Path, uid: int, ready: threading.Event) -> int:
    """A process of ``uid`` listening at ``path``, answering every request with a
    forged success. Returns its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            os.setgid(uid)
            os.setuid(uid)  # listen() below records this uid as the peer's credentials
            sock.listen(8)
            os.write(w, b"x")
            while True:
                conn, _ = sock.accept()
                conn.recv(65536)
                conn.sendall(b'{"id": 1, "ok": true, "data": {"stopping": true}}\n')
                conn.close()
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    ready.set()
    return pid


@needs_root
def test_poolctl_refuses_a_listener_of_another_uid(tmp_path: Path) -> None:
    d = tmp_path / "ctl"
    d.mkdir(mode=0o700)
    path = d / "control.sock"
    pid = _forger(path, NOBODY, threading.Event())
    try:
        proc = poolctl(path, "stop")
        assert proc.returncode == 4 and "stopping" not in proc.stdout
        assert f"the process listening is of uid {NOBODY}" in one_line(proc)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@needs_root
def test_poolctl_refuses_a_directory_it_cannot_trust(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    path = d / "control.sock"
    pid = _forger(path, 0, threading.Event())  # even a listener of ours, in their room
    try:
        os.chown(d, NOBODY, NOBODY)
        proc = poolctl(path, "stop")
        assert proc.returncode == 4 and f"belongs to uid {NOBODY}" in one_line(proc)
        os.chown(d, 0, 0)
        d.chmod(0o1777)  # sticky and world-writable, like /tmp
        proc = poolctl(path, "stop")
        assert proc.returncode == 4 and "writable by others" in one_line(proc)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# Never destroy what is not ours ------------------------------------------------------------
def serve(target: TargetServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLSVC, "serve", *address(target), "--workers", "1", "--size", "2", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def test_control_paths_that_are_not_ours_are_refused_and_kept(
    target: TargetServer, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    config = mine / "myconfig.json"
    config.write_text('{"pool_size": 2}')
    proc = serve(target, "--control", str(config))
    assert proc.returncode == 2 and "is not a socket" in one_line(proc)
    assert config.read_text() == '{"pool_size": 2}'  # not deleted
    dangling = mine / "dangling.sock"
    dangling.symlink_to(mine / "nowhere")
    proc = serve(target, "--control", str(dangling))
    assert proc.returncode == 2 and "is a symbolic link" in one_line(proc)
    assert dangling.is_symlink()
    proc = serve(target, "--control", str(mine / "missing" / "c.sock"))
    assert proc.returncode == 2 and "missing' does not exist" in one_line(proc).replace(
        str(mine / "missing"), "missing'"
    )
    proc = serve(target, "--control", "/tmp/poolsvc-test-world.sock")
    assert proc.returncode == 2 and "writable by others" in one_line(proc)


@needs_root
def test_control_directory_of_another_user_or_a_symlink_is_refused(
    target: TargetServer, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    proc = serve(target, "--control", str(theirs / "c.sock"))
    assert proc.returncode == 2 and f"belongs to uid {NOBODY}" in one_line(proc)
    # The default private directory, pre-created as a symbolic link (through TMPDIR).
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / f"poolsvc-{os.getuid()}").symlink_to(theirs)
    env = {"TMPDIR": str(tmp), "XDG_RUNTIME_DIR": "", "POOLSVC_CONTROL": ""}
    proc = serve(target, **env)
    assert proc.returncode == 2 and "is a symbolic link" in one_line(proc)


def test_output_files_never_follow_a_symlink(target: TargetServer, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    report = tmp_path / "audit.json"
    report.symlink_to(victim)  # what an attacker plants in a shared directory
    Path(f"{report}.tmp").symlink_to(victim)  # and where the old code wrote first
    proc = subprocess.run(
        [
            *POOLSVC,
            "run",
            *address(target),
            "--workers",
            "1",
            "--size",
            "2",
            "--duration",
            "1.5",
            "--audit-every",
            "0.5",
            "--audit-report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious"
    assert not report.is_symlink() and orjson.loads(report.read_bytes())["verdict"] == "clean"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".audit.json.")]
    assert leftovers == []


def _run_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("poolsvc-run-*")}


def test_no_run_directory_is_left_behind(target: TargetServer, tmp_path: Path) -> None:
    before = _run_dirs()
    proc = serve(target, "--control", str(tmp_path / "no" / "c.sock"))  # a failed start
    assert proc.returncode == 2
    assert _run_dirs() == before
    # A supervisor SIGKILLed cannot clean up; the next one removes what it left.
    killed = subprocess.Popen(
        [*POOLSVC, "run", *address(target), "--workers", "1", "--duration", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not any(d.startswith(f"poolsvc-run-{killed.pid}-") for d in _run_dirs()):
            assert time.monotonic() < deadline, "the run directory never appeared"
            time.sleep(0.05)
        family = psutil.Process(killed.pid).children(recursive=True)
    finally:
        killed.kill()
        killed.wait()
    psutil.wait_procs(family, timeout=5)
    assert any(d.startswith(f"poolsvc-run-{killed.pid}-") for d in _run_dirs())
    again = subprocess.run(
        [*POOLSVC, "run", *address(target), "--workers", "1", "--requests", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert not any(d.startswith(f"poolsvc-run-{killed.pid}-") for d in _run_dirs())
    assert _run_dirs() <= before | _run_dirs()


# Clear errors, never tracebacks --------------------------------------------------------------
@pytest.mark.parametrize("option", ["--timeline", "--audit-report"])
def test_unwritable_outputs_are_refused_before_the_load(
    target: TargetServer, tmp_path: Path, option: str
) -> None:
    for path, why in (
        (tmp_path / "missing" / "out", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        proc = subprocess.run(
            [*POOLSVC, "run", *address(target), "--duration", "5", option, str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2 and why in one_line(proc)
        assert option.lstrip("-").replace("-", "_") in proc.stderr
    assert target.stats()["requests"] == 0  # refused before any load


def test_poolctl_audit_out_unwritable_is_a_usage_error(service: Service, tmp_path: Path) -> None:
    proc = poolctl(service.path, "audit", "--out", str(tmp_path / "missing" / "a.txt"))
    assert proc.returncode == 2 and "does not exist" in one_line(proc)
    ok = poolctl(service.path, "audit", "--out", str(tmp_path / "a.txt"))
    assert ok.returncode == 0, ok.stderr
    text = (tmp_path / "a.txt").read_text()
    assert "time_wait toward each target:" in text and "{'" not in text  # not a dict repr


def test_prometheus_labels_are_escaped(target: TargetServer, tmp_path: Path) -> None:
    name = 'a"b\\c'
    cfg = tmp_path / "named.json"
    cfg.write_bytes(
        orjson.dumps({"targets": [{"host": target.host, "port": target.port, "name": name}]})
    )
    (tmp_path / "svc").mkdir()
    svc = Service(None, tmp_path / "svc", "--config", str(cfg), "--workers", "1")
    try:
        text = svc.call("metrics", format="prometheus")
    finally:
        svc.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families["poolsvc_breaker_state"].samples
    assert sample.labels == {"target": name}
    assert families["poolsvc_requests"].samples  # the rest parses too


@pytest.mark.parametrize(
    ("host", "hint"),
    [("http://127.0.0.1:8080/p", "is a URL"), ("127.0.0.1:8080", "carries a port")],
)
def test_a_host_that_is_a_url_or_carries_a_port_is_a_usage_error(host: str, hint: str) -> None:
    proc = subprocess.run(
        [*POOLSVC, "run", "--host", host, "--port", "80", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and hint in one_line(proc)


def test_a_bracketed_ipv6_host_is_accepted() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.bind(("::1", 0))
        listener.listen(8)  # accepts (the kernel does), never answers: the request times out
        port = listener.getsockname()[1]
        proc = subprocess.run(
            [
                *POOLSVC,
                "run",
                *("--host", "[::1]", "--port", str(port), "--workers", "1", "--size", "1"),
                *("--requests", "1", "--read-timeout-ms", "200"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 0, proc.stderr  # not "cannot resolve", not a usage error
    assert f"target [::1]:{port}" in proc.stdout and "failed.read_timeout=1" in proc.stdout


def test_the_socket_of_a_stopped_service_with_a_full_queue_is_not_stale(tmp_path: Path) -> None:
    # A connect that finds the accept queue full (EAGAIN) means a listener is there,
    # merely stopped or busy: its socket must not be taken for a stale one and removed.
    from poolsvc.ctl.sockpath import claim

    path = tmp_path / "c.sock"
    with full_queue(path):
        with pytest.raises(OSError, match="already listening"):
            claim(path)
        assert path.exists()
    claim(path)  # now nothing listens: a stale socket of ours, removed
    assert not path.exists()
