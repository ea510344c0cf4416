"""``poolsvc run``: one bounded run of load against one target, then the report.

1. Start the embedded target if no host was given.
2. Connect once, by the same non-blocking path the workers use, and over TLS
   handshake once with the same settings. An unreachable target, or one whose TLS
   handshake fails (an untrusted or expired certificate, a wrong name, no common
   version), exits 4 with one line, within about the connect timeout, instead of
   failing every request for the whole run.
3. The supervisor forks the workers and runs them, bounded by duration and/or
   request count.
4. Print the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import resource
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from poolsvc.arbiter import audits as audit
from poolsvc.arbiter import readings
from poolsvc.arbiter.progress import Progress, Timeline
from poolsvc.arbiter.supervisor import Supervisor
from poolsvc.config import loader as config
from poolsvc.config import plan
from poolsvc.config.keys import Config
from poolsvc.config.usage import EXIT_LEAK, EXIT_OK, EXIT_THRESHOLD, EXIT_UNREACHABLE, EXIT_USAGE
from poolsvc.metrics import outputs as files
from poolsvc.metrics import sockstats
from poolsvc.metrics.gate import Gate, Verdict, from_config, write_junit
from poolsvc.metrics.hlog import HlogFile
from poolsvc.metrics.intervals import Interval
from poolsvc.metrics.recording import Recording
from poolsvc.report import htmlreport
from poolsvc.report.render import RunInfo, text
from poolsvc.report.result import as_json, document
from workers.net.tls import TlsSpec, handshake_blocking
from workers.net.transport import DEADLINE, connect_blocking
from workers.pool.target import resolve
from workers.shared.errors import (
    ConfigError,
    ConnectError,
    errno_name,
    oserror_name,
    tls_detail,
    tls_name,
)
from workers.shared.slotstats import Snapshot


def preflight(host: str, port: int, timeout_s: float, tls: TlsSpec | None = None) -> None:
    """Raise :class:`ConnectError` (exit 4) unless one TCP connect to host:port succeeds in
    time, and with ``tls`` one TLS handshake too; its ``detail`` is the one-line message
    for the user."""
    try:
        family, addr = resolve(host, port)
    except OSError as exc:
        reason = f"cannot resolve {host}: {exc.strerror or exc}"
        raise ConnectError("EOTHER", reason) from None
    err, sock = connect_blocking(family, addr, timeout_s)
    if sock is None:
        why = "connect_timeout" if err == DEADLINE else errno_name(err)
        raise ConnectError(why, f"cannot connect to {host}:{port}: {why}")
    if tls is None:
        sock.close()
        return
    try:
        handshake_blocking(tls, sock, tls.handshake_timeout).close()
    except ssl.SSLError as exc:
        name = tls_name(exc)
        detail = f"TLS handshake with {host}:{port} failed: {name} ({tls_detail(exc)})"
        raise ConnectError(name, detail) from None
    except OSError as exc:
        name = "tls_handshake_timeout" if isinstance(exc, TimeoutError) else oserror_name(exc)
        raise ConnectError(name, f"TLS handshake with {host}:{port} failed: {name}") from None
    finally:
        sock.close()


@dataclass
class Outcome:
    """What a run produced, for the report or for a comparison (``poolsvc churn``)."""

    code: int
    snap: Snapshot
    info: RunInfo
    final_audits: list[dict[str, Any]]
    sockets: list[dict[str, int]]  # churn: poolsvc.metrics.sockstats toward the target, each second
    cpu_s: float  # CPU time (user + sys) of the supervisor and its workers
    recording: Recording | None = None  # the run over time (the HTML report, the JSON)
    owns: list[Snapshot] | None = None  # each target's own totals
    verdicts: list[Verdict] | None = None  # each threshold's, at the end


def execute(
    cfg: Config,
    out: TextIO,
    err: TextIO,
    quiet: bool = False,
    control: Path | None = None,
    forever: bool = False,
    sample_sockets: bool = False,
) -> Outcome | int:
    """Run ``cfg``; an exit code if it could not start, else the :class:`Outcome`.
    ``quiet``: events are collected, not printed (JSON output, comparisons)."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**32)
    events: list[str] = []
    live = Progress(sys.stderr, cfg, enabled=not quiet and sys.stderr.isatty())

    def emit(line: str) -> None:
        events.append(line)
        if not quiet:  # live, as it happens
            live.clear()
            print(line, file=out, flush=True)

    try:  # every output path, before any load: exit 2 now, not a traceback later
        for key in ("timeline", "audit_report", "report", "hlog", "junit"):
            if getattr(cfg, key):
                files.check_output(getattr(cfg, key), key)
    except ConfigError as exc:
        print(f"poolsvc: error: {exc}", file=err)
        return EXIT_USAGE
    cpu_before = _cpu()
    with contextlib.ExitStack() as stack:
        embedded = cfg.host is None and cfg.targets is None
        trust = ""  # the embedded target's throwaway CA, when it serves TLS
        if embedded:
            from poolsvc.target.launcher import TargetServer, TargetStartError  # when asked for

            try:
                server = stack.enter_context(TargetServer(tls=cfg.tls))
            except TargetStartError as exc:  # no port to listen on, say: nothing to load
                print(f"poolsvc: the embedded target could not start: {exc}", file=err)
                return EXIT_UNREACHABLE
            hosts, trust = [(server.host, server.port)], server.ca_pem
        else:
            hosts = [(str(tc.host), int(tc.port or 0)) for tc in config.target_configs(cfg)]
        try:  # the configuration, resolved once: everything from here on takes the plan
            run_plan = plan.resolve(cfg, hosts, seed, forever=forever, trust=trust)
            gate = Gate(from_config(cfg.thresholds, run_plan.names), run_plan.names)
        except ConfigError as exc:
            print(f"poolsvc: error: {exc}", file=err)
            return EXIT_USAGE
        try:
            for t in run_plan.targets:
                preflight(t.spec.host, t.spec.port, cfg.connect_timeout_ms / 1000.0, t.spec.tls)
        except ConnectError as exc:
            print(f"poolsvc: {exc.detail}", file=err)
            return EXIT_UNREACHABLE
        try:
            shards = run_plan.shards
            pools = [t.pool.max_size for t in run_plan.targets]
            audit.preflight(max(s.pool_size for s in shards), max(pools), emit)
        except ConfigError as exc:
            print(f"poolsvc: error: {exc}", file=err)
            return EXIT_USAGE
        timeline = stack.enter_context(Timeline(cfg.timeline))
        samples: list[dict[str, int]] = []
        # TIME_WAIT this run creates: counted against what was there before it began
        before = sockstats.sample(hosts[0]) if sample_sockets else None

        def on_interval(interval: Interval) -> None:
            timeline.write(interval)
            live.show(interval, supervisor)
            if before is not None and (now := sockstats.sample(hosts[0])) is not None:
                samples.append(
                    {k: max(0, v - before[k]) if k.startswith("time_wait") else v
                     for k, v in now.items()}
                )  # fmt: skip

        try:
            supervisor = Supervisor(run_plan, emit, control=control, on_interval=on_interval)
        except OSError as exc:  # the control socket: in use, or an unsafe directory
            print(f"poolsvc: error: control socket: {exc}", file=err)
            return EXIT_USAGE
        except ConfigError as exc:  # the metrics address: in use, or not ours to bind
            print(f"poolsvc: error: {exc}", file=err)
            return EXIT_USAGE
        hlog = stack.enter_context(HlogFile(cfg.hlog, run_plan.names, supervisor.started_wall))

        def on_second(t: float, whole: Snapshot, owns: list[Snapshot]) -> None:
            hlog.feed(t, whole, owns)
            if supervisor.stopping or supervisor.finished_at:
                return  # draining or over: nothing left to stop (a drain's tail is not judged)
            breached = gate.feed(t, whole, owns)
            if breached is not None:
                window = f"{breached.for_s:g}s" if breached.for_s else "a second"
                emit(f"[threshold] {breached.expr} breached for {window}: stopping the run")
                supervisor.drain()

        supervisor.on_second = on_second
        if control is not None:
            emit(f"[pool] control socket {control} (poolctl --control {control} status)")
        if supervisor.metrics is not None:
            emit(f"[pool] metrics at {supervisor.metrics.url}")
        code = supervisor.run()
        cpu = _cpu() - cpu_before  # the workers are reaped, the embedded target not yet
        live.clear()
    snap = supervisor.snapshot()
    info = dataclasses.replace(
        supervisor.run_info(embedded),
        workers=len(run_plan.shards),
        per_worker=supervisor.per_worker(),
        per_target=supervisor.per_target(snap),
        events=events,
    )
    owns = readings.own_snapshots(supervisor.region, supervisor.slots, len(run_plan.names), snap)
    verdicts = gate.verdicts(snap, owns, info.load_s)
    return Outcome(
        code,
        snap,
        info,
        supervisor.final_audits,
        samples,
        cpu,
        supervisor.recording,
        owns,
        verdicts,
    )


def _cpu() -> float:
    """User + sys seconds of this process and of its reaped children (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run(
    cfg: Config,
    out: TextIO | None = None,
    err: TextIO | None = None,
    as_json_doc: bool = False,
    control: Path | None = None,
    forever: bool = False,
) -> int:
    """Run ``cfg`` (or serve it, ``forever``) and print the report; returns the exit code."""
    out = out or sys.stdout  # resolved now, not at import: redirections apply
    err = err or sys.stderr
    result = execute(cfg, out, err, quiet=as_json_doc, control=control, forever=forever)
    if isinstance(result, int):
        return result
    final = result.final_audits
    leaked = sum(len(r["leaked"]) for r in final)
    unknown = audit.final_incomplete(final)  # an audit that could not run is never clean
    verdicts = result.verdicts or []
    doc = None
    if as_json_doc or cfg.report:
        doc = document(result.snap, result.info, final, result.recording, result.owns)
        doc["thresholds"] = [v.as_dict() for v in verdicts]
    if cfg.report and doc is not None:
        files.write_text(cfg.report, htmlreport.render(doc))
    if as_json_doc and doc is not None:
        out.write(as_json(doc).decode())
    else:
        out.write(text(result.snap, result.info))
        out.write(audit.verdict_line(final) + "\n")
        out.writelines(v.line() + "\n" for v in verdicts)
        if cfg.report:
            out.write(f"[report] {cfg.report} (open it in a browser; it needs no network)\n")
        for r in final:
            for row in r["leaked"]:
                out.write(
                    f"[audit] worker {r['worker']} leaked fd {row['fd']} "
                    f"({row['local']} -> {row['remote']} {row['tcp_state']}, age "
                    f"{row['age_s']}s): registry: {row['registry']}\n"
                )
    out.flush()
    if cfg.junit:
        write_junit(cfg.junit, verdicts, result.info.elapsed_s)
    if result.code == EXIT_OK and not all(v.ok for v in verdicts):
        return EXIT_THRESHOLD
    if result.code == EXIT_OK and (leaked or unknown) and cfg.fail_on_leak:
        return EXIT_LEAK
    return result.code
