"""A/B of the request path: CPU per request of this tree against a git revision.

    python -m tools.ab [--base HEAD] [--rounds 5] [--seconds 3] [--rate R]

The base revision is checked out into a temporary worktree, its C extension built
there as the install builds it (so that each side takes its own accelerated path;
``POOLSVC_NO_EXTENSIONS=1`` runs both pure). Both run the same command (one worker,
50 connections, closed loop, or open loop at ``--rate``) against the same nginx pinned
to core 0, the generator pinned to core 1, in interleaved rounds (A B, B A, ...),
and each run is measured as in ``make bench``'s steady-state section: the
worker's own user and kernel CPU per request, requests counted by nginx,
start-up excluded (:func:`tools.bench.steady`). The table shows the medians and
the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tools.bench.common import ROOT, Steady, medians, nginx, run_argv, steady


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="poolsvc-ab-") as d:
        path = Path(d) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev],
            check=True,
        )
        sources = (path / "workers" / "lane" / "_lane.c", path / "workers" / "_lane.c")
        if any(c.exists() for c in sources):  # its own accelerated path, built
            subprocess.run(
                [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                cwd=path, check=True, capture_output=True,
            )  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
            )


def ab(base: str, rounds: int, seconds: float, rate: float = 0.0) -> str:
    runs: dict[str, list[Steady]] = {"this tree": [], base: []}
    load = ["--rate", f"{rate:g}"] if rate else []
    with worktree(base) as old, nginx() as ng:
        cmd = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3), *load)
        for i in range(rounds):
            order = [("this tree", ROOT), (base, old)]
            for name, cwd in order if i % 2 == 0 else order[::-1]:  # A B, B A, ...
                runs[name].append(steady(ng, cmd, seconds, cwd=cwd))
    lines = [
        "| code | user per request | kernel per request | total | req/s | supervisor CPU "
        "| rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, rest = medians(rows)
        lines.append(
            f"| {name} | {user:.2f} µs | {kern:.2f} µs | {user + kern:.2f} µs | {rps:,.0f} "
            f"| {rest:.2f} % | {len(rows)} |"
        )
    ratios = [
        (a[0] + a[1]) / (b[0] + b[1]) for a, b in zip(runs["this tree"], runs[base], strict=True)
    ]
    lines.append(
        f"\nCPU per request, this tree / {base}: median of per-round ratios "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="HEAD", help="the revision to compare with (default HEAD)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=0.0, help="open loop at this rate (0: closed)")
    args = p.parse_args()
    print(ab(args.base, args.rounds, args.seconds, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
