"""Reading costs the workers nothing: throughput with ``poolctl status --watch`` or a
/metrics scraper running, against without (interleaved).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tools.bench.common import PY, Steady, medians, nginx, path_env, run_argv, steady
from tools.nginx import free_port


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
