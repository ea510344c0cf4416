"""The ``poolsvc`` command line.

Exit codes: 0 success; 2 invalid arguments or configuration (one line on stderr);
3 workers kept failing at boot; 4 the target cannot be reached at all; 5 the final FD
audit found a leak (with --fail-on-leak); 130 interrupted twice.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from poolsvc.arbiter.runner import run
from poolsvc.churn import netns
from poolsvc.churn.study import churn
from poolsvc.config import loader as config
from poolsvc.config import plan
from poolsvc.config.keys import Config, flag_type
from poolsvc.config.usage import EXIT_THRESHOLD, EXIT_USAGE, Parser
from poolsvc.ctl.ctlclient import ENV, resolve_path
from poolsvc.ctl.sockpath import claim, prepare_dir
from poolsvc.metrics import hlog
from poolsvc.metrics import outputs as files
from poolsvc.metrics.gate import Gate, from_config, write_junit
from poolsvc.report import htmlreport, merge, result
from poolsvc.report import render as report
from poolsvc.report.result import as_json
from workers.shared.errors import ConfigError


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


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: a type is named by argparse itself ("invalid int value");
    a parser's own reason (``--ramp 10x``: the unit) is kept as the message."""
    if isinstance(parse, type):
        return parse

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return typed


def _add_run_options(p: argparse.ArgumentParser, serving: bool) -> None:
    """The options `run` and `serve` share, one per key of the table that has a flag
    (:mod:`poolsvc.config.keys`); `serve` has no bounds (it runs until stopped)."""
    for f in fields(Config):
        meta = f.metadata
        if not meta["flag"] or (serving and (meta["bound"] or meta["run_only"])):
            continue
        if not meta["flag"].startswith("-"):  # the command's argument (the URL)
            p.add_argument(f.name, nargs="?", metavar=meta["flag"], help=meta["help"])
            continue
        shown = _shown(f)
        # argparse formats help with %: a literal one is written twice
        text = (meta["help"] + (f" (default {shown})" if shown else "")).replace("%", "%%")
        if meta["const"] is not None:
            p.add_argument(
                meta["flag"], dest=f.name, action="store_const", const=meta["const"], help=text
            )
        elif f.name == "headers":
            p.add_argument(meta["flag"], dest=f.name, type=_header, action="append", help=text)
        elif f.name == "thresholds":
            p.add_argument(meta["flag"], dest=f.name, action="append", help=text)
        else:
            p.add_argument(meta["flag"], dest=f.name, type=_typed(flag_type(f.name)), help=text)
    p.add_argument("--config", help="JSON config file; flags override it")
    if serving:
        p.add_argument(
            "--control",
            help="control socket (default: $POOLSVC_CONTROL or $XDG_RUNTIME_DIR/poolsvc/...)",
        )
    else:
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.add_argument("--control", help="also serve the control socket at this path")


def _shown(f: Any) -> str:
    """A flag's default for its help text ('' when the flag sets a constant)."""
    if f.metadata["const"] is not None:
        return ""
    return str(f.metadata["shown"] or f.default).replace("`", "")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="poolsvc", description="HTTP/1.1 connection pool and load generator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_run_options(sub.add_parser("run", help="run a bounded load and print the report"), False)
    _add_run_options(sub.add_parser("serve", help="run until stopped, controlled by poolctl"), True)
    ch = sub.add_parser("churn", help="the same load pooled and per request: what churn costs")
    _add_run_options(ch, False)
    ch.add_argument(
        "--netns",
        action="store_true",
        help="run the study in a private network namespace with 1,000 ephemeral ports and"
        " tcp_tw_reuse off, so that churn really runs out of ports (root)",
    )
    ch.add_argument("--capture", metavar="DIR", help="a pcap of each half here (with --netns)")
    ch.add_argument(
        "--nagle",
        action="store_true",
        help="instead: one pooled load twice, head and body written apart, with TCP_NODELAY"
        " and with Nagle's algorithm on: the stall of small writes",
    )
    mer = sub.add_parser("merge", help="the shards of one run (--shard K/N), merged exactly")
    mer.add_argument("files", nargs="+", metavar="FILE", help="each shard's --json result (.json)"
                     " and, to merge them too, its --hlog log (.hlog)")  # fmt: skip
    mer.add_argument("--json", action="store_true", help="print the merged result as JSON")
    mer.add_argument("--report", metavar="FILE", help="the merged HTML report")
    mer.add_argument("--hlog", metavar="FILE", help="the merged HdrHistogram log (of the .hlog)")
    mer.add_argument("--threshold", action="append", help="judged on the merge (exit 99)")
    mer.add_argument("--junit", metavar="FILE", help="the thresholds as JUnit XML")
    rep = sub.add_parser("report", help="the HTML report of a saved JSON result")
    rep.add_argument("result", metavar="RESULT.json", help="written by `poolsvc run --json`")
    rep.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file")
    return parser


def churn_in_namespace(argv: list[str]) -> int:
    """``poolsvc churn --netns``: the same command again, inside a namespace of its own."""
    try:
        with netns.Namespace() as ns:
            env = {**os.environ, netns.INSIDE: ns.name}
            inner = ns.argv(sys.executable, "-m", "poolsvc", *argv)
            return subprocess.run(inner, env=env, check=False).returncode
    except ConfigError as exc:
        print(f"poolsvc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def merge_command(args: argparse.Namespace) -> int:
    """``poolsvc merge``: exit 2 with one line on a bad or mismatched file, 99 when a
    threshold fails on the merge."""
    try:
        for key in ("report", "hlog", "junit"):
            if getattr(args, key):
                files.check_output(getattr(args, key), key)
        results = [f for f in args.files if not f.endswith(".hlog")]
        logs = [f for f in args.files if f.endswith(".hlog")]
        if not results:
            raise ConfigError("merge needs the shards' JSON results")
        if logs and not args.hlog:
            raise ConfigError("the .hlog files need --hlog OUT (the merged log)")
        merged = merge.merge([(p, result.load(p)) for p in results])
        doc, total, owns = merged.doc, merged.total, merged.owns
        names = [t["target"] for t in doc["per_target"]]
        gate = Gate(from_config(args.threshold, names), names)
    except ConfigError as exc:
        print(f"poolsvc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdicts = gate.verdicts(total, owns, doc["metrics"]["run.load_s"])
    doc["thresholds"] = [v.as_dict() for v in verdicts]
    if logs:
        try:
            hlog.merge_logs(logs, args.hlog)
        except (OSError, ValueError) as exc:
            print(f"poolsvc: error: hlog: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.report:
        files.write_text(args.report, htmlreport.render(doc))
    if args.junit:
        write_junit(args.junit, verdicts, doc["metrics"]["run.elapsed_s"])
    if args.json:
        sys.stdout.write(as_json(doc).decode())
    else:
        sys.stdout.write(report.text(total, merged.info))
        sys.stdout.writelines(v.line() + "\n" for v in verdicts)
    return EXIT_THRESHOLD if not all(v.ok for v in verdicts) else 0


def report_command(result_path: str, output: str) -> int:
    """``poolsvc report RESULT.json -o run.html``: exit 2 with one line on a bad file."""
    try:
        files.check_output(output, "output")
        doc = result.load(result_path)
    except ConfigError as exc:
        print(f"poolsvc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files.write_text(output, htmlreport.render(doc))
    print(f"[report] {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(raw)
    options = vars(args)
    command = options.pop("command")
    in_netns, capture = options.pop("netns", False), options.pop("capture", None)
    nagle = options.pop("nagle", False)
    if in_netns and not os.environ.get(netns.INSIDE):
        return churn_in_namespace([a for a in raw if a != "--netns"])
    if command == "report":
        return report_command(args.result, args.output)
    if command == "merge":
        return merge_command(args)
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
            return churn(cfg, as_json=as_json, capture=capture, nagle=nagle)
        return run(cfg, as_json_doc=as_json, control=path, forever=serving)
    except KeyboardInterrupt:
        print("poolsvc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
