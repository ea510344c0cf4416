"""The configuration keys: one table, from which everything else is made.

Each key is a field of :class:`Config`: its name, type and default, and in its
metadata its range, its command-line flag (with how the flag's text is parsed),
its help text and its unit. :data:`KEYS` (the checks of ``poolsvc.config.loader``), the
CLI's flags (``poolsvc.cli.main``) and the README's key table (:func:`markdown`, checked
by a test) all come from here; a key is written once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from workers.net.httpwire import DEFAULT_SUCCESS


def key(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    flag: str = "",
    parse: Callable[[str], Any] | None = None,
    const: Any = None,
    shown: str = "",
    bound: bool = False,
    run_only: bool = False,
    unit: str = "",
) -> Any:
    """A configuration key. ``flag``: its command-line flag (a name without dashes: the
    command's argument, e.g. ``URL``); ``parse``: how the flag's
    text becomes a value (default: the field's type); ``const``: a flag that takes no
    value and sets this one; ``shown``: the default as the README says it; ``bound``:
    a run's bound (``serve`` has none); ``run_only``: a flag of ``run`` alone; ``unit``:
    what a number counts (a name ending in ``_ms`` or ``_s`` says it already)."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "flag": flag,
        "parse": parse,
        "const": const,
        "shown": shown,
        "bound": bound,
        "run_only": run_only,
        "unit": unit,
    }
    return dataclasses.field(default=default, metadata=meta)


_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_in(unit: str) -> Callable[[str], float]:
    """How a duration flag's text becomes a value in ``unit`` (ms or s): a bare number
    is in that unit, or one with a unit of its own: ``500ms``, ``30s``, ``2m``, ``1h``."""
    scale = _SCALE[unit]

    def parse(text: str) -> float:
        t = text.strip().lower()
        number, per = t, scale
        for suffix in ("ms", "s", "m", "h"):  # "ms" before "m" and "s"
            if t.endswith(suffix) and t[: -len(suffix)]:
                number, per = t[: -len(suffix)], _SCALE[suffix]
                break
        try:
            seconds = float(number) * per
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"not a duration: {text!r} (e.g. 30s, 500ms, 2m)")
        value = seconds / scale
        return round(value) if unit == "ms" else value

    parse.__name__ = f"duration in {unit}"
    return parse


def positive_duration(text: str) -> float:
    """A duration in seconds that must be more than zero (``poolctl inject --for``)."""
    value = duration_in("s")(text)
    if not value > 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Config:
    """A validated run configuration: the key table (see the module docstring)."""

    url: str | None = key(
        None,
        "the target as a URL, `http://host[:port]/path` or `https://...`: sets host, port,"
        " path and tls",
        flag="URL",
        shown="none",
    )
    host: str | None = key(
        None,
        "the target's host name or IP address (omit host and port: the embedded target)",
        flag="--host",
        shown="embedded target",
    )
    port: int | None = key(
        None, "the target's port", low=1, high=65535, flag="--port", shown="embedded target"
    )
    method: str = key("GET", "the request's method", flag="--method")
    path: str = key("/", "the request's path (origin-form: `/a/b?q`)", flag="--path")
    headers: dict[str, str] | None = key(
        None,
        "extra request headers; `--header NAME:VALUE`, repeatable",
        flag="--header",
        shown="none",
    )
    body: str = key("", "the request body", flag="--body", shown="empty")
    body_file: str | None = key(
        None, "the request body, read from this file", flag="--body-file", shown="none"
    )
    keep_alive: bool = key(
        True, "false: `Connection: close` on every request", flag="--no-keepalive", const=False
    )
    pool_adaptive: bool = key(
        False,
        "grow each pool on demand and shrink it when idle, between pool_min and pool_size"
        " (the rule: docs/architecture.md)",
        flag="--pool-adaptive",
        const=True,
    )
    tcp_nodelay: bool = key(
        True,
        "false: leave Nagle's algorithm on (see `poolsvc churn --nagle`)",
        flag="--no-tcp-nodelay",
        const=False,
    )
    split_writes: bool = key(
        False,
        "write each request's head and body apart, as many clients do (needs a body)",
        flag="--split-writes",
        const=True,
    )
    pool_size: int = key(
        10, "max connections in the pool, split across workers", low=1, high=100_000, flag="--size"
    )
    pool_min: int | None = key(
        None,
        "connections kept open (a warm pool)",
        low=0,
        high=100_000,
        flag="--min-size",
        shown="`pool_size`",
    )
    concurrency: int | None = key(
        None,
        "requests in flight (closed loop)",
        low=1,
        high=100_000,
        flag="--concurrency",
        shown="`pool_size`",
    )
    duration_s: float = key(
        10.0,
        "seconds of load; the run stops at the first bound reached",
        low=0,
        high=86_400,
        flag="--duration",
        bound=True,
    )
    requests: int = key(
        0, "stop after this many requests (0: no count bound)", low=0, flag="--requests", bound=True
    )
    seed: int | None = key(
        None,
        "seeds jitter and fault draws; printed as `run.seed`",
        low=0,
        high=2**63 - 1,
        flag="--seed",
        shown="random",
    )
    connect_timeout_ms: int = key(
        1000, "per connect", low=1, high=600_000, flag="--connect-timeout-ms"
    )
    read_timeout_ms: int = key(
        5000, "per response", low=1, high=3_600_000, flag="--read-timeout-ms"
    )
    idle_timeout_ms: int = key(
        30000,
        "evict idle connections; keep it below the server's keep-alive",
        low=0,
        high=86_400_000,
        flag="--idle-timeout-ms",
    )
    max_age_ms: int = key(
        0,
        "retire connections this old (0: never); 2.5 % jitter",
        low=0,
        high=86_400_000,
        flag="--max-age-ms",
    )
    max_requests_per_conn: int = key(
        0,
        "retire a connection after this many requests (0: never)",
        low=0,
        flag="--max-requests-per-conn",
    )
    validate_after_ms: int = key(
        100,
        "zero-wait readability probe for connections idle this long",
        low=0,
        high=86_400_000,
        flag="--validate-after-ms",
    )
    health_check_after_ms: int = key(
        0,
        "active check for connections idle this long (0: off)",
        low=0,
        high=86_400_000,
        flag="--health-check-after-ms",
    )
    health_check_method: str = key("HEAD", "the health check's method")
    health_check_path: str = key("/health", "the health check's path", flag="--health-check-path")
    exhaustion: str = key(
        "wait",
        "pool full: `wait` (up to `pool_wait_timeout_ms`) or `fail` fast",
        flag="--exhaustion",
    )
    pool_wait_timeout_ms: int = key(
        1000,
        "how long a request waits for a connection (`wait`)",
        low=0,
        high=3_600_000,
        flag="--pool-wait-ms",
    )
    backoff_base_ms: int = key(
        50,
        "reconnect backoff start (exponential, full jitter)",
        low=1,
        high=600_000,
        flag="--backoff-base-ms",
    )
    backoff_cap_ms: int = key(
        5000, "reconnect backoff ceiling", low=1, high=3_600_000, flag="--backoff-cap-ms"
    )
    backoff_adaptive: bool = key(
        False,
        "the backoff's base grows with the target's recent connect failure rate (up to 10x)",
        flag="--backoff-adaptive",
        const=True,
    )
    retry_stale: bool = key(True, "re-send an idempotent request once if a reused socket was stale")
    drain_timeout_ms: int = key(
        5000,
        "on stop, how long in-flight requests may finish (then `abandoned`)",
        low=0,
        high=3_600_000,
    )
    inject_failures: bool | list[Any] = key(
        False,
        "true: the default mix, 2 % resets and 2 % 50 ms timeouts;"
        " or a list of faults (`docs/injection.md`)",
        flag="--inject-failures",
        const=True,
    )
    workers: int | None = key(
        None,
        "worker processes (at most `pool_size`, `concurrency` and `requests`)",
        low=1,
        high=64,
        flag="--workers",
        shown="CPUs",
    )
    inject_counts_toward_breaker: bool = key(True, "whether injected failures feed the breaker")
    audit_every_s: float = key(
        0.0,
        "a full FD audit every N seconds (0: on demand)",
        low=0,
        high=86_400,
        flag="--audit-every",
    )
    audit_report: str | None = key(
        None,
        "write each periodic audit to this file (.json/.md/.txt)",
        flag="--audit-report",
        shown="none",
    )
    fail_on_leak: bool = key(
        False,
        "`run` exits 5 when the final FD audit finds a leak, or cannot rule one out",
        flag="--fail-on-leak",
        const=True,
        run_only=True,
    )
    rate: float = key(
        0.0,
        "open loop: requests per second in total (0: closed loop)",
        low=0,
        high=10_000_000,
        flag="--rate",
        unit="req/s",
    )
    ramp_s: float = key(
        0.0,
        "reach full rate or concurrency over this long (`--ramp 10s`)",
        low=0,
        high=86_400,
        flag="--ramp",
    )
    warmup_s: float = key(
        0.0,
        "first open the pool and send a ramp of requests for this long; their counts are"
        " reported apart (`warmup.*`), out of every measured figure (`--warmup 5s`)",
        low=0,
        high=86_400,
        flag="--warmup",
    )
    max_backlog: int = key(
        100_000,
        "open loop: requests due and not yet sent (waiting for a connection), per worker;"
        " the oldest over it are dropped, counted `requests.dropped`",
        low=1,
        high=10_000_000,
        flag="--max-backlog",
    )
    timeline: str | None = key(
        None,
        "per-second figures to this file (NDJSON, CSV if it ends in .csv)",
        flag="--timeline",
        shown="none",
    )
    report: str | None = key(
        None,
        "write the run's HTML report to this file (one file, opens offline)",
        flag="--report",
        shown="none",
    )
    hlog: str | None = key(
        None,
        "per-second latency histograms to this file (HdrHistogram log, one tag per target)",
        flag="--hlog",
        shown="none",
    )
    metrics_addr: str | None = key(
        None,
        "serve `GET /metrics` (Prometheus, OpenMetrics) on HOST:PORT (port 0: any free one)",
        flag="--metrics-addr",
        shown="none",
    )
    linger_s: float = key(
        0.0,
        "after the run, keep `--metrics-addr` up this long for a final scrape",
        low=0,
        high=3600,
        flag="--linger",
    )
    shard: str | None = key(
        None,
        "run instance K of N of one run (`--shard 0/3`): its exact share, no coordinator",
        flag="--shard",
        shown="none",
    )
    shards: int | None = key(
        None,
        "N shards, this one's index from `$JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job)",
        low=1,
        high=100_000,
        flag="--shards",
        shown="none",
    )
    start_at: str | None = key(
        None,
        "start the load at this wall-clock time (RFC 3339 or epoch seconds), every shard alike",
        flag="--start-at",
        shown="none",
    )
    thresholds: list[Any] | None = key(
        None,
        "objectives, e.g. `latency:p(99)<25ms`, `requests.failed:rate<1%` (`--threshold`,"
        " repeatable); one that fails exits 99",
        flag="--threshold",
        shown="none",
    )
    junit: str | None = key(
        None,
        "write the thresholds' verdicts as JUnit XML to this file (one test case each)",
        flag="--junit",
        shown="none",
    )
    targets: list[dict[str, Any]] | None = key(
        None,
        "several targets: a list of objects with `host`, `port`, `name`, `weight`"
        " and any request or pool key",
        shown="none",
    )
    breaker_window_ms: int = key(10000, "the window of the failure rate", low=100, high=3_600_000)
    breaker_min_calls: int = key(
        20, "no failure-rate verdict below this many calls in the window", low=1
    )
    breaker_failure_rate: float = key(
        0.5, "trip at this failure rate over the window", low=0.01, high=1
    )
    breaker_consecutive_failures: int = key(
        5, "trip after this many failures in a row (0: off)", low=0, flag="--breaker-consecutive"
    )
    breaker_open_ms: int = key(
        5000,
        "the first open period; it doubles per trip in a row, ±20 % jitter",
        low=1,
        high=3_600_000,
        flag="--breaker-open-ms",
    )
    breaker_open_max_ms: int = key(
        60000, "the open period's cap", low=1, high=86_400_000, flag="--breaker-open-max-ms"
    )
    breaker_half_open_trials: int = key(
        1,
        "trial requests admitted across all workers when half-open",
        low=1,
        high=1000,
        flag="--breaker-trials",
    )
    breaker: bool = key(
        True, "false: no breaker, nothing is ever refused", flag="--no-breaker", const=False
    )
    max_header_bytes: int = key(
        32768,
        "longest response header block; longer is `header_too_large`",
        low=256,
        high=16 * 1024 * 1024,
        flag="--max-header-bytes",
        unit="bytes",
    )
    busy_poll_us: int = key(
        50,
        "accelerated path: polling without sleeping this long before a worker waits for a"
        " response, while the machine has a core to spare for it (0: never)",
        low=0,
        high=10_000,
        flag="--busy-poll-us",
        unit="µs",
    )
    success_statuses: str = key(
        DEFAULT_SUCCESS,
        "final statuses that make a request ok: codes, ranges, classes",
        flag="--success-status",
    )

    tls: bool = key(
        False,
        "speak TLS to the target (an `https` URL sets it); with no host, the embedded target"
        " serves TLS with a throwaway CA",
        flag="--tls",
        const=True,
    )
    cacert: str | None = key(
        None, "PEM file of the CAs to trust (default: the system's)", flag="--cacert"
    )
    insecure: bool = key(
        False, "true: do not verify the target's certificate", flag="--insecure", const=True
    )
    cert: str | None = key(None, "client certificate (PEM) to present", flag="--cert")
    cert_key: str | None = key(None, "the client certificate's private key (PEM)", flag="--key")
    sni: str | None = key(
        None, "the server name sent and verified", flag="--sni", shown="the URL's host"
    )
    tls_min: str = key("1.2", "lowest TLS version: 1.2 or 1.3", flag="--tls-min")
    tls_max: str = key("1.3", "highest TLS version: 1.2 or 1.3", flag="--tls-max")
    tls_ciphers: str | None = key(
        None, "OpenSSL cipher list for TLS 1.2 (1.3's cannot be chosen)", flag="--tls-ciphers"
    )
    tls_resume_ratio: float = key(
        1.0,
        "fraction of new connections that offer a saved session (0: every handshake full)",
        low=0,
        high=1,
        flag="--tls-resume-ratio",
    )
    tls_handshake_timeout_ms: int | None = key(
        None,
        "per TLS handshake",
        low=1,
        high=600_000,
        flag="--tls-handshake-timeout-ms",
        shown="`connect_timeout_ms`",
    )

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency if self.concurrency is not None else self.pool_size

    @property
    def effective_pool_min(self) -> int:
        return self.pool_size if self.pool_min is None else self.pool_min


def _accepted(hint: Any) -> tuple[type, ...]:
    """The JSON types a field of type ``hint`` accepts (None aside; a float takes ints)."""
    out: list[type] = []
    for member in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        base = typing.get_origin(member) or member
        if base is type(None):
            continue
        out += [int, float] if base is float else [base]
    return tuple(out)


_HINTS = typing.get_type_hints(Config)

#: key -> (accepted types, minimum, maximum); None = no bound.
KEYS: dict[str, tuple[tuple[type, ...], float | None, float | None]] = {
    f.name: (_accepted(_HINTS[f.name]), f.metadata["low"], f.metadata["high"])
    for f in fields(Config)
}


_FIELDS = {f.name: f for f in fields(Config)}


def flag_type(name: str) -> Callable[[str], Any]:
    """How the command-line text of key ``name`` becomes its value (a number key takes
    ``2.5``; its JSON may also be an integer)."""
    parse: Callable[[str], Any] | None = _FIELDS[name].metadata["parse"]
    if parse is None and unit(name) in ("ms", "s"):
        parse = duration_in(unit(name))  # durations take a unit everywhere: 30s, 500ms, 2m
    accepted = KEYS[name][0]
    return parse or (float if float in accepted else accepted[0])


def _shown(f: dataclasses.Field[Any]) -> str:
    if f.metadata["shown"]:
        return str(f.metadata["shown"])
    value = f.default
    if isinstance(value, bool):
        return str(value).lower()
    return (
        f"`{value}`"
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def unit(name: str) -> str:
    """What key ``name`` counts in: its own unit, else its name's suffix ('' for none)."""
    f = _FIELDS[name]
    own: str = f.metadata["unit"]
    return own or ("ms" if name.endswith("_ms") else "s" if name.endswith("_s") else "")


_JSON = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
}


def json_type(name: str) -> str:
    """Key ``name``'s JSON type(s) as the README names them ('number' takes integers)."""
    kinds = [k for k in KEYS[name][0] if not (k is int and float in KEYS[name][0])]
    return " or ".join(_JSON[k] for k in kinds)


def markdown() -> str:
    """The README's table of configuration keys (``python -m poolsvc.config.keys`` prints it)."""
    rows = ["| key | type | default | unit | flag | meaning |", "|---|---|---|---|---|---|"]
    for f in fields(Config):
        flag = f"`{f.metadata['flag']}`" if f.metadata["flag"] else ""
        if f.metadata["const"] is not None:  # a flag without a value sets this one
            flag += f" ({str(f.metadata['const']).lower()})"
        cells = (
            f"`{f.name}`",
            json_type(f.name),
            _shown(f),
            unit(f.name),
            flag,
            f.metadata["help"],
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
