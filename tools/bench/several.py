"""Several targets in the open loop: the accelerated path against the pure one.

    python -m tools.bench.several [--rounds 5] [--seconds 5]

One worker on core 1 runs an open loop over two targets, 25 connections each, on
the same nginx pinned to core 0 (``/`` and ``/health``: two requests, two pools, two
breakers, one schedule split 1:1 by its picks). The rounds interleave the two paths
at two rates: 20,000/s, below capacity, where the figure is the worker process's
CPU per request sent; and asked 3x the closed loop's usual rate (300,000/s), where it
is the req/s sent, with the drain and the limit the report named. The table gives
the medians and the median of the per-round ratios (accelerated / pure).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tools.bench.common import PY, nginx, path_env, pin, section_main, timed

BELOW, OVER = 20_000, 300_000


def two_targets(host: str, port: int, directory: Path) -> Path:
    """The run's configuration: nginx twice, as two targets of 25 connections each."""
    cfg = directory / "two.json"
    targets = [
        {"host": host, "port": port, "name": "root", "pool_size": 25},
        {"host": host, "port": port, "name": "health", "pool_size": 25, "path": "/health"},
    ]
    cfg.write_text(json.dumps({"targets": targets, "concurrency": 50}))
    return cfg


def run(cfg: Path, seconds: float, rate: int, pure: bool) -> dict[str, Any]:
    """One pinned run: its metrics, and its CPU per request sent (µs)."""
    cmd = [PY, "-m", "poolsvc", "run", "--config", str(cfg), "--workers", "1"]
    cmd += ["--duration", str(seconds), "--rate", str(rate), "--json"]
    out, cpu = timed(pin(cmd), env=path_env(pure))
    m: dict[str, Any] = json.loads(out[out.index("{") :])["metrics"]
    if (m["run.path"] == "accelerated") == pure:
        asked = "pure" if pure else "accelerated"
        raise RuntimeError(f"asked for the {asked} path, ran {m['run.path']}")
    return {**m, "cpu_us": cpu / max(1, m["requests.sent"]) * 1e6}


def several_targets(rounds: int, seconds: float) -> str:
    got: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with nginx() as ng, tempfile.TemporaryDirectory() as d:
        cfg = two_targets(ng.host, ng.port, Path(d))
        run(cfg, 2.0, BELOW, False)  # warm up once, not measured
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for rate in (BELOW, OVER):
                for pure in order:
                    name = "pure Python" if pure else "accelerated"
                    got.setdefault((name, rate), []).append(run(cfg, seconds, rate, pure))
    lines = [
        "| path | asked req/s | sent req/s | CPU per request (process) | p99 | late | "
        "drain (max) | limit named |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, rate), ms in got.items():
        late = statistics.median(m["requests.late"] / max(1, m["requests.sent"]) for m in ms)
        lines.append(
            f"| {name} | {rate:,} | {statistics.median(m['run.rps'] for m in ms):,.0f} | "
            f"{statistics.median(m['cpu_us'] for m in ms):.1f} µs | "
            f"{statistics.median(m['latency.p99_ms'] for m in ms):.2f} ms | {late:.2%} | "
            f"{max(m['run.drain_s'] for m in ms):.2f} s | "
            f"{', '.join(sorted({m['run.limit'] for m in ms}))} |"
        )

    def ratio(rate: int, key: str) -> float:
        pairs = zip(got[("accelerated", rate)], got[("pure Python", rate)], strict=True)
        return float(statistics.median(a[key] / b[key] for a, b in pairs))

    lines += [
        "",
        "| accelerated / pure (median of per-round ratios) | value |",
        "|---|---|",
        f"| CPU per request at {BELOW:,}/s | {ratio(BELOW, 'cpu_us'):.3f} |",
        f"| req/s sent, asked {OVER:,}/s | {ratio(OVER, 'run.rps'):.3f} |",
    ]
    return "\n".join(lines)


def main() -> int:
    return section_main("python -m tools.bench.several", __doc__ or "", several_targets)


if __name__ == "__main__":
    sys.exit(main())
