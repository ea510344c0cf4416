"""The library against Python's HTTP clients: sequential keep-alive GETs on pinned nginx.

    python -m tools.bench.clients [--rounds 5] [--seconds 5]

Each client runs in its own process on core 1 (nginx, one worker, on core 0) and
sends GETs of nginx's small page one after another over one kept-alive
connection for ``seconds``: ``poolsvc.Client``, ``http.client``, urllib3's
PoolManager, requests.Session, httpx.Client and pycurl. Every response is read
whole and its status checked (a client that fails a request fails the bench).
The rounds interleave the clients; the table gives the median req/s, the CPU per
request of the client's process, and the median of the per-round ratios to
urllib3 and to pycurl. Then the same with 8 threads sharing one client (one
pool), for poolsvc and urllib3: the scaling is the 8-thread req/s over the
1-thread req/s (one core: what is measured is how little the pool's locking
costs, not parallelism).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tools.bench.common import PY, ROOT, nginx, pin, section_main

CLIENTS = ("poolsvc", "http.client", "urllib3", "requests", "httpx", "pycurl")
SCALED = ("poolsvc", "urllib3")
THREADS = 8


def _getter(name: str, url: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """(one GET returning its status, close) for client ``name``; shared by threads."""
    if name == "poolsvc":
        import poolsvc

        client = poolsvc.Client(max_per_host=THREADS)
        return (lambda: client.get(url).status), client.close
    if name == "http.client":
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        local = threading.local()

        def get_hc() -> int:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port)
            conn.request("GET", u.path or "/")
            r = conn.getresponse()
            r.read()
            return r.status

        return get_hc, lambda: None
    if name == "urllib3":
        import urllib3

        pm = urllib3.PoolManager(maxsize=THREADS)
        return (lambda: pm.request("GET", url).status), pm.clear
    if name == "requests":
        import requests

        session = requests.Session()
        return (lambda: session.get(url).status_code), session.close
    if name == "httpx":
        import httpx

        hx = httpx.Client(limits=httpx.Limits(max_keepalive_connections=THREADS))
        return (lambda: hx.get(url).status_code), hx.close
    if name == "pycurl":
        import io

        import pycurl  # type: ignore[import-untyped,unused-ignore]

        local = threading.local()

        def get_curl() -> int:
            c = getattr(local, "curl", None)
            if c is None:
                c = local.curl = pycurl.Curl()
                c.setopt(pycurl.URL, url)
            buf = io.BytesIO()
            c.setopt(pycurl.WRITEDATA, buf)
            c.perform()
            return int(c.getinfo(pycurl.RESPONSE_CODE))

        return get_curl, lambda: None
    raise SystemExit(f"unknown client {name}")


def child(name: str, url: str, seconds: float, threads: int) -> dict[str, Any]:
    """In the child process: GETs for ``seconds`` on ``threads`` threads; the counts."""
    get, close = _getter(name, url)
    get()  # the connection made before the clock starts
    counts = [0] * threads
    stop = time.monotonic() + seconds
    cpu0 = time.process_time()

    def loop(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            for _ in range(50):
                if get() != 200:
                    raise SystemExit(f"{name}: a request failed")
            n += 50
        counts[i] = n

    started = time.monotonic()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    took = time.monotonic() - started
    cpu = time.process_time() - cpu0
    close()
    n = sum(counts)
    return {"rps": n / took, "cpu_us": cpu / n * 1e6, "requests": n}


def measure(name: str, url: str, seconds: float, threads: int = 1) -> dict[str, Any]:
    cmd = pin([PY, "-m", "tools.bench.clients", "--child", name, url, str(seconds), str(threads)])
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: {out.stderr[-400:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def library_head_to_head(rounds: int, seconds: float) -> str:
    runs: dict[str, list[dict[str, Any]]] = {}
    with nginx() as server:
        url = f"http://127.0.0.1:{server.port}/"
        for _ in range(rounds):
            for name in CLIENTS:
                runs.setdefault(name, []).append(measure(name, url, seconds))
            for name in SCALED:
                runs.setdefault(f"{name} x{THREADS}", []).append(
                    measure(name, url, seconds, THREADS)
                )
    lines = [
        f"One thread, sequential keep-alive GETs, {rounds} interleaved rounds of {seconds:g} s:",
        "",
        "| client | req/s (median) | min | max | CPU per request | vs urllib3 | vs pycurl |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        rps = [r["rps"] for r in runs[name]]
        cpu = statistics.median(r["cpu_us"] for r in runs[name])
        lines.append(
            f"| {name} | {statistics.median(rps):,.0f} | {min(rps):,.0f} | {max(rps):,.0f} | "
            f"{cpu:.1f} µs | {_ratio(runs, name, 'urllib3'):.2f} | "
            f"{_ratio(runs, name, 'pycurl'):.2f} |"
        )
    lines += [
        "",
        f"{THREADS} threads sharing one client:",
        "",
        f"| client | req/s x{THREADS} (median) | scaling (x{THREADS} / x1, median of ratios) |",
        "|---|---|---|",
    ]
    for name in SCALED:
        many = runs[f"{name} x{THREADS}"]
        rps = statistics.median(r["rps"] for r in many)
        scale = statistics.median(
            m["rps"] / o["rps"] for m, o in zip(many, runs[name], strict=True)
        )
        lines.append(f"| {name} | {rps:,.0f} | {scale:.2f} |")
    return "\n".join(lines)


def _ratio(runs: dict[str, list[dict[str, Any]]], name: str, base: str) -> float:
    return float(
        statistics.median(a["rps"] / b["rps"] for a, b in zip(runs[name], runs[base], strict=True))
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, url, seconds, threads = sys.argv[2:6]
        print(json.dumps(child(name, url, float(seconds), int(threads))))
        sys.exit(0)
    sys.exit(section_main("tools.bench.clients", __doc__ or "", library_head_to_head))
