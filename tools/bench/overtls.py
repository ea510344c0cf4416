"""Over HTTPS: poolsvc against wrk on the same pinned nginx, and the plain ratio beside it.

    python -m tools.bench.overtls [--rounds 5] [--seconds 5]

nginx serves HTTP and HTTPS (a certificate from a throwaway CA, ``trustme``) on
core 0; each generator runs on core 1 with 50 connections, one worker or thread,
and the rounds interleave poolsvc and wrk, over HTTP and over HTTPS. Each run is
measured as in ``make bench``'s steady-state section (:func:`tools.bench.steady`):
the CPU per request of the process doing the work, user and kernel, requests
counted by nginx. The table gives the medians and the median of the per-round
ratios of req/s. poolsvc verifies the certificate; wrk never does.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import trustme

from tools.bench.common import SERVER_CPU, Steady, medians, run_argv, section_main, steady
from tools.bench.rivals import wrk_argv
from tools.nginx import Nginx


@contextlib.contextmanager
def tls_nginx() -> Iterator[tuple[Nginx, Path]]:
    """Pinned nginx serving HTTPS too; and the CA file to trust."""
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        chain, key, ca_file = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        server = Nginx(directory, tls=(chain, key))
        server.start(cpu=SERVER_CPU)
        try:
            yield server, ca_file
        finally:
            server.stop()


def commands(ng: Nginx, ca: Path, seconds: float) -> dict[str, list[str]]:
    """The four runs, by name: poolsvc and wrk, over HTTP and over HTTPS."""
    last = str(seconds + 3)
    https = f"https://{ng.host}:{ng.tls_port}/"
    return {
        "poolsvc http": run_argv((ng.host, ng.port), "--size", "50", "--duration", last),
        "wrk http": wrk_argv(f"http://{ng.host}:{ng.port}/", seconds + 3),
        "poolsvc https": [
            *run_argv((ng.host, ng.tls_port), "--size", "50", "--duration", last),
            "--tls",
            "--cacert",
            str(ca),
        ],
        "wrk https": wrk_argv(https, seconds + 3),
    }


def tls_head_to_head(rounds: int, seconds: float) -> str:
    runs: dict[str, list[Steady]] = {}
    with tls_nginx() as (ng, ca):
        cmds = commands(ng, ca, seconds)
        for i in range(rounds):
            order = list(cmds.items())
            for name, cmd in order if i % 2 == 0 else order[::-1]:  # A B C D, D C B A, ...
                runs.setdefault(name, []).append(steady(ng, cmd, seconds))
    lines = [
        "| run | user per request | kernel per request | req/s | rounds |",
        "|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, _ = medians(rows)
        lines.append(f"| {name} | {user:.2f} µs | {kern:.2f} µs | {rps:,.0f} | {len(rows)} |")
    lines += ["", "| ratio of req/s (median of per-round ratios) | value |", "|---|---|"]
    for scheme in ("http", "https"):
        pairs = zip(runs[f"poolsvc {scheme}"], runs[f"wrk {scheme}"], strict=True)
        ratio = statistics.median(a[2] / b[2] for a, b in pairs)
        lines.append(f"| poolsvc / wrk over {scheme} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> int:
    return section_main("python -m tools.bench.overtls", __doc__ or "", tls_head_to_head)


if __name__ == "__main__":
    sys.exit(main())
