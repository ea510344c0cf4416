"""What every section shares: nginx pinned to core 0, the generator pinned to core 1, poolsvc's
command line and its metrics, the steady-state CPU measure (:func:`steady`), the machine,
and the command line of a section run alone (:func:`section_main`).
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from tools.nginx import Nginx

ROOT = Path(__file__).resolve().parents[2]


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


def _find(pattern: str, text: str, flags: int = 0) -> str:
    m = re.search(pattern, text, flags)
    if m is None:
        raise ValueError(f"no match for {pattern!r} in the tool's output:\n{text[-800:]}")
    return m.group(1)


def _num(text: str) -> float:
    return float(text) if text not in ("", "N/A") else 0.0


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
