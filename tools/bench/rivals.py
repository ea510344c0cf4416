"""The other load generators: wrk, hey and Locust run and their output parsed, and poolsvc's
pure-Python path beside them (section 1's contenders).
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from tools.bench.common import LOCUST, _find, _num, pin, run_poolsvc, timed


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_argv(url: str, seconds: float, *extra: str, rate: float | None = None) -> list[str]:
    """wrk as every section runs it: one thread and 50 connections (poolsvc's
    ``--size 50``) for ``seconds`` (whole, at least 1); with ``rate``, wrk2 (wrk's open
    loop) at that rate. ``extra`` goes before the URL."""
    tool = ["wrk"] if rate is None else ["wrk2", f"-R{rate:.0f}"]
    return [tool[0], "-t1", "-c50", f"-d{max(1, round(seconds))}s", *tool[1:], *extra, url]


def http_url(url: tuple[str, int]) -> str:
    return f"http://{url[0]}:{url[1]}/"


def run_wrk(url: tuple[str, int], seconds: float) -> dict[str, float]:
    out, cpu = timed(pin(wrk_argv(http_url(url), seconds, "--latency")))
    return {**parse_wrk(out), "cpu": cpu}


def _wrk_summary(out: str, lat: dict[str, float]) -> dict[str, float]:
    """req/s and requests from wrk's (and wrk2's) closing lines, with the percentiles."""
    return {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        "requests": int(_find(r"(\d+) requests in", out)),
        "p50": lat["50"],
        "p99": lat["99"],
    }


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, requests, p50 and p99 (ms) from `wrk --latency` output."""
    lat = {}
    for pct in ("50", "99"):
        text = _find(rf"^\s+{pct}%\s+(\S+)", out, re.M)  # e.g. 173.00us
        lat[pct] = _ms(_find(r"^([\d.]+)", text), _find(r"([a-z]+)$", text))
    return _wrk_summary(out, lat)


def run_wrk2(url: tuple[str, int], seconds: float, rate: float) -> dict[str, float]:
    """wrk2 (wrk's open loop: a constant rate, latency from the intended send times) at
    ``rate``; its first seconds calibrate it, so it runs :data:`WRK2_CALIBRATION`
    seconds longer than asked."""
    argv = wrk_argv(http_url(url), seconds + WRK2_CALIBRATION, "--latency", rate=rate)
    out, cpu = timed(pin(argv))
    return {**parse_wrk2(out), "cpu": cpu}


WRK2_CALIBRATION = 10.0


def parse_wrk2(out: str) -> dict[str, float]:
    """req/s, requests, p50 and p99 (ms) from `wrk2 --latency` output (HdrHistogram's
    percentile lines, "99.000%    3.54ms")."""
    lat = {}
    for pct in ("50", "99"):
        text = _find(rf"^\s*{pct}\.000%\s+(\S+)", out, re.M)
        lat[pct] = _ms(_find(r"^([\d.]+)", text), _find(r"([a-z]+)$", text))
    return _wrk_summary(out, lat)


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


def run_pure(url: tuple[str, int], seconds: float) -> dict[str, float]:
    return run_poolsvc(url, seconds, pure=True)


TOOLS: dict[str, Callable[[tuple[str, int], float], dict[str, float]]] = {
    "poolsvc": run_poolsvc,
    "poolsvc (pure Python)": run_pure,
    "wrk": run_wrk,
    "hey": run_hey,
    "locust": run_locust,
}
