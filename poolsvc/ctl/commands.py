"""Control-socket command handlers: one function per command, ``(service, args) -> data``.

A handler validates its arguments with :func:`poolsvc.ctl.protocol.arg` (a wrong type
is a ``bad_request`` reply, never an exception escaping into the supervisor).
It is typed against :class:`poolsvc.ctl.service.Service`: it calls the service's
public methods and renders its read model (:mod:`poolsvc.ctl.status`); it never
touches workers, and nothing here imports the supervisor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolsvc.ctl import status
from poolsvc.ctl.faultboard import fault_from_args
from poolsvc.ctl.protocol import COMMANDS, ControlError, arg, optional
from poolsvc.ctl.service import Service
from poolsvc.report import prometheus
from poolsvc.report import render as report
from workers.shared.injection import KINDS

Handler = Callable[[Service, dict[str, Any]], Any]


def cmd_status(svc: Service, args: dict[str, Any]) -> Any:
    return status.service_status(svc.view())


def cmd_metrics(svc: Service, args: dict[str, Any]) -> Any:
    fmt = arg(args, "format", str, "json")
    snap = svc.snapshot()
    if fmt == "json":
        return report.metrics(snap, svc.run_info())
    if fmt == "text":
        return "".join(f"{k}={v}\n" for k, v in report.metrics(snap, svc.run_info()).items())
    if fmt == "prometheus":
        return prometheus.exposition(svc.view())
    raise ControlError("bad_request", f"format must be json, text or prometheus, not {fmt!r}")


def cmd_breaker(svc: Service, args: dict[str, Any]) -> Any:
    action = arg(args, "action", str, "show")
    target = arg(args, "target", int, 0)
    if not 0 <= target < len(svc.breaker_status()):
        raise ControlError("bad_request", f"no target {target}")
    if action != "show":
        svc.breaker_action(target, action)
    return svc.breaker_status()[target]


def cmd_load(svc: Service, args: dict[str, Any]) -> Any:
    concurrency = optional(args, "concurrency", int)
    pause = optional(args, "pause", bool)
    resume = optional(args, "resume", bool)
    rate = optional(args, "rate", (int, float))
    given = [x for x in (concurrency, pause, resume, rate) if x is not None]
    if len(given) != 1:
        raise ControlError("bad_request", "give exactly one of concurrency, pause, resume, rate")
    if concurrency is not None:
        svc.set_concurrency(concurrency)
    elif pause is not None:  # (false resumes: the value says what is wanted)
        svc.set_paused(pause)
    elif resume is not None:
        svc.set_paused(not resume)
    elif rate is not None:
        svc.set_rate(float(rate))
    return status.load_status(svc.view().load)


def cmd_pool(svc: Service, args: dict[str, Any]) -> Any:
    """Show each target's pool, or set its bounds: ``size`` (and ``min``), for the
    target named ``target`` (default: every target)."""
    size = optional(args, "size", int)
    minimum = optional(args, "min", int)
    name = optional(args, "target", str)
    targets = svc.view().targets
    names = [t.name for t in targets]
    if name is not None and name not in names:
        raise ControlError("bad_request", f"unknown target {name!r} (targets: {', '.join(names)})")
    if size is None and minimum is not None:
        raise ControlError("bad_request", "min goes with size")
    if size is not None:
        chosen = [names.index(name)] if name is not None else list(range(len(names)))
        svc.set_pool(chosen, size, minimum)
        targets = svc.view().targets
    return [{"target": t.name, **t.pool} for t in targets]


def cmd_workers(svc: Service, args: dict[str, Any]) -> Any:
    count = optional(args, "count", int)
    if count is not None:
        svc.scale(count)
    return status.worker_status(svc.view().workers)


def cmd_inject(svc: Service, args: dict[str, Any]) -> Any:
    if "action" not in args and args:
        raise ControlError("bad_request", "give action: set, clear or list")
    action = arg(args, "action", str, "list")
    extra = set(args) - {"action"} - ({"fault"} if action == "clear" else set())
    if action == "set":
        svc.board.set(fault_from_args(args, svc.clock(), svc.seed))
    elif action in ("clear", "list"):
        if extra:
            raise ControlError("bad_request", f"inject {action} takes no {sorted(extra)[0]!r}")
        kind = optional(args, "fault", str)
        if kind is not None and kind not in KINDS:
            raise ControlError(
                "bad_request", f"fault must be one of {', '.join(KINDS)}, not {kind!r}"
            )
        if action == "clear":
            svc.board.clear(kind)
    else:
        raise ControlError("bad_request", f"action must be set, clear or list, not {action!r}")
    return svc.board.describe()


def cmd_audit(svc: Service, args: dict[str, Any]) -> Any:
    if arg(args, "last", bool, False):
        if svc.last_audit is None:
            raise ControlError("conflict", "no audit has run yet")
        return svc.last_audit
    return svc.audit_now()  # deferred: answered when every worker has reported


def cmd_drain(svc: Service, args: dict[str, Any]) -> Any:
    svc.drain()
    return {"draining": True}


def cmd_stop(svc: Service, args: dict[str, Any]) -> Any:
    svc.stop()
    return {"stopping": True}


HANDLERS: dict[str, Handler] = {
    "status": cmd_status,
    "metrics": cmd_metrics,
    "pool": cmd_pool,
    "breaker": cmd_breaker,
    "load": cmd_load,
    "workers": cmd_workers,
    "inject": cmd_inject,
    "audit": cmd_audit,
    "drain": cmd_drain,
    "stop": cmd_stop,
}


assert set(HANDLERS) == set(COMMANDS), "every command of the protocol has one handler"


def dispatch(svc: Service, cmd: str, args: dict[str, Any]) -> Any:
    handler = HANDLERS.get(cmd)
    if handler is None:
        raise ControlError(
            "unknown_command", f"unknown command {cmd!r}; try: {', '.join(HANDLERS)}"
        )
    return handler(svc, args)
