"""poolctl: the command-line client of a running poolsvc service.

Exit codes: 0 ok; 2 bad arguments; 3 the service refused the command (its error
is printed); 4 no service at the control socket (the path is named); 5 `audit`
found a leak.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from poolsvc.arbiter.audits import render
from poolsvc.config.keys import positive_duration
from poolsvc.config.usage import (
    EXIT_LEAK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Parser,
)
from poolsvc.ctl.ctlclient import CommandRefused, ControlClient, ServiceUnavailable, resolve_path
from poolsvc.metrics import outputs as files
from workers.shared.errors import ConfigError
from workers.shared.injection import KINDS

EXIT_UNAVAILABLE = EXIT_UNREACHABLE  # poolctl's word: the service cannot be reached
TIMEOUT, AUDIT_TIMEOUT = 5.0, 60.0  # seconds: connect, and each reply (an audit takes longer)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="poolctl", description="control a running poolsvc service")
    p.add_argument("--control", help="control socket (default: $POOLSVC_CONTROL or the service's)")
    p.add_argument(
        "--timeout",
        type=_positive,
        metavar="SECONDS",
        help="give up after this long: connect, and each reply (default 5; audit 60)",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    st = sub.add_parser("status", help="targets, breakers, pool, rates, workers")
    st.add_argument("--json", action="store_true", help="the raw JSON document")
    st.add_argument("--watch", type=_positive, metavar="SECONDS", help="refresh every SECONDS")
    st.add_argument("--count", type=_count, help="with --watch: stop after N refreshes")
    me = sub.add_parser("metrics", help="metrics as text, json or prometheus")
    me.add_argument("--format", choices=("text", "json", "prometheus"), default="text")
    br = sub.add_parser("breaker", help="show, force open/closed, or reset a breaker")
    br.add_argument("action", nargs="?", default="show", choices=("show", "open", "close", "reset"))
    br.add_argument("--target", type=int, default=0)
    lo = sub.add_parser("load", help="change the load at runtime")
    group = lo.add_mutually_exclusive_group(required=True)
    group.add_argument("--concurrency", type=int)
    group.add_argument("--rate", type=float)
    group.add_argument("--pause", action="store_true")
    group.add_argument("--resume", action="store_true")
    po = sub.add_parser("pool", help="show each target's pool, or set its bounds at runtime")
    po.add_argument("--size", type=int, help="the pool's maximum over all workers")
    po.add_argument("--min", type=int, help="with --size: connections kept open (default: kept)")
    po.add_argument("--target", help="the target's name (default: every target)")
    wo = sub.add_parser("workers", help="show workers, or scale to N")
    wo.add_argument("count", nargs="?", type=int)
    inj = sub.add_parser("inject", help="inject faults: FAULT --rate R | list | clear [FAULT]")
    inj.add_argument("fault", choices=[*KINDS, "list", "clear"], help="a fault, or list, or clear")
    inj.add_argument("which", nargs="?", choices=KINDS, help="with clear: only this fault")
    inj.add_argument("--rate", type=float, help="probability per request/connection (0-1)")
    inj.add_argument("--target", type=int, help="target index (default: all)")
    inj.add_argument("--for", dest="for_", type=_duration, help="clear itself after: 10s, 500ms")
    inj.add_argument("--seed", type=int, help="seed of the fault's random draws")
    inj.add_argument("--delay-ms", type=int, help="delay: how long to hold each request")
    inj.add_argument(
        "--timeout-ms", type=int, help="timeout: when the read times out (default: read timeout)"
    )
    inj.add_argument("--mode", choices=("refused", "timeout"), help="connect_fail: how")
    au = sub.add_parser("audit", help="FD-leak audit of every worker")
    au.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    au.add_argument("--out", help="write the report to FILE instead of stdout")
    au.add_argument("--last", action="store_true", help="the last audit, without running one")
    sub.add_parser("drain", help="finish in-flight requests, then exit")
    sub.add_parser("stop", help="stop now")
    return p


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cmd = args.command
    if cmd == "metrics":
        return cmd, {"format": args.format}
    if cmd == "breaker":
        return cmd, {"action": args.action, "target": args.target}
    if cmd == "load":
        for name in ("concurrency", "rate"):
            if getattr(args, name) is not None:
                return cmd, {name: getattr(args, name)}
        return cmd, {"pause": True} if args.pause else {"resume": True}
    if cmd == "inject":
        return cmd, _inject_args(args)
    if cmd == "audit":
        return cmd, {"last": True} if args.last else {}
    if cmd == "workers":
        return cmd, {} if args.count is None else {"count": args.count}
    if cmd == "pool":
        given = {"size": args.size, "min": args.min, "target": args.target}
        return cmd, {k: v for k, v in given.items() if v is not None}
    return cmd, {}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _duration(text: str) -> float:
    try:
        return positive_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _inject_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.fault == "list":
        return {"action": "list"}
    if args.fault == "clear":
        return {"action": "clear", **({"fault": args.which} if args.which else {})}
    if args.rate is None:
        raise SystemExit(_usage(f"inject {args.fault} needs --rate"))
    out: dict[str, Any] = {"action": "set", "fault": args.fault, "rate": args.rate}
    for key, value in (
        ("target", args.target),
        ("for_s", args.for_),
        ("seed", args.seed),
        ("delay_ms", args.delay_ms),
        ("timeout_ms", args.timeout_ms),
        ("mode", args.mode),
    ):
        if value is not None:
            out[key] = value
    return out


def _usage(message: str) -> int:
    print(f"poolctl: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "status" and args.count is not None and args.watch is None:
        return _usage("--count goes with --watch")
    if args.command == "inject" and args.which and args.fault != "clear":
        return _usage(f"inject {args.fault} takes no second fault name")
    if args.command == "audit" and args.out:
        try:
            files.check_output(args.out, "--out")
        except ConfigError as exc:
            return _usage(str(exc))
    path = resolve_path(args.control)
    timeout = args.timeout or (AUDIT_TIMEOUT if args.command == "audit" else TIMEOUT)
    try:
        with ControlClient(path, timeout=timeout) as client:
            if args.command == "status" and args.watch is not None:
                return _watch(client, args)
            cmd, cmd_args = _request(args)
            data = client.call(cmd, **cmd_args)
    except ServiceUnavailable as exc:
        print(f"poolctl: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except CommandRefused as exc:
        print(f"poolctl: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    _print(args, data)
    if args.command == "audit" and data.get("verdict") != "clean":
        return EXIT_LEAK  # a leak, or an audit that could not rule one out
    return EXIT_OK


def _print(args: argparse.Namespace, data: Any) -> None:
    if args.command == "audit":
        text = render(data, args.format)
        if args.out:
            files.write_text(args.out, text)  # through a private temporary file
        else:
            sys.stdout.write(text)
    elif args.command == "status" and not args.json:
        sys.stdout.write(render_status(data))
    elif isinstance(data, str):
        sys.stdout.write(data)
    else:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _watch(client: ControlClient, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while True:
            frame = render_status(client.call("status"))
            # On a terminal, redraw in place; otherwise frames follow each other.
            sys.stdout.write("\x1b[H\x1b[2J" + frame if tty else frame + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                return EXIT_OK
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def render_status(s: dict[str, Any]) -> str:
    """The status document as a readable table."""
    svc = s["service"]
    lines = [
        f"poolsvc pid {svc['pid']}  {svc['mode']}  {svc['state']}  up {svc['uptime_s']:.1f}s  "
        f"workers {len(s['workers'])}  requests {s['totals']['requests.total']}"
        + (
            f"  (warm-up: {warm} apart)"
            if (warm := s["totals"].get("warmup.requests.sent"))
            else ""
        ),
        "",
        f"{'TARGET':<22} {'BREAKER':<10} {'ACTIVE':>6} {'IDLE':>5} {'CONN':>5} {'WAIT':>5} "
        f"{'MAX':>5} "
        f"{'REQ/S':>9} {'P50ms':>7} {'P99ms':>7}  ERRORS",
    ]
    for t in s["targets"]:
        p = t["pool"]
        errors = " ".join(f"{k}={v}" for k, v in t["errors"].items()) or "-"
        lines.append(
            f"{t['name']:<22} {t['breaker']['state']:<10} {p['active']:>6} {p['idle']:>5} "
            f"{p['connecting']:>5} {p['waiting']:>5} {p.get('max', '-'):>5} {t['rps']:>9.1f} "
            f"{_ms(t['p50_ms']):>7} "
            f"{_ms(t['p99_ms']):>7}  {errors}"
        )
    lines += [
        "",
        f"{'WORKER':<7} {'PID':>7} {'STATE':<10} {'RESTARTS':>8} {'REQ/S':>9} "
        f"{'REQUESTS':>10} {'HEARTBEAT':>10}",
    ]
    for w in s["workers"]:
        beat = "-" if w["heartbeat_age_ms"] is None else f"{w['heartbeat_age_ms']:.0f}ms"
        lines.append(
            f"{w['index']:<7} {w['pid'] or '-':>7} {w['state']:<10} {w['restarts']:>8} "
            f"{w['rps']:>9.1f} {w['requests']:>10} {beat:>10}"
        )
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
