"""Chaos and soak: real faults against a running service, nothing lost, nothing leaked.

    python -m tools.chaos              # every scenario at full size (`make chaos`)
    python -m tools.chaos --soak 180   # the soak, bounded (`make soak`)

Each scenario returns a :class:`Result`, one row of the table: scenario, faults
injected, requests, errors by class, recovery time, leaked fds, lost counts, and
pass/fail. The tests (``tests/chaos``) run the same functions with smaller
parameters as part of ``make test``.

Every request accounted for (``poolsvc.ledger``):

- **sent** (the requests column) must equal ok + failed + lost + abandoned, and
  the **target's own count** (embedded target counter, nginx access log) must
  equal sent: fewer only by the requests in doubt (a worker killed inside a
  ``send``), or on a restart or a broken network path, and then only by
  requests that failed.
- **lost** counts requests in flight in workers that were killed: counted, not
  missing.

Faults on the network path run in a network namespace this harness creates
(a veth pair, nginx inside). Where namespaces cannot be created, those scenarios
are skipped and say why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from poolsvc.client import ControlClient, ServiceUnavailable
from poolsvc.target import TargetServer
from tools.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
READ_MS, CONNECT_MS, WAIT_MS = 500, 300, 1000
# The breaker opens for 100 ms, doubling per trip in a row up to 400 ms: recovery is
# measured for the pool, not for a breaker that a long outage taught to wait.
# A request may wait for the pool, connect, read, and once re-send on a fresh socket.
HANG_BOUND_MS = WAIT_MS + 2 * (CONNECT_MS + READ_MS) + 200


@dataclass
class Result:
    scenario: str
    faults: str
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    leaked_fds: int = 0
    lost: int = 0
    served: int | None = None  # what the target itself counted (None: not counted)
    passed: bool = False
    note: str = ""

    def row(self) -> str:
        errors = " ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "-"
        rec = f"{self.recovery_s:.2f}s" if self.recovery_s is not None else "-"
        verdict = "SKIP" if self.note.startswith("skipped") else "PASS" if self.passed else "FAIL"
        return (
            f"| {self.scenario} | {self.faults} | {self.requests} | "
            f"{'-' if self.served is None else self.served} | {errors} | "
            f"{rec} | {self.leaked_fds} | {self.lost} | {verdict} | {self.note} |"
        )


class Service:
    """`poolsvc serve` with a private control socket; its final report is parsed on exit."""

    def __init__(self, host: str, port: int, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="poolsvc-chaos-")
        os.chmod(self.dir, 0o700)
        self.path = Path(self.dir) / "c.sock"
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "poolsvc",
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--control",
                str(self.path),
                "--read-timeout-ms",
                str(READ_MS),
                "--connect-timeout-ms",
                str(CONNECT_MS),
                "--pool-wait-ms",
                str(WAIT_MS),
                "--backoff-cap-ms",
                "100",
                "--breaker-open-ms",
                "100",
                "--breaker-open-max-ms",
                "400",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(ServiceUnavailable, OSError):
                if self.metrics().get("requests.ok", 0) > 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the service did not start")

    def call(self, cmd: str, **args: Any) -> Any:
        with ControlClient(self.path, timeout=10) as c:
            return c.call(cmd, **args)

    def metrics(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("metrics", format="json")
        return data

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.call("workers") if w["state"] == "RUNNING"]

    def drain(self) -> dict[str, Any]:
        """Drain and wait; the final report as {metrics..., 'audit': {...}}."""
        self.call("drain")
        out, err = self.proc.communicate(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        return parse_report(out, self.proc.returncode, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_report(out: str, code: int | None, err: str = "") -> dict[str, Any]:
    """A text report as {metric: value, ..., 'audit': {...}, 'exit': code}."""
    report: dict[str, Any] = {"exit": code, "stderr": err[-500:]}
    for line in out.splitlines():
        if "=" in line and " " not in line:
            key, value = line.split("=", 1)
            report[key] = _number(value)
        if line.startswith("[audit] fds"):
            report["audit"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return report


def _number(text: str) -> Any:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


LEDGER = ("sent", "ok", "failed", "lost", "abandoned", "in_doubt")


def errors_of(report: dict[str, Any]) -> dict[str, int]:
    """Request failures (sent or not) and connection errors, by name."""
    out: dict[str, int] = {}
    for k, v in report.items():
        for prefix in ("errors.", "connect_errors."):
            if k.startswith(prefix) and not k.startswith("errors.phase."):
                name = k[len(prefix) :]
                out[name] = out.get(name, 0) + int(v)
    return out


class RateProbe:
    """Requests answered per second, sampled from the control socket."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> int:
        ok = int(self.svc.metrics()["requests.ok"])
        if self.samples and ok < self.samples[-1][1]:
            raise AssertionError(f"totals went backwards: {self.samples[-1][1]} -> {ok}")
        self.samples.append((time.monotonic(), ok))
        return ok

    def rate(self, window: float = 0.3) -> float:
        self.sample()
        time.sleep(window)
        (t0, a), (t1, b) = self.samples[-1], (time.monotonic(), self.sample())
        return (b - a) / (t1 - t0)

    def recovery(self, baseline: float, since: float, limit: float = 10.0) -> float | None:
        """Seconds from ``since`` until the rate is back to 80 % of ``baseline``."""
        while time.monotonic() - since < limit:
            if self.rate(0.1) >= 0.8 * baseline:
                return time.monotonic() - since
        return None


def _finish(
    res: Result, report: dict[str, Any], served: int, may_drop: bool = False, extra_ok: bool = True
) -> Result:
    """Fill in the common columns from the final report and the target's own count.

    Every request is accounted for (:mod:`poolsvc.ledger`): sent = ok + failed + lost
    + abandoned, and the target counted exactly what was sent (perhaps one less per
    worker killed inside a send: ``in_doubt``). ``may_drop``: the fault can drop a request
    after it was sent (a restart resets what the target had not read yet, a broken
    path loses packets), so the target may count fewer, but each of those failed."""
    c = {k: int(report.get(f"requests.{k}", 0)) for k in LEDGER}
    res.requests = c["sent"]
    res.served = served
    res.errors = errors_of(report)
    audit = report.get("audit", {})
    res.leaked_fds = int(audit.get("leaked", -1))
    res.lost = c["lost"]
    balanced = c["sent"] == c["ok"] + c["failed"] + c["lost"] + c["abandoned"]
    low = c["sent"] - c["in_doubt"] - (c["failed"] if may_drop else 0)
    exact = low <= served <= c["sent"]
    hang_ok = float(report.get("latency.max_ms", 0)) <= HANG_BOUND_MS
    res.passed = (
        report.get("exit") == 0
        and res.leaked_fds == 0
        and balanced
        and exact
        and hang_ok
        and audit.get("now") == audit.get("baseline")
        and extra_ok
    )
    if not hang_ok:
        res.note += f" max latency {report.get('latency.max_ms')} ms > {HANG_BOUND_MS} ms;"
    if not balanced:
        res.note += f" sent {c['sent']} != ok+failed+lost+abandoned;"
    if not exact:
        res.note += f" the target counted {served}, sent {c['sent']};"
    return res


# Scenarios --------------------------------------------------------------------------------
@contextlib.contextmanager
def nginx_server() -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory() as d:
        server = Nginx(Path(d), access_log=True)  # its count survives restarts
        server.start()
        try:
            yield server
        finally:
            server.stop()


def restarts(kind: str, count: int = 10, gap: float = 1.0) -> Result:
    """The target restarted ``count`` times during a run; recovery time after each."""
    res = Result(f"restart {kind} x{count}", f"{count} restarts")
    recoveries: list[float] = []
    with contextlib.ExitStack() as stack:
        if kind == "nginx":
            ng = stack.enter_context(nginx_server())
            host, port = ng.host, ng.port
        else:
            target = stack.enter_context(TargetServer())
            host, port = target.host, target.port
        svc = Service(host, port, "--workers", "2", "--size", "8")
        try:
            probe = RateProbe(svc)
            baseline = probe.rate(1.0)
            for _ in range(count):
                t0 = time.monotonic()
                if kind == "nginx":
                    ng.stop()
                    time.sleep(0.1)
                    ng.start()
                else:
                    target.restart(down_ms=100)
                took = probe.recovery(baseline, t0)
                if took is None:
                    res.note += " did not recover within 10 s;"
                    break
                recoveries.append(took)
                time.sleep(max(0.0, gap - took))
            report = svc.drain()
        finally:
            svc.stop()
        served = ng.requests_logged() if kind == "nginx" else target.stats()["requests"]
    res.recovery_s = max(recoveries) if recoveries else None
    if recoveries:
        median = sorted(recoveries)[len(recoveries) // 2]
        res.note += f" recovery median {median:.2f}s max {max(recoveries):.2f}s"
    return _finish(res, report, served, may_drop=True, extra_ok=len(recoveries) == count)


def worker_kills(count: int = 6, gap: float = 1.5) -> Result:
    """A worker SIGKILLed every ``gap`` seconds: replaced, totals never decrease."""
    res = Result(f"worker SIGKILL x{count}", f"{count} kills")
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8")
        try:
            probe = RateProbe(svc)
            baseline = probe.rate(1.0)
            worst = 0.0
            for _ in range(count):
                victim = random.choice(svc.worker_pids())
                t0 = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                took = probe.recovery(baseline, t0)
                worst = max(worst, took if took is not None else 99.0)
                time.sleep(max(0.0, gap - (time.monotonic() - t0)))
            restarts = sum(w["restarts"] for w in svc.call("workers"))
            report = svc.drain()
        finally:
            svc.stop()
        served = target.stats()["requests"]
    res.recovery_s = worst
    ok = restarts == count
    if not ok:
        res.note += f" restarts {restarts} != {count};"
    return _finish(res, report, served, extra_ok=ok)


def supervisor_kill() -> Result:
    """The supervisor SIGKILLed: its workers and the embedded target exit by themselves."""
    res = Result("supervisor SIGKILL", "1 kill")
    proc = subprocess.Popen(
        [PY, "-m", "poolsvc", "run", "--workers", "2", "--duration", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(2.0)
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(family, timeout=5)
        res.passed = len(family) == 3 and not alive
        res.note = f"{len(family)} children, {len(alive)} left after 5 s"
    finally:
        proc.kill()
        proc.wait()
    return res


def sigterm_drain() -> Result:
    """SIGTERM under load: exit 0, every request accounted for exactly."""
    res = Result("SIGTERM under load", "SIGTERM")
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8")
        time.sleep(1.0)
        svc.proc.send_signal(signal.SIGTERM)
        out, _ = svc.proc.communicate(timeout=60)
        report = parse_report(out, svc.proc.returncode)
        svc.stop()
        served = target.stats()["requests"]
    res = _finish(res, report, served)  # a drain loses nothing: exact
    return res


def _poolsvc_run(ng: Nginx, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "poolsvc", "run", "--host", ng.host, "--port", str(ng.port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _workers_of(pid: int) -> list[psutil.Process]:
    kids = psutil.Process(pid).children()
    return [k for k in kids if k.status() != psutil.STATUS_ZOMBIE]


def nginx_worker_kills(seconds: float = 10.0, count: int = 13) -> Result:
    """`poolsvc run` against nginx (access log on) with ``count`` worker SIGKILLs spread
    over the run: what they had in flight is counted lost, and nginx logged exactly the
    requests sent (sent = ok + failed + lost + abandoned)."""
    res = Result(f"nginx, {count} worker SIGKILLs in {seconds:g}s", f"{count} kills")
    with nginx_server() as ng:
        proc = _poolsvc_run(ng, "--workers", "2", "--size", "16", "--duration", str(seconds))
        kills = 0
        try:
            time.sleep(0.5)
            for _ in range(count):
                victims = _workers_of(proc.pid)
                if victims:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(random.choice(victims).pid, signal.SIGKILL)
                        kills += 1
                time.sleep((seconds - 1.0) / count)
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            proc.kill()
            proc.wait()
        report = parse_report(out, proc.returncode, err)
        served = ng.requests_logged()
    res.note = f"{kills} kills, lost {report.get('requests.lost')}, in doubt "
    res.note += f"{report.get('requests.in_doubt')};"
    return _finish(res, report, served, extra_ok=kills == count)


def nginx_drain_stuck(stuck_s: float = 0.3) -> Result:
    """SIGTERM while nginx is SIGSTOPped: the requests stuck in flight at the drain
    deadline are counted abandoned, and nginx, once continued, logs exactly what was sent."""
    res = Result("nginx SIGSTOPped, then SIGTERM drain", "SIGSTOP + SIGTERM")
    with nginx_server() as ng, tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "run.json"
        cfg.write_text(json.dumps({"drain_timeout_ms": 500, "read_timeout_ms": 30_000}))
        proc = _poolsvc_run(
            ng, "--workers", "2", "--size", "8", "--duration", "60", "--config", str(cfg)
        )
        assert ng.proc is not None
        frozen = [ng.proc.pid, *(c.pid for c in psutil.Process(ng.proc.pid).children())]
        try:
            time.sleep(1.0)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(stuck_s)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        report = parse_report(out, proc.returncode, err)
        served, settled = -1, 0
        while settled < 5:  # nginx reads and logs what it was sent once it runs again
            time.sleep(0.1)
            now = ng.requests_logged()
            settled = settled + 1 if now == served else 0
            served = now
    res.note = f"abandoned {report.get('requests.abandoned')};"
    return _finish(res, report, served, extra_ok=int(report.get("requests.abandoned", 0)) > 0)


def emfile() -> Result:
    """A worker with 24 descriptors and a pool of 40: EMFILE, named as such; no crash."""
    res = Result("EMFILE (RLIMIT_NOFILE 24)", "fd limit")
    script = (
        "import json,sys\nfrom tests.conftest import run\n"
        "s=run(sys.argv[1],int(sys.argv[2]),pool_size=40,concurrency=4,duration_s=1.0)\n"
        "print(json.dumps({'e':{**s.errors(),**s.connect_errors()},"
        "'ok':s.counters['requests.ok'],'t':s.counters['requests.sent']}))"
    )

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    with TargetServer() as target:
        proc = subprocess.run(
            [PY, "-c", script, target.host, str(target.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=limit,
        )
        res.served = target.stats()["requests"]
    if proc.returncode != 0:
        res.note = proc.stderr[-200:]
        return res
    doc = json.loads(proc.stdout)
    res.errors, res.requests = doc["e"], doc["t"]
    res.passed = (
        doc["e"].get("EMFILE", 0) > 0
        and doc["ok"] > 0
        and "ECONNREFUSED" not in doc["e"]
        and res.served == res.requests
    )
    return res


# Faults on a real network path: a namespace with nginx behind a veth pair -------------------
NS_HOST, NS_PEER = "10.254.77.1", "10.254.77.2"


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str:
    """'' if this machine lets us create a namespace and a veth pair, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return ""


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, Nginx]]:
    """A private namespace, a veth pair to it, and nginx listening inside it."""
    ns = f"psvc{os.getpid()}"
    veth = f"pv{os.getpid() % 100000}"
    steps = [
        ("ip", "netns", "add", ns),
        ("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}n"),
        ("ip", "link", "set", f"{veth}n", "netns", ns),
        ("ip", "addr", "add", f"{NS_HOST}/30", "dev", veth),
        ("ip", "link", "set", veth, "up"),
        ("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_PEER}/30", "dev", f"{veth}n"),
        ("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}n", "up"),
        ("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"),
    ]
    with tempfile.TemporaryDirectory() as d:
        try:
            for step in steps:
                done = _sh(*step)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(step)}: {done.stderr.strip()}")
            server = Nginx(Path(d), host=NS_PEER, wrap=["ip", "netns", "exec", ns])
            server.start()
            try:
                yield ns, server
            finally:
                server.stop()
        finally:
            _sh("ip", "link", "del", veth)
            _sh("ip", "netns", "del", ns)


def _path_fault(
    name: str,
    start: Callable[[str, Nginx], str],
    stop: Callable[[str, Nginx], None],
    hold: float = 2.0,
) -> Result:
    """Run against nginx in a namespace; ``start`` breaks the path (returns '' or a skip
    reason) for ``hold`` seconds, ``stop`` mends it; the pool must detect and recover."""
    res = Result(name, name)
    why = netns_unavailable()
    if why:
        res.note = f"skipped: {why}"
        return res
    try:
        with namespace() as (ns, ng):
            svc = Service(ng.host, ng.port, "--workers", "2", "--size", "8")
            try:
                probe = RateProbe(svc)
                baseline = probe.rate(1.0)
                why = start(ns, ng)
                if why:
                    res.note = f"skipped: {why}"
                    svc.stop()
                    return res
                time.sleep(hold)
                stop(ns, ng)
                t0 = time.monotonic()
                res.recovery_s = probe.recovery(baseline, t0)
                report = svc.drain()
            finally:
                svc.stop()
            served = ng.requests_served() - 1
    except RuntimeError as exc:
        res.note = f"skipped: cannot build the namespace ({exc})"
        return res
    res = _finish(res, report, served, may_drop=True, extra_ok=res.recovery_s is not None)
    res.passed = res.passed and sum(res.errors.values()) > 0  # the fault was really felt
    return res


def blackhole() -> Result:
    """A blackhole route: packets to the target vanish, no FIN, no RST (a real half-open)."""

    def start(ns: str, ng: Nginx) -> str:
        done = _sh("ip", "route", "add", "blackhole", f"{NS_PEER}/32")
        return "" if done.returncode == 0 else done.stderr.strip()

    def stop(ns: str, ng: Nginx) -> None:
        _sh("ip", "route", "del", "blackhole", f"{NS_PEER}/32")

    return _path_fault("blackhole route 2s", start, stop)


def sigstop() -> Result:
    """The target SIGSTOPped: the kernel still accepts and buffers, nothing answers."""

    def pids(ng: Nginx) -> list[int]:
        assert ng.proc is not None
        return [ng.proc.pid, *(c.pid for c in psutil.Process(ng.proc.pid).children(recursive=True))]

    def start(ns: str, ng: Nginx) -> str:
        for pid in pids(ng):
            os.kill(pid, signal.SIGSTOP)
        return ""

    def stop(ns: str, ng: Nginx) -> None:
        for pid in pids(ng):
            os.kill(pid, signal.SIGCONT)

    return _path_fault("target SIGSTOP 2s", start, stop)


def _run_json(ng: Nginx, *args: str) -> subprocess.CompletedProcess[str]:
    """One `poolsvc run --json` (1 worker) against nginx in the namespace."""
    cmd = [
        PY,
        "-m",
        "poolsvc",
        "run",
        "--host",
        ng.host,
        "--port",
        str(ng.port),
        "--workers",
        "1",
        "--json",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def packet_loss(percent: int = 3, seconds: float = 4.0) -> Result:
    """nftables drops ``percent`` % of the target's incoming TCP: the run completes, p99 shows
    it."""
    res = Result(f"packet loss {percent}%", f"{percent}% loss (nftables)")
    why = netns_unavailable() or ("" if shutil.which("nft") else "nft (nftables) is not installed")
    if why:
        res.note = f"skipped: {why}"
        return res
    with namespace() as (ns, ng):
        ruleset = Path(tempfile.mkdtemp()) / "loss.nft"
        ruleset.write_text(
            "table inet psvc {\n  chain in {\n    type filter hook input priority 0;\n"
            f"    meta l4proto tcp numgen random mod 100 < {percent} drop\n  }}\n}}\n"
        )
        done = _sh("ip", "netns", "exec", ns, "nft", "-f", str(ruleset))
        shutil.rmtree(ruleset.parent, ignore_errors=True)
        if done.returncode != 0:
            res.note = f"skipped: nftables unavailable ({done.stderr.strip()[:80]})"
            return res
        # a lost SYN is retransmitted after 1 s: the connect timeout must outlast it
        out = _run_json(
            ng,
            "--rate",
            "500",
            "--duration",
            str(seconds),
            "--read-timeout-ms",
            "3000",
            "--connect-timeout-ms",
            "3000",
        )
        res.served = ng.requests_served() - 1  # minus this status request
    if out.returncode != 0:
        res.note = out.stderr[-200:]
        return res
    m = json.loads(out.stdout)["metrics"]
    res.requests, res.errors = m["requests.sent"], errors_of(m)
    res.leaked_fds = sum(len(a["leaked"]) for a in json.loads(out.stdout)["audit"])
    # TCP's minimum retransmission timeout is 200 ms: lost segments show in the tail
    # TCP retransmits what the path lost: only a request that failed may be missing
    exact = m["requests.sent"] - m["requests.failed"] <= res.served <= m["requests.sent"]
    res.passed = (
        m["latency.p99_ms"] >= 100 and m["requests.ok"] > 0 and res.leaked_fds == 0 and exact
    )
    res.note = f"p50 {m['latency.p50_ms']} ms, p99 {m['latency.p99_ms']} ms"
    return res


def added_delay(ms: int = 20) -> Result:
    """tc netem adds ``ms`` of delay on the path: p50 must show it."""
    res = Result(f"netem delay {ms}ms", f"+{ms} ms (netem)")
    why = netns_unavailable() or ("" if shutil.which("tc") else "tc is not installed")
    if why:
        res.note = f"skipped: {why}"
        return res
    with namespace() as (_, ng):
        veth = f"pv{os.getpid() % 100000}"
        done = _sh("tc", "qdisc", "add", "dev", veth, "root", "netem", "delay", f"{ms}ms")
        if done.returncode != 0:
            res.note = f"skipped: netem unavailable in this kernel ({done.stderr.strip()[:60]})"
            return res
        out = _run_json(ng, "--rate", "200", "--duration", "3")
    m = json.loads(out.stdout)["metrics"]
    res.requests = m["requests.sent"]
    res.passed = m["latency.p50_ms"] >= ms and m["requests.failed"] == 0
    res.note = f"p50 {m['latency.p50_ms']} ms"
    return res


# Soak ------------------------------------------------------------------------------------------
def soak(seconds: float = 180.0, every: float = 10.0) -> Result:
    """Steady load for ``seconds``: per-worker RSS and fd counts stay flat, totals exact."""
    res = Result(f"soak {seconds:g}s", "none")
    samples: dict[int, list[tuple[int, int]]] = {}
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8", "--rate", "3000")
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(min(every, max(0.0, end - time.monotonic())))
                for pid in svc.worker_pids():
                    p = psutil.Process(pid)
                    samples.setdefault(pid, []).append((p.memory_info().rss, p.num_fds()))
            report = svc.drain()
        finally:
            svc.stop()
        served = target.stats()["requests"]
    flat = True
    notes = []
    for pid, rows in samples.items():
        rows = rows[1:] or rows  # the first sample is the warm-up
        rss = [r for r, _ in rows]
        fds = [f for _, f in rows]
        growth = max(rss) - rss[0]
        # tolerance: 4 MiB or 10 % of RSS; fds within the pool shard's churn
        if growth > max(4 << 20, rss[0] // 10) or max(fds) - min(fds) > 8:
            flat = False
        notes.append(f"w{pid}: rss +{growth / 2**20:.1f} MiB, fds {min(fds)}-{max(fds)}")
    res.note = "; ".join(notes)
    return _finish(res, report, served, extra_ok=flat and bool(samples))


SCENARIOS: dict[str, Callable[[], Result]] = {
    "restart-embedded": lambda: restarts("embedded"),
    "restart-nginx": lambda: restarts("nginx"),
    "worker-kills": worker_kills,
    "supervisor-kill": supervisor_kill,
    "sigterm": sigterm_drain,
    "nginx-kills": nginx_worker_kills,
    "nginx-drain": nginx_drain_stuck,
    "emfile": emfile,
    "blackhole": blackhole,
    "sigstop": sigstop,
    "loss": packet_loss,
    "delay": added_delay,
}


def table(results: list[Result]) -> str:
    head = (
        "| scenario | faults injected | sent | target counted | errors by class | recovery "
        "| leaked fds | lost | result | notes |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.row() for r in results)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--soak", type=float, help="run only the soak, this many seconds")
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run these scenarios")
    args = p.parse_args()
    if args.soak:
        results = [soak(args.soak)]
    else:
        results = []
        for name in args.only or SCENARIOS:
            print(f"... {name}", file=sys.stderr, flush=True)
            results.append(SCENARIOS[name]())
    print(table(results))
    failed = [r for r in results if not r.passed and not r.note.startswith("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
