"""Chaos and soak: real faults against a running service, nothing lost, nothing leaked.

    python -m tools.chaos              # every scenario at full size (`make chaos`)
    python -m tools.chaos --soak 180   # the soak, bounded (`make soak`)

Each scenario returns a :class:`Result`, one row of the table: scenario, faults
injected, requests, errors by class, recovery time, leaked fds, lost counts, and
pass/fail. The tests (``tests/chaos``) run the same functions with smaller
parameters as part of ``make test``.

Every request accounted for (``poolsvc.metrics.ledger``):

- **sent** (the requests column) must equal ok + failed + lost + abandoned, and
  the **target's own count** (embedded target counter, nginx access log) must
  equal sent: fewer only by the requests in doubt (a worker killed inside a
  ``send``), or on a restart or a broken network path, and then only by
  requests that failed.
- **lost** counts requests in flight in workers that were killed: counted, not
  missing.

Faults on the network path run in a network namespace this harness creates
(a veth pair, nginx inside). Where namespaces cannot be created, those scenarios
are skipped and say why.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tools.chaos.added_delay import added_delay
from tools.chaos.blackhole import blackhole
from tools.chaos.emfile import emfile
from tools.chaos.harness import Result, table
from tools.chaos.nginx_drain_stuck import nginx_drain_stuck
from tools.chaos.nginx_worker_kills import nginx_worker_kills
from tools.chaos.packet_loss import packet_loss
from tools.chaos.restarts import restarts
from tools.chaos.sigstop import sigstop
from tools.chaos.sigterm_drain import sigterm_drain
from tools.chaos.soak import soak
from tools.chaos.supervisor_kill import supervisor_kill
from tools.chaos.worker_kills import worker_kills

__all__ = [
    "SCENARIOS",
    "Result",
    "added_delay",
    "blackhole",
    "emfile",
    "main",
    "nginx_drain_stuck",
    "nginx_worker_kills",
    "packet_loss",
    "restarts",
    "sigstop",
    "sigterm_drain",
    "soak",
    "supervisor_kill",
    "table",
    "worker_kills",
]

# Scenarios --------------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[[], Result]] = {
    "restart-embedded": lambda: restarts("embedded"),
    "restart-nginx": lambda: restarts("nginx"),
    "worker-kills": worker_kills,
    "supervisor-kill": supervisor_kill,
    "sigterm": sigterm_drain,
    "nginx-kills": nginx_worker_kills,
    "nginx-drain": nginx_drain_stuck,
    "emfile": emfile,
    "blackhole": blackhole,
    "sigstop": sigstop,
    "loss": packet_loss,
    "delay": added_delay,
}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--soak", type=float, help="run only the soak, this many seconds")
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run these scenarios")
    args = p.parse_args()
    if args.soak:
        results = [soak(args.soak)]
    else:
        results = []
        for name in args.only or SCENARIOS:
            print(f"... {name}", file=sys.stderr, flush=True)
            results.append(SCENARIOS[name]())
    print(table(results))
    failed = [r for r in results if not r.passed and not r.note.startswith("skipped")]
    return 1 if failed else 0
