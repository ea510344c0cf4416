"""``python -m tools.bench``: every section in order, printed, and written into docs/benchmarks.md
(``--write``) with the command and the machine (see the package docstring).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tools.bench.clients import library_head_to_head
from tools.bench.common import machine
from tools.bench.headtohead import head_to_head
from tools.bench.memory import memory
from tools.bench.openloop import open_loop_at_capacity
from tools.bench.overtls import tls_head_to_head
from tools.bench.profiling import profile
from tools.bench.readers import scrape_cost, status_cost
from tools.bench.scaling import rate_accuracy, scaling
from tools.bench.several import several_targets
from tools.bench.steadycpu import steady_cpu


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
            lambda: open_loop_at_capacity(args.rounds, args.seconds),
        ),
        (
            "Several targets in the open loop: the accelerated path against the pure one",
            lambda: several_targets(args.rounds, args.seconds),
        ),
        (
            "The library: poolsvc.Client against Python's HTTP clients, on pinned nginx",
            lambda: library_head_to_head(args.rounds, args.seconds),
        ),
        (
            "CPU per request in the steady state, user and kernel (medians)",
            lambda: steady_cpu(args.rounds, args.seconds),
        ),
        (
            "Over HTTPS: poolsvc and wrk on the same pinned nginx, HTTP beside it",
            lambda: tls_head_to_head(args.rounds, args.seconds),
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
