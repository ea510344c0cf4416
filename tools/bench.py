"""`make bench`: poolsvc side by side with wrk, hey and Locust, and its own figures.

    python -m tools.bench [--rounds 5] [--seconds 5] [--write docs/benchmarks.md] [--only 1 ...]

(``--only``: just the sections numbered, e.g. ``--only 1`` for the head to head.)

Sections:

1. **Head to head.**
   - Setup: nginx on core 0 (one worker, ``return 200``, keep-alive); every load
     generator on core 1; 50 connections each.
   - Tools: poolsvc (1 worker, closed loop) through its accelerated path and
     through the pure-Python one (``POOLSVC_NO_EXTENSIONS=1``), wrk ``-t1 -c50``,
     hey ``-c 50``, Locust FastHttpUser (1 process, 50 users).
   - Rounds are interleaved (A B C D, A B C D, ...).
   - Per tool: req/s median, min and max; CPU per request (user + sys of the
     generator's processes, from the OS); p50/p99.
   - The median of the per-round ratios poolsvc/wrk, poolsvc/hey and
     poolsvc/locust.
2. **CPU per request in the steady state.** User and kernel time of the process
   doing the work (poolsvc's worker, wrk), start-up excluded, per request
   counted by nginx: where the difference between the two comes from.
3. **Reading status costs nothing.** poolsvc throughput with
   ``poolctl status --watch 0.2`` running, against without (interleaved).
4. **Scaling.** Workers 1 and 2 against the embedded target and nginx (both
   cores shared).
5. **Open-loop accuracy.** Achieved over asked rate at a few rates.
6. **Memory.** Worker RSS with 1,000 and 10,000 pooled connections.
7. **Where the time goes.** py-spy samples of a worker under load, as self time
   per function.

Each section prints a markdown table. ``--write`` puts them all in
docs/benchmarks.md, with the commands and the machine. Every load run is
bounded by its duration.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from poolsvc.target import TargetServer
from tools.nginx import Nginx, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LOCUST = ROOT / ".venv-bench" / "bin" / "locust"
GEN_CPU, SERVER_CPU = "1", 0


@contextlib.contextmanager
def nginx(pinned: bool = True) -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory() as d:
        server = Nginx(Path(d))
        server.start(cpu=SERVER_CPU if pinned else None)
        try:
            yield server
        finally:
            server.stop()


def timed(
    cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[str, float]:
    """Run ``cmd``; its stdout and the CPU seconds (user + sys) it and its children used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout + proc.stderr, cpu


def pin(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", GEN_CPU, *cmd]


# One function per tool: (req/s, requests, p50 ms, p99 ms, cpu s) ----------------------
def run_argv(url: tuple[str, int], *extra: str) -> list[str]:
    """`poolsvc run` against ``url`` with one worker; ``extra`` adds or overrides flags."""
    return [
        PY,
        "-m",
        "poolsvc",
        "run",
        "--host",
        url[0],
        "--port",
        str(url[1]),
        "--workers",
        "1",
        *extra,
    ]


def path_env(pure: bool) -> dict[str, str]:
    """The environment of a poolsvc run through its pure-Python path, or its accelerated
    one (workers.lane.fastpath)."""
    env = {k: v for k, v in os.environ.items() if k != "POOLSVC_NO_EXTENSIONS"}
    return {**env, "POOLSVC_NO_EXTENSIONS": "1"} if pure else env


def poolsvc_metrics(
    url: tuple[str, int], seconds: float, extra: list[str] | None = None, pure: bool = False
) -> tuple[dict[str, Any], float]:
    """One pinned `poolsvc run` (1 worker, 50 connections): its metrics and CPU seconds.
    The run must have taken the path asked for (its ``run.path``)."""
    cmd = run_argv(url, "--size", "50", "--duration", str(seconds), "--json", *(extra or []))
    out, cpu = timed(pin(cmd), env=path_env(pure))
    metrics: dict[str, Any] = json.loads(out[out.index("{") :])["metrics"]
    took = metrics["run.path"]
    if (took == "accelerated") == pure:
        raise RuntimeError(f"asked for the {'pure' if pure else 'accelerated'} path, ran {took}")
    return metrics, cpu


def run_poolsvc(
    url: tuple[str, int], seconds: float, extra: list[str] | None = None, pure: bool = False
) -> dict[str, float]:
    m, cpu = poolsvc_metrics(url, seconds, extra, pure)
    return {
        "rps": m["run.rps"],
        "requests": m["requests.sent"],
        "p50": m["latency.p50_ms"],
        "p99": m["latency.p99_ms"],
        "cpu": cpu,
    }


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: tuple[str, int], seconds: float) -> dict[str, float]:
    out, cpu = timed(
        pin(
            [
                "wrk",
                "-t1",
                "-c50",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                f"http://{url[0]}:{url[1]}/",
            ]
        )
    )
    return {**parse_wrk(out), "cpu": cpu}


def _find(pattern: str, text: str, flags: int = 0) -> str:
    m = re.search(pattern, text, flags)
    if m is None:
        raise ValueError(f"no match for {pattern!r} in the tool's output:\n{text[-800:]}")
    return m.group(1)


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, requests, p50 and p99 (ms) from `wrk --latency` output."""
    lat = {}
    for pct in ("50", "99"):
        text = _find(rf"^\s+{pct}%\s+(\S+)", out, re.M)  # e.g. 173.00us
        lat[pct] = _ms(_find(r"^([\d.]+)", text), _find(r"([a-z]+)$", text))
    return {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        "requests": int(_find(r"(\d+) requests in", out)),
        "p50": lat["50"],
        "p99": lat["99"],
    }


def run_hey(url: tuple[str, int], seconds: float) -> dict[str, float]:
    out, cpu = timed(
        pin(["hey", "-c", "50", "-z", f"{seconds}s", "-cpus", "1", f"http://{url[0]}:{url[1]}/"])
    )
    return {**parse_hey(out), "cpu": cpu}


def parse_hey(out: str) -> dict[str, float]:
    """req/s, requests (2xx responses), p50 and p99 (ms) from hey's summary."""
    ok = re.findall(r"\[2\d\d\]\s+(\d+) responses", out)  # the status code distribution
    if not ok:
        raise ValueError(f"no 2xx responses in hey's output:\n{out[-800:]}")
    return {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        "requests": sum(int(n) for n in ok),
        "p50": float(_find(r"50% in ([\d.]+) secs", out)) * 1000,
        "p99": float(_find(r"99% in ([\d.]+) secs", out)) * 1000,
    }


LOCUSTFILE = """
from locust import FastHttpUser, constant, task
class User(FastHttpUser):
    wait_time = constant(0)
    @task
    def root(self):
        self.client.get("/")
"""


def run_locust(url: tuple[str, int], seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        lf = Path(d) / "locustfile.py"
        lf.write_text(LOCUSTFILE)
        prefix = Path(d) / "out"
        _, cpu = timed(
            pin(
                [
                    str(LOCUST),
                    "-f",
                    str(lf),
                    "--headless",
                    "-u",
                    "50",
                    "-r",
                    "50",
                    "-t",
                    f"{max(1, round(seconds))}s",
                    "--host",
                    f"http://{url[0]}:{url[1]}",
                    "--csv",
                    str(prefix),
                    "--only-summary",
                ]
            )
        )
        stats = (prefix.parent / "out_stats.csv").read_text()
    return {**parse_locust(stats), "cpu": cpu}


def parse_locust(csv_text: str) -> dict[str, float]:
    """req/s, requests, p50 and p99 (ms) from the Aggregated row of Locust's stats CSV."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    agg = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if agg is None:
        raise ValueError(f"no Aggregated row in Locust's stats:\n{csv_text[-800:]}")
    return {
        "rps": float(agg["Requests/s"]),
        "requests": int(agg["Request Count"]),
        "p50": _num(agg["50%"]),
        "p99": _num(agg["99%"]),
    }


def _num(text: str) -> float:
    return float(text) if text not in ("", "N/A") else 0.0


def run_pure(url: tuple[str, int], seconds: float) -> dict[str, float]:
    return run_poolsvc(url, seconds, pure=True)


TOOLS: dict[str, Callable[[tuple[str, int], float], dict[str, float]]] = {
    "poolsvc": run_poolsvc,
    "poolsvc (pure Python)": run_pure,
    "wrk": run_wrk,
    "hey": run_hey,
    "locust": run_locust,
}


def head_to_head(rounds: int, seconds: float) -> str:
    tools = {k: v for k, v in TOOLS.items() if k.startswith("poolsvc") or _have(k)}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in tools}
    with nginx() as ng:
        url = (ng.host, ng.port)
        for fn in tools.values():
            fn(url, 2.0)  # warm up each once, not measured
        for _ in range(rounds):
            for name, fn in tools.items():  # interleaved: A B C D, A B C D, ...
                results[name].append(fn(url, seconds))
    lines = [
        "| tool | req/s median | min | max | CPU per request | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        cpu = statistics.median(r["cpu"] / max(1, r["requests"]) * 1e6 for r in runs)
        lines.append(
            f"| {name} | {statistics.median(rps):,.0f} | {min(rps):,.0f} | "
            f"{max(rps):,.0f} | {cpu:.1f} µs | "
            f"{statistics.median(r['p50'] for r in runs):.2f} ms | "
            f"{statistics.median(r['p99'] for r in runs):.2f} ms |"
        )
    lines += ["", "| ratio (median of per-round ratios) | value |", "|---|---|"]
    for ours in ("poolsvc", "poolsvc (pure Python)"):
        for other in (k for k in results if not k.startswith("poolsvc")):
            ratios = [
                a["rps"] / b["rps"] for a, b in zip(results[ours], results[other], strict=True)
            ]
            lines.append(f"| {ours} / {other} | {statistics.median(ratios):.3f} |")
    missing = [k for k in TOOLS if k not in tools]
    if missing:
        lines.append(f"\n(not installed here, skipped: {', '.join(missing)})")
    return "\n".join(lines)


def _have(tool: str) -> bool:
    return LOCUST.exists() if tool == "locust" else shutil.which(tool) is not None


Steady = tuple[float, float, float, float]  # user, kernel µs per request; req/s; helper CPU %


def steady(
    ng: Nginx,
    cmd: list[str],
    seconds: float,
    helper: list[str] | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Steady:
    """Run ``cmd`` pinned; after start-up, measure for ``seconds`` the CPU per request of
    the process doing the work (poolsvc's worker, or ``cmd`` itself) with requests
    counted by nginx, and the CPU share of the rest (poolsvc's supervisor plus an
    optional ``helper`` process started meanwhile, e.g. a status watcher). ``cwd``:
    where ``python -m poolsvc`` finds the code (another checkout, for an A/B)."""
    proc = subprocess.Popen(
        pin(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=env
    )
    extra: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(1.5)  # past start-up and warm-up
        main = psutil.Process(proc.pid)
        kids = main.children()
        worker, others = (kids[0], [main]) if kids else (main, [])
        if helper is not None:
            extra = subprocess.Popen(
                helper, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
            )
            others.append(psutil.Process(extra.pid))
            time.sleep(0.5)  # its own start-up is not what we measure
        before = [p.cpu_times() for p in (worker, *others)]
        n0, t0 = ng.requests_served(), time.monotonic()
        time.sleep(seconds)
        after = [p.cpu_times() for p in (worker, *others)]
        n1, t1 = ng.requests_served(), time.monotonic()
    finally:
        proc.wait(60)
        if extra is not None:
            extra.wait(60)  # it stops by itself (--count), or when the service is gone
    n = n1 - n0 - 1  # minus our own status request
    (wb, *ob), (wa, *oa) = before, after
    rest = sum(a.user + a.system - b.user - b.system for a, b in zip(oa, ob, strict=True))
    return (
        (wa.user - wb.user) / n * 1e6,
        (wa.system - wb.system) / n * 1e6,
        n / (t1 - t0),
        100 * rest / (t1 - t0),
    )


def medians(rows: list[Steady]) -> Steady:
    user, kern, rps, rest = (statistics.median(r[i] for r in rows) for i in range(4))
    return user, kern, rps, rest


def steady_cpu(rounds: int, seconds: float) -> str:
    """User and kernel CPU per request of the process doing the work, poolsvc against wrk."""
    runs: dict[str, list[Steady]] = {
        "poolsvc worker": [],
        "poolsvc worker (pure Python)": [],
        "wrk": [],
    }
    with nginx() as ng:
        url = f"http://{ng.host}:{ng.port}/"
        poolsvc = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))
        wrk = ["wrk", "-t1", "-c50", f"-d{round(seconds + 3)}s", url]
        for _ in range(rounds):
            runs["poolsvc worker"].append(steady(ng, poolsvc, seconds, env=path_env(False)))
            pure = steady(ng, poolsvc, seconds, env=path_env(True))
            runs["poolsvc worker (pure Python)"].append(pure)
            runs["wrk"].append(steady(ng, wrk, seconds))
    lines = [
        "| process | user per request | kernel per request | req/s meanwhile |",
        "|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, _ = medians(rows)
        lines.append(f"| {name} | {user:.2f} µs | {kern:.2f} µs | {rps:,.0f} |")
    return "\n".join(lines)


def status_cost(rounds: int, seconds: float) -> str:
    """The worker's CPU per request, and the supervisor's CPU, with and without a
    `poolctl status --watch 0.2` reading the service (interleaved rounds)."""
    runs: dict[str, list[Steady]] = {
        f"{path}, {reads}": []
        for path in ("accelerated", "pure Python")
        for reads in ("without status reads", "with status reads")
    }
    with nginx() as ng, tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o700)
        sock = str(Path(d) / "c.sock")
        cmd = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))
        watch = [PY, "-m", "poolsvc.cli.poolctl", "--control", sock, "status", "--watch", "0.2"]
        watch += ["--count", str(int(seconds * 5) + 5)]
        for _ in range(rounds):
            for path, pure in (("accelerated", False), ("pure Python", True)):
                env, ctl = path_env(pure), [*cmd, "--control", sock]
                runs[f"{path}, without status reads"].append(steady(ng, ctl, seconds, env=env))
                with_reads = steady(ng, ctl, seconds, watch, env=env)
                runs[f"{path}, with status reads"].append(with_reads)
    return _cost_table(runs, "watcher")


def _cost_table(runs: dict[str, list[Steady]], reader: str) -> str:
    """The worker's CPU per request and the supervisor's (plus ``reader``'s) CPU share."""
    lines = [
        "| poolsvc against nginx | worker user per request | worker kernel per request "
        f"| supervisor + {reader} CPU | req/s meanwhile |",
        "|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, rest = medians(rows)
        lines.append(f"| {name} | {user:.2f} µs | {kern:.2f} µs | {rest:.1f} % | {rps:,.0f} |")
    return "\n".join(lines)


SCRAPER = """
import sys, time, urllib.request
url, every, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for _ in range(count):  # bounded: stops by itself
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except OSError:
        break  # the service is gone
    time.sleep(every)
"""


def scrape_cost(rounds: int, seconds: float) -> str:
    """As :func:`status_cost`, with a Prometheus-like scraper reading ``/metrics`` every
    0.2 s (25 times a Prometheus default interval of 5 s) instead of poolctl."""
    runs: dict[str, list[Steady]] = {"without scrapes": [], "with scrapes every 0.2 s": []}
    with nginx() as ng:
        for _ in range(rounds):
            port = free_port()
            cmd = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))
            cmd += ["--metrics-addr", f"127.0.0.1:{port}"]
            url = f"http://127.0.0.1:{port}/metrics"
            scraper = [PY, "-c", SCRAPER, url, "0.2", str(int(seconds * 5) + 5)]
            runs["without scrapes"].append(steady(ng, cmd, seconds))
            runs["with scrapes every 0.2 s"].append(steady(ng, cmd, seconds, scraper))
    return _cost_table(runs, "scraper")


def scaling(seconds: float) -> str:
    lines = ["| target | 1 worker | 2 workers |", "|---|---|---|"]
    with TargetServer() as target:
        row = [run_scaled((target.host, target.port), n, seconds) for n in (1, 2)]
        lines.append(f"| embedded target | {row[0]:,.0f} | {row[1]:,.0f} |")
    with nginx(pinned=False) as ng:
        row = [run_scaled((ng.host, ng.port), n, seconds) for n in (1, 2)]
        lines.append(f"| nginx (1 worker process) | {row[0]:,.0f} | {row[1]:,.0f} |")
    return "\n".join(lines)


def run_scaled(url: tuple[str, int], workers: int, seconds: float) -> float:
    """req/s of an unpinned `poolsvc run` with ``workers`` workers and 50 connections."""
    cmd = run_argv(url, "--workers", str(workers), "--size", "50", "--duration", str(seconds))
    out, _ = timed([*cmd, "--json"])
    return float(json.loads(out[out.index("{") :])["metrics"]["run.rps"])


def rate_accuracy(seconds: float) -> str:
    """Open loop below capacity: the rate kept, on the accelerated path."""
    lines = ["| asked req/s | achieved | error | late | p99 (corrected) |", "|---|---|---|---|---|"]
    with nginx() as ng:
        for rate in (1000, 5000, 20000):
            m, _ = poolsvc_metrics((ng.host, ng.port), seconds, ["--rate", str(rate)])
            got = m["run.rps"]  # requests sent over the load period
            lines.append(
                f"| {rate:,} | {got:,.1f} | {100 * (got - rate) / rate:+.2f} % | "
                f"{m['requests.late']} | {m['latency.p99_ms']} ms |"
            )
    return "\n".join(lines)


def memory() -> str:
    lines = ["| pooled connections (1 worker) | worker RSS | per connection |", "|---|---|---|"]
    base = None
    with TargetServer() as target:
        for size in (1, 1000, 10000):
            rss = _worker_rss((target.host, target.port), size)
            base = base or rss
            per = f"{(rss - base) / size / 1024:.1f} KiB" if size > 1 else "-"
            lines.append(f"| {size:,} | {rss / 2**20:.1f} MiB | {per} |")
    return "\n".join(lines)


def _worker_rss(url: tuple[str, int], size: int) -> int:
    proc = subprocess.Popen(
        run_argv(
            url,
            "--size",
            str(size),
            "--concurrency",
            "1",
            "--duration",
            "6",
            "--connect-timeout-ms",
            "5000",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        rss = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            kids = psutil.Process(proc.pid).children()
            if kids and len(psutil.Process(kids[0].pid).net_connections()) >= size:
                time.sleep(1.0)
                rss = kids[0].memory_info().rss
                break
        return rss
    finally:
        proc.wait(60)


def profile(seconds: float) -> str:
    if shutil.which("py-spy") is None and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        return "(py-spy is not installed: `pip install py-spy`)"
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    with nginx() as ng, tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(  # the Python path: py-spy sees its functions
            pin(run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=path_env(True),
        )
        time.sleep(2)
        worker = psutil.Process(proc.pid).children()[0].pid
        raw = Path(d) / "raw.txt"
        subprocess.run(
            [
                spy,
                "record",
                "--format",
                "raw",
                "-o",
                str(raw),
                "-d",
                str(int(seconds)),
                "-p",
                str(worker),
                "--nonblocking",
                "-r",
                "200",
            ],
            capture_output=True,
            timeout=seconds + 30,
        )
        proc.wait(60)
        own: Counter[str] = Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            name = re.sub(r" \((.*?)/([^/]+\.py):\d+\)", r" (\2)", leaf)
            own[name] += int(count)
            total += int(count)
    lines = ["| function (self time) | share of samples |", "|---|---|"]
    for name, n in own.most_common(15):
        lines.append(f"| `{name}` | {100 * n / total:.1f} % |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = psutil.virtual_memory().total / 2**30
    versions = []
    for tool in ("nginx -v", "wrk -v", "hey -h"):
        exe = tool.split()[0]
        if shutil.which(exe):
            out = subprocess.run(tool.split(), capture_output=True, text=True)
            text = (
                (out.stdout + out.stderr).strip().splitlines()[0]
                if (out.stdout + out.stderr).strip()
                else ""
            )
            versions.append(f"{exe}: {text[:60]}")
    return (
        f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}; " + "; ".join(versions)
    )


def section_main(prog: str, doc: str, section: Callable[[int, float], str]) -> int:
    """The command line of one section run alone: ``--rounds``, ``--seconds``."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    print(section(args.rounds, args.seconds))
    return 0


def _open(rounds: int, seconds: float) -> str:
    from tools.bench_open import open_loop_at_capacity  # it imports this module

    return open_loop_at_capacity(rounds, seconds)


def _library(rounds: int, seconds: float) -> str:
    from tools.bench_library import library_head_to_head  # it imports this module

    return library_head_to_head(rounds, seconds)


def _tls(rounds: int, seconds: float) -> str:
    from tools.bench_tls import tls_head_to_head  # it imports this module

    return tls_head_to_head(rounds, seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--write", help="write the results into this markdown file")
    p.add_argument(
        "--only", type=int, nargs="*", help="run only these sections (1-based, in order)"
    )
    args = p.parse_args()
    started = time.monotonic()
    sections: list[tuple[str, Callable[[], str]]] = [
        (
            "Head to head against nginx (pinned: nginx on core 0, generator on core 1)",
            lambda: head_to_head(args.rounds, args.seconds),
        ),
        (
            "The open loop at capacity: asked 3x, and its maximum sustained rate",
            lambda: _open(args.rounds, args.seconds),
        ),
        (
            "The library: poolsvc.Client against Python's HTTP clients, on pinned nginx",
            lambda: _library(args.rounds, args.seconds),
        ),
        (
            "CPU per request in the steady state, user and kernel (medians)",
            lambda: steady_cpu(args.rounds, args.seconds),
        ),
        (
            "Over HTTPS: poolsvc and wrk on the same pinned nginx, HTTP beside it",
            lambda: _tls(args.rounds, args.seconds),
        ),
        (
            "Reading status costs the workers nothing measurable",
            lambda: status_cost(args.rounds, args.seconds),
        ),
        (
            "Scraping /metrics costs the workers nothing measurable",
            lambda: scrape_cost(args.rounds, args.seconds),
        ),
        ("Scaling with workers (both cores shared, 50 connections)", lambda: scaling(args.seconds)),
        (
            "Open-loop rate accuracy (1 worker against pinned nginx)",
            lambda: rate_accuracy(args.seconds),
        ),
        ("Memory per worker", memory),
        (
            "Where the time goes in the pure-Python path (py-spy, a worker at full load)",
            lambda: profile(args.seconds),
        ),
    ]
    if args.only:
        sections = [sections[i - 1] for i in args.only]
    out = [f"Machine: {machine()}", ""]
    for title, fn in sections:
        print(f"## {title}", flush=True)
        body = fn()
        print(body + "\n", flush=True)
        out += [f"## {title}", "", body, ""]
    took = time.monotonic() - started
    print(f"(benchmarks took {took:.0f} s)")
    if args.write:
        _write(Path(args.write), "\n".join(out), args, took)
    return 0


def _write(path: Path, body: str, args: argparse.Namespace, took: float) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = "<!-- make bench -->"
    head = text.split(marker)[0].rstrip() + "\n\n"
    stamp = time.strftime("%Y-%m-%d")
    block = (
        f"{marker}\n# `make bench` ({stamp})\n\nCommand: `python -m tools.bench --rounds "
        f"{args.rounds} --seconds {args.seconds:g} --write {path}` (took {took:.0f} s)\n\n"
        f"{body}\n"
    )
    path.write_text(head + block)


if __name__ == "__main__":
    sys.exit(main())
