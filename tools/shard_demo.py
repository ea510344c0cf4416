"""Three machines simulated on one: N shards of one open-loop run against nginx, merged.

    python -m tools.shard_demo [--shards 3] [--rate 3000] [--seconds 10]

Starts nginx, launches the N instances (``--shard K/N``, one ``--start-at`` a few
seconds ahead), merges their results with ``poolsvc merge`` and prints a markdown
table: each shard, the merge, nginx's own count and the one-machine plan
(docs/distributed.md shows one). Every load is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.nginx import Nginx

POOLSVC = [sys.executable, "-m", "poolsvc"]


def row(name: str, doc: dict[str, object], skew: str) -> str:
    m = doc["metrics"]
    assert isinstance(m, dict)
    return (
        f"| {name} | {m['requests.sent']:,} | {m['requests.ok']:,} | {m['requests.late']:,} "
        f"| {m['latency.p50_ms']:.3f} | {m['latency.p99_ms']:.3f} | {m['latency.p99_9_ms']:.3f} "
        f"| {skew} |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--rate", type=int, default=3000)
    p.add_argument("--seconds", type=int, default=10)
    args = p.parse_args()
    n = args.shards
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nginx = Nginx(tmp)
        nginx.start()
        try:
            url = f"http://{nginx.host}:{nginx.port}/"
            before = nginx.requests_served()
            start = f"{time.time() + 3:.3f}"
            argv = [*POOLSVC, "run", url, "--rate", str(args.rate), "--duration"]
            argv += [f"{args.seconds}s", "--start-at", start, "--workers", "1", "--json"]
            procs = [
                subprocess.Popen([*argv, "--shard", f"{k}/{n}"], stdout=subprocess.PIPE, text=True)
                for k in range(n)
            ]
            paths = []
            for k, proc in enumerate(procs):
                out, _ = proc.communicate(timeout=args.seconds + 60)
                paths.append(tmp / f"shard{k}.json")
                paths[-1].write_text(out)
            served = nginx.requests_served() - before - 1
        finally:
            nginx.stop()
        merged = subprocess.run(
            [*POOLSVC, "merge", *map(str, paths), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        docs = [json.loads(p.read_text()) for p in paths]
        total = json.loads(merged.stdout)
    lines = [
        "| | sent | ok | late | p50 ms | p99 ms | p99.9 ms | ready after --start-at |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, doc in enumerate(docs):
        lines.append(row(f"shard {k}/{n}", doc, f"{doc['shard']['start_skew_ms']:+.1f} ms"))
    lines.append(row("**merged**", total, "-"))
    plan = math.ceil(args.rate * args.seconds)
    lines += [
        "",
        f"nginx counted {served:,} requests; the one-machine plan at {args.rate:,} req/s for "
        f"{args.seconds} s has {plan:,} arrivals.",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
