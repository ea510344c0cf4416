"""The ``poolsvc`` command line.

Exit codes: 0 success; 2 invalid arguments or configuration (one line on stderr);
3 workers kept failing at boot; 4 the target cannot be reached at all; 5 the final FD
audit found a leak (with --fail-on-leak); 130 interrupted twice.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from poolsvc import config, plan
from poolsvc.churn import churn
from poolsvc.client import ENV, resolve_path
from poolsvc.ctlserver import claim, prepare_dir
from poolsvc.runner import EXIT_USAGE, run
from workers.errors import ConfigError
from workers.injection import parse_duration


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be NAME:VALUE, got {value!r}")
    return name.strip(), rest.strip()


def _headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """--header values as a dict; a name given twice (any letter case) is an error."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if any(name.lower() == seen.lower() for seen in out):
            raise ConfigError(f"headers: {name!r} is given twice (join list values with ', ')")
        out[name] = value
    return out


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: flag -> (config key, type, help)
_RUN_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--host": ("host", str, "target host (omit host and port to use the embedded target)"),
    "--port": ("port", int, "target port"),
    "--workers": ("workers", int, "worker processes (default: one per CPU)"),
    "--size": ("pool_size", int, "max pooled connections, split across workers (default 10)"),
    "--min-size": ("pool_min", int, "connections kept open (default: --size, a warm pool)"),
    "--concurrency": ("concurrency", int, "requests in flight (default: --size)"),
    "--duration": ("duration_s", float, "seconds of load (default 10)"),
    "--requests": ("requests", int, "stop after this many requests"),
    "--seed": ("seed", int, "random seed (jitter); printed as run.seed"),
    "--method": ("method", str, "HTTP method (default GET)"),
    "--path": ("path", str, "request path (default /)"),
    "--connect-timeout-ms": ("connect_timeout_ms", int, "default 1000"),
    "--read-timeout-ms": ("read_timeout_ms", int, "default 5000"),
    "--idle-timeout-ms": ("idle_timeout_ms", int, "evict idle connections (default 30000)"),
    "--max-age-ms": ("max_age_ms", int, "retire connections this old (0 = never)"),
    "--validate-after-ms": ("validate_after_ms", int, "probe idle connections (default 100)"),
    "--health-check-after-ms": ("health_check_after_ms", int, "0 = off"),
    "--health-check-path": ("health_check_path", str, "default /health"),
    "--exhaustion": ("exhaustion", str, "pool full: 'wait' (default) or 'fail'"),
    "--pool-wait-ms": ("pool_wait_timeout_ms", int, "wait policy timeout (default 1000)"),
    "--backoff-base-ms": ("backoff_base_ms", int, "reconnect backoff start (default 50)"),
    "--backoff-cap-ms": ("backoff_cap_ms", int, "reconnect backoff ceiling (default 5000)"),
    "--breaker-consecutive": ("breaker_consecutive_failures", int, "trip after N failures (5)"),
    "--breaker-open-ms": ("breaker_open_ms", int, "first open period (default 5000)"),
    "--breaker-open-max-ms": ("breaker_open_max_ms", int, "open period cap (default 60000)"),
    "--breaker-trials": ("breaker_half_open_trials", int, "half-open trials, all workers (1)"),
    "--rate": ("rate", float, "open loop: requests per second in total (default: closed)"),
    "--ramp": ("ramp_s", _duration, "reach full rate/concurrency over this long (e.g. 10s)"),
    "--max-requests-per-conn": ("max_requests_per_conn", int, "retire a connection after N"),
    "--timeline": ("timeline", str, "per-second figures to FILE (NDJSON; CSV if .csv)"),
    "--audit-every": ("audit_every_s", float, "full FD audit every N seconds (0 = on demand)"),
    "--audit-report": ("audit_report", str, "write each periodic audit to FILE (.json/.md/.txt)"),
    "--success-status": (
        "success_statuses",
        str,
        "final statuses that count as ok, e.g. 2xx,304 (default 2xx,3xx)",
    ),
    "--max-header-bytes": ("max_header_bytes", int, "longest response header block (32768)"),
}


def _add_run_options(p: argparse.ArgumentParser, serving: bool) -> None:
    """The options `run` and `serve` share (`serve` has no bounds: it runs until stopped)."""
    for flag, (key, kind, help_text) in _RUN_FLAGS.items():
        if not (serving and key in ("duration_s", "requests")):
            p.add_argument(flag, dest=key, type=kind, help=help_text)
    p.add_argument(
        "--header",
        dest="headers",
        type=_header,
        action="append",
        help="extra request header NAME:VALUE (repeatable)",
    )
    p.add_argument(
        "--no-keepalive",
        dest="keep_alive",
        action="store_const",
        const=False,
        help="send Connection: close on every request",
    )
    p.add_argument(
        "--no-breaker",
        dest="breaker",
        action="store_const",
        const=False,
        help="no circuit breaker: every request is sent, whatever the target does",
    )
    p.add_argument(
        "--inject-failures",
        dest="inject_failures",
        action="store_const",
        const=True,
        help="inject a default mix of faults: 2%% of requests reset, 2%% time out",
    )
    p.add_argument("--config", help="JSON config file; flags override it")
    if not serving:
        p.add_argument(
            "--fail-on-leak",
            dest="fail_on_leak",
            action="store_const",
            const=True,
            help="exit 5 when the final FD audit finds a leaked socket",
        )
    if serving:
        p.add_argument(
            "--control",
            help="control socket (default: $POOLSVC_CONTROL or $XDG_RUNTIME_DIR/poolsvc/...)",
        )
    else:
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--control", help="also serve the control socket at this path")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="poolsvc", description="HTTP/1.1 connection pool and load generator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run_options(sub.add_parser("run", help="run a bounded load and print the report"), False)
    _add_run_options(sub.add_parser("serve", help="run until stopped, controlled by poolctl"), True)
    _add_run_options(
        sub.add_parser("churn", help="the same load pooled and per request: what churn costs"),
        False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = vars(args)
    command = options.pop("command")
    serving = command == "serve"
    control = options.pop("control")
    try:
        file_values = config.load_file(options.pop("config")) if args.config else {}
        as_json = options.pop("json", False)
        if options.get("headers") is not None:
            options["headers"] = _headers(options["headers"])
        cfg = config.build(file_values, options)
        plan.worker_count(cfg)  # workers vs pool and concurrency: a config error too
    except ConfigError as exc:
        print(f"poolsvc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = None
    if serving or control:
        path = resolve_path(control) if serving else Path(control)
        try:  # before any load: a path we may not use is a usage error, never a loss
            prepare_dir(path.parent, create=control is None and ENV not in os.environ)
            claim(path)
        except OSError as exc:
            print(f"poolsvc: error: control socket: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        if command == "churn":
            return churn(cfg, as_json=as_json)
        return run(cfg, as_json_doc=as_json, control=path, forever=serving)
    except KeyboardInterrupt:
        print("poolsvc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
